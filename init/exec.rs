//! The exec door: how the host starts a command in the sandbox through the init, without a
//! runtime process.
//!
//! At start [`open`] makes a `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)` that must
//! land on fds [`DOOR_FD`] (the door, which only the host takes, with `pidfd_getfd`) and
//! [`SERVE_FD`] (served by a thread). The init is non-dumpable, so no process of the
//! sandbox can ptrace it, open its `/proc/1/fd/*` or `pidfd_getfd` from it; the pair has no
//! name to connect to; and every fd the init holds or receives is close-on-exec, so no
//! child inherits one.
//!
//! Protocol (every message is one datagram):
//! - host → door: one byte with one fd in `SCM_RIGHTS`: one end of a socketpair of the
//!   host's, private to this exec ("the connection");
//! - host → connection: the request ([`parse`]) with three fds (stdin, stdout, stderr);
//! - init → connection: `S` + the child's pid (i32 LE, in the sandbox), with the child's
//!   pidfd when one could be made; or `E` + a code (127 not found, 126 cannot run) + why;
//!   or `R` + why the request was refused (too many execs, too large, malformed);
//! - host → connection: `K`: SIGKILL the child; a hang-up (the host end closed) does too;
//! - init → connection: `X` + the wait status (i32 LE) when the child has exited.
//!
//! The child's status reaches its handler, not only the reaper: the handler spawns and
//! registers the child under the lock the reaper takes around `waitpid`, and the reaper
//! writes the status of a registered child to that child's notify pipe. A child is killed
//! only while it is registered (not yet reaped), so its pid cannot have been reused.
//! At most [`MAX_EXECS`] execs are served at once and a request is at most
//! [`MAX_REQUEST`] bytes; past either the request is refused. Nothing here panics or ends
//! the init: a failure ends one exec, or the door.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::{c_int, c_long, c_short, c_void};
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::kill;

/// The host's end of the door.
pub const DOOR_FD: RawFd = 3;
/// The init's end of the door.
pub const SERVE_FD: RawFd = 4;
/// Execs served at once; more are refused.
pub const MAX_EXECS: usize = 64;
/// Largest request, in bytes; a larger one is refused.
pub const MAX_REQUEST: usize = 128 * 1024;
/// What every request starts with.
pub const MAGIC: &[u8] = b"stockade-exec/1\0";

const AF_UNIX: c_int = 1;
const SOCK_SEQPACKET: c_int = 5;
const SOCK_CLOEXEC: c_int = 0o2000000;
const O_CLOEXEC: c_int = 0o2000000;
const SOL_SOCKET: c_int = 1;
const SCM_RIGHTS: c_int = 1;
const MSG_TRUNC: c_int = 0x20;
const MSG_CTRUNC: c_int = 0x8;
const MSG_NOSIGNAL: c_int = 0x4000;
const MSG_CMSG_CLOEXEC: c_int = 0x4000_0000;
const PR_SET_DUMPABLE: c_int = 4;
const POLLIN: c_short = 1;
const SIGKILL: c_int = 9;
const EINTR: i32 = 4;
const SYS_PIDFD_OPEN: c_long = 434;
/// Room for the `cmsghdr` of up to four fds.
const CONTROL_WORDS: usize = 4;

#[repr(C)]
struct IoVec {
    base: *mut c_void,
    len: usize,
}

/// The kernel's `struct user_msghdr`, which the C libraries' `msghdr` matches on Linux.
#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *mut IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

extern "C" {
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut [c_int; 2]) -> c_int;
    fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn recvmsg(fd: c_int, msg: *mut MsgHdr, flags: c_int) -> isize;
    fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int;
    fn pipe2(fds: *mut [c_int; 2], flags: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
    fn syscall(n: c_long, ...) -> c_long;
}

/// Children started through the door and not yet reaped: pid and the write end of the
/// pipe their handler waits on.
static REGISTRY: Mutex<Vec<(i32, OwnedFd)>> = Mutex::new(Vec::new());
/// Execs being served.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

fn registry() -> MutexGuard<'static, Vec<(i32, OwnedFd)>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reaps with `reap` (which calls `waitpid` and returns each reaped pid with its status)
/// under the registry's lock, handing each registered child's status to its handler.
pub fn reap_with(mut reap: impl FnMut(&mut dyn FnMut(i32, c_int))) {
    let mut reg = registry();
    reap(&mut |pid, status| {
        if let Some(i) = reg.iter().position(|(p, _)| *p == pid) {
            let (_, notify) = reg.swap_remove(i);
            let bytes = status.to_le_bytes();
            // SAFETY: `notify` is an open pipe's write end and `bytes` is valid for its
            // length. A fresh, empty pipe takes 4 bytes without blocking.
            unsafe { write(notify.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        }
    });
}

/// Makes the init non-dumpable and opens the door, serving it on a thread of its own.
/// Must be called with the signals the main loop waits for already blocked (the thread
/// inherits the mask). Returns whether the door is open; when it is not, the host uses
/// the runtime.
pub fn open() -> bool {
    // SAFETY: prctl with integer arguments; PR_SET_DUMPABLE takes one.
    if unsafe { prctl(PR_SET_DUMPABLE, 0 as std::os::raw::c_ulong) } != 0 {
        // Without it, processes of the sandbox's user could reach the door.
        return false;
    }
    let mut sv = [-1; 2];
    // SAFETY: `sv` is a valid place for two fds.
    if unsafe { socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, &mut sv) } != 0 {
        return false;
    }
    if sv != [DOOR_FD, SERVE_FD] {
        // Something already held the fixed numbers: no door rather than a wrong one.
        // SAFETY: both are fds just made by socketpair and owned by nothing else.
        unsafe {
            close(sv[0]);
            close(sv[1]);
        }
        return false;
    }
    // SAFETY: SERVE_FD was just made and is owned by nothing else; DOOR_FD stays open,
    // unowned, for the host to take.
    let serve = unsafe { OwnedFd::from_raw_fd(SERVE_FD) };
    std::thread::Builder::new()
        .name("door".into())
        .stack_size(64 * 1024)
        .spawn(move || door(serve))
        .is_ok()
}

/// Takes connections from the door, one thread each.
fn door(serve: OwnedFd) {
    loop {
        let mut byte = [0u8; 1];
        let conn = match receive(&serve, &mut byte) {
            Ok(Received { fds, .. }) => fds.into_iter().next(),
            Err(e) if e.raw_os_error() == Some(EINTR) => continue,
            // The door itself is broken: execs go through the runtime from now on.
            Err(_) => return,
        };
        let Some(conn) = conn else { continue };
        if ACTIVE.fetch_add(1, Ordering::SeqCst) >= MAX_EXECS {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
            reply(&conn, b"Rtoo many execs at once", None);
            continue;
        }
        let spawned = std::thread::Builder::new()
            .name("exec".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                serve_exec(&conn);
                ACTIVE.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One datagram and the fds that came with it.
struct Received {
    len: usize,
    flags: c_int,
    fds: Vec<OwnedFd>,
}

/// Receives one datagram into `buf`, with up to four fds (close-on-exec).
fn receive(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<Received> {
    let mut control = [0u64; CONTROL_WORDS + 2];
    let mut iov = IoVec {
        base: buf.as_mut_ptr().cast(),
        len: buf.len(),
    };
    let mut msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: std::mem::size_of_val(&control),
        flags: 0,
    };
    // SAFETY: every pointer in `msg` points at a live buffer of the stated length.
    let n = unsafe { recvmsg(fd.as_raw_fd(), &mut msg, MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fds = fds_of(&control, msg.controllen.min(std::mem::size_of_val(&control)));
    Ok(Received {
        len: n as usize,
        flags: msg.flags,
        fds,
    })
}

/// Size of a `cmsghdr`: `cmsg_len` (a `size_t`) and two ints.
const CMSG_HDR: usize = std::mem::size_of::<usize>() + 8;

/// The fds of every SCM_RIGHTS message among the first `len` bytes of `control`.
fn fds_of(control: &[u64], len: usize) -> Vec<OwnedFd> {
    // SAFETY: reading the u64 buffer as bytes; `len` is at most its size in bytes.
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(control.as_ptr().cast(), len) };
    let word = std::mem::size_of::<usize>();
    let mut fds = Vec::new();
    let mut at = 0;
    while at + CMSG_HDR <= len {
        let mut l = [0u8; 8];
        l[..word].copy_from_slice(&bytes[at..at + word]);
        let cmsg_len = if word == 8 {
            u64::from_ne_bytes(l) as usize
        } else {
            u32::from_ne_bytes([l[0], l[1], l[2], l[3]]) as usize
        };
        let level = i32::from_ne_bytes(bytes[at + word..at + word + 4].try_into().unwrap_or([0; 4]));
        let ty = i32::from_ne_bytes(bytes[at + word + 4..at + word + 8].try_into().unwrap_or([0; 4]));
        if cmsg_len < CMSG_HDR || at + cmsg_len > len {
            break;
        }
        if level == SOL_SOCKET && ty == SCM_RIGHTS {
            for chunk in bytes[at + CMSG_HDR..at + cmsg_len].chunks_exact(4) {
                let raw = i32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                // SAFETY: the kernel installed this fd for us just now; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        at += (cmsg_len + word - 1) / word * word;
    }
    fds
}

/// Sends one datagram, with `fd` in SCM_RIGHTS when given. Errors are dropped: the host
/// has gone, and the handler ends.
fn reply(conn: &OwnedFd, data: &[u8], fd: Option<&OwnedFd>) {
    let mut control = [0u64; 3];
    let mut iov = IoVec {
        base: data.as_ptr() as *mut c_void,
        len: data.len(),
    };
    let mut controllen = 0;
    if let Some(fd) = fd {
        let bytes: &mut [u8] =
            // SAFETY: viewing the u64 buffer as bytes, within its size.
            unsafe { std::slice::from_raw_parts_mut(control.as_mut_ptr().cast(), 24) };
        let word = std::mem::size_of::<usize>();
        let len = CMSG_HDR + 4;
        if word == 8 {
            bytes[..8].copy_from_slice(&(len as u64).to_ne_bytes());
        } else {
            bytes[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        }
        bytes[word..word + 4].copy_from_slice(&SOL_SOCKET.to_ne_bytes());
        bytes[word + 4..word + 8].copy_from_slice(&SCM_RIGHTS.to_ne_bytes());
        bytes[CMSG_HDR..CMSG_HDR + 4].copy_from_slice(&fd.as_raw_fd().to_ne_bytes());
        controllen = (len + word - 1) / word * word;
    }
    let msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: if controllen == 0 {
            std::ptr::null_mut()
        } else {
            control.as_mut_ptr().cast()
        },
        controllen,
        flags: 0,
    };
    // SAFETY: every pointer in `msg` points at a live buffer of the stated length.
    unsafe { sendmsg(conn.as_raw_fd(), &msg, MSG_NOSIGNAL) };
}

/// A request: the command, its whole environment and its working directory.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub argv: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub cwd: Vec<u8>,
}

/// Parses `MAGIC`, then NUL-terminated fields: the argument count in decimal, the
/// arguments, the environment's count, its `K=V` entries, the working directory. `None`
/// when it is anything else.
pub fn parse(data: &[u8]) -> Option<Request> {
    let rest = data.strip_prefix(MAGIC)?;
    let mut fields = rest.split(|b| *b == 0);
    // The data ends with a NUL, so the last split is empty.
    if rest.last() != Some(&0) {
        return None;
    }
    let mut count = || -> Option<usize> {
        let f = fields.next()?;
        if f.is_empty() || f.len() > 7 || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(f).ok()?.parse().ok()
    };
    let argc = count()?;
    if argc == 0 || argc > rest.len() {
        return None;
    }
    let argv: Vec<Vec<u8>> = (0..argc)
        .map(|_| fields.next().map(<[u8]>::to_vec))
        .collect::<Option<_>>()?;
    let envc = {
        let f = fields.next()?;
        if f.is_empty() || f.len() > 7 || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(f).ok()?.parse::<usize>().ok()?
    };
    if envc > rest.len() {
        return None;
    }
    let env: Vec<Vec<u8>> = (0..envc)
        .map(|_| fields.next().map(<[u8]>::to_vec))
        .collect::<Option<_>>()?;
    let cwd = fields.next()?.to_vec();
    if fields.next() != Some(&[][..]) || fields.next().is_some() {
        return None;
    }
    if argv[0].is_empty() || !cwd.starts_with(b"/") || env.iter().any(|kv| !kv.contains(&b'=')) {
        return None;
    }
    Some(Request { argv, env, cwd })
}

/// Serves one exec on its connection: start, then the exit status; SIGKILL on `K` or a
/// hang-up.
fn serve_exec(conn: &OwnedFd) {
    let mut buf = vec![0u8; MAX_REQUEST + 1];
    let got = match receive(conn, &mut buf) {
        Ok(r) => r,
        Err(_) => return,
    };
    if got.len == 0 && got.fds.is_empty() {
        return;
    }
    if got.len > MAX_REQUEST || got.flags & (MSG_TRUNC | MSG_CTRUNC) != 0 {
        return reply(conn, b"Rrequest too large", None);
    }
    let Ok::<[OwnedFd; 3], _>([stdin, stdout, stderr]) = got.fds.try_into() else {
        return reply(conn, b"Rexpected three fds", None);
    };
    let Some(req) = parse(&buf[..got.len]) else {
        return reply(conn, b"Rmalformed request", None);
    };
    drop(buf);
    let mut notify = [-1; 2];
    // SAFETY: `notify` is a valid place for two fds.
    if unsafe { pipe2(&mut notify, O_CLOEXEC) } != 0 {
        return reply(conn, b"Rcannot make a pipe", None);
    }
    // SAFETY: both were just made by pipe2 and are owned by nothing else.
    let (wait_end, notify_end) =
        unsafe { (OwnedFd::from_raw_fd(notify[0]), OwnedFd::from_raw_fd(notify[1])) };

    let mut argv = req.argv.into_iter().map(OsString::from_vec);
    let Some(program) = argv.next() else { return };
    let mut command = Command::new(&program);
    command.args(argv).env_clear();
    let mut has_home = false;
    for kv in req.env {
        let at = kv.iter().position(|b| *b == b'=').unwrap_or(kv.len());
        let (k, v) = kv.split_at(at);
        has_home |= k == b"HOME";
        command.env(OsString::from_vec(k.to_vec()), OsString::from_vec(v.get(1..).unwrap_or_default().to_vec()));
    }
    // As the runtime does for an exec whose environment has no HOME: the user's, which is
    // the init's own (same user).
    if let (false, Some(home)) = (has_home, std::env::var_os("HOME")) {
        command.env("HOME", home);
    }
    command
        .current_dir(OsString::from_vec(req.cwd))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    crate::unblock_in_child(&mut command);
    let pid = {
        let mut reg = registry();
        match command.spawn() {
            Ok(child) => {
                let pid = child.id() as i32;
                reg.push((pid, notify_end));
                pid
            }
            Err(e) => {
                drop(reg);
                drop(command);
                let code: u8 = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
                let mut msg = vec![b'E', code];
                msg.extend_from_slice(e.to_string().as_bytes());
                return reply(conn, &msg, None);
            }
        }
    };
    // Our copies of the child's stdio go with the command, so that its readers see end of
    // file when it (and whatever inherited them) is done.
    drop(command);
    // SAFETY: pidfd_open takes a pid and flags; the child is registered, so not reaped.
    let pidfd = unsafe { syscall(SYS_PIDFD_OPEN, pid as c_long, 0 as c_long) };
    // SAFETY: a non-negative result is a new fd owned by nothing else.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) });
    let mut started = vec![b'S'];
    started.extend_from_slice(&pid.to_le_bytes());
    reply(conn, &started, pidfd.as_ref());
    drop(pidfd);

    let mut listening = true;
    loop {
        let mut fds = [
            PollFd {
                fd: wait_end.as_raw_fd(),
                events: POLLIN,
                revents: 0,
            },
            PollFd {
                fd: conn.as_raw_fd(),
                events: POLLIN,
                revents: 0,
            },
        ];
        let n = if listening { 2 } else { 1 };
        // SAFETY: `fds` holds `n` valid entries.
        if unsafe { poll(fds.as_mut_ptr(), n, -1) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(EINTR) {
                continue;
            }
            // Cannot wait: end the child rather than leave it unwatched.
            kill_child(pid);
            listening = false;
            continue;
        }
        if fds[0].revents != 0 {
            let mut status = [0u8; 4];
            // SAFETY: `status` is valid for 4 bytes.
            let r = unsafe { read(wait_end.as_raw_fd(), status.as_mut_ptr().cast(), 4) };
            if r == 4 && listening {
                let mut msg = vec![b'X'];
                msg.extend_from_slice(&status);
                reply(conn, &msg, None);
            }
            return;
        }
        if fds[1].revents != 0 {
            let mut byte = [0u8; 16];
            match receive(conn, &mut byte) {
                Ok(r) if r.len > 0 && byte[0] == b'K' => kill_child(pid),
                Ok(r) if r.len > 0 => {}
                Err(e) if e.raw_os_error() == Some(EINTR) => {}
                // Hung up (or broken): the host has gone.
                _ => {
                    kill_child(pid);
                    listening = false;
                }
            }
        }
    }
}

/// SIGKILL to `pid` while it is registered (so not reaped: the number is still its).
fn kill_child(pid: i32) {
    let reg = registry();
    if reg.iter().any(|(p, _)| *p == pid) {
        // SAFETY: kill takes plain integers; `pid` is our unreaped child.
        unsafe { kill(pid, SIGKILL) };
    }
}
