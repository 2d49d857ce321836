//! Copying a tar stream into a sandbox.
//!
//! # Where the archive goes (`docker cp` semantics)
//! `DST` is resolved inside the sandbox's root (links followed the sandbox's way, see the
//! module docs); its parent directory must exist. The archive's *top* is the first
//! component of its names (`./` counts as a top of its own, `.`).
//!
//! | `DST` | archive | result |
//! |---|---|---|
//! | an existing directory | anything | extracted inside it (`./x` and `x` both become `DST/x`) |
//! | an existing regular file | one top, a file or link | the top replaces `DST` |
//! | an existing regular file | a directory top | refused: a directory cannot replace a file |
//! | missing, parent exists | one top | the top is created under `DST`'s name |
//! | missing, ends with `/` | one top, a file | refused: the directory `DST` does not exist |
//! | missing | a second top | refused at the second top's first entry |
//! | a symbolic link | | followed once (resolved inside the root), as `docker cp` does |
//! | anything else (FIFO, device, socket) | | refused |
//!
//! # What an archive may hold
//! - Regular files, directories, symbolic links and hard links. A symbolic link is created
//!   as it is stored (any target: it is data inside the sandbox, which could make the same
//!   link itself) and is never followed by the copy. A hard link must name a regular file
//!   that an earlier entry of the same archive created.
//! - Refused, with the entry named, failing the whole copy: absolute names, any `..`
//!   component, devices, FIFOs, sparse and unknown member types, a hard link to anything
//!   else, a name beneath a symbolic link or a file (the copy never follows a link, even
//!   one the sandbox placed in the destination), a non-directory over an existing
//!   directory and a directory over an existing non-directory (docker's
//!   `NoOverwriteDirNonDir`), an entry on a pseudo filesystem.
//! - Neutralised: the set-user-ID, set-group-ID and sticky bits are dropped; every entry is
//!   owned by [`PutOptions::uid`]:[`PutOptions::gid`] whatever the archive says.
//!   Group- and world-writable bits are kept: the owner is the sandbox user, who could set
//!   them on its own files anyway.
//! - Missing parent directories are created (mode 0755, owned by the sandbox user).
//!   Existing directories are merged into and keep their owner and mode.
//! - Regular files' modification times are kept; directories' and links' are not.
//!
//! # How entries are written
//! Every entry is made under a fresh temporary name (`O_CREAT | O_EXCL`, or `mkdirat`,
//! `symlinkat`, `linkat`) in its parent directory, owned and moded through a descriptor on
//! the new inode, then renamed over its name. An existing file is therefore replaced,
//! never opened for writing: a hard link the sandbox made from it to another file stays
//! untouched. Nothing is chowned or chmodded by name.
//!
//! On failure, entries written before the failing one stay in the sandbox (as with
//! `docker cp`); nothing is ever written outside the root.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::dest::Destination;
use super::reader::{copy_exact, for_each_member, CopyError, Member};
use super::{open_beneath, pseudo_filesystem, shown, FilesError, Limits};

/// Options of [`put`].
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Owner of every entry written: the sandbox's user. Default 65534, the policy's
    /// default user (never root by accident).
    pub uid: u32,
    /// Group of every entry written. Default 65534.
    pub gid: u32,
    /// Caps on the archive.
    pub limits: Limits,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            uid: 65534,
            gid: 65534,
            limits: Limits::default(),
        }
    }
}

/// What [`put`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutSummary {
    /// Entries of the archive taken (the destination directory's own `./` included).
    pub entries: u64,
    /// Bytes of regular files written.
    pub bytes: u64,
}

/// Permission bits kept from an archive: setuid, setgid and sticky are dropped.
const KEPT_MODE: u32 = 0o777;

/// Mode of a parent directory the archive did not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// Tries at a fresh temporary name before giving up (the sandbox may take names).
const TEMP_TRIES: u32 = 64;

/// Extracts the tar stream `archive` into the sandbox whose root is `root`, at the sandbox
/// path `dst`, under the rules of this module.
pub fn put(
    root: impl AsFd,
    dst: &str,
    archive: impl Read,
    opts: &PutOptions,
) -> Result<PutSummary, FilesError> {
    let dest = Destination::resolve(root.as_fd(), dst)?;
    let mut x = Extractor {
        dst: dst.to_string(),
        dest: Some(dest),
        place: None,
        opts: opts.clone(),
        files: HashMap::new(),
        summary: PutSummary::default(),
        temp_counter: 0,
        euid: nix::unistd::geteuid().as_raw(),
    };
    for_each_member(archive, |m, data| x.entry(m, data))?;
    Ok(x.summary)
}

/// Where the archive's names land: a base directory and whether the top is renamed.
enum Place {
    /// Names are taken relative to the directory (a `.` top is the directory itself).
    Into(OwnedFd),
    /// The only top is renamed to `base`, in `parent`.
    Renamed {
        parent: OwnedFd,
        top: Vec<u8>,
        base: Vec<u8>,
    },
}

struct Extractor {
    dst: String,
    dest: Option<Destination>,
    place: Option<Place>,
    opts: PutOptions,
    /// Regular files this copy created: mapped name → (device, inode).
    files: HashMap<Vec<u8>, (u64, u64)>,
    summary: PutSummary,
    temp_counter: u64,
    euid: u32,
}

/// The components of a member's name, or why it is refused. A leading `.` is kept as a
/// top of its own; `.` elsewhere and empty components are dropped.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.is_empty() {
        return Err("has an empty name".into());
    }
    if raw.starts_with(b"/") {
        return Err("is absolute (it would leave the destination)".into());
    }
    let mut out = Vec::new();
    for (i, part) in raw.split(|&b| b == b'/').enumerate() {
        match part {
            b"" => {}
            b"." if i == 0 => out.push(part),
            b"." => {}
            b".." => return Err("has a `..` component".into()),
            p if p.contains(&0) => return Err("has a NUL byte".into()),
            p => out.push(p),
        }
    }
    Ok(out)
}

impl Extractor {
    fn refused(&self, m: &Member, reason: impl Into<String>) -> FilesError {
        FilesError::Refused {
            entry: shown(&m.name),
            reason: reason.into(),
        }
    }

    fn io(&self, m: &Member, e: impl Into<std::io::Error>) -> FilesError {
        let e: std::io::Error = e.into();
        match e.raw_os_error() {
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => FilesError::Limit {
                what: "space on the sandbox's filesystem",
                limit: self.summary.bytes,
                entry: shown(&m.name),
            },
            Some(nix::libc::EROFS) => FilesError::Conflict {
                path: format!(
                    "{} (entry `{}`)",
                    shown(self.dst.as_bytes()),
                    shown(&m.name)
                ),
                reason: "read-only file system in the sandbox".into(),
            },
            _ => FilesError::Io {
                path: format!(
                    "{} (entry `{}`)",
                    shown(self.dst.as_bytes()),
                    shown(&m.name)
                ),
                source: e,
            },
        }
    }

    fn entry(&mut self, m: &Member, data: &mut dyn Read) -> Result<(), FilesError> {
        let limits = self.opts.limits;
        if self.summary.entries >= limits.max_entries {
            return Err(FilesError::Limit {
                what: "entry count",
                limit: limits.max_entries,
                entry: shown(&m.name),
            });
        }
        self.summary.entries += 1;
        if self.summary.bytes.saturating_add(m.size) > limits.max_bytes {
            return Err(FilesError::Limit {
                what: "byte",
                limit: limits.max_bytes,
                entry: shown(&m.name),
            });
        }
        use tar::EntryType as T;
        match m.kind {
            T::Regular | T::Directory | T::Symlink | T::Link => {}
            T::Char => return Err(self.refused(m, "is a character device")),
            T::Block => return Err(self.refused(m, "is a block device")),
            T::Fifo => return Err(self.refused(m, "is a FIFO")),
            T::GNUSparse => return Err(self.refused(m, "is a sparse file")),
            other => {
                return Err(self.refused(
                    m,
                    format!("has member type `{}`", other.as_byte().escape_ascii()),
                ))
            }
        }
        if m.kind != T::Regular && m.size > 0 {
            return Err(self.refused(m, "carries data although it is not a regular file"));
        }
        let comps = components(&m.name).map_err(|r| self.refused(m, r))?;
        if comps.is_empty() {
            return Err(self.refused(m, "names nothing"));
        }
        let is_dir = m.kind == T::Directory;
        if self.place.is_none() {
            self.place = Some(self.first(&comps, is_dir)?);
        }
        let Some(rel) = self.mapped(m, &comps)? else {
            // The destination directory itself (`./`): merged into, left as it is.
            return if is_dir {
                Ok(())
            } else {
                Err(self.refused(m, "names the destination directory itself"))
            };
        };
        let (parent_rel, name) = rel.split_at(rel.len() - 1);
        let name = name[0].clone();
        let parent = self.walk(m, parent_rel)?;
        if let Some(fs) = pseudo_filesystem(&parent).map_err(|e| self.io(m, e))? {
            return Err(self.refused(m, format!("lies on a {fs} filesystem")));
        }
        let existing = match rustix::fs::statat(&parent, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
        {
            Ok(st) => Some(st),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(self.io(m, e)),
        };
        let existing_dir =
            existing.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        match (is_dir, existing.is_some(), existing_dir) {
            (true, true, true) => return Ok(()),
            (true, true, false) => {
                return Err(self.refused(m, "would replace an existing non-directory"))
            }
            (false, true, true) => {
                return Err(self.refused(m, "would replace an existing directory"))
            }
            _ => {}
        }
        let mode = m.mode & KEPT_MODE;
        match m.kind {
            T::Directory => self.make_dir(m, &parent, &name, mode),
            T::Regular => {
                let id = self.write_file(m, data, &parent, &name, mode)?;
                self.summary.bytes += m.size;
                self.files.insert(rel.join(&b'/'), id);
                Ok(())
            }
            T::Symlink => self.make_symlink(m, &parent, &name),
            _ => {
                let same = existing.map(|st| (st.st_dev, st.st_ino));
                self.make_hard_link(m, &parent, &name, same)
            }
        }
    }

    /// Decides where names land, from the first member.
    fn first(&mut self, comps: &[&[u8]], is_dir: bool) -> Result<Place, FilesError> {
        let top_is_dir = comps.len() > 1 || is_dir;
        match self.dest.take().expect("resolved once") {
            Destination::Dir(fd) => Ok(Place::Into(fd)),
            Destination::Named { exists: true, .. } if top_is_dir => Err(FilesError::Conflict {
                path: shown(self.dst.as_bytes()),
                reason: format!(
                    "is a file; the archive's top `{}` is a directory, which cannot replace it",
                    shown(comps[0])
                ),
            }),
            Destination::Named {
                asserts_dir: true, ..
            } if !top_is_dir => Err(FilesError::NotFound {
                path: shown(self.dst.as_bytes()),
            }),
            Destination::Named { parent, base, .. } => Ok(Place::Renamed {
                parent,
                top: comps[0].to_vec(),
                base,
            }),
        }
    }

    /// The member's name relative to the base directory; `None` for the destination itself.
    fn mapped(&self, m: &Member, comps: &[&[u8]]) -> Result<Option<Vec<Vec<u8>>>, FilesError> {
        let rest = comps[1..].iter().map(|c| c.to_vec());
        match self.place.as_ref().expect("set by the first member") {
            Place::Into(_) if comps[0] == b"." => {
                let rel: Vec<Vec<u8>> = rest.collect();
                Ok((!rel.is_empty()).then_some(rel))
            }
            Place::Into(_) => Ok(Some(comps.iter().map(|c| c.to_vec()).collect())),
            Place::Renamed { top, base, .. } if comps[0] == top.as_slice() => {
                Ok(Some(std::iter::once(base.clone()).chain(rest).collect()))
            }
            Place::Renamed { top, .. } => Err(self.refused(
                m,
                format!(
                    "is a second top-level name beside `{}`; copied to a new name, an \
                     archive must hold one file or one directory",
                    shown(top)
                ),
            )),
        }
    }

    fn base(&self) -> &OwnedFd {
        match self.place.as_ref().expect("set by the first member") {
            Place::Into(fd) => fd,
            Place::Renamed { parent, .. } => parent,
        }
    }

    /// Opens the directory `rel` beneath the base, creating missing components; never
    /// through a link.
    fn walk(&mut self, m: &Member, rel: &[Vec<u8>]) -> Result<OwnedFd, FilesError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        let not_dir = |this: &Self, e: rustix::io::Errno, at: &[u8]| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => this.refused(
                m,
                format!(
                    "`{}` in the sandbox is a symbolic link (the copy never follows one)",
                    shown(at)
                ),
            ),
            rustix::io::Errno::NOTDIR => this.refused(
                m,
                format!("`{}` in the sandbox is not a directory", shown(at)),
            ),
            e => this.io(m, e),
        };
        let joined = rel.join(&b'/');
        match open_beneath(self.base(), &joined, flags, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(not_dir(self, e, &joined)),
        }
        let mut cur = self.base().try_clone().map_err(|e| self.io(m, e))?;
        for (i, comp) in rel.iter().enumerate() {
            let at = rel[..=i].join(&b'/');
            cur = match open_beneath(&cur, comp, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) => {
                    self.make_dir(m, &cur, comp, IMPLIED_DIR_MODE)?;
                    open_beneath(&cur, comp, flags, Mode::empty())
                        .map_err(|e| not_dir(self, e, &at))?
                }
                Err(e) => return Err(not_dir(self, e, &at)),
            };
        }
        Ok(cur)
    }

    /// Creates directory `name` in `parent`, then owns and modes it through a descriptor,
    /// after checking that the directory opened is the new, empty one this copy made.
    fn make_dir(
        &mut self,
        m: &Member,
        parent: &OwnedFd,
        name: &[u8],
        mode: u32,
    ) -> Result<(), FilesError> {
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            // Made meanwhile (by the sandbox): an existing directory, merged into as is.
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(e) => return Err(self.io(m, e)),
        }
        let fd = open_beneath(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| self.io(m, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.io(m, e))?;
        let empty = rustix::fs::Dir::read_from(&fd)
            .map_err(|e| self.io(m, e))?
            .filter_map(Result::ok)
            .all(|d| matches!(d.file_name().to_bytes(), b"." | b".."));
        if st.st_uid != self.euid || !empty {
            return Err(self.refused(m, "its directory was replaced while it was being created"));
        }
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(self.opts.uid)),
            Some(rustix::fs::Gid::from_raw(self.opts.gid)),
        )
        .map_err(|e| self.io(m, e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.io(m, e))
    }

    /// A name for a new entry in `parent` that nothing has now.
    fn temp_name(&mut self) -> Vec<u8> {
        self.temp_counter += 1;
        format!(
            ".stockade-put-{}-{}-{}",
            std::process::id(),
            self.temp_counter,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        )
        .into_bytes()
    }

    /// Runs `make` with fresh temporary names until one is free, then renames the result
    /// over `name`; the temporary is removed if anything fails.
    fn create_and_rename(
        &mut self,
        m: &Member,
        parent: &OwnedFd,
        name: &[u8],
        mut make: impl FnMut(&mut Self, &[u8]) -> Result<(), MakeError>,
    ) -> Result<(), FilesError> {
        for _ in 0..TEMP_TRIES {
            let temp = self.temp_name();
            match make(self, &temp) {
                Ok(()) => {}
                Err(MakeError::Taken) => continue,
                Err(MakeError::Failed(e)) => {
                    let _ = rustix::fs::unlinkat(parent, temp.as_slice(), AtFlags::empty());
                    return Err(e);
                }
            }
            return rustix::fs::renameat(parent, temp.as_slice(), parent, name).map_err(|e| {
                let _ = rustix::fs::unlinkat(parent, temp.as_slice(), AtFlags::empty());
                self.io(m, e)
            });
        }
        Err(self.refused(m, "no free temporary name in its directory"))
    }

    fn write_file(
        &mut self,
        m: &Member,
        data: &mut dyn Read,
        parent: &OwnedFd,
        name: &[u8],
        mode: u32,
    ) -> Result<(u64, u64), FilesError> {
        let mut id = (0, 0);
        self.create_and_rename(m, parent, name, |this, temp| {
            let fd = match open_beneath(
                parent,
                temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::EXIST) => return Err(MakeError::Taken),
                Err(e) => return Err(MakeError::Failed(this.io(m, e))),
            };
            let failed = |this: &Self, e: rustix::io::Errno| MakeError::Failed(this.io(m, e));
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(this.opts.uid)),
                Some(rustix::fs::Gid::from_raw(this.opts.gid)),
            )
            .map_err(|e| failed(this, e))?;
            let mut file = File::from(fd);
            match copy_exact(data, m.size, &mut file) {
                Ok(()) => {}
                Err(CopyError::Archive(e)) => return Err(MakeError::Failed(e)),
                Err(CopyError::Write(e)) => return Err(MakeError::Failed(this.io(m, e))),
            }
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|e| failed(this, e))?;
            let mtime = rustix::fs::Timespec {
                tv_sec: m.mtime.min(i64::MAX as u64) as i64,
                tv_nsec: 0,
            };
            let times = rustix::fs::Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            rustix::fs::futimens(&file, &times).map_err(|e| failed(this, e))?;
            let st = rustix::fs::fstat(&file).map_err(|e| failed(this, e))?;
            id = (st.st_dev, st.st_ino);
            Ok(())
        })?;
        Ok(id)
    }

    fn make_symlink(
        &mut self,
        m: &Member,
        parent: &OwnedFd,
        name: &[u8],
    ) -> Result<(), FilesError> {
        if m.link.is_empty() || m.link.contains(&0) {
            return Err(self.refused(m, "is a symbolic link with an empty or NUL-bearing target"));
        }
        let target = m.link.clone();
        self.create_and_rename(m, parent, name, |this, temp| {
            match rustix::fs::symlinkat(target.as_slice(), parent, temp) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => return Err(MakeError::Taken),
                Err(e) => return Err(MakeError::Failed(this.io(m, e))),
            }
            // Owned through a descriptor on the link itself, checked to be the one made.
            let fd = open_beneath(parent, temp, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| MakeError::Failed(this.io(m, e)))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| MakeError::Failed(this.io(m, e)))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Symlink
                || st.st_uid != this.euid
                || st.st_nlink != 1
            {
                return Err(MakeError::Failed(
                    this.refused(m, "its link was replaced while it was being created"),
                ));
            }
            rustix::fs::chownat(
                &fd,
                "",
                Some(rustix::fs::Uid::from_raw(this.opts.uid)),
                Some(rustix::fs::Gid::from_raw(this.opts.gid)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| MakeError::Failed(this.io(m, e)))
        })
    }

    fn make_hard_link(
        &mut self,
        m: &Member,
        parent: &OwnedFd,
        name: &[u8],
        existing: Option<(u64, u64)>,
    ) -> Result<(), FilesError> {
        let outside = |this: &Self, why: &str| {
            this.refused(
                m,
                format!(
                    "is a hard link to `{}`, {why} (hard links must name a file this archive \
                     created earlier)",
                    shown(&m.link)
                ),
            )
        };
        let comps = components(&m.link).map_err(|r| outside(self, &r))?;
        if comps.is_empty() {
            return Err(outside(self, "which names nothing"));
        }
        let rel = self
            .mapped(m, &comps)
            .map_err(|_| outside(self, "outside the archive's top"))?
            .ok_or_else(|| outside(self, "the destination itself"))?;
        let key = rel.join(&b'/');
        let Some(&want) = self.files.get(&key) else {
            return Err(outside(self, "not a file of this archive"));
        };
        if existing == Some(want) {
            return Ok(()); // already that file
        }
        let (target_rel, target_name) = rel.split_at(rel.len() - 1);
        let target_parent = open_beneath(
            self.base(),
            &target_rel.join(&b'/'),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|_| outside(self, "whose directory changed during the copy"))?;
        let target_name = target_name[0].clone();
        self.create_and_rename(m, parent, name, |this, temp| {
            match rustix::fs::linkat(
                &target_parent,
                target_name.as_slice(),
                parent,
                temp,
                AtFlags::empty(),
            ) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => return Err(MakeError::Taken),
                Err(e) => return Err(MakeError::Failed(this.io(m, e))),
            }
            // The name may have been swapped for another file meanwhile: check the inode.
            let st = rustix::fs::statat(parent, temp, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| MakeError::Failed(this.io(m, e)))?;
            if (st.st_dev, st.st_ino) != want {
                return Err(MakeError::Failed(outside(
                    this,
                    "whose file was replaced during the copy",
                )));
            }
            Ok(())
        })
    }
}

/// Why making a temporary entry failed: the name was taken (try another), or an error.
enum MakeError {
    Taken,
    Failed(FilesError),
}
