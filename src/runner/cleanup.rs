//! Removing what a run created (task, container, snapshot, cgroup, FIFO directory), and
//! reclaiming what crashed runs left behind.
//!
//! Every object is named after the run id (`stk-…`) and labelled `stockade.managed=true`,
//! `stockade.created=<unix time>`, `stockade.owner=<pid>`. The FIFO directory is created
//! first and removed last, so it marks a run in progress: at start, [`reclaim_crashed`]
//! only reads that directory (no RPC unless something is there whose owner is dead), and
//! `stockade gc` ([`reconcile`]) lists every kind of object through the API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::snapshots::Kind;
use serde::Serialize;

use super::{
    fifo, session, uids, CgroupFs, RunError, ID_PREFIX, KILL_GRACE, LABEL_CREATED, LABEL_OWNER,
};
use crate::containerd::{Containerd, LABEL_MANAGED};
use crate::procfs::ProcStat;
use crate::spec::cgroups_path;

/// Where runs live: the containerd namespace (in the client), the snapshotter, the FIFO
/// root and the cgroup mount.
#[derive(Clone)]
pub struct CleanupTarget {
    /// The containerd client, in the namespace runs live in.
    pub containerd: Arc<dyn Containerd>,
    /// The snapshotter runs' snapshots were made with.
    pub snapshotter: String,
    /// Parent of the run directories (see [`super::fifo::DEFAULT_FIFO_ROOT`]).
    pub fifo_root: PathBuf,
    /// The cgroup mount the runs' cgroups live under.
    pub cgroups: CgroupFs,
    /// Where sandbox UIDs are claimed (see [`super::uids`]).
    pub uid_claims: PathBuf,
    /// Where sandbox networks are made (see [`crate::network`]).
    pub network: crate::network::NetConfig,
}

impl std::fmt::Debug for CleanupTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupTarget")
            .field("namespace", &self.containerd.namespace())
            .field("snapshotter", &self.snapshotter)
            .field("fifo_root", &self.fifo_root)
            .field("cgroups", &self.cgroups)
            .finish()
    }
}

/// Removes everything run `id` created. Idempotent: what is already gone is skipped. With
/// `kill`, a task that still runs is killed (SIGKILL to all its processes) first; without,
/// a running task is an error. Every step is tried even when an earlier one failed; the
/// FIFO directory (the "in progress" marker) goes only when everything else went.
pub async fn remove_run(t: &CleanupTarget, id: &str, kill: bool) -> Result<(), RunError> {
    let c = t.containerd.as_ref();
    let mut errors: Vec<String> = Vec::new();

    if let Err(e) = delete_task(c, id, kill).await {
        errors.push(e);
    }
    let container = c.delete_container(id);
    let snapshot = c.remove_snapshot(&t.snapshotter, id);
    let (rc, rs) = tokio::join!(container, snapshot);
    for r in [rc, rs] {
        match r {
            Err(e) if !e.is_not_found() => errors.push(e.to_string()),
            _ => {}
        }
    }
    // runc removes the cgroup when the task is deleted; this catches what a dead shim left
    // (pointless while the task could not be deleted: its processes keep the cgroup busy).
    // Processes killed with the task leave their cgroup asynchronously (pid 1's exit ends
    // the wait, its children die after it): give them a moment before removing it.
    if errors.is_empty() {
        cgroup_emptied(&t.cgroups, &cgroups_path(id), CGROUP_EMPTY_GRACE).await;
        if let Err(e) = t.cgroups.remove(&cgroups_path(id)) {
            errors.push(format!("cgroup: {e}"));
        }
    }
    if errors.is_empty() {
        if let Err(e) = uids::release(&t.uid_claims, &t.fifo_root.join(id)) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        if let Err(e) = fifo::remove(&t.fifo_root, id) {
            errors.push(format!("{}: {e}", t.fifo_root.join(id).display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RunError::Config(format!(
            "cleaning up {id}: {}",
            errors.join("; ")
        )))
    }
}

/// How long a deleted task's cgroup may still hold its dying processes before its removal
/// is tried anyway (and fails, naming the busy directories).
pub const CGROUP_EMPTY_GRACE: Duration = Duration::from_secs(1);

/// Waits until no directory of the cgroup at `path` lists a process, or `grace` passes;
/// whether it emptied.
async fn cgroup_emptied(cgroups: &CgroupFs, path: &str, grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    while cgroups.has_processes(path) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Deletes the task of `id`; with `kill`, kills it first if it still runs.
async fn delete_task(c: &dyn Containerd, id: &str, kill: bool) -> Result<(), String> {
    match c.delete_task(id).await {
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => return Ok(()),
        // A task that still runs is refused (FailedPrecondition, or Unknown with "cannot
        // delete a running process" from the shim): kill it below.
        Err(e) if kill && e.code() != Some(tonic::Code::Unavailable) => {}
        Err(e) => return Err(e.to_string()),
    }
    // Still running: kill every process in it, wait for the exit, delete again.
    let waited = async {
        let wait = c.wait_task(id);
        let kill = c.kill_task(id, nix::sys::signal::Signal::SIGKILL as u32, true);
        let (w, k) = tokio::join!(wait, kill);
        k.map_err(|e| e.to_string())?;
        w.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(KILL_GRACE, waited).await {
        Err(_) => return Err(format!("task {id} survived SIGKILL for {KILL_GRACE:?}")),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    match c.delete_task(id).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// What to reclaim.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// Leave runs younger than this alone when their owner cannot be determined. Default
    /// 60 s (a run in its first moments may not have labelled everything yet).
    pub min_age: Duration,
    /// Reclaim runs whose owner is alive too (`gc --all`). Default false.
    pub include_live: bool,
    /// Only these runs (`gc --run ID`). Default: every run found.
    pub only: Option<Vec<String>>,
    /// `/proc`, to tell whether an owner pid is alive.
    pub proc_root: PathBuf,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            min_age: Duration::from_secs(60),
            include_live: false,
            only: None,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What reconciliation found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Reconciled {
    /// Runs removed completely.
    pub removed: Vec<String>,
    /// Runs left alone because their owner is alive or they are too young.
    pub kept: Vec<String>,
    /// Runs that could not be removed, each with why.
    pub failed: Vec<(String, String)>,
    /// Sandbox UIDs whose claims outlived their run directories (see
    /// [`super::uids::reconcile`]), released by `stockade gc`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub released_uids: Vec<u32>,
    /// Disk images whose run directory was gone (see [`crate::disk::reclaim_orphans`]),
    /// removed by `stockade gc`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_images: Vec<PathBuf>,
    /// Network claims, veths and namespace files whose run directory was gone.
    #[serde(skip_serializing_if = "crate::network::Reclaimed::is_empty")]
    pub network: crate::network::Reclaimed,
}

/// Everything known about one run id, gathered from several places.
#[derive(Debug, Default)]
struct Found {
    owner: Option<u32>,
    created: Option<u64>,
    /// A session's record and last activity (unix ms), from its run directory.
    session: Option<(session::SessionRecord, Option<u64>)>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Whether `pid` is a live process. A zombie (state `Z`, or `X` dead) has exited: the run it
/// owned is abandoned even though its parent has not reaped it yet.
fn pid_alive(proc_root: &Path, pid: u32) -> bool {
    match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
        Ok(stat) => ProcStat::parse(&stat).is_none_or(|s| !s.has_exited()),
        Err(_) => proc_root.join(pid.to_string()).exists(),
    }
}

fn mtime_secs(p: &Path) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    Some(m.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

/// Decides whether a run is abandoned: its owner is dead, or (when no owner is known) it is
/// older than `min_age`. A session whose owner (its creator, or the keeper that removes it
/// when it expires) is dead is abandoned only when it has expired or its init is gone
/// ([`session::decide`]): it lives across stockade processes.
fn abandoned(f: &Found, opts: &ReconcileOptions, now: u64) -> bool {
    if opts.include_live {
        return true;
    }
    let owner_alive = match f.owner {
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => pid_alive(&opts.proc_root, pid),
        None => false,
    };
    if owner_alive {
        return false;
    }
    if let Some((record, activity)) = &f.session {
        let alive = record.init_alive(&opts.proc_root);
        // Milliseconds: deadlines are kept to the millisecond, `now` is in seconds.
        let verdict = session::decide(&record.deadlines(), *activity, alive, session::now_ms());
        return !matches!(verdict, session::Verdict::Keep { .. });
    }
    match f.owner {
        Some(_) => true,
        None => match f.created {
            Some(t) => now.saturating_sub(t) >= opts.min_age.as_secs(),
            None => true,
        },
    }
}

/// Run directories under the FIFO root: id → (owner, directory mtime).
fn scan_fifo_root(root: &Path) -> BTreeMap<String, Found> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(ID_PREFIX) {
            continue;
        }
        let dir = e.path();
        out.insert(
            name,
            Found {
                owner: fifo::read_owner(&dir),
                created: mtime_secs(&dir),
                session: session::SessionRecord::read(&dir)
                    .map(|r| (r, session::last_activity_ms(&dir))),
            },
        );
    }
    out
}

/// The cheap check made at the start of every run: reclaims runs whose FIFO directory
/// remains and whose owner is dead. Makes no RPC when there is nothing to reclaim.
pub async fn reclaim_crashed(t: &CleanupTarget, opts: &ReconcileOptions) -> Reconciled {
    let found = scan_fifo_root(&t.fifo_root);
    let mut done = reclaim(t, found, opts).await;
    // A run that crashed between claiming its UID and recording it in its run directory.
    done.released_uids = uids::reconcile(&t.uid_claims, uids::CLAIM_GRACE);
    reclaim_networks(t, &mut done);
    done
}

/// Network claims, veths and namespace files whose run directory is gone (see
/// [`crate::network::reconcile`]).
fn reclaim_networks(t: &CleanupTarget, done: &mut Reconciled) {
    match crate::network::reconcile(&t.network, &t.fifo_root) {
        Ok(r) => done.network = r,
        Err(e) => done.failed.push(("network".into(), e.to_string())),
    }
}

async fn reclaim(
    t: &CleanupTarget,
    found: BTreeMap<String, Found>,
    opts: &ReconcileOptions,
) -> Reconciled {
    let now = now_secs();
    let mut out = Reconciled::default();
    let mut doomed = Vec::new();
    for (id, f) in found {
        if let Some(only) = &opts.only {
            if !only.contains(&id) {
                continue;
            }
        }
        if abandoned(&f, opts, now) {
            doomed.push(id);
        } else {
            out.kept.push(id);
        }
    }
    // In the order of `doomed`, concurrently; few runs are ever reclaimed at once.
    let results =
        futures_util::future::join_all(doomed.iter().map(|id| remove_run(t, id, true))).await;
    for (id, r) in doomed.into_iter().zip(results) {
        match r {
            Ok(()) => out.removed.push(id),
            Err(e) => out.failed.push((id, e.to_string())),
        }
    }
    out
}

/// `stockade gc`: finds every run through the API (containers, tasks and snapshots carrying
/// stockade's label or prefix), the FIFO root and the cgroup tree, and removes the
/// abandoned ones. Base images are never touched: only active snapshots named `stk-…`.
pub async fn reconcile(t: &CleanupTarget, opts: &ReconcileOptions) -> Result<Reconciled, RunError> {
    let c = &t.containerd;
    let mut found = scan_fifo_root(&t.fifo_root);
    let managed = format!("labels.\"{LABEL_MANAGED}\"==true");

    let containers = c.list_containers(vec![managed.clone()]).await?;
    for ct in containers {
        if !ct.id.starts_with(ID_PREFIX) {
            continue;
        }
        let f = found.entry(ct.id.clone()).or_default();
        f.owner = f
            .owner
            .or_else(|| ct.labels.get(LABEL_OWNER).and_then(|v| v.parse().ok()));
        f.created = f
            .created
            .or_else(|| ct.labels.get(LABEL_CREATED).and_then(|v| v.parse().ok()));
    }

    for task in c.list_tasks().await? {
        if task.starts_with(ID_PREFIX) {
            found.entry(task).or_default();
        }
    }

    for info in c.list_snapshots(&t.snapshotter, vec![managed]).await? {
        if info.kind != Kind::Active as i32 || !info.name.starts_with(ID_PREFIX) {
            continue;
        }
        let f = found.entry(info.name.clone()).or_default();
        f.owner = f
            .owner
            .or_else(|| info.labels.get(LABEL_OWNER).and_then(|v| v.parse().ok()));
        f.created = f
            .created
            .or_else(|| info.labels.get(LABEL_CREATED).and_then(|v| v.parse().ok()));
    }

    for name in t.cgroups.children("/stockade") {
        if name.starts_with(ID_PREFIX) {
            // A cgroup with live processes and no object in this namespace belongs to a run
            // of another containerd (or namespace) sharing the host's `/stockade` parent:
            // not ours to judge.
            if !found.contains_key(&name) && t.cgroups.has_processes(&cgroups_path(&name)) {
                continue;
            }
            let f = found.entry(name.clone()).or_default();
            if f.created.is_none() {
                f.created = t
                    .cgroups
                    .dirs(&cgroups_path(&name))
                    .first()
                    .and_then(|d| mtime_secs(d));
            }
        }
    }
    let mut done = reclaim(t, found, opts).await;
    done.released_uids = uids::reconcile(&t.uid_claims, uids::CLAIM_GRACE);
    reclaim_networks(t, &mut done);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn removal_waits_for_killed_processes_to_leave_the_cgroup_but_not_forever() {
        let t = tempfile::tempdir().unwrap();
        let procs = t.path().join("pids/stockade/stk-a/cgroup.procs");
        std::fs::create_dir_all(procs.parent().unwrap()).unwrap();
        std::fs::write(&procs, "4242\n").unwrap();
        let cg = CgroupFs::new(t.path());
        // Never empties: gives up after the grace.
        let start = std::time::Instant::now();
        assert!(!cgroup_emptied(&cg, "/stockade/stk-a", Duration::from_millis(100)).await);
        assert!(start.elapsed() >= Duration::from_millis(100));
        // Empties a moment later: seen.
        let later = procs.clone();
        let emptier = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::fs::write(later, "").unwrap();
        });
        assert!(cgroup_emptied(&cg, "/stockade/stk-a", Duration::from_secs(5)).await);
        emptier.await.unwrap();
        // Already empty (or gone): no wait.
        assert!(cgroup_emptied(&cg, "/stockade/stk-b", Duration::ZERO).await);
    }

    #[test]
    fn abandonment_follows_owner_then_age() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("4242")).unwrap();
        let opts = ReconcileOptions {
            min_age: Duration::from_secs(60),
            include_live: false,
            only: None,
            proc_root: t.path().to_path_buf(),
        };
        let now = 10_000;
        struct Case {
            name: &'static str,
            found: Found,
            want: bool,
        }
        let cases = [
            Case {
                name: "owner alive",
                found: Found {
                    owner: Some(4242),
                    created: Some(0),
                    session: None,
                },
                want: false,
            },
            Case {
                name: "owner dead, however young",
                found: Found {
                    owner: Some(4243),
                    created: Some(now),
                    session: None,
                },
                want: true,
            },
            Case {
                name: "this process owns it",
                found: Found {
                    owner: Some(std::process::id()),
                    created: Some(0),
                    session: None,
                },
                want: false,
            },
            Case {
                name: "no owner, young",
                found: Found {
                    owner: None,
                    created: Some(now - 5),
                    session: None,
                },
                want: false,
            },
            Case {
                name: "no owner, old",
                found: Found {
                    owner: None,
                    created: Some(now - 61),
                    session: None,
                },
                want: true,
            },
            Case {
                name: "nothing known",
                found: Found::default(),
                want: true,
            },
        ];
        for c in &cases {
            assert_eq!(abandoned(&c.found, &opts, now), c.want, "{}", c.name);
        }
        let all = ReconcileOptions {
            include_live: true,
            ..opts
        };
        assert!(
            abandoned(&cases[0].found, &all, now),
            "--all takes live runs too"
        );
    }

    #[test]
    fn the_fifo_root_scan_sees_only_run_directories() {
        let t = tempfile::tempdir().unwrap();
        for d in ["stk-a", "stk-b", "other"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
        }
        fifo::write_owner(&t.path().join("stk-a"), 77).unwrap();
        let found = scan_fifo_root(t.path());
        assert_eq!(found.keys().collect::<Vec<_>>(), ["stk-a", "stk-b"]);
        assert_eq!(found["stk-a"].owner, Some(77));
        assert_eq!(found["stk-b"].owner, None);
        assert!(found["stk-b"].created.is_some());
        assert!(scan_fifo_root(&t.path().join("missing")).is_empty());
    }

    #[test]
    fn zombies_and_missing_pids_are_not_alive() {
        let t = tempfile::tempdir().unwrap();
        let stat = |pid: &str, text: &str| {
            std::fs::create_dir_all(t.path().join(pid)).unwrap();
            std::fs::write(t.path().join(pid).join("stat"), text).unwrap();
        };
        stat("10", "10 (stockade) S 1 10 10 0 -1");
        stat("11", "11 (stockade) Z 1 11 11 0 -1");
        stat("12", "12 (a) Z (b)) R 1 12 12 0 -1");
        assert!(pid_alive(t.path(), 10));
        assert!(!pid_alive(t.path(), 11));
        assert!(
            pid_alive(t.path(), 12),
            "the state is read after the last parenthesis"
        );
        assert!(!pid_alive(t.path(), 13));
        assert!(pid_alive(Path::new("/proc"), std::process::id()));
    }
}
