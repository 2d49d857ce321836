//! The connection to containerd: one gRPC channel over its Unix socket, the namespace (and
//! lease) headers added in one place, one accessor per remote service, typed errors; and
//! the seam runs go through ([`Containerd`]), with its in-memory fake ([`fake`]).

pub mod api;
pub mod daemon;
pub mod fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    namespaces_client::NamespacesClient, snapshots::snapshots_client::SnapshotsClient,
    tasks_client::TasksClient, version_client::VersionClient,
};
use thiserror::Error;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

pub use api::{BoxFuture, Containerd, Rpc, TaskInfo, TaskStatus};
pub use containerd_client::services;
pub use containerd_client::types;

/// containerd's own default socket, used when neither `--address` nor
/// `$CONTAINERD_ADDRESS` names one.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The containerd namespace stockade keeps its objects in unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "stockade";
/// Label every object stockade creates carries, so `gc` can find them.
pub const LABEL_MANAGED: &str = "stockade.managed";
/// How long to wait for containerd to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors talking to containerd.
#[derive(Debug, Error)]
pub enum ContainerdError {
    /// The socket could not be connected to.
    #[error("containerd socket {address}: {reason}")]
    Connect {
        /// The socket.
        address: PathBuf,
        /// The connection error.
        reason: String,
    },
    /// An RPC failed.
    #[error("containerd {op}: {message} ({code:?})")]
    Rpc {
        /// The RPC, e.g. `Tasks.Create`.
        op: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// containerd's message.
        message: String,
    },
    /// A namespace name containerd would refuse.
    #[error("namespace `{0}` is not a valid containerd namespace")]
    BadNamespace(String),
}

impl ContainerdError {
    /// Wraps a gRPC status with the operation that produced it.
    pub fn rpc(op: &'static str) -> impl Fn(tonic::Status) -> ContainerdError {
        move |s| ContainerdError::Rpc {
            op,
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    /// The gRPC code, when this is an RPC error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ContainerdError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether containerd answered NotFound.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// Whether containerd answered AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(tonic::Code::AlreadyExists)
    }
}

/// The address to use: the flag, else `$CONTAINERD_ADDRESS`, else [`DEFAULT_ADDRESS`].
pub fn resolve_address(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("CONTAINERD_ADDRESS") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_ADDRESS),
    }
}

/// A connection to one containerd, bound to one namespace (and optionally one lease).
/// Cloning is cheap: clones share the channel.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    address: PathBuf,
    namespace: String,
    lease: Option<String>,
}

impl Client {
    /// Connects to the socket at `address`, failing within [`CONNECT_TIMEOUT`].
    pub async fn connect(address: &Path, namespace: &str) -> Result<Client, ContainerdError> {
        if namespace.is_empty()
            || namespace.len() > 76
            || !namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ContainerdError::BadNamespace(namespace.to_string()));
        }
        let fail = |reason: String| ContainerdError::Connect {
            address: address.to_path_buf(),
            reason,
        };
        match std::fs::metadata(address) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail("no such socket (is containerd running?)".into()))
            }
            Err(e) => return Err(fail(e.to_string())),
            Ok(_) => {}
        }
        let channel = tokio::time::timeout(
            CONNECT_TIMEOUT,
            containerd_client::connect(address.to_path_buf()),
        )
        .await
        .map_err(|_| fail(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| fail(source_chain(&e)))?;
        Ok(Client {
            channel,
            address: address.to_path_buf(),
            namespace: namespace.to_string(),
            lease: None,
        })
    }

    /// The socket this client is connected to.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The namespace every request is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The same connection in another namespace.
    pub fn in_namespace(&self, namespace: &str) -> Client {
        Client {
            namespace: namespace.to_string(),
            ..self.clone()
        }
    }

    /// The same connection, with every request made under `lease` (objects created are
    /// protected from containerd's garbage collector until the lease is deleted).
    pub fn with_lease(&self, lease: Option<String>) -> Client {
        Client {
            lease,
            ..self.clone()
        }
    }

    /// The lease requests are made under, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// Wraps a message in a request carrying the namespace (and lease) headers. Every RPC
    /// is logged at trace level under `stockade::containerd` by its message type
    /// (`STOCKADE_LOG=stockade::containerd=trace` lists a command's RPCs).
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        tracing::trace!(rpc = short_type_name::<T>(), "containerd request");
        let mut req = tonic::Request::new(message);
        let md = req.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(self.namespace.as_str()) {
            md.insert("containerd-namespace", v);
        }
        if let Some(lease) = &self.lease {
            if let Ok(v) = MetadataValue::try_from(lease.as_str()) {
                md.insert("containerd-lease", v);
            }
        }
        req
    }

    /// A Containers service client on this connection.
    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    /// A Tasks service client on this connection.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    /// A Snapshots service client on this connection.
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    /// A Content service client on this connection (64 MiB decode limit for layer reads).
    pub fn content(&self) -> ContentClient<Channel> {
        // Layers can be large; lift tonic's 4 MiB default decode limit for reads.
        ContentClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }
    /// An Images service client on this connection.
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    /// A Diff service client on this connection.
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    /// A Leases service client on this connection.
    pub fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }
    /// A Namespaces service client on this connection.
    pub fn namespaces(&self) -> NamespacesClient<Channel> {
        NamespacesClient::new(self.channel.clone())
    }
    /// A Version service client on this connection.
    pub fn version(&self) -> VersionClient<Channel> {
        VersionClient::new(self.channel.clone())
    }
    /// An Events service client on this connection.
    pub fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    /// containerd's version string (also a cheap liveness check).
    pub async fn server_version(&self) -> Result<String, ContainerdError> {
        let v = self
            .version()
            .version(tonic::Request::new(()))
            .await
            .map_err(ContainerdError::rpc("version"))?;
        Ok(v.into_inner().version)
    }
}

/// A transport error and its causes on one line.
/// The last path segment of `T`'s name (`CreateTaskRequest`).
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
