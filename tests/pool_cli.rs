//! `stockade pool fill|ls|drain` and `stockade run` through a pool service, against a
//! private containerd: a run takes a pooled sandbox unless `--cold`, `pool ls` reports it,
//! `pool drain` removes every pooled sandbox and stops the service, and nothing is left.
//! A finished run's removal, pooled or cold, goes to a running pool service or `stockade
//! serve` instead of a helper process, and to the helper when none runs.

mod common;
mod run_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_image, require_root_or_skip, PrivateContainerd};
use run_support::assert_no_leftovers;

const BIN: &str = env!("CARGO_BIN_EXE_stockade");

fn stockade(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run stockade")
}

fn ls(sockets: &str) -> serde_json::Value {
    let out = stockade(&["pool", "ls", "--socket-dir", sockets, "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("pool ls JSON")
}

fn run_json(
    socket: &str,
    fifo: &str,
    sockets: &str,
    extra: &[&str],
    cmd: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "run",
        "--json",
        "--no-run-log",
        "--cleanup",
        "inline",
        "--address",
        socket,
        "--fifo-root",
        fifo,
        "--pool-dir",
        sockets,
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = stockade(&args);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("run JSON")
}

/// A private containerd with the busybox image, and a FIFO root and socket directory of
/// the test's own.
struct Setup {
    c: PrivateContainerd,
    client: stockade::containerd::Client,
    dir: tempfile::TempDir,
    fifo: std::path::PathBuf,
    sockets: std::path::PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let c = PrivateContainerd::start().await;
        let client = c.client("stockade").await;
        busybox_image(&client).await;
        let dir = tempfile::tempdir().unwrap();
        let (fifo, sockets) = (dir.path().join("fifo"), dir.path().join("pool"));
        Setup {
            c,
            client,
            dir,
            fifo,
            sockets,
        }
    }

    fn strs(&self) -> (&str, &str, &str) {
        (
            self.c.address().to_str().unwrap(),
            self.fifo.to_str().unwrap(),
            self.sockets.to_str().unwrap(),
        )
    }

    /// `stockade pool fill --image busybox --detach` with `extra`; the service's pid.
    fn fill(&self, extra: &[&str]) -> i32 {
        let (socket, fifo, sockets) = self.strs();
        let mut args = vec!["pool", "fill", "--image", "stockade/busybox", "--detach"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--address",
            socket,
            "--fifo-root",
            fifo,
            "--socket-dir",
            sockets,
        ]);
        let out = stockade(&args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("service pid")
    }

    fn run_json(&self, extra: &[&str], cmd: &[&str]) -> serde_json::Value {
        let (socket, fifo, sockets) = self.strs();
        run_json(socket, fifo, sockets, extra, cmd)
    }

    /// `stockade -vv run --json [extra] -- true` with the removal handed off after exit
    /// (the default), removal sockets looked for under `removal`; the stderr line saying
    /// who took the removal, once the run's directory is gone.
    fn run_handed_off(&self, removal: &Path, extra: &[&str]) -> String {
        let (socket, fifo, sockets) = self.strs();
        let mut args = vec![
            "-vv",
            "run",
            "--json",
            "--no-run-log",
            "--address",
            socket,
            "--fifo-root",
            fifo,
            "--pool-dir",
            sockets,
            "--removal-dir",
            removal.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "true"]);
        let out = stockade(&args);
        assert!(out.status.success(), "{out:?}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
        assert_eq!(r["exit_code"], 0, "{r}");
        let dir = self.fifo.join(r["id"].as_str().unwrap());
        let start = Instant::now();
        while dir.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{} was not removed",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr
            .lines()
            .find(|l| l.contains("removal of stk-"))
            .unwrap_or_else(|| panic!("nobody took the removal: {stderr}"))
            .to_string()
    }

    fn drain(&self) -> Output {
        let out = stockade(&["pool", "drain", "--socket-dir", self.strs().2]);
        assert!(out.status.success(), "{out:?}");
        out
    }

    async fn assert_no_leftovers(&self) {
        assert_no_leftovers(
            &self.client,
            self.c.address(),
            &self.fifo,
            None,
            Duration::from_secs(20),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_take_pooled_sandboxes_from_the_service_and_drain_removes_them() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let s = Setup::new().await;
    let (socket, _, sockets_s) = s.strs();
    let pid = s.fill(&["--size", "2"]);

    let wait_ready = |n: u64| {
        let start = Instant::now();
        loop {
            let v = ls(sockets_s);
            if v[0]["pool"]["status"]["ready"].as_u64() == Some(n) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "pool never had {n} ready: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let v = wait_ready(2);
    let st = &v[0]["pool"]["status"];
    assert_eq!(st["size"], 2);
    assert_eq!(st["image"], "stockade/busybox");
    assert_eq!(st["idle_ages_ms"].as_array().unwrap().len(), 2);
    assert!(st["memory_bytes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(v[0]["pool"]["pid"], pid);

    let warm = s.run_json(&[], &["echo", "warm"]);
    assert_eq!(
        (warm["pooled"].as_bool(), warm["stdout"].as_str()),
        (Some(true), Some("warm\n"))
    );
    let cold = s.run_json(&["--cold"], &["echo", "cold"]);
    assert_eq!(
        (cold["pooled"].as_bool(), cold["stdout"].as_str()),
        (Some(false), Some("cold\n"))
    );
    // Another policy is not served from this pool.
    let other = s.run_json(&["--memory", "64M"], &["true"]);
    assert_eq!(other["pooled"].as_bool(), Some(false));
    assert_eq!(other["exit_code"], 0);

    let v = wait_ready(2);
    assert_eq!(v[0]["pool"]["status"]["taken"], 1);

    // Without `--cleanup inline`, the finished pooled run is removed after `stockade run`
    // has exited (handed back to the service, which keeps serving meanwhile).
    let out = stockade(&[
        "run",
        "--no-run-log",
        "--address",
        socket,
        "--fifo-root",
        s.fifo.to_str().unwrap(),
        "--pool-dir",
        sockets_s,
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v = wait_ready(2);
    assert_eq!(v[0]["pool"]["status"]["taken"], 2);
    let run_dirs = |s: &Setup| -> usize {
        std::fs::read_dir(&s.fifo)
            .map(std::iter::Iterator::count)
            .unwrap_or(0)
    };
    let start = Instant::now();
    while run_dirs(&s) > 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the handed-back run was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A cold run's removal is taken by the running pool service too (it serves the same
    // containerd and FIFO root): no helper process is started.
    let removal = s.dir.path().join("removal");
    let pool_socket = stockade::pool::service::sockets(&s.sockets).remove(0);
    let who = s.run_handed_off(&removal, &["--cold"]);
    assert!(
        who.contains(&format!(
            "handed to the process at {}",
            pool_socket.display()
        )),
        "{who}"
    );

    let out = s.drain();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 removed"),
        "{out:?}"
    );
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}/status")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pool service {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ls(sockets_s).as_array().unwrap().is_empty());
    // With no long-lived process left, the removal falls back to the helper.
    let who = s.run_handed_off(&removal, &["--cold"]);
    assert!(who.contains("handed to cleanup helper"), "{who}");
    s.assert_no_leftovers().await;
}

/// `stockade serve` takes `stockade run`'s removals on `<removal dir>/<pid>.sock` while it
/// runs, removes the socket when stopped, and the next run falls back to the helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_takes_cold_runs_removals_and_the_helper_does_without_it() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let s = Setup::new().await;
    let (socket, fifo, _) = s.strs();
    let removal = s.dir.path().join("removal");
    let api = s.dir.path().join("api.sock");
    let tokens = s.dir.path().join("tokens");
    std::fs::write(&tokens, "0123456789abcdef0123456789abcdef tester\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let http = format!("unix:{}", api.display());
    let out = stockade(&[
        "serve",
        "--http",
        &http,
        "--token-file",
        tokens.to_str().unwrap(),
        "--address",
        socket,
        "--fifo-root",
        fifo,
        "--removal-dir",
        removal.to_str().unwrap(),
        "--detach",
    ]);
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let server_socket = removal.join(format!("{pid}.sock"));

    for _ in 0..2 {
        let who = s.run_handed_off(&removal, &[]);
        assert!(
            who.contains(&format!(
                "handed to the process at {}",
                server_socket.display()
            )),
            "{who}"
        );
    }

    // A run in another FIFO root is not the server's to remove: the helper takes it.
    let other_fifo = s.dir.path().join("fifo-other");
    let out = stockade(&[
        "-vv",
        "run",
        "--no-run-log",
        "--address",
        socket,
        "--fifo-root",
        other_fifo.to_str().unwrap(),
        "--removal-dir",
        removal.to_str().unwrap(),
        "--pool-dir",
        s.strs().2,
        "--",
        "true",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("handed to cleanup helper"), "{stderr}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|st| !st.contains("State:\tZ"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !server_socket.exists(),
        "the removal socket outlived the server"
    );
    let who = s.run_handed_off(&removal, &[]);
    assert!(who.contains("handed to cleanup helper"), "{who}");
    let start = Instant::now();
    while std::fs::read_dir(&other_fifo).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the other FIFO root's run was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.assert_no_leftovers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_cap_holds_the_pool_below_its_size() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let s = Setup::new().await;
    let sockets_s = s.strs().2;
    // A cap below one sandbox: the pool keeps exactly one (it must see one to know the
    // size), never the three asked for.
    s.fill(&["--size", "3", "--max-memory", "1K"]);
    let start = Instant::now();
    let mut seen_one = None;
    while start.elapsed() < Duration::from_secs(30) {
        let v = ls(sockets_s);
        let st = &v[0]["pool"]["status"];
        let held = st["ready"].as_u64().unwrap() + st["preparing"].as_u64().unwrap();
        assert!(held <= 1, "the cap let the pool grow: {st}");
        if st["ready"] == 1 {
            if seen_one.is_none() {
                seen_one = Some(Instant::now());
            }
            assert_eq!(st["max_memory_bytes"], 1024, "{st}");
            assert_eq!(st["memory_limited"], true, "{st}");
            // Long enough for a refill of two more to have begun and finished.
            if seen_one.unwrap().elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen_one.is_some(), "the pool never had its one sandbox");

    let warm = s.run_json(&[], &["echo", "capped"]);
    assert_eq!(
        (warm["pooled"].as_bool(), warm["stdout"].as_str()),
        (Some(true), Some("capped\n"))
    );

    s.drain();
    s.assert_no_leftovers().await;
}

/// The pool's sandboxes hold the workspace directory they were made with. After
/// `mv ws ws-archived; mkdir ws`, a run naming `ws` must get the new directory (cold), and
/// the pool must drop what it holds rather than keep the archived directory mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replaced_at_the_workspace_path_is_never_served_from_the_pool() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new().await;
    let sockets_s = s.strs().2;
    let top = tempfile::tempdir().unwrap();
    let ws = top.path().join("ws");
    let archived = top.path().join("ws-archived");
    let make = |p: &Path| {
        std::fs::create_dir(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    make(&ws);
    std::fs::write(ws.join("old-file"), "archived").unwrap();
    let ws_s = ws.to_str().unwrap();
    s.fill(&["--size", "1", "--workspace", ws_s]);
    let start = Instant::now();
    while ls(sockets_s)[0]["pool"]["status"]["ready"] != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pool never filled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The same directory is served from the pool.
    let warm = s.run_json(&["--workspace", ws_s], &["ls", "/workspace"]);
    assert_eq!(warm["pooled"], true, "{warm}");
    while ls(sockets_s)[0]["pool"]["status"]["ready"] != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pool never refilled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    std::fs::rename(&ws, &archived).unwrap();
    make(&ws);
    let r = s.run_json(
        &["--workspace", ws_s],
        &["sh", "-c", "ls /workspace; touch /workspace/new"],
    );
    assert_eq!(r["pooled"], false, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert!(!r["stdout"].as_str().unwrap().contains("old-file"), "{r}");
    assert!(ws.join("new").exists() && !archived.join("new").exists());

    // The pool notices and holds nothing of the archived directory.
    let start = Instant::now();
    loop {
        let st = ls(sockets_s)[0]["pool"]["status"].clone();
        let noticed = st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("changed since the policy was validated"));
        if noticed && st["ready"] == 0 && st["preparing"] == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pool kept sandboxes of the replaced directory: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s.drain();
    s.assert_no_leftovers().await;
}
