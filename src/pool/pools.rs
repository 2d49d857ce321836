//! The pools a server keeps for the policies its clients run under: one per policy, made
//! on the first run under it (which itself runs as it would without), at most a fixed
//! number of them, all drained when the server stops. `stockade serve --pool-size N` keeps
//! them for the runs `stockade run` hands it.

use std::sync::Mutex;

use super::{Pool, PoolConfig};
use crate::policy::ValidatedPolicy;
use crate::runner::Runner;

/// Pools by policy, made on demand.
pub struct Pools {
    runner: Runner,
    config: PoolConfig,
    max: usize,
    pools: Mutex<Vec<Pool>>,
}

impl Pools {
    /// No pool yet; each made with `config` by `runner`, at most `max` of them (a policy
    /// beyond that runs without one).
    pub fn new(runner: Runner, config: PoolConfig, max: usize) -> Pools {
        Pools {
            runner,
            config,
            max,
            pools: Mutex::new(Vec::new()),
        }
    }

    /// The pool for `policy`: the one kept, else a new one (starting to fill now) while
    /// there is room for it, else `None`.
    pub fn for_policy(&self, policy: &ValidatedPolicy) -> Option<Pool> {
        let mut pools = self.pools.lock().expect("pools lock");
        if let Some(p) = pools.iter().find(|p| p.matches(policy)) {
            return Some(p.clone());
        }
        if pools.len() >= self.max {
            return None;
        }
        match Pool::start(self.runner.clone(), policy.clone(), self.config.clone()) {
            Ok(p) => {
                tracing::info!(image = %policy.image, policy = %p.policy_hash(), "pool started");
                pools.push(p.clone());
                Some(p)
            }
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    /// What each pool kept holds and has done.
    pub fn statuses(&self) -> Vec<super::PoolStatus> {
        let pools: Vec<Pool> = self.pools.lock().expect("pools lock").clone();
        pools.iter().map(Pool::status).collect()
    }

    /// Drains every pool (see [`Pool::drain`]); the sandboxes removed.
    pub async fn drain(&self) -> usize {
        let pools: Vec<Pool> = std::mem::take(&mut *self.pools.lock().expect("pools lock"));
        let mut removed = 0;
        for p in pools {
            removed += p.drain().await;
        }
        removed
    }
}
