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
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::dest::Destination;
use super::reader::{for_each_member, Member};
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
    /// Keep the owner and group each entry has in the archive (`cp -a`, Docker's
    /// `copyUIDGID`), mapped through these maps, instead of [`PutOptions::uid`] and
    /// [`PutOptions::gid`] (which still own the parent directories the archive did not
    /// list). Default `None`: the sandbox user owns everything.
    pub archive_owner: Option<OwnerMap>,
}

/// How an archive's owner and group ids become the host's: through a user namespace's
/// maps (`container_id`, `host_id`, `size`), or as they are when a map is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerMap {
    /// UID ranges: `(container_id, host_id, size)`.
    pub uids: Vec<(u32, u32, u32)>,
    /// GID ranges, likewise.
    pub gids: Vec<(u32, u32, u32)>,
}

impl OwnerMap {
    fn map(ranges: &[(u32, u32, u32)], id: u64) -> Option<u32> {
        let id = u32::try_from(id).ok()?;
        if ranges.is_empty() {
            return Some(id);
        }
        ranges.iter().find_map(|&(inside, host, size)| {
            let off = id.checked_sub(inside)?;
            (off < size).then(|| host.checked_add(off)).flatten()
        })
    }

    /// The host UID of the archive's `uid`; `None` when no range holds it.
    pub fn uid(&self, uid: u64) -> Option<u32> {
        OwnerMap::map(&self.uids, uid)
    }

    /// The host GID of the archive's `gid`; `None` when no range holds it.
    pub fn gid(&self, gid: u64) -> Option<u32> {
        OwnerMap::map(&self.gids, gid)
    }
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            uid: 65534,
            gid: 65534,
            limits: Limits::default(),
            archive_owner: None,
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

mod make;

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
        owner: (opts.uid, opts.gid),
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
    /// Owner and group of the entry being made.
    owner: (u32, u32),
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
            Some(nix::libc::ENOSPC | nix::libc::EDQUOT) => FilesError::Limit {
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
        let owner = self.owner_of(m)?;
        // Parent directories the archive did not list are the sandbox user's.
        self.owner = (self.opts.uid, self.opts.gid);
        let parent = self.walk(m, parent_rel)?;
        self.owner = owner;
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

    /// The owner and group an entry gets: the sandbox user's, or with
    /// [`PutOptions::archive_owner`] the archive's own, mapped.
    fn owner_of(&self, m: &Member) -> Result<(u32, u32), FilesError> {
        let Some(map) = &self.opts.archive_owner else {
            return Ok((self.opts.uid, self.opts.gid));
        };
        let (Some(uid), Some(gid)) = (m.uid, m.gid) else {
            return Err(self.refused(m, "has no readable owner (copied keeping owners)"));
        };
        match (map.uid(uid), map.gid(gid)) {
            (Some(u), Some(g)) => Ok((u, g)),
            _ => Err(self.refused(
                m,
                format!("is owned by {uid}:{gid}, which the sandbox's user namespace does not map"),
            )),
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
}
