//! The run path over the in-memory containerd: no root, no daemon. What a run asks of
//! containerd, and that it removes what it made whatever happened: a timeout (kill, then
//! cleanup), a cancel, a failure at every step of creation and start, and success.
//! The host side of a run (FIFOs, procfs, cgroups) lives in a temporary directory.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use stockade::containerd::fake::{Behaviour, FakeContainerd, Op, Reply};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::runner::{
    reconcile, BaseImage, Cancel, CleanupMode, ReconcileOptions, RunError, RunRequest, Runner,
};
use tonic::Code;

mod common;

/// A runner over a fake containerd holding the policy's image as a committed snapshot,
/// with its FIFO, procfs and cgroup roots in `dir`.
struct Rig {
    fake: FakeContainerd,
    runner: Runner,
    policy: ValidatedPolicy,
    dir: tempfile::TempDir,
}

fn rig(mode: CleanupMode, timeout: &str) -> Rig {
    rig_with(
        mode,
        PolicyOverrides {
            timeout: Some(timeout.into()),
            ..Default::default()
        },
    )
}

fn rig_with(mode: CleanupMode, overrides: PolicyOverrides) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    std::fs::create_dir(&proc_root).unwrap();
    let policy = Policy::default()
        .validate(None, &overrides, &HostPolicyEnv)
        .expect("valid policy");
    let fake = FakeContainerd::new().proc_root(&proc_root);
    fake.add_base(&policy.image);
    let runner = fake
        .runner_builder(dir.path(), &proc_root)
        .disk_root(dir.path().join("disk"))
        .cleanup(mode)
        .build()
        .expect("runner");
    Rig {
        fake,
        runner,
        policy,
        dir,
    }
}

impl Rig {
    fn request(&self, args: &[&str]) -> RunRequest {
        RunRequest::new(self.policy.clone(), args.iter().copied())
    }

    /// Nothing of any run is left: no containerd object, no run directory, no claimed UID.
    fn assert_clean(&self) {
        assert_eq!(self.fake.leftovers(), Vec::<String>::new(), "objects left");
        let runs = run_dirs(&self.dir.path().join("fifo"));
        assert_eq!(runs, Vec::<String>::new(), "run directories left");
        let uids = run_dirs(&self.dir.path().join("uids"));
        assert_eq!(uids, Vec::<String>::new(), "sandbox UIDs still claimed");
        let images = run_dirs(&self.dir.path().join("disk"));
        assert_eq!(images, Vec::<String>::new(), "disk images left");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let base = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mountinfo.contains(&base),
            "mounts left under {base}:\n{mountinfo}"
        );
    }
}

fn run_dirs(root: &Path) -> Vec<String> {
    match std::fs::read_dir(root) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn exits(status: u32, after_ms: u64, stdout: &[u8]) -> Behaviour {
    Behaviour::Exits {
        status,
        after: Duration::from_millis(after_ms),
        stdout: stdout.to_vec(),
    }
}

#[tokio::test]
async fn a_successful_run_reports_its_exit_and_output_and_leaves_nothing() {
    for mode in [CleanupMode::Inline, CleanupMode::Background] {
        let r = rig(mode, "10s");
        r.fake.behaviour(exits(0, 10, b"hello\n"));
        let res = r.runner.run(r.request(&["echo", "hello"])).await.unwrap();
        assert_eq!((res.exit_code, res.timed_out), (0, false), "{mode:?}");
        assert_eq!(res.stdout, "hello\n", "{mode:?}");
        assert_eq!(r.fake.count(Op::KillTask), 0, "{mode:?}: nothing to kill");
        r.runner.wait_cleanups().await;
        r.assert_clean();
        // Created in the order containerd needs, removed task first.
        let ops = r.fake.ops();
        let at = |op| ops.iter().position(|o| *o == op).unwrap();
        assert!(at(Op::CreateTask) > at(Op::PrepareSnapshot).max(at(Op::CreateContainer)));
        assert!(at(Op::StartTask) > at(Op::CreateTask));
        assert!(at(Op::DeleteTask) < at(Op::DeleteContainer).min(at(Op::RemoveSnapshot)));
    }
}

#[tokio::test]
async fn the_command_s_status_becomes_the_exit_code() {
    // (status containerd reports, exit code, signal)
    for (status, code, signal) in [(0, 0, None), (3, 3, None), (137, 137, Some(9))] {
        let r = rig(CleanupMode::Inline, "10s");
        r.fake.behaviour(exits(status, 0, b""));
        let res = r.runner.run(r.request(&["true"])).await.unwrap();
        assert_eq!((res.exit_code, res.signal), (code, signal), "{status}");
        r.assert_clean();
    }
}

#[tokio::test]
async fn a_run_past_its_timeout_is_killed_exits_124_and_is_removed() {
    let r = rig(CleanupMode::Inline, "200ms");
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    let t = std::time::Instant::now();
    let res = r.runner.run(r.request(&["sleep", "100"])).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(res.timed_out);
    assert_eq!(res.exit_code, 124);
    assert_eq!(r.fake.count(Op::KillTask), 1);
    let ops = r.fake.ops();
    let kill = ops.iter().position(|o| *o == Op::KillTask).unwrap();
    let delete = ops.iter().position(|o| *o == Op::DeleteTask).unwrap();
    assert!(kill < delete, "killed, then cleaned up: {ops:?}");
    r.assert_clean();
}

#[tokio::test]
async fn a_cancelled_run_is_killed_reports_the_signal_and_is_removed() {
    let r = rig(CleanupMode::Inline, "10s");
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    let cancel = Cancel::new();
    let later = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        later.cancel(2);
    });
    let req = r.request(&["sleep", "100"]).cancel(cancel);
    let res = r.runner.run(req).await.unwrap();
    assert_eq!(res.cancelled_by, Some(2));
    assert_eq!(res.exit_code, 130);
    assert!(!res.timed_out);
    assert_eq!(r.fake.count(Op::KillTask), 1);
    r.assert_clean();
}

/// A failure scripted into one RPC of a cold run.
struct Failure {
    name: &'static str,
    op: Op,
    reply: Reply,
    /// The exit code the error maps to.
    want_exit: u8,
}

#[tokio::test]
async fn a_run_that_fails_at_any_step_removes_everything_it_made() {
    let unavailable = || Reply::fail(Code::Unavailable);
    let not_found = Reply::Fail(
        Code::Unknown,
        "OCI runtime start failed: exec: \"nope\": executable file not found in $PATH".into(),
    );
    let cases = [
        Failure {
            name: "snapshot prepare fails: the container goes",
            op: Op::PrepareSnapshot,
            reply: unavailable(),
            want_exit: 125,
        },
        Failure {
            name: "container create fails: the snapshot goes",
            op: Op::CreateContainer,
            reply: unavailable(),
            want_exit: 125,
        },
        Failure {
            name: "task create fails: container and snapshot go",
            op: Op::CreateTask,
            reply: unavailable(),
            want_exit: 125,
        },
        Failure {
            name: "start fails: task, container and snapshot go",
            op: Op::StartTask,
            reply: unavailable(),
            want_exit: 125,
        },
        Failure {
            name: "start finds no command: 127, and everything goes",
            op: Op::StartTask,
            reply: not_found,
            want_exit: 127,
        },
    ];
    for c in cases {
        for mode in [CleanupMode::Inline, CleanupMode::Caller] {
            let r = rig(mode, "10s");
            r.fake.script(c.op, c.reply.clone());
            let e = r.runner.run(r.request(&["nope"])).await.unwrap_err();
            assert_eq!(e.exit_code(), c.want_exit, "{}: {e}", c.name);
            assert_eq!(e.to_string().lines().count(), 1, "{}: {e}", c.name);
            r.assert_clean();
        }
    }
}

#[tokio::test]
async fn losing_containerd_mid_run_leaves_the_run_to_reconciliation() {
    let r = rig(CleanupMode::Inline, "10s");
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    r.fake.script(Op::WaitTask, Reply::fail(Code::Unavailable));
    let e = r
        .runner
        .run(r.request(&["sleep", "100"]).id("stk-lost"))
        .await;
    assert!(matches!(e, Err(RunError::Lost { .. })), "{e:?}");
    // Nothing is removed by a run that lost its containerd: the run directory marks it.
    assert_eq!(r.fake.count(Op::DeleteTask), 0);
    assert_eq!(run_dirs(&r.dir.path().join("fifo")), ["stk-lost"]);
    // The removal that reconciliation makes kills the task and takes it all.
    r.runner.cleanup("stk-lost").await.unwrap();
    r.assert_clean();
}

#[tokio::test]
async fn a_prepared_sandbox_runs_once_and_leaves_nothing() {
    let r = rig(CleanupMode::Inline, "10s");
    r.fake.behaviour(exits(5, 20, b""));
    let labels = HashMap::from([("stockade.pool".to_string(), "test".to_string())]);
    let p = r.runner.prepare(&r.policy, labels).await.unwrap();
    let container = r.fake.container(&p.id).expect("container made");
    assert_eq!(container.labels["stockade.pool"], "test");
    assert_eq!(r.fake.count(Op::StartTask), 1, "started when prepared");
    let res = r
        .runner
        .run_prepared(p, r.request(&["echo", "hi"]))
        .await
        .unwrap();
    assert!(res.pooled);
    assert_eq!(res.exit_code, 5);
    assert_eq!(r.fake.count(Op::StartTask), 1, "not started again");
    r.assert_clean();
}

#[tokio::test]
async fn preparing_a_sandbox_that_fails_removes_everything_it_made() {
    for op in [
        Op::PrepareSnapshot,
        Op::CreateContainer,
        Op::CreateTask,
        Op::StartTask,
    ] {
        let r = rig(CleanupMode::Inline, "10s");
        r.fake.script(op, Reply::fail(Code::Unavailable));
        let e = r.runner.prepare(&r.policy, HashMap::new()).await;
        assert!(e.is_err(), "{op:?}");
        r.assert_clean();
    }
}

#[tokio::test]
async fn a_missing_image_is_refused_before_anything_is_made() {
    let r = rig(CleanupMode::Inline, "10s");
    let mut req = r.request(&["true"]);
    req.policy.image = "absent".into();
    let e = r.runner.run(req).await.unwrap_err();
    assert!(matches!(e, RunError::Image { .. }), "{e}");
    assert_eq!(r.fake.ops(), [Op::StatSnapshot]);
    r.assert_clean();
}

#[tokio::test]
async fn an_image_the_caller_resolved_is_not_asked_for_again_and_a_name_is_asked_every_run() {
    let r = rig(CleanupMode::Inline, "10s");
    r.fake.behaviour(exits(0, 5, b""));
    let stats = || r.fake.count(Op::StatSnapshot);
    let base = |name: &str| BaseImage {
        name: name.into(),
        snapshot: name.into(),
        digest: None,
    };
    // Handed over with the request: the run makes no Snapshots.Stat of its own.
    let req = r.request(&["true"]).image(base(&r.policy.image));
    r.runner.run(req).await.unwrap();
    assert_eq!(stats(), 0);
    // By name only: asked on every run, since a name may be re-pointed between runs.
    for n in 1..=2 {
        r.runner.run(r.request(&["true"])).await.unwrap();
        assert_eq!(stats(), n);
    }
    // Handed over for another image: not used; the policy's image is asked for.
    let req = r.request(&["true"]).image(base("other"));
    r.runner.run(req).await.unwrap();
    assert_eq!(stats(), 3);
    r.assert_clean();
}

#[tokio::test]
async fn a_cleanup_that_cannot_delete_the_task_removes_the_rest_and_keeps_the_marker() {
    let r = rig(CleanupMode::Inline, "10s");
    r.fake
        .script_every(Op::DeleteTask, Reply::fail(Code::Unavailable));
    let res = r.runner.run(r.request(&["true"]).id("stk-stuck")).await;
    assert_eq!(res.unwrap().exit_code, 0, "a failed cleanup only warns");
    // Every step is tried; the run directory stays, so reconciliation finds the task.
    assert_eq!(r.fake.leftovers(), ["task stk-stuck"]);
    assert_eq!(run_dirs(&r.dir.path().join("fifo")), ["stk-stuck"]);
    let e = r.runner.cleanup("stk-stuck").await.unwrap_err().to_string();
    assert!(e.contains("delete task") && !e.contains('\n'), "{e}");
}

#[tokio::test]
async fn gc_finds_a_run_known_only_to_containerd_and_removes_it_once_it_may() {
    let r = rig(CleanupMode::Inline, "10s");
    r.fake.behaviour(Behaviour::RunsUntilKilled);
    r.fake.script(Op::WaitTask, Reply::fail(Code::Unavailable));
    let e = r
        .runner
        .run(r.request(&["sleep", "100"]).id("stk-orphan"))
        .await;
    assert!(matches!(e, Err(RunError::Lost { .. })), "{e:?}");
    // Without its run directory, only containerd's lists (and labels) know of the run.
    std::fs::remove_dir_all(r.dir.path().join("fifo/stk-orphan")).unwrap();
    let target = r.runner.cleanup_target();
    let opts = ReconcileOptions {
        proc_root: r.dir.path().join("proc"),
        ..ReconcileOptions::default()
    };
    let kept = reconcile(&target, &opts).await.unwrap();
    assert_eq!(kept.kept, ["stk-orphan"], "its owner (this process) lives");
    assert!(kept.removed.is_empty());
    for op in [Op::ListContainers, Op::ListTasks, Op::ListSnapshots] {
        assert_eq!(r.fake.count(op), 1, "{op:?}");
    }
    let all = ReconcileOptions {
        include_live: true,
        ..opts
    };
    let removed = reconcile(&target, &all).await.unwrap();
    assert_eq!(removed.removed, ["stk-orphan"]);
    // Its UID claim names a run directory that is gone: kept for the claim's grace period
    // (a run makes its directory just after claiming), then released.
    let claims = r.dir.path().join("uids");
    assert!(removed.released_uids.is_empty(), "a young claim is kept");
    let freed = stockade::runner::uids::reconcile(&claims, std::time::Duration::ZERO);
    assert_eq!(freed.len(), 1, "{freed:?}");
    r.assert_clean();
}

/// The rootfs overlay's `upperdir` as Tasks.Create got it for run `id`.
fn upperdir(fake: &FakeContainerd, id: &str) -> String {
    let rootfs = fake.task_rootfs(id).expect("a task was created");
    assert_eq!(rootfs.len(), 1, "{rootfs:?}");
    rootfs[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .expect("an upperdir")
        .to_string()
}

#[tokio::test]
async fn a_read_only_root_gets_the_snapshot_s_mounts_and_no_volume() {
    let r = rig(CleanupMode::Inline, "10s");
    let res = r.runner.run(r.request(&["true"])).await.unwrap();
    assert_eq!(
        upperdir(&r.fake, &res.id),
        format!("/fake/snapshots/{}/fs", res.id)
    );
    assert_eq!(res.disk.mechanism, "none");
    assert!(res.disk.volumes.is_empty());
    assert_eq!(res.phases.disk_ms, None);
    r.assert_clean();
}

fn disk_overrides(rw: bool, workspace: Option<&str>) -> PolicyOverrides {
    PolicyOverrides {
        timeout: Some("10s".into()),
        read_write_root: rw,
        disk: Some("64M".into()),
        workspace_size: workspace.map(str::to_string),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_writable_root_s_upper_layer_is_on_a_bounded_volume_removed_with_the_run() {
    if !common::require_or_skip("loop-mounted volumes", &["/usr/sbin/mkfs.ext4"]) {
        return;
    }
    for (rw, ws) in [(true, None), (false, Some("32M")), (true, Some("32M"))] {
        let r = rig_with(CleanupMode::Caller, disk_overrides(rw, ws));
        let res = r.runner.run(r.request(&["true"])).await.unwrap();
        let run_dir = r.dir.path().join("fifo").join(&res.id);
        let kinds: Vec<_> = res.disk.volumes.iter().map(|v| v.kind).collect();
        assert_eq!(res.disk.mechanism, "loop-ext4");
        assert_eq!(kinds.len(), usize::from(rw) + usize::from(ws.is_some()));
        assert!(res.phases.disk_ms.is_some());
        if rw {
            assert_eq!(
                upperdir(&r.fake, &res.id),
                run_dir.join("disk-root/upper").to_string_lossy()
            );
        }
        // Until the run is removed: images in the disk root, mounted in the run directory.
        let images = run_dirs(&r.dir.path().join("disk"));
        assert_eq!(images.len(), kinds.len(), "{images:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        if ws.is_some() {
            let staged = run_dir.join("binds/workspace");
            assert!(
                mountinfo.contains(&*staged.to_string_lossy()),
                "{mountinfo}"
            );
        }
        for image in &images {
            let path = r.dir.path().join("disk").join(image);
            let loops = stockade::disk::loops_of(&path).unwrap();
            assert_eq!(loops.len(), 1, "{image}: {loops:?}");
        }
        let image_paths: Vec<_> = images
            .iter()
            .map(|i| r.dir.path().join("disk").join(i))
            .collect();
        r.runner.cleanup(&res.id).await.unwrap();
        r.assert_clean();
        for p in image_paths {
            assert!(!p.exists(), "{}", p.display());
        }
    }
}

#[tokio::test]
async fn a_run_with_volumes_that_fails_at_any_step_removes_them() {
    if !common::require_or_skip("loop-mounted volumes", &["/usr/sbin/mkfs.ext4"]) {
        return;
    }
    for op in [
        Op::PrepareSnapshot,
        Op::CreateContainer,
        Op::CreateTask,
        Op::StartTask,
    ] {
        let r = rig_with(CleanupMode::Caller, disk_overrides(true, Some("32M")));
        r.fake.script(op, Reply::fail(Code::Unavailable));
        let e = r.runner.run(r.request(&["true"])).await.unwrap_err();
        assert_eq!(e.exit_code(), 125, "{op:?}: {e}");
        r.assert_clean();
        let r = rig_with(CleanupMode::Caller, disk_overrides(true, None));
        r.fake.script(op, Reply::fail(Code::Unavailable));
        assert!(r.runner.prepare(&r.policy, HashMap::new()).await.is_err());
        r.assert_clean();
    }
}

#[tokio::test]
async fn a_prepared_sandbox_carries_its_volume_ready() {
    if !common::require_or_skip("loop-mounted volumes", &["/usr/sbin/mkfs.ext4"]) {
        return;
    }
    let r = rig_with(CleanupMode::Inline, disk_overrides(true, Some("32M")));
    let p = r.runner.prepare(&r.policy, HashMap::new()).await.unwrap();
    // Made with the sandbox, before any run takes it.
    assert_eq!(run_dirs(&r.dir.path().join("disk")).len(), 2);
    let id = p.id.clone();
    let res = r
        .runner
        .run_prepared(p, r.request(&["true"]))
        .await
        .unwrap();
    assert!(res.pooled);
    assert_eq!(res.disk.volumes.len(), 2);
    assert!(upperdir(&r.fake, &id).ends_with("/disk-root/upper"));
    r.assert_clean();
}
