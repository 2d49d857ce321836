//! What a kubelet asks the CRI for, given the YAML `stockade k8s render` prints: a small
//! model of the kubelet's `kuberuntime` (the pod sandbox config, the container config and
//! its Linux security context and resources), its volume manager (emptyDir volumes, the
//! managed `/etc/hosts`, the termination-message file), its pod cgroup, and the node
//! installer the rendered DaemonSet runs (the seccomp profiles copied into the kubelet's
//! seccomp directory).
//!
//! Modelled, as the kubelet (1.30 and later, cgroupfs driver) does it:
//! - sandbox: metadata and `io.kubernetes.pod.*` labels, annotations, hostname, log
//!   directory, the RuntimeClass handler and overhead, the pod's resources, `cgroup_parent`
//!   (`<cgroup root>/pod<uid>` for a Guaranteed pod), namespaces (network and IPC of the pod,
//!   PID of the container unless `shareProcessNamespace`), run-as user and group, and the
//!   pod's seccomp profile as an absolute path under `<kubelet dir>/seccomp`;
//! - container: command, working directory, environment, mounts (each volume's host
//!   directory; a `medium: Memory` emptyDir is a tmpfs of `sizeLimit`, mode 0777), run-as
//!   user and group, capabilities as the pod lists them, `readonly_rootfs`, `no_new_privs`
//!   from `allowPrivilegeEscalation: false`, the default masked and read-only `/proc` paths
//!   of `procMount: Default`, the seccomp profile, the AppArmor profile (only on a node with
//!   AppArmor: elsewhere the kubelet refuses the pod), and resources: the memory limit, CFS
//!   quota from the CPU limit over the 100 ms period, shares from the CPU request, and
//!   `oom_score_adj` -997 of the Guaranteed QoS class;
//! - pod cgroup: memory and CPU of the containers' limits plus the RuntimeClass overhead,
//!   and the node's `podPidsLimit`, here set to the pod's `org.stockade.limits.pids`
//!   annotation as the README tells operators to.
//!
//! Not modelled: image pulls (the images are local), DNS (the runtime's copy of the host's
//! resolv.conf), service environment variables (`enableServiceLinks: false`), projected
//! service-account tokens (`automountServiceAccountToken: false`), probes, restarts, and
//! the ephemeral-storage limit (the kubelet enforces it by eviction, not through the CRI).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, ContainerMetadata, ImageSpec,
    Int64Value, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, SecurityProfile,
};
use serde::Deserialize;
use serde_json::Value;

use super::cgroup::PodLimits;

/// The kubelet's default CFS period (`cpuCFSQuotaPeriod`), microseconds.
pub const CFS_PERIOD_US: i64 = 100_000;
/// `oom_score_adj` of a Guaranteed pod's containers.
pub const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
/// Kubernetes' default masked `/proc` and `/sys` paths (`procMount: Default`).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Kubernetes' default read-only `/proc` paths (`procMount: Default`).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The objects of one rendered YAML stream the kubelet and the node need.
pub struct Rendered {
    pub pod: Value,
    pub config_map: Value,
    pub runtime_class: Value,
}

/// Parses `stockade k8s render --kind pod` output.
pub fn parse(yaml: &str) -> Rendered {
    let mut by_kind: HashMap<String, Value> = HashMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).expect("rendered YAML parses");
        let kind = v["kind"]
            .as_str()
            .expect("every document has a kind")
            .to_string();
        by_kind.insert(kind, v);
    }
    let mut take = |k: &str| {
        by_kind
            .remove(k)
            .unwrap_or_else(|| panic!("the rendered stream has no {k}"))
    };
    Rendered {
        pod: take("Pod"),
        config_map: take("ConfigMap"),
        runtime_class: take("RuntimeClass"),
    }
}

/// What the kubelet's node has: its directories, its cgroup root, and whether the kernel
/// has AppArmor.
pub struct Node {
    /// The kubelet's root directory (`--root-dir`); seccomp profiles live in `seccomp/`.
    pub kubelet_dir: PathBuf,
    /// Where pod logs go (`/var/log/pods` on a real node).
    pub log_dir: PathBuf,
    /// The kubelet's `cgroupRoot`; a Guaranteed pod's cgroup is `<root>/pod<uid>`.
    pub cgroup_root: String,
    /// Whether the node has AppArmor.
    pub apparmor: bool,
}

/// A volume directory the kubelet prepares before it creates the container.
pub struct VolumeDir {
    pub host_path: PathBuf,
    /// `Some(bytes)`: a tmpfs of that size (an emptyDir with `medium: Memory`).
    pub tmpfs_size: Option<u64>,
}

/// Everything the kubelet does for the pod, as data.
pub struct Plan {
    pub runtime_handler: String,
    pub sandbox: PodSandboxConfig,
    pub container: ContainerConfig,
    /// Directories (and tmpfs mounts) to make before CreateContainer.
    pub volumes: Vec<VolumeDir>,
    /// Files the kubelet writes before CreateContainer (path, contents).
    pub files: Vec<(PathBuf, String)>,
    /// The managed hosts file, written with [`hosts_file`] once the pod has its address.
    pub hosts_path: PathBuf,
    /// The pod cgroup (path within the hierarchy) and its limits.
    pub pod_cgroup: (String, PodLimits),
    /// Why a field of the pod was left out (the AppArmor profile on a node without it).
    pub notes: Vec<String>,
}

/// The node installer's work, as the DaemonSet's script does it: every `*.json` of the
/// rendered ConfigMap into `<kubelet dir>/seccomp/stockade/` (returned), and on a node with
/// AppArmor every other entry (the AppArmor profile) loaded with `apparmor_parser`.
pub fn install_node_profiles(rendered: &Rendered, node: &Node) -> Vec<PathBuf> {
    let dir = node
        .kubelet_dir
        .join("seccomp")
        .join(stockade::k8s::SECCOMP_SUBDIR);
    std::fs::create_dir_all(&dir).unwrap();
    let mut written = Vec::new();
    for (name, text) in rendered.config_map["data"]
        .as_object()
        .expect("ConfigMap data")
    {
        let text = text.as_str().expect("profile text");
        if name.ends_with(".json") {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            written.push(path);
        } else if node.apparmor {
            let apparmor_dir = node.kubelet_dir.join("apparmor");
            std::fs::create_dir_all(&apparmor_dir).unwrap();
            let path = apparmor_dir.join(name);
            std::fs::write(&path, text).unwrap();
            let status = std::process::Command::new("apparmor_parser")
                .arg("--replace")
                .arg(&path)
                .status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "apparmor_parser --replace {}: {status:?}",
                path.display()
            );
        }
    }
    written
}

/// The kubelet's managed hosts file for a pod with `hostname` at `ip`.
pub fn hosts_file(hostname: &str, ip: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost \
         ip6-loopback\nfe00::0\tip6-localnet\nfe00::1\tip6-mcastprefix\n{ip}\t{hostname}\n"
    )
}

/// A Kubernetes quantity in bytes (`64Mi`, `1Gi`, `500M`, `1024`).
pub fn bytes(q: &str) -> u64 {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().expect("integer quantity") * factor;
        }
    }
    q.parse().unwrap_or_else(|_| panic!("quantity {q}"))
}

/// A Kubernetes CPU quantity in thousandths of a core (`500m`, `2`).
pub fn millicpu(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("millicores"),
        None => (q.parse::<f64>().expect("cores") * 1000.0).round() as i64,
    }
}

fn str_map(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn int64(v: &Value) -> Option<Int64Value> {
    v.as_i64().map(|value| Int64Value { value })
}

/// The effective seccomp profile: the container's, else the pod's.
fn seccomp(node: &Node, container: &Value, pod: &Value) -> Option<SecurityProfile> {
    let p = if container.get("seccompProfile").is_some() {
        &container["seccompProfile"]
    } else {
        pod.get("seccompProfile")?
    };
    Some(match p["type"].as_str() {
        Some("Localhost") => SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: node
                .kubelet_dir
                .join("seccomp")
                .join(p["localhostProfile"].as_str().expect("localhostProfile"))
                .display()
                .to_string(),
        },
        Some("Unconfined") => SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        },
        _ => SecurityProfile::default(),
    })
}

/// Translates the rendered pod for a node, the pod getting `uid`.
pub fn plan(rendered: &Rendered, node: &Node, uid: &str) -> Plan {
    let pod = &rendered.pod;
    let spec = &pod["spec"];
    let name = pod["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "the rendered pod has one container");
    let c = &containers[0];
    let cname = c["name"].as_str().expect("container name").to_string();
    let pod_sc = &spec["securityContext"];
    let sc = &c["securityContext"];
    let mut notes = Vec::new();

    let flag = |k: &str| spec[k].as_bool().unwrap_or(false);
    let mode = |node_wide: bool, pod_wide: bool| {
        if node_wide {
            NamespaceMode::Node
        } else if pod_wide {
            NamespaceMode::Pod
        } else {
            NamespaceMode::Container
        }
    } as i32;
    let namespaces = NamespaceOption {
        network: mode(flag("hostNetwork"), true),
        pid: mode(flag("hostPID"), flag("shareProcessNamespace")),
        ipc: mode(flag("hostIPC"), true),
        ..Default::default()
    };

    // Resources: the renderer sets requests equal to limits (Guaranteed).
    let limits = &c["resources"]["limits"];
    let requests = &c["resources"]["requests"];
    assert_eq!(limits["memory"], requests["memory"], "a Guaranteed pod");
    assert_eq!(limits["cpu"], requests["cpu"], "a Guaranteed pod");
    let memory = bytes(limits["memory"].as_str().expect("memory limit"));
    let cpu = millicpu(limits["cpu"].as_str().expect("cpu limit"));
    let quota = |millis: i64| (millis * CFS_PERIOD_US / 1000).max(1000);
    let shares = |millis: i64| (millis * 1024 / 1000).max(2);
    let resources = LinuxContainerResources {
        cpu_period: CFS_PERIOD_US,
        cpu_quota: quota(cpu),
        cpu_shares: shares(cpu),
        memory_limit_in_bytes: memory as i64,
        oom_score_adj: GUARANTEED_OOM_SCORE_ADJ,
        ..Default::default()
    };
    let fixed = &rendered.runtime_class["overhead"]["podFixed"];
    let overhead_memory = fixed["memory"].as_str().map(bytes).unwrap_or(0);
    let overhead_cpu = fixed["cpu"].as_str().map(millicpu).unwrap_or(0);
    let overhead = LinuxContainerResources {
        cpu_period: CFS_PERIOD_US,
        cpu_quota: quota(overhead_cpu),
        cpu_shares: shares(overhead_cpu),
        memory_limit_in_bytes: overhead_memory as i64,
        ..Default::default()
    };
    let annotations = str_map(&pod["metadata"]["annotations"]);
    let pids: u64 = annotations
        .get("org.stockade.limits.pids")
        .expect("the pids annotation")
        .parse()
        .unwrap();
    let cgroup_parent = format!("{}/pod{uid}", node.cgroup_root);
    let pod_cgroup = (
        cgroup_parent.clone(),
        PodLimits {
            memory: memory + overhead_memory,
            cpu_quota: quota(cpu + overhead_cpu),
            cpu_period: CFS_PERIOD_US as u64,
            pids,
        },
    );

    let mut labels = str_map(&pod["metadata"]["labels"]);
    labels.insert("io.kubernetes.pod.name".into(), name.clone());
    labels.insert("io.kubernetes.pod.namespace".into(), namespace.clone());
    labels.insert("io.kubernetes.pod.uid".into(), uid.into());
    let log_directory = node.log_dir.join(format!("{namespace}_{name}_{uid}"));
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: uid.into(),
            namespace: namespace.clone(),
            attempt: 0,
        }),
        hostname: spec["hostname"].as_str().unwrap_or(&name).to_string(),
        log_directory: log_directory.display().to_string(),
        labels: labels.clone(),
        annotations: annotations.clone(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces.clone()),
                run_as_user: int64(&pod_sc["runAsUser"]),
                run_as_group: int64(&pod_sc["runAsGroup"]),
                seccomp: seccomp(node, &Value::Null, pod_sc),
                ..Default::default()
            }),
            overhead: Some(overhead),
            resources: Some(resources.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };

    // Volumes: each emptyDir is a directory of the pod's; `medium: Memory` makes it a tmpfs.
    let pod_dir = node.kubelet_dir.join("pods").join(uid);
    let mut volumes = Vec::new();
    let mut volume_paths = HashMap::new();
    for v in spec["volumes"].as_array().cloned().unwrap_or_default() {
        let vname = v["name"].as_str().expect("volume name").to_string();
        let e = v
            .get("emptyDir")
            .expect("the rendered pod has emptyDir volumes only");
        let host_path = pod_dir.join("volumes/kubernetes.io~empty-dir").join(&vname);
        let tmpfs_size = (e["medium"].as_str() == Some("Memory")).then(|| {
            e["sizeLimit"]
                .as_str()
                .map(bytes)
                .unwrap_or(memory)
                .min(memory)
        });
        volumes.push(VolumeDir {
            host_path: host_path.clone(),
            tmpfs_size,
        });
        volume_paths.insert(vname, host_path);
    }
    let mount = |container_path: &str, host_path: &Path, readonly: bool| Mount {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        readonly,
        ..Default::default()
    };
    let mut mounts: Vec<Mount> = c["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let host = &volume_paths[m["name"].as_str().expect("mount name")];
            mount(
                m["mountPath"].as_str().expect("mountPath"),
                host,
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    // The kubelet's own files: the managed /etc/hosts (a pod on the pod network) and the
    // termination-message file, both writable.
    let hosts = pod_dir.join("etc-hosts");
    let termination = pod_dir
        .join("containers")
        .join(&cname)
        .join("termination-log");
    let files = vec![(termination.clone(), String::new())];
    if !flag("hostNetwork") {
        mounts.push(mount("/etc/hosts", &hosts, false));
    }
    let termination_path = c["terminationMessagePath"]
        .as_str()
        .unwrap_or("/dev/termination-log");
    mounts.push(mount(termination_path, &termination, false));

    let caps = &sc["capabilities"];
    let names = |k: &str| -> Vec<String> {
        caps[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let run_as = |k: &str| int64(&sc[k]).or_else(|| int64(&pod_sc[k]));
    let mut security = LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: names("add"),
            drop_capabilities: names("drop"),
            ..Default::default()
        }),
        privileged: sc["privileged"].as_bool().unwrap_or(false),
        namespace_options: Some(namespaces),
        run_as_user: run_as("runAsUser"),
        run_as_group: run_as("runAsGroup"),
        readonly_rootfs: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
        no_new_privs: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
        masked_paths: DEFAULT_MASKED_PATHS
            .iter()
            .map(ToString::to_string)
            .collect(),
        readonly_paths: DEFAULT_READONLY_PATHS
            .iter()
            .map(ToString::to_string)
            .collect(),
        seccomp: seccomp(node, sc, pod_sc),
        ..Default::default()
    };
    assert_eq!(
        sc["procMount"].as_str().unwrap_or("Default"),
        "Default",
        "only procMount: Default is modelled"
    );
    if let Some(profile) = sc["appArmorProfile"]["localhostProfile"].as_str() {
        if node.apparmor {
            security.apparmor = Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: profile.into(),
            });
            // The deprecated string too, as the kubelet sends it: containerd 1.6 reads
            // only this one.
            #[allow(deprecated)]
            {
                security.apparmor_profile = format!("localhost/{profile}");
            }
        } else {
            notes.push(format!(
                "AppArmor is host-gated: this node has no AppArmor, so a kubelet would refuse \
                 the pod's appArmorProfile {profile}; it is left out of the CRI request"
            ));
        }
    }

    let mut clabels = labels;
    clabels.insert("io.kubernetes.container.name".into(), cname.clone());
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: cname.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: c["image"].as_str().expect("image").into(),
            user_specified_image: c["image"].as_str().expect("image").into(),
            ..Default::default()
        }),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        working_dir: c["workingDir"].as_str().unwrap_or_default().into(),
        envs: c["env"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| KeyValue {
                key: e["name"].as_str().unwrap_or_default().into(),
                value: e["value"].as_str().unwrap_or_default().into(),
            })
            .collect(),
        mounts,
        labels: clabels,
        log_path: format!("{cname}/0.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(security),
        }),
        ..Default::default()
    };
    Plan {
        runtime_handler: rendered.runtime_class["handler"]
            .as_str()
            .unwrap_or_default()
            .into(),
        sandbox,
        container,
        volumes,
        files,
        hosts_path: hosts,
        pod_cgroup,
        notes,
    }
}
