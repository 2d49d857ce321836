//! Copying a file or a directory out of a sandbox as a tar stream.
//!
//! # What `SRC` names (`docker cp` semantics)
//! - `SRC`'s parent is resolved inside the root, links followed the sandbox's way (see
//!   the module docs). Its last component is not followed: a symbolic link is archived as
//!   a link, unless [`GetOptions::follow_link`] (`docker cp -L`) asks to follow it (inside
//!   the root) or `SRC` ends with `/`.
//! - The archive's top entry takes `SRC`'s last component as its name (`/a/b` gives `b`,
//!   `b/x`, …). `SRC` ending with `/.` names the directory's contents: the entries are
//!   `./`, `./x`, …, and a later [`put`](super::put) into an existing directory merges
//!   them into it. `/` is taken as `/.`.
//! - A `SRC` on a kernel pseudo filesystem (`/proc`, `/sys`, …) is refused; a pseudo
//!   filesystem mounted inside a copied tree is archived as an empty directory.
//!
//! # How the tree is read
//! - Every name below `SRC` is opened with `O_PATH | O_NOFOLLOW` beneath its directory's
//!   descriptor, never through a link, and its type is taken from `fstat` on that
//!   descriptor. Nothing but a regular file or a directory is ever opened for reading:
//!   those are reopened through `<proc>/thread-self/fd/N`, which opens exactly the inode
//!   just checked (a FIFO or a device swapped in meanwhile is never opened).
//! - Symbolic links become link entries holding their target as it is; FIFOs, sockets and
//!   devices are skipped (counted in [`GetSummary::skipped`]); a regular file with several
//!   names in the tree is stored once and linked from its other names.
//! - Owners are the numeric ids on disk; modes the twelve permission bits on disk; times
//!   the modification times.
//! - A file that shrinks while it is read is padded with zeros to the size it had when
//!   its header was written; one that grows is cut at that size.
//! - Directories deeper than [`MAX_DEPTH`] below `SRC` fail the copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{FileType, Mode, OFlags, Stat};

use super::{open_beneath, open_in_root, pseudo_filesystem, shown, CallerPath, FilesError, Limits};

/// Deepest directory nesting below `SRC` that is copied (each level holds a descriptor).
pub const MAX_DEPTH: usize = 256;

/// Options of [`get`].
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// Follow `SRC` when its last component is a symbolic link (`docker cp -L`). Default
    /// false: the link itself is archived.
    pub follow_link: bool,
    /// Caps on what is read.
    pub limits: Limits,
    /// Where the host's proc filesystem is mounted. Default `/proc`.
    pub proc_root: PathBuf,
}

impl Default for GetOptions {
    fn default() -> Self {
        GetOptions {
            follow_link: false,
            limits: Limits::default(),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What [`get`] archived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetSummary {
    /// Entries written.
    pub entries: u64,
    /// Bytes of regular files written.
    pub bytes: u64,
    /// FIFOs, sockets and devices left out.
    pub skipped: u64,
}

/// Writes the file or directory `src` of the sandbox whose root is `root` to `out` as a
/// tar stream, under the rules of this module.
pub fn get(
    root: impl AsFd,
    src: &str,
    out: impl Write,
    opts: &GetOptions,
) -> Result<GetSummary, FilesError> {
    let cp = CallerPath::parse(src.as_bytes())?;
    let not_found = |e: rustix::io::Errno| match e {
        rustix::io::Errno::NOENT => FilesError::NotFound {
            path: shown(src.as_bytes()),
        },
        rustix::io::Errno::NOTDIR => FilesError::Conflict {
            path: shown(src.as_bytes()),
            reason: "not a directory".into(),
        },
        e => FilesError::Io {
            path: shown(src.as_bytes()),
            source: e.into(),
        },
    };
    let root = root.as_fd();
    let fd = if cp.base.is_empty() || cp.asserts_dir {
        open_in_root(root, src.as_bytes(), OFlags::PATH | OFlags::DIRECTORY)
    } else if opts.follow_link {
        open_in_root(root, src.as_bytes(), OFlags::PATH)
    } else {
        open_in_root(root, cp.parent, OFlags::PATH | OFlags::DIRECTORY).and_then(|parent| {
            open_beneath(
                &parent,
                cp.base,
                OFlags::PATH | OFlags::NOFOLLOW,
                Mode::empty(),
            )
        })
    }
    .map_err(not_found)?;
    if let Some(fs) = pseudo_filesystem(&fd).map_err(not_found)? {
        return Err(FilesError::Conflict {
            path: shown(src.as_bytes()),
            reason: format!("lies on a {fs} filesystem (kernel state, not files); not copied"),
        });
    }
    let st = rustix::fs::fstat(&fd).map_err(not_found)?;
    let top: Vec<u8> = if cp.contents || cp.base.is_empty() {
        b".".to_vec()
    } else {
        cp.base.to_vec()
    };
    let mut w = Writer {
        out: tar::Builder::new(out),
        opts: opts.clone(),
        summary: GetSummary::default(),
        linked: HashMap::new(),
        src: src.to_string(),
    };
    w.emit(fd, &st, top, 0)?;
    w.out.finish().map_err(|e| w.write_failed(e))?;
    Ok(w.summary)
}

struct Writer<W: Write> {
    out: tar::Builder<W>,
    opts: GetOptions,
    summary: GetSummary,
    /// Regular files with several names: (device, inode) → the name first archived.
    linked: HashMap<(u64, u64), Vec<u8>>,
    src: String,
}

impl<W: Write> Writer<W> {
    fn write_failed(&self, e: std::io::Error) -> FilesError {
        FilesError::Io {
            path: "the archive being written".into(),
            source: e,
        }
    }

    fn io(&self, name: &[u8], e: impl Into<std::io::Error>) -> FilesError {
        FilesError::Io {
            path: format!("{} (at `{}`)", shown(self.src.as_bytes()), shown(name)),
            source: e.into(),
        }
    }

    /// Opens the inode behind the `O_PATH` descriptor `fd` for reading, and nothing else.
    fn reopen(&self, fd: &OwnedFd, st: &Stat, name: &[u8], dir: bool) -> Result<File, FilesError> {
        let path = self
            .opts
            .proc_root
            .join("thread-self/fd")
            .join(fd.as_raw_fd().to_string());
        let flags = if dir {
            OFlags::RDONLY | OFlags::DIRECTORY
        } else {
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY
        };
        let file = File::from(
            rustix::fs::open(&path, flags | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| self.io(name, e))?,
        );
        let again = rustix::fs::fstat(&file).map_err(|e| self.io(name, e))?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return Err(self.io(name, std::io::Error::other("reopened a different file")));
        }
        Ok(file)
    }

    fn count(&mut self, name: &[u8], bytes: u64) -> Result<(), FilesError> {
        let limits = self.opts.limits;
        if self.summary.entries >= limits.max_entries {
            return Err(FilesError::Limit {
                what: "entry count",
                limit: limits.max_entries,
                entry: shown(name),
            });
        }
        if self.summary.bytes.saturating_add(bytes) > limits.max_bytes {
            return Err(FilesError::Limit {
                what: "byte",
                limit: limits.max_bytes,
                entry: shown(name),
            });
        }
        self.summary.entries += 1;
        self.summary.bytes += bytes;
        Ok(())
    }

    fn header(st: &Stat, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid.into());
        h.set_gid(st.st_gid.into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(size);
        h
    }

    /// Archives the inode behind `fd` (an `O_PATH` descriptor, type in `st`) as `name`.
    fn emit(
        &mut self,
        fd: OwnedFd,
        st: &Stat,
        name: Vec<u8>,
        depth: usize,
    ) -> Result<(), FilesError> {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => self.file(fd, st, name),
            FileType::Directory => self.dir(fd, st, name, depth),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(|e| self.io(&name, e))?
                    .into_bytes();
                self.count(&name, 0)?;
                let h = Self::header(st, tar::EntryType::Symlink, 0);
                self.append(h, &name, Some(&target), std::io::empty())
            }
            _ => {
                self.summary.skipped += 1;
                Ok(())
            }
        }
    }

    fn file(&mut self, fd: OwnedFd, st: &Stat, name: Vec<u8>) -> Result<(), FilesError> {
        let id = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.linked.get(&id).cloned() {
                self.count(&name, 0)?;
                let h = Self::header(st, tar::EntryType::Link, 0);
                return self.append(h, &name, Some(&first), std::io::empty());
            }
        }
        let size = st.st_size.max(0) as u64;
        self.count(&name, size)?;
        let file = self.reopen(&fd, st, &name, false)?;
        let h = Self::header(st, tar::EntryType::Regular, size);
        self.append(
            h,
            &name,
            None,
            Exact {
                inner: file,
                left: size,
            },
        )?;
        if st.st_nlink > 1 {
            self.linked.insert(id, name);
        }
        Ok(())
    }

    fn dir(
        &mut self,
        fd: OwnedFd,
        st: &Stat,
        name: Vec<u8>,
        depth: usize,
    ) -> Result<(), FilesError> {
        if depth > MAX_DEPTH {
            return Err(FilesError::Limit {
                what: "directory depth",
                limit: MAX_DEPTH as u64,
                entry: shown(&name),
            });
        }
        self.count(&name, 0)?;
        let mut dir_name = name.clone();
        dir_name.push(b'/');
        let h = Self::header(st, tar::EntryType::Directory, 0);
        self.append(h, &dir_name, None, std::io::empty())?;
        if depth > 0
            && pseudo_filesystem(&fd)
                .map_err(|e| self.io(&name, e))?
                .is_some()
        {
            return Ok(()); // a pseudo filesystem mounted in the tree: its mount point only
        }
        let dir = self.reopen(&fd, st, &name, true)?;
        let mut names: Vec<Vec<u8>> = rustix::fs::Dir::read_from(&dir)
            .map_err(|e| self.io(&name, e))?
            .map(|d| d.map(|d| d.file_name().to_bytes().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| self.io(&name, e))?;
        names.retain(|n| n != b"." && n != b"..");
        names.sort();
        for child in names {
            let child_fd =
                match open_beneath(&dir, &child, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => continue, // removed meanwhile
                    Err(e) => return Err(self.io(&child, e)),
                };
            let child_st = rustix::fs::fstat(&child_fd).map_err(|e| self.io(&child, e))?;
            let child_name = [&dir_name[..], &child].concat();
            self.emit(child_fd, &child_st, child_name, depth + 1)?;
        }
        Ok(())
    }

    /// Appends one entry, with GNU long-name and long-link members where the header's
    /// fields are too short (written here so that names keep a leading `./`).
    fn append(
        &mut self,
        mut h: tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        data: impl Read,
    ) -> Result<(), FilesError> {
        const FIELD: usize = 100;
        for (bytes, kind, field_is_name) in [(Some(name), b'L', true), (link, b'K', false)] {
            let Some(bytes) = bytes else { continue };
            let gnu = h.as_gnu_mut().expect("a GNU header");
            let field = if field_is_name {
                &mut gnu.name
            } else {
                &mut gnu.linkname
            };
            field.fill(0);
            let n = bytes.len().min(FIELD);
            field[..n].copy_from_slice(&bytes[..n]);
            if bytes.len() > FIELD {
                let mut ext = tar::Header::new_gnu();
                let ext_name = b"././@LongLink";
                ext.as_gnu_mut().expect("a GNU header").name[..ext_name.len()]
                    .copy_from_slice(ext_name);
                ext.set_mode(0o644);
                ext.set_entry_type(tar::EntryType::new(kind));
                ext.set_size(bytes.len() as u64 + 1);
                ext.set_cksum();
                let data = [bytes, b"\0"].concat();
                self.out
                    .append(&ext, data.as_slice())
                    .map_err(|e| self.write_failed(e))?;
            }
        }
        h.set_cksum();
        self.out.append(&h, data).map_err(|e| self.write_failed(e))
    }
}

/// Reads exactly `left` bytes: the file's, then zeros if it ended early.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}
