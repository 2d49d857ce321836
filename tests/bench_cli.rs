//! `stockade bench` as a user runs it, against a private containerd: every contender asked
//! for is measured, and the benchmark leaves nothing behind — no sandbox, container,
//! snapshot (the runc contender's view snapshots included), mount or bundle directory, and
//! the HTTP API's server it started has exited, its socket removed.

mod common;
mod run_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cli::{CliHost, BIN};
use common::require_root_or_skip;
use run_support::assert_no_leftovers;
use stockade::runner::DEFAULT_SNAPSHOTTER;

/// `stockade bench --json` at concurrency 1 with one round of the `true` workload, for
/// `contenders` against `h`'s containerd, bundles under `work` and this build's binary as
/// the CLI contenders'; stdin empty, to add more to (`ITERATIONS` measured runs after
/// `WARMUP` unmeasured ones).
fn bench(h: &CliHost, work: &Path, iterations: &str, warmup: &str, contenders: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["bench", "--iterations", iterations, "--warmup", warmup])
        .args([
            "--rounds",
            "1",
            "--concurrency",
            "1",
            "--workloads",
            "true",
            "--json",
        ])
        .args(["--contenders", contenders])
        .arg("--address")
        .arg(h.address())
        .arg("--work-dir")
        .arg(work)
        .arg("--stockade-bin")
        .arg(BIN)
        .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contender_is_measured_and_nothing_is_left() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let h = CliHost::start().await;
    let (client, dir) = (&h.client, &h.dir);
    let work = dir.path().join("work");
    let contenders = [
        "stockade-lib",
        "stockade-exec",
        "stockade-exec-cli",
        "stockade-warm",
        "runc",
        "stockade-session-cli",
        "stockade-http",
    ];
    let out = bench(&h, &work, "3", "1", &contenders.join(","))
        .output()
        .expect("run stockade bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stockade bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {stderr}"));
    for name in contenders {
        let cell = report["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .find(|c| c["contender"] == name)
            .unwrap_or_else(|| panic!("no cell for {name}: {report}"));
        assert_eq!(cell["failures"], 0, "{name} failed: {cell}");
        assert_eq!(
            cell["samples_ms"].as_array().map(Vec::len),
            Some(3),
            "{name}: every iteration measured: {cell}"
        );
        let ms = |k: &str| cell["cpu_per_run"][k].as_f64().unwrap_or(-1.0);
        // The HTTP contender's work is done in the server, a daemon the benchmark started
        // (counted with containerd's); every other's in the benchmark or its children.
        let cpu = if name == "stockade-http" {
            ms("daemons_ms")
        } else {
            ms("children_ms") + ms("self_ms")
        };
        assert!(cpu > 0.0, "{name}: CPU per run counted: {cell}");
    }

    // Sandboxes and runs: the detached cleanups may still be finishing.
    let no_fifo_root = dir.path().join("no-fifo-root");
    assert_no_leftovers(
        client,
        h.address(),
        &no_fifo_root,
        None,
        Duration::from_secs(120),
    )
    .await;
    let views: Vec<String> = common::census::snapshots(client, DEFAULT_SNAPSHOTTER)
        .await
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.starts_with("bench-view-"))
        .collect();
    assert!(views.is_empty(), "view snapshots left: {views:?}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let work_s = work.display().to_string();
    let mounts: Vec<&str> = mountinfo.lines().filter(|l| l.contains(&work_s)).collect();
    assert!(
        mounts.is_empty(),
        "mounts left under the work dir: {mounts:#?}"
    );
    let bundles: Vec<_> = std::fs::read_dir(&work)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("runc-bench-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(bundles.is_empty(), "bundle directories left: {bundles:?}");
    // The server stopped on SIGTERM removes its socket as it exits.
    assert!(
        !work.join("http.sock").exists(),
        "the HTTP API's server is still there"
    );
}

/// A contender whose program is not installed is skipped with the reason in the notes,
/// and the others are measured as usual: here `docker-run` and `podman-run` with `PATH`
/// cut down so that neither `dockerd` nor `podman` is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_engine_is_skipped_saying_why() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let h = CliHost::start().await;
    let dir = &h.dir;
    // Every program on PATH stays reachable but dockerd, docker and podman.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name();
            let hidden = ["dockerd", "docker", "podman"].iter().any(|h| name == *h);
            if !hidden && !bin.join(&name).exists() {
                let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
            }
        }
    }
    let out = bench(
        &h,
        &dir.path().join("work"),
        "2",
        "0",
        "stockade-lib,docker-run,podman-run",
    )
    .env("PATH", &bin)
    .output()
    .expect("run stockade bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stockade bench failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {stderr}"));
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    for (name, why) in [("docker-run", "dockerd"), ("podman-run", "podman")] {
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with(&format!("{name} skipped: ")) && n.contains(why)),
            "{name} skipped naming {why}: {notes:#?}"
        );
        assert!(
            !report["cells"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["contender"] == name),
            "{name} has no cell: {report}"
        );
    }
    let lib = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["contender"] == "stockade-lib")
        .expect("stockade-lib measured");
    assert_eq!(lib["failures"], 0, "{lib}");
    assert!(
        lib["cpu_per_run"]["self_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "an in-process run costs this process CPU: {lib}"
    );
}
