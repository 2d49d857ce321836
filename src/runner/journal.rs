//! The run log: one JSON line per run appended to a log file. The record is built from
//! the run result (pure); appending is one `write` on an `O_APPEND` file, so concurrent runs
//! never interleave within a line.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::engine::Attempt;
use super::{Phases, RunError, RunResult, RuntimeBinary};

/// Where runs are logged unless told otherwise.
pub const DEFAULT_RUN_LOG: &str = "/var/log/stockade/runs.jsonl";

/// One line of the run log.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord<'a> {
    /// When the run started, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The run's id.
    pub id: &'a str,
    /// The real uid of the process that asked for the run.
    pub uid: u32,
    /// The image name as the policy gives it.
    pub image: &'a str,
    /// The image's manifest digest, when the image source knows it.
    pub image_digest: Option<&'a str>,
    /// [`crate::policy::ValidatedPolicy::hash`] of the run's policy.
    pub policy_hash: &'a str,
    /// [`crate::spec::digest`] of the OCI spec the run used; empty when it failed before one was
    /// built.
    pub spec_digest: &'a str,
    /// The OCI runtime binary (path, digest, default or not), when identified.
    pub runtime: Option<&'a RuntimeBinary>,
    /// The command and its arguments.
    pub argv: &'a [String],
    /// The exit code stockade exited with (see [`super::exit`]).
    pub exit_code: u8,
    /// The signal that ended the command, when its status was 128+N.
    pub signal: Option<i32>,
    /// The run hit its timeout.
    pub timed_out: bool,
    /// The sandbox ran out of memory and the kernel killed a process in it.
    pub oom_killed: bool,
    /// From the request to the result, in milliseconds.
    pub duration_ms: f64,
    /// Absent for a run that failed before it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<&'a Phases>,
    /// Why the run failed before the command ran (exit 125, 126 or 127).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl<'a> RunRecord<'a> {
    /// The record of finished run `r` of command `argv`, asked for by real uid `uid`.
    pub fn from_result(r: &'a RunResult, argv: &'a [String], uid: u32) -> RunRecord<'a> {
        RunRecord {
            time: rfc3339_millis(r.started_at_unix_ms),
            id: &r.id,
            uid,
            image: &r.image,
            image_digest: r.image_digest.as_deref(),
            policy_hash: &r.policy_hash,
            spec_digest: &r.spec_digest,
            runtime: r.runtime.as_ref(),
            argv,
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            oom_killed: r.oom_killed,
            duration_ms: r.duration_ms,
            phases: Some(&r.phases),
            error: None,
        }
    }

    /// The record of a run that failed before its command ran.
    pub fn failed(a: &'a Attempt, e: &RunError, duration_ms: f64) -> RunRecord<'a> {
        RunRecord {
            time: rfc3339_millis(a.started_at_unix_ms),
            id: &a.id,
            uid: nix::unistd::getuid().as_raw(),
            image: &a.image,
            image_digest: a.image_digest.as_deref(),
            policy_hash: &a.policy_hash,
            spec_digest: a.spec_digest.as_deref().unwrap_or(""),
            runtime: a.runtime.as_ref(),
            argv: &a.argv,
            exit_code: e.exit_code(),
            signal: None,
            timed_out: false,
            oom_killed: false,
            duration_ms,
            phases: None,
            error: Some(e.to_string()),
        }
    }

    /// The record as one line of JSON, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a run record always serializes");
        s.push('\n');
        s
    }
}

/// Appends `line` to the log at `path`, creating the file (mode 0640) and its directory
/// (mode 0750) when missing.
pub fn append(path: &Path, line: &str) -> Result<(), JournalError> {
    let err = |e: std::io::Error| JournalError {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(err)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(err)?;
    f.write_all(line.as_bytes()).map_err(err)
}

/// The run log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("run log {}: {message}", path.display())]
pub struct JournalError {
    /// The run log file.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (see
/// [`crate::rfc3339::millis`]).
pub use crate::rfc3339::millis as rfc3339_millis;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
            (1_735_689_600_123, "2025-01-01T00:00:00.123Z"),
        ] {
            assert_eq!(rfc3339_millis(ms), want);
        }
    }

    #[test]
    fn append_creates_the_directory_and_adds_whole_lines() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("sub/runs.jsonl");
        append(&log, "{\"a\":1}\n").unwrap();
        append(&log, "{\"a\":2}\n").unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o007, 0, "the log is not world-readable");
    }

    #[test]
    fn an_unwritable_log_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "").unwrap();
        let e = append(&file.join("runs.jsonl"), "x\n").unwrap_err();
        assert!(e
            .to_string()
            .starts_with(&format!("run log {}", file.display())));
    }
}
