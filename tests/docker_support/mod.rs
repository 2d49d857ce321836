//! The harness of `tests/docker_api.rs`: a private containerd with the busybox image,
//! `stockade serve` on a socket of its own, the docker client run against it (bounded),
//! and the census of what is left behind.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{busybox_image, require_or_skip, PrivateContainerd};

pub const BIN: &str = env!("CARGO_BIN_EXE_stockade");
/// Liveness guard for one docker command (never a speed claim).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The docker client: `$STOCKADE_DOCKER_CLI`, else the first of these that exists.
pub fn docker_cli() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STOCKADE_DOCKER_CLI") {
        return Some(PathBuf::from(p));
    }
    ["/usr/local/bin/docker", "/usr/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub fn ready() -> Option<PathBuf> {
    let cli = docker_cli();
    let cli_path = cli
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/usr/local/bin/docker".into());
    let needs = ["/usr/bin/containerd", "/usr/sbin/runc", cli_path.as_str()];
    if !require_or_skip("drives stockade serve with the docker CLI", &needs) {
        return None;
    }
    cli
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A private containerd with the busybox image, and `stockade serve` on a socket of its own.
pub struct Env {
    pub c: PrivateContainerd,
    pub dir: tempfile::TempDir,
    pub cli: PathBuf,
    pub server: std::process::Child,
}

impl Env {
    pub async fn start(cli: PathBuf, policy: Option<&str>) -> Env {
        Env::start_args(cli, policy, &[]).await
    }

    /// [`Env::start`] with more arguments for `stockade serve`.
    pub async fn start_args(cli: PathBuf, policy: Option<&str>, extra: &[&str]) -> Env {
        let c = PrivateContainerd::start().await;
        let client = c.client("stockade").await;
        busybox_image(&client).await;
        // Docker's `busybox` (docker.io/library/busybox:latest), as a Docker user who loaded
        // it has it: the built-in image under that name too.
        stockade::images::tag(&client, "stockade/busybox", "busybox")
            .await
            .expect("tag stockade/busybox as busybox");
        let dir = tempfile::Builder::new()
            .prefix("stkd-")
            .tempdir_in("/tmp")
            .unwrap();
        if let Some(text) = policy {
            std::fs::write(dir.path().join("policy.toml"), text).unwrap();
        }
        let server = serve_command(&c, dir.path())
            .args(extra)
            .spawn()
            .expect("start stockade serve");
        let env = Env {
            c,
            dir,
            cli,
            server,
        };
        env.wait_answer();
        env
    }

    pub fn wait_answer(&self) {
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(start.elapsed() < PATIENCE, "stockade serve never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// `docker ARGS…` with `input` on stdin, bounded by [`PATIENCE`].
    pub fn docker_in(&self, args: &[&str], input: Option<&[u8]>) -> Out {
        let mut child = Command::new(&self.cli)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .env("DOCKER_CLI_HINTS", "false")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker");
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(bytes).unwrap();
        }
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(PATIENCE) {
            Ok(o) => o.expect("docker output"),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("docker {args:?} did not finish within {PATIENCE:?}");
            }
        };
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn docker(&self, args: &[&str]) -> Out {
        self.docker_in(args, None)
    }

    /// `docker ARGS…`, which must exit 0; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert_eq!(o.code, 0, "docker {args:?}: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    /// Nothing of any container is left: no containerd container, task or active snapshot,
    /// no run directory, no mount under the run directories.
    pub async fn assert_no_leftovers(&self) {
        use stockade::containerd::Containerd;
        let client = self.c.client("stockade").await;
        let start = Instant::now();
        loop {
            let containers = client.list_containers(vec![]).await.unwrap();
            let tasks = client.list_tasks().await.unwrap();
            let snapshots: Vec<String> = client
                .list_snapshots("overlayfs", vec![])
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .filter(|n| n.starts_with("stk-"))
                .collect();
            let dirs: Vec<String> = std::fs::read_dir(self.fifo())
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with("stk-"))
                        .collect()
                })
                .unwrap_or_default();
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let mounts: Vec<&str> = mountinfo
                .lines()
                .filter(|l| l.contains(&*self.fifo().to_string_lossy()))
                .collect();
            let clean = containers.is_empty()
                && tasks.is_empty()
                && snapshots.is_empty()
                && dirs.is_empty()
                && mounts.is_empty();
            if clean {
                return;
            }
            // Removal of an auto-removed container may still be under way.
            assert!(
                start.elapsed() < PATIENCE,
                "leftovers: containers {:?} tasks {tasks:?} snapshots {snapshots:?} dirs {dirs:?} mounts {mounts:?}",
                containers.iter().map(|c| &c.id).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server with SIGTERM (by pid); it must exit 0 and remove its socket.
    pub fn stop(&mut self) {
        crate::common::terminate_server(&mut self.server, PATIENCE);
        assert!(!self.socket().exists(), "the socket is removed");
    }
}

/// `stockade serve` on `dir/d.sock` over containerd `c`, with `dir/policy.toml` when it
/// exists.
pub fn serve_command(c: &PrivateContainerd, dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--docker-socket")
        .arg(dir.join("d.sock"))
        .arg("--address")
        .arg(c.address())
        .arg("--fifo-root")
        .arg(dir.join("fifo"))
        .arg("--allow-bind")
        .arg(dir.join("binds"));
    if dir.join("policy.toml").exists() {
        cmd.arg("--policy").arg(dir.join("policy.toml"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

impl Drop for Env {
    fn drop(&mut self) {
        crate::common::kill_server(&mut self.server, self.dir.path());
    }
}
