//! [`RunnerBuilder`]: every setting of a [`Runner`], each default documented on its setter,
//! and the checks made once when the runner is built (the runtime binary identified, the
//! `oom_score_adj` floor known).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;

/// The runc shim's options (`containerd.runc.v1.Options`) naming `binary` as the runtime;
/// only the field stockade sets is declared.
pub(crate) fn runc_options(binary: &str) -> prost_types::Any {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RuncOptions {
        #[prost(string, tag = "6")]
        binary_name: String,
    }
    prost_types::Any {
        type_url: RUNC_OPTIONS_TYPE_URL.to_string(),
        value: prost::Message::encode_to_vec(&RuncOptions {
            binary_name: binary.to_string(),
        }),
    }
}

/// Type of the runc shim's options.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// Builds a [`Runner`]. Every setting but the containerd has a default, documented on its
/// setter.
#[derive(Default)]
pub struct RunnerBuilder {
    containerd: Option<Arc<dyn Containerd>>,
    host: Option<HostFacts>,
    runtime: Option<String>,
    runc_binary: Option<String>,
    runtime_binary: Option<RuntimeBinary>,
    snapshotter: Option<String>,
    fifo_root: Option<PathBuf>,
    disk_root: Option<PathBuf>,
    cgroup_root: Option<PathBuf>,
    proc_root: Option<PathBuf>,
    digest_cache: Option<PathBuf>,
    uid_claims: Option<PathBuf>,
    uid_range: Option<uids::UidRange>,
    network: Option<crate::network::NetConfig>,
    images: Option<Arc<dyn ImageSource>>,
    run_log: Option<PathBuf>,
    cleanup: CleanupMode,
    apparmor: Option<Option<LoadContext>>,
}

/// Where the built-in AppArmor profile's loaded-state is kept by default.
pub const DEFAULT_APPARMOR_STATE: &str = "/var/lib/stockade/apparmor";

impl RunnerBuilder {
    /// The containerd connection (this or [`RunnerBuilder::containerd`] is required). Its
    /// namespace is where runs are created.
    pub fn client(mut self, client: crate::containerd::Client) -> Self {
        self.containerd = Some(Arc::new(client));
        self
    }
    /// The containerd runs are made in, through the seam: a connection, or a
    /// [`crate::containerd::fake::FakeContainerd`] in tests (this or
    /// [`RunnerBuilder::client`] is required).
    pub fn containerd(mut self, containerd: Arc<dyn Containerd>) -> Self {
        self.containerd = Some(containerd);
        self
    }
    /// What the host supports. Default: probed by the caller; without it, the conservative
    /// [`HostFacts::hybrid_no_apparmor`].
    pub fn host(mut self, host: HostFacts) -> Self {
        self.host = Some(host);
        self
    }
    /// Where sandboxes' UIDs are claimed (see [`uids`]). Default
    /// [`uids::DEFAULT_UID_CLAIMS`]; host-wide, so that runners with different run
    /// directories never hand out the same UID.
    pub fn uid_claims(mut self, dir: impl Into<PathBuf>) -> Self {
        self.uid_claims = Some(dir.into());
        self
    }
    /// The host UIDs sandboxes run as when their policy names no user. Default
    /// [`uids::UidRange::default`]: [`uids::DEFAULT_UID_COUNT`] UIDs from
    /// [`uids::DEFAULT_FIRST_UID`].
    pub fn uid_range(mut self, range: uids::UidRange) -> Self {
        self.uid_range = Some(range);
        self
    }
    /// Where sandbox networks are made: namespace files, address claims, the address
    /// range. Default [`crate::network::NetConfig::default`].
    pub fn network(mut self, cfg: crate::network::NetConfig) -> Self {
        self.network = Some(cfg);
        self
    }
    /// containerd runtime. Default [`DEFAULT_RUNTIME`].
    pub fn runtime(mut self, runtime: impl Into<String>) -> Self {
        self.runtime = Some(runtime.into());
        self
    }
    /// The OCI runtime binary the runc shim drives (its `BinaryName` option), e.g. `crun`;
    /// it must accept runc's command line. [`RunnerBuilder::build`] checks it (see
    /// [`runtime`]) and hands the shim its resolved absolute path. Default `None`: the
    /// shim's own, `runc`.
    pub fn runc_binary(mut self, binary: Option<String>) -> Self {
        self.runc_binary = binary.filter(|b| !b.is_empty());
        self
    }
    /// The runtime binary, already checked (by [`RuntimeBinary::requested`] or
    /// [`RuntimeBinary::default_for`]); takes precedence over
    /// [`RunnerBuilder::runc_binary`].
    pub fn runtime_binary(mut self, binary: RuntimeBinary) -> Self {
        self.runtime_binary = Some(binary);
        self
    }
    /// Snapshotter. Default [`DEFAULT_SNAPSHOTTER`].
    pub fn snapshotter(mut self, snapshotter: impl Into<String>) -> Self {
        self.snapshotter = Some(snapshotter.into());
        self
    }
    /// Parent of the per-run FIFO directories. Default [`DEFAULT_FIFO_ROOT`].
    pub fn fifo_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fifo_root = Some(dir.into());
        self
    }
    /// Where the sandboxes' disk images are made (see [`crate::disk`]). Default
    /// [`crate::disk::DEFAULT_DISK_ROOT`].
    pub fn disk_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.disk_root = Some(dir.into());
        self
    }
    /// cgroup mount point. Default [`DEFAULT_CGROUP_ROOT`].
    pub fn cgroup_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cgroup_root = Some(dir.into());
        self
    }
    /// procfs mount point (pids of created tasks are checked and adjusted through it).
    /// Default [`DEFAULT_PROC_ROOT`].
    pub fn proc_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.proc_root = Some(dir.into());
        self
    }
    /// Directory where digests of runtime binaries are kept across processes. Default
    /// [`runtime::DEFAULT_DIGEST_CACHE`].
    pub fn digest_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.digest_cache = Some(dir.into());
        self
    }
    /// How image names become base snapshots. Default [`StoreImages`] (the image store).
    pub fn images(mut self, images: Arc<dyn ImageSource>) -> Self {
        self.images = Some(images);
        self
    }
    /// Append one JSON line per run to this file. Default: no run log (the CLI passes
    /// [`journal::DEFAULT_RUN_LOG`]).
    pub fn run_log(mut self, path: Option<PathBuf>) -> Self {
        self.run_log = path;
        self
    }
    /// How the built-in AppArmor profile is loaded before runs on hosts with AppArmor;
    /// `None` never loads it (it must be loaded already). Default: the kernel's profile list
    /// [`crate::apparmor::PROFILES_FILE`] and state in [`DEFAULT_APPARMOR_STATE`].
    pub fn apparmor(mut self, ctx: Option<LoadContext>) -> Self {
        self.apparmor = Some(ctx);
        self
    }
    /// When finished runs are removed. Default [`CleanupMode::Background`].
    pub fn cleanup(mut self, mode: CleanupMode) -> Self {
        self.cleanup = mode;
        self
    }

    /// The runner. Fails when no containerd client was given, or the runtime binary is refused
    /// ([`RuntimeError`](super::RuntimeError)).
    pub fn build(self) -> Result<Runner, RunError> {
        let containerd = self
            .containerd
            .ok_or_else(|| RunError::Config("no containerd client given".into()))?;
        let host = self.host.unwrap_or_else(HostFacts::hybrid_no_apparmor);
        let proc_root = self
            .proc_root
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PROC_ROOT));
        let (runtime_binary, runtime_warnings) = runtime::for_runner(
            self.runtime_binary,
            self.runc_binary,
            containerd.address(),
            &proc_root,
            self.digest_cache
                .as_deref()
                .unwrap_or(Path::new(runtime::DEFAULT_DIGEST_CACHE)),
        )?;
        let apparmor = self.apparmor.unwrap_or_else(|| {
            Some(LoadContext {
                kernel_has_apparmor: host.apparmor,
                profiles_file: PathBuf::from(crate::apparmor::PROFILES_FILE),
                state_dir: PathBuf::from(DEFAULT_APPARMOR_STATE),
            })
        });
        Ok(Runner {
            inner: Arc::new(Inner {
                containerd,
                host,
                apparmor,
                runtime: self.runtime.unwrap_or_else(|| DEFAULT_RUNTIME.into()),
                runtime_options: runtime_binary
                    .as_ref()
                    .filter(|r| !r.default)
                    .map(|r| runc_options(&r.path.to_string_lossy())),
                runtime_binary,
                runtime_warnings,
                snapshotter: self
                    .snapshotter
                    .unwrap_or_else(|| DEFAULT_SNAPSHOTTER.into()),
                fifo_root: self
                    .fifo_root
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_FIFO_ROOT)),
                disk_root: self
                    .disk_root
                    .unwrap_or_else(|| PathBuf::from(crate::disk::DEFAULT_DISK_ROOT)),
                cgroups: CgroupFs::new(
                    self.cgroup_root
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT)),
                ),
                oom_floor: crate::host::sets_oom_floor(&proc_root),
                uid_claims: self
                    .uid_claims
                    .unwrap_or_else(|| PathBuf::from(uids::DEFAULT_UID_CLAIMS)),
                uid_range: self.uid_range.unwrap_or_default(),
                network: self.network.unwrap_or_default(),
                idmap_support: Mutex::new(HashMap::new()),
                proc_root,
                images: self
                    .images
                    .unwrap_or_else(|| Arc::new(StoreImages::default())),
                run_log: self.run_log,
                cleanup: self.cleanup,
                pending: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
            }),
        })
    }
}
