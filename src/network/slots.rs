//! Addresses for sandboxes: the stockade-owned range is cut into /31 pairs, one per
//! sandbox (the host side of its veth, then the sandbox side), claimed atomically.
//!
//! A claim is a symbolic link `<claims>/<slot>` whose target is the run directory, made
//! with `symlinkat`, which either creates it or fails: two processes never claim the same
//! slot (the scheme [`crate::runner::uids`] uses for UIDs). A claim whose run directory is
//! gone (a crash) is reclaimed by [`stale`] once it is older than a grace period.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Cidr, NetworkError};

/// A claim whose run directory does not exist is left alone for this long (the claim is
/// made just before the run's network record is written).
pub const CLAIM_GRACE: Duration = Duration::from_secs(120);

/// One sandbox's place in the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Its number: the `index`-th /31 of the range, and the veth's name suffix.
    pub index: u32,
    /// The host side of the veth: the sandbox's gateway.
    pub host: Ipv4Addr,
    /// The sandbox side (`eth0` in its namespace).
    pub sandbox: Ipv4Addr,
}

/// How many sandboxes `range` holds (two addresses each).
pub fn capacity(range: &Cidr) -> u32 {
    u32::try_from(range.size() / 2).unwrap_or(u32::MAX)
}

/// The addresses of slot `index` of `range`, if it has that many.
pub fn slot(range: &Cidr, index: u32) -> Option<Slot> {
    if index >= capacity(range) {
        return None;
    }
    let host = u32::from(range.addr).checked_add(index.checked_mul(2)?)?;
    Some(Slot {
        index,
        host: Ipv4Addr::from(host),
        sandbox: Ipv4Addr::from(host + 1),
    })
}

/// Claims a free slot of `range` for `run_dir` in `dir`. The search starts at a place
/// derived from `run_dir`, so concurrent claims rarely meet.
pub fn claim(dir: &Path, range: &Cidr, run_dir: &Path) -> Result<Slot, NetworkError> {
    super::make_dir(dir)?;
    let count = capacity(range);
    let start = seed(run_dir) % u64::from(count.max(1));
    for step in 0..u64::from(count) {
        let index = ((start + step) % u64::from(count)) as u32;
        let link = dir.join(index.to_string());
        match std::os::unix::fs::symlink(run_dir, &link) {
            Ok(()) => return slot(range, index).ok_or(NetworkError::Exhausted { range: *range }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(NetworkError::Io { path: link, source }),
        }
    }
    Err(NetworkError::Exhausted { range: *range })
}

fn seed(p: &Path) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(p.as_os_str().as_encoded_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Removes the claim of slot `index` if (and only if) it names `run_dir`.
pub fn release(dir: &Path, index: u32, run_dir: &Path) -> Result<(), NetworkError> {
    let link = dir.join(index.to_string());
    match std::fs::read_link(&link) {
        Ok(target) if target == run_dir => std::fs::remove_file(&link)
            .or_else(super::gone_ok)
            .map_err(|source| NetworkError::Io { path: link, source }),
        _ => Ok(()),
    }
}

/// Every claim: slot index and the run directory it names.
pub fn claims(dir: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let index = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((index, std::fs::read_link(e.path()).ok()?))
        })
        .collect();
    out.sort();
    out
}

/// Claims whose run directory no longer exists and that are older than `grace`.
pub fn stale(dir: &Path, grace: Duration) -> Vec<(u32, PathBuf)> {
    let now = SystemTime::now();
    claims(dir)
        .into_iter()
        .filter(|(index, run_dir)| {
            if std::fs::symlink_metadata(run_dir).is_ok() {
                return false;
            }
            std::fs::symlink_metadata(dir.join(index.to_string()))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= grace)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_slash_31_pairs_inside_the_range() {
        let r: Cidr = "10.199.0.0/16".parse().unwrap();
        assert_eq!(capacity(&r), 32768);
        let s = slot(&r, 0).unwrap();
        assert_eq!(
            (s.host, s.sandbox),
            ("10.199.0.0".parse().unwrap(), "10.199.0.1".parse().unwrap())
        );
        let s = slot(&r, 32767).unwrap();
        assert_eq!(s.sandbox, "10.199.255.255".parse::<Ipv4Addr>().unwrap());
        assert!(slot(&r, 32768).is_none());
        assert!(slot(&"255.255.255.254/31".parse().unwrap(), 0).is_some());
    }

    #[test]
    fn concurrent_claims_never_share_a_slot_and_release_only_their_own() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("claims");
        let r: Cidr = "10.199.0.0/28".parse().unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    claim(&dir, &r, Path::new(&format!("/run/x/stk-{i}"))).unwrap()
                })
            })
            .collect();
        let mut got: Vec<u32> = handles
            .into_iter()
            .map(|h| h.join().unwrap().index)
            .collect();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 8, "every slot of the /28 was handed out once");
        let e = claim(&dir, &r, Path::new("/run/x/stk-9")).unwrap_err();
        assert!(e.to_string().contains("10.199.0.0/28"), "{e}");

        let (index, owner) = claims(&dir)[0].clone();
        release(&dir, index, Path::new("/run/x/someone-else")).unwrap();
        assert_eq!(claims(&dir).len(), 8);
        release(&dir, index, &owner).unwrap();
        assert_eq!(claims(&dir).len(), 7);
        assert_eq!(
            claim(&dir, &r, Path::new("/run/x/stk-10")).unwrap().index,
            index
        );
    }

    #[test]
    fn only_old_claims_of_missing_run_directories_are_stale() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("claims");
        let live = t.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let r: Cidr = "10.199.0.0/24".parse().unwrap();
        claim(&dir, &r, &live).unwrap();
        let gone = claim(&dir, &r, &t.path().join("gone")).unwrap();
        assert!(stale(&dir, Duration::from_secs(3600)).is_empty());
        let s = stale(&dir, Duration::ZERO);
        assert_eq!(s, vec![(gone.index, t.path().join("gone"))]);
    }
}
