//! The contenders that drive a long-lived sandbox from outside the benchmark's process:
//! `stockade exec` into one made before the first burst; its whole life per run,
//! `stockade create` + `stockade exec` + `stockade rm -f`, through the
//! binary, and the same three steps through the HTTP API of a `stockade serve --http
//! unix:…` the benchmark starts (and stops by its PID). Each run is timed from the create
//! to the end of the delete.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::external::{check_output, timed};
use super::{BenchError, Sample, Workload};

/// `stockade create`, `exec` and `rm -f` through the binary.
pub(super) struct SessionCli {
    pub binary: PathBuf,
    pub address: PathBuf,
    pub namespace: String,
    /// `--runc-binary`, when one is given (for the create).
    pub runtime_flags: Vec<String>,
}

impl SessionCli {
    fn command(&self, sub: &str) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(sub)
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace);
        cmd
    }

    /// `stockade exec ID -- CMD` into the sandbox `id`, timed end to end.
    pub async fn exec(&self, id: &str, w: &Workload) -> Result<Sample, BenchError> {
        let start = Instant::now();
        let mut exec = self.command("exec");
        exec.arg(id).arg("--").args(&w.args);
        let (_, out) = timed(exec, "stockade exec").await?;
        let total = start.elapsed();
        check_output(w, &out, "stockade exec")?;
        Ok(Sample::end_to_end(total))
    }

    pub async fn run(&self, w: &Workload) -> Result<Sample, BenchError> {
        let start = Instant::now();
        let mut create = self.command("create");
        create
            .arg("--image")
            .arg(&w.image)
            .args(&self.runtime_flags);
        let (_, out) = timed(create, "stockade create").await?;
        let id = String::from_utf8_lossy(&out).trim().to_string();
        let mut exec = self.command("exec");
        exec.arg(&id).arg("--").args(&w.args);
        let ran = timed(exec, "stockade exec").await;
        let mut rm = self.command("rm");
        rm.arg("-f").arg(&id);
        let removed = timed(rm, "stockade rm").await;
        let total = start.elapsed();
        let (_, out) = ran?;
        removed?;
        check_output(w, &out, "stockade create+exec+rm")?;
        Ok(Sample::end_to_end(total))
    }
}

/// The token the benchmark's server accepts.
const TOKEN: &str = "stockade-bench-token-0123456789abcdef";

/// A `stockade serve --http` on a Unix socket of the benchmark's work directory.
pub(super) struct HttpServer {
    socket: PathBuf,
    /// The server's process, taken by [`HttpServer::stop`].
    child: std::sync::Mutex<Option<tokio::process::Child>>,
}

impl HttpServer {
    /// Starts the server (its quotas wide enough for `max_sandboxes` at once) and waits,
    /// at most 60 s, until it answers `/v1/health`.
    pub async fn start(
        binary: &Path,
        address: &Path,
        namespace: &str,
        runtime_flags: &[String],
        work_dir: &Path,
        max_sandboxes: usize,
    ) -> Result<HttpServer, BenchError> {
        let setup = |e: std::io::Error| BenchError::Setup(format!("stockade serve --http: {e}"));
        std::fs::create_dir_all(work_dir).map_err(setup)?;
        let tokens = work_dir.join("http-tokens");
        std::fs::write(&tokens, format!("{TOKEN} bench\n")).map_err(setup)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).map_err(setup)?;
        let socket = work_dir.join("http.sock");
        let listen: Vec<std::ffi::OsString> = vec![
            "--http".into(),
            format!("unix:{}", socket.display()).into(),
            "--token-file".into(),
            tokens.clone().into(),
            "--http-max-sandboxes".into(),
            max_sandboxes.to_string().into(),
            "--http-max-memory".into(),
            "1Ti".into(),
        ];
        let child = spawn_serve(
            binary,
            &listen,
            address,
            namespace,
            runtime_flags,
            "stockade serve --http",
        )?;
        let server = HttpServer {
            socket,
            child: std::sync::Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = server.call("GET", "/v1/health", "").await {
                return Ok(server);
            }
            let exited = has_exited(&server.child);
            if Instant::now() > deadline || exited {
                server.stop().await;
                return Err(BenchError::Setup(
                    "stockade serve --http did not answer within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's PID (a daemon whose CPU is counted).
    pub fn pid(&self) -> Option<u32> {
        child_pid(&self.child)
    }

    /// One request on a connection of its own; the status and the body.
    async fn call(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = tokio::net::UnixStream::connect(&self.socket).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: stockade\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(bad)?;
        let status = std::str::from_utf8(&raw[..split])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        Ok((status, raw[split + 4..].to_vec()))
    }

    /// `call`, expecting `want`; the body as JSON (null when empty).
    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: &str,
        want: u16,
    ) -> Result<serde_json::Value, BenchError> {
        let what = format!("HTTP {method} {path}");
        let (status, bytes) =
            self.call(method, path, body)
                .await
                .map_err(|e| BenchError::Spawn {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
        if status != want {
            return Err(BenchError::Failed {
                what,
                status: Some(i32::from(status)),
                stderr: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| BenchError::Failed {
            what,
            status: Some(i32::from(status)),
            stderr: e.to_string(),
        })
    }

    /// Create, exec, delete: one run.
    pub async fn run(&self, w: &Workload) -> Result<Sample, BenchError> {
        let start = Instant::now();
        let create = serde_json::json!({"policy": {"image": w.image}}).to_string();
        let made = self.expect("POST", "/v1/sandboxes", &create, 201).await?;
        let id = made["id"].as_str().unwrap_or_default().to_string();
        let exec = serde_json::json!({"argv": w.args}).to_string();
        let ran = self
            .expect("POST", &format!("/v1/sandboxes/{id}/exec"), &exec, 200)
            .await;
        let removed = self
            .expect("DELETE", &format!("/v1/sandboxes/{id}"), "", 204)
            .await;
        let total = start.elapsed();
        let ran = ran?;
        removed?;
        if ran["exit_code"].as_u64() != Some(0) {
            return Err(BenchError::Failed {
                what: "HTTP exec".into(),
                status: ran["exit_code"].as_i64().map(|c| c as i32),
                stderr: ran["stderr"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            });
        }
        let stdout = ran["stdout"].as_str().unwrap_or_default();
        check_output(w, stdout.as_bytes(), "HTTP create+exec+delete")?;
        Ok(Sample::end_to_end(total))
    }

    /// SIGTERM by PID (the server removes what it made), then waits at most 30 s for it to
    /// exit; killed if it has not.
    pub async fn stop(&self) {
        stop_child(&self.child, Duration::from_secs(30)).await;
    }
}

/// SIGTERM by PID to the server in `child` (taken out of it), then waits at most
/// `patience` for it to exit before killing it.
pub(super) async fn stop_child(
    child: &std::sync::Mutex<Option<tokio::process::Child>>,
    patience: Duration,
) {
    let Some(mut child) = child.lock().expect("child lock").take() else {
        return;
    };
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(patience, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// The pid of the server in `child`, while it runs.
pub(super) fn child_pid(child: &std::sync::Mutex<Option<tokio::process::Child>>) -> Option<u32> {
    child
        .lock()
        .expect("child lock")
        .as_ref()
        .and_then(tokio::process::Child::id)
}

/// Whether the server process in `child` has exited (or was already taken).
pub(super) fn has_exited(child: &std::sync::Mutex<Option<tokio::process::Child>>) -> bool {
    child
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_mut()
        .is_none_or(|c| c.try_wait().ok().flatten().is_some())
}

/// Starts `stockade serve LISTEN… --address ADDRESS --namespace NAMESPACE RUNTIME_FLAGS…`
/// with no stdio, killed if dropped; `what` names it in the error when it cannot start.
pub(super) fn spawn_serve(
    binary: &Path,
    listen: &[std::ffi::OsString],
    address: &Path,
    namespace: &str,
    runtime_flags: &[String],
    what: &str,
) -> Result<tokio::process::Child, BenchError> {
    Command::new(binary)
        .arg("serve")
        .args(listen)
        .arg("--address")
        .arg(address)
        .arg("--namespace")
        .arg(namespace)
        .args(runtime_flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Spawn {
            what: what.into(),
            message: e.to_string(),
        })
}
