//! `stockade mcp` driven by the real MCP client library (`mcp` from PyPI, in stockade's
//! venv) over stdio, over a private containerd (root; with `CI=true` nothing skips): the
//! tools are listed with their schemas; `run_command` runs `echo hi`; a sandbox is made,
//! a file written and read back, execs run in it, its files and the server's sandboxes
//! listed, and it is killed; calls asking more than the policy grants are refused as tool
//! errors naming the field, an unknown tool is a protocol error; and after the client has
//! closed the server's stdin with sandboxes alive, nothing is left
//! (tests/fixtures/mcp/client.py does the client's side).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{busybox_image, PrivateContainerd};

const BIN: &str = env!("CARGO_BIN_EXE_stockade");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp/client.py");
/// Liveness guard for the removals after the client exits (never a speed claim).
const PATIENCE: Duration = Duration::from_secs(120);

/// The venv's python when it has the `mcp` package (root, containerd and runc too).
fn python() -> Option<PathBuf> {
    if !common::require_root_or_skip("drives stockade mcp with the Python MCP client") {
        return None;
    }
    let venv = std::env::var_os("STOCKADE_VENV")
        .map_or_else(|| PathBuf::from("/opt/stockade-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let has_mcp = Command::new(&python)
        .args(["-c", "import mcp"])
        .status()
        .is_ok_and(|s| s.success());
    if has_mcp {
        return Some(python);
    }
    let why = format!(
        "no Python `mcp` package in {} (scripts/setup.sh installs it)",
        venv.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipping: {why}");
    None
}

/// What is left in the namespace and the run directories: containers, tasks, `stk-`
/// snapshots, run directories, mounts under them.
async fn leftovers(c: &PrivateContainerd, fifo: &std::path::Path) -> Vec<String> {
    use stockade::containerd::Containerd;
    let client = c.client("stockade").await;
    let mut left: Vec<String> = Vec::new();
    for ct in client.list_containers(vec![]).await.unwrap() {
        left.push(format!("container {}", ct.id));
    }
    for t in client.list_tasks().await.unwrap() {
        left.push(format!("task {t}"));
    }
    for s in client.list_snapshots("overlayfs", vec![]).await.unwrap() {
        if s.name.starts_with("stk-") {
            left.push(format!("snapshot {}", s.name));
        }
    }
    for e in std::fs::read_dir(fifo).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("stk-") {
            left.push(format!("run directory {name}"));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for l in mountinfo.lines() {
        if l.contains(&*fifo.to_string_lossy()) {
            left.push(format!("mount {l}"));
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_drives_sandboxes_within_the_policy_and_leaves_nothing() {
    let Some(python) = python() else { return };
    let c = PrivateContainerd::start().await;
    busybox_image(&c.client("stockade").await).await;
    let dir = tempfile::Builder::new()
        .prefix("stkm-")
        .tempdir_in("/tmp")
        .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[limits]\nmemory = \"256Mi\"\ntimeout = \"2m\"\n").unwrap();
    let fifo = dir.path().join("fifo");

    let out = Command::new(&python)
        .arg(SCRIPT)
        .env("STOCKADE", BIN)
        .env("POLICY", &policy)
        .env("ADDRESS", c.address())
        .env("FIFO", &fifo)
        .output()
        .expect("run the MCP client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let steps: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        steps,
        [
            "ok list-tools",
            "ok run_command",
            "ok refusals",
            "ok files",
            "ok exec",
            "ok list_files",
            "ok list_sandboxes",
            "ok kill_sandbox",
            "ok protocol-errors",
            "ok closed",
        ],
        "{stderr}"
    );

    // The server handed its two live sandboxes to removal helpers as it exited.
    let start = Instant::now();
    loop {
        let left = leftovers(&c, &fifo).await;
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "left after the client exited: {left:?}\n{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stockade::containerd::daemon::unmount_under(
        std::path::Path::new("/proc/self/mountinfo"),
        dir.path(),
    );
}
