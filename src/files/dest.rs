//! Where `DST` is in the sandbox, found the way `docker cp` looks (see [`put`](super::put)).

use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{open_beneath, open_in_root, shown, CallerPath, FilesError};

/// `DST` as found in the sandbox.
pub(super) enum Destination {
    Dir(OwnedFd),
    /// An existing regular file, or nothing: the archive's top takes `base` in `parent`.
    Named {
        parent: OwnedFd,
        base: Vec<u8>,
        exists: bool,
        asserts_dir: bool,
    },
}

impl Destination {
    pub(super) fn resolve(root: rustix::fd::BorrowedFd<'_>, dst: &str) -> Result<Self, FilesError> {
        let mut path = dst.as_bytes().to_vec();
        let mut hops = 0;
        loop {
            let cp = CallerPath::parse(&path)?;
            let io = |e: rustix::io::Errno, p: &[u8]| match e {
                rustix::io::Errno::NOENT => FilesError::NotFound { path: shown(p) },
                rustix::io::Errno::NOTDIR => FilesError::Conflict {
                    path: shown(p),
                    reason: "a component of the path is not a directory".into(),
                },
                e => FilesError::Io {
                    path: shown(p),
                    source: e.into(),
                },
            };
            let whole = || {
                let fd = open_in_root(root, &path, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| io(e, &path))?;
                Ok(Destination::Dir(fd))
            };
            if cp.base.is_empty() {
                return whole();
            }
            let parent =
                open_in_root(root, cp.parent, OFlags::PATH | OFlags::DIRECTORY).map_err(|e| {
                    io(
                        e,
                        if cp.parent.is_empty() {
                            b"/"
                        } else {
                            cp.parent
                        },
                    )
                })?;
            let st = match rustix::fs::statat(&parent, cp.base, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => {
                    return Ok(Destination::Named {
                        parent,
                        base: cp.base.to_vec(),
                        exists: false,
                        asserts_dir: cp.asserts_dir,
                    })
                }
                Err(e) => return Err(io(e, &path)),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let fd = open_beneath(
                        &parent,
                        cp.base,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )
                    .map_err(|e| io(e, &path))?;
                    return Ok(Destination::Dir(fd));
                }
                FileType::RegularFile if !cp.asserts_dir => {
                    return Ok(Destination::Named {
                        parent,
                        base: cp.base.to_vec(),
                        exists: true,
                        asserts_dir: false,
                    })
                }
                FileType::Symlink if cp.asserts_dir => return whole(),
                FileType::Symlink if hops == 0 => {
                    hops += 1;
                    let target = rustix::fs::readlinkat(&parent, cp.base, Vec::new())
                        .map_err(|e| io(e, &path))?
                        .into_bytes();
                    path = if target.starts_with(b"/") {
                        target
                    } else {
                        [cp.parent, b"/", &target].concat()
                    };
                }
                _ => {
                    return Err(FilesError::Conflict {
                        path: shown(dst.as_bytes()),
                        reason: "the destination must be a directory or a regular file".into(),
                    })
                }
            }
        }
    }
}
