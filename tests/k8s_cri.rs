//! The pod `stockade k8s render` prints runs through containerd's CRI, as a kubelet would
//! run it, confined exactly as `stockade run` confines the same policy, seen from inside
//! each: user and groups, the five capability sets, no_new_privs, the seccomp mode and
//! filter, the read-only root, /tmp, the memory, CPU and pids limits, the AppArmor label,
//! the writable mounts and masked paths, and how four attacks fail (writing the root, an
//! IPv4 socket under network `none`, a user namespace, a mount). The only differences
//! allowed are those the renderer declares Kubernetes cannot express and the kubelet's own
//! files. Afterwards nothing of the pod is left: no pod, container, task, snapshot, shim,
//! network namespace, CNI attachment, mount, bridge or cgroup.
//!
//! The daemon is a private containerd with its CRI plugin enabled (`cri_support`); the CRI
//! requests are what `cri_support::kubelet` derives from the rendered YAML.

mod common;
mod cri_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use k8s_cri::v1::{
    CreateContainerRequest, ExecSyncRequest, ListContainersRequest, ListPodSandboxRequest,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use stockade::host::{self, HostPaths};
use stockade::k8s::{self, Kind, Options};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::runner::{CleanupMode, RunRequest, Runner, StoreImages};

use common::{busybox_image, require_or_skip};
use cri_support::cgroup::{self, CGROUP_MOUNT};
use cri_support::kubelet::{self, Node};
use cri_support::probe::{loaded_seccomp, pruned, view, View, PROBE};
use cri_support::{CriNode, CNI_PLUGINS, CRI_NAMESPACE, POD_SUBNET};

/// The keys compared between the two views.
const COMPARED: &[&str] = &[
    "uid",
    "gid",
    "groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
    "root",
    "tmp",
    "memory",
    "cpu",
    "cpu_weight",
    "lsm",
    "write_root",
    "inet_socket",
    "userns",
    "mount",
];

/// An empty capability set as /proc/PID/status prints it.
const ZERO_CAPS: &str = "0000000000000000";

/// Files the kubelet bind-mounts writable into every container of a pod on the pod
/// network: its managed hosts file and the termination-message file.
const KUBELET_FILES: &[&str] = &["/dev/termination-log", "/etc/hosts"];

/// Whether `path` matches `pattern`, where a `*` stands for one run of characters within
/// a path component (the CPU number in `/sys/devices/system/cpu/cpu*/thermal_throttle`).
fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter().zip(&q).all(|(p, q)| match p.split_once('*') {
            Some((head, tail)) => {
                q.len() >= head.len() + tail.len() && q.starts_with(head) && q.ends_with(tail)
            }
            None => p == q,
        })
}

fn policy() -> ValidatedPolicy {
    Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                user: Some("1000:1000".into()),
                cap_add: vec!["NET_BIND_SERVICE".into()],
                memory: Some("256M".into()),
                cpus: Some("0.5".into()),
                pids: Some("64".into()),
                ..Default::default()
            },
            &HostPolicyEnv,
        )
        .expect("valid policy")
}

/// What `stockade run` shows from inside.
async fn stockade_view(node: &CriNode, policy: &ValidatedPolicy) -> View {
    let client = node.daemon().client("stockade").await;
    busybox_image(&client).await;
    let fifos = tempfile::tempdir_in(node.daemon().base()).unwrap();
    let runner = Runner::builder()
        .client(client)
        .host(host::probe(&HostPaths::system()).expect("probe host"))
        .images(Arc::new(StoreImages::default()))
        .fifo_root(fifos.path())
        .cleanup(CleanupMode::Inline)
        .build()
        .expect("runner");
    let r = runner
        .run(RunRequest::new(policy.clone(), ["sh", "-c", PROBE]))
        .await
        .unwrap_or_else(|e| panic!("stockade run: {e}"));
    assert_eq!(r.exit_code, 0, "probe under stockade run: {}", r.stderr);
    view(&r.stdout)
}

/// The kubelet's preparations, the CRI calls up to the probe's ExecSync, and the pod's
/// whole teardown. Returns the view and the container's effective pids limit (its own
/// cgroup's, or the pod cgroup's above it, whichever is lower), read on the host.
async fn cri_view(
    node: &CriNode,
    yaml: &str,
    kubelet_node: &Node,
) -> (View, Option<u64>, Vec<String>) {
    let rendered = kubelet::parse(yaml);
    let profiles = kubelet::install_node_profiles(&rendered, kubelet_node);
    assert_eq!(
        profiles.len(),
        1,
        "one seccomp profile installed: {profiles:?}"
    );
    let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let plan = kubelet::plan(&rendered, kubelet_node, uid);
    for note in &plan.notes {
        eprintln!("note: {note}");
    }

    // The kubelet's side: pod cgroup, volumes, files, log directory.
    cgroup::create_pod_cgroup(
        Path::new(CGROUP_MOUNT),
        &plan.pod_cgroup.0,
        &plan.pod_cgroup.1,
    );
    for v in &plan.volumes {
        std::fs::create_dir_all(&v.host_path).unwrap();
        if let Some(size) = v.tmpfs_size {
            nix::mount::mount(
                Some("tmpfs"),
                &v.host_path,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={size}").as_str()),
            )
            .unwrap_or_else(|e| panic!("tmpfs on {}: {e}", v.host_path.display()));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&v.host_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for (path, text) in &plan.files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let log_dir = Path::new(&plan.sandbox.log_directory);
    std::fs::create_dir_all(log_dir.join(&plan.container.metadata.as_ref().unwrap().name)).unwrap();

    let k8s_client = node.daemon().client(CRI_NAMESPACE).await;
    busybox_image(&k8s_client).await;
    let image = plan.container.image.as_ref().unwrap().image.clone();
    node.wait_for_image(&image).await;

    let mut cri = node.runtime().await;
    let pod_id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(plan.sandbox.clone()),
            runtime_handler: plan.runtime_handler.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let attempt = std::panic::AssertUnwindSafe(async {
        // The kubelet learns the pod's address from the sandbox's status and writes the
        // managed hosts file with it before it creates the container.
        let status = cri
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.clone(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}"))
            .into_inner()
            .status
            .expect("a sandbox status");
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        assert!(
            ip.starts_with(POD_SUBNET.trim_end_matches("0/24")),
            "the CNI network gave the pod {ip:?}, not an address of {POD_SUBNET}"
        );
        std::fs::write(
            &plan.hosts_path,
            kubelet::hosts_file(&plan.sandbox.hostname, &ip),
        )
        .unwrap();
        let id = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(plan.container.clone()),
                sandbox_config: Some(plan.sandbox.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
            .into_inner()
            .container_id;
        let loaded = loaded_seccomp(node, &id).await;
        cri.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
        let out = cri
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), PROBE.into()],
                timeout: 60,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync: {e}"))
            .into_inner();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.exit_code,
            0,
            "probe through the CRI: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mount = Path::new(CGROUP_MOUNT);
        let own = cgroup::pids_max(mount, &format!("{}/{id}", plan.pod_cgroup.0));
        let pod = cgroup::pids_max(mount, &plan.pod_cgroup.0);
        let pids = own.into_iter().chain(pod).min();
        cri.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer: {e}"));
        cri.remove_container(RemoveContainerRequest { container_id: id })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer: {e}"));
        (view(&stdout), pids, loaded)
    })
    .catch_unwind()
    .await;
    // The pod goes whatever happened to its container, as the kubelet's pod cleanup does.
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
    // The kubelet unmounts the pod's volumes once the pod is gone.
    for v in plan.volumes.iter().filter(|v| v.tmpfs_size.is_some()) {
        nix::mount::umount(&v.host_path)
            .unwrap_or_else(|e| panic!("unmount {}: {e}", v.host_path.display()));
    }
    match attempt {
        Ok((view, pids, loaded)) => {
            // The filter containerd put in the container's spec is the profile the node
            // installer wrote, unchanged.
            let installed: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&profiles[0]).unwrap()).unwrap();
            assert!(
                pruned(&loaded) == pruned(&installed),
                "the CRI loaded another seccomp filter than {}",
                profiles[0].display()
            );
            (view, pids, plan.notes)
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_pod_run_through_the_cri_is_confined_as_stockade_run_confines_it() {
    let mut needs = vec!["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/ip"];
    needs.extend_from_slice(CNI_PLUGINS);
    if !require_or_skip("the CRI proof", &needs) {
        return;
    }
    let node = CriNode::start().await;
    let policy = policy();
    let kubelet_node = Node {
        kubelet_dir: node.daemon().base().join("kubelet"),
        log_dir: node.daemon().base().join("pods-log"),
        cgroup_root: node.cgroup_root.clone(),
        apparmor: Path::new("/sys/kernel/security/apparmor").exists(),
    };
    let mut opts = Options::new(Kind::Pod);
    opts.name = "cri-proof".into();
    opts.kubelet_dir = kubelet_node.kubelet_dir.display().to_string();
    opts.command = ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]
        .map(String::from)
        .to_vec();
    let yaml = k8s::to_yaml(&k8s::render(&policy, &opts).expect("render"));

    let ours = stockade_view(&node, &policy).await;
    let (theirs, cri_pids, notes) = cri_view(&node, &yaml, &kubelet_node).await;

    // Nothing of the pod is left in the daemon or on the host.
    let mut cri = node.runtime().await;
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let containers = cri
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "containers left: {containers:?}");
    node.assert_no_leftovers(Duration::from_secs(20)).await;
    assert!(
        node.cni_results().is_empty(),
        "CNI attachments left: {:?}",
        node.cni_results()
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left = stockade::containerd::daemon::mounts_under(&mountinfo, node.daemon().base());
    assert!(left.is_empty(), "mounts left under the daemon: {left:?}");

    // The comparison, field by field. What the renderer declares Kubernetes cannot say
    // (its org.stockade.* annotations) is the only difference allowed, and it must show
    // exactly as declared.
    eprintln!("stockade run: {ours:#?}");
    eprintln!("through the CRI: {theirs:#?}");
    let rendered = kubelet::parse(&yaml);
    let ambient = rendered.pod["metadata"]["annotations"]["org.stockade.capabilities.ambient"]
        .as_str()
        .map(String::from);
    let mut expected = ours.fields.clone();
    if let Some(caps) = &ambient {
        // Bounding only: no set a non-root process acts with holds them.
        assert_ne!(
            ours.fields["CapEff"], ZERO_CAPS,
            "stockade run grants {caps}"
        );
        for k in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            expected.insert(k.into(), ZERO_CAPS.into());
        }
    }
    let mut differ = Vec::new();
    for k in COMPARED {
        let (want, got) = (expected.get(*k), theirs.fields.get(*k));
        assert!(want.is_some(), "stockade run's view has no {k}");
        if want != got {
            differ.push(format!("{k}: stockade run {want:?}, CRI {got:?}"));
        }
    }
    assert!(
        differ.is_empty(),
        "the views differ:\n{}",
        differ.join("\n")
    );
    for (attack, success) in [
        ("write_root", "written"),
        ("inet_socket", "connected"),
        ("userns", "created"),
        ("mount", "mounted"),
    ] {
        let how = &theirs.fields[attack];
        assert!(
            !how.is_empty() && !how.ends_with(success),
            "{attack} succeeded in the pod: {how:?}"
        );
    }
    assert_eq!(
        ours.fields["CapBnd"], "0000000000000400",
        "NET_BIND_SERVICE alone"
    );

    // Writable: what stockade run makes writable, and the kubelet's own files only.
    let mut want_writable = ours.writable.clone();
    want_writable.extend(KUBELET_FILES.iter().map(ToString::to_string));
    want_writable.sort();
    assert_eq!(
        theirs.writable, want_writable,
        "writable mounts through the CRI"
    );

    // Masked: the pod gets Kubernetes' default masked paths (procMount: Default); what
    // stockade masks beyond them is declared in org.stockade.masked-paths, and only that is
    // visible in the pod.
    let declared: Vec<String> = rendered.pod["metadata"]["annotations"]
        ["org.stockade.masked-paths"]
        .as_str()
        .expect("the masked-paths annotation")
        .split(',')
        .map(String::from)
        .collect();
    let only_ours: Vec<&String> = ours
        .masked
        .iter()
        .filter(|p| !theirs.masked.contains(p))
        .collect();
    let only_theirs: Vec<&String> = theirs
        .masked
        .iter()
        .filter(|p| !ours.masked.contains(p))
        .collect();
    assert!(
        only_theirs.is_empty(),
        "masked only in the pod: {only_theirs:?}"
    );
    assert!(
        !only_ours.is_empty(),
        "/proc/interrupts is masked by stockade alone"
    );
    for p in only_ours {
        assert!(
            declared.iter().any(|d| matches(d, p)),
            "{p} is masked by stockade run, not in the pod, and not declared: {declared:?}"
        );
    }

    // pids: a pod has no pids field; the node's podPidsLimit on the pod cgroup holds it.
    let our_pids: Option<u64> = ours.fields["pids"].parse().ok();
    assert_eq!(our_pids, Some(64), "stockade run's pids limit");
    assert_eq!(
        cri_pids, our_pids,
        "the pod's effective pids limit (its pod cgroup)"
    );
    for note in notes {
        eprintln!("not compared: {note}");
    }

    // The node itself goes: the daemon, its tempdir, the bridge, the pods' cgroup root.
    let (base, bridge, cgroup_root) = (
        node.daemon().base().to_path_buf(),
        node.bridge.clone(),
        node.cgroup_root.clone(),
    );
    drop(node);
    assert!(!base.exists(), "{} left", base.display());
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} left"
    );
    assert!(
        !cgroup::exists(Path::new(CGROUP_MOUNT), &cgroup_root),
        "cgroup {cgroup_root} left"
    );
}
