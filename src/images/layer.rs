//! A root filesystem directory → one deterministic layer tarball.
//!
//! The same tree gives the same bytes: entries in byte order of their paths, every mtime
//! [`LAYER_MTIME`], owner and group 0 with no names, no extended attributes. Setuid and
//! setgid bits are dropped (sandboxes run with `noNewPrivileges`, and a base image needs
//! none). Hard links stay hard links. Device nodes, FIFOs and sockets are left out: the
//! runtime provides `/dev`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use super::oci::{Descriptor, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR};

/// The modification time of every entry (the Unix epoch).
pub const LAYER_MTIME: u64 = 0;

/// Errors writing a layer.
#[derive(Debug, Error)]
pub enum LayerError {
    /// A file of the tree or the layer being written could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A layer blob written to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// Where the blob is.
    pub path: PathBuf,
    /// Its descriptor (media type, digest and size of the bytes as stored).
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar (the image config's `diff_id`).
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// Entries written.
    pub entries: u64,
}

/// Counts bytes and hashes them on the way through to `inner` (a layer blob being
/// written: its digest and size come out of [`Hashing::finish`]).
pub(crate) struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    /// A writer to `inner` that has seen no bytes yet.
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }
    /// The inner writer (not flushed), and the `sha256:` digest and count of the bytes
    /// written through.
    pub(crate) fn finish(self) -> (W, String, u64) {
        let digest = crate::digest::finish(self.hash);
        (self.inner, digest, self.len)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The descriptor of a layer blob: its media type says whether it is gzip-compressed.
pub(crate) fn layer_descriptor(gzip: bool, digest: String, size: u64) -> Descriptor {
    Descriptor {
        media_type: if gzip {
            MEDIA_LAYER_GZIP
        } else {
            MEDIA_LAYER_TAR
        }
        .to_string(),
        digest,
        size: size as i64,
        annotations: Default::default(),
        platform: None,
    }
}

/// Writes the tree under `rootfs` as a layer to `out`, gzip-compressed when `gzip`.
pub fn write_layer(rootfs: &Path, out: &Path, gzip: bool) -> Result<LayerBlob, LayerError> {
    let file = File::create(out).map_err(io_err(out))?;
    let stored = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let (stored, diff_id, uncompressed_size, entries) = if gzip {
        let enc = flate2::write::GzEncoder::new(stored, flate2::Compression::fast());
        let (enc, diff_id, n, entries) = write_tar(rootfs, enc, out)?;
        (enc.finish().map_err(io_err(out))?, diff_id, n, entries)
    } else {
        write_tar(rootfs, stored, out)?
    };
    let (mut buf, digest, size) = stored.finish();
    buf.flush().map_err(io_err(out))?;
    Ok(LayerBlob {
        path: out.to_path_buf(),
        descriptor: layer_descriptor(gzip, digest, size),
        diff_id,
        uncompressed_size,
        entries,
    })
}

/// Tars `rootfs` into `w`; returns `w`, the tar's digest, its length and the entry count.
fn write_tar<W: Write>(
    rootfs: &Path,
    w: W,
    out: &Path,
) -> Result<(W, String, u64, u64), LayerError> {
    let mut builder = tar::Builder::new(Hashing::new(w));
    let mut walk = Walk {
        links: HashMap::new(),
        entries: 0,
    };
    walk.dir(&mut builder, rootfs, Path::new(""))?;
    let hashing = builder.into_inner().map_err(io_err(out))?;
    let (w, diff_id, len) = hashing.finish();
    Ok((w, diff_id, len, walk.entries))
}

struct Walk {
    /// (device, inode) of multiply-linked files already written → their path in the tar.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

impl Walk {
    fn dir<W: Write>(
        &mut self,
        b: &mut tar::Builder<W>,
        host_dir: &Path,
        rel: &Path,
    ) -> Result<(), LayerError> {
        let mut names: Vec<_> = std::fs::read_dir(host_dir)
            .map_err(io_err(host_dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(host_dir))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        for name in names {
            let host = host_dir.join(&name);
            let path = rel.join(&name);
            let meta = std::fs::symlink_metadata(&host).map_err(io_err(&host))?;
            let ft = meta.file_type();
            let mut h = tar::Header::new_gnu();
            h.set_mtime(LAYER_MTIME);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(meta.mode() & 0o1777);
            if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, &path, std::io::empty())
                    .map_err(io_err(&host))?;
                self.entries += 1;
                self.dir(b, &host, &path)?;
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&host).map_err(io_err(&host))?;
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, &path, &target)
                    .map_err(io_err(&host))?;
                self.entries += 1;
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        b.append_link(&mut h, &path, first).map_err(io_err(&host))?;
                        self.entries += 1;
                        continue;
                    }
                    self.links.insert(key, path.clone());
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(meta.len());
                let f = File::open(&host).map_err(io_err(&host))?;
                b.append_data(&mut h, &path, f).map_err(io_err(&host))?;
                self.entries += 1;
            } else if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket()
            {
                // Left out on purpose (see the module docs).
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc/deep/er")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/deep/er/f"), vec![7u8; 70_000]).unwrap();
        std::os::unix::fs::symlink("/bin/tool", root.join("bin/sh")).unwrap();
        std::fs::hard_link(root.join("bin/tool"), root.join("bin/tool2")).unwrap();
        let long = "x".repeat(150);
        std::fs::write(root.join("etc").join(&long), b"long name").unwrap();
    }

    fn entries(blob: &Path, gzip: bool) -> Vec<(String, tar::EntryType, u32, u64)> {
        let f = File::open(blob).unwrap();
        let r: Box<dyn std::io::Read> = if gzip {
            Box::new(flate2::read::GzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut a = tar::Archive::new(r);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().display().to_string(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap() + h.uid().unwrap() + h.gid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn same_tree_same_digest_even_built_apart_in_time_and_place() {
        let a = tempfile::tempdir().unwrap();
        tree(&a.path().join("r"));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = tempfile::tempdir().unwrap();
        tree(&b.path().join("r"));
        for gzip in [false, true] {
            let la = write_layer(&a.path().join("r"), &a.path().join("l"), gzip).unwrap();
            let lb = write_layer(&b.path().join("r"), &b.path().join("l"), gzip).unwrap();
            assert_eq!(la.descriptor.digest, lb.descriptor.digest, "gzip={gzip}");
            assert_eq!(la.diff_id, lb.diff_id);
            assert_eq!(
                la.descriptor.size as u64,
                std::fs::metadata(&la.path).unwrap().len()
            );
        }
    }

    #[test]
    fn gzip_and_plain_have_the_same_diff_id() {
        let d = tempfile::tempdir().unwrap();
        tree(&d.path().join("r"));
        let plain = write_layer(&d.path().join("r"), &d.path().join("p"), false).unwrap();
        let gz = write_layer(&d.path().join("r"), &d.path().join("g"), true).unwrap();
        assert_eq!(plain.diff_id, gz.diff_id);
        assert_eq!(plain.diff_id, plain.descriptor.digest);
        assert_ne!(gz.diff_id, gz.descriptor.digest);
        assert_eq!(gz.descriptor.media_type, MEDIA_LAYER_GZIP);
        assert_eq!(entries(&plain.path, false), entries(&gz.path, true));
    }

    #[test]
    fn entries_are_sorted_owned_by_root_at_a_fixed_time_without_setuid() {
        let d = tempfile::tempdir().unwrap();
        tree(&d.path().join("r"));
        let l = write_layer(&d.path().join("r"), &d.path().join("l"), false).unwrap();
        let got = entries(&l.path, false);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        let long = format!("etc/{}", "x".repeat(150));
        assert_eq!(
            names,
            vec![
                "bin",
                "bin/sh",
                "bin/tool",
                "bin/tool2",
                "etc",
                "etc/deep",
                "etc/deep/er",
                "etc/deep/er/f",
                "etc/passwd",
                long.as_str(),
            ]
        );
        assert_eq!(l.entries, 10);
        for (name, kind, mode, time_and_owner) in &got {
            assert_eq!(*time_and_owner, LAYER_MTIME, "{name}");
            assert_eq!(mode & 0o6000, 0, "{name} keeps setuid/setgid");
            if name == "bin/tool2" {
                assert_eq!(*kind, tar::EntryType::Link);
            }
            if name == "bin/sh" {
                assert_eq!(*kind, tar::EntryType::Symlink);
            }
        }
    }
}
