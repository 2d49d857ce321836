//! The pod-level cgroup a kubelet makes before it asks the CRI for a pod (its pod container
//! manager, cgroupfs driver): the pod's memory and CPU limits, and the node's `podPidsLimit`.
//! The CRI plugin then puts each container's cgroup under it (`cgroup_parent` +
//! `/` + container id). Both cgroup v1 (one hierarchy per controller) and v2 are handled.

use std::path::{Path, PathBuf};

/// Where the cgroup filesystems are mounted on this host.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The limits the kubelet writes on a pod's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLimits {
    pub memory: u64,
    /// CFS quota and period, microseconds.
    pub cpu_quota: i64,
    pub cpu_period: u64,
    pub pids: u64,
}

/// True when `mount` is a cgroup v2 (unified) hierarchy.
pub fn is_v2(mount: &Path) -> bool {
    mount.join("cgroup.controllers").exists()
}

fn write(path: &Path, value: &str) {
    std::fs::write(path, value)
        .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
}

fn dir(mount: &Path, controller: &str, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if is_v2(mount) {
        mount.join(rel)
    } else {
        mount.join(controller).join(rel)
    }
}

/// Makes the cgroup `path` (absolute within the hierarchy) with `limits`, as the kubelet does
/// for a Guaranteed pod.
pub fn create_pod_cgroup(mount: &Path, path: &str, limits: &PodLimits) {
    if is_v2(mount) {
        // Each ancestor must hand the controllers down.
        let mut at = mount.to_path_buf();
        for part in Path::new(path.trim_start_matches('/')).components() {
            write(&at.join("cgroup.subtree_control"), "+memory +pids +cpu");
            at = at.join(part);
            std::fs::create_dir_all(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display()));
        }
        write(&at.join("memory.max"), &limits.memory.to_string());
        write(&at.join("pids.max"), &limits.pids.to_string());
        write(
            &at.join("cpu.max"),
            &format!("{} {}", limits.cpu_quota, limits.cpu_period),
        );
        return;
    }
    for (controller, files) in [
        (
            "memory",
            vec![("memory.limit_in_bytes", limits.memory.to_string())],
        ),
        ("pids", vec![("pids.max", limits.pids.to_string())]),
        (
            "cpu",
            vec![
                ("cpu.cfs_period_us", limits.cpu_period.to_string()),
                ("cpu.cfs_quota_us", limits.cpu_quota.to_string()),
            ],
        ),
    ] {
        let d = dir(mount, controller, path);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for (file, value) in files {
            write(&d.join(file), &value);
        }
    }
}

/// The pids limit of the cgroup `path`, as its `pids.max` says (`None` for `max`).
pub fn pids_max(mount: &Path, path: &str) -> Option<u64> {
    let d = dir(mount, "pids", path);
    let text = std::fs::read_to_string(d.join("pids.max"))
        .unwrap_or_else(|e| panic!("{}/pids.max: {e}", d.display()));
    text.trim().parse().ok()
}

/// Whether the cgroup `path` exists in any hierarchy.
pub fn exists(mount: &Path, path: &str) -> bool {
    hierarchies(mount)
        .iter()
        .any(|h| h.join(path.trim_start_matches('/')).exists())
}

fn hierarchies(mount: &Path) -> Vec<PathBuf> {
    if is_v2(mount) {
        return vec![mount.to_path_buf()];
    }
    std::fs::read_dir(mount)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the cgroup `root` and every cgroup below it in every hierarchy, deepest first
/// (a cgroup directory is removed with rmdir, its control files in place).
pub fn remove_tree(mount: &Path, root: &str) {
    fn rmdir_all(d: &Path) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_all(&e.path());
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(d) {
            eprintln!("removing cgroup {}: {e}", d.display());
        }
    }
    for h in hierarchies(mount) {
        let d = h.join(root.trim_start_matches('/'));
        if d.exists() {
            rmdir_all(&d);
        }
    }
}
