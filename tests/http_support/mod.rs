//! The harness of the HTTP API's tests (`tests/http_api.rs`, `tests/python_client.rs`): a
//! private containerd with the busybox image, `stockade serve --http` on a Unix socket or a
//! loopback port of its own (with TLS when asked) with two tokens, plain HTTP/1.1 requests
//! to it, and the census of what is left behind after it stops.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, busybox_image, PrivateContainerd};

pub const BIN: &str = env!("CARGO_BIN_EXE_stockade");
/// Liveness guard for one request (never a speed claim).
pub const PATIENCE: Duration = Duration::from_secs(120);
pub const ALICE: &str = "alice-token-0123456789abcdef";
pub const BOB: &str = "bob-token-0123456789abcdef00";

/// One answer: its status, headers and (de-chunked) body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The error's field, asserting the error document's shape.
    pub fn error_field(&self) -> Option<String> {
        let v = self.json();
        let e = &v["error"];
        assert!(e["code"].is_string() && e["message"].is_string(), "{v}");
        assert!(!e["message"].as_str().unwrap().contains('\n'));
        e["field"].as_str().map(str::to_string)
    }
}

/// One request on a connection of its own (`Connection: close`), the body read to its
/// end (chunked or not).
pub fn request(to: &Addr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let mut s: Box<dyn ReadWrite> = match to {
        Addr::Unix(p) => {
            let s = UnixStream::connect(p).expect("connect");
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            Box::new(s)
        }
        Addr::Tcp(port) => {
            let s = std::net::TcpStream::connect(("127.0.0.1", *port)).expect("connect");
            s.set_read_timeout(Some(PATIENCE)).unwrap();
            Box::new(s)
        }
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: stockade\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before taking the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    // A server refusing a body (413) closes without reading it, which may reset the
    // connection after its answer has arrived.
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty(),
            "read the answer: {e}"
        );
    }
    parse(&raw)
}

/// An HTTP/1.1 answer read to its end: the status, the headers and the body (chunked or
/// not).
pub fn parse(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    Answer {
        status,
        headers,
        body,
    }
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Where the server listens.
pub enum Addr {
    Unix(PathBuf),
    Tcp(u16),
}

impl Addr {
    pub fn answers(&self) -> bool {
        match self {
            Addr::Unix(p) => UnixStream::connect(p).is_ok(),
            Addr::Tcp(port) => std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok(),
        }
    }
}

/// How the server listens.
pub enum Listen {
    /// On `api.sock` in the test's directory.
    Unix,
    /// On a free port of 127.0.0.1.
    Tcp,
    /// On a free port of 127.0.0.1, over TLS with this certificate and key.
    Tls { cert: PathBuf, key: PathBuf },
}

/// A private containerd with the busybox image and a server over it (tokens `ALICE` and
/// `BOB`, at most two sandboxes and 400Mi per token, uploads of at most 1Mi, the server's
/// policy 256Mi of memory).
pub struct Env {
    pub c: PrivateContainerd,
    pub dir: tempfile::TempDir,
    pub server: std::process::Child,
    pub addr: Addr,
    /// The server's command line, to start it again.
    pub args: Vec<std::ffi::OsString>,
}

impl Env {
    /// The server on a Unix socket, or (`tcp`) on a free port of 127.0.0.1.
    pub async fn start(tcp: bool) -> Env {
        Env::start_with(if tcp { Listen::Tcp } else { Listen::Unix }).await
    }

    /// The server listening as `listen` says.
    pub async fn start_with(listen: Listen) -> Env {
        let c = PrivateContainerd::start().await;
        busybox_image(&c.client("stockade").await).await;
        let dir = tempfile::Builder::new()
            .prefix("stkh-")
            .tempdir_in("/tmp")
            .unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, format!("{ALICE} alice\n{BOB} bob\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            "[limits]\nmemory = \"256Mi\"\n",
        )
        .unwrap();
        let addr = match &listen {
            Listen::Unix => Addr::Unix(dir.path().join("api.sock")),
            Listen::Tcp | Listen::Tls { .. } => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                Addr::Tcp(l.local_addr().unwrap().port())
            }
        };
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--http")
            .arg(match &addr {
                Addr::Unix(p) => format!("unix:{}", p.display()),
                Addr::Tcp(port) => format!("127.0.0.1:{port}"),
            })
            .arg("--token-file")
            .arg(&tokens)
            .args(["--http-max-sandboxes", "2", "--http-max-memory", "400Mi"])
            .args(["--http-max-body", "1Mi"])
            .arg("--policy")
            .arg(dir.path().join("policy.toml"))
            .arg("--address")
            .arg(c.address())
            .arg("--fifo-root")
            .arg(dir.path().join("fifo"));
        if let Listen::Tls { cert, key } = &listen {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(Into::into).collect();
        let mut env = Env {
            c,
            dir,
            server: spawn_server(&args),
            addr,
            args,
        };
        env.wait_answers();
        env
    }

    fn wait_answers(&mut self) {
        let start = Instant::now();
        while !self.addr.answers() {
            assert!(start.elapsed() < PATIENCE, "stockade serve never answered");
            assert!(
                self.server.try_wait().unwrap().is_none(),
                "stockade serve exited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL, by pid: nothing of its own cleanup runs) and starts
    /// another with the same command line over what the first left.
    pub fn kill_and_restart(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.server.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.server.wait();
        self.server = spawn_server(&self.args);
        self.wait_answers();
    }

    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
        request(&self.addr, method, path, token, body)
    }

    pub fn alice(&self, method: &str, path: &str, body: serde_json::Value) -> Answer {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.call(method, path, Some(ALICE), &bytes)
    }

    pub fn run_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("fifo"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("stk-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGTERM (by pid); the server must exit 0 having removed its sandboxes and socket.
    pub async fn stop_and_check(&mut self) {
        common::terminate_server(&mut self.server, PATIENCE);
        if let Addr::Unix(p) = &self.addr {
            assert!(!p.exists(), "the socket is removed");
        }
        use stockade::containerd::Containerd;
        let client = self.c.client("stockade").await;
        let containers = client.list_containers(vec![]).await.unwrap();
        let tasks = client.list_tasks().await.unwrap();
        assert!(
            containers.is_empty() && tasks.is_empty(),
            "containers {containers:?}"
        );
        assert_eq!(self.run_dirs(), Vec::<String>::new());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let fifo = self.dir.path().join("fifo");
        assert!(!mountinfo.contains(&*fifo.to_string_lossy()), "mounts left");
    }
}

fn spawn_server(args: &[std::ffi::OsString]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start stockade serve --http")
}

impl Drop for Env {
    fn drop(&mut self) {
        crate::common::kill_server(&mut self.server, self.dir.path());
    }
}
