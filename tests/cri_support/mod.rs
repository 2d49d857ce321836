//! A node for the CRI proof: a private containerd with its CRI plugin enabled, a CNI network
//! that keeps every packet inside the pods' own namespaces, the pause image built from
//! stockade's own init, and a CRI v1 client on the daemon's socket.
//!
//! Everything lives under the daemon's tempdir except what the kernel keeps elsewhere: the
//! CNI bridge (a link of the host's network namespace, named by this process's PID), the
//! pods' cgroups (under a cgroup root named by this process's PID) and libcni's result
//! cache (`/var/lib/cni/results`, one file per attached pod). [`CriNode`]'s drop removes
//! the first two; the pods' own teardown (StopPodSandbox) removes the third, and the test
//! checks it did.
#![allow(dead_code)]

pub mod cgroup;
pub mod kubelet;
pub mod probe;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest};
use stockade::containerd::daemon::{CriConfig, DaemonPaths};
use stockade::images::oci::{
    self, Descriptor, ImageConfigFile, Manifest, RootFs, RuntimeConfig, MEDIA_CONFIG,
    MEDIA_MANIFEST,
};
use stockade::images::store::{store_image, BlobSource, LayerSource, PreparedImage};
use stockade::images::{layer::write_layer, ImageRef, NoProgress};
use tonic::transport::Channel;

use crate::common::PrivateContainerd;

/// The namespace the CRI plugin keeps its images, pods and containers in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The pause image's name. `.invalid` is a top-level domain reserved never to resolve, so
/// a daemon that somehow missed the local image fails at once instead of pulling one.
pub const PAUSE_IMAGE: &str = "stockade.invalid/pause:cri";

/// Where Debian's `containernetworking-plugins` puts the plugins this network uses.
pub const CNI_PLUGINS: &[&str] = &[
    "/usr/lib/cni/bridge",
    "/usr/lib/cni/host-local",
    "/usr/lib/cni/loopback",
];

/// The pods' subnet: inside 198.18.0.0/15 (reserved for benchmarking, RFC 2544), on a
/// bridge with no address of its own and no uplink, so a pod reaches only its own
/// namespace and the bridge's other ports (none: one pod at a time).
pub const POD_SUBNET: &str = "198.18.213.0/24";

/// A private containerd with the CRI plugin, its CNI network and the pause image.
pub struct CriNode {
    /// The bridge the CNI network attaches pods to (deleted on drop).
    pub bridge: String,
    /// The CNI network's name (libcni's result cache files start with it).
    pub network: String,
    /// The cgroup root the pods' cgroups are made under (removed on drop).
    pub cgroup_root: String,
    // Dropped last: the daemon, its shims and every mount under its tempdir.
    daemon: PrivateContainerd,
}

impl CriNode {
    /// Writes the CNI configuration, starts the daemon with the CRI plugin, stores the pause
    /// image in [`CRI_NAMESPACE`] and waits until the CRI plugin reports it present.
    pub async fn start() -> CriNode {
        reclaim_dead_nodes();
        let tag = format!("{:x}", std::process::id());
        let bridge = format!("stkcri{tag}");
        let network = format!("stockade-cri-{tag}");
        let cgroup_root = format!("/stockade-cri-{tag}");
        let daemon = PrivateContainerd::start_with(|paths: &mut DaemonPaths, base: &Path| {
            let mut cri = CriConfig::new(PAUSE_IMAGE, &paths.state);
            // Lowering a process's oom_score_adj (the CRI gives pause containers -998 and a
            // Guaranteed pod's containers -997) needs CAP_SYS_RESOURCE, which a daemon
            // started inside a container may lack: then it must keep its own.
            cri.restrict_oom_score_adj = !has_capability(CAP_SYS_RESOURCE);
            write_cni_config(&cri.cni_conf_dir, &network, &bridge, &base.join("cni-ipam"));
            paths.cri = Some(cri);
        })
        .await;
        let node = CriNode {
            bridge,
            network,
            cgroup_root,
            daemon,
        };
        let client = node.daemon.client(CRI_NAMESPACE).await;
        pause_image(&client, node.daemon.base()).await;
        node.wait_for_image(PAUSE_IMAGE).await;
        node
    }

    /// The daemon underneath (its socket, paths and tempdir).
    pub fn daemon(&self) -> &PrivateContainerd {
        &self.daemon
    }

    /// A channel to the daemon's gRPC socket, where the CRI services answer too.
    pub async fn channel(&self) -> Channel {
        containerd_client::connect(self.daemon.address())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.daemon.address().display()))
    }

    /// The CRI runtime service.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// Waits (a bounded number of tries) until the CRI plugin's image service knows `image`:
    /// it learns of images stored through containerd's own API from containerd's events.
    pub async fn wait_for_image(&self, image: &str) {
        let mut images = ImageServiceClient::new(self.channel().await);
        let start = Instant::now();
        loop {
            let status = images
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: image.to_string(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .unwrap_or_else(|e| panic!("CRI ImageStatus {image}: {e}"))
                .into_inner();
            if status.image.is_some() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the CRI plugin never saw image {image} stored in {CRI_NAMESPACE}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What of the pods is left in the daemon's [`CRI_NAMESPACE`], seen through containerd's
    /// own API: containers, tasks, snapshots that are not an image's committed layers, and
    /// shims still serving the daemon.
    pub async fn leftovers(&self) -> Vec<String> {
        use crate::common::census;
        use containerd_client::services::v1::snapshots::Kind;
        let client = self.daemon.client(CRI_NAMESPACE).await;
        let mut left = Vec::new();
        left.extend(
            census::containers(&client)
                .await
                .into_iter()
                .map(|c| format!("container {c}")),
        );
        left.extend(
            census::tasks(&client)
                .await
                .into_iter()
                .map(|t| format!("task {}", t.id)),
        );
        left.extend(
            census::snapshots(&client, "overlayfs")
                .await
                .into_iter()
                .filter(|i| i.kind != Kind::Committed as i32)
                .map(|i| format!("snapshot {}", i.name)),
        );
        let shims = stockade::containerd::daemon::shims_for(
            &self.daemon.paths().proc_root,
            self.daemon.address(),
        );
        left.extend(
            shims
                .into_iter()
                .filter(|s| s.namespace.as_deref() == Some(CRI_NAMESPACE))
                .map(|s| format!("shim {} ({:?})", s.pid, s.id)),
        );
        left
    }

    /// Waits until [`CriNode::leftovers`] finds nothing (a shim exits a moment after its last
    /// task is deleted); panics with what is left after `within`, a liveness bound.
    pub async fn assert_no_leftovers(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let left = self.leftovers().await;
            if left.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < within,
                "left in {CRI_NAMESPACE} after {within:?}: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// libcni's cached results for this network (present while a pod is attached).
    pub fn cni_results(&self) -> Vec<PathBuf> {
        let prefix = format!("{}-", self.network);
        std::fs::read_dir("/var/lib/cni/results")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the bridge exists in the host's network namespace.
    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemon's account of what failed goes with the tempdir: show it.
            let log = std::fs::read_to_string(&self.daemon.paths().log).unwrap_or_default();
            let errors: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("level=error") || l.contains("level=warning"))
                .collect();
            eprintln!(
                "containerd log ({}), its last errors and warnings:\n{}",
                self.daemon.paths().log.display(),
                errors[errors.len().saturating_sub(20)..].join("\n")
            );
        }
        if self.bridge_exists() {
            let status = std::process::Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("deleting bridge {}: {status:?}", self.bridge);
            }
        }
        // The pods are gone (or their shims are killed with the daemon, below); what is
        // left of their cgroups are empty directories.
        cgroup::remove_tree(Path::new(cgroup::CGROUP_MOUNT), &self.cgroup_root);
    }
}

/// Removes what a test process that died without its drop left on the host: the bridges
/// and cgroup roots named by a PID (hex) that no longer runs. (Its daemon, shims and
/// mounts are the private containerd's to reclaim, as for every test daemon.)
fn reclaim_dead_nodes() {
    let dead = |tag: &str| {
        u32::from_str_radix(tag, 16).is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(links) = std::fs::read_dir("/sys/class/net") {
        for l in links.filter_map(Result::ok) {
            let name = l.file_name().to_string_lossy().into_owned();
            if name.strip_prefix("stkcri").is_some_and(dead) {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", &name])
                    .status();
            }
        }
    }
    let mount = Path::new(cgroup::CGROUP_MOUNT);
    let roots: Vec<String> = std::fs::read_dir(if cgroup::is_v2(mount) {
        mount.to_path_buf()
    } else {
        mount.join("pids")
    })
    .map(|d| {
        d.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.strip_prefix("stockade-cri-").is_some_and(dead))
            .collect()
    })
    .unwrap_or_default();
    for r in roots {
        cgroup::remove_tree(mount, &format!("/{r}"));
    }
}

/// `CAP_SYS_RESOURCE`'s bit in the capability sets.
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has capability `bit` in its effective set (`/proc/self/status`).
fn has_capability(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

/// The CNI network: a bridge plugin on a bridge of its own with no address, no gateway, no
/// masquerading and no uplink; host-local addresses from [`POD_SUBNET`], its lease files in
/// `ipam_dir`.
fn write_cni_config(conf_dir: &Path, network: &str, bridge: &str, ipam_dir: &Path) {
    std::fs::create_dir_all(conf_dir).unwrap_or_else(|e| panic!("{}: {e}", conf_dir.display()));
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": false,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_SUBNET}]],
                "dataDir": ipam_dir,
            },
        }],
    });
    let path = conf_dir.join("10-stockade-cri.conflist");
    std::fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Stores the pause image: one layer holding `/pause`, stockade's own init, which with no
/// arguments is exactly what a pod's pause container must be — a static executable that
/// holds the pod's namespaces open, reaps every orphan, and exits 0 at once on SIGTERM or
/// SIGINT (busybox's `sleep` would neither reap nor, as the pid namespace's init with no
/// handler, react to SIGTERM, so every StopPodSandbox would wait for SIGKILL).
pub async fn pause_image(client: &stockade::containerd::Client, scratch: &Path) -> ImageRef {
    let dir = tempfile::tempdir_in(scratch).expect("pause image scratch dir");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let pause = rootfs.join("pause");
    std::fs::write(&pause, stockade::init::BINARY).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pause, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let layer = write_layer(&rootfs, &dir.path().join("layer.tar"), false).expect("pause layer");
    let config_file = ImageConfigFile {
        created: Some("1970-01-01T00:00:00Z".into()),
        architecture: oci::host_architecture().into(),
        os: "linux".into(),
        config: RuntimeConfig {
            entrypoint: vec!["/pause".into()],
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: Vec::new(),
    };
    let config = serde_json::to_vec(&config_file).unwrap();
    let config_descriptor = Descriptor::new(MEDIA_CONFIG, &config);
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: config_descriptor.clone(),
        layers: vec![layer.descriptor.clone()],
        annotations: Default::default(),
    })
    .unwrap();
    let prepared = PreparedImage {
        manifest_descriptor: Descriptor::new(MEDIA_MANIFEST, &manifest),
        manifest,
        config,
        config_descriptor,
        config_file,
        layers: vec![LayerSource {
            descriptor: layer.descriptor.clone(),
            diff_id: layer.diff_id.clone(),
            source: BlobSource::File(layer.path.clone()),
        }],
    };
    store_image(client, PAUSE_IMAGE, &prepared, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("store the pause image: {e}"))
}
