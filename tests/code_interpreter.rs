//! The stateful code interpreter (`POST /v1/sandboxes/{id}/code`) over a private
//! containerd with the python image built in it (root, mmdebstrap and Debian's mirror; with
//! `CI=true` nothing skips): globals survive between HTTP requests; output, results and
//! exceptions come back; a timeout interrupts the cell, and an interpreter that does not
//! come back (or exits) is replaced and says so; the interpreter runs under the sandbox's
//! confinement; output is capped; cells of one sandbox take turns while other sandboxes'
//! run; `stockade code` reaches the same interpreter; an image without python3 is one clear
//! error; nothing is left behind.

mod common;
mod http_support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_image, require_or_skip, PrivateContainerd};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_stockade");
/// Liveness guard for one request (never a speed claim).
const PATIENCE: Duration = Duration::from_secs(180);
const TOKEN: &str = "carol-token-0123456789abcdef";
/// The server's output cap, small so that a flood is cheap to prove capped.
const MAX_OUTPUT: usize = 64 << 10;

/// One request on a connection of its own; the status and the body read to its end.
fn request(sock: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: stockade\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let answer = http_support::parse(&raw);
    (answer.status, answer.body)
}

struct Env {
    c: PrivateContainerd,
    dir: tempfile::TempDir,
    server: std::process::Child,
    sock: PathBuf,
}

impl Env {
    async fn start() -> Env {
        let c = PrivateContainerd::start().await;
        let client = c.client("stockade").await;
        busybox_image(&client).await;
        use stockade::images::{build, NoProgress};
        build::build(
            &client,
            "python",
            None,
            &build::BuildHost::system(),
            &NoProgress,
        )
        .await
        .unwrap_or_else(|e| panic!("build python: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("stkc-")
            .tempdir_in("/tmp")
            .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("{TOKEN} carol\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            format!(
                "image = \"stockade/python\"\n[limits]\nmemory = \"256Mi\"\ntimeout = \"120s\"\nmax_output = \"{MAX_OUTPUT}\"\n"
            ),
        )
        .unwrap();
        let sock = dir.path().join("api.sock");
        let server = Command::new(BIN)
            .arg("serve")
            .arg("--http")
            .arg(format!("unix:{}", sock.display()))
            .arg("--token-file")
            .arg(&tokens)
            .args(["--http-max-sandboxes", "3", "--http-max-memory", "1Gi"])
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .arg("--address")
            .arg(c.address())
            .arg("--fifo-root")
            .arg(dir.path().join("fifo"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stockade serve --http");
        let start = Instant::now();
        while UnixStream::connect(&sock).is_err() {
            assert!(start.elapsed() < PATIENCE, "stockade serve never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        Env {
            c,
            dir,
            server,
            sock,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let (status, body) = request(&self.sock, method, path, &bytes);
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        (status, v)
    }

    fn create(&self, policy: Value) -> String {
        let (status, v) = self.call("POST", "/v1/sandboxes", json!({ "policy": policy }));
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// One cell; it must answer 200.
    fn cell(&self, id: &str, body: Value) -> Value {
        let (status, v) = self.call("POST", &format!("/v1/sandboxes/{id}/code"), body);
        assert_eq!(status, 200, "{v}");
        v
    }

    fn code(&self, id: &str, code: &str) -> Value {
        self.cell(id, json!({ "code": code }))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        crate::common::kill_server(&mut self.server, self.dir.path());
    }
}

/// The value of `key:` in a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_interpreter_end_to_end() {
    if !require_or_skip(
        "runs code in python sandboxes behind stockade serve --http over a private containerd",
        &[
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            "/usr/bin/mmdebstrap",
        ],
    ) {
        return;
    }
    let mut env = Env::start().await;
    let py = env.create(json!({}));

    // State is kept between separate HTTP requests; `language` defaults to python.
    let a = env.cell(&py, json!({"code": "x = 41", "language": "python"}));
    assert_eq!(
        a,
        json!({"stdout": "", "stderr": "", "result": null, "error": null,
               "execution_count": 1, "timed_out": false, "restarted": false})
    );
    let b = env.code(&py, "x + 1");
    assert_eq!(
        (b["result"].as_str(), b["execution_count"].as_u64()),
        (Some("42"), Some(2))
    );

    // Output: Python's own and a subprocess's (file descriptors 1 and 2).
    let o = env.code(
        &py,
        "import subprocess, sys\nprint('hello')\nprint('warn', file=sys.stderr)\nsubprocess.run(['echo', 'from-child'])\nNone",
    );
    assert_eq!(o["stdout"], "hello\nfrom-child\n", "{o}");
    assert_eq!(o["stderr"], "warn\n", "{o}");
    assert_eq!(o["result"], Value::Null);

    // An exception: its name, value and traceback; the interpreter and its globals survive.
    let e = env.code(&py, "def f():\n    return 1 / 0\nf()");
    assert_eq!(e["error"]["name"], "ZeroDivisionError", "{e}");
    assert_eq!(e["error"]["value"], "division by zero");
    let tb = e["error"]["traceback"].as_str().unwrap();
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(
        tb.contains("<cell 4>") && tb.contains("return 1 / 0"),
        "{tb}"
    );
    assert!(
        !tb.contains("interpreter") && !tb.contains("run_cell"),
        "{tb}"
    );
    let s = env.code(&py, "x");
    assert_eq!(
        (s["result"].as_str(), s["restarted"].as_bool()),
        (Some("41"), Some(false))
    );

    // The interpreter is confined as the sandbox is: its user, no capabilities, seccomp in
    // filter mode, no new privileges, the sandbox's cgroup; and it is no child of the cell
    // that started it (orphaned to the sandbox's init).
    let (_, info) = env.call("GET", &format!("/v1/sandboxes/{py}"), Value::Null);
    let c = env.code(
        &py,
        "import json, os\nprint(json.dumps([open('/proc/self/status').read(), open('/proc/self/cgroup').read(), os.getuid(), os.getppid()]))",
    );
    let (status, cgroup, uid, ppid): (String, String, u32, u32) =
        serde_json::from_str(c["stdout"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}: {c}"));
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&status, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(u64::from(uid), info["uid"].as_u64().unwrap(), "{info}");
    assert_eq!(ppid, 1, "orphaned to the sandbox's init");
    let (_, ex) = env.call(
        "POST",
        &format!("/v1/sandboxes/{py}/exec"),
        json!({"argv": ["cat", "/proc/self/cgroup"]}),
    );
    assert_eq!(
        ex["stdout"].as_str().unwrap(),
        cgroup,
        "the sandbox's cgroup"
    );

    // A flood of output is capped at the sandbox's max_output; the interpreter survives.
    let f = env.code(
        &py,
        "import os, sys\nsys.stdout.write('y' * 5_000_000)\nos.system('head -c 3000000 /dev/zero | tr \"\\\\0\" z >&2')\n'done'",
    );
    let (out, err) = (f["stdout"].as_str().unwrap(), f["stderr"].as_str().unwrap());
    assert!(
        out.len() == MAX_OUTPUT && out.bytes().all(|b| b == b'y'),
        "{}",
        out.len()
    );
    assert!(
        err.len() == MAX_OUTPUT && err.bytes().all(|b| b == b'z'),
        "{}",
        err.len()
    );
    assert_eq!(f["result"], "'done'");
    assert_eq!(env.code(&py, "x")["result"], "41");

    // A timeout interrupts the cell (KeyboardInterrupt); the interpreter comes back, its
    // globals intact, and nothing says it was restarted.
    let t = env.cell(
        &py,
        json!({"code": "while True:\n    y = 1", "timeout": "1s"}),
    );
    assert_eq!(
        (t["timed_out"].as_bool(), t["restarted"].as_bool()),
        (Some(true), Some(false)),
        "{t}"
    );
    assert_eq!(t["error"]["name"], "KeyboardInterrupt");
    let n = env.code(&py, "x");
    assert_eq!(
        (n["result"].as_str(), n["restarted"].as_bool()),
        (Some("41"), Some(false))
    );

    // A cell that ignores the interrupt: its interpreter is killed and replaced, and the
    // answer says so; the next cell runs in the new one, without the old globals.
    let k = env.cell(
        &py,
        json!({"code": "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass", "timeout": "1s"}),
    );
    assert_eq!(
        (k["timed_out"].as_bool(), k["restarted"].as_bool()),
        (Some(true), Some(true)),
        "{k}"
    );
    assert_eq!(k["error"]["name"], "InterpreterKilled");
    let g = env.code(&py, "'x' in globals()");
    assert_eq!(
        (
            g["result"].as_str(),
            g["execution_count"].as_u64(),
            g["restarted"].as_bool()
        ),
        (Some("False"), Some(1), Some(false)),
        "{g}"
    );

    // A cell that ends its interpreter: the next call starts a new one and says so.
    env.code(&py, "z = 1");
    let d = env.code(&py, "import os\nos._exit(3)");
    assert_eq!(d["error"]["name"], "InterpreterExited", "{d}");
    let r = env.code(&py, "'z' in globals()");
    assert_eq!(
        (
            r["result"].as_str(),
            r["execution_count"].as_u64(),
            r["restarted"].as_bool()
        ),
        (Some("False"), Some(1), Some(true)),
        "{r}"
    );

    // Cells of one sandbox take turns: two sent at once run one after the other (their
    // spans, by the sandbox's clock, do not overlap).
    let span = "import time\nt0 = time.time()\ntime.sleep(1)\n(t0, time.time())";
    let spans: Vec<(f64, f64, u64)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|_| s.spawn(|| env.code(&py, span))).collect();
        hs.into_iter()
            .map(|h| {
                let v = h.join().unwrap();
                let r = v["result"]
                    .as_str()
                    .unwrap()
                    .trim_matches(['(', ')'])
                    .to_string();
                let (a, b) = r.split_once(", ").unwrap();
                (
                    a.parse().unwrap(),
                    b.parse().unwrap(),
                    v["execution_count"].as_u64().unwrap(),
                )
            })
            .collect()
    });
    let (first, second) = if spans[0].0 < spans[1].0 {
        (spans[0], spans[1])
    } else {
        (spans[1], spans[0])
    };
    assert!(first.1 <= second.0, "overlapping cells: {spans:?}");
    assert_eq!(second.2, first.2 + 1);

    // Cells of different sandboxes do not wait for each other: one blocked until a file
    // appears does not hold up another sandbox's cell.
    let other = env.create(json!({}));
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            env.code(
                &py,
                "import os, time\nopen('/tmp/started', 'w').close()\nfor _ in range(1200):\n    if os.path.exists('/tmp/go'):\n        break\n    time.sleep(0.1)\nos.path.exists('/tmp/go')",
            )
        });
        // Once the blocked cell runs (it made its marker), the other sandbox's cells go.
        let start = Instant::now();
        let stat = format!("/v1/sandboxes/{py}/files/stat?path=/tmp/started");
        while request(&env.sock, "GET", &stat, b"").0 != 200 {
            assert!(start.elapsed() < PATIENCE, "the blocked cell never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(env.code(&other, "2 + 2")["result"], "4");
        assert!(
            !waiting.is_finished(),
            "the first sandbox's cell is still blocked"
        );
        let put = format!("/v1/sandboxes/{py}/files?path=/tmp/go");
        let (status, body) = request(&env.sock, "PUT", &put, b"go");
        assert!(status < 300, "{status} {}", String::from_utf8_lossy(&body));
        let w = waiting.join().unwrap();
        assert_eq!(w["result"], "True", "{w}");
    });

    // `stockade code` drives the same interpreter from another process, taking its turn.
    env.code(&py, "w = 7");
    let cli = |code: &str| {
        Command::new(BIN)
            .arg("code")
            .arg("--address")
            .arg(env.c.address())
            .arg("--fifo-root")
            .arg(env.dir.path().join("fifo"))
            .args([py.as_str(), "-c", code])
            .output()
            .expect("stockade code")
    };
    let o = cli("print('out')\nw * 6");
    assert_eq!(
        (o.status.code(), String::from_utf8_lossy(&o.stdout).as_ref()),
        (Some(0), "out\n42\n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = cli("1 / 0");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.ends_with("ZeroDivisionError: division by zero\n"),
        "{stderr}"
    );

    // Refusals name the field: a language stockade does not run, a timeout above the
    // sandbox's, an image without python3.
    let (st, v) = env.call(
        "POST",
        &format!("/v1/sandboxes/{py}/code"),
        json!({"code": "1", "language": "ruby"}),
    );
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("language")),
        "{v}"
    );
    let (st, v) = env.call(
        "POST",
        &format!("/v1/sandboxes/{py}/code"),
        json!({"code": "1", "timeout": "1h"}),
    );
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (403, Some("timeout")),
        "{v}"
    );
    let (st, _) = request(&env.sock, "DELETE", &format!("/v1/sandboxes/{other}"), b"");
    assert!(st < 300, "{st}");
    let bb = env.create(json!({"image": "stockade/busybox"}));
    let (st, v) = env.call(
        "POST",
        &format!("/v1/sandboxes/{bb}/code"),
        json!({"code": "1"}),
    );
    assert_eq!(
        (
            st,
            v["error"]["code"].as_str(),
            v["error"]["field"].as_str()
        ),
        (409, Some("no_interpreter"), Some("language")),
        "{v}"
    );

    // The cells were counted by result.
    let (_, metrics) = request(&env.sock, "GET", "/v1/metrics", b"");
    let metrics = String::from_utf8(metrics).unwrap();
    for label in ["ok", "error", "timeout", "restarted", "failed"] {
        assert!(
            metrics.contains(&format!("stockade_code_runs_total{{result=\"{label}\"}}")),
            "{label}: {metrics}"
        );
    }

    // Stopped, the server leaves no container, task or run directory (the interpreters
    // went with their sandboxes).
    common::terminate_server(&mut env.server, PATIENCE);
    use stockade::containerd::Containerd;
    let client = env.c.client("stockade").await;
    assert!(client.list_containers(vec![]).await.unwrap().is_empty());
    assert!(client.list_tasks().await.unwrap().is_empty());
    let left: Vec<_> = std::fs::read_dir(env.dir.path().join("fifo"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("stk-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
