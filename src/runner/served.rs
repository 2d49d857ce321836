//! `stockade run` served by a running `stockade serve`: the CLI as a thin client.
//!
//! A long-lived server holds what every run would otherwise redo: the containerd
//! connection, the host probe, the runtime's identity, the image cache, and the removal of
//! finished runs. When one answers on a socket of the removal directory
//! ([`super::handoff::DEFAULT_REMOVAL_DIR`]), `stockade run` reads and checks its policy
//! as always, then sends a [`RunOrder`] (its policy file's contents and flags, command,
//! working directory, and where it wants the run made) with its own stdin, stdout and
//! stderr attached (`SCM_RIGHTS`). The server runs the order through the same code as a
//! standalone run, writing the command's output and every message straight to those
//! descriptors, and answers with the exit code; the client exits with it.
//!
//! The server takes an order only when running it there changes nothing the user could
//! see: the client is the server's own user, in its mount namespace and root directory,
//! and wants the same containerd, namespace, FIFO root, disk root and runtime binary the
//! server uses. Otherwise it says why and the client runs standalone. A signal to the
//! client (SIGINT, SIGTERM, SIGHUP) is sent on as a cancel, and a client that goes away
//! cancels its run (as SIGHUP).
//!
//! The exchange, one JSON document a line:
//! 1. client → server: `{"op":"run", …RunOrder}` with three descriptors;
//! 2. server → client: a [`Verdict`];
//! 3. client → server, any number: `{"cancel": SIGNAL}`;
//! 4. server → client: `{"exit_code": N}` ([`Finished`]) once the output is written.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::Cancel;
use crate::policy::{Policy, PolicyOverrides};
use crate::pool::service::Place;

/// The version of the exchange; a server refuses any other.
pub const PROTOCOL: u32 = 1;

/// The longest order a server reads (a policy file is at most a few KiB).
pub const MAX_ORDER: usize = 256 * 1024;

/// How long a client waits for a server's verdict before running standalone.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(2);

/// The signal recorded when a client goes away mid-run.
const HANGUP: i32 = nix::sys::signal::Signal::SIGHUP as i32;

/// What `stockade run` asks a server to run, as it would have run it itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOrder {
    /// Must be [`PROTOCOL`].
    pub protocol: u32,
    /// Where the client would make the run (address as the client resolved it, namespace,
    /// FIFO root, runtime binary key): must be the server's.
    #[serde(flatten)]
    pub place: Place,
    /// Where the client would make sandbox disk images: must be the server's.
    pub disk_root: PathBuf,
    /// The client's working directory; relative paths in its policy and flags are resolved
    /// against it.
    pub cwd: PathBuf,
    /// The client's `STOCKADE_BIND_ROOTS`, if set.
    pub bind_roots: Option<String>,
    /// The client's policy file, parsed (the built-in defaults without one).
    pub policy: Policy,
    /// The policy file's name, for messages.
    pub policy_file: Option<String>,
    /// The client's policy flags.
    pub overrides: PolicyOverrides,
    /// The command after `--` (empty: the image's).
    pub command: Vec<String>,
    /// `--entrypoint`.
    pub entrypoint: Option<String>,
    /// `--json`: one result document on stdout instead of the output.
    pub json: bool,
    /// `-i`: the command reads the client's stdin.
    pub interactive: bool,
    /// `--cold`: never a pooled sandbox.
    pub cold: bool,
    /// Where pool services are asked for a prepared sandbox.
    pub pool_dir: PathBuf,
    /// The run log the client would append to (`None`: `--no-run-log`).
    pub run_log: Option<PathBuf>,
    /// Whether the client's locale is UTF-8 (how control sequences are neutralized on its
    /// terminal).
    pub utf8: bool,
}

/// A server's answer to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the server runs it.
    pub accepted: bool,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The server's pid.
    pub pid: u32,
}

/// The last line of an exchange: the run is over and its output written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// What the client exits with.
    pub exit_code: u8,
}

/// A client's message during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelLine {
    cancel: i32,
}

/// Why a served run failed on the client's side.
#[derive(Debug, Error)]
pub enum ServedError {
    /// The socket could not be used.
    #[error("stockade serve at {path}: {source}")]
    Io {
        /// The server's socket.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The server broke the exchange.
    #[error("stockade serve at {path}: {message}")]
    Protocol {
        /// The server's socket.
        path: PathBuf,
        /// What it did wrong.
        message: String,
    },
    /// The server went away after taking the run: whether the command ran is unknown.
    #[error("stockade serve (pid {pid}) ended during the run; `stockade gc` removes what it left")]
    ServerGone {
        /// The server's pid.
        pid: u32,
    },
}

/// What the server side needs of the one place it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// Its containerd, namespace, FIFO root and runtime binary.
    pub place: Place,
    /// Where it makes sandbox disk images.
    pub disk_root: PathBuf,
    /// Where it reads other processes' credentials and namespaces.
    pub proc_root: PathBuf,
}

/// Who asked, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its pid (0 when it is in another pid namespace).
    pub pid: u32,
    /// Its effective UID.
    pub uid: u32,
}

/// Why `serving` will not run `order` from `peer`, if it will not. The peer must be this
/// process's own user, in its mount namespace and under its root directory (so every path
/// means the same to both), and want the same objects made the same way.
pub fn refusal(serving: &Serving, order: &RunOrder, peer: Peer) -> Option<String> {
    if order.protocol != PROTOCOL {
        return Some(format!(
            "protocol {} asked, {PROTOCOL} served",
            order.protocol
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if peer.uid != me {
        return Some(format!(
            "the client's UID {} is not the server's {me}",
            peer.uid
        ));
    }
    if peer.pid == 0 {
        return Some("the client is in another pid namespace".into());
    }
    if let Some(why) = same_view(&serving.proc_root, peer.pid) {
        return Some(why);
    }
    if !order.place.same_objects(&serving.place) {
        return Some(format!(
            "the client wants containerd {} (namespace {}, FIFO root {}), the server uses {} ({}, {})",
            order.place.address.display(),
            order.place.namespace,
            order.place.fifo_root.display(),
            serving.place.address.display(),
            serving.place.namespace,
            serving.place.fifo_root.display()
        ));
    }
    if order.place.runc_binary != serving.place.runc_binary {
        return Some("the client asks for another runtime binary".into());
    }
    if order.disk_root != serving.disk_root {
        return Some("the client wants another disk root".into());
    }
    if !order.cwd.is_absolute() {
        return Some("the client's working directory is not absolute".into());
    }
    None
}

/// Why `pid` does not see the filesystem as this process does, if it does not: another
/// mount namespace or another root directory.
fn same_view(proc_root: &Path, pid: u32) -> Option<String> {
    let ns = |p: &Path| std::fs::read_link(p.join("ns/mnt")).ok();
    let theirs = proc_root.join(pid.to_string());
    let ours = proc_root.join("self");
    match (ns(&theirs), ns(&ours)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Some("the client is in another mount namespace".into()),
    }
    let id = |p: PathBuf| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
    };
    match (id(theirs.join("root")), id(ours.join("root"))) {
        (Some(a), Some(b)) if a == b => None,
        _ => Some("the client has another root directory".into()),
    }
}

/// A run a server took: the order, the client's descriptors and the line back to it.
#[derive(Debug)]
pub struct ServedRun {
    /// What to run.
    pub order: RunOrder,
    /// The client's stdin (read only with [`RunOrder::interactive`]).
    pub stdin: OwnedFd,
    /// The client's stdout.
    pub stdout: OwnedFd,
    /// The client's stderr.
    pub stderr: OwnedFd,
    /// Who asked.
    pub peer: Peer,
    /// The line back: cancels in, the exit code out.
    pub control: Control,
}

/// The server's end of a served run's connection.
#[derive(Debug)]
pub struct Control {
    reader: Option<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Control {
    /// Forwards the client's cancels to `cancel` until the connection ends; a client that
    /// goes away cancels as SIGHUP. Returns the task doing it (abort it once the run ends).
    pub fn forward_cancels(&mut self, cancel: Cancel) -> tokio::task::JoinHandle<()> {
        let reader = self.reader.take();
        tokio::spawn(async move {
            let Some(mut r) = reader else { return };
            let mut line = String::new();
            loop {
                line.clear();
                match tokio::io::AsyncReadExt::take(&mut r, 4096)
                    .read_line(&mut line)
                    .await
                {
                    Ok(0) | Err(_) => {
                        cancel.cancel(HANGUP);
                        return;
                    }
                    Ok(_) => {
                        if let Ok(c) = serde_json::from_str::<CancelLine>(&line) {
                            cancel.cancel(c.cancel);
                        }
                    }
                }
            }
        })
    }

    /// Tells the client the run is over: it exits with `exit_code`.
    pub async fn finish(mut self, exit_code: u8) -> std::io::Result<()> {
        let mut text = serde_json::to_string(&Finished { exit_code })?;
        text.push('\n');
        self.writer.write_all(text.as_bytes()).await?;
        self.writer.shutdown().await
    }
}

/// The first line on a connection (at most [`MAX_ORDER`] bytes, newline included) and the
/// descriptors that came with it. A client sends nothing more before the answer, so
/// nothing after the newline is kept.
pub async fn read_first(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut buf = vec![0u8; 16 * 1024];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let r = rustix::net::recvmsg(
                stream,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            )?;
            let mut got = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(f) = m {
                    got.extend(f);
                }
            }
            buf.truncate(r.bytes);
            Ok((buf, got))
        });
        match got {
            Ok((buf, got)) => {
                fds.extend(got);
                if buf.is_empty() {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                bytes.extend_from_slice(&buf);
                if let Some(end) = bytes.iter().position(|b| *b == b'\n') {
                    bytes.truncate(end + 1);
                    return Ok((bytes, fds));
                }
                if bytes.len() > MAX_ORDER {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "request line too long",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether `line` is a run order (`"op": "run"`).
pub fn is_order(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Op<'a> {
        #[serde(borrow)]
        op: Option<&'a str>,
    }
    serde_json::from_slice::<Op>(line).is_ok_and(|o| o.op == Some("run"))
}

/// Answers run order `line` (with `fds`) on `stream` for `serving`: a refusal is written
/// and `None` returned; an accepted order is acknowledged and returned for the caller to
/// run.
pub async fn accept(
    serving: &Serving,
    stream: UnixStream,
    line: &[u8],
    fds: Vec<OwnedFd>,
) -> std::io::Result<Option<ServedRun>> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        uid: cred.uid(),
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(line)
        .and_then(|mut v| {
            if let Some(m) = v.as_object_mut() {
                m.remove("op");
            }
            serde_json::from_value::<RunOrder>(v)
        })
        .map_err(|e| format!("bad order: {e}"));
    let (r, mut w) = stream.into_split();
    let refused = match (&parsed, fds.len()) {
        (Err(e), _) => Some(e.clone()),
        (Ok(_), n) if n != 3 => Some(format!("{n} descriptors sent, 3 wanted")),
        (Ok(order), _) => refusal(serving, order, peer),
    };
    let verdict = Verdict {
        accepted: refused.is_none(),
        reason: refused,
        pid: std::process::id(),
    };
    let mut text = serde_json::to_string(&verdict)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    let (Ok(order), None) = (parsed, verdict.reason) else {
        w.shutdown().await?;
        return Ok(None);
    };
    let mut fds = fds.into_iter();
    let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
        return Ok(None);
    };
    Ok(Some(ServedRun {
        order,
        stdin,
        stdout,
        stderr,
        peer,
        control: Control {
            reader: Some(BufReader::new(r)),
            writer: w,
        },
    }))
}

/// A run a server took for this process: wait for its end with [`Session::finish`].
#[derive(Debug)]
pub struct Session {
    path: PathBuf,
    pid: u32,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// Offers `order` to the servers listening at `sockets` in turn, with `stdio` (the client's
/// stdin, stdout and stderr) attached; the session of the first that takes it, or `None`
/// (each refusal logged at debug level) when none does.
pub async fn offer(
    sockets: &[PathBuf],
    order: &RunOrder,
    stdio: [BorrowedFd<'_>; 3],
) -> Option<Session> {
    let mut text = serde_json::to_value(order).expect("an order always serializes");
    if let Some(m) = text.as_object_mut() {
        m.insert("op".into(), "run".into());
    }
    let mut line = serde_json::to_vec(&text).expect("an order always serializes");
    line.push(b'\n');
    for path in sockets {
        match tokio::time::timeout(VERDICT_TIMEOUT, offer_one(path, &line, &stdio)).await {
            Ok(Ok(Ok(session))) => return Some(session),
            Ok(Ok(Err(why))) => tracing::debug!("{}: {why}", path.display()),
            Ok(Err(e)) => tracing::debug!("{e}"),
            Err(_) => tracing::debug!("{}: no verdict within {VERDICT_TIMEOUT:?}", path.display()),
        }
    }
    None
}

/// One offer: `Ok(Err(reason))` when the server refuses.
async fn offer_one(
    path: &Path,
    line: &[u8],
    stdio: &[BorrowedFd<'_>; 3],
) -> Result<Result<Session, String>, ServedError> {
    let io = |source| ServedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stream = UnixStream::connect(path).await.map_err(io)?;
    send_all(&stream, line, stdio).await.map_err(io)?;
    let (r, w) = stream.into_split();
    let mut reader = BufReader::new(r);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.map_err(io)?;
    let verdict: Verdict = serde_json::from_str(&answer).map_err(|e| ServedError::Protocol {
        path: path.to_path_buf(),
        message: format!("bad verdict: {e}"),
    })?;
    if !verdict.accepted {
        return Ok(Err(verdict.reason.unwrap_or_default()));
    }
    Ok(Ok(Session {
        path: path.to_path_buf(),
        pid: verdict.pid,
        reader,
        writer: w,
    }))
}

/// Sends `data` with `fds` attached to its first byte, then the rest.
async fn send_all(stream: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        stream.writable().await?;
        let r = stream.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if sent == 0 && !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(std::io::ErrorKind::InvalidInput.into());
            }
            Ok(rustix::net::sendmsg(
                stream.as_fd(),
                &[IoSlice::new(&data[sent..])],
                &mut control,
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            )?)
        });
        match r {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Session {
    /// The server's pid.
    pub fn server_pid(&self) -> u32 {
        self.pid
    }

    /// The server's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the run's end, sending each signal `signals` yields on as a cancel; the
    /// exit code to exit with.
    pub async fn finish(
        mut self,
        mut signals: tokio::sync::mpsc::UnboundedReceiver<i32>,
    ) -> Result<u8, ServedError> {
        let mut line = String::new();
        let mut open = true;
        loop {
            tokio::select! {
                r = self.reader.read_line(&mut line) => {
                    let gone = ServedError::ServerGone { pid: self.pid };
                    return match r {
                        Ok(0) | Err(_) => Err(gone),
                        Ok(_) => serde_json::from_str::<Finished>(&line)
                            .map(|f| f.exit_code)
                            .map_err(|e| ServedError::Protocol {
                                path: self.path.clone(),
                                message: format!("bad end of run: {e}"),
                            }),
                    };
                }
                sig = signals.recv(), if open => match sig {
                    Some(s) => {
                        let mut text = serde_json::to_string(&CancelLine { cancel: s })
                            .expect("a cancel always serializes");
                        text.push('\n');
                        let _ = self.writer.write_all(text.as_bytes()).await;
                    }
                    None => open = false,
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "served_tests.rs"]
mod tests;
