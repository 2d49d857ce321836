//! What a sandbox used and whether the OOM killer struck, read from its cgroup after the
//! process exited and before the task is deleted (deleting removes the cgroup). Also the
//! removal of cgroups that crashed runs left behind. The cgroup mount point is a parameter,
//! so all of this is tested against a fake tree in a tempdir.
//!
//! Layouts: cgroup v2 (a `cgroup.controllers` file at the root) reads `memory.peak`,
//! `memory.events` and `cpu.stat`; cgroup v1 and hybrid hosts (v1 controllers, the v2
//! hierarchy beside them without controllers) read the `memory` and `cpuacct` hierarchies.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Resource usage of one sandbox. Each figure is `None` when the host does not provide it
/// (e.g. `memory.peak` needs Linux 5.19 on cgroup v2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Highest memory use of the cgroup, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time of all its processes, user and system, in nanoseconds.
    pub cpu_time_ns: Option<u64>,
    /// Processes the OOM killer killed in the cgroup.
    #[serde(skip)]
    pub oom_kills: Option<u64>,
}

/// The cgroup filesystem mounted at `root` (normally `/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct CgroupFs {
    root: PathBuf,
}

/// The v1 hierarchies a sandbox's cgroup is created in and that stockade removes.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpu,cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "net_cls",
    "net_prio",
    "net_cls,net_prio",
    "perf_event",
    "pids",
    "rdma",
    "misc",
    "systemd",
    "unified",
];

impl CgroupFs {
    /// The cgroup filesystem mounted at `root` (normally `/sys/fs/cgroup`).
    pub fn new(root: impl Into<PathBuf>) -> CgroupFs {
        CgroupFs { root: root.into() }
    }

    /// Where the cgroup filesystem is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A pure cgroup v2 mount (`cgroup.controllers` at the root).
    pub fn is_v2(&self) -> bool {
        self.root.join("cgroup.controllers").exists()
    }

    fn at(&self, hierarchy: Option<&str>, cgroups_path: &str) -> PathBuf {
        let mut p = self.root.clone();
        if let Some(h) = hierarchy {
            p.push(h);
        }
        p.push(cgroups_path.trim_start_matches('/'));
        p
    }

    /// Reads the usage of the cgroup at `cgroups_path` (as in the spec, e.g.
    /// `/stockade/stk-…`).
    pub fn usage(&self, cgroups_path: &str) -> Usage {
        if self.is_v2() {
            let dir = self.at(None, cgroups_path);
            Usage {
                peak_memory_bytes: read_u64(&dir.join("memory.peak")),
                cpu_time_ns: read_key(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000),
                oom_kills: read_key(&dir.join("memory.events"), "oom_kill"),
            }
        } else {
            let mem = self.at(Some("memory"), cgroups_path);
            let cpu = ["cpuacct", "cpu,cpuacct"]
                .iter()
                .find_map(|h| read_u64(&self.at(Some(h), cgroups_path).join("cpuacct.usage")));
            Usage {
                peak_memory_bytes: read_u64(&mem.join("memory.max_usage_in_bytes")),
                cpu_time_ns: cpu,
                // `oom_kill` exists since Linux 4.13; before it, `under_oom` is all there is.
                oom_kills: read_key(&mem.join("memory.oom_control"), "oom_kill"),
            }
        }
    }

    /// Every directory a sandbox's cgroup has on this host (one per v1 hierarchy, or one on
    /// v2) that exists now.
    pub fn dirs(&self, cgroups_path: &str) -> Vec<PathBuf> {
        let candidates: Vec<PathBuf> = if self.is_v2() {
            vec![self.at(None, cgroups_path)]
        } else {
            V1_CONTROLLERS
                .iter()
                .map(|h| self.at(Some(h), cgroups_path))
                .collect()
        };
        let mut out: Vec<PathBuf> = Vec::new();
        for c in candidates {
            // `cpu` and `cpuacct` are often symlinks to `cpu,cpuacct`: report each once.
            let real = std::fs::canonicalize(&c).unwrap_or(c.clone());
            if c.is_dir()
                && !out
                    .iter()
                    .any(|o| std::fs::canonicalize(o).ok() == Some(real.clone()))
            {
                out.push(c);
            }
        }
        out
    }

    /// Names of the sandbox cgroups under `parent` (e.g. `/stockade`) in any hierarchy.
    pub fn children(&self, parent: &str) -> Vec<String> {
        let hierarchies: Vec<Option<&str>> = if self.is_v2() {
            vec![None]
        } else {
            V1_CONTROLLERS.iter().map(|h| Some(*h)).collect()
        };
        let mut names = Vec::new();
        for h in hierarchies {
            if let Ok(rd) = std::fs::read_dir(self.at(h, parent)) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
        }
        names.sort();
        names
    }

    /// Whether any of the sandbox's cgroup directories still holds a process.
    pub fn has_processes(&self, cgroups_path: &str) -> bool {
        self.dirs(cgroups_path).iter().any(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .map(|s| !s.trim().is_empty())
                .unwrap_or(false)
        })
    }

    /// Removes the sandbox's (empty) cgroup directories. A cgroup that still has processes
    /// cannot be removed; that is reported, not forced.
    pub fn remove(&self, cgroups_path: &str) -> Result<usize, String> {
        let mut removed = 0;
        let mut errors = Vec::new();
        for d in self.dirs(cgroups_path) {
            match std::fs::remove_dir(&d) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(format!("{}: {e}", d.display())),
            }
        }
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(errors.join("; "))
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line).
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_key(&text, key)
}

fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v1_usage_and_oom_come_from_memory_and_cpuacct() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(
            r,
            "memory/stockade/a/memory.max_usage_in_bytes",
            "16777216\n",
        );
        write(
            r,
            "memory/stockade/a/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(r, "cpuacct/stockade/a/cpuacct.usage", "123456789\n");
        let u = CgroupFs::new(r).usage("/stockade/a");
        assert_eq!(
            u,
            Usage {
                peak_memory_bytes: Some(16 << 20),
                cpu_time_ns: Some(123_456_789),
                oom_kills: Some(1),
            }
        );
    }

    #[test]
    fn v1_combined_cpu_cpuacct_mount_is_read() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cpu,cpuacct/stockade/a/cpuacct.usage", "5\n");
        assert_eq!(
            CgroupFs::new(t.path()).usage("/stockade/a").cpu_time_ns,
            Some(5)
        );
    }

    #[test]
    fn v2_usage_and_oom_come_from_peak_events_and_cpu_stat() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "cgroup.controllers", "cpu memory pids\n");
        write(r, "stockade/a/memory.peak", "4096\n");
        write(
            r,
            "stockade/a/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n",
        );
        write(
            r,
            "stockade/a/cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        );
        let u = CgroupFs::new(r).usage("/stockade/a");
        assert_eq!(
            u,
            Usage {
                peak_memory_bytes: Some(4096),
                cpu_time_ns: Some(1_500_000),
                oom_kills: Some(2),
            }
        );
    }

    #[test]
    fn missing_files_give_none_not_zero() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "cgroup.controllers", "memory\n");
        assert_eq!(
            CgroupFs::new(t.path()).usage("/stockade/gone"),
            Usage::default()
        );
        let t1 = tempfile::tempdir().unwrap();
        assert_eq!(
            CgroupFs::new(t1.path()).usage("/stockade/gone"),
            Usage::default()
        );
    }

    #[test]
    fn keyed_files_parse_only_the_exact_key() {
        let text = "oom 7\noom_kill 3\n";
        assert_eq!(parse_key(text, "oom_kill"), Some(3));
        assert_eq!(parse_key(text, "oom"), Some(7));
        assert_eq!(parse_key(text, "oom_group_kill"), None);
        assert_eq!(parse_key("oom_kill x\n", "oom_kill"), None);
    }

    #[test]
    fn children_and_remove_cover_every_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for h in ["memory", "pids", "unified"] {
            std::fs::create_dir_all(r.join(h).join("stockade/stk-a")).unwrap();
        }
        std::fs::create_dir_all(r.join("cpu/stockade/stk-b")).unwrap();
        let fs = CgroupFs::new(r);
        assert_eq!(fs.children("/stockade"), ["stk-a", "stk-b"]);
        assert_eq!(fs.dirs("/stockade/stk-a").len(), 3);
        assert_eq!(fs.remove("/stockade/stk-a"), Ok(3));
        assert!(fs.dirs("/stockade/stk-a").is_empty());
        assert_eq!(fs.children("/stockade"), ["stk-b"]);
    }

    #[test]
    fn processes_are_seen_in_any_hierarchy() {
        let t = tempfile::tempdir().unwrap();
        let cg = CgroupFs::new(t.path());
        write(t.path(), "memory/stockade/stk-a/cgroup.procs", "");
        write(t.path(), "pids/stockade/stk-a/cgroup.procs", "");
        assert!(!cg.has_processes("/stockade/stk-a"));
        write(t.path(), "pids/stockade/stk-a/cgroup.procs", "4242\n");
        assert!(cg.has_processes("/stockade/stk-a"));
        assert!(!cg.has_processes("/stockade/stk-missing"));
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "cgroup.controllers", "memory pids");
        write(v2.path(), "stockade/stk-b/cgroup.procs", "7\n");
        assert!(CgroupFs::new(v2.path()).has_processes("/stockade/stk-b"));
    }
}
