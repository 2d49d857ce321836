//! stockade's sandbox init, installed by the library and run as pid 1 of a fresh pid
//! namespace on the host (util-linux `unshare --pid --fork --mount-proc --kill-child`): it
//! reaps orphans with and without a command of its own, exits as its command did, passes
//! SIGTERM on to it, ends at once on SIGTERM when it has none, and is a static executable
//! that runs from an empty root.
//!
//! Needs root (pid namespaces, chroot, an install directory only root can write) and
//! util-linux; without them the tests skip saying so, except under `CI=true`, where they
//! fail instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use stockade::init::{self, Installed};

const NEEDS: &[&str] = &[
    "/usr/bin/unshare",
    "/usr/bin/nsenter",
    "/usr/sbin/chroot",
    "/usr/bin/readelf",
    "/usr/bin/ldd",
    "/bin/sh",
];

/// How long anything may take to happen before the test gives up.
const PATIENCE: Duration = Duration::from_secs(10);

fn can_run(what: &str) -> bool {
    common::require_or_skip(what, NEEDS)
}

/// The init installed by the library under a scratch directory in `/run` (a root-owned
/// chain, as `install` requires); dropping the directory removes it.
fn installed() -> (tempfile::TempDir, Installed) {
    let t = tempfile::Builder::new()
        .prefix("stockade-init-it-")
        .tempdir_in("/run")
        .expect("tempdir in /run");
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let i = init::install(&t.path().join("init")).expect("install the init");
    settled(&i.path);
    (t, i)
}

/// Waits (bounded) until `path` can be executed. A process another test thread forked
/// while the install held the file open for writing keeps that descriptor until it execs,
/// and until then executing the file fails with ETXTBSY; once one exec has succeeded no
/// such descriptor is left, as nothing writes the file again.
fn settled(path: &Path) {
    const ETXTBSY: i32 = 26;
    for _ in 0..500 {
        match Command::new(path)
            .arg("--help")
            .stdout(Stdio::null())
            .status()
        {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot execute the installed init {}: {e}", path.display()),
            Ok(status) => {
                assert!(status.success(), "the installed init's --help: {status}");
                return;
            }
        }
    }
    panic!("{} stayed busy (ETXTBSY) for 5 s", path.display());
}

/// One field of `/proc/<pid>/stat` after the command name: state (0), ppid (1).
fn stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `pid`'s number in its own (innermost) pid namespace.
fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Polls `f` every 10 ms until it gives a value or [`PATIENCE`] runs out.
fn within<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An init running as pid 1 of its own pid namespace; `init` is its host pid. Dropping it
/// kills the init (and with it the namespace) and `unshare`, by pid.
struct Namespace {
    unshare: Child,
    init: i32,
}

impl Namespace {
    /// `unshare` running `program args` as pid 1 (optionally under `chroot root`); returns
    /// once the init has been exec'd and is asleep waiting for signals.
    fn start(init: &Path, args: &[&str], root: Option<&Path>) -> Namespace {
        let mut ns = Namespace::launch(init, args, root);
        let upid = ns.unshare.id() as i32;
        ns.init = within("the init exec'd", || {
            children(upid)
                .into_iter()
                .find(|&c| comm(c) == "stockade-init" && stat(c).is_some_and(|s| s.0 == 'S'))
        });
        ns
    }

    /// Like [`Namespace::start`], without waiting for the init (for one that may be gone
    /// before it could be seen).
    fn launch(init: &Path, args: &[&str], root: Option<&Path>) -> Namespace {
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"]);
        if let Some(root) = root {
            cmd.arg("/usr/sbin/chroot").arg(root);
        }
        cmd.arg(init).args(args).stdin(Stdio::null());
        let unshare = cmd.spawn().expect("spawn unshare");
        Namespace { unshare, init: 0 }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.init), sig).expect("signal the init");
    }

    /// `unshare`'s status (the init's own: unshare exits as its child did), waiting at most
    /// `limit`.
    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.unshare.try_wait().expect("wait for unshare") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Every process in the init's pid namespace but the init: (host pid, state, ppid).
    fn others(&self) -> Vec<(i32, char, i32)> {
        let Ok(ns) = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == self.init
                || std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .ok()
                    .as_ref()
                    != Some(&ns)
            {
                continue;
            }
            if let Some((state, ppid)) = stat(pid) {
                v.push((pid, state, ppid));
            }
        }
        v
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(None) = self.unshare.try_wait() {
            if self.init > 0 {
                let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(self.unshare.id() as i32), Signal::SIGKILL);
            let _ = self.unshare.wait();
        }
    }
}

/// Runs `script` in `ns` through `nsenter` (pid and mount namespaces, so it is not the
/// init's child) and waits for it.
fn nsenter(ns: &Namespace, script: &str) {
    let mut c = Command::new("/usr/bin/nsenter")
        .arg(format!("--target={}", ns.init))
        .args(["--pid", "--mount", "--", "/bin/sh", "-c", script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn nsenter");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > PATIENCE {
            let _ = c.kill();
            let _ = c.wait();
            panic!("nsenter {script:?} did not finish within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "nsenter {script:?}: {status}");
}

/// 50 double-forked `sleep 1`s: each one's parent (a subshell) exits at once, so all 50
/// are orphaned into the namespace's init while they still run.
const FIFTY_ORPHANS: &str = "for i in $(seq 50); do (sleep 1 &); done";

/// The orphans of [`FIFTY_ORPHANS`] were handed to the init (so reaping them is its job),
/// and then every one of them is gone: no zombie left in the namespace, and none among the
/// init's children but `keep`.
fn assert_orphans_reaped(ns: &Namespace, keep: &[i32]) {
    let adopted = ns
        .others()
        .iter()
        .filter(|(pid, _, ppid)| *ppid == ns.init && !keep.contains(pid))
        .count();
    assert!(
        adopted >= 10,
        "only {adopted} orphans were seen adopted by the init: {:?}",
        ns.others()
    );
    let start = Instant::now();
    loop {
        let left: Vec<_> = ns
            .others()
            .into_iter()
            .filter(|(pid, _, _)| !keep.contains(pid))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "left in the namespace after {PATIENCE:?} ((pid, state, ppid); Z is a zombie \
             nobody reaped): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut kids = children(ns.init);
    kids.sort();
    assert_eq!(kids, keep, "the init's children");
}

#[test]
fn with_no_command_orphans_exec_d_into_the_namespace_are_reaped() {
    if !can_run("init reaping test") {
        return;
    }
    let (_dir, i) = installed();
    let mut ns = Namespace::start(&i.path, &[], None);
    nsenter(&ns, FIFTY_ORPHANS);
    assert_orphans_reaped(&ns, &[]);
    ns.signal(Signal::SIGTERM);
    let s = ns.exit_within(PATIENCE).expect("init ended by SIGTERM");
    assert_eq!(s.code(), Some(0), "{s}");
}

#[test]
fn with_a_command_its_orphans_are_reaped_and_it_keeps_running() {
    if !can_run("init reaping test") {
        return;
    }
    let (_dir, i) = installed();
    let script = format!("{FIFTY_ORPHANS}; exec sleep 100");
    let mut ns = Namespace::start(&i.path, &["--", "/bin/sh", "-c", &script], None);
    // The command is pid 2 in the namespace; it execs sleep once all 50 are orphaned.
    let main = within("the command", || {
        children(ns.init)
            .into_iter()
            .find(|&c| ns_pid(c) == Some(2))
    });
    within("the command's sleep", || {
        (comm(main) == "sleep").then_some(())
    });
    assert_orphans_reaped(&ns, &[main]);
    assert!(ns.exit_within(Duration::ZERO).is_none(), "the init ended");
    ns.signal(Signal::SIGTERM);
    let s = ns.exit_within(PATIENCE).expect("init ended");
    assert_eq!(s.code(), Some(143), "{s}");
}

#[test]
fn the_init_exits_with_its_command_s_status() {
    if !can_run("init exit status test") {
        return;
    }
    let (_dir, i) = installed();
    for (script, want) in [("exit 7", 7), ("exit 0", 0), ("kill -KILL $$", 137)] {
        let mut ns = Namespace::launch(&i.path, &["--", "/bin/sh", "-c", script], None);
        let s = ns.exit_within(PATIENCE).expect("init ended");
        assert_eq!(s.code(), Some(want), "{script}: {s}");
    }
    // A command that is not there: 127 and a line saying so.
    let out = Command::new("/usr/bin/unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&i.path)
        .args(["--", "/nonexistent-stockade-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-stockade-command"), "{err}");
}

#[test]
fn sigterm_is_forwarded_to_the_command_and_the_init_exits_143() {
    if !can_run("init signal forwarding test") {
        return;
    }
    let (_dir, i) = installed();
    let mut ns = Namespace::start(&i.path, &["--", "sleep", "100"], None);
    let sleep = within("sleep exec'd", || {
        children(ns.init).into_iter().find(|&c| comm(c) == "sleep")
    });
    // The command starts with nothing blocked, so SIGTERM's default action ends it.
    let status = std::fs::read_to_string(format!("/proc/{sleep}/status")).unwrap();
    let blocked = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
    assert!(blocked.ends_with("0000000000000000"), "{blocked}");
    // Nothing but that SIGTERM is sent: ending at all is the claim (how fast is not a
    // test's question on a shared machine).
    ns.signal(Signal::SIGTERM);
    let s = ns.exit_within(PATIENCE).expect("init ended");
    assert_eq!(s.code(), Some(143), "{s}");
}

#[test]
fn with_no_command_sigterm_ends_the_init_with_0_at_once() {
    if !can_run("init stop test") {
        return;
    }
    let (_dir, i) = installed();
    let mut ns = Namespace::start(&i.path, &[], None);
    // Signals it ignores leave it running.
    for sig in [Signal::SIGUSR1, Signal::SIGWINCH] {
        ns.signal(sig);
    }
    assert!(ns.exit_within(Duration::from_millis(200)).is_none());
    ns.signal(Signal::SIGTERM);
    let s = ns
        .exit_within(PATIENCE)
        .expect("init ended by SIGTERM alone");
    assert_eq!(s.code(), Some(0), "{s}");
}

#[test]
fn the_init_is_static_and_runs_from_an_empty_root() {
    if !can_run("init static binary test") {
        return;
    }
    let (_dir, i) = installed();
    let headers = Command::new("/usr/bin/readelf")
        .args(["-lW"])
        .arg(&i.path)
        .output()
        .unwrap();
    assert!(headers.status.success(), "{headers:?}");
    let headers = String::from_utf8_lossy(&headers.stdout);
    assert!(headers.contains("LOAD"), "{headers}");
    assert!(
        !headers.contains("INTERP"),
        "a program interpreter:\n{headers}"
    );
    let ldd = Command::new("/usr/bin/ldd").arg(&i.path).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "ldd: {said}"
    );

    // A root holding the init and nothing else: no loader, no libc, no /dev, no /proc.
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("stockade-init");
    std::fs::copy(&i.path, &inside).unwrap();
    let entries: Vec<PathBuf> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries, vec![inside.clone()]);
    // It starts a command (itself, asking for its usage) and exits as it did.
    let out = Command::new("/usr/sbin/chroot")
        .arg(root.path())
        .args(["/stockade-init", "--", "/stockade-init", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage: stockade-init"));
    // As pid 1 there, it holds on until SIGTERM.
    let mut ns = Namespace::start(Path::new("/stockade-init"), &[], Some(root.path()));
    assert!(ns.exit_within(Duration::from_millis(200)).is_none());
    ns.signal(Signal::SIGTERM);
    let s = ns.exit_within(PATIENCE).expect("init ended by SIGTERM");
    assert_eq!(s.code(), Some(0), "{s}");
}
