//! What the host supports: cgroup mode and controllers, AppArmor, seccomp, user namespaces,
//! overlayfs, runc and containerd. Probing reads paths passed in, so it tests in a tempdir.

use serde::Serialize;

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

/// Facts about the host that decide what a spec may ask for and what can be enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFacts {
    pub cgroup: CgroupMode,
    /// Controllers available to containers (on v1/hybrid: the mounted v1 controllers).
    pub cgroup_controllers: Vec<String>,
    /// cgroup v1 `memory.memsw.*` exists (v2 always has `memory.swap.max`).
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
    pub runc_version: Option<String>,
    pub containerd_version: Option<String>,
    /// Machine architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Number of possible CPUs (for per-CPU masked paths).
    pub cpu_count: usize,
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
            runc_version: Some("1.1.5".into()),
            containerd_version: Some("1.6.20".into()),
            arch: "x86_64".into(),
            cpu_count: 2,
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
}
