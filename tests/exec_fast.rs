//! Exec through the sandbox's init (the fast path) against a real containerd (root; with
//! `CI=true` nothing skips): the same confinement as the runtime path, field by field; the
//! same exit codes and output either way; stdin, the output cap, a timeout that kills the
//! exec'd process alone, a hang-up that kills it, sixteen execs at once; the runtime path
//! when forced or when the request is too large for the door; a sandbox whose init is gone;
//! every way a process inside the sandbox might reach the door refused; and bad requests
//! through the door itself refused without harm to the init.
//!
//! Which path ran is seen from inside: an exec started by the init has parent pid 1; one
//! started by the runtime has parent pid 0 (its parent is outside the pid namespace).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{busybox_image, require_root_or_skip, PrivateContainerd};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides};
use stockade::runner::{RunError, Runner, Stdin, StoreImages};
use stockade::sandbox::exec_fast::PATH_ENV;
use stockade::sandbox::{CreateRequest, ExecRequest, Sandbox, SandboxError, Sandboxes};

const BIN: &str = env!("CARGO_BIN_EXE_stockade");

struct Env {
    c: PrivateContainerd,
    dir: tempfile::TempDir,
    sandboxes: Sandboxes,
}

impl Env {
    async fn start() -> Env {
        let c = PrivateContainerd::start().await;
        let client = c.client("stockade").await;
        busybox_image(&client).await;
        let dir = tempfile::tempdir().unwrap();
        let runner = Runner::builder()
            .client(client)
            .images(Arc::new(StoreImages::default()))
            .fifo_root(dir.path().join("fifo"))
            .uid_claims(dir.path().join("uids"))
            .build()
            .unwrap();
        Env {
            c,
            dir,
            sandboxes: Sandboxes::new(runner),
        }
    }

    async fn create(&self) -> Sandbox {
        let policy = Policy::default()
            .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
            .unwrap();
        self.sandboxes
            .create(CreateRequest::new(policy))
            .await
            .unwrap()
    }

    /// `stockade exec FLAGS ID -- CMD…` with `STOCKADE_EXEC_PATH` set to `path` (when
    /// given): (exit code, stdout, stderr).
    fn cli(
        &self,
        path: Option<&str>,
        flags: &[&str],
        id: &str,
        cmd: &[&str],
    ) -> (i32, String, String) {
        let mut c = Command::new(BIN);
        c.arg("exec")
            .arg("--address")
            .arg(self.c.address())
            .arg("--fifo-root")
            .arg(self.dir.path().join("fifo"))
            .args(flags)
            .arg(id)
            .arg("--")
            .args(cmd)
            .env_remove(PATH_ENV);
        if let Some(p) = path {
            c.env(PATH_ENV, p);
        }
        let out: Output = c.output().expect("run stockade");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The parent pid of an exec'd `sh`: 1 on the fast path, 0 on the runtime's.
const PPID: &str = "echo PPid: $PPID";

async fn exec(sb: &Sandbox, argv: &[&str]) -> Result<stockade::sandbox::ExecResult, SandboxError> {
    sb.exec(ExecRequest::new(argv.iter().copied())).await
}

/// Waits (bounded) until `cond` holds; whether it did.
async fn eventually(limit: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cond().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_runs_under_exactly_the_runtime_paths_confinement() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = Env::start().await;
    let sb = env.create().await;
    // Everything that makes up a process's confinement, in a fixed order.
    let probe = r#"grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' /proc/self/status
        for n in /proc/self/ns/*; do echo "${n##*/} $(readlink $n)"; done
        cat /proc/self/cgroup /proc/self/limits /proc/self/oom_score_adj
        echo "apparmor: $(cat /proc/self/attr/current 2>&1)"
        env | grep -v '^PWD=' | sort
        echo "cwd: $(pwd)"
        echo "umask: $(umask)""#;
    let flags = ["-e", "EXTRA=1", "-w", "/tmp"];
    let (code, fast, err) = env.cli(
        None,
        &flags,
        sb.id(),
        &["sh", "-c", &format!("{PPID}; {probe}")],
    );
    assert_eq!(code, 0, "{err}");
    let (code, runtime, err) = env.cli(
        Some("runtime"),
        &flags,
        sb.id(),
        &["sh", "-c", &format!("{PPID}; {probe}")],
    );
    assert_eq!(code, 0, "{err}");
    let (fast_ppid, fast) = fast.split_once('\n').unwrap();
    let (runtime_ppid, runtime) = runtime.split_once('\n').unwrap();
    assert_eq!(fast_ppid, "PPid: 1", "the fast path started it");
    assert_eq!(runtime_ppid, "PPid: 0", "the runtime started it");
    for (line, want) in [
        ("NoNewPrivs:", "NoNewPrivs:\t1"),
        ("Seccomp:", "Seccomp:\t2"),
        ("CapEff:", "CapEff:\t0000000000000000"),
        ("EXTRA=", "EXTRA=1"),
        ("cwd:", "cwd: /tmp"),
    ] {
        let got = fast.lines().find(|l| l.starts_with(line));
        assert_eq!(got, Some(want), "{fast}");
    }
    assert!(!fast.contains("Uid:\t0\t"), "{fast}");
    for (f, r) in fast.lines().zip(runtime.lines()) {
        assert_eq!(f, r, "fast path vs runtime path");
    }
    assert_eq!(
        fast.lines().count(),
        runtime.lines().count(),
        "{fast}\n---\n{runtime}"
    );
    sb.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_output_are_the_same_either_way() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = Env::start().await;
    let sb = env.create().await;
    std::fs::write(sb.root_dir().join("tmp/data"), "not a program\n").unwrap();
    // (what, command, exit code)
    let cases: [(&str, &[&str], i32); 7] = [
        ("success", &["sh", "-c", "echo out; echo err >&2"], 0),
        ("exit 3", &["sh", "-c", "echo three; exit 3"], 3),
        ("not found", &["no-such-command"], 127),
        ("not found by path", &["/no/such"], 127),
        ("not executable", &["/tmp/data"], 126),
        ("killed by a signal", &["sh", "-c", "kill -9 $$"], 137),
        ("terminated", &["sh", "-c", "kill -15 $$"], 143),
    ];
    for (what, cmd, want) in cases {
        let fast = env.cli(None, &[], sb.id(), cmd);
        let runtime = env.cli(Some("runtime"), &[], sb.id(), cmd);
        assert_eq!(fast.0, want, "{what}: fast path: {}", fast.2);
        assert_eq!(runtime.0, want, "{what}: runtime path: {}", runtime.2);
        assert_eq!(fast.1, runtime.1, "{what}: stdout");
        if !(126..=127).contains(&want) {
            assert_eq!(fast.2, runtime.2, "{what}: stderr");
        }
    }
    // Through the library: the same classes of error as the runtime path.
    match exec(&sb, &["no-such-command"]).await {
        Err(SandboxError::Run(RunError::CommandNotFound { command, .. })) => {
            assert_eq!(command, "no-such-command");
        }
        other => panic!("not found: {:?}", other.map(|r| r.exit_code)),
    }
    match exec(&sb, &["/tmp/data"]).await {
        Err(SandboxError::Run(RunError::CommandNotExecutable { .. })) => {}
        other => panic!("not executable: {:?}", other.map(|r| r.exit_code)),
    }
    let r = exec(&sb, &["sh", "-c", "kill -9 $$"]).await.unwrap();
    assert_eq!((r.exit_code, r.signal), (137, Some(9)));
    let r = exec(&sb, &["sh", "-c", "echo $$; sleep 1"]).await.unwrap();
    assert!(
        r.pid > 0,
        "the host pid of an exec'd process that outlived its start"
    );
    sb.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_the_output_cap_timeout_hang_up_and_sixteen_at_once() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = Env::start().await;
    let sb = env.create().await;

    let mut req = ExecRequest::new(["sh", "-c", &format!("{PPID}; cat; echo done")]);
    req.stdin = Stdin::Bytes(b"line one\nline two\n".to_vec());
    let r = sb.exec(req).await.unwrap();
    assert_eq!(r.stdout, "PPid: 1\nline one\nline two\ndone\n");

    let mut req = ExecRequest::new(["sh", "-c", "head -c 3000000 /dev/zero; echo e >&2"]);
    req.max_output = Some(1000);
    let r = sb.exec(req).await.unwrap();
    assert_eq!(r.exit_code, 0);
    assert_eq!((r.stdout.len(), r.stdout_bytes), (1000, 3_000_000));
    assert!(r.truncated.stdout && !r.truncated.stderr);
    assert_eq!(r.stderr, "e\n");

    // The timeout kills the exec'd process alone: what it started in the background stays.
    let mut req = ExecRequest::new([
        "sh",
        "-c",
        "sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/bg; exec sleep 1001",
    ]);
    req.timeout = Some(Duration::from_secs(1));
    let r = sb.exec(req).await.unwrap();
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 124);
    let r = exec(&sb, &["sh", "-c", "kill -0 $(cat /tmp/bg) && echo alive"])
        .await
        .unwrap();
    assert_eq!(r.stdout, "alive\n");
    let r = exec(
        &sb,
        &["sh", "-c", "ps -o args | grep -c '^sleep 1001' || true"],
    )
    .await
    .unwrap();
    assert_eq!(r.stdout, "0\n", "the timed-out process is gone");

    // A caller that gives up (the future dropped) hangs up: the init kills the process.
    let long = exec(&sb, &["sh", "-c", "echo $$ > /tmp/hung; exec sleep 1002"]);
    let cut = tokio::time::timeout(Duration::from_millis(1500), long).await;
    assert!(cut.is_err(), "it was still running");
    let gone = eventually(Duration::from_secs(10), async || {
        let r = exec(
            &sb,
            &[
                "sh",
                "-c",
                "kill -0 $(cat /tmp/hung) 2>/dev/null && echo alive",
            ],
        )
        .await
        .unwrap();
        r.stdout.is_empty()
    })
    .await;
    assert!(gone, "the hung-up exec's process was killed");

    let mut all = Vec::new();
    for n in 0..16 {
        let sb = &sb;
        all.push(async move {
            let script = format!("echo out-{n}; echo err-{n} >&2; exit {n}");
            let r = exec(sb, &["sh", "-c", &script]).await.unwrap();
            assert_eq!(r.stdout, format!("out-{n}\n"));
            assert_eq!(r.stderr, format!("err-{n}\n"));
            assert_eq!(r.exit_code, n);
        });
    }
    futures_util::future::join_all(all).await;
    sb.remove(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_path_when_forced_or_too_large_and_an_init_that_is_gone() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = Env::start().await;
    let sb = env.create().await;
    let (code, out, err) = env.cli(Some("runtime"), &[], sb.id(), &["sh", "-c", PPID]);
    assert_eq!((code, out.as_str()), (0, "PPid: 0\n"), "{err}");
    let (code, _, err) = env.cli(Some("quick"), &[], sb.id(), &["true"]);
    assert_eq!(code, 125);
    assert!(err.contains("STOCKADE_EXEC_PATH: `quick`"), "{err}");
    // Larger than the door takes: the runtime runs it, with the same result.
    // (Four variables: one string may be at most 128 KiB for execve.)
    let big = "x".repeat(40 * 1024);
    let mut req = ExecRequest::new(["sh", "-c", &format!("{PPID}; echo $A$B$C$D | wc -c")]);
    req.env = ["A", "B", "C", "D"].map(|k| format!("{k}={big}")).to_vec();
    let r = sb.exec(req).await.unwrap();
    assert_eq!(
        r.stdout,
        format!("PPid: 0\n{}\n", 160 * 1024 + 1),
        "{}",
        r.stderr
    );

    // The init gone (killed from the host): one clear error, either way.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sb.task_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let stopped = eventually(Duration::from_secs(10), async || {
        matches!(
            exec(&sb, &["true"]).await,
            Err(SandboxError::NotRunning { .. })
        )
    })
    .await;
    assert!(
        stopped,
        "an exec into a sandbox whose init is gone is refused"
    );
    let (code, _, err) = env.cli(None, &[], sb.id(), &["true"]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("is not running"), "{err}");
    sb.remove(true).await.unwrap();
}

/// The probe (`tests/fixtures/door_probe.rs`) built as a static executable.
fn probe(dir: &Path) -> PathBuf {
    let out = dir.join("door_probe");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let st = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=1",
            "-C",
            "panic=abort",
        ])
        .args([
            "-C",
            "strip=symbols",
            "-C",
            "target-feature=+crt-static",
            "-o",
        ])
        .arg(&out)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/door_probe.rs"))
        .status()
        .expect("run rustc");
    assert!(st.success(), "build the probe");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_inside_the_sandbox_reaches_the_door() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    if Command::new("rustc").arg("--version").output().is_err() {
        common::skip("rustc, which builds the probe, is not on PATH");
        return;
    }
    let env = Env::start().await;
    let sb = env.create().await;
    let bin = std::fs::read(probe(env.dir.path())).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(bin.len() as u64);
    h.set_mode(0o755);
    tar.append_data(&mut h, "door_probe", &bin[..]).unwrap();
    sb.put("/tmp/", std::io::Cursor::new(tar.into_inner().unwrap()))
        .await
        .unwrap();

    // Through both paths: neither kind of exec'd process gets anywhere.
    for path in [None, Some("runtime")] {
        let (code, out, err) = env.cli(path, &[], sb.id(), &["/tmp/door_probe"]);
        assert_eq!(code, 0, "{path:?}: {err}");
        assert!(!out.contains("ALLOWED"), "{path:?}: {out}");
        for line in [
            "ptrace-attach: refused",
            "ptrace-seize: refused",
            "proc-fd-3: refused",
            "proc-fd-4: refused",
            "proc-fd-list: refused",
            "proc-mem: refused",
            "proc-environ: refused",
            "named-sockets: 0",
        ] {
            assert!(out.contains(line), "{path:?}: {line}: {out}");
        }
        if out.contains("pidfd-open: opened") {
            assert!(out.contains("pidfd-getfd-3: refused"), "{out}");
            assert!(out.contains("pidfd-getfd-4: refused"), "{out}");
        }
        // SIGTERM and SIGKILL to pid 1 from inside do not end the sandbox: a later exec
        // still runs, by the fast path.
        let r = exec(&sb, &["sh", "-c", PPID]).await.unwrap();
        assert_eq!(r.stdout, "PPid: 1\n", "{path:?}");
    }
    sb.remove(true).await.unwrap();
}

/// Sends one datagram with `fds` on `socket`.
fn send(socket: &std::os::fd::OwnedFd, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    rustix::net::sendmsg(
        socket,
        &[std::io::IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_refuses_bad_requests_and_serves_on() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
    use std::os::fd::AsFd;
    let env = Env::start().await;
    let sb = env.create().await;
    // The host's own way in (root), as the fast path takes it.
    let pidfd = pidfd_open(
        Pid::from_raw(sb.task_pid() as i32).unwrap(),
        PidfdFlags::empty(),
    )
    .unwrap();
    // The init opens its door just after it starts, which a slow machine (the VM lane under
    // emulation) can show after the create has returned: wait for it, bounded.
    let mut tries = 0;
    let door = loop {
        match pidfd_getfd(&pidfd, 3, PidfdGetfdFlags::empty()) {
            Ok(fd) => break fd,
            Err(e) if e == rustix::io::Errno::BADF && tries < 600 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("take the init's door: {e}"),
        }
    };
    let (r, w) = nix::unistd::pipe().unwrap();
    let good = b"stockade-exec/1\x001\0true\x000\0/\0".to_vec();
    // (what, request, with its three fds, answered `R`)
    let cases: Vec<(&str, Vec<u8>, bool, bool)> = vec![
        ("garbage", b"hello".to_vec(), true, true),
        (
            "another version",
            b"stockade-exec/9\x001\0true\x000\0/\0".to_vec(),
            true,
            true,
        ),
        (
            "counts that lie",
            b"stockade-exec/1\x009\0true\x000\0/\0".to_vec(),
            true,
            true,
        ),
        (
            "a relative cwd",
            b"stockade-exec/1\x001\0true\x000\0tmp\0".to_vec(),
            true,
            true,
        ),
        ("no fds", good.clone(), false, true),
        (
            "too large",
            [good.clone(), vec![b'x'; 130 * 1024]].concat(),
            true,
            true,
        ),
        ("empty", Vec::new(), false, false),
    ];
    for (what, request, with_fds, refused) in cases {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let fds = [r.as_fd(), w.as_fd(), w.as_fd()];
        send(&ours, &request, if with_fds { &fds } else { &[] });
        send(&door, b"x", &[theirs.as_fd()]);
        drop(theirs);
        // Bounded: a init that never answered would fail the test, not hang it.
        rustix::net::sockopt::set_socket_timeout(
            &ours,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        let mut buf = [0u8; 256];
        let n = rustix::io::read(&ours, &mut buf).unwrap_or(0);
        if refused {
            assert_eq!(
                buf.first().copied().filter(|_| n > 0),
                Some(b'R'),
                "{what}: {:?}",
                &buf[..n]
            );
        } else {
            assert_eq!(n, 0, "{what}: hung up without an answer");
        }
    }
    // A datagram on the door without a connection, or with something else than a socket.
    send(&door, b"x", &[]);
    send(&door, b"x", &[r.as_fd()]);
    // The init is alive and serves the next exec by the fast path.
    let r = exec(&sb, &["sh", "-c", PPID]).await.unwrap();
    assert_eq!(r.stdout, "PPid: 1\n");
    sb.remove(true).await.unwrap();
}
