//! Long-lived sandboxes against a real containerd (root; with `CI=true` nothing skips):
//! state kept across execs from separate CLI invocations, execs under exactly pid 1's
//! confinement, bad input as one line and exit 125, idle and lifetime expiry removing
//! everything, and many sessions driven at once leaving nothing behind.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cli::{assert_one_line_125, CliHost, Out, BIN};
use common::require_root_or_skip;
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides};
use stockade::runner::{Runner, StoreImages};
use stockade::sandbox::{CreateRequest, ExecRequest, Sandboxes};

/// What these tests ask of the CLI beyond [`CliHost::stockade`].
trait Sessions {
    /// `stockade create ARGS…`, which must succeed; the id it printed.
    fn create(&self, args: &[&str]) -> String;
    /// `stockade exec FLAGS… SANDBOX -- CMD…`.
    fn exec(&self, flags: &[&str], sandbox: &str, cmd: &[&str]) -> Out;
    /// The run directories (`stk-*`) under the FIFO root.
    fn run_dirs(&self) -> Vec<String>;
}

impl Sessions for CliHost {
    fn create(&self, args: &[&str]) -> String {
        let out = self.stockade("create", args, b"");
        assert_eq!(out.code, 0, "create: {}", out.stderr);
        let id = out.text().trim().to_string();
        assert!(id.starts_with("stk-"), "{id}");
        id
    }

    fn exec(&self, flags: &[&str], sandbox: &str, cmd: &[&str]) -> Out {
        let mut args: Vec<&str> = flags.to_vec();
        args.push(sandbox);
        args.push("--");
        args.extend(cmd);
        self.stockade("exec", &args, b"")
    }

    fn run_dirs(&self) -> Vec<String> {
        entries(&self.fifo())
            .into_iter()
            .filter(|e| e.starts_with("stk-"))
            .collect()
    }
}

/// (exit code, stdout, stderr) of `out`, as text.
fn parts(out: Out) -> (i32, String, String) {
    let stdout = out.text();
    (out.code, stdout, out.stderr)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits (bounded) until `cond` holds; whether it did.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_across_execs_from_separate_invocations() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = CliHost::start().await;
    let id = env.create(&["--name", "keep", "--memory", "128M"]);
    let (code, _, err) = parts(env.exec(
        &[],
        "keep",
        &[
            "sh",
            "-c",
            "echo kept > /tmp/f; sleep 1000 >/dev/null 2>&1 &",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    // A later invocation sees the file and the background process (by id this time).
    let (code, out, err) = parts(env.exec(&[], &id, &["sh", "-c", "cat /tmp/f; pidof sleep"]));
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("kept"));
    assert!(
        lines
            .next()
            .is_some_and(|p| p.trim().parse::<u32>().is_ok()),
        "the background sleep lives: {out:?}"
    );
    // Exit codes as for run.
    assert_eq!(env.exec(&[], &id, &["sh", "-c", "exit 7"]).code, 7);
    assert_eq!(env.exec(&[], &id, &["no-such-cmd"]).code, 127);
    assert_eq!(
        env.exec(&["--timeout", "1s"], &id, &["sleep", "30"]).code,
        124
    );
    let (code, out, _) = parts(env.exec(
        &["--json", "-e", "A=b", "-w", "/tmp"],
        &id,
        &["sh", "-c", "echo $A; pwd"],
    ));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["stdout"], "b\n/tmp\n");
    assert_eq!(doc["exit_code"], 0);

    // -i: stdin reaches the command, and its end is seen (CloseIO of the exec process).
    let mut child = Command::new(BIN)
        .arg("exec")
        .arg("--address")
        .arg(env.address())
        .arg("--fifo-root")
        .arg(env.fifo())
        .args([
            "-i",
            "--timeout",
            "20s",
            "keep",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo end",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"piped\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "PIPED\nend\n");

    let inspect = env.stockade("inspect", &["keep"], b"");
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["state"], "running");
    assert_eq!(info["limits"]["memory_bytes"], 128 * 1024 * 1024);
    let ls = env.stockade("ls", &[], b"");
    assert!(ls.text().contains(&id), "{}", ls.text());

    let rm = env.stockade("rm", &["-f", "keep"], b"");
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert_eq!(env.run_dirs(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_runs_under_exactly_the_confinement_of_pid_1() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = CliHost::start().await;
    let id = env.create(&[]);
    // The same report of the exec'd shell and of pid 1 (the init), separated by `---`. The
    // init is non-dumpable, so its namespaces are read from the host below.
    let script = r#"for p in self 1; do
        grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/$p/status
        cat /proc/$p/cgroup
        echo ---
    done
    for n in /proc/self/ns/*; do echo "${n##*/} $(readlink $n)"; done"#;
    let (code, out, err) = parts(env.exec(&[], &id, &["sh", "-c", script]));
    assert_eq!(code, 0, "{err}");
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{out}");
    let (exec, init, exec_ns) = (parts[0], parts[1], parts[2]);
    assert!(init.contains("NoNewPrivs:\t1"), "{init}");
    assert!(init.contains("Seccomp:\t2"), "{init}");
    assert!(init.contains("CapEff:\t0000000000000000"), "{init}");
    assert!(init.contains("CapBnd:\t0000000000000000"), "{init}");
    assert!(!init.contains("Uid:\t0\t"), "{init}");
    assert_eq!(exec, init, "the exec'd process differs from pid 1");
    let inspect = env.stockade("inspect", &[&id], b"");
    assert_eq!(inspect.code, 0, "{}", inspect.stderr);
    let info: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let pid = info["pid"].as_u64().expect("the init's pid");
    let mut init_ns = String::new();
    let mut names: Vec<_> = entries(Path::new(&format!("/proc/{pid}/ns")));
    names.sort();
    for n in names {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
        init_ns.push_str(&format!("{n} {}\n", link.display()));
    }
    assert!(
        init_ns.contains(" mnt:[") && init_ns.contains(" pid:[") && init_ns.contains(" net:["),
        "{init_ns}"
    );
    assert_eq!(
        exec_ns, init_ns,
        "the exec'd process's namespaces differ from pid 1's"
    );
    let rm = env.stockade("rm", &["-f", &id], b"");
    assert_eq!(rm.code, 0, "{}", rm.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_125() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = CliHost::start().await;
    let unknown = env.exec(&[], "nobody-has-this", &["true"]);
    assert_one_line_125("unknown name", &unknown, "no such sandbox: nobody-has-this");

    // A lifetime gives it a keeper, so nothing else may take the stopped sandbox away.
    let id = env.create(&["--name", "taken", "--lifetime", "10m"]);
    let taken = env.stockade("create", &["--name", "taken"], b"");
    assert_one_line_125("name taken", &taken, "the name `taken` is taken");

    let root = env.exec(&["-u", "0"], "taken", &["id"]);
    assert_one_line_125("exec as root", &root, "refused");

    let stop = env.stockade("stop", &["--time", "2s", "taken"], b"");
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let stopped = env.exec(&[], "taken", &["true"]);
    assert_one_line_125("exec into a stopped sandbox", &stopped, "is not running");

    let rm = env.stockade("rm", &["taken"], b"");
    assert_eq!(rm.code, 0, "stopped: no force needed: {}", rm.stderr);
    assert!(!env.fifo().join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_and_lifetime_remove_everything() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = CliHost::start().await;
    let idle = env.create(&["--idle-timeout", "2s"]);
    let life = env.create(&["--lifetime", "4s"]);
    let t = Instant::now();
    // Activity keeps the idle one, not the one with a lifetime.
    for _ in 0..3 {
        assert_eq!(env.exec(&[], &idle, &["true"]).code, 0);
        assert_eq!(env.exec(&[], &life, &["true"]).code, 0);
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(env.fifo().join(&idle).exists(), "active, so not idle");
    assert!(
        eventually(Duration::from_secs(8), || !env.fifo().join(&life).exists()),
        "lifetime"
    );
    assert!(t.elapsed() < Duration::from_secs(12));
    assert!(
        eventually(Duration::from_secs(8), || !env.fifo().join(&idle).exists()),
        "idle"
    );
    let client = env.containerd.client("stockade").await;
    let left: Vec<String> = common::census::containers(&client)
        .await
        .into_iter()
        .filter(|i| i == &idle || i == &life)
        .collect();
    assert_eq!(left, Vec::<String>::new(), "containers left");
    let inspect = env.stockade("inspect", &[&idle], b"");
    assert_eq!(inspect.code, 125);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_sessions_with_twenty_execs_each_at_once_leave_nothing() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = CliHost::start().await;
    let client = env.containerd.client("stockade").await;
    let uids = env.dir.path().join("uids");
    let runner = Runner::builder()
        .client(client.clone())
        .images(Arc::new(StoreImages::default()))
        .fifo_root(env.fifo())
        .uid_claims(&uids)
        .build()
        .unwrap();
    let sandboxes = Sandboxes::new(runner);
    let policy = Policy::default()
        .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
        .unwrap();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..16 {
        let (sandboxes, policy) = (sandboxes.clone(), policy.clone());
        tasks.spawn(async move {
            let sb = sandboxes.create(CreateRequest::new(policy)).await?;
            for i in 0..20 {
                let r = sb
                    .exec(ExecRequest::new([
                        "sh",
                        "-c",
                        &format!("echo {n}.{i} >> /tmp/log; wc -l < /tmp/log"),
                    ]))
                    .await?;
                assert_eq!(
                    (r.exit_code, r.stdout.trim()),
                    (0, (i + 1).to_string().as_str())
                );
            }
            let id = sb.id().to_string();
            sb.remove(true).await?;
            Ok::<_, stockade::sandbox::SandboxError>(id)
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        ids.push(r.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 16);
    eprintln!("16 sessions x 20 execs: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(300));

    assert_eq!(env.run_dirs(), Vec::<String>::new(), "run directories");
    assert_eq!(entries(&uids), Vec::<String>::new(), "UID claims");
    let containers = client
        .containers()
        .list(
            client.request(stockade::containerd::services::v1::ListContainersRequest {
                filters: vec![],
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(
        containers.iter().all(|c| !ids.contains(&c.id)),
        "containers"
    );
    let tasks = client
        .tasks()
        .list(
            client.request(stockade::containerd::services::v1::ListTasksRequest {
                filter: String::new(),
            }),
        )
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert!(tasks.iter().all(|t| !ids.contains(&t.id)), "tasks");
    use stockade::containerd::Containerd;
    let snaps = client.list_snapshots("overlayfs", vec![]).await.unwrap();
    assert!(snaps.iter().all(|s| !ids.contains(&s.name)), "snapshots");
    for id in &ids {
        for ctl in ["memory", "pids", "cpu", "unified"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join("stockade")
                .join(id);
            assert!(!p.exists(), "cgroup {}", p.display());
        }
    }
}

/// Runs `argv[2:]` with stdin, stdout and stderr on a new pty of `argv[1]` = "COLSxROWS",
/// and prints, one per line: the pty's local flags before, what it received (hex), and its
/// local flags after.
const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, subprocess, sys, termios
cols, rows = (int(x) for x in sys.argv[1].split("x"))
m, s = pty.openpty()
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
before = termios.tcgetattr(s)[3]
p = subprocess.Popen(sys.argv[2:], stdin=s, stdout=s, stderr=s, start_new_session=True)
got = b""
while True:
    r, _, _ = select.select([m], [], [], 0.5)
    if r:
        try:
            d = os.read(m, 4096)
        except OSError:
            break
        if not d:
            break
        got += d
    elif p.poll() is not None:
        break
p.wait()
print(before)
print(got.hex())
print(termios.tcgetattr(s)[3])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_terminal_gets_the_window_size_and_restores_the_local_terminal() {
    if !common::require_or_skip(
        "runs sandboxes through containerd under a pty",
        &["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/python3"],
    ) {
        return;
    }
    let env = CliHost::start().await;
    let plain = env.create(&[]);
    let refused = env.exec(&["-t"], &plain, &["true"]);
    assert_one_line_125(
        "exec -t without terminal devices",
        &refused,
        "create it with `-t`",
    );
    let id = env.create(&["-t"]);
    let out = Command::new("timeout")
        .args([
            "60", "python3", "-c", PTY_DRIVER, "101x33", BIN, "exec", "-t",
        ])
        .arg("--address")
        .arg(env.address())
        .arg("--fifo-root")
        .arg(env.fifo())
        .args([&id, "--", "sh", "-c", "stty size; tty; echo done"])
        .output()
        .expect("run the pty driver");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout} {}", text(&out.stderr));
    let got = String::from_utf8_lossy(&hex_decode(lines[1])).into_owned();
    assert!(
        got.contains("33 101"),
        "the size reached the sandbox's terminal: {got:?}"
    );
    assert!(got.contains("/dev/pts/"), "a terminal of its own: {got:?}");
    assert_eq!(
        lines[0], lines[2],
        "the local terminal's modes are restored"
    );
    let rm = env.stockade("rm", &["-f", &id, &plain], b"");
    assert_eq!(rm.code, 0);
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}
