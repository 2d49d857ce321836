//! Shared by the run tests: a runner on a private containerd, and the proof that a run left
//! nothing behind (checked through the API, /proc and the filesystem).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stockade::containerd::daemon;
use stockade::containerd::Client;
use stockade::runner::{CgroupFs, DEFAULT_CGROUP_ROOT, DEFAULT_SNAPSHOTTER};

use crate::common::census;

/// Everything of a run that could leak, by kind, as found now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub containers: Vec<String>,
    pub tasks: Vec<String>,
    pub snapshots: Vec<String>,
    pub fifo_dirs: Vec<String>,
    pub cgroups: Vec<PathBuf>,
    pub mounts: Vec<String>,
    pub shims: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        *self == Leftovers::default()
    }
}

/// What of the runs named `stk-*` (or only of `ids`, when given) still exists. Objects of
/// this containerd (containers, tasks, snapshots, shims) and the FIFO root are private to
/// the test; cgroups and mounts are host-wide, so they are checked only for `ids` (other
/// tests run sandboxes at the same time).
pub async fn leftovers(
    client: &Client,
    socket: &Path,
    fifo_root: &Path,
    ids: Option<&[String]>,
) -> Leftovers {
    let ours =
        |id: &str| id.starts_with("stk-") && ids.is_none_or(|ids| ids.iter().any(|i| i == id));
    let mut l = Leftovers {
        containers: census::containers(client)
            .await
            .into_iter()
            .filter(|i| ours(i))
            .collect(),
        tasks: census::tasks(client)
            .await
            .into_iter()
            .map(|t| t.id)
            .filter(|i| ours(i))
            .collect(),
        snapshots: census::snapshots(client, DEFAULT_SNAPSHOTTER)
            .await
            .into_iter()
            .map(|i| i.name)
            .filter(|i| ours(i))
            .collect(),
        ..Leftovers::default()
    };
    if let Ok(rd) = std::fs::read_dir(fifo_root) {
        l.fifo_dirs = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|i| ours(i))
            .collect();
    }
    let ids = ids.unwrap_or(&[]);
    let cg = CgroupFs::new(DEFAULT_CGROUP_ROOT);
    for id in ids {
        l.cgroups.extend(cg.dirs(&format!("/stockade/{id}")));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    l.mounts = mountinfo
        .lines()
        .filter(|line| ids.iter().any(|id| line.contains(id.as_str())))
        .map(str::to_string)
        .collect();
    l.shims = daemon::shims_for(Path::new(stockade::procfs::DEFAULT_PROC_ROOT), socket)
        .into_iter()
        .filter_map(|s| s.id)
        .filter(|i| ours(i))
        .collect();
    l
}

/// Waits (up to `within`) until nothing of the runs is left; panics with what remains.
pub async fn assert_no_leftovers(
    client: &Client,
    socket: &Path,
    fifo_root: &Path,
    ids: Option<&[String]>,
    within: Duration,
) {
    let start = Instant::now();
    loop {
        let l = leftovers(client, socket, fifo_root, ids).await;
        if l.is_empty() {
            return;
        }
        if start.elapsed() > within {
            panic!("leaked after {within:?}: {l:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
