//! containerd killed in the middle of a run: `stockade run` exits 125 with one clear line,
//! and once containerd is back, the next run reclaims everything the broken one left (task,
//! container, snapshot, shim, cgroup, mount, FIFO directory).

mod common;
mod run_support;

use std::process::Stdio;
use std::time::Duration;

use common::census::wait_for_running_task;
use common::cli::CliHost;
use common::require_root_or_skip;
use run_support::assert_no_leftovers;
use stockade::containerd::daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_killed_mid_run_is_reported_and_reclaimed_by_the_next_run() {
    if !require_root_or_skip("kills and restarts a private containerd") {
        return;
    }
    let h = CliHost::start().await;
    let (c, fifo) = (&h.containerd, h.fifo());
    let run = |cmd: &[&str]| {
        let mut c2 = h.command("run");
        c2.arg("--no-run-log")
            .arg("--")
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c2
    };
    let child = run(&["sleep", "60"]).spawn().unwrap();

    // Wait for the sandbox to run, then kill containerd (its shim and the sandbox live on).
    let id = wait_for_running_task(&h.client, Duration::from_secs(20)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("lost containerd"), "{stderr}");
    assert!(
        fifo.join(&id).is_dir(),
        "the run directory marks the broken run"
    );

    // containerd comes back (and finds the shim still serving the sandbox).
    daemon::ensure_running(c.paths())
        .await
        .expect("restart containerd");
    let client = c.client("stockade").await;
    let out = run(&["true"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_leftovers(
        &client,
        c.address(),
        &fifo,
        Some(std::slice::from_ref(&id)),
        Duration::from_secs(10),
    )
    .await;
    // And the whole namespace is clean once the second run's own cleanup is done.
    assert_no_leftovers(&client, c.address(), &fifo, None, Duration::from_secs(10)).await;
}
