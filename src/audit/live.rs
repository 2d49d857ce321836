//! The live source: the specs of containers a containerd holds, read through its
//! Containers API (no task needs to run). Effects only; auditing them is the pure core's.

use containerd_client::services::v1::{
    GetContainerRequest, ListContainersRequest, ListNamespacesRequest,
};
use thiserror::Error;

use crate::containerd::{Client, ContainerdError};

/// Which namespaces to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// One namespace, e.g. `default`, `k8s.io`, `stockade`.
    One(String),
    /// Every namespace the daemon has.
    All,
}

/// One container's spec as containerd stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSpec {
    /// The containerd namespace.
    pub namespace: String,
    /// The container id.
    pub id: String,
    /// The spec's JSON text; `None` when the container record carries no spec.
    pub spec: Option<String>,
}

impl LiveSpec {
    /// `containerd://NS/ID`, how outputs name it.
    pub fn source(&self) -> String {
        format!("containerd://{}/{}", self.namespace, self.id)
    }
}

/// Errors of reading specs from a running containerd.
#[derive(Debug, Error)]
pub enum LiveError {
    /// The containerd RPC failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// No container of that id in the namespace.
    #[error("container `{id}` not found in namespace `{namespace}`")]
    NotFound {
        /// The namespace searched.
        namespace: String,
        /// The id asked for.
        id: String,
    },
    /// Ids and `--all-namespaces` given together.
    #[error("ids were given with --all-namespaces; name one --namespace instead")]
    IdsWithAllNamespaces,
}

/// The specs of the containers `ids` (all containers when empty) in `namespaces`, sorted by
/// namespace and id.
pub async fn collect(
    client: &Client,
    namespaces: &Namespaces,
    ids: &[String],
) -> Result<Vec<LiveSpec>, LiveError> {
    let names = match namespaces {
        Namespaces::One(ns) => vec![ns.clone()],
        Namespaces::All => {
            if !ids.is_empty() {
                return Err(LiveError::IdsWithAllNamespaces);
            }
            let resp = client
                .namespaces()
                .list(tonic::Request::new(ListNamespacesRequest::default()))
                .await
                .map_err(ContainerdError::rpc("list namespaces"))?;
            let mut v: Vec<String> = resp
                .into_inner()
                .namespaces
                .into_iter()
                .map(|n| n.name)
                .collect();
            v.sort();
            v
        }
    };
    let mut out = Vec::new();
    for ns in names {
        let c = client.in_namespace(&ns);
        let containers = if ids.is_empty() {
            c.containers()
                .list(c.request(ListContainersRequest::default()))
                .await
                .map_err(ContainerdError::rpc("list containers"))?
                .into_inner()
                .containers
        } else {
            let mut v = Vec::new();
            for id in ids {
                let got = c
                    .containers()
                    .get(c.request(GetContainerRequest { id: id.clone() }))
                    .await
                    .map_err(ContainerdError::rpc("get container"));
                match got {
                    Ok(r) => v.extend(r.into_inner().container),
                    Err(e) if e.is_not_found() => {
                        return Err(LiveError::NotFound {
                            namespace: ns.clone(),
                            id: id.clone(),
                        })
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            v
        };
        let mut specs: Vec<LiveSpec> = containers
            .into_iter()
            .map(|c| LiveSpec {
                namespace: ns.clone(),
                id: c.id,
                spec: c
                    .spec
                    .map(|any| String::from_utf8_lossy(&any.value).into_owned()),
            })
            .collect();
        specs.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(specs);
    }
    Ok(out)
}
