//! A pool served over a Unix socket, one JSON document per line each way, one request per
//! connection:
//!
//! ```text
//! → {"op":"take","image":"busybox","policy_hash":"sha256:…","address":"/run/…/containerd.sock",
//!    "namespace":"stockade","fifo_root":"/run/stockade/fifo","runc_binary":"…"}
//!                       ("runc_binary" only when not the default runc)
//! ← {"sandbox":{"id":"stk-…","image":{…},"policy_hash":"sha256:…","fifos":{…},"pid":…,…}}
//! → {"op":"taken"}    (the caller has opened its FIFO ends; the service then closes its own)
//!   or, with no sandbox to give:
//! ← {"sandbox":null,"reason":"empty"}   (or why the image, policy or place differs)
//! → {"op":"status"}   ← {"status":{…PoolStatus…},"pid":123,"runtime":{…},"address":…,
//!                        "namespace":…,"fifo_root":…}
//! → {"op":"drain"}    ← {"removed":4}     (the service then stops)
//! → {"op":"remove","id":"stk-…","address":…,"namespace":…,"fifo_root":…}
//!   ← {"removing":true}  or  {"removing":false,"reason":"…"}
//! → (a line that is no request)   ← {"error":"bad request: …"}
//! ```
//!
//! `remove` hands a finished run over for removal, pooled or cold: the service accepts
//! only a run in its own containerd, namespace and FIFO root whose directory names the
//! caller (by its peer credentials) as owner, makes itself the owner and removes the run in
//! the background, so that `stockade run` need not start a helper process for it.
//!
//! A handed-over sandbox's task is already running, its pid 1 the trampoline waiting for a
//! command line on its stdin FIFO; the service keeps its own FIFO ends open until the
//! caller says `taken` (or hangs up, or [`ACK_TIMEOUT`] passes), so the shim never sees
//! stdin end in between. A sandbox is handed over only to a caller using the same
//! containerd, namespace and FIFO root; before the answer is written, the caller's pid (from the socket's peer
//! credentials) becomes the owner of the sandbox's run directory, so that a caller dying
//! between the answer and its run leaves a sandbox the next crash reclaim removes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{Pool, PoolError, PoolStatus};
use crate::runner::{write_owner, Prepared};

/// How long a client waits for a pool's answer before running cold.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the service keeps its FIFO ends of a handed-over sandbox open, waiting for the
/// caller to say it opened its own.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line the service reads.
const MAX_LINE: u64 = 64 * 1024;

/// Where the service's sandboxes live; a take must name the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The containerd socket.
    pub address: PathBuf,
    /// The containerd namespace.
    pub namespace: String,
    /// Parent of the run directories (see [`crate::runner::fifo::DEFAULT_FIFO_ROOT`]).
    pub fifo_root: PathBuf,
    /// The runtime binary the sandboxes run under (`None`: runc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runc_binary: Option<String>,
}

impl Place {
    /// Whether `other` names the same containerd, namespace and FIFO root: the runtime
    /// binary does not matter for removing a run.
    pub fn same_objects(&self, other: &Place) -> bool {
        self.address == other.address
            && self.namespace == other.namespace
            && self.fifo_root == other.fifo_root
    }
}

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Asks for a ready sandbox; answered by a [`TakeReply`].
    Take {
        /// The image the caller's run uses.
        image: String,
        /// [`crate::policy::ValidatedPolicy::hash`] of the caller's policy.
        policy_hash: String,
        /// The base snapshot the image names as the caller resolved it: ready sandboxes
        /// made from another are removed, not given ([`Pool::take_held`]). Absent: any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        snapshot: Option<String>,
        /// Where the caller runs its sandboxes: must be the service's own.
        #[serde(flatten)]
        place: Place,
    },
    /// Asks what the pool holds; answered by a [`StatusReply`].
    Status,
    /// Asks the service to remove its ready sandboxes and stop; answered by a [`DrainReply`].
    Drain,
    /// Hands a finished run back for removal; answered by a [`RemoveReply`].
    Remove {
        /// The run's id.
        id: String,
        /// Where the caller ran it: must be the service's own (the runtime binary aside).
        #[serde(flatten)]
        place: Place,
    },
}

/// The answer to a take.
#[derive(Debug, Serialize, Deserialize)]
pub struct TakeReply {
    /// The sandbox, now the caller's; `None` when the service has none to give.
    pub sandbox: Option<Prepared>,
    /// Why there is no sandbox: `empty`, or the image, policy or place differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a status request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReply {
    /// What the pool holds and has done.
    pub status: PoolStatus,
    /// The service's process id.
    pub pid: u32,
    /// The OCI runtime binary the pool's sandboxes run under, when identified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::runner::RuntimeBinary>,
    /// Where the service's sandboxes live.
    #[serde(flatten)]
    pub place: Place,
}

/// The answer to a remove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveReply {
    /// Whether the service removes the run (the caller then need not).
    pub removing: bool,
    /// Why it refused, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to a drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainReply {
    /// Ready sandboxes removed.
    pub removed: usize,
}

/// Binds `path` (mode 0600, its directory 0700 when created), replacing a stale socket
/// nobody answers on; fails when a live service holds it.
pub async fn bind(path: &Path) -> Result<UnixListener, PoolError> {
    let io = io_error(path);
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(PoolError::Protocol {
                path: path.to_path_buf(),
                message: "a pool service already listens here (`stockade pool drain` stops it)"
                    .into(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let l = UnixListener::bind(path).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

/// Serves `pool` on `listener` until a drain request arrives or `stop` completes; then
/// drains the pool and removes the socket at `path`.
pub async fn serve(
    pool: Pool,
    listener: UnixListener,
    path: PathBuf,
    place: Place,
    stop: impl std::future::Future<Output = ()>,
) -> usize {
    let (drain_tx, mut drain_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = drain_rx.recv() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (pool, place, tx) = (pool.clone(), place.clone(), drain_tx.clone());
                tokio::spawn(async move {
                    if let Err(e) = answer(&pool, &place, stream, &tx).await {
                        tracing::debug!("pool service: {e}");
                    }
                });
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    let removed = pool.drain().await;
    pool.runner().wait_cleanups().await;
    removed
}

async fn answer(
    pool: &Pool,
    place: &Place,
    stream: UnixStream,
    drain: &tokio::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?.pid();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(&mut r, MAX_LINE)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => serde_json::json!({ "error": format!("bad request: {e}") }),
        Ok(Request::Status) => serde_json::to_value(StatusReply {
            status: pool.status(),
            pid: std::process::id(),
            runtime: pool.runner().runtime_binary().cloned(),
            place: place.clone(),
        })?,
        Ok(Request::Remove { id, place: theirs }) => {
            let reply = remove(pool.runner(), place, &theirs, &id, peer).await;
            // A run handed back has ended: a refill waiting for it goes on.
            pool.run_ended();
            serde_json::to_value(reply)?
        }
        Ok(Request::Drain) => {
            let removed = pool.drain().await;
            let _ = drain.try_send(());
            serde_json::to_value(DrainReply { removed })?
        }
        Ok(Request::Take {
            image,
            policy_hash,
            snapshot,
            place: theirs,
        }) => {
            let policy = pool.policy();
            let why_not = if theirs != *place {
                Some("the pool serves another containerd, namespace, FIFO root or runtime binary")
            } else if image != policy.image || policy_hash != pool.policy_hash() {
                Some("the pool serves another image or policy")
            } else {
                None
            };
            let got = match why_not {
                Some(reason) => Err(reason.to_string()),
                // The caller hands the run back for removal when it ends: the refill waits
                // for that (`Pool::take_held`).
                None => pool
                    .take_held(snapshot.as_deref())
                    .ok_or_else(|| "empty".to_string()),
            };
            match got {
                Err(reason) => serde_json::to_value(TakeReply {
                    sandbox: None,
                    reason: Some(reason),
                })?,
                Ok(p) => {
                    hand_over(place, &p, peer);
                    let mut text = serde_json::to_string(&serde_json::json!({ "sandbox": &p }))?;
                    text.push('\n');
                    w.write_all(text.as_bytes()).await?;
                    // Our FIFO ends stay open until the caller has opened its own (it says
                    // so, or hangs up): the shim would see stdin end otherwise.
                    let mut ack = String::new();
                    let _ = tokio::time::timeout(
                        ACK_TIMEOUT,
                        tokio::io::AsyncReadExt::take(&mut r, MAX_LINE).read_line(&mut ack),
                    )
                    .await;
                    drop(p);
                    return Ok(());
                }
            }
        }
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

/// Answers a `remove` of run `id` in `theirs` from `peer` for a process serving `place`
/// through `runner`: refused unless the places name the same objects and
/// [`removal_refused`] finds nothing; else the run is removed in `runner`'s background.
pub(crate) async fn remove(
    runner: &crate::runner::Runner,
    place: &Place,
    theirs: &Place,
    id: &str,
    peer: Option<i32>,
) -> RemoveReply {
    let reason = if theirs.same_objects(place) {
        removal_refused(place, id, peer)
    } else {
        Some("this process serves another containerd, namespace or FIFO root".into())
    };
    if reason.is_none() {
        runner.remove_later(id).await;
    }
    RemoveReply {
        removing: reason.is_none(),
        reason,
    }
}

/// Why run `id` may not be handed back by `peer`, or `None` after making this process its
/// owner: the id must be a run id (no path in it) and its directory must name the caller
/// as owner.
fn removal_refused(place: &Place, id: &str, peer: Option<i32>) -> Option<String> {
    let hex = id.strip_prefix(crate::runner::ID_PREFIX).unwrap_or("");
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some("not a run id".into());
    }
    let dir = place.fifo_root.join(id);
    let owner = crate::runner::read_owner(&dir);
    match peer.and_then(|p| u32::try_from(p).ok()) {
        Some(pid) if owner == Some(pid) => match write_owner(&dir, std::process::id()) {
            Ok(()) => None,
            Err(e) => Some(format!("{}: {e}", dir.display())),
        },
        _ => Some("the run is not the caller's".into()),
    }
}

/// Records the caller as the owner of the sandbox's run directory.
fn hand_over(place: &Place, p: &Prepared, peer: Option<i32>) {
    let dir = place.fifo_root.join(&p.id);
    match peer.and_then(|pid| u32::try_from(pid).ok()) {
        Some(pid) => {
            if let Err(e) = write_owner(&dir, pid) {
                tracing::warn!("pool: {}: {e}", dir.display());
            }
        }
        None => tracing::warn!("pool: caller's pid unknown; {} stays ours", p.id),
    }
}

/// A protocol error about the socket at `path`.
fn protocol_error(path: &Path) -> impl Fn(String) -> PoolError + Copy + '_ {
    move |message| PoolError::Protocol {
        path: path.to_path_buf(),
        message,
    }
}

/// An I/O error on the socket at `path`.
fn io_error(path: &Path) -> impl Fn(std::io::Error) -> PoolError + Copy + '_ {
    move |source| PoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sends one request to the service at `path` and reads its one-line answer.
pub async fn request<T: for<'de> Deserialize<'de>>(
    path: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<T, PoolError> {
    let (fail, io) = (protocol_error(path), io_error(path));
    let exchange = async {
        let mut s = UnixStream::connect(path).await.map_err(io)?;
        let mut text = serde_json::to_string(req).expect("a request always serializes");
        text.push('\n');
        s.write_all(text.as_bytes()).await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.map_err(io)?;
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&line) {
            if let Some(e) = m.get("error").and_then(|e| e.as_str()) {
                return Err(fail(e.to_string()));
            }
        }
        serde_json::from_str(&line).map_err(|e| fail(format!("bad answer: {e}")))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {timeout:?}")))?
}

/// Hands finished run `id` (in `place`) over to the service at `path` for removal;
/// `Ok(false)` when it refuses (the caller then removes the run itself or asks another).
pub async fn hand_back(path: &Path, id: &str, place: &Place) -> Result<bool, PoolError> {
    let req = Request::Remove {
        id: id.to_string(),
        place: place.clone(),
    };
    let reply: RemoveReply = request(path, &req, CLIENT_TIMEOUT).await?;
    if let Some(why) = &reply.reason {
        tracing::debug!("pool service would not remove {id}: {why}");
    }
    Ok(reply.removing)
}

/// Asks the pool at `path` for a sandbox; `Ok(None)` when no service listens there or it
/// has none to give.
pub async fn take(
    path: &Path,
    image: &str,
    policy_hash: &str,
    snapshot: Option<&str>,
    place: &Place,
) -> Result<Option<Prepared>, PoolError> {
    if !path.exists() {
        return Ok(None);
    }
    let req = Request::Take {
        image: image.to_string(),
        policy_hash: policy_hash.to_string(),
        snapshot: snapshot.map(str::to_string),
        place: place.clone(),
    };
    match take_exchange(path, &req).await {
        Ok(r) => Ok(r),
        // A stale socket with no service behind it: cold start.
        Err(PoolError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The take exchange: request, answer, then (with a sandbox) our FIFO ends opened and the
/// acknowledgement sent, after which the service closes its ends.
async fn take_exchange(path: &Path, req: &Request) -> Result<Option<Prepared>, PoolError> {
    let (fail, io) = (protocol_error(path), io_error(path));
    let exchange = async {
        let s = UnixStream::connect(path).await.map_err(io)?;
        let (r, mut w) = s.into_split();
        let mut text = serde_json::to_string(req).expect("a request always serializes");
        text.push('\n');
        w.write_all(text.as_bytes()).await.map_err(io)?;
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await.map_err(io)?;
        let reply: TakeReply =
            serde_json::from_str(&line).map_err(|e| fail(format!("bad answer: {e}")))?;
        let Some(mut p) = reply.sandbox else {
            return Ok(None);
        };
        p.open_fifos().map_err(io)?;
        w.write_all(b"{\"op\":\"taken\"}\n").await.map_err(io)?;
        Ok(Some(p))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| fail(format!("no answer within {CLIENT_TIMEOUT:?}")))?
}

/// The sockets under `dir`, sorted.
pub fn sockets(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_owner_may_hand_a_run_back_and_only_by_its_id() {
        let t = tempfile::tempdir().unwrap();
        let place = Place {
            address: "/x".into(),
            namespace: "n".into(),
            fifo_root: t.path().to_path_buf(),
            runc_binary: None,
        };
        let dir = t.path().join("stk-00ff");
        std::fs::create_dir(&dir).unwrap();
        write_owner(&dir, 4242).unwrap();
        let refused = |id: &str, peer: Option<i32>| removal_refused(&place, id, peer);
        // (id, caller pid) → refused?
        let table: &[(&str, Option<i32>, bool)] = &[
            ("stk-00ff", Some(1), true),           // someone else's run
            ("stk-00ff", None, true),              // caller unknown
            ("stk-../stk-00ff", Some(4242), true), // a path, not an id
            ("stk-", Some(4242), true),
            ("other-00ff", Some(4242), true),
            ("stk-0000", Some(4242), true), // no such run: no owner
        ];
        for &(id, peer, want) in table {
            assert_eq!(refused(id, peer).is_some(), want, "{id} from {peer:?}");
        }
        assert_eq!(crate::runner::read_owner(&dir), Some(4242));
        assert_eq!(refused("stk-00ff", Some(4242)), None);
        assert_eq!(crate::runner::read_owner(&dir), Some(std::process::id()));
    }

    #[test]
    fn requests_round_trip_as_single_json_lines() {
        let place = Place {
            address: "/run/c.sock".into(),
            namespace: "ns".into(),
            fifo_root: "/run/f".into(),
            runc_binary: None,
        };
        let cases = [
            (
                Request::Take {
                    image: "busybox".into(),
                    policy_hash: "sha256:ab".into(),
                    snapshot: None,
                    place: place.clone(),
                },
                r#"{"op":"take","image":"busybox","policy_hash":"sha256:ab","address":"/run/c.sock","namespace":"ns","fifo_root":"/run/f"}"#,
            ),
            (
                Request::Take {
                    image: "busybox".into(),
                    policy_hash: "sha256:ab".into(),
                    snapshot: Some("sha256:c1".into()),
                    place: place.clone(),
                },
                r#"{"op":"take","image":"busybox","policy_hash":"sha256:ab","snapshot":"sha256:c1","address":"/run/c.sock","namespace":"ns","fifo_root":"/run/f"}"#,
            ),
            (Request::Status, r#"{"op":"status"}"#),
            (Request::Drain, r#"{"op":"drain"}"#),
            (
                Request::Remove {
                    id: "stk-0a".into(),
                    place: Place {
                        address: "/run/c.sock".into(),
                        namespace: "ns".into(),
                        fifo_root: "/run/f".into(),
                        runc_binary: None,
                    },
                },
                r#"{"op":"remove","id":"stk-0a","address":"/run/c.sock","namespace":"ns","fifo_root":"/run/f"}"#,
            ),
        ];
        for (req, want) in cases {
            let text = serde_json::to_string(&req).unwrap();
            assert_eq!(text, want);
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"exec"}"#).is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_means_no_pool() {
        let t = tempfile::tempdir().unwrap();
        let place = Place {
            address: "/x".into(),
            namespace: "n".into(),
            fifo_root: "/f".into(),
            runc_binary: None,
        };
        let got = take(&t.path().join("none.sock"), "busybox", "h", None, &place)
            .await
            .unwrap();
        assert!(got.is_none());
        assert!(sockets(&t.path().join("missing")).is_empty());
    }

    #[tokio::test]
    async fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("pool/a.sock");
        let l = bind(&p).await.unwrap();
        let again = bind(&p).await.unwrap_err();
        assert!(again.to_string().contains("already listens"), "{again}");
        drop(l);
        bind(&p).await.unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
