//! The effects behind [`super::cpu`]: this process as a child subreaper, the reaping of the
//! processes it adopts, and readings of `getrusage` and `/proc/PID/stat`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeVal;
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::cpu::{read_stat, total_ms, Reading};
use crate::procfs::ProcStat;

/// Counts CPU for the benchmark; see the module docs of [`super::cpu`].
pub struct Meter {
    me: u32,
    pgrp: i32,
    /// Whether this process could make itself a child subreaper.
    pub subreaper: bool,
    daemons: Mutex<BTreeSet<u32>>,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn ms(t: TimeVal) -> f64 {
    t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0
}

impl Meter {
    /// Makes this process a child subreaper (processes that daemonize below it are
    /// reparented to it instead of init) and reaps them as they exit, on every `SIGCHLD`.
    pub fn start() -> Arc<Meter> {
        let subreaper = nix::sys::prctl::set_child_subreaper(true).is_ok();
        let me = std::process::id();
        let meter = Arc::new(Meter {
            me,
            pgrp: nix::unistd::getpgrp().as_raw(),
            subreaper,
            daemons: Mutex::new(BTreeSet::new()),
            reaper: Mutex::new(None),
        });
        if let Ok(mut sigchld) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        {
            let m = Arc::clone(&meter);
            let task = tokio::spawn(async move {
                while sigchld.recv().await.is_some() {
                    m.reap();
                }
            });
            *meter
                .reaper
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        }
        meter
    }

    /// Counts `pid`'s CPU (and its reaped children's) as a daemon's from now on.
    pub fn add_daemon(&self, pid: u32) {
        self.daemons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pid);
    }

    /// Every child of this process, with its `/proc` stat.
    fn children(&self) -> Vec<(u32, ProcStat)> {
        let mut out = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.me)) else {
            return out;
        };
        for t in tasks.flatten() {
            let Ok(list) = std::fs::read_to_string(t.path().join("children")) else {
                continue;
            };
            for pid in list
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                if let Some(s) = read_stat(pid) {
                    out.push((pid, s));
                }
            }
        }
        out
    }

    /// Reaps the adopted children that exited. Adopted ones are told from the ones this
    /// process spawned (which their spawner waits for) by their process group: every
    /// process that daemonizes leaves this process's group, the ones spawned here stay in it.
    pub fn reap(&self) -> usize {
        let mut n = 0;
        for (pid, s) in self.children() {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            if s.state == 'Z' && s.pgrp != Some(self.pgrp) {
                if let Ok(st) = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
                    if st.pid().is_some() {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Adopted (or detached) children still alive.
    pub fn adopted_alive(&self) -> usize {
        self.children()
            .iter()
            .filter(|(_, s)| !s.has_exited() && s.pgrp != Some(self.pgrp))
            .count()
    }

    /// Waits (bounded by `timeout`) until no more adopted children are alive than
    /// `baseline`, reaping as they exit: the shims and helpers of a burst are done.
    pub async fn wait_adopted(&self, baseline: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.reap();
            if self.adopted_alive() <= baseline || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU counted so far.
    pub fn read(&self) -> Reading {
        self.reap();
        let usage = |who| {
            getrusage(who)
                .map(|u| ms(u.user_time()) + ms(u.system_time()))
                .unwrap_or(0.0)
        };
        let daemons = self
            .daemons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Reading {
            self_ms: usage(UsageWho::RUSAGE_SELF),
            children_ms: usage(UsageWho::RUSAGE_CHILDREN),
            daemons_ms: daemons
                .into_iter()
                .filter_map(|pid| {
                    read_stat(pid)
                        .and_then(|s| total_ms(&s))
                        .map(|ms| (pid, ms))
                })
                .collect(),
        }
    }

    /// Whether `pid` runs below this process (so its daemonized children are adopted here).
    pub fn is_descendant(&self, pid: u32) -> bool {
        super::cpu::descends_from(pid, self.me, read_stat)
    }

    /// Stops reaping on `SIGCHLD`.
    pub fn stop(&self) {
        if let Some(t) = self
            .reaper
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }
}
