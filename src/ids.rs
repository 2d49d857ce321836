//! Random identifiers for names that must not collide (run ids, leases, ingest refs): the
//! one generator they all use. Unique across concurrent processes; not secrets.

use std::fmt::Write;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// `2 * bytes` lowercase hex digits, each 8 from the OS-seeded hasher fed the pid, a
/// process-wide counter and the clock.
pub fn random_hex(bytes: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(bytes * 2);
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        h.write_u128(now.as_nanos());
        let _ = write!(out, "{:016x}", h.finish());
    }
    out.truncate(bytes * 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_asked_length_and_do_not_repeat() {
        for n in [1, 6, 8, 16, 20] {
            let s = random_hex(n);
            assert_eq!(s.len(), n * 2);
            assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| random_hex(8)).collect();
        assert_eq!(ids.len(), 1000);
    }
}
