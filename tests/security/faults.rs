//! Faults: containerd killed and restarted mid-run, stockade killed mid-run, a full
//! workspace disk, and many runs in a row and at once. The cases that disturb a daemon
//! start their own; after each, `stockade gc` must leave nothing of any run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{
    case, nonce, processes_with, Case, CaseResult, Daemon, Outcome, Sandbox, Spawned,
};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case("faults::containerd_killed_and_restarted_mid_run", |_| {
            containerd_killed()
        }),
        case("faults::stockade_killed_mid_run", |_| stockade_killed()),
        case("faults::workspace_disk_full", |d| workspace_full(d)),
        case("faults::runs_in_a_row_and_at_once", |_| many_runs()),
    ]
}

/// A workspace directory the sandbox user may write.
fn workspace() -> Result<tempfile::TempDir, String> {
    use std::os::unix::fs::PermissionsExt;
    let ws = tempfile::Builder::new()
        .prefix("stk-sec-fault-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o777))
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Waits until `path` exists (the sandbox's signal that it is running).
fn wait_for(path: &Path, run: &mut Spawned, limit: Duration) -> CaseResult {
    let t = Instant::now();
    while !path.exists() {
        if let Ok(Some(st)) = run.child.try_wait() {
            fail!("stockade exited ({st}) before the sandbox started");
        }
        ensure!(
            t.elapsed() < limit,
            "the sandbox did not start within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The ids of the daemon's containers (the run in progress).
fn container_ids(d: &Daemon) -> Result<Vec<String>, String> {
    Ok(d.ctr(&["containers", "ls", "-q"])?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// After gc: nothing of the daemon's runs, and no process of the sandbox marked `mark`.
fn clean_after_gc(d: &Daemon, mark: &str) -> CaseResult {
    d.gc()?;
    let left = d.census(None);
    ensure!(left.is_empty(), "left after gc: {left:#?}");
    let procs = processes_with(mark);
    ensure!(procs.is_empty(), "sandbox processes survived gc: {procs:?}");
    Ok(())
}

/// containerd is SIGKILLed while a sandbox runs, then restarted. The run either finishes
/// (the shim kept the task) or fails with exit 125 and one line saying why; it does not
/// hang, and `stockade gc` leaves nothing.
fn containerd_killed() -> CaseResult {
    let d = Daemon::start()?;
    let ws = workspace()?;
    let mark = format!("stkfault{}", nonce());
    let mut run = Sandbox::busybox(&[
        "sh",
        "-c",
        "echo started > /workspace/started; sleep 6; echo finished",
        &mark,
    ])
    .workspace(ws.path())
    .flag("--timeout", "60s")
    .spawn(&d)?;
    wait_for(
        &ws.path().join("started"),
        &mut run,
        Duration::from_secs(60),
    )?;
    for id in container_ids(&d)? {
        d.record(&id);
    }
    let old = d.containerd.pid();
    kill(Pid::from_raw(old), Signal::SIGKILL).map_err(|e| format!("kill containerd: {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    let new = d
        .runtime
        .block_on(stockade::containerd::daemon::ensure_running(
            d.containerd.paths(),
        ))
        .map_err(|e| format!("restart containerd: {e}"))?;
    ensure!(new != old, "containerd was not restarted (pid {new})");

    let finished = run.wait(Duration::from_secs(90))?;
    let stderr = finished.stderr_text();
    let o = Outcome::parse(finished, true, &d)?;
    eprintln!(
        "containerd killed mid-run: stockade exited {:?}: {}",
        o.code(),
        stderr.trim()
    );
    match o.code() {
        Some(0) => ensure!(
            o.stdout().contains("finished"),
            "exit 0 but the command did not finish\n{}",
            o.describe()
        ),
        Some(125) => ensure!(
            stderr.trim().lines().count() == 1 && !stderr.trim().is_empty(),
            "exit 125 must come with exactly one line on stderr, got:\n{stderr}"
        ),
        other => fail!("exit {other:?}: want 0 (finished) or 125 (lost containerd)\n{stderr}"),
    }
    clean_after_gc(&d, &mark)
}

/// stockade is SIGKILLed while its sandbox runs: `stockade gc` then removes the sandbox,
/// its processes and everything the run created.
fn stockade_killed() -> CaseResult {
    let d = Daemon::start()?;
    let ws = workspace()?;
    let mark = format!("stkfault{}", nonce());
    let mut run = Sandbox::busybox(&[
        "sh",
        "-c",
        // Not `exec`ed by the shell (it is not the last command), so the shell carrying
        // the mark stays the sandbox's first process.
        "echo started > /workspace/started; sleep 600; true",
        &mark,
    ])
    .workspace(ws.path())
    .flag("--timeout", "900s")
    .spawn(&d)?;
    wait_for(
        &ws.path().join("started"),
        &mut run,
        Duration::from_secs(60),
    )?;
    let ids = container_ids(&d)?;
    ensure!(ids.len() == 1, "want one container, found {ids:?}");
    d.record(&ids[0]);
    run.child
        .kill()
        .map_err(|e| format!("kill stockade: {e}"))?;
    let _ = run.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let orphaned = processes_with(&mark);
    eprintln!(
        "stockade killed mid-run: {} sandbox process(es) still running before gc",
        orphaned.len()
    );
    clean_after_gc(&d, &mark)
}

/// A tmpfs mounted by the test, unmounted (lazily) when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Result<SmallDisk, String> {
        use nix::mount::{mount, MsFlags};
        let dir = workspace()?;
        mount(
            Some("stk-sec-full"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0777").as_str()),
        )
        .map_err(|e| format!("mount tmpfs on {}: {e}", dir.path().display()))?;
        Ok(SmallDisk { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The workspace's filesystem is full before the run starts: the sandbox's writes fail
/// with ENOSPC, the run itself works (exit code is the command's), nothing leaks.
fn workspace_full(d: &Daemon) -> CaseResult {
    let disk = SmallDisk::mount("512k")?;
    let filler = disk.path().join("filler");
    let chunk = vec![0u8; 64 * 1024];
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).map_err(|e| e.to_string())?;
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => fail!("filling the disk: {e}"),
            }
        }
    }
    let script = "echo hi > /workspace/new; echo \"write $?\"; \
                  dd if=/dev/zero of=/workspace/more bs=4096 count=64 2>&1; echo \"dd $?\"";
    let o = Sandbox::busybox(&["sh", "-c", script])
        .workspace(&disk.path())
        .run(d)?;
    o.ran()?;
    ensure!(o.code() == Some(0), "{}", o.describe());
    let all = format!("{}{}", o.stdout(), o.stderr());
    ensure!(
        all.contains("No space left on device"),
        "no ENOSPC seen:\n{}",
        o.describe()
    );
    ensure!(
        o.stdout().contains("write 1"),
        "the write did not fail:\n{}",
        o.describe()
    );
    ensure!(
        o.stdout().contains("dd 1"),
        "dd did not fail:\n{}",
        o.describe()
    );
    let id = o.id().unwrap_or_default();
    let left = d.leftovers_of(id);
    ensure!(left.is_empty(), "run {id} left: {left:?}");
    Ok(())
}

/// 200 runs in a row, then 32 at once, on a daemon of their own: every one exits 0 with
/// its own output, and after `stockade gc` nothing of any of them remains.
fn many_runs() -> CaseResult {
    let d = Daemon::start()?;
    let t = Instant::now();
    for i in 0..200 {
        let o = Sandbox::busybox(&["true"]).run(&d)?;
        ensure!(
            o.code() == Some(0),
            "run {i} of 200 exited {:?}: {}",
            o.code(),
            o.process.stderr_text().trim()
        );
    }
    let serial = t.elapsed();
    let t = Instant::now();
    let runs: Vec<(usize, Spawned)> = (0..32)
        .map(|i| {
            let tag = format!("run-{i}");
            Sandbox::busybox(&["sh", "-c", "echo $0", &tag])
                .spawn(&d)
                .map(|s| (i, s))
        })
        .collect::<Result<_, _>>()?;
    let mut bad = Vec::new();
    for (i, s) in runs {
        let o = Outcome::parse(s.wait(Duration::from_secs(300))?, true, &d)?;
        if o.code() != Some(0) || o.stdout() != format!("run-{i}\n") {
            bad.push(format!(
                "run-{i}: exit {:?}, stdout {:?}, stderr {}",
                o.code(),
                o.stdout(),
                o.process.stderr_text().trim()
            ));
        }
    }
    let parallel = t.elapsed();
    eprintln!(
        "200 runs in a row: {:.1}s ({:.0} ms each); 32 at once: {:.1}s",
        serial.as_secs_f64(),
        serial.as_secs_f64() * 1000.0 / 200.0,
        parallel.as_secs_f64()
    );
    ensure!(
        bad.is_empty(),
        "concurrent runs failed:\n{}",
        bad.join("\n")
    );
    ensure!(
        d.ids().len() == 232,
        "{} run ids recorded, want 232",
        d.ids().len()
    );
    d.gc()?;
    let left = d.census(None);
    ensure!(left.is_empty(), "left after 232 runs and gc: {left:#?}");
    Ok(())
}
