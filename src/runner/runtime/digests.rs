//! The digests of runtime binaries, cached in the process and on disk by file identity
//! (see the module documentation of [`super`]).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// What identifies a file's contents without reading them: nobody but root can write the
/// file (checked before), and any write, chmod or chown moves its ctime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    path: PathBuf,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    fn of(path: &Path, m: &std::fs::Metadata) -> FileKey {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileKey {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The cache file's name: the hash of the key's fields.
    fn file_name(&self) -> String {
        let text = format!(
            "{}\0{}\0{}\0{}\0{}\0{}",
            self.path.display(),
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
            self.ctime_ns
        );
        crate::digest::sha256_hex(text)
    }
}

pub(super) static DIGESTS: Mutex<Option<HashMap<FileKey, String>>> = Mutex::new(None);

/// `sha256:<hex>` of the open file: from the process's cache, else from the on-disk cache
/// in `cache` (a root-owned directory nobody else can write), else read and hashed (and
/// remembered in both).
pub(super) fn digest(
    path: &Path,
    m: &std::fs::Metadata,
    file: &mut std::fs::File,
    cache: Option<&Path>,
) -> std::io::Result<String> {
    let key = FileKey::of(path, m);
    if let Some(d) = DIGESTS
        .lock()
        .expect("digest cache lock")
        .as_ref()
        .and_then(|c| c.get(&key))
    {
        return Ok(d.clone());
    }
    let on_disk = cache.and_then(|dir| trusted_cache_dir(dir).then(|| dir.join(key.file_name())));
    let cached = on_disk
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .filter(|d| crate::digest::is_sha256(d));
    let d = match cached {
        Some(d) => d,
        None => {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let d = crate::digest::finish(h);
            if let Some(f) = &on_disk {
                // Best effort: a cache that cannot be written only costs the next process a
                // hash. Written aside and renamed, so a reader never sees half a digest.
                let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &d).is_ok() && std::fs::rename(&tmp, f).is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
            d
        }
    };
    DIGESTS
        .lock()
        .expect("digest cache lock")
        .get_or_insert_with(HashMap::new)
        .insert(key, d.clone());
    Ok(d)
}

/// Creates the cache directory (0700) if needed; usable only when it is a real directory
/// owned by root that nobody else can write.
fn trusted_cache_dir(dir: &Path) -> bool {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
}
