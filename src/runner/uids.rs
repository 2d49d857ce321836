//! A host UID of its own for each sandbox.
//!
//! The kernel counts some resources per user, host-wide: inotify instances and watches,
//! processes under `RLIMIT_NPROC`, keys and keyring bytes. Sandboxes that share a UID share
//! those counters (one sandbox's 128 inotify instances leave none for the next, or for the
//! host's own `nobody` processes). A user namespace does not help: whatever the sandbox's
//! UIDs map to, the kernel also charges each count to the namespace's creator (root) on
//! the host. So a sandbox that runs as the policy's default user runs instead as a host UID
//! of its own, claimed here from a range no account uses, and released when its run
//! directory is removed.
//!
//! A claim is a symbolic link `<claims>/<uid>` whose target is the run directory:
//! `symlinkat` either creates it or fails, so two processes never claim the same UID, and
//! the run directory records the UID (`<run dir>/uid`) so that whoever removes the run
//! releases it. A claim whose run directory is gone (a crash) is reclaimed by
//! [`reconcile`] once it is older than a grace period.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;

/// Where claims live when the runner is not told otherwise. Host-wide on purpose: two
/// stockade processes with different run directories must still not share a UID.
pub const DEFAULT_UID_CLAIMS: &str = "/run/stockade/uids";

/// First host UID handed to sandboxes by default: inside the range systemd leaves unused
/// (1879048192–2147483647: no accounts, no container ranges of systemd-nspawn or of
/// `/etc/subuid` defaults, all of which sit below it).
pub const DEFAULT_FIRST_UID: u32 = 1_900_000_000;

/// How many UIDs the default range holds: the most sandboxes that can live at once.
pub const DEFAULT_UID_COUNT: u32 = 65_536;

/// A claim whose run directory does not exist is left alone for this long (the run
/// directory is made just after the claim).
pub const CLAIM_GRACE: Duration = Duration::from_secs(120);

/// The file in a run directory that records its UID.
pub const UID_FILE: &str = "uid";

/// Errors of claiming a UID. Each renders as one line.
#[derive(Debug, Error)]
pub enum UidError {
    /// A claim file or its directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Every UID of the range is claimed.
    #[error("all {count} sandbox UIDs from {first} are in use (claims in {})", dir.display())]
    Exhausted {
        /// First UID of the range.
        first: u32,
        /// UIDs in the range.
        count: u32,
        /// Where the claims are.
        dir: PathBuf,
    },
}

/// The UIDs sandboxes may be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRange {
    /// The first UID. Default [`DEFAULT_FIRST_UID`].
    pub first: u32,
    /// How many UIDs from `first`. Default [`DEFAULT_UID_COUNT`].
    pub count: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        UidRange {
            first: DEFAULT_FIRST_UID,
            count: DEFAULT_UID_COUNT,
        }
    }
}

/// A claimed UID. Dropped before [`Claim::recorded`], it is released again (a run that
/// failed before its run directory existed); once recorded, the run directory owns it.
#[derive(Debug)]
pub struct Claim {
    dir: PathBuf,
    uid: u32,
    armed: bool,
}

impl Claim {
    /// The claimed UID.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Writes the UID into `run_dir` (which must exist); from now on removing the run
    /// releases the claim ([`release`]).
    pub fn recorded(mut self, run_dir: &Path) -> Result<(), UidError> {
        let p = run_dir.join(UID_FILE);
        std::fs::write(&p, self.uid.to_string())
            .map_err(|source| UidError::Io { path: p, source })?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.dir.join(self.uid.to_string()));
        }
    }
}

/// Claims a free UID of `range` for the run directory `run_dir` (which need not exist
/// yet). The search starts at a place derived from `run_dir`, so concurrent claims rarely
/// meet.
pub fn claim(dir: &Path, range: &UidRange, run_dir: &Path) -> Result<Claim, UidError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UidError::Io { path, source }
    };
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let start = seed(run_dir) % u64::from(range.count.max(1));
    for step in 0..u64::from(range.count) {
        let uid = u64::from(range.first) + (start + step) % u64::from(range.count);
        let Ok(uid) = u32::try_from(uid) else {
            continue;
        };
        let link = dir.join(uid.to_string());
        match std::os::unix::fs::symlink(run_dir, &link) {
            Ok(()) => {
                return Ok(Claim {
                    dir: dir.to_path_buf(),
                    uid,
                    armed: true,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&link)(e)),
        }
    }
    Err(UidError::Exhausted {
        first: range.first,
        count: range.count,
        dir: dir.to_path_buf(),
    })
}

fn seed(p: &Path) -> u64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(p.as_os_str().as_encoded_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// The UID recorded in `run_dir`, if any.
pub fn recorded(run_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(run_dir.join(UID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Releases the UID recorded in `run_dir`: removes its claim if (and only if) the claim
/// names this run directory. Nothing recorded: nothing to do.
pub fn release(dir: &Path, run_dir: &Path) -> Result<(), UidError> {
    let Some(uid) = recorded(run_dir) else {
        return Ok(());
    };
    let link = dir.join(uid.to_string());
    match std::fs::read_link(&link) {
        Ok(target) if target == run_dir => {
            std::fs::remove_file(&link).map_err(|source| UidError::Io { path: link, source })
        }
        _ => Ok(()),
    }
}

/// Removes claims whose run directory no longer exists and that are older than `grace`;
/// returns the UIDs released.
pub fn reconcile(dir: &Path, grace: Duration) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut freed = Vec::new();
    for e in entries.flatten() {
        let Some(uid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let link = e.path();
        let Ok(target) = std::fs::read_link(&link) else {
            continue;
        };
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        let old = std::fs::symlink_metadata(&link)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= grace);
        if old && std::fs::remove_file(&link).is_ok() {
            freed.push(uid);
        }
    }
    freed.sort_unstable();
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(count: u32) -> UidRange {
        UidRange {
            first: 2_000_000_000,
            count,
        }
    }

    #[test]
    fn claims_are_distinct_until_the_range_is_exhausted() {
        let t = tempfile::tempdir().unwrap();
        let claims = t.path().join("uids");
        let mut held = Vec::new();
        for i in 0..8 {
            let run = t.path().join(format!("run-{i}"));
            std::fs::create_dir(&run).unwrap();
            let c = claim(&claims, &range(8), &run).unwrap();
            assert!((2_000_000_000..2_000_000_008).contains(&c.uid()));
            held.push(c.uid());
            c.recorded(&run).unwrap();
        }
        held.sort_unstable();
        held.dedup();
        assert_eq!(held.len(), 8, "every claim a different UID");
        let err = claim(&claims, &range(8), &t.path().join("run-8")).unwrap_err();
        assert!(err.to_string().contains("all 8 sandbox UIDs"), "{err}");
    }

    #[test]
    fn an_unrecorded_claim_is_released_when_dropped_and_a_recorded_one_by_release() {
        let t = tempfile::tempdir().unwrap();
        let claims = t.path().join("uids");
        let run = t.path().join("run");
        let c = claim(&claims, &range(1), &run).unwrap();
        drop(c);
        assert_eq!(std::fs::read_dir(&claims).unwrap().count(), 0);

        std::fs::create_dir(&run).unwrap();
        let c = claim(&claims, &range(1), &run).unwrap();
        let uid = c.uid();
        c.recorded(&run).unwrap();
        assert_eq!(recorded(&run), Some(uid));
        assert!(
            claim(&claims, &range(1), &t.path().join("other")).is_err(),
            "still held"
        );
        // Another run directory's release does not free it.
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(UID_FILE), uid.to_string()).unwrap();
        release(&claims, &other).unwrap();
        assert!(claims.join(uid.to_string()).symlink_metadata().is_ok());
        release(&claims, &run).unwrap();
        assert!(claims.join(uid.to_string()).symlink_metadata().is_err());
    }

    #[test]
    fn reconcile_frees_only_old_claims_of_missing_run_directories() {
        let t = tempfile::tempdir().unwrap();
        let claims = t.path().join("uids");
        let live = t.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let held = claim(&claims, &range(4), &live).unwrap();
        let crashed = claim(&claims, &range(4), &t.path().join("gone")).unwrap();
        let gone = crashed.uid();
        // A crash: the claim is neither recorded nor released.
        std::mem::forget(crashed);
        assert!(
            reconcile(&claims, Duration::from_secs(3600)).is_empty(),
            "young claims stay"
        );
        assert_eq!(reconcile(&claims, Duration::ZERO), vec![gone]);
        let kept = claims.join(held.uid().to_string());
        assert!(
            kept.symlink_metadata().is_ok(),
            "a live run keeps its claim"
        );
    }
}
