//! `stockade pool fill|ls|drain` and `stockade run` through a pool service, against a
//! private containerd: a run takes a pooled sandbox unless `--cold`, `pool ls` reports it,
//! `pool drain` removes every pooled sandbox and stops the service, and nothing is left.

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
        "--no-audit-log",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_take_pooled_sandboxes_from_the_service_and_drain_removes_them() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo");
    let sockets = t.path().join("pool");
    let (socket, fifo_s, sockets_s) = (
        c.address().to_str().unwrap(),
        fifo.to_str().unwrap(),
        sockets.to_str().unwrap(),
    );

    let out = stockade(&[
        "pool",
        "fill",
        "--image",
        "busybox",
        "--size",
        "2",
        "--detach",
        "--address",
        socket,
        "--fifo-root",
        fifo_s,
        "--socket-dir",
        sockets_s,
    ]);
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("service pid");

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
    assert_eq!(st["image"], "busybox");
    assert_eq!(st["idle_ages_ms"].as_array().unwrap().len(), 2);
    assert!(st["memory_bytes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(v[0]["pool"]["pid"], pid);

    let warm = run_json(socket, fifo_s, sockets_s, &[], &["echo", "warm"]);
    assert_eq!(
        (warm["pooled"].as_bool(), warm["stdout"].as_str()),
        (Some(true), Some("warm\n"))
    );
    let cold = run_json(socket, fifo_s, sockets_s, &["--cold"], &["echo", "cold"]);
    assert_eq!(
        (cold["pooled"].as_bool(), cold["stdout"].as_str()),
        (Some(false), Some("cold\n"))
    );
    // Another policy is not served from this pool.
    let other = run_json(socket, fifo_s, sockets_s, &["--memory", "64M"], &["true"]);
    assert_eq!(other["pooled"].as_bool(), Some(false));
    assert_eq!(other["exit_code"], 0);

    let v = wait_ready(2);
    assert_eq!(v[0]["pool"]["status"]["taken"], 1);

    let out = stockade(&["pool", "drain", "--socket-dir", sockets_s]);
    assert!(out.status.success(), "{out:?}");
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
    assert_no_leftovers(&client, c.address(), &fifo, None, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_cap_holds_the_pool_below_its_size() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo");
    let sockets = t.path().join("pool");
    let (socket, fifo_s, sockets_s) = (
        c.address().to_str().unwrap(),
        fifo.to_str().unwrap(),
        sockets.to_str().unwrap(),
    );
    // A cap below one sandbox: the pool keeps exactly one (it must see one to know the
    // size), never the three asked for.
    let out = stockade(&[
        "pool",
        "fill",
        "--image",
        "busybox",
        "--size",
        "3",
        "--max-memory",
        "1K",
        "--detach",
        "--address",
        socket,
        "--fifo-root",
        fifo_s,
        "--socket-dir",
        sockets_s,
    ]);
    assert!(out.status.success(), "{out:?}");
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

    let warm = run_json(socket, fifo_s, sockets_s, &[], &["echo", "capped"]);
    assert_eq!(
        (warm["pooled"].as_bool(), warm["stdout"].as_str()),
        (Some(true), Some("capped\n"))
    );

    let out = stockade(&["pool", "drain", "--socket-dir", sockets_s]);
    assert!(out.status.success(), "{out:?}");
    assert_no_leftovers(&client, c.address(), &fifo, None, Duration::from_secs(20)).await;
}
