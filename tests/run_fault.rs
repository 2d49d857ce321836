//! containerd killed in the middle of a run: `stockade run` exits 125 with one clear line,
//! and once containerd is back, the next run reclaims everything the broken one left (task,
//! container, snapshot, shim, cgroup, mount, FIFO directory).

mod common;
mod run_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_image, require_root_or_skip, PrivateContainerd};
use containerd_client::services::v1::ListTasksRequest;
use run_support::assert_no_leftovers;
use stockade::containerd::daemon;

const BIN: &str = env!("CARGO_BIN_EXE_stockade");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_killed_mid_run_is_reported_and_reclaimed_by_the_next_run() {
    if !require_root_or_skip("kills and restarts a private containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let run = |cmd: &[&str]| {
        let mut c2 = Command::new(BIN);
        c2.arg("run")
            .arg("--address")
            .arg(c.address())
            .arg("--fifo-root")
            .arg(&fifo)
            .arg("--no-run-log")
            .arg("--")
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c2
    };
    let child = run(&["sleep", "60"]).spawn().unwrap();

    // Wait for the sandbox to run, then kill containerd (its shim and the sandbox live on).
    let start = Instant::now();
    let id = loop {
        let tasks = client
            .tasks()
            .list(client.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .tasks;
        if let Some(t) = tasks.iter().find(|t| t.status == 2) {
            break t.id.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no task started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
