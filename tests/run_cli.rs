//! `stockade run` and `stockade gc` as a user runs them, against a private containerd:
//! exit codes, one-line errors, `--json`, the run log, signals, and no leftovers once the
//! detached cleanup is done.

mod common;
mod run_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::census::wait_for_running_task;
use common::cli::{CliHost, BIN};
use common::require_root_or_skip;
use run_support::assert_no_leftovers;

/// Waiting for a run's task to start: a liveness bound, not a speed claim.
const TASK_START: Duration = Duration::from_secs(20);

/// `stockade run --address … --fifo-root … --run-log LOG EXTRA… -- CMD…`, stdin empty.
fn stockade_run(h: &CliHost, log: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    h.command("run")
        .arg("--run-log")
        .arg(log)
        .args(extra)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run stockade")
}

struct Case {
    name: &'static str,
    flags: &'static [&'static str],
    cmd: &'static [&'static str],
    want_exit: i32,
    want_stdout: &'static str,
    /// The whole of stderr, when it must be exactly one line.
    want_stderr: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_output_and_errors_as_documented() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let h = CliHost::start().await;
    let (client, fifo) = (&h.client, h.fifo());
    let log = h.dir.path().join("log/runs.jsonl");
    let cases = [
        Case {
            name: "output streams live, exit 0",
            flags: &[],
            cmd: &["echo", "hello"],
            want_exit: 0,
            want_stdout: "hello\n",
            want_stderr: Some(""),
        },
        Case {
            name: "the command's own code",
            flags: &[],
            cmd: &["sh", "-c", "exit 42"],
            want_exit: 42,
            want_stdout: "",
            want_stderr: Some(""),
        },
        Case {
            name: "127 with one line",
            flags: &[],
            cmd: &["no-such-cmd", "x"],
            want_exit: 127,
            want_stdout: "",
            want_stderr: Some("stockade: no-such-cmd: command not found\n"),
        },
        Case {
            name: "126 with one line",
            flags: &[],
            cmd: &["/etc/passwd"],
            want_exit: 126,
            want_stdout: "",
            want_stderr: Some("stockade: /etc/passwd: permission denied (cannot execute)\n"),
        },
        Case {
            name: "124 on timeout",
            flags: &["--timeout", "1s"],
            cmd: &["sleep", "10"],
            want_exit: 124,
            want_stdout: "",
            want_stderr: Some("stockade: sleep: timed out, killed\n"),
        },
        Case {
            // (The sandbox's pid 1 ignores signals it has no handler for, as any init.)
            name: "128+N when a signal ends a process",
            flags: &[],
            cmd: &["sh", "-c", "sh -c 'kill -TERM $$'; exit $?"],
            want_exit: 143,
            want_stdout: "",
            want_stderr: Some("Terminated\n"),
        },
        Case {
            name: "125 for an unknown image",
            flags: &["--image", "no-such-image"],
            cmd: &["true"],
            want_exit: 125,
            want_stdout: "",
            want_stderr: None,
        },
        Case {
            name: "125 for a missing workspace",
            flags: &["--workspace", "/nonexistent/ws"],
            cmd: &["true"],
            want_exit: 125,
            want_stdout: "",
            want_stderr: None,
        },
    ];
    for case in &cases {
        let out = stockade_run(&h, &log, case.flags, case.cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(case.want_exit),
            "{}: {stderr}",
            case.name
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            case.want_stdout,
            "{}",
            case.name
        );
        match case.want_stderr {
            Some(want) => assert_eq!(stderr, want, "{}", case.name),
            None => {
                assert_eq!(
                    stderr.lines().count(),
                    1,
                    "{}: one line: {stderr}",
                    case.name
                );
                assert!(stderr.starts_with("stockade: "), "{}", case.name);
            }
        }
        eprintln!("ok: {}", case.name);
    }
    // Detached cleanup finishes within moments of each exit.
    assert_no_leftovers(client, h.address(), &fifo, None, Duration::from_secs(10)).await;

    // Every run left one audit line, those that failed before running too (the missing
    // workspace is refused before a run exists).
    let text = std::fs::read_to_string(&log).expect("run log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let codes: Vec<u64> = lines
        .iter()
        .map(|l| l["exit_code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, [0, 42, 127, 126, 124, 143, 125], "{text}");
    for l in &lines {
        for key in [
            "time",
            "id",
            "uid",
            "image",
            "policy_hash",
            "spec_digest",
            "argv",
            "exit_code",
            "timed_out",
            "oom_killed",
            "duration_ms",
        ] {
            assert!(l.get(key).is_some(), "audit line lacks {key}: {l}");
        }
        let failed = l.get("error").is_some();
        assert_eq!(l.get("phases").is_none(), failed, "{l}");
    }
    assert!(lines[0]["image_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(lines[2]["error"]
        .as_str()
        .unwrap()
        .contains("command not found"));
    assert_eq!(lines[4]["timed_out"], true);
    assert_eq!(lines[0]["argv"], serde_json::json!(["echo", "hello"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_one_result_document() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let h = CliHost::start().await;
    let (client, fifo) = (&h.client, h.fifo());
    let log = h.dir.path().join("runs.jsonl");
    let out = stockade_run(
        &h,
        &log,
        &["--json", "--max-output", "5", "--no-run-log"],
        &["sh", "-c", "echo 0123456789; echo e >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["exit_code"], 3);
    assert_eq!(doc["stdout"], "01234");
    assert_eq!(doc["stderr"], "e\n");
    assert_eq!(doc["truncated"]["stdout"], true);
    assert_eq!(doc["truncated"]["stderr"], false);
    assert_eq!(doc["timed_out"], false);
    assert_eq!(doc["oom_killed"], false);
    assert!(doc["phases"]["create_task_ms"].as_f64().unwrap() > 0.0);
    assert!(doc["usage"]["cpu_time_ns"].as_u64().is_some());
    assert!(doc["spec_digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(doc["not_enforced"].is_array());
    // No --runc-binary: the default runc, named by its resolved path and digest.
    assert_eq!(doc["runtime"]["default"], true, "{}", doc["runtime"]);
    assert!(doc["runtime"]["path"].as_str().unwrap().ends_with("/runc"));
    assert!(doc["runtime"]["sha256"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(!log.exists(), "--no-run-log writes nothing");
    assert_no_leftovers(client, h.address(), &fifo, None, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_containerd_is_125_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["run", "--no-run-log", "--address"])
        .arg(dir.path().join("nothing.sock"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nothing.sock"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_stockade_kills_the_sandbox_and_exits_143() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let h = CliHost::start().await;
    let (client, fifo) = (&h.client, h.fifo());
    let child = h
        .command("run")
        .args(["--no-run-log", "--", "sleep", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_running_task(client, TASK_START).await;
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A liveness bound, not a speed claim: stockade that waited for the sandbox instead of
    // killing it would take the whole 600 s.
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "the sandbox was waited for, not killed: {:?}",
        t.elapsed()
    );
    assert_no_leftovers(client, h.address(), &fifo, None, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reclaims_a_run_whose_stockade_was_killed() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let h = CliHost::start().await;
    let (client, fifo) = (&h.client, h.fifo());
    let mut child = h
        .command("run")
        .args(["--no-run-log", "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_for_running_task(client, TASK_START).await;
    // SIGKILL: stockade gets no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let still =
        run_support::leftovers(client, h.address(), &fifo, Some(std::slice::from_ref(&id))).await;
    assert_eq!(
        still.tasks,
        std::slice::from_ref(&id),
        "the orphan is still there before gc"
    );

    let out = h.command("gc").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (Other runs' empty cgroups on this host may be reported too.)
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == format!("removed {id}")),
        "{stdout}"
    );
    assert_no_leftovers(client, h.address(), &fifo, Some(&[id]), Duration::ZERO).await;
}
