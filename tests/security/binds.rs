//! Attacks on the host directories stockade mounts (`--workspace`, `--input`) and on the
//! values it sets from the host: a process that swaps a bind source for a link while runs
//! start, a link planted by an earlier sandbox, and a sandbox lowering its
//! `oom_score_adj`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{case, nonce, Case, CaseResult, Daemon, Sandbox};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "binds::swapping_a_source_for_a_link_during_runs_never_mounts_another_directory",
            swap_race,
        ),
        case(
            "binds::a_link_planted_by_an_earlier_sandbox_is_not_followed",
            planted_link,
        ),
        case(
            "binds::a_sandbox_cannot_lower_its_oom_score_adj_below_the_policy",
            oom_floor,
        ),
    ]
}

/// Runs raced by the swapper; the attack won 9 of 40 before staging.
const RACED_RUNS: usize = 40;
/// The swapper stops by itself after this, whatever happens to the case.
const SWAPPER_DEADLINE: Duration = Duration::from_secs(150);

/// Exchanges `<dir>/src` and `<dir>/lnk` (a directory and a link) with
/// renameat2(RENAME_EXCHANGE) in a tight loop, for each directory given, until its
/// deadline; prints the number of exchanges.
const SWAPPER: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fds = [os.open(d, os.O_DIRECTORY) for d in sys.argv[2:]]
end = time.time() + float(sys.argv[1])
n = 0
while time.time() < end:
    for fd in fds:
        if libc.renameat2(fd, b"src", fd, b"lnk", 2) == 0:
            n += 1
print(n, flush=True)
"#;

fn mkdir(p: &Path, mode: u32) -> CaseResult {
    std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

fn symlink(target: &Path, link: &Path) -> CaseResult {
    std::os::unix::fs::symlink(target, link).map_err(|e| format!("{}: {e}", link.display()))
}

/// The issue's race: while a swapper exchanges the bind source with a link (to the host's
/// `/etc` for `--input`, to another tenant's directory for a root `--workspace`), 40 runs
/// start. Each must either see the directory it was validated with or be refused with one
/// line (exit 125); none may see `/etc` or write into the other directory.
fn swap_race(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let top = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mark = nonce();
    let input_parent = top.path().join("in-parent");
    let ws_parent = top.path().join("ws-parent");
    let victim = top.path().join("victim");
    for dir in [&input_parent, &ws_parent] {
        mkdir(&dir.join("src"), 0o777)?;
    }
    mkdir(&victim, 0o777)?;
    std::fs::write(input_parent.join("src/marker"), &mark).map_err(|e| e.to_string())?;
    symlink(Path::new("/etc"), &input_parent.join("lnk"))?;
    symlink(&victim, &ws_parent.join("lnk"))?;

    let swapper = Command::new("python3")
        .args(["-c", SWAPPER, &SWAPPER_DEADLINE.as_secs().to_string()])
        .arg(&input_parent)
        .arg(&ws_parent)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("swapper: {e}"))?;
    // Stopped on every path, by its own handle.
    let mut swapper = KillOnDrop(Some(swapper));
    let started = Instant::now();
    let mut ran = 0;
    let mut refused = 0;
    let mut breaches = Vec::new();
    for i in 0..RACED_RUNS {
        if started.elapsed() > SWAPPER_DEADLINE - Duration::from_secs(20) {
            break;
        }
        let (source, script) = if i % 2 == 0 {
            (
                ("--input", input_parent.join("src")),
                "cat /input/marker 2>/dev/null; test -e /input/passwd && echo HOST-ETC; true",
            )
        } else {
            (
                ("--workspace", ws_parent.join("src")),
                "echo x > /workspace/written && echo WROTE",
            )
        };
        let mut sb = Sandbox::busybox(&["sh", "-c", script]).flag(source.0, source.1.clone());
        if source.0 == "--workspace" {
            sb = sb.user("0");
        }
        let o = sb.run(d)?;
        match o.code() {
            Some(125) => {
                let err = o.process.stderr_text();
                let errors: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
                let field = source.0.trim_start_matches('-');
                ensure!(
                    errors.len() == 1 && errors[0].contains(field),
                    "run {i}: a refusal must be one line naming {field}: {err:?}"
                );
                refused += 1;
            }
            _ => {
                o.ran()?;
                ran += 1;
                let out = o.stdout();
                if out.contains("HOST-ETC") || (source.0 == "--input" && !out.contains(&mark)) {
                    breaches.push(format!("run {i} ({}) saw {out:?}", source.0));
                }
            }
        }
        let leaked: Vec<String> = std::fs::read_dir(&victim)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !leaked.is_empty() {
            breaches.push(format!(
                "run {i} wrote into the other directory: {leaked:?}"
            ));
            for name in leaked {
                let _ = std::fs::remove_file(victim.join(name));
            }
        }
    }
    let mut child = swapper.0.take().expect("the swapper is held until here");
    let _ = child.kill();
    let out = child
        .wait_with_output()
        .map_err(|e| format!("swapper: {e}"))?;
    ensure!(
        breaches.is_empty(),
        "{} of {} runs mounted another directory: {}",
        breaches.len(),
        ran + refused,
        breaches.join("; ")
    );
    // The race was live: the sources changed under the runs, some ran and some were
    // refused (a swapper that never ran would prove nothing).
    ensure!(
        ran > 0 && refused > 0,
        "the race did not happen: {ran} ran, {refused} refused, swapper output {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A sandbox leaves `results -> <another tenant's directory>` in its workspace; a later
/// run naming `results` as its input is refused, without any race, and never reads it.
fn planted_link(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let top = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ws = top.path().join("ws");
    let tenant = top.path().join("tenant-b");
    mkdir(&ws, 0o777)?;
    mkdir(&tenant, 0o755)?;
    let secret = nonce();
    std::fs::write(tenant.join("secret"), &secret).map_err(|e| e.to_string())?;

    let plant = format!("ln -s {} /workspace/results", tenant.display());
    let first = Sandbox::busybox(&["sh", "-c", &plant])
        .workspace(&ws)
        .run(d)?;
    first.ran()?;
    ensure!(
        std::fs::symlink_metadata(ws.join("results")).is_ok_and(|m| m.file_type().is_symlink()),
        "the first sandbox could not plant its link: {}",
        first.describe()
    );

    let later = Sandbox::busybox(&["cat", "/input/secret"])
        .input(&ws.join("results"))
        .run(d)?;
    let err = later.process.stderr_text();
    ensure!(
        later.code() == Some(125) && err.contains("--input") && err.contains("symbolic link"),
        "a run through the planted link was not refused: {}",
        later.describe()
    );
    ensure!(
        !later.stdout().contains(&secret) && !later.process.stdout_text().contains(&secret),
        "the other tenant's secret was read"
    );
    Ok(())
}

/// The sandbox tries to make itself the OOM killer's last choice. Where stockade holds
/// `CAP_SYS_RESOURCE`, its host-side write sets the kernel's floor and the sandbox's write
/// fails; where it does not (this is so on some container hosts), the run says so in
/// `not_enforced`, and the sandbox still cannot go below 0.
fn oom_floor(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let script = "cat /proc/self/oom_score_adj; \
                  echo 0 > /proc/self/oom_score_adj 2>/dev/null; cat /proc/self/oom_score_adj; \
                  echo -100 > /proc/self/oom_score_adj 2>/dev/null; cat /proc/self/oom_score_adj";
    let o = Sandbox::busybox(&["sh", "-c", script]).run(d)?;
    o.ran()?;
    let seen: Vec<&str> = o.stdout().lines().collect();
    let floor_reported = o
        .doc
        .get("not_enforced")
        .and_then(|v| v.as_array())
        .is_some_and(|a| a.iter().any(|n| n["protection"] == "oom_score_adj"));
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let has_cap = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|c| c & (1 << 24) != 0);
    if has_cap {
        ensure!(
            seen == ["500", "500", "500"] && !floor_reported,
            "the sandbox lowered its oom_score_adj below the policy's 500: {seen:?}"
        );
    } else {
        eprintln!(
            "oom floor: this host withholds CAP_SYS_RESOURCE from root; checking the report instead"
        );
        ensure!(
            floor_reported,
            "no not_enforced entry for oom_score_adj: {}",
            o.doc
        );
        ensure!(
            seen.first() == Some(&"500") && seen.last() == Some(&"0"),
            "expected 500, then at most lowered to 0: {seen:?}"
        );
    }
    if seen.iter().any(|v| v.starts_with('-')) {
        fail!("the sandbox went below 0: {seen:?}");
    }
    Ok(())
}
