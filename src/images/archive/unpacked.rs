//! The outer archive of an import, unpacked without trusting it.
//!
//! What an archive may hold:
//! - regular files and directories;
//! - symbolic and hard links that name another regular file of the same archive. Real
//!   `docker save` output has them (a layer saved twice is a symbolic link to the first
//!   copy; newer Docker links `<id>/layer.tar` to `blobs/sha256/<digest>`). Such a link is
//!   resolved lexically in the archive's own entry table (a symbolic link relative to its
//!   directory, a hard link relative to the archive's root) and becomes another name for
//!   that file. It is never created on the filesystem.
//!
//! Everything else is refused with the entry named: absolute names, names with `..`, a
//! link whose target is absolute, climbs out of the archive, is missing from it, or is a
//! directory, devices, FIFOs, sockets and unknown entry types; so is a name given twice,
//! or one beneath a file or a link.
//!
//! The archive's names never reach the filesystem either: each regular file is written
//! under a number of its own in the scratch directory, and is read back through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` relative to a
//! handle on that directory. Whether a name exists is answered from the entry table alone,
//! so no answer depends on the host's files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::images::ImageError;

/// Links followed one after another at most this many times (a loop fails).
const MAX_LINK_HOPS: usize = 16;

/// How an open beneath the scratch directory resolves: never through a link of any kind,
/// never out of the directory.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// One name in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    /// A regular file, stored in the scratch directory under `stored`.
    File {
        stored: String,
    },
    /// A link entry, until it is resolved: its target as a clean archive path.
    Link {
        target: String,
    },
}

/// An unpacked archive: its entry table and the scratch directory holding its files.
#[derive(Debug)]
pub struct Unpacked {
    archive: PathBuf,
    root: OwnedFd,
    entries: BTreeMap<String, Node>,
    /// Regular files stored so far (each is stored under its number).
    stored: usize,
}

/// Unpacks the (possibly gzip-compressed) tar at `archive` into the empty directory `out`
/// under the rule of this module.
pub fn unpack_archive(archive: &Path, out: &Path) -> Result<Unpacked, ImageError> {
    let io = |source| ImageError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let mut f = File::open(archive).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(io)?;
    let f = File::open(archive).map_err(io)?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let root = rustix::fs::open(
        out,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        path: out.to_path_buf(),
        source: e.into(),
    })?;
    let mut u = Unpacked {
        archive: archive.to_path_buf(),
        root,
        entries: BTreeMap::new(),
        stored: 0,
    };
    u.read_entries(tar::Archive::new(reader))?;
    u.resolve_links()?;
    Ok(u)
}

impl Unpacked {
    /// The error refusing the entry `entry` of this archive (a name it holds or one of its
    /// documents gives), which is escaped for printing.
    pub(super) fn refused(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        ImageError::ArchiveEntry {
            path: self.archive.clone(),
            entry: entry.escape_debug().to_string(),
            reason: reason.into(),
        }
    }

    /// The error refusing this archive as a whole.
    pub(super) fn invalid(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Archive {
            path: self.archive.clone(),
            reason: reason.into(),
        }
    }

    /// The error when the unpacked copy of the file `name` fails to read.
    pub(super) fn read_failed(&self, name: &str, e: &std::io::Error) -> ImageError {
        self.refused(name, format!("cannot read its unpacked copy: {e}"))
    }

    fn unreadable(&self, e: &std::io::Error) -> ImageError {
        self.invalid(format!(
            "not a readable tar archive (truncated or corrupt): {}",
            root_cause(e)
        ))
    }

    fn read_entries<R: Read>(&mut self, mut tar: tar::Archive<R>) -> Result<(), ImageError> {
        let entries = tar.entries().map_err(|e| self.unreadable(&e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.unreadable(&e))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue; // metadata for the whole archive, no file
            }
            let name = clean(&raw).map_err(|reason| self.refused(&raw, reason))?;
            if name.is_empty() {
                if kind.is_dir() {
                    continue; // the archive's own root, `./`
                }
                return Err(self.refused(&raw, "names the archive's root"));
            }
            let node = match kind {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Regular => {
                    let stored = self.store(&raw, &mut entry)?;
                    Node::File { stored }
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let resolved = if kind == tar::EntryType::Symlink {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        resolve_relative(dir, &target)
                    } else {
                        clean(&target)
                    };
                    let target = resolved.map_err(|reason| {
                        self.refused(
                            &raw,
                            format!("links to `{}`, which {reason}", target.escape_debug()),
                        )
                    })?;
                    Node::Link { target }
                }
                other => {
                    return Err(self.refused(
                        &raw,
                        format!(
                            "is a {} (only regular files, directories and links to files of \
                             the archive are accepted)",
                            kind_name(other)
                        ),
                    ))
                }
            };
            self.insert(&raw, name, node)?;
        }
        Ok(())
    }

    /// Copies an entry's bytes into a new file of the scratch directory; returns its name.
    fn store<R: Read>(
        &mut self,
        raw: &str,
        entry: &mut tar::Entry<R>,
    ) -> Result<String, ImageError> {
        let stored = format!("{:08}", self.stored);
        self.stored += 1;
        let fd = rustix::fs::openat2(
            &self.root,
            stored.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
            beneath(),
        )
        .map_err(|e| self.refused(raw, format!("cannot store it: {e}")))?;
        let mut out = std::io::BufWriter::new(File::from(fd));
        std::io::copy(entry, &mut out).map_err(|e| self.unreadable(&e))?;
        std::io::Write::flush(&mut out).map_err(|e| self.unreadable(&e))?;
        Ok(stored)
    }

    fn insert(&mut self, raw: &str, name: String, node: Node) -> Result<(), ImageError> {
        let mut prefix = name.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            match self.entries.get(parent) {
                Some(Node::Dir) | None => {}
                Some(_) => {
                    return Err(self.refused(
                        raw,
                        format!("lies beneath `{}`, not a directory", parent.escape_debug()),
                    ))
                }
            }
            prefix = parent;
        }
        let below = format!("{name}/");
        let has_children = self
            .entries
            .range(below.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&below));
        match (self.entries.get(&name), &node) {
            (Some(Node::Dir), Node::Dir) => Ok(()),
            (None, Node::Dir) => {
                self.entries.insert(name, node);
                Ok(())
            }
            (None, _) if has_children => Err(self.refused(
                raw,
                "is a directory of the archive given again as a file or link",
            )),
            (None, _) => {
                self.entries.insert(name, node);
                Ok(())
            }
            (Some(_), _) => Err(self.refused(raw, "appears twice in the archive")),
        }
    }

    /// Turns every link into another name for the regular file it leads to.
    fn resolve_links(&mut self) -> Result<(), ImageError> {
        let links: Vec<(String, String)> = self
            .entries
            .iter()
            .filter_map(|(k, n)| match n {
                Node::Link { target } => Some((k.clone(), target.clone())),
                _ => None,
            })
            .collect();
        for (name, first) in links {
            let mut target = first.clone();
            let first = first.escape_debug();
            let mut hops = 0;
            let node = loop {
                match self.entries.get(&target) {
                    Some(Node::Link { target: next }) if hops < MAX_LINK_HOPS => {
                        target = next.clone();
                        hops += 1;
                    }
                    Some(Node::Link { .. }) => {
                        break Err(format!(
                            "links to `{first}`, through more than {MAX_LINK_HOPS} links"
                        ))
                    }
                    Some(Node::File { stored }) => {
                        break Ok(Node::File {
                            stored: stored.clone(),
                        })
                    }
                    Some(Node::Dir) => {
                        break Err(format!(
                            "links to `{first}`, a directory (links must name files)"
                        ))
                    }
                    None => break Err(format!("links to `{first}`, which is not in the archive")),
                }
            };
            let node = node.map_err(|reason| self.refused(&name, reason))?;
            self.entries.insert(name, node);
        }
        Ok(())
    }

    /// The archive this was unpacked from.
    pub fn archive(&self) -> &Path {
        &self.archive
    }

    /// True when `name` is a regular file of the archive (or a link to one).
    pub fn has_file(&self, name: &str) -> bool {
        matches!(self.entries.get(name), Some(Node::File { .. }))
    }

    /// Opens the regular file `name` of the archive, a path that `named_in` (a document
    /// of the archive) gives. Refused, with the path named, when it is absolute, has
    /// `..`, or is not a file of the archive.
    pub fn open(&self, name: &str, named_in: &str) -> Result<File, ImageError> {
        let clean_name = clean(name)
            .map_err(|reason| self.refused(name, format!("named in {named_in}, {reason}")))?;
        let stored = match self.entries.get(&clean_name) {
            Some(Node::File { stored }) => stored,
            Some(_) => {
                return Err(self.refused(
                    name,
                    format!("named in {named_in}, is not a regular file of the archive"),
                ))
            }
            None => {
                return Err(
                    self.refused(name, format!("named in {named_in}, is not in the archive"))
                )
            }
        };
        let fd = rustix::fs::openat2(
            &self.root,
            stored.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        )
        .map_err(|e| self.refused(name, format!("cannot open its unpacked copy: {e}")))?;
        let file = File::from(fd);
        match file.metadata() {
            Ok(m) if m.file_type().is_file() => Ok(file),
            _ => Err(self.refused(name, "its unpacked copy is not a regular file")),
        }
    }

    /// The whole of the file `name` (see [`Unpacked::open`]).
    pub fn read(&self, name: &str, named_in: &str) -> Result<Vec<u8>, ImageError> {
        let mut bytes = Vec::new();
        self.open(name, named_in)?
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_failed(name, &e))?;
        Ok(bytes)
    }
}

/// A name of the archive as a clean relative path (`a/b`, no `.`, no empty parts; empty
/// for the root), or why it is refused.
fn clean(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err("is absolute (leaves the archive)".into());
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("has `..` (leaves the archive)".into()),
            p if p.contains('\0') => return Err("has a NUL byte".into()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The clean archive path a symbolic link in directory `dir` (clean) leads to, resolved
/// lexically; refused when the target is absolute or climbs above the archive's root.
fn resolve_relative(dir: &str, target: &str) -> Result<String, String> {
    if target.is_empty() {
        return Err("is empty".into());
    }
    if target.starts_with('/') {
        return Err("is absolute (outside the archive)".into());
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("climbs out of the archive".into());
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn kind_name(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        tar::EntryType::Continuous => "contiguous file".into(),
        tar::EntryType::GNUSparse => "sparse file".into(),
        other => format!("entry of type `{}`", other.as_byte().escape_ascii()),
    }
}

/// The innermost cause of an error, on one line and at most 120 characters (the tar
/// reader's outer messages repeat paths that mean nothing to the user).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string().replace('\n', " ");
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}
