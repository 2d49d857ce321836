//! The `stockade-served-cli` and `stockade-served-warm-cli` contenders: `stockade run` as
//! a thin client of a `stockade serve` the benchmark starts (private removal directory,
//! `--pool-size` the highest concurrency) and stops by its PID. The cold one passes
//! `--cold`; the warm one takes from the server's own pool for the run's policy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{external, BenchError};
use crate::runner::handoff::{removal_socket, ServerStatus};

/// The benchmark's server for served runs.
pub(super) struct ServedServer {
    /// Its removal socket, where runs are offered and its pools' status is asked.
    pub socket: PathBuf,
    /// The CLI contenders pointed at it: cold, and from its pools.
    pub cold: external::StockadeCli,
    pub warm: external::StockadeCli,
    /// Whether the warm contender runs, so that the server keeps a pool to wait for.
    pub pooled: bool,
    child: std::sync::Mutex<Option<tokio::process::Child>>,
}

impl ServedServer {
    /// Starts `stockade serve` with its sockets under `work_dir` and pools of `pool_size`,
    /// and waits (at most 60 s) until its removal socket answers.
    pub async fn start(
        cli: &external::StockadeCli,
        runtime_flags: &[String],
        work_dir: &Path,
        pool_size: usize,
    ) -> Result<ServedServer, BenchError> {
        let setup = |e: std::io::Error| BenchError::Setup(format!("stockade serve: {e}"));
        std::fs::create_dir_all(work_dir).map_err(setup)?;
        let removal = work_dir.join("removal");
        let listen: Vec<std::ffi::OsString> = vec![
            "--docker-socket".into(),
            work_dir.join("docker.sock").into(),
            "--removal-dir".into(),
            removal.clone().into(),
            "--pool-size".into(),
            pool_size.max(1).to_string().into(),
        ];
        let child = super::api::spawn_serve(
            &cli.binary,
            &listen,
            &cli.address,
            &cli.namespace,
            runtime_flags,
            "stockade serve (served runs)",
        )?;
        let pid = child.id().unwrap_or_default();
        let socket = removal_socket(&removal, pid);
        let with = |extra: &[&str]| external::StockadeCli {
            binary: cli.binary.clone(),
            address: cli.address.clone(),
            namespace: cli.namespace.clone(),
            flags: [
                vec![
                    "--removal-dir".into(),
                    removal.to_string_lossy().into_owned(),
                ],
                extra.iter().map(ToString::to_string).collect(),
                runtime_flags.to_vec(),
            ]
            .concat(),
        };
        let server = ServedServer {
            socket,
            cold: with(&["--cold"]),
            warm: with(&[]),
            pooled: false,
            child: std::sync::Mutex::new(Some(child)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.status().await.is_none() {
            if super::api::has_exited(&server.child) {
                return Err(BenchError::Setup("stockade serve exited at once".into()));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Setup(
                    "stockade serve did not answer within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        super::api::child_pid(&self.child)
    }

    /// What the server's pools hold; `None` when it does not answer.
    pub async fn status(&self) -> Option<ServerStatus> {
        use crate::pool::service::{request, Request};
        request::<ServerStatus>(&self.socket, &Request::Status, Duration::from_secs(1))
            .await
            .ok()
    }

    /// Waits (at most `timeout`) until the server's pool for `image` holds `n` ready
    /// sandboxes; false when it does not by then (or has no pool for it).
    pub async fn pool_ready(&self, image: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let norm = |i: &str| crate::images::normalize_name(i).unwrap_or_else(|_| i.to_string());
        let image = norm(image);
        loop {
            let ready = self.status().await.is_some_and(|s| {
                s.pools
                    .iter()
                    .any(|p| norm(&p.image) == image && p.ready >= n)
            });
            if ready {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The notes of its pools (runs that took a prepared sandbox, and that ran cold).
    pub async fn notes(&self) -> Vec<String> {
        let Some(s) = self.status().await else {
            return Vec::new();
        };
        s.pools
            .iter()
            .map(|p| {
                format!(
                    "served pool {}: {} runs took a prepared sandbox, {} found the pool empty and ran cold",
                    p.image, p.taken, p.misses
                )
            })
            .collect()
    }

    /// SIGTERM to the server by its PID (it drains its pools and removes what it made),
    /// waiting at most 60 s before killing it.
    pub async fn stop(&self) {
        super::api::stop_child(&self.child, Duration::from_secs(60)).await;
    }
}
