//! Limits that must never be off: a size that would reach the kernel as "unlimited" is
//! refused, a sandbox without a terminal holds no pty (and one with a terminal only a few),
//! and native AIO, whose contexts come from a host-wide pool, is denied.

use std::time::{Duration, Instant};

use crate::harness::{case, nonce, run_guarded, CaseResult, Daemon, Outcome, Sandbox};
use crate::{ensure, fail};

pub fn cases() -> Vec<crate::harness::Case> {
    vec![
        case(
            "limits::overflowing_sizes_are_refused_naming_the_flag",
            |d| overflowing_sizes(d),
        ),
        case(
            "limits::no_terminal_no_ptys_and_a_terminal_run_still_works",
            |d| ptys(d),
        ),
        // Named for the python image, so that the suite builds it early.
        case("escape::python::aio_contexts_are_denied", |d| aio(d)),
        case("escape::python::per_user_counters_are_per_sandbox", |d| {
            per_user_counters(d)
        }),
    ]
}

/// Takes inotify instances until the kernel refuses (at most 4096), writes how many and its
/// UID to `/workspace/<name>`, then holds them for `hold` seconds.
const INOTIFY_GRAB: &str = r#"
import ctypes, errno, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
name, limit, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fds, err = [], "none"
while len(fds) < limit:
    fd = libc.inotify_init()
    if fd < 0:
        err = errno.errorcode.get(ctypes.get_errno(), "E?"); break
    fds.append(fd)
with open("/workspace/" + name + ".tmp", "w") as f:
    f.write("%d %s %d" % (len(fds), err, os.getuid()))
os.rename("/workspace/" + name + ".tmp", "/workspace/" + name)
time.sleep(hold)
"#;

/// The kernel counts inotify instances per user, host-wide. A sandbox that takes every
/// instance its user may have (`fs/inotify/max_user_instances`) leaves the next sandbox,
/// and the host's own `nobody`, all of theirs: each sandbox runs as a UID of its own (not
/// 65534, not another sandbox's), and its workspace still belongs to 65534 on disk.
fn per_user_counters(d: &Daemon) -> CaseResult {
    d.python_ready()?;
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .map_err(|e| format!("max_user_instances: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("max_user_instances: {e}"))?;
    let ws = std::env::temp_dir().join(format!("stk-counters-{}", nonce()));
    std::fs::create_dir_all(&ws).map_err(|e| format!("{}: {e}", ws.display()))?;
    std::os::unix::fs::chown(&ws, Some(65534), Some(65534)).map_err(|e| e.to_string())?;
    let grab = |name: &str, limit: usize, hold: u32| {
        Sandbox::python(&[
            "python3",
            "-c",
            INOTIFY_GRAB,
            name,
            &limit.to_string(),
            &hold.to_string(),
        ])
        .workspace(&ws)
    };
    let wait_for = |name: &str| -> Result<(usize, String, u32), String> {
        let p = ws.join(name);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            if let Ok(s) = std::fs::read_to_string(&p) {
                let v: Vec<&str> = s.split(' ').collect();
                let n = v[0].parse().map_err(|e| format!("{s:?}: {e}"))?;
                let uid = v[2].parse().map_err(|e| format!("{s:?}: {e}"))?;
                return Ok((n, v[1].to_string(), uid));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{} never appeared", p.display()))
    };
    // The hog: everything it can get, held while the others try.
    let hog = grab("hog", 4096, 20).spawn(d)?;
    let (held, why, hog_uid) = wait_for("hog")?;
    eprintln!("hog: uid {hog_uid} holds {held} inotify instances (stopped by {why}); max_user_instances {max}");
    // Another sandbox, and the host's nobody, each want a few.
    let other = grab("other", 8, 0).run(d)?;
    other.ran()?;
    let (got, other_why, other_uid) = wait_for("other")?;
    let host = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
        ])
        .arg("import ctypes; print(sum(ctypes.CDLL(None).inotify_init() >= 0 for _ in range(8)))")
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    let host_got = String::from_utf8_lossy(&host.stdout).trim().to_string();
    let hog = Outcome::parse(hog.wait(Duration::from_secs(90))?, true, d)?;
    hog.ran()?;
    eprintln!("other sandbox: uid {other_uid} got {got} of 8 ({other_why}); host nobody got {host_got} of 8");
    let on_disk = std::fs::metadata(ws.join("hog")).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&ws);
    ensure!(
        held == max,
        "the hog held {held} instances, want exactly the per-user {max}"
    );
    ensure!(
        hog_uid != 65534 && other_uid != 65534 && hog_uid != other_uid,
        "sandbox uids {hog_uid} and {other_uid}: want two distinct UIDs, neither 65534"
    );
    ensure!(
        hog.number("/uid") == Some(f64::from(hog_uid)),
        "the result's uid {:?} is not the uid the sandbox ran as ({hog_uid})",
        hog.number("/uid")
    );
    ensure!(
        got == 8,
        "the other sandbox got {got} of 8 inotify instances ({other_why})"
    );
    ensure!(
        host_got == "8",
        "the host's nobody got {host_got:?} of 8 inotify instances"
    );
    use std::os::unix::fs::MetadataExt;
    ensure!(
        (on_disk.uid(), on_disk.gid()) == (65534, 65534),
        "a file the sandbox wrote to its workspace is owned by {}:{} on disk, want 65534:65534",
        on_disk.uid(),
        on_disk.gid()
    );
    Ok(())
}

/// u64::MAX bytes: it reached the spec as memory -1, which runc applies as no limit.
const U64_MAX: &str = "18446744073709551615";

/// `--memory 18446744073709551615` and the same sizes in a policy file (memory, fsize):
/// exit 125 before anything runs, one line on stderr naming the flag or the field.
fn overflowing_sizes(d: &Daemon) -> CaseResult {
    let dir = std::env::temp_dir().join(format!("stk-limits-{}", nonce()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cases: Vec<(Vec<String>, String)> = vec![(
        vec!["--memory".into(), U64_MAX.into()],
        "stockade: --memory: ".into(),
    )];
    for field in ["memory", "fsize"] {
        let file = dir.join(format!("{field}.toml"));
        std::fs::write(&file, format!("[limits]\n{field} = \"{U64_MAX}\"\n"))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        let file = file.to_string_lossy().to_string();
        cases.push((
            vec!["--policy".into(), file.clone()],
            format!("stockade: {file}: limits.{field}: "),
        ));
    }
    let mut outcome = Ok(());
    for (flags, want) in &cases {
        let mut cmd = d.stockade(&["run"]);
        cmd.args(flags)
            .args(["--json", "--timeout", "20s", "--", "true"]);
        let f = run_guarded(cmd, Duration::from_secs(60))?;
        let stderr = f.stderr_text();
        eprintln!(
            "{flags:?}: exit {:?}, stderr {:?}",
            f.code,
            stderr.trim_end()
        );
        let lines: Vec<&str> = stderr.lines().collect();
        if f.code != Some(125) || lines.len() != 1 || !lines[0].starts_with(want.as_str()) {
            outcome = Err(format!(
                "{flags:?}: exit {:?}, want 125 and one line starting {want:?}; stderr {stderr:?}, stdout {:.300}",
                f.code,
                f.stdout_text()
            ));
            if let Ok(o) = Outcome::parse(f, true, d) {
                drop(o);
            }
            break;
        }
        ensure!(
            f.stdout.is_empty(),
            "{flags:?}: a result on stdout, so it ran: {}",
            f.stdout_text()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// Opens `/dev/ptmx` up to 64 times, keeping each (busybox sh; `command exec` so that a
/// failed redirection does not end the shell), and prints `opened=N`.
const PTY_GRAB: &str = "i=0; while [ $i -lt 64 ]; do \
     if command exec 3<>/dev/ptmx 2>/dev/null; then eval \"exec $((i + 10))<&3\"; \
     i=$((i + 1)); else break; fi; done; echo opened=$i";

fn opened(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("opened="))
        .and_then(|n| n.parse().ok())
}

/// A sandbox without a terminal tries to take 64 ptys and gets none; a `stockade run -t`
/// right after works, and its sandbox can take at most the console's few spares.
fn ptys(d: &Daemon) -> CaseResult {
    let o = Sandbox::busybox(&["sh", "-c", PTY_GRAB]).run(d)?;
    o.ran()?;
    let n = opened(o.stdout());
    eprintln!("without a terminal: {n:?} ptys opened; {}", o.describe());
    ensure!(o.code() == Some(0), "{}", o.describe());
    ensure!(
        n == Some(0),
        "a sandbox without a terminal opened {n:?} ptys\n{}",
        o.describe()
    );

    let mut cmd = d.stockade(&[
        "run",
        "-t",
        "--image",
        "stockade/busybox",
        "--timeout",
        "30s",
    ]);
    cmd.args(["--", "sh", "-c", &format!("tty; {PTY_GRAB}")]);
    let f = run_guarded(cmd, Duration::from_secs(120))?;
    let out = f.stdout_text();
    let n = opened(&out);
    eprintln!(
        "with a terminal: exit {:?}, {n:?} more ptys; stdout {out:?}; stderr {:?}",
        f.code,
        f.stderr_text()
    );
    ensure!(
        f.code == Some(0) && out.contains("/dev/pts/0"),
        "stockade run -t failed: exit {:?}, stdout {out:?}, stderr {}",
        f.code,
        f.stderr_text().trim()
    );
    let spare = stockade::spec::TERMINAL_PTYS - 1;
    ensure!(
        n == Some(spare),
        "a sandbox with a terminal opened {n:?} more ptys, want exactly {spare}"
    );
    Ok(())
}

/// `io_setup(4096, &ctx)` 16 times through syscall(2) (x86_64 number 206, aarch64 0),
/// holding whatever it got for 3 s, and printing each result.
const AIO_GRAB: &str = r#"
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = {"x86_64": 206, "aarch64": 0}[os.uname().machine]
res, ctxs = [], []
for _ in range(16):
    ctx = ctypes.c_ulong(0)
    if libc.syscall(nr, 4096, ctypes.byref(ctx)) == 0:
        res.append("OK"); ctxs.append(ctx)
    else:
        res.append(errno.errorcode.get(ctypes.get_errno(), "E?"))
print("aio=" + ",".join(res), flush=True)
time.sleep(3)
"#;

fn aio_nr() -> Result<u64, String> {
    let s = std::fs::read_to_string("/proc/sys/fs/aio-nr").map_err(|e| format!("aio-nr: {e}"))?;
    s.trim().parse().map_err(|e| format!("aio-nr {s:?}: {e}"))
}

/// The sandbox calls io_setup(4096) 16 times: every call fails with EPERM (an errno, the
/// process is not killed) and the host's `fs/aio-nr` never grows by even one context's
/// worth while the sandbox holds what it got.
fn aio(d: &Daemon) -> CaseResult {
    d.python_ready()?;
    let before = aio_nr()?;
    let run = Sandbox::python(&["python3", "-c", AIO_GRAB]).spawn(d)?;
    let started = Instant::now();
    let mut peak = before;
    while started.elapsed() < Duration::from_secs(60) {
        peak = peak.max(aio_nr()?);
        if std::fs::metadata(format!("/proc/{}", run.pid())).is_err() {
            break;
        }
        let state = std::fs::read_to_string(format!("/proc/{}/stat", run.pid()));
        if state.is_ok_and(|s| s.contains(") Z ")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Outcome::parse(run.wait(Duration::from_secs(60))?, true, d)?;
    o.ran()?;
    let line = o
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("aio="))
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "aio: io_setup results {line:?}; host aio-nr {before} before, peak {peak}; exit {:?}",
        o.code()
    );
    ensure!(
        o.code() == Some(0),
        "the process did not exit 0 (killed?)\n{}",
        o.describe()
    );
    let results: Vec<&str> = line.split(',').collect();
    if results.len() != 16 || results.iter().any(|r| *r != "EPERM") {
        fail!(
            "io_setup results {line:?}, want EPERM 16 times\n{}",
            o.describe()
        );
    }
    ensure!(
        peak < before + 4096,
        "host aio-nr grew from {before} to {peak} while the sandbox ran"
    );
    Ok(())
}
