//! What a path in a sandbox is (`docker cp`'s first question, the Docker API's `HEAD
//! /containers/{id}/archive`): resolved as [`get`](super::get) resolves `SRC`, its last
//! component not followed.

use std::os::fd::AsFd;

use rustix::fs::{AtFlags, FileType, OFlags};

use super::{open_in_root, shown, CallerPath, FilesError};

/// One path's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// Its last component (`/` for the root).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// `st_mode`: the file type and the twelve permission bits.
    pub mode: u32,
    /// Modification time, unix seconds and nanoseconds.
    pub mtime: (i64, u32),
    /// A symbolic link's target as an absolute sandbox path (a relative target joined to
    /// the link's directory); empty for anything else.
    pub link_target: String,
}

impl PathStat {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        FileType::from_raw_mode(self.mode) == FileType::Directory
    }
}

/// Stats the sandbox path `path` in the root `root`.
pub fn stat(root: impl AsFd, path: &str) -> Result<PathStat, FilesError> {
    let cp = CallerPath::parse(path.as_bytes())?;
    let err = |e: rustix::io::Errno| match e {
        rustix::io::Errno::NOENT => FilesError::NotFound {
            path: shown(path.as_bytes()),
        },
        rustix::io::Errno::NOTDIR => FilesError::Conflict {
            path: shown(path.as_bytes()),
            reason: "not a directory".into(),
        },
        e => FilesError::Io {
            path: shown(path.as_bytes()),
            source: e.into(),
        },
    };
    let root = root.as_fd();
    let st = if cp.base.is_empty() || cp.asserts_dir {
        let fd =
            open_in_root(root, path.as_bytes(), OFlags::PATH | OFlags::DIRECTORY).map_err(err)?;
        rustix::fs::fstat(&fd).map_err(err)?
    } else {
        let parent =
            open_in_root(root, cp.parent, OFlags::PATH | OFlags::DIRECTORY).map_err(err)?;
        let st = rustix::fs::statat(&parent, cp.base, AtFlags::SYMLINK_NOFOLLOW).map_err(err)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            let target = rustix::fs::readlinkat(&parent, cp.base, Vec::new()).map_err(err)?;
            let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
            let link_target = if target.starts_with('/') {
                target
            } else {
                format!(
                    "/{}/{target}",
                    String::from_utf8_lossy(cp.parent).trim_matches('/')
                )
                .replace("//", "/")
            };
            return Ok(PathStat {
                name: String::from_utf8_lossy(cp.base).into_owned(),
                size: st.st_size as u64,
                mode: st.st_mode,
                mtime: (st.st_mtime, st.st_mtime_nsec as u32),
                link_target,
            });
        }
        st
    };
    let name = if cp.base.is_empty() {
        "/".to_string()
    } else {
        String::from_utf8_lossy(cp.base).into_owned()
    };
    Ok(PathStat {
        name,
        size: st.st_size as u64,
        mode: st.st_mode,
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        link_target: String::new(),
    })
}
