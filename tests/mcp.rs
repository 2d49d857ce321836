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
    common::venv_python("drives stockade mcp with the Python MCP client", "mcp")
}

/// A private containerd with the busybox image, and a `/tmp/stkm-*` directory holding a
/// policy file with `policy_toml` and the run directories: (containerd, directory, policy
/// file, run directories' parent).
async fn setup(policy_toml: &str) -> (PrivateContainerd, tempfile::TempDir, PathBuf, PathBuf) {
    let c = PrivateContainerd::start().await;
    busybox_image(&c.client("stockade").await).await;
    let dir = tempfile::Builder::new()
        .prefix("stkm-")
        .tempdir_in("/tmp")
        .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_toml).unwrap();
    let fifo = dir.path().join("fifo");
    (c, dir, policy, fifo)
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
    let (c, dir, policy, fifo) = setup("[limits]\nmemory = \"256Mi\"\ntimeout = \"2m\"\n").await;

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
            "ok run_python",
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

/// `stockade mcp` started here with piped stdio, speaking JSON-RPC lines directly.
struct Server {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    next: u64,
}

impl Server {
    fn start(c: &PrivateContainerd, policy: &std::path::Path, fifo: &std::path::Path) -> Server {
        let mut child = Command::new(BIN)
            .arg("mcp")
            .arg("--policy")
            .arg(policy)
            .arg("--address")
            .arg(c.address())
            .arg("--fifo-root")
            .arg(fifo)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start stockade mcp");
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut s = Server {
            child,
            stdin,
            stdout,
            next: 0,
        };
        let init = s.call(
            "initialize",
            serde_json::json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "tests/mcp.rs", "version": "0"}}),
        );
        assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
        s.send(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, v: &serde_json::Value) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{v}").unwrap();
        stdin.flush().unwrap();
    }

    /// One request and its answer (the server answers calls in the order they end; these
    /// are sent one at a time).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::BufRead;
        self.next += 1;
        let id = self.next;
        self.send(
            &serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        );
        let mut line = String::new();
        assert!(
            self.stdout.read_line(&mut line).unwrap() > 0,
            "the server hung up"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], id, "{v}");
        v
    }

    /// A sandbox made with `create_sandbox`: its id.
    fn create(&mut self) -> String {
        let r = self.call(
            "tools/call",
            serde_json::json!({"name": "create_sandbox", "arguments": {}}),
        );
        assert_eq!(r["result"]["isError"], false, "{r}");
        r["result"]["structuredContent"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits (at most [`PATIENCE`], a liveness guard) for the server's exit.
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < PATIENCE, "stockade mcp did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Waits (at most [`PATIENCE`]) until nothing is left.
async fn assert_nothing_left(c: &PrivateContainerd, fifo: &std::path::Path, when: &str) {
    let start = Instant::now();
    loop {
        let left = leftovers(c, fifo).await;
        if left.is_empty() {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{when}: left {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM removes what the server made; after a SIGKILL, the next server removes what
/// the dead one left, and leaves alone the sandboxes of a server that is alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_its_sandboxes_and_the_next_server_reclaims_a_dead_ones() {
    if !common::require_root_or_skip("drives stockade mcp over a private containerd") {
        return;
    }
    let (c, _dir, policy, fifo) = setup("[limits]\nmemory = \"128Mi\"\n").await;

    // SIGTERM with two sandboxes alive: exit 0, nothing left.
    let mut s = Server::start(&c, &policy, &fifo);
    s.create();
    s.create();
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(s.wait().success());
    assert_nothing_left(&c, &fifo, "after SIGTERM").await;

    // A server killed outright leaves its sandbox; a live server's survives a newcomer's
    // reclaim, the dead one's does not.
    let mut dead = Server::start(&c, &policy, &fifo);
    let orphan = dead.create();
    dead.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = dead.wait();
    let mut live = Server::start(&c, &policy, &fifo);
    let kept = live.create();
    let newcomer = Server::start(&c, &policy, &fifo);
    let ls = live.call(
        "tools/call",
        serde_json::json!({"name": "list_sandboxes", "arguments": {}}),
    );
    let ids: Vec<&str> = ls["result"]["structuredContent"]["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [kept.as_str()], "{ls}");
    let run_dirs: Vec<String> = std::fs::read_dir(&fifo)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("stk-"))
        .collect();
    assert!(
        !run_dirs.contains(&orphan),
        "the dead server's sandbox is reclaimed"
    );
    assert!(
        run_dirs.contains(&kept),
        "the live server's sandbox is kept"
    );

    // Closing stdin ends the others, which remove what they made.
    for mut s in [live, newcomer] {
        s.stdin.take();
        assert!(s.wait().success());
    }
    assert_nothing_left(&c, &fifo, "after stdin closed").await;
}
