//! Keeping a pool at its size: the refill loop (prepares under the concurrency and memory
//! caps, idle expiry, back-off after a failure, replaced bind sources), background
//! removals, and the memory the ready sandboxes hold.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Inner, LABEL_POOL, RETRY_AFTER_FAILURE};
use crate::procfs::ProcStat;
use crate::runner::session::now_ms;
use crate::runner::Prepared;

/// How many more sandboxes may be prepared under the cap `max`, given the `memory` that
/// `ready` sandboxes hold and `preparing` more on the way: each is estimated at the ready
/// ones' average. Without a cap, or with nothing ready or on the way, unlimited.
pub(super) fn memory_room(max: Option<u64>, memory: u64, ready: usize, preparing: usize) -> usize {
    let Some(max) = max else {
        return usize::MAX;
    };
    if ready == 0 {
        // Nothing to estimate from: one at a time until one is ready.
        return usize::from(preparing == 0);
    }
    let each = (memory / ready as u64).max(1);
    let budget = max.saturating_sub(memory) / each;
    usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .saturating_sub(preparing)
}

impl Inner {
    /// Removes `p` in the background (see [`Inner::removals`]).
    pub(super) fn remove_detached(&self, p: Prepared) {
        let r = self.runner.clone();
        let mut set = self.removals.lock().expect("pool lock");
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            if let Err(e) = r.cleanup(&p.id).await {
                tracing::warn!("{e}");
            }
        });
    }

    /// Why the pool's sandboxes may no longer be served: a bind source of its policy no
    /// longer resolves to the directory it was validated as. `None` when all still do.
    pub(super) fn stale_binds(&self) -> Option<String> {
        let p = &self.policy;
        let binds = p.binds.iter().map(|b| &b.source);
        crate::bind::check_unchanged(p.workspace.iter().chain(p.input.iter()).chain(binds))
            .err()
            .map(|e| format!("{e}; ready sandboxes removed, none made until the pool is refilled"))
    }

    /// [`PoolStatus::memory_bytes`] of the ready sandboxes (`/proc` is read outside the
    /// lock).
    pub(super) fn ready_memory(&self) -> u64 {
        let pids: Vec<u32> = {
            let st = self.state.lock().expect("pool lock");
            st.ready.iter().map(|p| p.pid).collect()
        };
        memory_of(&self.config.proc_root, pids.into_iter())
    }
}

/// Resident bytes of `pids` and of their parents (the shims), each process counted once.
pub(super) fn memory_of(proc_root: &Path, pids: impl Iterator<Item = u32>) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    for pid in pids {
        seen.insert(pid);
        if let Some(ppid) = ProcStat::read(proc_root, pid).and_then(|s| s.ppid) {
            seen.insert(ppid);
        }
    }
    seen.into_iter()
        .filter_map(|p| crate::procfs::rss_bytes(proc_root, p))
        .sum()
}

/// Keeps the pool at its size while it is in use, expires idle sandboxes, and on shutdown
/// waits for the prepares in flight (their sandboxes join `ready`, which drain empties).
pub(super) async fn refill_loop(inner: Arc<Inner>) {
    let mut preparing = tokio::task::JoinSet::new();
    let mut backoff_until: Option<Instant> = None;
    loop {
        let expiry = inner.config.idle_expiry;
        let idle = inner.last_take.lock().expect("pool lock").elapsed() > expiry;
        let mut expired = Vec::new();
        let memory = match inner.config.max_memory {
            None => 0,
            Some(_) => inner.ready_memory(),
        };
        let stale = inner.stale_binds();
        let launch = {
            let mut st = inner.state.lock().expect("pool lock");
            if st.shutting_down {
                break;
            }
            // A bind source replaced since the pool's policy was validated: the ready
            // sandboxes hold the old directory; none is served or made again.
            if let Some(why) = &stale {
                if !st.ready.is_empty() || st.last_error.as_deref() != Some(why) {
                    expired.extend(st.ready.drain(..));
                    st.last_error = Some(why.clone());
                }
            }
            let now = now_ms();
            let limit = expiry.as_millis() as u64;
            while st
                .ready
                .front()
                .is_some_and(|p| now.saturating_sub(p.created_unix_ms) > limit)
            {
                expired.extend(st.ready.pop_front());
                st.expired += 1;
            }
            let want = if idle || stale.is_some() {
                0
            } else {
                inner.config.size
            };
            let backing_off = backoff_until.is_some_and(|t| Instant::now() < t)
                || super::refill_held(st.holds, st.hold_until, Instant::now());
            let room = want.saturating_sub(st.ready.len() + st.preparing);
            let slots = inner.config.refill_concurrency.saturating_sub(st.preparing);
            let fits = memory_room(
                inner.config.max_memory,
                memory,
                st.ready.len(),
                st.preparing,
            );
            let n = if backing_off {
                0
            } else {
                room.min(slots).min(fits)
            };
            st.preparing += n;
            n
        };
        for p in expired {
            inner.remove_detached(p);
        }
        for _ in 0..launch {
            let i = Arc::clone(&inner);
            preparing.spawn(async move {
                let labels = HashMap::from([(LABEL_POOL.to_string(), i.policy_hash.clone())]);
                let r = i.runner.prepare(&i.policy, labels).await.map(|mut p| {
                    p.pid_start =
                        ProcStat::read(&i.config.proc_root, p.pid).and_then(|s| s.start_time);
                    p
                });
                let mut st = i.state.lock().expect("pool lock");
                st.preparing -= 1;
                match r {
                    Ok(p) => {
                        st.prepared += 1;
                        st.ready.push_back(p);
                        true
                    }
                    Err(e) => {
                        tracing::warn!("pool: preparing a sandbox: {e}");
                        st.failures += 1;
                        st.last_error = Some(e.to_string());
                        false
                    }
                }
            });
        }
        let hold_left = {
            let st = inner.state.lock().expect("pool lock");
            st.hold_until
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        let tick = Duration::from_millis(500).min(expiry).min(
            hold_left
                .unwrap_or(Duration::MAX)
                .max(Duration::from_millis(1)),
        );
        tokio::select! {
            _ = inner.wake.notified() => {}
            Some(done) = preparing.join_next(), if !preparing.is_empty() => {
                if matches!(done, Ok(false)) {
                    backoff_until = Some(Instant::now() + RETRY_AFTER_FAILURE);
                }
            }
            _ = tokio::time::sleep(tick) => {}
        }
    }
    while preparing.join_next().await.is_some() {}
}
