//! What the host offers for bounding disk use, and the mechanism chosen from it.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// How disk use is bounded on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Mechanism {
    /// A loop-mounted ext4 image per volume.
    LoopImage,
    /// Nothing can bound it: why.
    Unavailable {
        /// Why not.
        reason: String,
    },
}

impl Mechanism {
    /// The name runs and `doctor` report.
    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::LoopImage => "loop-ext4",
            Mechanism::Unavailable { .. } => "none",
        }
    }
}

/// What the host offers for disk limits, as probed (see [`probe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskFacts {
    /// The filesystem holding the disk root: type and superblock options, when known.
    pub fs_type: Option<String>,
    /// Its superblock options.
    pub fs_options: Vec<String>,
    /// `/dev/loop-control` exists.
    pub loop_control: bool,
    /// `mkfs.ext4`, `mount` and `losetup` were found.
    pub tools: Vec<(String, bool)>,
    /// The kernel lists ext4.
    pub ext4: bool,
}

/// Whether a filesystem of type `fs_type` mounted with superblock options `options`
/// enforces project quotas. Pure.
pub fn project_quota(fs_type: &str, options: &[String]) -> bool {
    let has = |o: &str| options.iter().any(|x| x == o);
    match fs_type {
        // `pqnoenforce` accounts without enforcing: no limit.
        "xfs" => has("prjquota") || has("pquota"),
        "ext4" => has("prjquota"),
        _ => false,
    }
}

/// The mechanism for a host with these facts. Pure.
pub fn choose(f: &DiskFacts) -> Mechanism {
    let missing: Vec<&str> = f
        .tools
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| t.as_str())
        .collect();
    if !f.loop_control {
        return Mechanism::Unavailable {
            reason: "no /dev/loop-control (the loop driver is not loaded)".into(),
        };
    }
    if !f.ext4 {
        return Mechanism::Unavailable {
            reason: "the kernel has no ext4".into(),
        };
    }
    if !missing.is_empty() {
        return Mechanism::Unavailable {
            reason: format!("missing {} (e2fsprogs, util-linux)", missing.join(", ")),
        };
    }
    Mechanism::LoopImage
}

/// The tools the loop mechanism runs.
pub const TOOLS: &[&str] = &["mkfs.ext4", "mount", "losetup"];

/// Probes the host: the filesystem of `disk_root` (its nearest existing ancestor) from
/// `<proc_root>/self/mountinfo`, `/dev/loop-control`, ext4 in `<proc_root>/filesystems`,
/// and the tools on `PATH`.
pub fn probe(proc_root: &Path, dev_root: &Path, disk_root: &Path) -> DiskFacts {
    let mountinfo = std::fs::read_to_string(proc_root.join("self/mountinfo")).unwrap_or_default();
    let mut dir = disk_root.to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            break;
        }
    }
    let fs = fs_of(&mountinfo, &dir);
    let filesystems = std::fs::read_to_string(proc_root.join("filesystems")).unwrap_or_default();
    DiskFacts {
        fs_type: fs.as_ref().map(|f| f.0.clone()),
        fs_options: fs.map(|f| f.1).unwrap_or_default(),
        loop_control: dev_root.join("loop-control").exists(),
        tools: TOOLS
            .iter()
            .map(|t| (t.to_string(), find_tool(t).is_some()))
            .collect(),
        ext4: filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some("ext4")),
    }
}

/// The type and superblock options of the mount holding `path` (the longest mount point
/// that is a prefix of it) in a mountinfo text. Pure.
pub fn fs_of(mountinfo: &str, path: &Path) -> Option<(String, Vec<String>)> {
    let mut best: Option<(usize, String, Vec<String>)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mp = Path::new(mount_point);
        if !path.starts_with(mp) {
            continue;
        }
        let mut r = right.split(' ');
        let Some(fs_type) = r.next().map(str::to_string) else {
            continue;
        };
        let _source = r.next();
        let options = r
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect();
        let len = mp.as_os_str().len();
        if best.as_ref().is_none_or(|b| len >= b.0) {
            best = Some((len, fs_type, options));
        }
    }
    best.map(|b| (b.1, b.2))
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
