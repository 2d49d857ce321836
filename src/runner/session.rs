//! What a long-lived sandbox (a session) keeps outside any process, in its run directory:
//! a record of how it was made and when it expires ([`SESSION_FILE`]), and the time of its
//! last exec (the modification time of [`ACTIVITY_FILE`]). Any later stockade process
//! finds and drives the session from these and from containerd; crash reclaim and
//! `stockade gc` read them to tell a live session from a leftover, with [`decide`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::procfs::ProcStat;

/// The session record in a run directory.
pub const SESSION_FILE: &str = "session.json";
/// The file whose modification time is the session's last activity (touched at the start
/// and the end of every exec).
pub const ACTIVITY_FILE: &str = "activity";

/// How a session was made and when it expires. Written once, when it has started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    /// The run id (`stk-…`).
    pub id: String,
    /// The name it was created with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Unix time in milliseconds it was created.
    pub created_unix_ms: u64,
    /// Hard lifetime in milliseconds from creation; none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<u64>,
    /// Idle timeout in milliseconds (no exec for that long); none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Host pid of the session's init.
    pub pid: u32,
    /// That process's start time (`/proc/<pid>/stat` field 22), to tell it from a later
    /// process reusing the pid; `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// The image name.
    pub image: String,
    /// [`crate::policy::ValidatedPolicy::hash`] of its policy.
    pub policy_hash: String,
    /// Digest of the spec its container holds.
    pub spec_digest: String,
    /// The UID its processes run as.
    pub uid: u32,
    /// What the sandbox as a whole may use, and the defaults of each exec.
    pub limits: SessionLimits,
    /// Labels the creator attached.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Protections its policy asked for that this host could not enforce.
    #[serde(default)]
    pub not_enforced: Vec<crate::spec::NotEnforced>,
}

/// The policy's limits as a session applies them: memory, CPU and pids for the sandbox as a
/// whole; timeout and output cap per exec, unless the exec says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionLimits {
    /// Memory limit of the sandbox, bytes.
    pub memory_bytes: u64,
    /// CPU quota of the sandbox, thousandths of a core.
    pub cpu_millis: u32,
    /// Most processes and threads the sandbox may hold at once.
    pub pids: i64,
    /// Default per-exec timeout, milliseconds.
    pub exec_timeout_ms: u64,
    /// Default per-exec cap on each of stdout and stderr, bytes.
    pub max_output: u64,
}

impl SessionRecord {
    /// Reads the record of the run directory `dir`; `None` when it has none (a one-shot run
    /// or a pooled sandbox) or it cannot be read.
    pub fn read(dir: &Path) -> Option<SessionRecord> {
        let text = std::fs::read(dir.join(SESSION_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes it into the run directory `dir`, atomically (a temporary file renamed).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{SESSION_FILE}.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).expect("a record always serializes");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, dir.join(SESSION_FILE))
    }

    /// Its deadlines.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines {
            created_unix_ms: self.created_unix_ms,
            lifetime: self.lifetime_ms.map(Duration::from_millis),
            idle_timeout: self.idle_timeout_ms.map(Duration::from_millis),
        }
    }

    /// Whether its init still runs: the pid exists under `proc_root`, has not exited, and
    /// (when recorded) started when the init did.
    pub fn init_alive(&self, proc_root: &Path) -> bool {
        match ProcStat::read(proc_root, self.pid) {
            Some(s) => {
                !s.has_exited()
                    && match (self.pid_start, s.start_time) {
                        (Some(want), Some(got)) => want == got,
                        _ => true,
                    }
            }
            None => false,
        }
    }
}

/// Marks activity in the run directory `dir` now (creates or rewrites [`ACTIVITY_FILE`]).
pub fn touch_activity(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join(ACTIVITY_FILE), b"")
}

/// The last activity in run directory `dir`, unix milliseconds; `None` before the first.
pub fn last_activity_ms(dir: &Path) -> Option<u64> {
    let m = std::fs::metadata(dir.join(ACTIVITY_FILE)).ok()?;
    unix_ms(m.modified().ok()?)
}

fn unix_ms(t: SystemTime) -> Option<u64> {
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// Now, unix milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now()).unwrap_or_default()
}

/// When a session expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// When the session was created, unix milliseconds.
    pub created_unix_ms: u64,
    /// Hard limit from creation.
    pub lifetime: Option<Duration>,
    /// Limit on the time since the last activity (or since creation, before any).
    pub idle_timeout: Option<Duration>,
}

/// Why a session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// Its lifetime ran out.
    Lifetime,
    /// No exec for its idle timeout.
    Idle,
    /// Its init is gone (stopped, killed, or the host rebooted).
    TaskGone,
}

/// What to do with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; look again at this unix millisecond (none: it never expires on its own).
    Keep {
        /// When to look again, unix milliseconds.
        until_ms: Option<u64>,
    },
    /// Remove it.
    Remove(Expiry),
}

/// Decides a session's fate from its deadlines, its last activity (unix ms; `None` before
/// the first exec, when creation counts), whether its init is alive, and the time now.
/// Pure. A deadline reached exactly is expired. The lifetime is judged before idleness,
/// and both before a gone init, so the reason given is the earliest that applies.
pub fn decide(
    d: &Deadlines,
    last_activity_ms: Option<u64>,
    init_alive: bool,
    now_ms: u64,
) -> Verdict {
    let lifetime_end = d
        .lifetime
        .map(|l| d.created_unix_ms.saturating_add(l.as_millis() as u64));
    let active = last_activity_ms
        .unwrap_or(d.created_unix_ms)
        .max(d.created_unix_ms);
    let idle_end = d
        .idle_timeout
        .map(|i| active.saturating_add(i.as_millis() as u64));
    if lifetime_end.is_some_and(|end| now_ms >= end) {
        return Verdict::Remove(Expiry::Lifetime);
    }
    if idle_end.is_some_and(|end| now_ms >= end) {
        return Verdict::Remove(Expiry::Idle);
    }
    if !init_alive {
        return Verdict::Remove(Expiry::TaskGone);
    }
    let until_ms = match (lifetime_end, idle_end) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Verdict::Keep { until_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_lifetime_then_idleness_then_the_init() {
        let s = Duration::from_secs;
        let d = |lifetime: Option<u64>, idle: Option<u64>| Deadlines {
            created_unix_ms: 1_000_000,
            lifetime: lifetime.map(s),
            idle_timeout: idle.map(s),
        };
        struct Case {
            name: &'static str,
            deadlines: Deadlines,
            activity: Option<u64>,
            alive: bool,
            now: u64,
            want: Verdict,
        }
        let keep = |until_ms| Verdict::Keep { until_ms };
        let cases = [
            Case {
                name: "no deadlines, init alive: kept for ever",
                deadlines: d(None, None),
                activity: None,
                alive: true,
                now: 9_000_000_000,
                want: keep(None),
            },
            Case {
                name: "no deadlines, init gone",
                deadlines: d(None, None),
                activity: None,
                alive: false,
                now: 1_000_001,
                want: Verdict::Remove(Expiry::TaskGone),
            },
            Case {
                name: "within the lifetime",
                deadlines: d(Some(60), None),
                activity: None,
                alive: true,
                now: 1_059_999,
                want: keep(Some(1_060_000)),
            },
            Case {
                name: "lifetime reached exactly",
                deadlines: d(Some(60), None),
                activity: None,
                alive: true,
                now: 1_060_000,
                want: Verdict::Remove(Expiry::Lifetime),
            },
            Case {
                name: "activity does not extend the lifetime",
                deadlines: d(Some(60), None),
                activity: Some(1_059_000),
                alive: true,
                now: 1_061_000,
                want: Verdict::Remove(Expiry::Lifetime),
            },
            Case {
                name: "idle since creation, no exec yet",
                deadlines: d(None, Some(10)),
                activity: None,
                alive: true,
                now: 1_010_000,
                want: Verdict::Remove(Expiry::Idle),
            },
            Case {
                name: "an exec moves the idle deadline",
                deadlines: d(None, Some(10)),
                activity: Some(1_005_000),
                alive: true,
                now: 1_010_000,
                want: keep(Some(1_015_000)),
            },
            Case {
                name: "activity recorded before creation counts as creation",
                deadlines: d(None, Some(10)),
                activity: Some(10),
                alive: true,
                now: 1_009_000,
                want: keep(Some(1_010_000)),
            },
            Case {
                name: "the nearer deadline is the next look",
                deadlines: d(Some(60), Some(10)),
                activity: Some(1_055_000),
                alive: true,
                now: 1_056_000,
                want: keep(Some(1_060_000)),
            },
            Case {
                name: "both passed: the lifetime is named",
                deadlines: d(Some(60), Some(10)),
                activity: None,
                alive: false,
                now: 2_000_000,
                want: Verdict::Remove(Expiry::Lifetime),
            },
            Case {
                name: "within deadlines but the init is gone",
                deadlines: d(Some(60), Some(10)),
                activity: None,
                alive: false,
                now: 1_000_500,
                want: Verdict::Remove(Expiry::TaskGone),
            },
        ];
        for c in &cases {
            let got = decide(&c.deadlines, c.activity, c.alive, c.now);
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[test]
    fn the_record_round_trips_and_refuses_unknown_fields() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(SessionRecord::read(t.path()), None);
        let r = SessionRecord {
            id: "stk-1".into(),
            name: Some("web".into()),
            created_unix_ms: 5,
            lifetime_ms: Some(1000),
            idle_timeout_ms: None,
            pid: 42,
            pid_start: Some(7),
            image: "busybox".into(),
            policy_hash: "h".into(),
            spec_digest: "sha256:0".into(),
            uid: 65534,
            limits: SessionLimits {
                memory_bytes: 1,
                cpu_millis: 1000,
                pids: 256,
                exec_timeout_ms: 300_000,
                max_output: 10,
            },
            labels: BTreeMap::from([("team".into(), "a".into())]),
            not_enforced: Vec::new(),
        };
        r.write(t.path()).unwrap();
        assert_eq!(SessionRecord::read(t.path()), Some(r));
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.path().join(SESSION_FILE)).unwrap()).unwrap();
        v["extra"] = 1.into();
        std::fs::write(t.path().join(SESSION_FILE), v.to_string()).unwrap();
        assert_eq!(SessionRecord::read(t.path()), None);
    }

    #[test]
    fn activity_is_the_files_mtime() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(last_activity_ms(t.path()), None);
        let before = now_ms();
        touch_activity(t.path()).unwrap();
        let at = last_activity_ms(t.path()).unwrap();
        assert!(
            at + 1000 >= before && at <= now_ms() + 1000,
            "{at} vs {before}"
        );
    }
}
