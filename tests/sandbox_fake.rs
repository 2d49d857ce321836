//! Long-lived sandboxes over the in-memory containerd: no root, no daemon. Creation makes
//! an init-held sandbox and leaves nothing when any step fails; every exec is bookkept
//! (unique ids, its process record deleted, its FIFO directory removed) on every path; a
//! timeout kills the exec'd process and exits 124; names are unique; expiry, the keeper and
//! crash reclaim keep live sessions and remove expired or dead ones.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stockade::containerd::fake::{Behaviour, FakeContainerd, Op, Reply};
use stockade::containerd::TaskStatus;
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::runner::session::Expiry;
use stockade::runner::{reclaim_crashed, write_owner, ReconcileOptions, RunError};
use stockade::sandbox::{CreateRequest, ErrorKind, ExecRequest, SandboxError, Sandboxes};
use tonic::Code;

/// Sandboxes over a fake containerd holding the policy's image, with FIFO, procfs, cgroup
/// and UID-claim roots in `dir`, and an init "installed" at a path of `dir`.
struct Rig {
    fake: FakeContainerd,
    sandboxes: Sandboxes,
    policy: ValidatedPolicy,
    dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    std::fs::create_dir(&proc_root).unwrap();
    let policy = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                timeout: Some("10s".into()),
                ..Default::default()
            },
            &HostPolicyEnv,
        )
        .expect("valid policy");
    let fake = FakeContainerd::new().proc_root(&proc_root);
    fake.add_base(&policy.image);
    let runner = fake
        .runner_builder(dir.path(), &proc_root)
        .build()
        .expect("runner");
    let sandboxes = Sandboxes::new(runner).installed_init(dir.path().join("init/stockade-init"));
    Rig {
        fake,
        sandboxes,
        policy,
        dir,
    }
}

impl Rig {
    fn create(&self) -> CreateRequest {
        CreateRequest::new(self.policy.clone())
    }

    fn fifo(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// Nothing of any sandbox is left: no containerd object (exec processes included), no
    /// run directory, no claimed UID, no name.
    fn assert_clean(&self) {
        assert_eq!(self.fake.leftovers(), Vec::<String>::new(), "objects left");
        let runs: Vec<String> = entries(&self.fifo())
            .into_iter()
            .filter(|e| e != "names")
            .collect();
        assert_eq!(runs, Vec::<String>::new(), "run directories left");
        assert_eq!(
            entries(&self.fifo().join("names")),
            Vec::<String>::new(),
            "names held"
        );
        assert_eq!(
            entries(&self.dir.path().join("uids")),
            Vec::<String>::new(),
            "UIDs held"
        );
    }

    /// Makes the fake's pid look like a live process in the fake procfs.
    fn alive(&self, pid: u32) {
        let d = self.dir.path().join("proc").join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let mut fields = vec![pid.to_string(), "(stockade-init)".into(), "S".into()];
        fields.extend((4..=52).map(|i| i.to_string()));
        std::fs::write(d.join("stat"), fields.join(" ") + "\n").unwrap();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn exits(status: u32, after_ms: u64, stdout: &[u8]) -> Behaviour {
    Behaviour::Exits {
        status,
        after: Duration::from_millis(after_ms),
        stdout: stdout.to_vec(),
    }
}

/// A pid that no process has (a child that has exited and been reaped).
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[tokio::test]
async fn a_sandbox_is_held_open_by_the_read_only_init_and_removal_leaves_nothing() {
    let r = rig();
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    let mut req = r.create();
    req.name = Some("web".into());
    req.labels.insert("team".into(), "a".into());
    let sb = r.sandboxes.create(req).await.unwrap();
    let ct = r.fake.container(sb.id()).unwrap();
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(&ct.spec.as_ref().unwrap().value).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.args().as_deref(),
        Some(&["/.stockade/init".to_string()][..])
    );
    let init = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/.stockade/init"))
        .expect("the init is mounted");
    let opts = init.options().as_ref().unwrap();
    assert!(opts.contains(&"ro".to_string()) && opts.contains(&"nosuid".to_string()));
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(ct.labels["stockade.session"], "true");
    assert_eq!(ct.labels["stockade.name"], "web");
    assert_eq!(ct.labels["team"], "a");

    let by_name = r.sandboxes.get("web").await.unwrap();
    assert_eq!(by_name.id(), sb.id());
    let info = by_name.inspect().await.unwrap();
    assert_eq!(info.state, TaskStatus::Running);
    assert_eq!(info.name.as_deref(), Some("web"));
    assert_eq!(info.labels["team"], "a");
    assert_eq!(info.uid, sb.record().uid);
    assert_eq!(r.sandboxes.list().await.unwrap().len(), 1);

    let err = r
        .sandboxes
        .get("web")
        .await
        .unwrap()
        .remove(false)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "running, not forced: {err}"
    );
    sb.remove(true).await.unwrap();
    r.assert_clean();
    let gone = r.sandboxes.get("web").await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert_eq!(gone.to_string(), "no such sandbox: web");
}

#[tokio::test]
async fn every_exec_has_its_own_id_and_leaves_no_process_record_or_fifo_directory() {
    let r = rig();
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    r.fake.exec_behaviour(exits(3, 5, b"out\n"));
    let sb = r.sandboxes.create(r.create()).await.unwrap();
    for _ in 0..8 {
        let res = sb
            .exec(ExecRequest::new(["sh", "-c", "echo out; exit 3"]))
            .await
            .unwrap();
        assert_eq!((res.exit_code, res.stdout.as_str()), (3, "out\n"));
        assert_eq!(
            entries(&sb.run_dir())
                .iter()
                .filter(|e| e.starts_with("exec-"))
                .count(),
            0
        );
    }
    let calls = r.fake.calls();
    let execs: Vec<&str> = calls
        .iter()
        .filter(|c| c.op == Op::ExecProcess)
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(execs.len(), 8);
    assert_eq!(
        execs.iter().collect::<HashSet<_>>().len(),
        8,
        "exec ids are unique"
    );
    let deleted: HashSet<&str> = calls
        .iter()
        .filter(|c| c.op == Op::DeleteProcess)
        .map(|c| c.key.as_str())
        .collect();
    assert_eq!(
        deleted,
        execs.iter().copied().collect(),
        "each process deleted"
    );
    // Waited before started, every time.
    let ops = r.fake.ops();
    let first = |op| ops.iter().position(|o| *o == op).unwrap();
    assert!(
        first(Op::WaitProcess) < first(Op::StartProcess) || {
            // The wait is spawned; it may be recorded a moment after Start on a busy runtime,
            // but it is always made.
            r.fake.count(Op::WaitProcess) == 8
        }
    );
    assert!(sb.run_dir().join("activity").exists(), "activity recorded");
    sb.remove(true).await.unwrap();
    r.assert_clean();
}

#[tokio::test]
async fn an_exec_past_its_timeout_is_killed_alone_and_exits_124() {
    let r = rig();
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    r.fake.exec_behaviour(Behaviour::RunsUntilKilled);
    let sb = r.sandboxes.create(r.create()).await.unwrap();
    let mut req = ExecRequest::new(["sleep", "100"]);
    req.timeout = Some(Duration::from_millis(150));
    let t = std::time::Instant::now();
    let res = sb.exec(req).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!((res.exit_code, res.timed_out), (124, true));
    assert_eq!(
        r.fake.count(Op::KillProcess),
        1,
        "the exec'd process is killed"
    );
    assert_eq!(r.fake.count(Op::KillTask), 0, "not the sandbox");
    assert_eq!(r.fake.count(Op::DeleteProcess), 1);
    assert_eq!(
        sb.state().await.unwrap(),
        TaskStatus::Running,
        "the sandbox lives on"
    );
    assert!(!r.fake.leftovers().iter().any(|l| l.starts_with("process")));
    assert!(!entries(&sb.run_dir())
        .iter()
        .any(|e| e.starts_with("exec-")));
    sb.remove(true).await.unwrap();
    r.assert_clean();
}

#[tokio::test]
async fn a_failed_exec_leaves_no_process_record_or_fifo_directory() {
    let not_found = Reply::Fail(
        Code::Unknown,
        "OCI runtime exec failed: exec: \"nope\": executable file not found in $PATH".into(),
    );
    // (name, op, reply, exit code of the error)
    let cases = [
        (
            "exec refused",
            Op::ExecProcess,
            Reply::fail(Code::Unavailable),
            125,
        ),
        ("start: not found", Op::StartProcess, not_found, 127),
        (
            "start fails",
            Op::StartProcess,
            Reply::fail(Code::Internal),
            125,
        ),
        (
            "wait lost",
            Op::WaitProcess,
            Reply::fail(Code::Unavailable),
            125,
        ),
    ];
    for (name, op, reply, want) in cases {
        let r = rig();
        r.fake.behaviour(Behaviour::RunsUntilKilled);
        r.fake.exec_behaviour(exits(0, 50, b""));
        let sb = r.sandboxes.create(r.create()).await.unwrap();
        r.fake.script(op, reply);
        let err = sb.exec(ExecRequest::new(["nope"])).await.unwrap_err();
        assert_eq!(err.exit_code(), want, "{name}: {err}");
        assert!(
            !r.fake.leftovers().iter().any(|l| l.starts_with("process")),
            "{name}"
        );
        assert!(
            !entries(&sb.run_dir())
                .iter()
                .any(|e| e.starts_with("exec-")),
            "{name}"
        );
        // The sandbox is still usable.
        let ok = sb.exec(ExecRequest::new(["true"])).await.unwrap();
        assert_eq!(ok.exit_code, 0, "{name}");
        sb.remove(true).await.unwrap();
        r.assert_clean();
    }
}

#[tokio::test]
async fn exec_into_a_stopped_sandbox_is_a_conflict_and_bad_requests_are_invalid() {
    let r = rig();
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    let sb = r.sandboxes.create(r.create()).await.unwrap();
    let mut as_root = ExecRequest::new(["id"]);
    as_root.user = Some("0".into());
    let err = sb.exec(as_root).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert_eq!(
        r.fake.count(Op::ExecProcess),
        0,
        "refused before containerd"
    );

    sb.stop(Duration::from_millis(100)).await.unwrap();
    assert_eq!(sb.state().await.unwrap(), TaskStatus::Stopped);
    let err = sb.exec(ExecRequest::new(["true"])).await.unwrap_err();
    assert!(matches!(err, SandboxError::NotRunning { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // Stopped: removal needs no force.
    sb.remove(false).await.unwrap();
    r.assert_clean();
}

#[tokio::test]
async fn a_name_is_taken_once_and_released_with_its_sandbox() {
    let r = rig();
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    let named = |n: &str| {
        let mut q = r.create();
        q.name = Some(n.into());
        q
    };
    let a = r.sandboxes.create(named("job")).await.unwrap();
    let err = r.sandboxes.create(named("job")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        err.to_string(),
        format!("the name `job` is taken by sandbox {}", a.id())
    );
    assert_eq!(
        r.fake.count(Op::CreateContainer),
        1,
        "refused before anything was made"
    );
    let err = r.sandboxes.create(named("stk-job")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    a.remove(true).await.unwrap();
    let b = r.sandboxes.create(named("job")).await.unwrap();
    b.remove(true).await.unwrap();
    r.assert_clean();
}

#[tokio::test]
async fn a_create_that_fails_at_any_step_leaves_nothing_and_frees_its_name() {
    for op in [
        Op::PrepareSnapshot,
        Op::CreateContainer,
        Op::CreateTask,
        Op::StartTask,
    ] {
        let r = rig();
        r.fake.behaviour(Behaviour::RunsUntilKilled);
        r.fake.script(op, Reply::fail(Code::Unavailable));
        let mut req = r.create();
        req.name = Some("x".into());
        let err = r.sandboxes.create(req).await.unwrap_err();
        assert!(
            matches!(err, SandboxError::Run(RunError::Containerd(_))),
            "{op:?}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Internal);
        r.assert_clean();
    }
}

#[tokio::test]
async fn the_keeper_removes_an_idle_sandbox_and_one_past_its_lifetime() {
    for (lifetime, idle, want) in [
        (None, Some(300), Expiry::Idle),
        (Some(300), None, Expiry::Lifetime),
    ] {
        let r = rig();
        r.fake.behaviour(Behaviour::RunsUntilKilled);
        r.fake.exec_behaviour(exits(0, 0, b""));
        let mut req = r.create();
        req.name = Some("k".into());
        req.lifetime = lifetime.map(Duration::from_millis);
        req.idle_timeout = idle.map(Duration::from_millis);
        let sb = r.sandboxes.create(req).await.unwrap();
        let t = std::time::Instant::now();
        // An exec at 150 ms moves the idle deadline, not the lifetime.
        let execs = {
            let sb = sb.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                sb.exec(ExecRequest::new(["true"])).await.unwrap();
            })
        };
        let why = tokio::time::timeout(Duration::from_secs(5), r.sandboxes.keep(sb.id()))
            .await
            .expect("the keeper ends")
            .unwrap();
        execs.await.unwrap();
        assert_eq!(why, Some(want));
        let took = t.elapsed();
        match want {
            Expiry::Idle => assert!(took >= Duration::from_millis(450), "{took:?}"),
            _ => assert!(took < Duration::from_millis(450), "{took:?}"),
        }
        r.assert_clean();
    }
}

#[tokio::test]
async fn crash_reclaim_keeps_a_live_session_whose_keeper_died_and_removes_expired_or_dead_ones() {
    let r = rig();
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    let live = r.sandboxes.create(r.create()).await.unwrap();
    let mut short = r.create();
    short.lifetime = Some(Duration::from_millis(50));
    let expired = r.sandboxes.create(short).await.unwrap();
    let dead_init = r.sandboxes.create(r.create()).await.unwrap();
    r.alive(live.task_pid());
    r.alive(expired.task_pid());
    // dead_init's pid has no process.
    let gone = dead_pid();
    for sb in [&live, &expired, &dead_init] {
        write_owner(&sb.run_dir(), gone).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    let opts = ReconcileOptions {
        proc_root: r.dir.path().join("proc"),
        ..ReconcileOptions::default()
    };
    let done = reclaim_crashed(&r.sandboxes.runner().cleanup_target(), &opts).await;
    assert_eq!(done.kept, vec![live.id().to_string()]);
    let mut removed = done.removed.clone();
    removed.sort();
    let mut want = vec![expired.id().to_string(), dead_init.id().to_string()];
    want.sort();
    assert_eq!(removed, want);
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    let again = r.sandboxes.get(live.id()).await.unwrap();
    assert_eq!(again.state().await.unwrap(), TaskStatus::Running);
    again.remove(true).await.unwrap();
    r.assert_clean();
}
