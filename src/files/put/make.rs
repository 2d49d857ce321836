//! Making one entry of an archive in the sandbox: a directory, a file, a symbolic or hard
//! link, each under a fresh temporary name, owned and moded through a descriptor on the new
//! inode, then renamed over its name (see [`super`]).

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::{components, Extractor, TEMP_TRIES};
use crate::files::reader::{copy_exact, CopyError, Member};
use crate::files::{open_beneath, shown, FilesError};

impl Extractor {
    /// Creates directory `name` in `parent`, then owns and modes it through a descriptor,
    /// after checking that the directory opened is the new, empty one this copy made.
    pub(super) fn make_dir(
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
            Some(rustix::fs::Uid::from_raw(self.owner.0)),
            Some(rustix::fs::Gid::from_raw(self.owner.1)),
        )
        .map_err(|e| self.io(m, e))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(|e| self.io(m, e))
    }

    /// A name for a new entry in `parent` that nothing has now.
    pub(super) fn temp_name(&mut self) -> Vec<u8> {
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
    pub(super) fn create_and_rename(
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

    pub(super) fn write_file(
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
                Some(rustix::fs::Uid::from_raw(this.owner.0)),
                Some(rustix::fs::Gid::from_raw(this.owner.1)),
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

    pub(super) fn make_symlink(
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
                Some(rustix::fs::Uid::from_raw(this.owner.0)),
                Some(rustix::fs::Gid::from_raw(this.owner.1)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| MakeError::Failed(this.io(m, e)))
        })
    }

    pub(super) fn make_hard_link(
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
pub(super) enum MakeError {
    Taken,
    Failed(FilesError),
}
