//! Handing a finished one-shot run's removal to a long-lived stockade process, so that
//! `stockade run` neither waits for it nor starts a helper process for it.
//!
//! Who takes a removal: the pool service the sandbox came from, else any process answering
//! on a socket in the removal directory ([`DEFAULT_REMOVAL_DIR`]; `stockade serve` listens
//! there as `<pid>.sock`), else any pool service ([`crate::pool::DEFAULT_SOCKET_DIR`]). Each
//! accepts only a run in its own containerd, namespace and FIFO root whose directory names
//! the caller as owner, and becomes its owner before answering (the protocol is
//! [`crate::pool::service`]'s `remove`). When none takes it, the caller removes the run its
//! own way (the CLI starts `stockade gc --run ID --take-over`). Either way a process that
//! dies with the run still to remove leaves it to crash reclaim, as before.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::served::{self, ServedRun};
use super::{BoxFuture, Runner};
use crate::pool::service::{self, Place, Request};

/// Where long-lived stockade processes other than pool services (`stockade serve`) listen
/// for removals, one `<pid>.sock` each.
pub const DEFAULT_REMOVAL_DIR: &str = "/run/stockade/removal";

/// The socket a process with pid `pid` takes removals on under `dir`.
pub fn removal_socket(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.sock"))
}

/// The order sockets are asked to take a removal in: `first` (the pool the sandbox came
/// from), then the sockets of `removal_dir`, then those of `pool_dir`, each once. Pure.
pub fn candidates(first: Option<&Path>, removal: &[PathBuf], pools: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in first
        .map(Path::to_path_buf)
        .into_iter()
        .chain(removal.iter().cloned())
        .chain(pools.iter().cloned())
    {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

impl Runner {
    /// This runner's containerd, namespace, FIFO root and runtime binary, as the pool and
    /// removal sockets compare them.
    pub fn place(&self) -> Place {
        Place {
            address: self.containerd().address().to_path_buf(),
            namespace: self.containerd().namespace().to_string(),
            fifo_root: self.fifo_root().to_path_buf(),
            runc_binary: self.pool_runtime_key(),
        }
    }

    /// Hands the removal of finished run `id` (owned by this process) to a long-lived
    /// stockade process, asking the sockets in [`candidates`] order; the socket that took
    /// it, or `None` when none did (the caller then removes the run itself).
    pub async fn hand_off_removal(
        &self,
        id: &str,
        first: Option<&Path>,
        removal_dir: &Path,
        pool_dir: &Path,
    ) -> Option<PathBuf> {
        let place = self.place();
        let all = candidates(
            first,
            &live_sockets(removal_dir, self.proc_root()),
            &service::sockets(pool_dir),
        );
        for socket in all {
            match service::hand_back(&socket, id, &place).await {
                Ok(true) => return Some(socket),
                Ok(false) => {}
                Err(e) => tracing::debug!("{e}"),
            }
        }
        None
    }
}

/// What a server does with a run order it accepted ([`super::served`]).
pub type RunHandler = std::sync::Arc<dyn Fn(ServedRun) -> BoxFuture<'static, ()> + Send + Sync>;

/// What a server's removal socket serves besides removals: run orders, and the status of
/// the pools it keeps for them.
#[derive(Clone, Default)]
pub struct Serves {
    /// Runs accepted orders; without it, orders are refused.
    pub runs: Option<RunHandler>,
    /// The pools served runs take from, reported by a `status` request.
    pub pools: Option<std::sync::Arc<crate::pool::Pools>>,
}

/// The answer to a `status` request on a removal socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerStatus {
    /// The server's pid.
    pub pid: u32,
    /// The pools it keeps for served runs.
    pub pools: Vec<crate::pool::PoolStatus>,
}

/// Takes removals for `runner` on `listener` (bound at `path`, mode 0600) until `stop`
/// completes, then removes the socket; removals already accepted finish in `runner`'s
/// background (see [`Runner::wait_cleanups`]). `status` requests are answered with
/// [`ServerStatus`]; with [`Serves::runs`], run orders ([`super::served`]) are answered
/// too, and each accepted one handed to it.
pub async fn serve_removals(
    runner: Runner,
    listener: UnixListener,
    path: PathBuf,
    serves: Serves,
    stop: impl std::future::Future<Output = ()>,
) {
    let place = runner.place();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (runner, place, serves) = (runner.clone(), place.clone(), serves.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(&runner, &place, &serves, stream).await {
                        tracing::debug!("removal socket: {e}");
                    }
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn answer(
    runner: &Runner,
    place: &Place,
    serves: &Serves,
    stream: tokio::net::UnixStream,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.pid();
    let (line, fds) = served::read_first(&stream).await?;
    if served::is_order(&line) {
        let Some(handler) = &serves.runs else {
            let refused = served::Verdict {
                accepted: false,
                reason: Some("this process takes no runs".into()),
                pid: std::process::id(),
            };
            let mut text = serde_json::to_string(&refused)?;
            text.push('\n');
            let (_, mut w) = stream.into_split();
            w.write_all(text.as_bytes()).await?;
            return w.shutdown().await;
        };
        let serving = served::Serving {
            place: place.clone(),
            disk_root: runner.disk_root().to_path_buf(),
            proc_root: runner.proc_root().to_path_buf(),
        };
        if let Some(run) = served::accept(&serving, stream, &line, fds).await? {
            tracing::debug!(pid = run.peer.pid, "serving a run");
            handler(run).await;
        }
        return Ok(());
    }
    drop(fds);
    let (_, mut w) = stream.into_split();
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(Request::Remove { id, place: theirs }) => {
            serde_json::to_value(service::remove(runner, place, &theirs, &id, peer).await)?
        }
        Ok(Request::Status) => serde_json::to_value(ServerStatus {
            pid: std::process::id(),
            pools: serves
                .pools
                .as_ref()
                .map(|p| p.statuses())
                .unwrap_or_default(),
        })?,
        Ok(_) => serde_json::json!({ "error": "this socket only takes removals, runs and status" }),
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

/// The sockets under `dir` whose process (named by the file, `<pid>.sock`) is alive, as
/// `proc_root` shows; sorted.
pub fn live_sockets(dir: &Path, proc_root: &Path) -> Vec<PathBuf> {
    let mut out = service::sockets(dir);
    out.retain(|p| socket_pid(p).is_some_and(|pid| proc_root.join(pid.to_string()).exists()));
    out
}

/// The pid a removal socket's name carries.
fn socket_pid(path: &Path) -> Option<u32> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Binds the removal socket of this process under `dir` (mode 0600, `dir` 0700 when
/// made), replacing a stale one; the sockets of processes that are gone (a server killed
/// outright) are removed.
pub async fn bind_removals(dir: &Path) -> Result<(UnixListener, PathBuf), crate::pool::PoolError> {
    let proc_root = Path::new(crate::procfs::DEFAULT_PROC_ROOT);
    for stale in service::sockets(dir) {
        if socket_pid(&stale).is_some_and(|pid| !proc_root.join(pid.to_string()).exists()) {
            let _ = std::fs::remove_file(&stale);
        }
    }
    let path = removal_socket(dir, std::process::id());
    let l = service::bind(&path).await?;
    Ok((l, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_a_run_came_from_is_asked_first_then_removal_sockets_then_pools() {
        let p = |s: &str| PathBuf::from(s);
        // (the pool the run came from, removal sockets, pool sockets) → the order asked
        type Case<'a> = (Option<&'a str>, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let table: &[Case] = &[
            (None, &[], &[], &[]),
            (
                None,
                &["/r/1.sock"],
                &["/p/a.sock"],
                &["/r/1.sock", "/p/a.sock"],
            ),
            (
                Some("/p/b.sock"),
                &["/r/1.sock"],
                &["/p/a.sock", "/p/b.sock"],
                &["/p/b.sock", "/r/1.sock", "/p/a.sock"],
            ),
            (Some("/p/a.sock"), &[], &["/p/a.sock"], &["/p/a.sock"]),
        ];
        for &(first, removal, pools, want) in table {
            let removal: Vec<PathBuf> = removal.iter().map(|s| p(s)).collect();
            let pools: Vec<PathBuf> = pools.iter().map(|s| p(s)).collect();
            let got = candidates(first.map(Path::new), &removal, &pools);
            let want: Vec<PathBuf> = want.iter().map(|s| p(s)).collect();
            assert_eq!(got, want, "{first:?} {removal:?} {pools:?}");
        }
    }

    #[test]
    fn only_the_sockets_of_live_processes_are_asked() {
        let t = tempfile::tempdir().unwrap();
        let (dir, proc_root) = (t.path().join("removal"), t.path().join("proc"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(proc_root.join("7")).unwrap();
        for name in ["7.sock", "8.sock", "x.sock", "7.txt"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(live_sockets(&dir, &proc_root), vec![dir.join("7.sock")]);
    }

    #[test]
    fn a_process_removal_socket_is_named_by_its_pid() {
        assert_eq!(
            removal_socket(Path::new("/run/stockade/removal"), 42),
            Path::new("/run/stockade/removal/42.sock")
        );
    }
}
