//! What the host supports: cgroup mode and controllers, AppArmor, seccomp, user namespaces,
//! overlayfs, runc and containerd. Probing reads paths passed in, so it tests in a tempdir.
//!
//! [`probe`] is cheap (a handful of small file reads, no processes) and runs before every
//! sandbox; [`doctor::report`] adds what needs processes and sockets (runc and containerd
//! versions, containerd reachability) for `stockade doctor`.

pub mod doctor;
mod probe;
pub mod version;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use probe::{probe, sets_oom_floor};

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only cgroup v1 hierarchies.
    V1,
    /// A single cgroup v2 hierarchy (unified).
    V2,
    /// cgroup v1 controllers with a cgroup v2 hierarchy beside them (controllers on v1).
    Hybrid,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        })
    }
}

/// Facts about the host that decide what a spec may ask for and what can be enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    /// Which cgroup hierarchy the host mounts (v1, hybrid, v2).
    pub cgroup: CgroupMode,
    /// Controllers available to containers, sorted (on v1/hybrid: the mounted v1 controllers;
    /// on v2: the root's `cgroup.controllers`).
    pub cgroup_controllers: Vec<String>,
    /// cgroup v1 `memory.memsw.*` exists (v2: `memory.swap.max` exists, or the memory
    /// controller is on and no child cgroup shows otherwise).
    pub swap_accounting: bool,
    /// The kernel has AppArmor enabled.
    pub apparmor: bool,
    /// The kernel supports seccomp filters.
    pub seccomp: bool,
    /// `/proc/sys/kernel/seccomp/actions_avail`.
    pub seccomp_actions: Vec<String>,
    /// Unprivileged user namespaces can be created.
    pub user_namespaces: bool,
    /// overlayfs is available.
    pub overlayfs: bool,
    /// Machine architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Number of possible CPUs (for per-CPU masked paths).
    pub cpu_count: usize,
    /// This process holds `CAP_SYS_RESOURCE`, so the `oom_score_adj` it sets for a sandbox
    /// is also the floor the sandbox cannot go below (some container hosts drop it even for
    /// root).
    pub oom_floor: bool,
}

impl HostFacts {
    /// A pure cgroup v2 host with AppArmor and every feature present: what tests use when
    /// they need a fixed, fully capable host.
    pub fn capable_v2() -> HostFacts {
        HostFacts {
            cgroup: CgroupMode::V2,
            cgroup_controllers: ["cpu", "cpuset", "io", "memory", "pids"]
                .map(String::from)
                .to_vec(),
            swap_accounting: true,
            apparmor: true,
            seccomp: true,
            seccomp_actions: [
                "kill_process",
                "kill_thread",
                "trap",
                "errno",
                "user_notif",
                "trace",
                "log",
                "allow",
            ]
            .map(String::from)
            .to_vec(),
            user_namespaces: true,
            overlayfs: true,
            arch: "x86_64".into(),
            cpu_count: 2,
            oom_floor: true,
        }
    }

    /// A hybrid host without AppArmor, like the Debian 12 CI hosts.
    pub fn hybrid_no_apparmor() -> HostFacts {
        HostFacts {
            cgroup: CgroupMode::Hybrid,
            cgroup_controllers: [
                "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids",
            ]
            .map(String::from)
            .to_vec(),
            apparmor: false,
            ..HostFacts::capable_v2()
        }
    }

    /// Whether `controller` is available to containers.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.cgroup_controllers.iter().any(|c| c == controller)
    }
}

/// Where the probe looks. Every host path the probe reads is under one of these, so tests
/// point them at a fake tree in a tempdir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// procfs. Default `/proc`.
    pub proc: PathBuf,
    /// sysfs. Default `/sys`.
    pub sys: PathBuf,
    /// The cgroup root as the mount table names it. Default `/sys/fs/cgroup` (where runc
    /// and containerd look): a `cgroup2` mount here means a pure v2 host.
    pub cgroup_root: PathBuf,
    /// Prefix under which the absolute mount points read from the mount table (and
    /// `/lib/modules`) are opened. Default `/`; a fixture root in tests.
    pub root: PathBuf,
}

impl HostPaths {
    /// The real host.
    pub fn system() -> HostPaths {
        HostPaths::under(Path::new("/"))
    }

    /// A host tree rooted at `root` (`root/proc`, `root/sys`, mount points under `root`).
    pub fn under(root: &Path) -> HostPaths {
        HostPaths {
            proc: root.join("proc"),
            sys: root.join("sys"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            root: root.to_path_buf(),
        }
    }

    /// Where an absolute host path (a mount point from the mount table) is opened.
    pub fn resolve(&self, absolute: &Path) -> PathBuf {
        match absolute.strip_prefix("/") {
            Ok(rel) => self.root.join(rel),
            Err(_) => self.root.join(absolute),
        }
    }
}

/// Probing failed: a file that every Linux host has could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A host file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// A host file's contents were not understood.
    #[error("{path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Neither mount table under the proc root could be read.
    #[error("{proc}: neither self/mountinfo nor mounts can be read")]
    NoMountTable {
        /// The proc root.
        proc: PathBuf,
    },
}
