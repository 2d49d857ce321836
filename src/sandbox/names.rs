//! Sandbox names: one claim per name, a symbolic link `<fifo_root>/names/<NAME>` whose
//! target is the id of the sandbox holding it. Creating the link is the atomic claim (two
//! creators racing for a name: one wins, the other is told the name is taken). A link whose
//! sandbox's run directory is gone (removed, or reclaimed after a crash) is stale once
//! older than [`STALE_GRACE`], and the next claim takes it over.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::SandboxError;
use crate::runner::ID_PREFIX;

/// The directory of name claims under the FIFO root (not a run id, so crash reclaim and
/// `gc` never take it for a run).
pub const NAMES_DIR: &str = "names";

/// How old a claim whose sandbox has no run directory must be before another sandbox may
/// take the name: longer than a creation takes between claiming the name and making its
/// run directory.
pub const STALE_GRACE: Duration = Duration::from_secs(60);

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a name: 1 to [`MAX_NAME_LEN`] characters from `[A-Za-z0-9_.-]`, starting with a
/// letter or digit (Docker's rule), and not starting with `stk-` (ids do).
pub fn validate(name: &str) -> Result<(), SandboxError> {
    let invalid = |reason: &str| SandboxError::Invalid {
        field: "name",
        reason: format!("`{name}`: {reason}"),
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(&format!("must be 1 to {MAX_NAME_LEN} characters")));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or a digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(invalid("may hold only letters, digits, `_`, `.` and `-`"));
    }
    if name.starts_with(ID_PREFIX) {
        return Err(invalid(&format!(
            "must not start with `{ID_PREFIX}` (ids do)"
        )));
    }
    Ok(())
}

fn link(fifo_root: &Path, name: &str) -> PathBuf {
    fifo_root.join(NAMES_DIR).join(name)
}

/// Claims `name` for sandbox `id` (the name must be valid).
pub fn claim(fifo_root: &Path, name: &str, id: &str) -> Result<(), SandboxError> {
    let dir = fifo_root.join(NAMES_DIR);
    let io = |source| SandboxError::State {
        path: dir.clone(),
        source,
    };
    if !fifo_root.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(fifo_root)
            .map_err(io)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        _ => {}
    }
    let path = link(fifo_root, name);
    // Two tries: the second after taking over a stale claim.
    for _ in 0..2 {
        match std::os::unix::fs::symlink(id, &path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
        let holder = holder(fifo_root, name);
        let stale = holder
            .as_deref()
            .is_none_or(|h| !fifo_root.join(h).is_dir())
            && older_than(&path, STALE_GRACE);
        if !stale {
            return Err(SandboxError::NameTaken {
                name: name.to_string(),
                id: holder.unwrap_or_default(),
            });
        }
        let _ = std::fs::remove_file(&path);
    }
    Err(SandboxError::NameTaken {
        name: name.to_string(),
        id: holder(fifo_root, name).unwrap_or_default(),
    })
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_none_or(|a| a >= age)
}

/// The id holding `name`, if the name is claimed.
pub fn holder(fifo_root: &Path, name: &str) -> Option<String> {
    let target = std::fs::read_link(link(fifo_root, name)).ok()?;
    let id = target.to_str()?.to_string();
    id.starts_with(ID_PREFIX).then_some(id)
}

/// Releases `name` if sandbox `id` holds it.
pub fn release(fifo_root: &Path, name: &str, id: &str) {
    if holder(fifo_root, name).as_deref() == Some(id) {
        let _ = std::fs::remove_file(link(fifo_root, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule_and_never_look_like_ids() {
        for ok in ["web", "a", "A-1_b.c", &"x".repeat(MAX_NAME_LEN)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "a/b",
            "a b",
            "stk-0123",
            "ä",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(
                    validate(bad),
                    Err(SandboxError::Invalid { field: "name", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_name_is_held_once_and_a_stale_claim_is_taken_over() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("fifo");
        std::fs::create_dir_all(root.join("stk-a")).unwrap();
        claim(&root, "web", "stk-a").unwrap();
        assert_eq!(holder(&root, "web").as_deref(), Some("stk-a"));
        match claim(&root, "web", "stk-b") {
            Err(SandboxError::NameTaken { name, id }) => {
                assert_eq!((&*name, &*id), ("web", "stk-a"));
            }
            other => panic!("{other:?}"),
        }
        // The holder's run directory is gone, but the claim is young: still taken (its
        // creator may be between the claim and the run directory).
        std::fs::remove_dir(root.join("stk-a")).unwrap();
        assert!(claim(&root, "web", "stk-b").is_err());
        // Old and without a run directory: stale, taken over.
        let old = SystemTime::now() - STALE_GRACE - Duration::from_secs(1);
        let f = std::fs::File::open(root.join(NAMES_DIR)).unwrap();
        drop(f);
        set_link_mtime(&link(&root, "web"), old);
        claim(&root, "web", "stk-b").unwrap();
        assert_eq!(holder(&root, "web").as_deref(), Some("stk-b"));
        release(&root, "web", "stk-a");
        assert_eq!(
            holder(&root, "web").as_deref(),
            Some("stk-b"),
            "not stk-a's"
        );
        release(&root, "web", "stk-b");
        assert_eq!(holder(&root, "web"), None);
    }

    fn set_link_mtime(path: &Path, t: SystemTime) {
        let ts = nix::sys::time::TimeSpec::from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        nix::sys::stat::utimensat(
            None,
            path,
            &ts,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}
