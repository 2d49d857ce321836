//! The `[limits]` section → [`Limits`]: every value parsed and range-checked against what
//! the kernel interface it ends up in accepts.
//!
//! A limit that reaches the kernel as its "no limit" sentinel is the worst kind of error:
//! the run succeeds and nothing says the sandbox is unbounded. Each interface has one:
//!
//! | limit | interface | "no limit" |
//! |---|---|---|
//! | memory (and memory+swap) | OCI `i64`; cgroup v1 `memory.limit_in_bytes`, v2 `memory.max`, counted in pages | any negative value (a `u64` above `i64::MAX` wraps to one), or anything the kernel rounds up to its page-counter maximum |
//! | fsize, nofile, nproc | `setrlimit`, `u64` | `RLIM_INFINITY` = `u64::MAX` |
//! | pids | OCI `i64`; `pids.max` | 0 or negative (runc writes `max`) |
//! | tmp_size, shm_size | tmpfs `size=` | 0 |
//! | disk | the size of the sandbox's bounded filesystem (see [`crate::disk`]) | none: there is no "unbounded" size, but a size larger than the host's disk bounds nothing |
//!
//! So every size is at most [`MAX_SIZE`], every count has a bound of its own below, zero and
//! negative values are refused, and every refusal is one line naming the flag or the
//! policy field. No policy value turns a limit off; the only unset limit is `nproc`, and
//! that is its documented default (see [`super::LimitsSection::nproc`]).

use std::time::Duration;

use serde::Serialize;

use super::{parse_duration, parse_size, LimitsSection, Origins, PolicyError};

/// Default memory limit: 512 MiB, swap equal (no swap).
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Default CPU quota, in thousandths of a core: one core.
pub const DEFAULT_CPU_MILLIS: u32 = 1000;
/// Default pids limit.
pub const DEFAULT_PIDS: i64 = 256;
/// Default `RLIMIT_NOFILE`.
pub const DEFAULT_NOFILE: u64 = 1024;
/// Default `RLIMIT_FSIZE`: 1 GiB.
pub const DEFAULT_FSIZE: u64 = 1 << 30;
/// Default wall-clock timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default cap on each output stream: 10 MiB.
pub const DEFAULT_MAX_OUTPUT: u64 = 10 << 20;
/// Default `/tmp` tmpfs size: 64 MiB.
pub const DEFAULT_TMP_SIZE: u64 = 64 << 20;
/// Default `/dev/shm` size: 64 MiB (Docker's).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;
/// Default `disk`: 1 GiB, everything a sandbox may write to the host's storage (its
/// writable root's upper layer and its managed workspace together).
pub const DEFAULT_DISK: u64 = 1 << 30;
/// The smallest `disk` (and managed workspace) accepted: 16 MiB. A filesystem smaller than
/// this holds too little beside its own metadata to be of use.
pub const MIN_DISK: u64 = 16 << 20;
/// Default `oom_score_adj`: sandboxes die before host services.
pub const DEFAULT_OOM_SCORE_ADJ: i32 = 500;

/// The smallest memory limit accepted: below this runc's own init cannot start (Docker uses
/// the same floor).
pub const MIN_MEMORY: u64 = 6 << 20;

/// The largest size any limit accepts (memory, fsize, tmp_size, shm_size, max_output):
/// 1 PiB. It is a whole number of pages for every page size Linux uses, and far below the
/// values that mean "no limit": `i64::MAX` (the OCI memory field; one byte more wraps
/// negative, which runc passes on as "unlimited"), the cgroup page counter's maximum
/// (`i64::MAX` rounded down to a page; `memory.max` reads back `max` there), and
/// `RLIM_INFINITY` (`u64::MAX`). No machine stockade runs on has a petabyte of memory or a
/// filesystem that takes a petabyte file, so nothing usable is refused.
pub const MAX_SIZE: u64 = 1 << 50;
/// Largest `RLIMIT_NOFILE`: 1,048,576, the kernel's default `fs.nr_open`. `setrlimit`
/// fails above the host's `fs.nr_open` (so the run could not start), and `u64::MAX` is
/// `RLIM_INFINITY`.
pub const MAX_NOFILE: u64 = 1 << 20;
/// Largest `pids` and `RLIMIT_NPROC`: 4,194,304, the kernel's `PID_MAX_LIMIT` on 64-bit.
/// `pids.max` refuses anything larger, and no more tasks than that can exist, so a larger
/// `RLIMIT_NPROC` could only be a way of writing "unlimited".
pub const MAX_TASKS: u64 = 4 << 20;

// Every bound stays clear of the sentinels it guards against.
const _: () = assert!(MAX_SIZE <= (i64::MAX as u64) / 65536 * 65536);
const _: () = assert!(MAX_SIZE % 65536 == 0);
const _: () = assert!(MAX_TASKS <= i64::MAX as u64 && MAX_NOFILE < u64::MAX);

/// Validated, parsed limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    /// Bytes; swap is set equal. [`MIN_MEMORY`]..=[`MAX_SIZE`].
    pub memory: u64,
    /// CPU quota in thousandths of a core.
    pub cpu_millis: u32,
    /// 1..=[`MAX_TASKS`].
    pub pids: i64,
    /// 1..=[`MAX_NOFILE`].
    pub nofile: u64,
    /// 1..=[`MAX_TASKS`], or unset.
    pub nproc: Option<u64>,
    /// Bytes, 1..=[`MAX_SIZE`].
    pub fsize: u64,
    /// Wall-clock limit, above zero.
    pub timeout: Duration,
    /// Bytes, 1..=[`MAX_SIZE`].
    pub max_output: u64,
    /// Bytes, 1..=[`MAX_SIZE`].
    pub tmp_size: u64,
    /// Bytes, 1..=[`MAX_SIZE`].
    pub shm_size: u64,
    /// Block-IO weight, 10..=1000, or unset (the host's default).
    pub io_weight: Option<u16>,
    /// 0..=1000 (never below 0: a sandbox may not make itself harder to kill).
    pub oom_score_adj: i32,
    /// Bytes of host storage the sandbox may fill, [`MIN_DISK`]..=[`MAX_SIZE`].
    pub disk: u64,
}

fn err(o: &Origins, field: &'static str, message: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        origin: o.of(field),
        message: message.into(),
    }
}

/// A size in bytes: 1..=[`MAX_SIZE`], or `default` when absent.
pub(super) fn size(
    o: &Origins,
    field: &'static str,
    v: &Option<String>,
    default: u64,
) -> Result<u64, PolicyError> {
    let Some(s) = v else { return Ok(default) };
    let n = parse_size(s).map_err(|e| err(o, field, e.to_string()))?;
    if n == 0 {
        return Err(err(o, field, format!("`{s}` must be greater than zero")));
    }
    if n > MAX_SIZE {
        return Err(err(
            o,
            field,
            format!(
                "`{}` is above the maximum of 1024Ti (a larger value would reach the kernel as \
                 no limit at all)",
                s.trim()
            ),
        ));
    }
    Ok(n)
}

/// A count: 1..=`max`, or `default` when absent. `what` names the kernel limit.
fn count(
    o: &Origins,
    field: &'static str,
    v: Option<u64>,
    max: u64,
    what: &str,
) -> Result<Option<u64>, PolicyError> {
    match v {
        Some(0) => Err(err(o, field, "must be greater than zero")),
        Some(n) if n > max => Err(err(
            o,
            field,
            format!("{n} is above the maximum of {max} ({what})"),
        )),
        n => Ok(n),
    }
}

pub(super) fn validate(l: &LimitsSection, o: &Origins) -> Result<Limits, PolicyError> {
    let memory = size(o, "limits.memory", &l.memory, DEFAULT_MEMORY)?;
    if memory < MIN_MEMORY {
        return Err(err(
            o,
            "limits.memory",
            format!(
                "{} is below the minimum of 6Mi",
                l.memory.as_deref().unwrap_or_default()
            ),
        ));
    }
    let cpu_millis = match l.cpus {
        None => DEFAULT_CPU_MILLIS,
        Some(c) if c.is_finite() && (0.01..=1024.0).contains(&c) => (c * 1000.0).round() as u32,
        Some(c) if c.is_nan() => {
            return Err(err(o, "limits.cpus", "not a number of cores such as 0.5"))
        }
        Some(c) => {
            return Err(err(
                o,
                "limits.cpus",
                format!("{c} cores is out of range (0.01 to 1024)"),
            ))
        }
    };
    let pids = match l.pids {
        None => DEFAULT_PIDS,
        Some(i64::MIN) => return Err(err(o, "limits.pids", "not a whole number")),
        Some(n) if n < 1 => return Err(err(o, "limits.pids", format!("{n} must be at least 1"))),
        Some(n) if n as u64 > MAX_TASKS => {
            return Err(err(
                o,
                "limits.pids",
                format!("{n} is above the maximum of {MAX_TASKS} (the kernel's PID_MAX_LIMIT)"),
            ))
        }
        Some(n) => n,
    };
    let nofile = count(
        o,
        "limits.nofile",
        l.nofile,
        MAX_NOFILE,
        "the kernel's default fs.nr_open",
    )?
    .unwrap_or(DEFAULT_NOFILE);
    let nproc = count(
        o,
        "limits.nproc",
        l.nproc,
        MAX_TASKS,
        "the kernel's PID_MAX_LIMIT",
    )?;
    let fsize = size(o, "limits.fsize", &l.fsize, DEFAULT_FSIZE)?;
    let timeout = match &l.timeout {
        None => DEFAULT_TIMEOUT,
        Some(s) => {
            let d = parse_duration(s).map_err(|e| err(o, "limits.timeout", e.to_string()))?;
            if d.is_zero() {
                return Err(err(
                    o,
                    "limits.timeout",
                    format!("`{s}` must be greater than zero"),
                ));
            }
            d
        }
    };
    let max_output = size(o, "limits.max_output", &l.max_output, DEFAULT_MAX_OUTPUT)?;
    let tmp_size = size(o, "limits.tmp_size", &l.tmp_size, DEFAULT_TMP_SIZE)?;
    let shm_size = size(o, "limits.shm_size", &l.shm_size, DEFAULT_SHM_SIZE)?;
    let io_weight = match l.io_weight {
        Some(w) if !(10..=1000).contains(&w) => {
            return Err(err(
                o,
                "limits.io_weight",
                format!("{w} is outside 10–1000"),
            ))
        }
        w => w,
    };
    let oom_score_adj = match l.oom_score_adj {
        None => DEFAULT_OOM_SCORE_ADJ,
        Some(n) if (0..=1000).contains(&n) => n,
        Some(n) => {
            return Err(err(
                o,
                "limits.oom_score_adj",
                format!("{n} is outside 0–1000 (a sandbox may not make itself harder to kill)"),
            ))
        }
    };
    let disk = size(o, "limits.disk", &l.disk, DEFAULT_DISK)?;
    if disk < MIN_DISK {
        return Err(err(
            o,
            "limits.disk",
            format!(
                "`{}` is below the minimum of 16Mi",
                l.disk.as_deref().unwrap_or_default().trim()
            ),
        ));
    }
    Ok(Limits {
        memory,
        cpu_millis,
        pids,
        nofile,
        nproc,
        fsize,
        timeout,
        max_output,
        tmp_size,
        shm_size,
        io_weight,
        oom_score_adj,
        disk,
    })
}

/// The managed workspace's size (`filesystem.workspace_size`), checked against the disk
/// limit it is counted in: at least [`MIN_DISK`], at most `disk`, and, with a writable root,
/// leaving that root at least [`MIN_DISK`] of its own. Not with a host `workspace`.
pub(super) fn workspace_size(
    v: &Option<String>,
    o: &Origins,
    disk: u64,
    read_only_root: bool,
    host_workspace: bool,
) -> Result<Option<u64>, PolicyError> {
    const FIELD: &str = "filesystem.workspace_size";
    if v.is_none() {
        return Ok(None);
    }
    if host_workspace {
        return Err(err(
            o,
            FIELD,
            format!(
                "a managed workspace cannot be used with {} (both would be /workspace)",
                o.of("filesystem.workspace")
            ),
        ));
    }
    let n = size(o, FIELD, v, 0)?;
    let given = v.as_deref().unwrap_or_default().trim();
    if n < MIN_DISK {
        return Err(err(
            o,
            FIELD,
            format!("`{given}` is below the minimum of 16Mi"),
        ));
    }
    let room = if read_only_root {
        disk
    } else {
        disk.saturating_sub(MIN_DISK)
    };
    if n > room {
        let why = if read_only_root {
            String::new()
        } else {
            " less the 16Mi the writable root keeps".to_string()
        };
        return Err(err(
            o,
            FIELD,
            format!(
                "`{given}` is above the disk limit ({}){why}; raise {} or shrink the workspace",
                super::format_size(disk),
                o.of("limits.disk")
            ),
        ));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests;
