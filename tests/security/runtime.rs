//! The runtime binary as an attack: `--runc-binary` (or `STOCKADE_RUNC_BINARY`) naming a
//! wrapper that strips `linux.seccomp` from the bundle before it runs runc. A wrapper that
//! someone other than root could have put there or could rewrite is refused before anything
//! is created; a root-owned one runs, and the result names it by path and digest and warns.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::harness::{case, Case, CaseResult, Daemon, Sandbox};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "runtime::a_wrapper_in_a_world_writable_dir_is_refused_before_any_run",
            |d| refused(d, Placement::WorldWritableDir),
        ),
        case(
            "runtime::a_wrapper_owned_by_nobody_is_refused_before_any_run",
            |d| refused(d, Placement::OwnedByNobody),
        ),
        case(
            "runtime::a_root_owned_wrapper_runs_named_by_path_and_digest_with_a_warning",
            |d| accepted(d),
        ),
    ]
}

/// Strips `linux.seccomp` from the bundle runc is given, leaves a mark that it ran, and
/// runs runc.
const WRAPPER: &str = r#"#!/bin/sh
touch "$(dirname "$0")/ran"
prev=
for a in "$@"; do
  case "$prev" in --bundle|-b)
    /usr/bin/jq 'del(.linux.seccomp)' "$a/config.json" > "$a/config.json.new" &&
      mv "$a/config.json.new" "$a/config.json" ;;
  esac
  prev=$a
done
exec /usr/sbin/runc "$@"
"#;

enum Placement {
    /// Root-owned 0755, in a 0777 directory.
    WorldWritableDir,
    /// Owned by uid 65534, 0755, in a root-owned 0755 directory.
    OwnedByNobody,
}

/// A root-owned 0755 directory under `/run` (unlike `/tmp`, a root-owned 0755 chain).
fn scratch() -> Result<tempfile::TempDir, String> {
    let t = tempfile::Builder::new()
        .prefix("stk-sec-runtime-")
        .tempdir_in("/run")
        .map_err(|e| e.to_string())?;
    chmod(t.path(), 0o755)?;
    Ok(t)
}

fn chmod(p: &Path, mode: u32) -> CaseResult {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))
}

fn write_wrapper(dir: &Path) -> Result<PathBuf, String> {
    let w = dir.join("runc-wrapper");
    std::fs::write(&w, WRAPPER).map_err(|e| e.to_string())?;
    chmod(&w, 0o755)?;
    Ok(w)
}

fn refused(d: &Daemon, placement: Placement) -> CaseResult {
    let t = scratch()?;
    let dir = t.path().join("bin");
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let wrapper = write_wrapper(&dir)?;
    let why = match placement {
        Placement::WorldWritableDir => {
            chmod(&dir, 0o777)?;
            "writable by group or others"
        }
        Placement::OwnedByNobody => {
            std::os::unix::fs::chown(&wrapper, Some(65534), Some(65534))
                .map_err(|e| e.to_string())?;
            "not root"
        }
    };
    // A private run log (given by its old flag name, still accepted) and FIFO root: a run
    // that got as far as containerd leaves a line in the one and a run directory in the
    // other.
    let run_log = t.path().join("runs.jsonl");
    let fifo_root = t.path().join("fifo");
    // Removed before stockade exits (should it run), while the wrapper still exists.
    let o = Sandbox::busybox(&["grep", "Seccomp:", "/proc/self/status"])
        .flag("--runc-binary", &wrapper)
        .flag("--cleanup", "inline")
        .flag("--audit-log", &run_log)
        .flag("--fifo-root", &fifo_root)
        .run(d)?;
    let stderr = o.process.stderr_text();
    ensure!(
        o.process.code == Some(125),
        "the wrapper was not refused: exit {:?}, stdout {:.300}, stderr {stderr:.300}",
        o.process.code,
        o.process.stdout_text()
    );
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(
        lines.len() == 1
            && lines[0].starts_with("stockade: --runc-binary (STOCKADE_RUNC_BINARY) `")
            && lines[0].contains(why),
        "the refusal is not one line naming the flag and `{why}`: {stderr}"
    );
    ensure!(!dir.join("ran").exists(), "the refused wrapper ran anyway");
    ensure!(
        !run_log.exists(),
        "a run was attempted: {}",
        std::fs::read_to_string(&run_log).unwrap_or_default()
    );
    let run_dirs: Vec<_> = std::fs::read_dir(&fifo_root)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    ensure!(run_dirs.is_empty(), "a run was created: {run_dirs:?}");
    Ok(())
}

fn accepted(d: &Daemon) -> CaseResult {
    let t = scratch()?;
    let wrapper = write_wrapper(t.path())?;
    let digest = format!("sha256:{:x}", Sha256::digest(WRAPPER.as_bytes()));
    // Removed before stockade exits, while the wrapper (which runc delete goes through)
    // still exists.
    let o = Sandbox::busybox(&["grep", "Seccomp:", "/proc/self/status"])
        .flag("--runc-binary", &wrapper)
        .flag("--cleanup", "inline")
        .run(d)?;
    ensure!(
        o.process.code == Some(0),
        "exit {:?}: {}",
        o.process.code,
        o.process.stderr_text()
    );
    // The wrapper did what it is there for, which is why the result must say it ran.
    ensure!(
        t.path().join("ran").exists() && o.doc["stdout"] == "Seccomp:\t0\n",
        "the wrapper was not what ran: {}",
        o.doc["stdout"]
    );
    let rt = &o.doc["runtime"];
    ensure!(
        rt["path"] == wrapper.to_str().unwrap_or_default()
            && rt["sha256"] == digest.as_str()
            && rt["default"] == false,
        "the result does not name the wrapper ({}, {digest}): {rt}",
        wrapper.display()
    );
    let warned = |w: &str| w.contains(&wrapper.display().to_string()) && w.contains(&digest);
    let warnings = o.doc["warnings"].as_array().cloned().unwrap_or_default();
    ensure!(
        warnings.iter().filter_map(|w| w.as_str()).any(warned),
        "no warning names the wrapper: {warnings:?}"
    );
    let stderr = o.process.stderr_text();
    ensure!(
        stderr
            .lines()
            .any(|l| l.starts_with("stockade: warning: runtime ") && warned(l)),
        "no warning line on stderr: {stderr}"
    );

    // Without the flag: the default runc, named and not warned about.
    let plain = Sandbox::busybox(&["true"]).run(d)?;
    let rt = &plain.doc["runtime"];
    let runc = std::fs::canonicalize("/usr/sbin/runc").map_err(|e| e.to_string())?;
    ensure!(
        rt["path"] == runc.to_str().unwrap_or_default() && rt["default"] == true,
        "the default run does not name runc: {rt}"
    );
    if let Some(w) = plain.doc["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w.as_str().is_some_and(|w| w.contains("runtime")))
    {
        fail!("the default runtime is warned about: {w}");
    }
    Ok(())
}
