//! CPU per sandbox, counted so that other load on the host does not pollute it: CPU time
//! (user + system) charged to the processes a contender uses, never wall time or host-wide
//! idle figures.
//!
//! What one reading counts (see [`Reading`]):
//! - `self`: this process (`getrusage(RUSAGE_SELF)`), charged only to the contenders that
//!   run inside it (the library, warm pool, exec and session contenders);
//! - `children`: every descendant this process has waited for
//!   (`getrusage(RUSAGE_CHILDREN)`): the CLI processes it spawns (`stockade run`, `ctr`,
//!   `runc`, `docker`, `podman`) with whatever they waited for in turn, and — because the
//!   benchmark makes itself a child subreaper — every process that daemonized below it and
//!   was reparented to it: `stockade run`'s detached removal helper, podman's conmon, and
//!   the containerd shims (with the `runc` calls and container processes they reaped) when
//!   containerd itself runs below the benchmark;
//! - `daemons`: the long-lived processes a contender talks to, from `/proc/PID/stat`
//!   (`utime + stime + cutime + cstime`, so with the children they reaped): containerd,
//!   dockerd, the pool services.
//!
//! A contender's CPU is the difference of two readings around its burst, taken after the
//! burst's removals, refills and reparented processes are done, divided by its runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::procfs::ProcStat;

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`: 100 on every Linux
/// architecture this crate builds for; the kernel's ABI keeps it fixed).
pub const USER_HZ: u64 = 100;

/// Clock ticks of `/proc/PID/stat` in milliseconds.
pub fn ticks_to_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / USER_HZ as f64
}

/// CPU time counted at one moment, milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// This process.
    pub self_ms: f64,
    /// Descendants this process waited for.
    pub children_ms: f64,
    /// Each tracked daemon by PID (absent when it could not be read).
    pub daemons_ms: BTreeMap<u32, f64>,
}

/// CPU spent between two readings, milliseconds, by where it was counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// This process (in-process contenders only, else 0).
    pub self_ms: f64,
    /// The processes this one spawned or adopted, once reaped.
    pub children_ms: f64,
    /// The long-lived daemons (containerd, dockerd, pool services).
    pub daemons_ms: f64,
}

impl Cpu {
    /// Everything counted.
    pub fn total_ms(&self) -> f64 {
        self.self_ms + self.children_ms + self.daemons_ms
    }

    /// What `before` → `after` spent. `own` says whether this process's own time is charged
    /// (the contender ran in it). A daemon missing from either reading is left out (it
    /// started or exited in between; its time cannot be split). Negative differences (a
    /// restarted daemon reusing a PID) count as 0.
    pub fn between(before: &Reading, after: &Reading, own: bool) -> Cpu {
        let pos = |x: f64| x.max(0.0);
        Cpu {
            self_ms: if own {
                pos(after.self_ms - before.self_ms)
            } else {
                0.0
            },
            children_ms: pos(after.children_ms - before.children_ms),
            daemons_ms: after
                .daemons_ms
                .iter()
                .filter_map(|(pid, a)| before.daemons_ms.get(pid).map(|b| pos(a - b)))
                .sum(),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: Cpu) {
        self.self_ms += other.self_ms;
        self.children_ms += other.children_ms;
        self.daemons_ms += other.daemons_ms;
    }

    /// `self` divided by `runs` (all zeros for no runs).
    pub fn per_run(&self, runs: usize) -> Cpu {
        if runs == 0 {
            return Cpu::default();
        }
        let n = runs as f64;
        Cpu {
            self_ms: self.self_ms / n,
            children_ms: self.children_ms / n,
            daemons_ms: self.daemons_ms / n,
        }
    }
}

/// All CPU charged to a process and the children it waited for, milliseconds (`None` when
/// its stat line lacks the fields).
pub fn total_ms(s: &ProcStat) -> Option<f64> {
    s.cpu_ticks.map(ticks_to_ms)
}

/// Whether `pid` is `ancestor` or below it, following `ppid` through `stat_of`.
pub fn descends_from(pid: u32, ancestor: u32, stat_of: impl Fn(u32) -> Option<ProcStat>) -> bool {
    let mut p = pid;
    // Bounded: a PID chain is never deeper than this in practice, and a cycle (a read racing
    // a PID reuse) must not loop forever.
    for _ in 0..64 {
        if p == ancestor {
            return true;
        }
        if p <= 1 {
            return false;
        }
        match stat_of(p).and_then(|s| s.ppid) {
            Some(parent) => p = parent,
            None => return false,
        }
    }
    false
}

/// `/proc/PID/stat` of a process.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    ProcStat::read(Path::new("/proc"), pid)
}

/// The PID of the process serving the Unix socket at `path` (its peer credentials).
pub fn socket_server_pid(path: &Path) -> Option<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let stream = std::os::unix::net::UnixStream::connect(path).ok()?;
    getsockopt(&stream, PeerCredentials)
        .ok()
        .and_then(|c| u32::try_from(c.pid()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_hundredths_of_a_second() {
        assert_eq!(ticks_to_ms(0), 0.0);
        assert_eq!(ticks_to_ms(340), 3400.0);
        let s = ProcStat::parse("1 (x) S 0 1 1 0 -1 0 0 0 0 0 250 75 10 5 20 0 1 0 9").unwrap();
        assert_eq!(total_ms(&s), Some(3400.0));
        let short = ProcStat::parse("1 (x) S 0 1 1 0 -1 0 0 0 0 0 250").unwrap();
        assert_eq!(total_ms(&short), None);
    }

    fn reading(self_ms: f64, children_ms: f64, daemons: &[(u32, f64)]) -> Reading {
        Reading {
            self_ms,
            children_ms,
            daemons_ms: daemons.iter().copied().collect(),
        }
    }

    #[test]
    fn a_burst_is_charged_children_and_daemons_and_self_only_when_in_process() {
        let before = reading(100.0, 1000.0, &[(10, 500.0), (20, 40.0), (30, 7.0)]);
        // Daemon 30 exited, 40 appeared: neither can be split, both left out.
        let after = reading(130.0, 1450.0, &[(10, 560.0), (20, 50.0), (40, 99.0)]);
        assert_eq!(
            Cpu::between(&before, &after, false),
            Cpu {
                self_ms: 0.0,
                children_ms: 450.0,
                daemons_ms: 70.0
            }
        );
        let own = Cpu::between(&before, &after, true);
        assert_eq!(own.self_ms, 30.0);
        assert_eq!(own.total_ms(), 550.0);
    }

    #[test]
    fn a_daemon_whose_counter_went_back_counts_zero() {
        let before = reading(0.0, 0.0, &[(10, 500.0)]);
        let after = reading(0.0, 0.0, &[(10, 20.0)]);
        assert_eq!(Cpu::between(&before, &after, true).total_ms(), 0.0);
    }

    #[test]
    fn bursts_add_up_and_divide_by_runs() {
        let mut sum = Cpu::default();
        for _ in 0..4 {
            sum.add(Cpu {
                self_ms: 1.0,
                children_ms: 20.0,
                daemons_ms: 5.0,
            });
        }
        assert_eq!(
            sum.per_run(8),
            Cpu {
                self_ms: 0.5,
                children_ms: 10.0,
                daemons_ms: 2.5
            }
        );
        assert_eq!(sum.per_run(0), Cpu::default());
    }

    #[test]
    fn ancestry_follows_ppid_and_stops_at_init_or_a_cycle() {
        let tree = |p: u32| {
            let ppid = match p {
                50 => 40,
                40 => 30,
                30 => 1,
                7 => 8,
                8 => 7,
                _ => return None,
            };
            Some(ProcStat {
                state: 'S',
                ppid: Some(ppid),
                start_time: None,
                pgrp: None,
                cpu_ticks: None,
            })
        };
        assert!(descends_from(50, 30, tree));
        assert!(descends_from(30, 30, tree));
        assert!(!descends_from(50, 99, tree));
        assert!(!descends_from(7, 99, tree), "a cycle ends");
        assert!(!descends_from(123, 30, tree), "an unreadable pid ends");
    }

    #[test]
    fn this_process_is_readable_and_serves_no_socket() {
        let me = read_stat(std::process::id()).expect("own stat");
        assert!(!me.has_exited());
        assert!(total_ms(&me).is_some(), "{me:?}");
        assert_eq!(socket_server_pid(Path::new("/nonexistent/sock")), None);
    }
}
