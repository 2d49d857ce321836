//! Warm pools: sandboxes made ahead of time for one image and policy, so that a run skips
//! everything that does not depend on its command.
//!
//! A pooled sandbox is what [`Runner::prepare`] makes: the run directory with its FIFOs,
//! the copy-on-write snapshot, the container with the policy's spec, and the task created
//! by `runc create` (namespaces, cgroup and limits, mounts, user, capabilities,
//! no_new_privs, rlimits, seccomp and AppArmor in place) and started by `runc start`. Its
//! pid 1 is the image's `/bin/sh` running [`crate::runner::TRAMPOLINE`], blocked reading
//! one command line from stdin, which it `exec`s through `env -i` with the spec's
//! environment (the shell's own variables do not leak), so the run's command becomes pid 1
//! under exactly the spec a cold run gets, but for `process.args`. Nothing of a run's
//! executes before its line arrives. The image needs `/bin/sh` and `env`. A run takes one
//! sandbox and writes the command line: neither `runc create` nor `runc start` is on its
//! path. The sandbox is removed after the run like any other, never handed out twice, and
//! the pool refills in the background.
//!
//! ```text
//! refill loop:  ready < size and pool in use? → Runner::prepare (≤ refill_concurrency at once)
//!               ready sandbox older than idle_expiry → removed; no refill until the next take
//! Pool::run:    take → Runner::run_prepared (command line on stdin → Wait …)
//!               empty, other policy, a terminal, `=` in the command name → Runner::run (cold)
//! ```
//!
//! Differences from a cold run, all outside the sandbox's confinement: the container's
//! `process.args` (the trampoline; the result's `spec_digest` is the digest of the spec with
//! the command's args, which is what runs after the `exec`); stdin is a pipe at end of file
//! rather than `/dev/null` when the run has none; a command that is not found or not
//! executable ends with exit 127/126 and the shell's message on stderr instead of an error
//! from Tasks.Create.
//!
//! Pooled objects carry the label `stockade.pool=<policy hash>` besides stockade's own
//! labels, and the pool's process owns their run directories: when that process dies, the
//! next run's crash reclaim or `stockade gc` removes them like any crashed run.
//!
//! [`service`] serves a pool over a Unix socket (one JSON line per request), for
//! `stockade pool fill` and `stockade run`. The refill loop, background removals and the
//! ready sandboxes' memory are in `refill.rs`.

mod pools;
mod refill;
pub mod service;

pub use pools::Pools;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::ValidatedPolicy;
use crate::runner::session::now_ms;
use crate::runner::{Prepared, RunError, RunRequest, RunResult, Runner};
use refill::{memory_room, refill_loop};

/// Label on a pooled sandbox's container and snapshot: the policy hash it was made for.
pub const LABEL_POOL: &str = "stockade.pool";
/// Default directory of the pool services' sockets.
pub const DEFAULT_SOCKET_DIR: &str = "/run/stockade/pool";
/// How long the refill loop waits after a failed prepare before trying again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Errors of a pool or of its service.
#[derive(Debug, Error)]
pub enum PoolError {
    /// A run (preparing, removing or running a sandbox) failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The pool's configuration is unacceptable; the text says which setting.
    #[error("pool: {0}")]
    Config(String),
    /// Reading or writing the pool service's socket failed.
    #[error("pool socket {}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The pool service answered what the protocol does not allow, or nothing in time.
    #[error("pool socket {}: {message}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong with the answer.
        message: String,
    },
}

/// How a pool behaves. Every field has a default, documented on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Ready sandboxes kept. Default 4.
    pub size: usize,
    /// A ready sandbox nobody took for this long is removed, and the pool stays empty until
    /// the next take (a take that found it empty runs cold and restarts the refill).
    /// Default 10 minutes.
    pub idle_expiry: Duration,
    /// Sandboxes prepared at once while refilling. Default 2 (the host has 2 cores; more
    /// only slows the runs that are going on).
    pub refill_concurrency: usize,
    /// Memory the ready sandboxes may hold ([`PoolStatus::memory_bytes`]): a refill is
    /// started only while the ready ones, plus those being prepared estimated at the ready
    /// ones' average, stay within it (an empty pool always prepares one). Default `None`:
    /// `size` alone bounds the pool.
    pub max_memory: Option<u64>,
    /// Where `/proc` is, to read the memory the ready sandboxes hold. Default `/proc`.
    pub proc_root: PathBuf,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 4,
            idle_expiry: Duration::from_secs(600),
            refill_concurrency: 2,
            max_memory: None,
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What a pool holds and has done: `stockade pool ls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The image the pool's sandboxes are made from.
    pub image: String,
    /// [`ValidatedPolicy::hash`] of the policy they are made with.
    pub policy_hash: String,
    /// Configured size.
    pub size: usize,
    /// Ready sandboxes, waiting to be taken.
    pub ready: usize,
    /// Being prepared right now.
    pub preparing: usize,
    /// Milliseconds since each ready sandbox was made, oldest first.
    pub idle_ages_ms: Vec<u64>,
    /// The configured idle expiry ([`PoolConfig::idle_expiry`]), milliseconds.
    pub idle_expiry_ms: u64,
    /// Runs that took a pooled sandbox.
    pub taken: u64,
    /// Takes that found the pool empty.
    pub misses: u64,
    /// Sandboxes made so far.
    pub prepared: u64,
    /// Sandboxes removed unused after the idle expiry.
    pub expired: u64,
    /// Sandboxes that failed to be prepared, or died while waiting.
    pub failures: u64,
    /// The last failure's message, if any.
    pub last_error: Option<String>,
    /// Memory the ready sandboxes hold: resident size of each one's waiting pid 1 (the
    /// trampoline shell) and of its shim.
    pub memory_bytes: u64,
    /// The configured cap on `memory_bytes`, if any.
    #[serde(default)]
    pub max_memory_bytes: Option<u64>,
    /// Whether the cap holds the pool below its size right now.
    #[serde(default)]
    pub memory_limited: bool,
    /// Whether refilling stopped because the pool was idle longer than its expiry.
    pub idle: bool,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Prepared>,
    preparing: usize,
    taken: u64,
    misses: u64,
    prepared: u64,
    expired: u64,
    failures: u64,
    last_error: Option<String>,
    shutting_down: bool,
    /// Runs going on in sandboxes taken with [`Pool::take_held`], which the refill waits
    /// for (see [`REFILL_HOLD`]).
    holds: usize,
    /// Until when the refill waits for them at most.
    hold_until: Option<Instant>,
}

/// The longest a refill waits for the runs that took from the pool with
/// [`Pool::take_held`] to end ([`Pool::run_ended`]): on a small host, making a sandbox
/// (a shim started, `runc create` and `runc start`) competes for the CPU with the run the
/// caller is waiting for, so the replacement is made just after it rather than during it.
pub const REFILL_HOLD: Duration = Duration::from_secs(1);

/// Whether the refill waits now: runs taken with a hold are still going on and the hold
/// has not run out. Pure.
pub(crate) fn refill_held(holds: usize, hold_until: Option<Instant>, now: Instant) -> bool {
    holds > 0 && hold_until.is_some_and(|t| now < t)
}

struct Inner {
    runner: Runner,
    policy: ValidatedPolicy,
    policy_hash: String,
    config: PoolConfig,
    state: Mutex<State>,
    /// When a take last happened (or the pool started).
    last_take: Mutex<Instant>,
    wake: tokio::sync::Notify,
    /// Removals of sandboxes the pool gave up on (expired, dead, or holding a replaced bind
    /// source): finished ones are reaped whenever another starts, and [`Pool::drain`] waits
    /// for the rest, so none is cut short when the service exits.
    removals: Mutex<tokio::task::JoinSet<()>>,
}

/// A pool of sandboxes for one image and policy, refilled by a background task. Cheap to
/// clone. Call [`Pool::drain`] before dropping the last clone: ready sandboxes outlive the
/// pool otherwise (until this process exits and a crash reclaim or `stockade gc` removes
/// them).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
    refill: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Pool {
    /// Starts a pool filling itself for `policy` (its image included) through `runner`.
    /// Must be called inside a Tokio runtime.
    pub fn start(
        runner: Runner,
        policy: ValidatedPolicy,
        config: PoolConfig,
    ) -> Result<Pool, PoolError> {
        if config.size == 0 {
            return Err(PoolError::Config("size must be at least 1".into()));
        }
        if config.refill_concurrency == 0 {
            return Err(PoolError::Config(
                "refill concurrency must be at least 1".into(),
            ));
        }
        let inner = Arc::new(Inner {
            runner,
            policy_hash: policy.hash(),
            policy,
            config,
            state: Mutex::new(State::default()),
            last_take: Mutex::new(Instant::now()),
            wake: tokio::sync::Notify::new(),
            removals: Mutex::new(tokio::task::JoinSet::new()),
        });
        let handle = tokio::spawn(refill_loop(Arc::clone(&inner)));
        Ok(Pool {
            inner,
            refill: Arc::new(tokio::sync::Mutex::new(Some(handle))),
        })
    }

    /// The policy every sandbox of the pool is prepared with.
    pub fn policy(&self) -> &ValidatedPolicy {
        &self.inner.policy
    }

    /// [`ValidatedPolicy::hash`] of [`Pool::policy`], computed once.
    pub fn policy_hash(&self) -> &str {
        &self.inner.policy_hash
    }

    /// The runner that prepares the pool's sandboxes and runs them.
    pub fn runner(&self) -> &Runner {
        &self.inner.runner
    }

    /// Whether a run under `policy` may use this pool's sandboxes (same image and hash).
    pub fn matches(&self, policy: &ValidatedPolicy) -> bool {
        policy.image == self.inner.policy.image && policy.hash() == self.inner.policy_hash
    }

    /// Takes a ready sandbox (the oldest whose pid 1 still waits), if there is one, and
    /// wakes the refill. The caller owns it from now on: run it with
    /// [`Runner::run_prepared`] or remove it. Sandboxes found dead on the way (their
    /// trampoline killed from outside) are removed and counted as failures.
    pub fn take(&self) -> Option<Prepared> {
        self.take_as(false, None)
    }

    /// [`Pool::take`] for a run the caller reports the end of with [`Pool::run_ended`]: the
    /// refill waits for that (at most [`REFILL_HOLD`]) before making the replacement.
    ///
    /// `snapshot`: the base snapshot the pool's image names now, as the caller resolved it
    /// for its run. Ready sandboxes made from another one (the image was rebuilt or pulled
    /// again since) are removed rather than served; refills resolve the image afresh.
    pub fn take_held(&self, snapshot: Option<&str>) -> Option<Prepared> {
        self.take_as(true, snapshot)
    }

    /// A run in a sandbox taken with [`Pool::take_held`] has ended: the refill goes on
    /// once no other such run is going on.
    pub fn run_ended(&self) {
        {
            let mut st = self.inner.state.lock().expect("pool lock");
            st.holds = st.holds.saturating_sub(1);
            if st.holds == 0 {
                st.hold_until = None;
            }
        }
        self.inner.wake.notify_one();
    }

    fn take_as(&self, hold: bool, snapshot: Option<&str>) -> Option<Prepared> {
        *self.inner.last_take.lock().expect("pool lock") = Instant::now();
        let proc_root = &self.inner.config.proc_root;
        let mut dead = Vec::new();
        let mut stale_ready = Vec::new();
        let stale = self.inner.stale_binds();
        let got = {
            let mut st = self.inner.state.lock().expect("pool lock");
            if st.shutting_down {
                return None;
            }
            // A replaced bind source: none of the ready sandboxes may be served.
            if let Some(why) = stale {
                stale_ready.extend(st.ready.drain(..));
                st.last_error = Some(why);
            }
            if let Some(now) = snapshot {
                let before = stale_ready.len();
                let (old, current) = std::mem::take(&mut st.ready)
                    .into_iter()
                    .partition::<Vec<_>, _>(|p| p.image.snapshot != now);
                st.ready = current.into();
                stale_ready.extend(old);
                let removed = stale_ready.len() - before;
                if removed > 0 {
                    st.last_error = Some(format!(
                        "image `{}` now names snapshot {now}: {removed} ready sandbox(es) made \
                         from the one before removed",
                        self.inner.policy.image
                    ));
                }
            }
            let mut got = None;
            while let Some(p) = st.ready.pop_front() {
                if p.is_waiting(proc_root) {
                    got = Some(p);
                    break;
                }
                st.failures += 1;
                st.last_error = Some(format!(
                    "sandbox {}: its pid 1 ({}) died while waiting; removed",
                    p.id, p.pid
                ));
                dead.push(p);
            }
            if got.is_some() {
                st.taken += 1;
                if hold {
                    st.holds += 1;
                    st.hold_until = Some(Instant::now() + REFILL_HOLD);
                }
            } else {
                st.misses += 1;
            }
            got
        };
        for p in dead {
            tracing::warn!("pool: sandbox {} lost its pid 1 while waiting", p.id);
            self.inner.remove_detached(p);
        }
        for p in stale_ready {
            self.inner.remove_detached(p);
        }
        self.inner.wake.notify_one();
        got
    }

    /// Runs `req` in a pooled sandbox when the request's policy matches and one is ready,
    /// cold otherwise ([`RunResult::pooled`] says which).
    pub async fn run(&self, req: RunRequest) -> Result<RunResult, RunError> {
        let plain_name = req.args.first().is_some_and(|a| !a.contains('='));
        if req.id.is_none() && !req.terminal && plain_name && self.matches(&req.policy) {
            if let Some(p) = self.take_held(req.image.as_ref().map(|b| b.snapshot.as_str())) {
                let r = self.inner.runner.run_prepared(p, req).await;
                self.run_ended();
                return r;
            }
        }
        self.inner.runner.run(req).await
    }

    /// Waits until `n` sandboxes are ready (or `timeout` passes); returns how many are.
    pub async fn wait_ready(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self.inner.state.lock().expect("pool lock").ready.len();
            if ready >= n || Instant::now() >= deadline {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// What the pool holds and has done so far.
    pub fn status(&self) -> PoolStatus {
        let i = &self.inner;
        let now = now_ms();
        let idle = i.last_take.lock().expect("pool lock").elapsed() > i.config.idle_expiry;
        let memory = i.ready_memory();
        let st = i.state.lock().expect("pool lock");
        PoolStatus {
            image: i.policy.image.clone(),
            policy_hash: i.policy_hash.clone(),
            size: i.config.size,
            ready: st.ready.len(),
            preparing: st.preparing,
            idle_ages_ms: st
                .ready
                .iter()
                .map(|p| now.saturating_sub(p.created_unix_ms))
                .collect(),
            idle_expiry_ms: i.config.idle_expiry.as_millis() as u64,
            taken: st.taken,
            misses: st.misses,
            prepared: st.prepared,
            expired: st.expired,
            failures: st.failures,
            last_error: st.last_error.clone(),
            memory_bytes: memory,
            max_memory_bytes: i.config.max_memory,
            memory_limited: !idle
                && st.ready.len() + st.preparing < i.config.size
                && memory_room(i.config.max_memory, memory, st.ready.len(), st.preparing) == 0,
            idle,
        }
    }

    /// Stops refilling and removes every sandbox the pool still holds (ready ones and those
    /// being prepared). Returns how many were removed. Idempotent.
    pub async fn drain(&self) -> usize {
        self.inner.state.lock().expect("pool lock").shutting_down = true;
        self.inner.wake.notify_one();
        if let Some(h) = self.refill.lock().await.take() {
            let _ = h.await;
        }
        let doomed: Vec<Prepared> = self
            .inner
            .state
            .lock()
            .expect("pool lock")
            .ready
            .drain(..)
            .collect();
        let n = doomed.len();
        let runner = &self.inner.runner;
        let mut set = tokio::task::JoinSet::new();
        for p in doomed {
            let r = runner.clone();
            set.spawn(async move { r.cleanup(&p.id).await });
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!("{e}");
            }
        }
        let mut removals = std::mem::take(&mut *self.inner.removals.lock().expect("pool lock"));
        while removals.join_next().await.is_some() {}
        n
    }
}
/// The socket a pool for `policy_hash` listens on under `dir`: `<dir>/<12 hex digits of
/// the hash>.sock`.
pub fn socket_path(dir: &Path, policy_hash: &str) -> PathBuf {
    let hex = crate::digest::hex_part(policy_hash);
    dir.join(format!("{}.sock", &hex[..hex.len().min(12)]))
}

#[cfg(test)]
mod tests {
    use super::refill::memory_of;
    use super::*;
    use crate::procfs::ProcStat;

    #[test]
    fn socket_names_come_from_the_policy_hash() {
        let d = Path::new("/run/x");
        assert_eq!(
            socket_path(d, "sha256:0123456789abcdef0123"),
            PathBuf::from("/run/x/0123456789ab.sock")
        );
        assert_eq!(socket_path(d, "abc"), PathBuf::from("/run/x/abc.sock"));
    }

    #[test]
    fn memory_counts_each_sandbox_and_shared_parent_once() {
        let t = tempfile::tempdir().unwrap();
        let proc_ = |pid: u32, ppid: u32, kib: u64| {
            let d = t.path().join(pid.to_string());
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("stat"), format!("{pid} (odd) name) S {ppid} 1 1\n")).unwrap();
            std::fs::write(d.join("status"), format!("Name:\tx\nVmRSS:\t {kib} kB\n")).unwrap();
        };
        proc_(10, 1, 100); // shim
        proc_(11, 10, 7);
        proc_(12, 10, 5);
        proc_(20, 19, 3); // its shim is gone
        assert_eq!(
            memory_of(t.path(), [11, 12, 20].into_iter()),
            (100 + 7 + 5 + 3) * 1024
        );
        assert_eq!(memory_of(t.path(), std::iter::empty()), 0);
        assert_eq!(ProcStat::read(t.path(), 11).and_then(|s| s.ppid), Some(10));
    }

    #[test]
    fn the_memory_cap_admits_what_the_average_sandbox_says_fits() {
        const M: u64 = 1 << 20;
        // (cap, memory held, ready, preparing) → more that may be prepared
        let table: &[(Option<u64>, u64, usize, usize, usize)] = &[
            (None, 500 * M, 10, 3, usize::MAX),
            (Some(64 * M), 0, 0, 0, 1), // empty: one, to learn the size
            (Some(64 * M), 0, 0, 1, 0), // and not a second before it is ready
            (Some(64 * M), 14 * M, 1, 0, 3), // 50 MiB left at 14 MiB each
            (Some(64 * M), 14 * M, 1, 2, 1), // two of those already coming
            (Some(64 * M), 14 * M, 1, 5, 0), // more coming than fit
            (Some(64 * M), 56 * M, 4, 0, 0), // 8 MiB left, 14 each
            (Some(64 * M), 70 * M, 5, 0, 0), // over the cap
            (Some(1), 14 * M, 1, 0, 0), // a cap below one sandbox: it stays at one
        ];
        for &(cap, mem, ready, prep, want) in table {
            assert_eq!(
                memory_room(cap, mem, ready, prep),
                want,
                "cap {cap:?}, {mem} bytes in {ready} ready, {prep} preparing"
            );
        }
    }

    #[test]
    fn the_refill_waits_for_held_runs_only_until_the_hold_runs_out() {
        let now = Instant::now();
        let later = now + REFILL_HOLD;
        // (runs held, hold until, now) → the refill waits
        let table = [
            (0, None, now, false),
            (0, Some(later), now, false),
            (1, Some(later), now, true),
            (3, Some(later), now, true),
            (1, Some(later), later, false),
            (1, None, now, false),
        ];
        for (holds, until, at, want) in table {
            assert_eq!(refill_held(holds, until, at), want, "{holds} {until:?}");
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = PoolConfig::default();
        assert_eq!(c.size, 4);
        assert_eq!(c.idle_expiry, Duration::from_secs(600));
        assert_eq!(c.refill_concurrency, 2);
        assert_eq!(c.max_memory, None);
    }
}
