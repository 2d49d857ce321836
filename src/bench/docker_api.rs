//! The `stockade-docker-exec` contender: the docker CLI's `docker exec` against the Docker
//! API of a `stockade serve --docker-socket` the benchmark starts (and stops by its PID),
//! into one long-lived container per image made with `docker run -d` before the first
//! burst (not timed) — the same client and command as `docker-exec` against the private
//! dockerd, so the two measure the servers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::external::have;
use super::{BenchError, Sample, Workload};

/// A `stockade serve --docker-socket` on a socket of the benchmark's work directory, and
/// the containers `docker exec` goes into.
pub(super) struct DockerApiServer {
    socket: PathBuf,
    /// The server's process, taken by [`DockerApiServer::stop`].
    child: std::sync::Mutex<Option<tokio::process::Child>>,
    /// Workload image → the long-lived container `docker exec` goes into.
    exec: BTreeMap<String, String>,
}

impl DockerApiServer {
    /// Starts the server on `address`'s containerd in `namespace` and waits, at most 60 s,
    /// until `docker version` answers through it; then starts one `sleep` container per
    /// image of `images`.
    pub async fn start(
        binary: &Path,
        address: &Path,
        namespace: &str,
        runtime_flags: &[String],
        work_dir: &Path,
        images: &[String],
    ) -> Result<DockerApiServer, BenchError> {
        if !have("docker") {
            return Err(BenchError::Setup(
                "the docker CLI is not on PATH (Debian: docker.io)".into(),
            ));
        }
        let setup = |e: std::io::Error| BenchError::Setup(format!("stockade serve: {e}"));
        std::fs::create_dir_all(work_dir).map_err(setup)?;
        let socket = work_dir.join("docker-api.sock");
        let child = super::api::spawn_serve(
            binary,
            &["--docker-socket".into(), socket.clone().into()],
            address,
            namespace,
            runtime_flags,
            "stockade serve --docker-socket",
        )?;
        let mut server = DockerApiServer {
            socket,
            child: std::sync::Mutex::new(Some(child)),
            exec: BTreeMap::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = server
                .cli()
                .arg("version")
                .output()
                .await
                .is_ok_and(|o| o.status.success());
            if answered {
                break;
            }
            let exited = super::api::has_exited(&server.child);
            if Instant::now() > deadline || exited {
                server.stop().await;
                return Err(BenchError::Setup(
                    "stockade serve --docker-socket did not answer within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for image in images {
            if server.exec.contains_key(image) {
                continue;
            }
            let mut cmd = server.cli();
            cmd.args(["run", "-d", "--network", "none", image, "sleep", "86400"]);
            match super::engines::setup_cmd(cmd, "docker run -d (stockade serve)").await {
                Ok(id) => {
                    server.exec.insert(image.clone(), id.trim().to_string());
                }
                Err(e) => {
                    server.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// The server's PID (a daemon whose CPU is counted).
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(tokio::process::Child::id)
    }

    fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    /// `docker exec CONTAINER ARGS…` into the image's long-lived container.
    pub async fn exec(&self, w: &Workload) -> Result<Sample, BenchError> {
        super::engines::docker_exec(self.cli(), &self.exec, w, "docker exec (stockade serve)").await
    }

    /// Removes the exec containers (`docker rm -f`), then SIGTERM to the server by PID (it
    /// removes what it made) and waits at most 30 s for it to exit; killed if it has not.
    /// Returns what could not be done.
    pub async fn stop(&self) -> Vec<String> {
        let mut notes = Vec::new();
        super::engines::remove_containers(|| self.cli(), &self.exec, "stockade serve", &mut notes)
            .await;
        let child = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut child) = child else {
            return notes;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            notes.push("stockade serve did not stop within 30 s of SIGTERM; killed".into());
            let _ = child.kill().await;
        }
        notes
    }
}
