//! ID-mapped mounts: a host directory mounted so that files the host sees as owned by one
//! UID appear, through that mount only, as owned by another.
//!
//! A sandbox without a user namespace runs as a host UID of its own (see
//! [`crate::runner::uids`]), so that per-user kernel counters (inotify instances and
//! watches, `RLIMIT_NPROC`, keyrings) are per sandbox. Its workspace, though, belongs on
//! disk to the policy's UID (65534 by default), as it always has: the staging mount of a
//! bind is ID-mapped so that on-disk `from` appears as the sandbox's `to`, and files the
//! sandbox creates land on disk as `from`. Every other UID and every GID maps to itself.
//!
//! The mapping is carried by a user namespace that no process runs in: a short-lived child
//! creates it, the parent writes its maps and keeps a descriptor, the child exits.
//!
//! This module holds the crate's only `unsafe` code: `fork(2)` (the child makes only
//! async-signal-safe system calls before `_exit`) and `mount_setattr(2)`, which neither
//! `nix` nor `rustix` wraps.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use thiserror::Error;

/// Errors of making a user namespace or an ID-mapped mount. Each renders as one line.
#[derive(Debug, Error)]
pub enum IdmapError {
    /// The helper user namespace could not be made; why.
    #[error("creating a user namespace for an ID-mapped mount: {0}")]
    Namespace(String),
    /// The filesystem does not support ID-mapped mounts.
    #[error("{}: cannot be mounted ID-mapped ({source})", path.display())]
    Unsupported {
        /// The directory.
        path: std::path::PathBuf,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A mount step failed.
    #[error("{}: {what}: {source}", path.display())]
    Mount {
        /// The directory.
        path: std::path::PathBuf,
        /// The step (`open_tree`, `mount_setattr`, `move_mount`).
        what: &'static str,
        /// The kernel's error.
        source: std::io::Error,
    },
}

/// The largest valid ID plus one: `u32::MAX` itself is the invalid ID `(uid_t)-1`.
const ID_END: u64 = u32::MAX as u64;

/// The `uid_map` that shows on-disk `from` as `to` and every other ID as itself. The map
/// must be a bijection on the ranges it names, so `to` itself (inside) and `from` (outside)
/// are left unmapped: a file owned on disk by `to` appears as the overflow ID.
pub fn swap_uid_map(from: u32, to: u32) -> String {
    let (from, to) = (u64::from(from), u64::from(to));
    let mut lines = vec![format!("{from} {to} 1")];
    // Identity on [0, ID_END) minus {from, to}.
    let (lo, hi) = if from < to { (from, to) } else { (to, from) };
    for (start, end) in [(0, lo), (lo + 1, hi), (hi + 1, ID_END)] {
        if end > start {
            lines.push(format!("{start} {start} {}", end - start));
        }
    }
    lines.join("\n") + "\n"
}

/// The identity map of every valid ID.
pub fn identity_map() -> String {
    format!("0 0 {ID_END}\n")
}

/// A user namespace with no process in it, kept alive by its descriptor.
#[derive(Debug)]
pub struct UserNs(OwnedFd);

impl AsFd for UserNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl UserNs {
    /// A new user namespace with `uid_map` and `gid_map` (the text of
    /// `/proc/<pid>/uid_map`), its descriptor read through `proc_root`.
    pub fn new(proc_root: &Path, uid_map: &str, gid_map: &str) -> Result<UserNs, IdmapError> {
        use nix::unistd::{fork, pipe, read, write, ForkResult};
        let err =
            |what: &str, e: &dyn std::fmt::Display| IdmapError::Namespace(format!("{what}: {e}"));
        let (ready_r, ready_w) = pipe().map_err(|e| err("pipe", &e))?;
        let (done_r, done_w) = pipe().map_err(|e| err("pipe", &e))?;
        // SAFETY: the child runs only async-signal-safe system calls (unshare, write, read,
        // _exit) on descriptors it already holds, allocates nothing and never returns into
        // the parent's code: what fork(2) in a multi-threaded process permits.
        let child = match unsafe { fork() }.map_err(|e| err("fork", &e))? {
            ForkResult::Child => {
                // The parent's ends: closed, so that the parent closing its `done_w` is
                // the end of file this read waits for.
                drop(done_w);
                drop(ready_r);
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
                let _ = write(&ready_w, if ok { b"1" } else { b"0" });
                let mut b = [0u8; 1];
                let _ = read(done_r.as_raw_fd(), &mut b);
                // SAFETY: _exit ends the child at once, running no destructor or atexit
                // handler of the parent's state.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => child,
        };
        drop(ready_w);
        drop(done_r);
        let reap = |done_w: OwnedFd| {
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
        };
        let mut b = [0u8; 1];
        match read(ready_r.as_raw_fd(), &mut b) {
            Ok(1) if b[0] == b'1' => {}
            _ => {
                reap(done_w);
                return Err(err("unshare", &"the child could not make a user namespace"));
            }
        }
        let dir = proc_root.join(child.as_raw().to_string());
        let made = (|| {
            std::fs::write(dir.join("uid_map"), uid_map)?;
            std::fs::write(dir.join("gid_map"), gid_map)?;
            std::fs::File::open(dir.join("ns/user")).map(OwnedFd::from)
        })();
        reap(done_w);
        made.map(UserNs)
            .map_err(|e| err(&dir.display().to_string(), &e))
    }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// How a detached copy of a directory is to be mounted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attrs<'a> {
    /// Read-only, no set-user-ID, no device files.
    pub read_only: bool,
    /// Map IDs through this user namespace.
    pub idmap: Option<BorrowedFd<'a>>,
}

/// A detached copy (a non-recursive bind) of the directory open as `dir`, with `attrs`
/// applied; `path` names it in errors. Nothing is attached anywhere until [`attach`].
pub fn clone_dir(
    dir: BorrowedFd<'_>,
    path: &Path,
    attrs: Attrs<'_>,
) -> Result<OwnedFd, IdmapError> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let tree = open_tree(
        dir,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| IdmapError::Mount {
        path: path.to_path_buf(),
        what: "open_tree",
        source: e.into(),
    })?;
    let mut set = 0;
    if attrs.read_only {
        set |= MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    }
    if attrs.idmap.is_some() {
        set |= MOUNT_ATTR_IDMAP;
    }
    if set == 0 {
        return Ok(tree);
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: attrs.idmap.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    // SAFETY: `tree` is an open descriptor, the path is a valid NUL-terminated empty
    // string, and `attr` is a live `struct mount_attr` whose size is passed with it; the
    // kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        let source = std::io::Error::last_os_error();
        return Err(match (attrs.idmap, source.raw_os_error()) {
            // The filesystem cannot be ID-mapped (EINVAL), or the kernel has no
            // mount_setattr at all (ENOSYS).
            (Some(_), Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)) => IdmapError::Unsupported {
                path: path.to_path_buf(),
                source,
            },
            _ => IdmapError::Mount {
                path: path.to_path_buf(),
                what: "mount_setattr",
                source,
            },
        });
    }
    Ok(tree)
}

/// Attaches the detached mount `tree` at `target` (an existing directory).
pub fn attach(tree: OwnedFd, target: &Path) -> Result<(), IdmapError> {
    use rustix::fs::CWD;
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| IdmapError::Mount {
        path: target.to_path_buf(),
        what: "move_mount",
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(map: &str) -> Vec<(u64, u64, u64)> {
        map.lines()
            .map(|l| {
                let v: Vec<u64> = l.split(' ').map(|n| n.parse().unwrap()).collect();
                (v[0], v[1], v[2])
            })
            .collect()
    }

    /// Applies a uid_map to an inside ID, as the kernel does.
    fn map(map: &str, inside: u64) -> Option<u64> {
        ranges(map)
            .into_iter()
            .find(|(i, _, n)| (*i..i + n).contains(&inside))
            .map(|(i, o, _)| o + (inside - i))
    }

    #[test]
    fn the_swap_map_moves_one_id_and_keeps_every_other() {
        for (from, to) in [
            (65534, 1_900_000_007),
            (0, 5),
            (1000, 999),
            (7, u32::MAX - 1),
        ] {
            let m = swap_uid_map(from, to);
            let r = ranges(&m);
            assert!(
                r.len() <= 5,
                "the kernel takes at most 340 lines; this uses {}",
                r.len()
            );
            assert_eq!(map(&m, from.into()), Some(to.into()), "{m}");
            assert_eq!(map(&m, to.into()), None, "{m}");
            for probe in [0u64, 1, 999, 1000, 65533, 65535, 1_000_000, ID_END - 1] {
                if probe != u64::from(from) && probe != u64::from(to) {
                    assert_eq!(map(&m, probe), Some(probe), "{probe} in {m}");
                }
            }
            // No two lines overlap inside or outside (the kernel refuses the map otherwise).
            for (a, x) in r.iter().enumerate() {
                for y in &r[a + 1..] {
                    assert!(
                        x.0 + x.2 <= y.0 || y.0 + y.2 <= x.0,
                        "inside overlap in {m}"
                    );
                    assert!(
                        x.1 + x.2 <= y.1 || y.1 + y.2 <= x.1,
                        "outside overlap in {m}"
                    );
                }
            }
            assert!(r.iter().all(|(i, _, n)| i + n <= ID_END && *n > 0));
        }
    }
}
