//! The private containerd: started on demand, reused, outliving the invocation that started
//! it, stopped by PID. Needs root and Debian's containerd; each test runs its own daemon
//! under a tempdir.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stockade::containerd::daemon::{self, DaemonError, DaemonPaths};

fn stockade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
}

#[tokio::test]
async fn private_daemon_starts_answers_and_is_reused() {
    if !common::require_root_or_skip("private containerd") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    assert!(client.server_version().await.unwrap().starts_with("1."));

    // A second start finds the running daemon instead of starting another.
    let again = daemon::ensure_running(d.paths()).await.unwrap();
    assert_eq!(again, d.pid());

    let status = daemon::status(d.paths()).await.unwrap();
    assert!(status.is_running(), "{status:?}");
    assert_eq!(status.pid, Some(d.pid()));

    // Its config disables the CRI plugin.
    let config = std::fs::read_to_string(&d.paths().config).unwrap();
    assert!(config.contains("\"io.containerd.grpc.v1.cri\""));
}

#[tokio::test]
async fn concurrent_starts_share_one_daemon() {
    if !common::require_root_or_skip("private containerd") {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("stk-")
        .tempdir_in("/tmp")
        .unwrap();
    let paths = DaemonPaths::under(base.path());
    let (a, b, c) = tokio::join!(
        daemon::ensure_running(&paths),
        daemon::ensure_running(&paths),
        daemon::ensure_running(&paths)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let stopped = daemon::stop(&paths, Duration::from_secs(5)).unwrap();
    assert_eq!((a, b), (b, c));
    assert_eq!(stopped, Some(a));
    assert!(!Path::new(&format!("/proc/{a}")).exists() || !is_running(a));
}

fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn stop_ends_it_and_status_says_so() {
    if !common::require_root_or_skip("private containerd") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let pid = d.pid();
    assert_eq!(
        daemon::stop(d.paths(), Duration::from_secs(5)).unwrap(),
        Some(pid)
    );
    assert!(!is_running(pid));
    let status = daemon::status(d.paths()).await.unwrap();
    assert!(!status.is_running());
    assert_eq!(status.pid, None);
    // Stopping again is a no-op, not an error.
    assert_eq!(
        daemon::stop(d.paths(), Duration::from_secs(1)).unwrap(),
        None
    );
}

#[tokio::test]
async fn a_pidfile_naming_another_process_is_not_signalled() {
    if !common::require_root_or_skip("private containerd") {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("stk-")
        .tempdir_in("/tmp")
        .unwrap();
    let paths = DaemonPaths::under(base.path());
    std::fs::create_dir_all(&paths.state).unwrap();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&paths.pidfile, format!("{}\n", sleeper.id())).unwrap();
    let err = daemon::stop(&paths, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, DaemonError::NotOurs { .. }), "{err}");
    assert!(sleeper.try_wait().unwrap().is_none(), "sleep was signalled");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[tokio::test]
async fn an_explicit_dead_address_is_an_error_not_a_new_daemon() {
    if !common::require_root_or_skip("private containerd") {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("stk-")
        .tempdir_in("/tmp")
        .unwrap();
    let paths = DaemonPaths::under(base.path());
    let dead = base.path().join("nothing.sock");
    let err = daemon::connect_or_start(Some(&dead), "stockade", &paths)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("nothing.sock"), "{msg}");
    assert!(!msg.contains('\n'));
    assert!(!paths.pidfile.exists(), "a daemon was started");

    let mut missing = paths.clone();
    missing.binary = base.path().join("no-containerd");
    let err = daemon::ensure_running(&missing).await.unwrap_err();
    assert!(
        err.to_string().ends_with("no-containerd not found"),
        "{err}"
    );
}

/// `stockade daemon start` returns while the daemon keeps running; `status` and `stop`
/// find it through the pidfile.
#[tokio::test]
async fn the_daemon_outlives_the_command_that_started_it() {
    if !common::require_root_or_skip("private containerd") {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("stk-")
        .tempdir_in("/tmp")
        .unwrap();
    let out = stockade()
        .args(["daemon", "start", "--base"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let paths = DaemonPaths::under(base.path());
    let status = daemon::status(&paths).await.unwrap();
    assert!(status.is_running(), "{status:?}");
    let pid = status.pid.unwrap();
    // It runs in a session of its own.
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
    assert_eq!(sid.as_raw(), pid);

    let out = stockade()
        .args(["daemon", "status", "--json", "--base"])
        .arg(base.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"].as_i64(), Some(i64::from(pid)));

    let out = stockade()
        .args(["daemon", "stop", "--base"])
        .arg(base.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_running(pid));
    let _ = daemon::unmount_under(Path::new("/proc/self/mountinfo"), base.path());
}
