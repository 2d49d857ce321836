//! The fast exec path: the command is started by the sandbox's own init through its exec
//! door (see `init/exec.rs`), with no runtime process and no shim work.
//!
//! The init holds one end of a `SOCK_SEQPACKET` socketpair at fd [`DOOR_FD`] and is
//! non-dumpable, so only a process with `CAP_SYS_PTRACE` over it (root on the host) can
//! take a copy, with `pidfd_open` + `pidfd_getfd`. Before anything is sent the copy is
//! checked: a `SOCK_SEQPACKET` socket whose peer (`SO_PEERCRED`) is the init itself. Each
//! exec makes a socketpair of its own and passes one end through the door in one
//! datagram, so concurrent execs from many host processes never interleave; the request
//! ([`encode`]: argv, environment, working directory, exactly what [`process_spec`]
//! computed) and the stdio (pipes made here) go on that private connection. The child
//! runs as a child of the init, so under exactly its confinement: the sandbox's user,
//! capabilities (none), NoNewPrivs, seccomp filter, AppArmor profile, rlimits,
//! oom_score_adj, namespaces and cgroup.
//!
//! [`route`] chooses: the fast path for a request without a terminal that runs as the
//! sandbox's own user (the init has no capabilities and cannot change user), unless
//! [`PATH_ENV`] is `runtime`. When the door cannot be taken or verified (an init without
//! one, a kernel without `pidfd_getfd`), or the init refuses the request (too large, too
//! many execs at once), the request goes back to the runtime path untouched. A timeout or
//! a cancel sends `K` (SIGKILL to the exec'd process alone); a caller that drops the
//! future closes the connection, and the init kills the process on the hang-up.
//!
//! The result is the runtime path's in every field, but for [`ExecResult::pid`]: the host
//! pid is read from the pidfd the init sends with its answer, and is 0 when the process
//! had already been reaped by then (a command that ends at once).
//!
//! [`process_spec`]: super::exec::process_spec

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::Process;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

use super::exec::{ExecRequest, ExecResult};
use super::SandboxError;
use crate::runner::engine::{feed, next_cancel, sinks};
use crate::runner::output::{pump, Pumped};
use crate::runner::session::SessionLimits;
use crate::runner::{Cancel, RunError, Stdin, DRAIN_GRACE, KILL_GRACE};

/// Environment variable choosing the exec path: `runtime` forces containerd's Tasks.Exec
/// (a runtime process per exec); unset, empty or `auto` lets [`route`] choose.
pub const PATH_ENV: &str = "STOCKADE_EXEC_PATH";

/// The init's fd holding the host's end of the door.
pub const DOOR_FD: i32 = 3;

/// Largest request the init accepts, in bytes; a larger one takes the runtime path.
pub const MAX_REQUEST: usize = 128 * 1024;

/// What every request starts with (the protocol's version).
pub const MAGIC: &[u8] = b"stockade-exec/1\0";

/// Which way an exec goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the init's door.
    Fast,
    /// Through containerd's Tasks.Exec.
    Runtime,
}

/// The way for an exec of `process` in a sandbox whose own process is `base`, with
/// [`PATH_ENV`] set to `forced`. Pure. Refuses an unknown value of [`PATH_ENV`].
pub fn route(
    tty: bool,
    process: &Process,
    base: &Process,
    forced: Option<&str>,
) -> Result<Route, SandboxError> {
    match forced.unwrap_or("") {
        "" | "auto" => {}
        "runtime" => return Ok(Route::Runtime),
        other => {
            return Err(SandboxError::Invalid {
                field: PATH_ENV,
                reason: format!("`{other}`: expected `auto` or `runtime`"),
            })
        }
    }
    if tty || process.user() != base.user() {
        return Ok(Route::Runtime);
    }
    Ok(Route::Fast)
}

/// The request for `process`: [`MAGIC`], then NUL-terminated fields: the argument count,
/// the arguments, the environment's count, its entries, the working directory. `None`
/// when a field holds a NUL or the whole is over [`MAX_REQUEST`]. Pure.
pub fn encode(process: &Process) -> Option<Vec<u8>> {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let cwd = process.cwd().to_str()?;
    let mut out = MAGIC.to_vec();
    let mut field = |s: &str| {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    field(&args.len().to_string());
    args.iter().for_each(|a| field(a));
    field(&env.len().to_string());
    env.iter().for_each(|e| field(e));
    field(cwd);
    let fields = args.len() + env.len() + 3;
    let nuls = out[MAGIC.len()..].iter().filter(|b| **b == 0).count();
    (nuls == fields && out.len() <= MAX_REQUEST).then_some(out)
}

/// A wait status as containerd reports an exit: the code, or 128+N for signal N. Pure.
pub fn status_of(wait_status: i32) -> u32 {
    let signal = wait_status & 0x7f;
    if signal == 0 {
        ((wait_status >> 8) & 0xff) as u32
    } else {
        128 + signal as u32
    }
}

/// The init's answer to a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Started, as this pid in the sandbox.
    Started(i32),
    /// Could not start: 127 (not found) or 126, and why.
    Failed(u8, String),
    /// Refused (too many execs, too large, malformed); the runtime path is taken.
    Refused(String),
    /// Exited with this wait status.
    Exited(i32),
}

/// Parses one datagram from the init. Pure.
pub fn answer(msg: &[u8]) -> Option<Answer> {
    let int = |b: &[u8]| Some(i32::from_le_bytes(b.get(..4)?.try_into().ok()?));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match msg.split_first()? {
        (b'S', rest) if rest.len() == 4 => Some(Answer::Started(int(rest)?)),
        (b'X', rest) if rest.len() == 4 => Some(Answer::Exited(int(rest)?)),
        (b'E', rest) => {
            let (code, why) = rest.split_first()?;
            Some(Answer::Failed(*code, text(why)))
        }
        (b'R', rest) => Some(Answer::Refused(text(rest))),
        _ => None,
    }
}

/// Runs `process` (computed from the sandbox's `base`) by the fast path when [`route`]
/// says so and the door answers: `Ok(Ok(result))` when it ran there, `Ok(Err(req))` to
/// take the runtime path with the request untouched. Marks the sandbox's activity before
/// and after, as the runtime path does.
pub(super) async fn try_run(
    sb: &super::Sandbox,
    base: &Process,
    process: &Process,
    req: ExecRequest,
    t0: std::time::Instant,
) -> Result<Result<ExecResult, Box<ExecRequest>>, SandboxError> {
    let forced = std::env::var(PATH_ENV).ok();
    if route(req.tty, process, base, forced.as_deref())? == Route::Runtime {
        return Ok(Err(Box::new(req)));
    }
    let run_dir = sb.run_dir();
    crate::runner::session::touch_activity(&run_dir).map_err(|source| SandboxError::State {
        path: run_dir.clone(),
        source,
    })?;
    let exec_id = super::exec::new_exec_id();
    let record = sb.record();
    let r = run(
        sb.id(),
        &exec_id,
        record.pid,
        sb.runner().proc_root(),
        process,
        req,
        record.limits,
    )
    .await;
    let _ = crate::runner::session::touch_activity(&run_dir);
    match r {
        Ok(r) => {
            let mut result = r?;
            result.duration_ms = (t0.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
            Ok(Ok(result))
        }
        Err(req) => Ok(Err(req)),
    }
}

/// Runs `process` through the door of the init whose host pid is `init_pid`. `Err(req)`
/// gives the request back, untouched, when the fast path is unavailable for it.
#[allow(clippy::too_many_arguments)]
async fn run(
    id: &str,
    exec_id: &str,
    init_pid: u32,
    proc_root: &Path,
    process: &Process,
    req: ExecRequest,
    limits: SessionLimits,
) -> Result<Result<ExecResult, SandboxError>, Box<ExecRequest>> {
    let Some(request) = encode(process) else {
        return Err(Box::new(req));
    };
    let Ok((conn, stdio)) = connect(init_pid, &request) else {
        return Err(Box::new(req));
    };
    let timeout = req
        .timeout
        .unwrap_or(Duration::from_millis(limits.exec_timeout_ms));
    let deadline = tokio::time::Instant::now() + timeout;
    let lost = |message: String| {
        SandboxError::Run(RunError::Lost {
            id: id.to_string(),
            message,
        })
    };
    let (first, pidfd) = match tokio::time::timeout_at(deadline, recv(&conn)).await {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => return Ok(Err(lost(format!("the sandbox's init: {e}")))),
        Err(_) => return Ok(Err(lost("the sandbox's init did not answer".into()))),
    };
    let command = req.argv.first().cloned().unwrap_or_default();
    match answer(&first) {
        Some(Answer::Started(_)) => {}
        Some(Answer::Failed(127, detail)) => {
            return Ok(Err(RunError::CommandNotFound { command, detail }.into()))
        }
        Some(Answer::Failed(_, detail)) => {
            return Ok(Err(
                RunError::CommandNotExecutable { command, detail }.into()
            ))
        }
        _ => return Err(Box::new(req)),
    }
    let pid = pidfd.map_or(0, |fd| host_pid(proc_root, &fd));
    Ok(drive(id, exec_id, conn, stdio, pid, req, deadline, limits).await)
}

/// Our ends of the exec's stdio: stdin's write end, stdout's and stderr's read ends.
struct Stdio {
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Takes and checks the door, then sends it one end of a new connection carrying
/// `request` and the child's stdio.
fn connect(init_pid: u32, request: &[u8]) -> std::io::Result<(UnixStream, Stdio)> {
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
    let pid = Pid::from_raw(init_pid as i32).ok_or(std::io::ErrorKind::InvalidInput)?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
    let door = pidfd_getfd(&pidfd, DOOR_FD, PidfdGetfdFlags::empty())?;
    // Only the init's own socketpair has the init as its peer.
    if rustix::net::sockopt::socket_type(&door)? != SocketType::SEQPACKET
        || rustix::net::sockopt::socket_peercred(&door)?.pid != pid
    {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from);
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    send(&ours, request, &[&in_r, &out_w, &err_w])?;
    send(&door, b"x", &[&theirs])?;
    // The reactor's registration; every read and write on it is a recvmsg or sendmsg.
    let ours = std::os::unix::net::UnixStream::from(ours);
    ours.set_nonblocking(true)?;
    Ok((
        UnixStream::from_std(ours)?,
        Stdio {
            stdin: in_w,
            stdout: out_r,
            stderr: err_r,
        },
    ))
}

/// Sends one datagram with `fds`, without blocking.
fn send(socket: &impl std::os::fd::AsFd, data: &[u8], fds: &[&OwnedFd]) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let n = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?;
    if n != data.len() {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    Ok(())
}

/// The next datagram from the init, with the fd it carried, if any. A hang-up (the init
/// has gone) is an error.
async fn recv(conn: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    loop {
        conn.readable().await?;
        let got = conn.try_io(Interest::READABLE, || {
            let mut buf = [0u8; 512];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let r = rustix::net::recvmsg(
                conn,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            )?;
            let mut fd = None;
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = m {
                    for f in fds {
                        fd.get_or_insert(f);
                    }
                }
            }
            Ok((buf[..r.bytes.min(buf.len())].to_vec(), fd))
        });
        match got {
            Ok((msg, _)) if msg.is_empty() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "hung up",
                ))
            }
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The host pid of the process behind `pidfd` (its `fdinfo`), 0 when it has been reaped.
fn host_pid(proc_root: &Path, pidfd: &OwnedFd) -> u32 {
    let path = proc_root
        .join("self/fdinfo")
        .join(pidfd.as_raw_fd().to_string());
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pid:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
        })
        .filter(|p| *p > 0)
        .map_or(0, |p| p as u32)
}

/// Feeds stdin, pumps the output, and waits for the exit, killing on timeout or cancel.
#[allow(clippy::too_many_arguments)]
async fn drive(
    id: &str,
    exec_id: &str,
    conn: UnixStream,
    stdio: Stdio,
    pid: u32,
    req: ExecRequest,
    deadline: tokio::time::Instant,
    limits: SessionLimits,
) -> Result<ExecResult, SandboxError> {
    let ExecRequest {
        stdin,
        output,
        max_output,
        cancel,
        ..
    } = req;
    let lost = |message: String| {
        SandboxError::Run(RunError::Lost {
            id: id.to_string(),
            message,
        })
    };
    let io = |e: std::io::Error| lost(format!("exec stdio: {e}"));
    let out_rx = pipe::Receiver::from_owned_fd(stdio.stdout).map_err(io)?;
    let err_rx = pipe::Receiver::from_owned_fd(stdio.stderr).map_err(io)?;
    let cap = max_output.unwrap_or(limits.max_output);
    let (out_sink, err_sink) = sinks(output);
    let out_pump = tokio::spawn(pump(out_rx, out_sink, cap));
    let err_pump = tokio::spawn(pump(err_rx, err_sink, cap));
    let stdin_task = match stdin {
        // Dropping our end: the command reads end of file.
        Stdin::Null => None,
        stdin => {
            let tx = pipe::Sender::from_owned_fd(stdio.stdin).map_err(io)?;
            Some(tokio::spawn(feed(tx, stdin)))
        }
    };

    let mut cancel = cancel.as_ref().map(Cancel::subscribe);
    let mut timed_out = false;
    let mut cancelled_by = None;
    let mut kill_deadline = None;
    let wait_status = loop {
        tokio::select! {
            r = recv(&conn) => match r.map(|(m, _)| answer(&m)) {
                Ok(Some(Answer::Exited(ws))) => break ws,
                Ok(_) => continue,
                Err(e) => {
                    out_pump.abort();
                    err_pump.abort();
                    return Err(lost(format!("the sandbox's init: {e}")));
                }
            },
            _ = tokio::time::sleep_until(deadline), if !timed_out && cancelled_by.is_none() => {
                timed_out = true;
                kill_deadline = Some(tokio::time::Instant::now() + KILL_GRACE);
                let _ = send(&conn, b"K", &[]);
            }
            sig = next_cancel(&mut cancel), if cancelled_by.is_none() && !timed_out => {
                cancelled_by = Some(sig);
                kill_deadline = Some(tokio::time::Instant::now() + KILL_GRACE);
                let _ = send(&conn, b"K", &[]);
            }
            _ = sleep_until_some(kill_deadline) => {
                out_pump.abort();
                err_pump.abort();
                return Err(RunError::Unkillable { id: id.to_string() }.into());
            }
        }
    };
    if let Some(s) = stdin_task {
        s.abort();
    }
    // Processes it left in the background may hold its output open: read what comes within
    // the grace, then let go.
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        let o = (&mut Box::pin(out_pump)).await.unwrap_or_default();
        let e = err_pump.await.unwrap_or_default();
        (o, e)
    })
    .await;
    let (o, e): (Pumped, Pumped) = drained.unwrap_or_default();
    let status = status_of(wait_status);
    Ok(super::exec::finished(
        id,
        exec_id,
        status,
        timed_out,
        cancelled_by,
        &o,
        &e,
        pid,
    ))
}

/// Sleeps until `at`, or forever when it is `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
