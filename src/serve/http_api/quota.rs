//! Per-token quotas and ownership: which token made which sandbox (a token sees and drives
//! only its own), and how many sandboxes and how much memory each token holds. A create
//! or run reserves its share before anything is made and gives it back when the sandbox
//! is removed (or the create fails), so two requests at once cannot both slip under a
//! quota. A pool's members count too: its fill reserves `size` sandboxes of its memory
//! limit at once, held under keys of the pool's id until it is drained.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::HttpError;
use crate::policy::format_size;

/// Default of `--http-max-sandboxes`: sandboxes (and one-shot runs) alive at once per token.
pub const DEFAULT_MAX_SANDBOXES: usize = 16;
/// Default of `--http-max-memory`: the memory limits of a token's live sandboxes and runs
/// added up, 8 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 8 << 30;

/// The quotas every token has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Sandboxes and runs alive at once.
    pub max_sandboxes: usize,
    /// Their memory limits added up, in bytes.
    pub max_memory: u64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            max_sandboxes: DEFAULT_MAX_SANDBOXES,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

/// What each token holds: token name → (sandbox id or reservation key → memory).
#[derive(Debug, Default)]
pub struct Ledger {
    quotas: Quotas,
    held: Mutex<HashMap<String, HashMap<String, u64>>>,
}

/// A share reserved for a sandbox being made: given back when dropped unless committed
/// under the sandbox's id.
pub struct Reservation {
    ledger: Arc<Ledger>,
    token: String,
    key: String,
    done: bool,
}

impl Ledger {
    /// A ledger with these quotas for every token.
    pub fn new(quotas: Quotas) -> Ledger {
        Ledger {
            quotas,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The quotas.
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Reserves one sandbox of `memory` bytes for `token`, or refuses (429) naming the
    /// quota it would exceed.
    pub fn reserve(self: &Arc<Self>, token: &str, memory: u64) -> Result<Reservation, HttpError> {
        let key = format!("pending-{}", crate::runner::new_id());
        let mut held = self.held.lock().expect("ledger lock");
        let mine = held.entry(token.to_string()).or_default();
        if mine.len() >= self.quotas.max_sandboxes {
            return Err(HttpError::quota(format!(
                "token `{token}` already holds {} sandboxes, its quota",
                mine.len()
            )));
        }
        let used: u64 = mine.values().sum();
        if used.saturating_add(memory) > self.quotas.max_memory {
            return Err(HttpError::quota(format!(
                "policy.limits.memory: {} more would take token `{token}` past its memory quota of {} ({} in use)",
                format_size(memory),
                format_size(self.quotas.max_memory),
                format_size(used)
            ))
            .field("policy.limits.memory"));
        }
        mine.insert(key.clone(), memory);
        Ok(Reservation {
            ledger: self.clone(),
            token: token.to_string(),
            key,
            done: false,
        })
    }

    /// Reserves the `size` members of pool `pool` (each of `memory` bytes) for `token` at
    /// once, or refuses (429) naming the field whose value would exceed a quota: `size`
    /// for the count, `policy.limits.memory` for the memory. Held until
    /// [`Ledger::release_pool`].
    pub fn reserve_pool(
        &self,
        token: &str,
        pool: &str,
        size: usize,
        memory: u64,
    ) -> Result<(), HttpError> {
        let mut held = self.held.lock().expect("ledger lock");
        let mine = held.entry(token.to_string()).or_default();
        if mine.len().saturating_add(size) > self.quotas.max_sandboxes {
            return Err(HttpError::quota(format!(
                "size: {size} more would take token `{token}` past its quota of {} sandboxes ({} held)",
                self.quotas.max_sandboxes,
                mine.len()
            ))
            .field("size"));
        }
        let used: u64 = mine.values().sum();
        let total = memory.saturating_mul(size as u64);
        if used.saturating_add(total) > self.quotas.max_memory {
            return Err(HttpError::quota(format!(
                "policy.limits.memory: {size} × {} would take token `{token}` past its memory quota of {} ({} in use)",
                format_size(memory),
                format_size(self.quotas.max_memory),
                format_size(used)
            ))
            .field("policy.limits.memory"));
        }
        for i in 0..size {
            mine.insert(format!("{POOL_KEY}{pool}/{i}"), memory);
        }
        Ok(())
    }

    /// Gives back what pool `pool`'s members held.
    pub fn release_pool(&self, pool: &str) {
        let prefix = format!("{POOL_KEY}{pool}/");
        let mut held = self.held.lock().expect("ledger lock");
        for mine in held.values_mut() {
            mine.retain(|k, _| !k.starts_with(&prefix));
        }
    }

    /// Records sandbox `id` (made before this server started) as `token`'s.
    pub fn adopt(&self, token: &str, id: &str, memory: u64) {
        let mut held = self.held.lock().expect("ledger lock");
        held.entry(token.to_string())
            .or_default()
            .insert(id.to_string(), memory);
    }

    /// Gives back what sandbox `id` held.
    pub fn release(&self, id: &str) {
        let mut held = self.held.lock().expect("ledger lock");
        for mine in held.values_mut() {
            mine.remove(id);
        }
    }

    /// The token that made sandbox `id`.
    pub fn owner(&self, id: &str) -> Option<String> {
        let held = self.held.lock().expect("ledger lock");
        held.iter()
            .find(|(_, mine)| mine.contains_key(id))
            .map(|(t, _)| t.clone())
    }

    /// The sandboxes `token` holds (not reservations, not pool members).
    pub fn owned(&self, token: &str) -> Vec<String> {
        let held = self.held.lock().expect("ledger lock");
        held.get(token)
            .map(|m| m.keys().filter(|k| is_sandbox(k)).cloned().collect())
            .unwrap_or_default()
    }

    /// Every sandbox of every token (not pool members).
    pub fn all(&self) -> Vec<String> {
        let held = self.held.lock().expect("ledger lock");
        held.values()
            .flat_map(|m| m.keys().filter(|k| is_sandbox(k)).cloned())
            .collect()
    }

    /// (sandboxes, memory) `token` holds, reservations included.
    pub fn usage(&self, token: &str) -> (usize, u64) {
        let held = self.held.lock().expect("ledger lock");
        held.get(token)
            .map(|m| (m.len(), m.values().sum()))
            .unwrap_or((0, 0))
    }
}

/// The prefix of a pool member's key in the ledger.
const POOL_KEY: &str = "pool:";

/// Whether a ledger key is a sandbox's id (not a reservation or a pool member).
fn is_sandbox(key: &str) -> bool {
    !key.starts_with("pending-") && !key.starts_with(POOL_KEY)
}

impl Reservation {
    /// Keeps the share under sandbox `id`, until [`Ledger::release`] of it.
    pub fn commit(mut self, id: &str) {
        let mut held = self.ledger.held.lock().expect("ledger lock");
        if let Some(mine) = held.get_mut(&self.token) {
            if let Some(m) = mine.remove(&self.key) {
                mine.insert(id.to_string(), m);
            }
        }
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.release(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(n: usize, mem: u64) -> Arc<Ledger> {
        Arc::new(Ledger::new(Quotas {
            max_sandboxes: n,
            max_memory: mem,
        }))
    }

    #[test]
    fn a_token_past_its_count_is_refused_and_others_are_not() {
        let l = ledger(2, 1 << 40);
        l.reserve("a", 1).unwrap().commit("s1");
        l.reserve("a", 1).unwrap().commit("s2");
        let e = l.reserve("a", 1).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (429, "quota_exceeded"));
        assert!(l.reserve("b", 1).is_ok());
        l.release("s1");
        assert!(l.reserve("a", 1).is_ok());
    }

    #[test]
    fn memory_is_added_up_and_refused_naming_the_field() {
        let l = ledger(10, 1000);
        l.reserve("a", 600).unwrap().commit("s1");
        let e = l.reserve("a", 500).err().unwrap();
        assert_eq!(e.field.as_deref(), Some("policy.limits.memory"));
        l.reserve("a", 400).unwrap().commit("s2");
        assert_eq!(l.usage("a"), (2, 1000));
    }

    #[test]
    fn a_failed_create_gives_its_share_back() {
        let l = ledger(1, 1000);
        drop(l.reserve("a", 1000).unwrap());
        assert_eq!(l.usage("a"), (0, 0));
        l.reserve("a", 1000).unwrap().commit("s1");
        assert_eq!(l.owner("s1").as_deref(), Some("a"));
        assert_eq!(l.owned("a"), vec!["s1".to_string()]);
        assert_eq!(l.owner("s2"), None);
    }

    #[test]
    fn a_pool_holds_size_times_its_memory_until_released() {
        let l = ledger(3, 1000);
        l.reserve("a", 100).unwrap().commit("s1");
        // (size, memory each) → refused on which field, if at all
        let table: &[(usize, u64, Option<&str>)] = &[
            (3, 1, Some("size")),                   // 1 + 3 > 3 sandboxes
            (usize::MAX, 1, Some("size")),          // no overflow
            (2, 500, Some("policy.limits.memory")), // 100 + 1000 > 1000
            (1, u64::MAX, Some("policy.limits.memory")),
            (2, 450, None),
        ];
        for &(size, mem, refused) in table {
            let r = l.reserve_pool("a", "p1", size, mem);
            assert_eq!(r.err().and_then(|e| e.field), refused.map(str::to_string));
        }
        assert_eq!(l.usage("a"), (3, 1000));
        assert!(l.reserve("a", 1).is_err(), "the pool's members count");
        assert_eq!(
            l.owned("a"),
            vec!["s1".to_string()],
            "members are no sandboxes"
        );
        assert_eq!(l.all(), vec!["s1".to_string()]);
        l.release_pool("p1");
        assert_eq!(l.usage("a"), (1, 100));
        assert_eq!(l.usage("b"), (0, 0));
    }
}
