//! `stockade run` as a thin client of a running `stockade serve`, against a private
//! containerd: a run the server can make exactly as the CLI would is made there (the
//! server's log says so), with the same exit code, stdout and stderr as the same run
//! standalone; the client's signals cancel it; a client killed outright leaves nothing
//! behind; a run the server would make differently (another FIFO root) stays standalone;
//! the server's memory, threads and descriptors stay flat across many served runs, and a
//! client killed behind a full pipe leaves no server thread blocked on it.

mod common;
mod run_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{output, CliHost, Out};
use common::{kill_server, require_root_or_skip, terminate_server};
use run_support::assert_no_leftovers;

/// A server on the host's containerd, logging at debug level to a file.
struct Served {
    host: CliHost,
    server: Child,
    removal: PathBuf,
    log: PathBuf,
}

impl Served {
    async fn start() -> Served {
        Served::start_with(&[]).await
    }

    async fn start_with(flags: &[&str]) -> Served {
        let host = CliHost::start().await;
        let removal = host.dir.path().join("removal");
        let log = host.dir.path().join("serve.log");
        let server = Command::new(common::cli::BIN)
            .arg("serve")
            .arg("--docker-socket")
            .arg(host.dir.path().join("docker.sock"))
            .arg("--address")
            .arg(host.address())
            .arg("--fifo-root")
            .arg(host.fifo())
            .arg("--removal-dir")
            .arg(&removal)
            .args(flags)
            .env("STOCKADE_LOG", "stockade=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start stockade serve");
        let socket = removal.join(format!("{}.sock", server.id()));
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no removal socket: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Served {
            host,
            server,
            removal,
            log,
        }
    }

    /// Waits (at most 30 s) until nothing of any run under `fifo_root` is left.
    async fn assert_clean(&self, fifo_root: &Path) {
        assert_no_leftovers(
            &self.host.client,
            self.host.address(),
            fifo_root,
            None,
            Duration::from_secs(30),
        )
        .await;
    }

    /// How many runs the server has taken so far.
    fn served(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("serving a run")
            .count()
    }

    /// `stockade run --removal-dir … --no-run-log ARGS…`, to add to.
    fn run(&self, args: &[&str]) -> Command {
        let mut c = self.host.command("run");
        c.arg("--removal-dir")
            .arg(&self.removal)
            .arg("--no-run-log")
            .args(args)
            .env_remove("STOCKADE_LOG")
            .env_remove("STOCKADE_STANDALONE");
        c
    }

    /// Runs `args` served and standalone with `stdin`; both outcomes, the served one
    /// proven served (unless `reaches` is false: the client refuses it before asking) and
    /// the standalone one proven not.
    fn both(&self, args: &[&str], stdin: &[u8], cwd: &Path, reaches: bool) -> (Out, Out) {
        let before = self.served();
        let served = output(self.run(args).current_dir(cwd), stdin);
        let before = before + usize::from(reaches);
        assert_eq!(self.served(), before, "{args:?}: served {reaches} expected");
        let mut standalone_args = vec!["--standalone"];
        standalone_args.extend_from_slice(args);
        let alone = output(self.run(&standalone_args).current_dir(cwd), stdin);
        assert_eq!(self.served(), before, "--standalone was served");
        (served, alone)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        kill_server(&mut self.server, self.host.dir.path());
    }
}

/// The fields of a `--json` result that do not name the run itself (its id, times, usage
/// and UID differ between any two runs).
fn comparable(json: &[u8]) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(json).expect("a JSON result");
    let keep = [
        "exit_code",
        "signal",
        "timed_out",
        "oom_killed",
        "stdout",
        "stderr",
        "truncated",
        "stdout_bytes",
        "stderr_bytes",
        "image",
        "image_digest",
        "policy_hash",
        "runtime",
        "not_enforced",
        "warnings",
    ];
    serde_json::Value::Object(
        keep.iter()
            .map(|k| (k.to_string(), v[*k].clone()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_run_gives_what_the_same_run_gives_standalone() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let s = Served::start().await;
    let cwd = s.host.dir.path().join("cwd");
    std::fs::create_dir_all(cwd.join("ws")).unwrap();
    std::fs::write(
        cwd.join("policy.toml"),
        "[limits]\nmemory = \"64Mi\"\n[process]\nenv = [\"FROM_POLICY=yes\"]\n",
    )
    .unwrap();
    // (what, arguments, stdin, whether the client gets as far as asking the server: a
    // flag or policy the client finds wrong ends the run before)
    let table: &[(&str, &[&str], &[u8], bool)] = &[
        (
            "exit code and both streams",
            &["--", "sh", "-c", "echo out; echo err >&2; exit 3"],
            b"",
            true,
        ),
        (
            "stdin with -i",
            &["-i", "--", "sh", "-c", "cat; exit 0"],
            b"fed\nthrough\n",
            true,
        ),
        ("no -i: no stdin", &["--", "cat"], b"never read", true),
        (
            "a command that does not exist",
            &["--", "no-such-command"],
            b"",
            true,
        ),
        (
            "a bad flag value",
            &["--memory", "12x", "--", "true"],
            b"",
            false,
        ),
        (
            "a relative policy file, read in the client's directory",
            &["--policy", "policy.toml", "--", "sh", "-c", "echo $FROM_POLICY; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"],
            b"",
            true,
        ),
        (
            "a relative workspace, resolved in the client's directory",
            &["--workspace", "ws", "--workspace-owner", "sandbox", "--", "sh", "-c", "echo hi > /workspace/f && cat /workspace/f"],
            b"",
            true,
        ),
        (
            "a missing workspace",
            &["--workspace", "nowhere", "--", "true"],
            b"",
            false,
        ),
        (
            "the output cap",
            &["--max-output", "10", "--", "sh", "-c", "echo 0123456789abcdef"],
            b"",
            true,
        ),
        (
            "the timeout",
            &["--timeout", "1s", "--", "sleep", "30"],
            b"",
            true,
        ),
        (
            "the image's entrypoint replaced",
            &["--entrypoint", "echo", "--", "via", "entrypoint"],
            b"",
            true,
        ),
    ];
    for (what, args, stdin, reaches) in table {
        let (served, alone) = s.both(args, stdin, &cwd, *reaches);
        assert_eq!(
            served.code, alone.code,
            "{what}: exit code\n{served:?}\n{alone:?}"
        );
        assert_eq!(served.text(), alone.text(), "{what}: stdout");
        assert_eq!(served.stderr, alone.stderr, "{what}: stderr");
    }
    // The workspace file was written through the served run too (both runs wrote "hi").
    assert_eq!(std::fs::read_to_string(cwd.join("ws/f")).unwrap(), "hi\n");
    // The JSON result, apart from what names the run.
    let (served, alone) = s.both(
        &["--json", "--", "sh", "-c", "echo j; exit 4"],
        b"",
        &cwd,
        true,
    );
    assert_eq!(served.code, 4, "{served:?}");
    assert_eq!(comparable(&served.stdout), comparable(&alone.stdout));
    s.assert_clean(&s.host.fifo()).await;
    let mut s = s;
    terminate_server(&mut s.server, Duration::from_secs(30));
}

/// Starts `stockade run ARGS…` served, in the background, once the server has taken it and
/// its task runs.
async fn started(s: &Served, args: &[&str]) -> Child {
    started_with(s, args, Stdio::piped(), Stdio::piped()).await
}

/// [`started`], with the client's stdout and stderr given.
async fn started_with(s: &Served, args: &[&str], stdout: Stdio, stderr: Stdio) -> Child {
    let before = s.served();
    let child = s
        .run(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start stockade run");
    let start = Instant::now();
    while s.served() == before {
        assert!(start.elapsed() < Duration::from_secs(30), "never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::census::wait_for_running_task(&s.host.client, Duration::from_secs(30)).await;
    child
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_to_the_client_cancel_the_served_run_and_a_killed_client_leaves_nothing() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let mut s = Served::start().await;
    // SIGTERM, SIGINT and SIGHUP end a run with 128+N, as they end a standalone one.
    use nix::sys::signal::Signal;
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        let child = started(&s, &["--cold", "--", "sleep", "60"]).await;
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(128 + sig as i32),
            "{sig}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.assert_clean(&s.host.fifo()).await;
    }
    // A client killed outright cannot say anything: the server sees it go and ends the run.
    let mut child = started(&s, &["--cold", "--", "sleep", "60"]).await;
    signal(&child, Signal::SIGKILL);
    child.wait().unwrap();
    s.assert_clean(&s.host.fifo()).await;
    terminate_server(&mut s.server, Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_server_would_make_elsewhere_stays_standalone() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let mut s = Served::start().await;
    let other = s.host.dir.path().join("fifo-other");
    let before = s.served();
    let mut elsewhere = Command::new(common::cli::BIN);
    elsewhere
        .arg("run")
        .arg("--address")
        .arg(s.host.address())
        .arg("--fifo-root")
        .arg(&other)
        .arg("--removal-dir")
        .arg(&s.removal)
        .args(["--no-run-log", "--", "echo", "alone"])
        .env_remove("STOCKADE_LOG")
        .env_remove("STOCKADE_STANDALONE");
    let out = output(&mut elsewhere, b"");
    assert_eq!((out.code, out.text().as_str()), (0, "alone\n"), "{out:?}");
    assert_eq!(s.served(), before, "another FIFO root was served");
    // Asking for a log (`-v`) keeps the run standalone too: the log lines are its own.
    let out = output(
        s.run(&["--", "echo", "logged"]).env("STOCKADE_LOG", "info"),
        b"",
    );
    assert_eq!((out.code, out.text().as_str()), (0, "logged\n"), "{out:?}");
    assert_eq!(s.served(), before, "a run with a log was served");
    // The same run without either is served.
    let out = output(&mut s.run(&["--", "echo", "served"]), b"");
    assert_eq!((out.code, out.text().as_str()), (0, "served\n"), "{out:?}");
    assert_eq!(s.served(), before + 1);
    s.assert_clean(&other).await;
    terminate_server(&mut s.server, Duration::from_secs(30));
}

/// With `--pool-size`, the server keeps a pool for each policy it has been asked to run
/// under: the first run is cold, later ones take a prepared sandbox and give what a
/// standalone run gives; stopping the server removes the pool's sandboxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_pools_serves_later_runs_from_a_pool_of_its_own() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let mut s = Served::start_with(&["--pool-size", "2"]).await;
    let cwd = s.host.dir.path().to_path_buf();
    let args = ["--json", "--", "sh", "-c", "echo pooled $$; exit 5"];
    let pooled = |out: &Out| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["pooled"].as_bool().expect("pooled")
    };
    let first = output(&mut s.run(&args), b"");
    assert_eq!(first.code, 5, "{first:?}");
    assert!(
        !pooled(&first),
        "the first run has no pool to take from yet"
    );
    // The pool fills in the background: ask until a run is pooled (bounded).
    let mut got = None;
    for _ in 0..100 {
        let out = output(&mut s.run(&args), b"");
        assert_eq!(out.code, 5, "{out:?}");
        if pooled(&out) {
            got = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = got.expect("no run was pooled");
    // A pooled run's command is pid 1, as a cold one's.
    let v: serde_json::Value = serde_json::from_slice(&served.stdout).unwrap();
    assert_eq!(v["stdout"], "pooled 1\n");
    let (_, alone) = s.both(&args, b"", &cwd, true);
    assert_eq!(comparable(&alone.stdout)["stdout"], v["stdout"]);

    // `stockade pool ls` shows the server's pool beside the pool services' (none here).
    let services = s.host.dir.path().join("no-pool-services");
    let ls = |json: bool| {
        let mut c = Command::new(common::cli::BIN);
        c.args(["pool", "ls", "--socket-dir"])
            .arg(&services)
            .arg("--removal-dir")
            .arg(&s.removal);
        if json {
            c.arg("--json");
        }
        output(&mut c, b"")
    };
    let listed = ls(true);
    assert_eq!(listed.code, 0, "{listed:?}");
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let entries = v.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{v}");
    let server = &entries[0]["server"];
    assert_eq!(server["pid"], s.server.id(), "{v}");
    let pools = server["pools"].as_array().expect("pools");
    assert_eq!(pools.len(), 1, "one policy was run: {v}");
    assert_eq!(pools[0]["size"], 2, "{v}");
    assert!(pools[0]["taken"].as_u64().unwrap() >= 1, "{v}");
    let text = String::from_utf8(ls(false).stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with(&s.server.id().to_string()))
        .unwrap_or_else(|| panic!("no row for the server:\n{text}"));
    assert!(row.ends_with("(stockade serve)"), "{row}");

    terminate_server(&mut s.server, Duration::from_secs(60));
    s.assert_clean(&s.host.fifo()).await;
}

/// What a long-lived process holds: resident memory (KiB), threads, open descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    rss_kib: u64,
    threads: u64,
    fds: usize,
}

fn held(pid: u32) -> Held {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Held {
        rss_kib: stockade::procfs::parse_rss(&status).expect("a VmRSS line") / 1024,
        threads: field("Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
    }
}

/// What the server holds once its per-run threads and descriptors are gone: sampled until
/// two samples 200 ms apart agree on threads and descriptors (at most 30 s, a liveness
/// bound: tokio's idle blocking threads linger for 10 s).
async fn settled(pid: u32) -> Held {
    let start = Instant::now();
    let mut last = held(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = held(pid);
        if (now.threads, now.fds) == (last.threads, last.fds) || start.elapsed().as_secs() > 30 {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_s_memory_threads_and_descriptors_stay_flat_across_served_runs() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let s = Served::start().await;
    let pid = s.server.id();
    // Each kind of served run: output, stdin (a reader thread per run), a failure, a
    // refusal by the runner (a missing command), the output cap.
    let kinds: [(&[&str], &[u8]); 5] = [
        (&["--", "sh", "-c", "echo out; echo err >&2"], b""),
        (&["-i", "--", "sh", "-c", "cat; exit 3"], b"some input\n"),
        (&["--", "sh", "-c", "exit 7"], b""),
        (&["--", "/no/such/command"], b""),
        (
            &[
                "--max-output",
                "1K",
                "--",
                "sh",
                "-c",
                "yes | head -c 100000",
            ],
            b"",
        ),
    ];
    let round = |n: usize| {
        for i in 0..n {
            let (args, stdin) = kinds[i % kinds.len()];
            let out = output(&mut s.run(args), stdin);
            assert!(out.code >= 0, "{args:?}: {out:?}");
        }
    };
    // Warm-up: allocator arenas, connection pools and caches reach their size.
    round(25);
    s.assert_clean(&s.host.fifo()).await;
    let before = settled(pid).await;
    let served_before = s.served();
    round(150);
    assert_eq!(s.served(), served_before + 150, "every run was served");
    s.assert_clean(&s.host.fifo()).await;
    let after = settled(pid).await;
    eprintln!("server after 25 runs: {before:?}; after 150 more: {after:?}");
    // A descriptor or thread kept per run shows as 150 more; a few more are tokio's idle
    // blocking threads (kept up to 10 s) and a removal's descriptors in flight.
    assert!(
        after.fds <= before.fds + 4,
        "descriptors leaked: {before:?} → {after:?}"
    );
    assert!(
        after.threads <= before.threads + 4,
        "threads leaked: {before:?} → {after:?}"
    );
    // 150 runs: a leak of 40 KiB per run (a buffer, a run's record) shows as 6 MiB.
    assert!(
        after.rss_kib <= before.rss_kib + 6 * 1024,
        "memory grew: {before:?} → {after:?}"
    );
}

/// Longer than tokio keeps an idle blocking thread (10 s).
const IDLE_THREADS_GONE: Duration = Duration::from_secs(11);

/// A client killed while its stdout is a full pipe that nobody reads: the server still ends
/// the run and removes it, and keeps no thread blocked writing to that pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_behind_a_full_pipe_holds_nothing_of_the_server() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let mut s = Served::start().await;
    let warm = output(&mut s.run(&["--", "true"]), b"");
    assert_eq!(warm.code, 0, "{warm:?}");
    // Past tokio's 10 s for idle blocking threads, so only a blocked one can remain.
    tokio::time::sleep(IDLE_THREADS_GONE).await;
    let before = settled(s.server.id()).await;

    let (reader, writer) = nix::unistd::pipe().unwrap();
    let mut client = started_with(
        &s,
        &[
            "--cold",
            "--",
            "sh",
            "-c",
            "yes stalled | head -c 1000000; sleep 60",
        ],
        Stdio::from(writer),
        Stdio::null(),
    )
    .await;
    // The pipe (64 KiB) fills long before the command has written its megabyte.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&client, nix::sys::signal::Signal::SIGKILL);
    client.wait().unwrap();

    // The reader is still open and never reads: nothing may wait for it.
    s.assert_clean(&s.host.fifo()).await;
    tokio::time::sleep(IDLE_THREADS_GONE).await;
    let after = settled(s.server.id()).await;
    assert!(
        after.threads <= before.threads,
        "a server thread stays blocked on the client's pipe: {before:?} → {after:?}"
    );
    assert!(
        after.fds <= before.fds,
        "the server still holds the client's pipe: {before:?} → {after:?}"
    );
    drop(reader);
    terminate_server(&mut s.server, Duration::from_secs(30));
}
