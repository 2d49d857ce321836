//! The cheap probe: reads a few small files under [`HostPaths`], starts no process.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{CgroupMode, HostError, HostFacts, HostPaths};

/// Controller names a cgroup v1 hierarchy can carry. Anything else among a v1 mount's
/// super options (`rw`, `name=systemd`, `xattr`, `release_agent=…`) is not a controller.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// Probes the host under `paths`: cgroup mode and controllers, swap accounting, AppArmor,
/// seccomp, user namespaces, overlayfs, CPU count and architecture.
pub fn probe(paths: &HostPaths) -> Result<HostFacts, HostError> {
    let mounts = read_mount_table(&paths.proc)?;
    let cgroups = cgroup_facts(paths, &mounts)?;

    let seccomp_actions_path = paths.proc.join("sys/kernel/seccomp/actions_avail");
    let seccomp_actions = read_optional(&seccomp_actions_path)?;

    Ok(HostFacts {
        cgroup: cgroups.mode,
        cgroup_controllers: cgroups.controllers,
        swap_accounting: cgroups.swap_accounting,
        apparmor: apparmor_enabled(paths)?,
        seccomp: seccomp_actions.is_some(),
        seccomp_actions: seccomp_actions
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        user_namespaces: user_namespaces(paths)?,
        overlayfs: overlayfs(paths, &mounts)?,
        arch: std::env::consts::ARCH.to_string(),
        cpu_count: cpu_count(paths)?,
        oom_floor: sets_oom_floor(&paths.proc),
    })
}

/// `CAP_SYS_RESOURCE`'s bit in the capability sets of `/proc/<pid>/status`.
const CAP_SYS_RESOURCE_BIT: u32 = 24;

/// Whether this process holds `CAP_SYS_RESOURCE` (read from `<proc_root>/self/status`), and
/// so whether its write of `oom_score_adj` also sets the floor the sandbox cannot go below.
pub fn sets_oom_floor(proc_root: &Path) -> bool {
    std::fs::read_to_string(proc_root.join("self/status"))
        .ok()
        .and_then(|s| cap_effective(&s))
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE_BIT) != 0)
}

/// The `CapEff` mask of a `/proc/<pid>/status` text.
fn cap_effective(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// One line of the mount table: where, what type, and the filesystem's own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    /// Super options (mountinfo) or all options (`/proc/mounts`).
    pub options: Vec<String>,
}

/// Reads `proc/self/mountinfo`, or `proc/mounts` where mountinfo is missing.
fn read_mount_table(proc: &Path) -> Result<Vec<Mount>, HostError> {
    let mountinfo = proc.join("self/mountinfo");
    if let Some(text) = read_optional(&mountinfo)? {
        return parse_mountinfo(&text).map_err(|detail| HostError::Parse {
            path: mountinfo,
            detail,
        });
    }
    let mounts = proc.join("mounts");
    match read_optional(&mounts)? {
        Some(text) => parse_mounts(&text).map_err(|detail| HostError::Parse {
            path: mounts,
            detail,
        }),
        None => Err(HostError::NoMountTable {
            proc: proc.to_path_buf(),
        }),
    }
}

/// Parses `/proc/<pid>/mountinfo`: `id parent maj:min root mountpoint opts [optional…] -
/// fstype source superopts`.
pub(crate) fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| format!("line {}: no ' - ' separator", i + 1))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(format!("line {}: too few fields", i + 1));
        }
        out.push(Mount {
            mount_point: PathBuf::from(unescape_octal(fields[4])),
            fstype: fields[sep + 1].to_string(),
            options: fields
                .get(sep + 3)
                .map(|o| o.split(',').map(String::from).collect())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Parses `/proc/mounts` (fstab format): `source mountpoint fstype options freq passno`.
pub(crate) fn parse_mounts(text: &str) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            return Err(format!("line {}: too few fields", i + 1));
        }
        out.push(Mount {
            mount_point: PathBuf::from(unescape_octal(fields[1])),
            fstype: fields[2].to_string(),
            options: fields[3].split(',').map(String::from).collect(),
        });
    }
    Ok(out)
}

/// The kernel writes space, tab, newline and backslash in mount points as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).unwrap_or_default();
        if bytes[i] == b'\\'
            && digits.len() == 3
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct CgroupFacts {
    mode: CgroupMode,
    controllers: Vec<String>,
    swap_accounting: bool,
}

/// v2 when a `cgroup2` filesystem is mounted at the cgroup root; otherwise v1 controllers,
/// hybrid when a `cgroup2` hierarchy is mounted anywhere beside them.
fn cgroup_facts(paths: &HostPaths, mounts: &[Mount]) -> Result<CgroupFacts, HostError> {
    let unified_at_root = mounts
        .iter()
        .rev() // the last mount on a path is the one visible
        .find(|m| m.mount_point == paths.cgroup_root)
        .is_some_and(|m| m.fstype == "cgroup2");
    if unified_at_root {
        let dir = paths.resolve(&paths.cgroup_root);
        let list_path = dir.join("cgroup.controllers");
        let controllers: BTreeSet<String> = read_optional(&list_path)?
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        let swap_accounting = controllers.contains("memory") && v2_swap(&dir)?;
        return Ok(CgroupFacts {
            mode: CgroupMode::V2,
            controllers: controllers.into_iter().collect(),
            swap_accounting,
        });
    }

    let mut controllers = BTreeSet::new();
    let mut memory_mount = None;
    for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
        for opt in &m.options {
            if V1_CONTROLLERS.contains(&opt.as_str()) {
                controllers.insert(opt.clone());
                if opt == "memory" && memory_mount.is_none() {
                    memory_mount = Some(m.mount_point.clone());
                }
            }
        }
    }
    let has_v2 = mounts.iter().any(|m| m.fstype == "cgroup2");
    let swap_accounting = match memory_mount {
        Some(mp) => exists(&paths.resolve(&mp).join("memory.memsw.limit_in_bytes"))?,
        None => false,
    };
    Ok(CgroupFacts {
        mode: if has_v2 {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        },
        controllers: controllers.into_iter().collect(),
        swap_accounting,
    })
}

/// The v2 root has no `memory.swap.max`; a child cgroup with the memory controller on
/// shows whether swap accounting is compiled in and enabled. Without such a child there is
/// nothing to contradict the kernel default (on).
fn v2_swap(root: &Path) -> Result<bool, HostError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(HostError::Read {
                path: root.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir.is_dir() && exists(&dir.join("memory.max"))? {
            return exists(&dir.join("memory.swap.max"));
        }
    }
    Ok(true)
}

/// The AppArmor module says it is enabled and its securityfs interface is there.
fn apparmor_enabled(paths: &HostPaths) -> Result<bool, HostError> {
    let enabled = read_optional(&paths.sys.join("module/apparmor/parameters/enabled"))?;
    Ok(enabled.is_some_and(|s| s.trim() == "Y")
        && exists(&paths.sys.join("kernel/security/apparmor"))?)
}

/// `user.max_user_namespaces` above 0 and (Debian/Ubuntu kernels)
/// `kernel.unprivileged_userns_clone` not 0.
fn user_namespaces(paths: &HostPaths) -> Result<bool, HostError> {
    let max_path = paths.proc.join("sys/user/max_user_namespaces");
    let max = match read_optional(&max_path)? {
        Some(s) => s.trim().parse::<u64>().map_err(|e| HostError::Parse {
            path: max_path.clone(),
            detail: format!("not a number: {e}"),
        })?,
        None => 0,
    };
    let clone = read_optional(&paths.proc.join("sys/kernel/unprivileged_userns_clone"))?;
    Ok(max > 0 && clone.is_none_or(|s| s.trim() != "0"))
}

/// overlay is a registered filesystem, or its module is loaded, built in or installed.
fn overlayfs(paths: &HostPaths, mounts: &[Mount]) -> Result<bool, HostError> {
    if mounts.iter().any(|m| m.fstype == "overlay") {
        return Ok(true);
    }
    let filesystems = read_optional(&paths.proc.join("filesystems"))?.unwrap_or_default();
    if filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Ok(true);
    }
    if exists(&paths.sys.join("module/overlay"))? {
        return Ok(true);
    }
    // Not loaded yet: installed as a module the kernel loads on first mount?
    let Some(release) = read_optional(&paths.proc.join("sys/kernel/osrelease"))? else {
        return Ok(false);
    };
    let modules = paths.resolve(&Path::new("/lib/modules").join(release.trim()));
    for index in ["modules.dep", "modules.builtin"] {
        if let Some(text) = read_optional(&modules.join(index))? {
            if text.lines().any(|l| {
                let file = l.split(':').next().unwrap_or("");
                file.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("overlay.ko"))
            }) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Count of `devices/system/cpu/possible` (or `online`), a list like `0-3,8-11`.
fn cpu_count(paths: &HostPaths) -> Result<usize, HostError> {
    for name in ["possible", "online"] {
        let path = paths.sys.join("devices/system/cpu").join(name);
        if let Some(text) = read_optional(&path)? {
            return parse_cpu_list(&text).map_err(|detail| HostError::Parse { path, detail });
        }
    }
    let path = paths.sys.join("devices/system/cpu/possible");
    Err(HostError::Read {
        path,
        source: std::io::Error::new(ErrorKind::NotFound, "neither possible nor online exists"),
    })
}

/// Counts the CPUs in a kernel CPU list (`0`, `0-3`, `0-3,8-11`).
pub(crate) fn parse_cpu_list(text: &str) -> Result<usize, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty CPU list".into());
    }
    let mut count = 0usize;
    for part in text.split(',') {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad CPU list entry {part:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(format!("bad CPU range {part:?}"));
                }
                count += b - a + 1;
            }
            None => {
                num(part)?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// The file's text, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, HostError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
        Err(source) => Err(HostError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn exists(path: &Path) -> Result<bool, HostError> {
    path.try_exists().map_err(|source| HostError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
