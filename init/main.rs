//! `stockade-init`: pid 1 of a long-lived stockade sandbox.
//!
//! ```text
//! stockade-init                  hold the sandbox open, reaping every orphan
//! stockade-init -- CMD [ARG]...  run CMD as the only child, forward signals to it,
//!                                reap orphans, exit as CMD did
//! ```
//!
//! With no arguments it has no child of its own: processes started in the sandbox later
//! (`exec`) are orphaned into it when their parents exit, and it reaps them. SIGTERM,
//! SIGINT, SIGHUP or SIGQUIT sent from outside the sandbox (the runtime's kill) end it with
//! status 0 at once (so stopping a sandbox does not wait for SIGKILL); sent by a process of
//! the sandbox they are ignored, so nothing inside can end it. SIGUSR1, SIGUSR2 and
//! SIGWINCH are ignored.
//!
//! With `-- CMD [ARG]...` it starts CMD (looked up on `PATH` when it holds no `/`) and
//! forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to it. When
//! CMD exits it exits with CMD's status, or 128+N when signal N ended CMD (the kernel
//! then ends whatever else is left in the pid namespace). When CMD cannot be started it
//! says why on stderr and exits 127 (not found) or 126 (any other reason).
//!
//! In both modes it makes itself non-dumpable and serves the exec door (`exec.rs`): the
//! host starts commands through it as its children, under its own confinement, without a
//! runtime process. The door is served by a thread of its own and one thread per exec.
//!
//! How: the signals above and SIGCHLD are blocked from the start (in every thread) and
//! taken one at a time by the main thread with `sigwaitinfo`, which sleeps in the kernel
//! until one is pending and says who sent it; no handler runs asynchronously and nothing
//! polls. Blocked signals are queued even for a pid namespace's init, which the kernel
//! otherwise protects from signals it has no handler for. On SIGCHLD every exited child is
//! reaped (`waitpid(-1, WNOHANG)` until none is left) under the lock the exec door
//! registers its children with, and a door child's status goes to its handler. Every
//! child gets an empty signal mask and default dispositions (the standard library's spawn
//! resets both).
//!
//! It is built as a static executable with no crate dependencies and needs nothing from
//! the sandbox's image. The signal loop allocates nothing; nothing panics (and it is built
//! with `panic=abort`); a bad exec request ends that exec, never the init.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::raw::c_int;
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

mod exec;

// Signal numbers as Linux has them on these architectures (asm-generic and x86); others
// (alpha, mips, parisc, sparc) number them differently.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x",
    target_arch = "loongarch64"
)))]
compile_error!("stockade-init: signal numbers for this architecture are not listed");

const SIGHUP: c_int = 1;
const SIGINT: c_int = 2;
const SIGQUIT: c_int = 3;
const SIGUSR1: c_int = 10;
const SIGUSR2: c_int = 12;
const SIGTERM: c_int = 15;
const SIGCHLD: c_int = 17;
const SIGWINCH: c_int = 28;

/// The signals taken with `sigwait`: SIGCHLD, and those passed on to the child (`--`
/// mode).
const WAITED: [c_int; 8] = [
    SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
];

/// Signals that end the init when it has no child.
const ENDS_HOLDER: [c_int; 4] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT];

const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const WNOHANG: c_int = 1;
const EINTR: i32 = 4;

/// The kernel's `siginfo_t` (128 bytes); only `si_pid` is read ([`sender`]).
#[repr(C)]
struct SigInfo([u64; 16]);

/// The C library's `sigset_t` (1024 bits in glibc and musl); only ever handled through
/// `sigemptyset`/`sigaddset`.
#[repr(C)]
struct SigSet([u64; 16]);

extern "C" {
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, signum: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> c_int;
    fn waitpid(pid: i32, status: *mut c_int, options: c_int) -> i32;
    fn kill(pid: i32, sig: c_int) -> c_int;
}

const USAGE: &str = "usage: stockade-init [-- CMD [ARG]...]";

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match args.split_first() {
        None => None,
        Some((first, rest)) if first == "--" && !rest.is_empty() => Some(rest),
        Some((first, _)) if first == "-h" || first == "--help" => {
            println!("{USAGE}");
            exit(0);
        }
        Some(_) => {
            eprintln!("stockade-init: {USAGE}");
            exit(2);
        }
    };

    let set = set_of(&WAITED);
    // SAFETY: `set` is an initialised signal set that outlives the call; the old mask is
    // not asked for (null). The process has one thread, so the mask covers it.
    if unsafe { sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        eprintln!(
            "stockade-init: cannot block signals: {}",
            std::io::Error::last_os_error()
        );
        exit(125);
    }

    let child = command.map(|argv| spawn(&argv[0], &argv[1..]));
    // After blocking, so the door's threads inherit the mask and every signal comes here;
    // after the command, which so keeps pid 2 (a thread takes a number too).
    exec::open();
    // Orphans handed over before the signals were blocked left no pending SIGCHLD.
    if let Some(code) = reap(child) {
        exit(code);
    }
    loop {
        let (sig, from) = wait_signal(&set);
        if sig == SIGCHLD {
            if let Some(code) = reap(child) {
                exit(code);
            }
            continue;
        }
        match child {
            // The child may have exited and not yet been reaped: then this fails with
            // ESRCH or reaches a zombie, and the pending SIGCHLD ends the loop.
            // SAFETY: kill takes plain integers; `pid` is our own child, not yet reaped, so
            // the number cannot have been reused by another process.
            Some(pid) => unsafe {
                kill(pid, sig);
            },
            // Only from outside the sandbox (the runtime's kill, which has no pid in the
            // sandbox's pid namespace): a process of the sandbox cannot end it.
            None if ENDS_HOLDER.contains(&sig) && from == 0 => exit(0),
            None => {}
        }
    }
}

/// A signal set holding `signals`.
fn set_of(signals: &[c_int]) -> SigSet {
    let mut set = SigSet([0; 16]);
    // SAFETY: `set` is a valid, writable `sigset_t`-sized buffer for both calls, and every
    // signal number given is a valid one (so neither call can fail).
    unsafe {
        sigemptyset(&mut set);
        for sig in signals {
            sigaddset(&mut set, *sig);
        }
    }
    set
}

/// Has `command`'s child start with nothing blocked (the init blocks the signals it
/// waits for, and a signal mask survives exec).
fn unblock_in_child(command: &mut Command) {
    let empty = set_of(&[]);
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe call (`sigprocmask`) on a set built before the fork; it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if sigprocmask(SIG_SETMASK, &empty, std::ptr::null_mut()) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Starts the command with the init's stdio and environment and an empty signal mask; on
/// failure says why and exits as a shell would (127 not found, 126 otherwise).
fn spawn(program: &OsString, args: &[OsString]) -> i32 {
    let mut command = Command::new(program);
    command.args(args);
    unblock_in_child(&mut command);
    match command.spawn() {
        // Dropping the handle neither waits for nor kills the child; `reap` collects it.
        Ok(child) => child.id() as i32,
        Err(e) => {
            eprintln!(
                "stockade-init: cannot run {}: {e}",
                program.to_string_lossy()
            );
            exit(if e.kind() == ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    }
}

/// The next pending signal of `set`, sleeping until there is one, and its sender's pid as
/// the sandbox's pid namespace sees it (0: from outside it, or from the kernel).
fn wait_signal(set: &SigSet) -> (c_int, i32) {
    loop {
        let mut info = SigInfo([0; 16]);
        // SAFETY: `set` is initialised and `info` is a valid, writable `siginfo_t`; both
        // outlive the call.
        let sig = unsafe { sigwaitinfo(set, &mut info) };
        if sig > 0 {
            return (sig, sender(&info));
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(EINTR) {
            continue;
        }
        // Only EINVAL (a bad set) is left, which `set_of` rules out.
        eprintln!(
            "stockade-init: sigwaitinfo failed: {}",
            std::io::Error::last_os_error()
        );
        exit(125);
    }
}

/// `si_pid` of `info`: after `si_signo`, `si_errno` and `si_code`, at the start of the
/// union (aligned to a pointer).
fn sender(info: &SigInfo) -> i32 {
    let at = if cfg!(target_pointer_width = "64") { 16 } else { 12 };
    // SAFETY: viewing the 128-byte buffer as bytes.
    let bytes: &[u8; 128] = unsafe { &*(info as *const SigInfo).cast() };
    i32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reaps every child that has exited (children started through the exec door hand their
/// status to their handler); returns the exit code for `child`'s status when it was among
/// them.
fn reap(child: Option<i32>) -> Option<i32> {
    let mut code = None;
    exec::reap_with(|reaped| loop {
        let mut status: c_int = 0;
        // SAFETY: `status` is a valid place for the status word; -1 means any child.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid > 0 {
            if Some(pid) == child {
                code = Some(exit_code(status));
            }
            reaped(pid, status);
            continue;
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(EINTR) {
            continue;
        }
        // 0: children left, none exited; ECHILD: no children at all; anything else cannot
        // be helped by retrying.
        return;
    });
    code
}

/// A wait status as a shell reports it: the exit status, or 128+N for signal N.
fn exit_code(status: c_int) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        (status >> 8) & 0xff
    } else {
        128 + signal
    }
}
