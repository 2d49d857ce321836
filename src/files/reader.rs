//! Reading a tar stream member by member with bounded memory.
//!
//! The `tar` crate reads a GNU long-name member or a pax header whole into memory, however
//! large its size field says it is. So the members are read raw here: an extension member
//! larger than [`MAX_EXTENSION`] is refused before it is read, and the names it carries
//! are applied to the member that follows it.

use std::io::Read;

use super::{shown, FilesError};

/// Largest GNU long-name, long-link or pax member accepted (a path is at most 4096 bytes
/// on Linux; pax records add a little).
pub(crate) const MAX_EXTENSION: u64 = 64 * 1024;

/// What a member of the archive is, after its extension members were applied.
#[derive(Debug)]
pub(crate) struct Member {
    /// The member's name as stored (raw bytes; not yet checked).
    pub name: Vec<u8>,
    /// The link target of a symbolic or hard link.
    pub link: Vec<u8>,
    pub kind: tar::EntryType,
    /// Permission bits as stored (all twelve).
    pub mode: u32,
    pub mtime: u64,
    /// Size of the member's data.
    pub size: u64,
    /// Owner and group as stored (a pax `uid`/`gid` record wins over the header's; `None`
    /// when neither is readable).
    pub uid: Option<u64>,
    pub gid: Option<u64>,
}

fn unreadable(e: &std::io::Error) -> FilesError {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string().replace('\n', " ");
    FilesError::BadArchive {
        reason: s.chars().take(160).collect(),
    }
}

/// Calls `each` with every member of `archive` (global pax headers and extension members
/// are consumed here) and a reader of its data. `each` returning an error stops the walk.
pub(crate) fn for_each_member<R: Read>(
    archive: R,
    mut each: impl FnMut(&Member, &mut dyn Read) -> Result<(), FilesError>,
) -> Result<(), FilesError> {
    let mut archive = tar::Archive::new(archive);
    let entries = archive.entries().map_err(|e| unreadable(&e))?.raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| unreadable(&e))?;
        let header = entry.header();
        let kind = header.entry_type();
        let size = header.entry_size().map_err(|e| unreadable(&e))?;
        let header_name = header.path_bytes().into_owned();
        if kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions() {
            if size > MAX_EXTENSION {
                return Err(FilesError::Refused {
                    entry: shown(&header_name),
                    reason: format!(
                        "an extension member of {size} bytes (at most {MAX_EXTENSION} accepted)"
                    ),
                });
            }
            let slot = if kind.is_gnu_longname() {
                &mut long_name
            } else if kind.is_gnu_longlink() {
                &mut long_link
            } else {
                &mut pax
            };
            if slot.is_some() {
                return Err(FilesError::BadArchive {
                    reason: "two extension members of one kind for the same member".into(),
                });
            }
            let mut data = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut data).map_err(|e| unreadable(&e))?;
            *slot = Some(data);
            continue;
        }
        if kind.is_pax_global_extensions() {
            continue; // archive-wide metadata, no file
        }
        let mut name = long_name.take().map(trim_nul).unwrap_or(header_name);
        let mut link = long_link
            .take()
            .map(trim_nul)
            .or_else(|| header.link_name_bytes().map(std::borrow::Cow::into_owned))
            .unwrap_or_default();
        let mut uid = header.uid().ok();
        let mut gid = header.gid().ok();
        if let Some(records) = pax.take() {
            for record in tar::PaxExtensions::new(&records) {
                let record = record.map_err(|e| unreadable(&e))?;
                match record.key_bytes() {
                    b"path" => name = record.value_bytes().to_vec(),
                    b"uid" => uid = record.value().ok().and_then(|v| v.parse().ok()),
                    b"gid" => gid = record.value().ok().and_then(|v| v.parse().ok()),
                    b"linkpath" => link = record.value_bytes().to_vec(),
                    b"size" if record.value_bytes() != size.to_string().as_bytes() => {
                        return Err(FilesError::Refused {
                            entry: shown(&name),
                            reason: "a pax size record (files over 8 GiB are not accepted)".into(),
                        })
                    }
                    _ => {}
                }
            }
        }
        let member = Member {
            name,
            link,
            kind,
            mode: header.mode().map_err(|e| unreadable(&e))?,
            mtime: header.mtime().unwrap_or(0),
            size,
            uid,
            gid,
        };
        each(&member, &mut entry)?;
    }
    Ok(())
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// Reads exactly `size` bytes of a member's data into `out`; a short stream is a
/// truncated archive.
pub(crate) fn copy_exact(
    data: &mut dyn Read,
    size: u64,
    out: &mut dyn std::io::Write,
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(CopyError::Archive(FilesError::BadArchive {
                    reason: "truncated: a member's data ends early".into(),
                }))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Archive(unreadable(&e))),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
        left -= n as u64;
    }
    Ok(())
}

/// Why [`copy_exact`] stopped: the archive or the file written.
pub(crate) enum CopyError {
    Archive(FilesError),
    Write(std::io::Error),
}
