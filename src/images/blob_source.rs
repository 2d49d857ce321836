//! Where the bytes of a blob come from when it is stored: memory, a file stockade wrote,
//! or a file already open (an imported archive's entry, never reopened by path).

use std::path::PathBuf;
use std::sync::Arc;

/// Where a blob's bytes come from.
#[derive(Clone, Debug)]
pub enum BlobSource {
    /// Bytes held in memory (a manifest, a config, an empty layer).
    Bytes(Vec<u8>),
    /// A file stockade wrote itself (a layer it built).
    File(PathBuf),
    /// A file already open (an imported archive's entry, opened without following links),
    /// read from its start with positioned reads so that clones share it safely. `name`
    /// says what it is in errors.
    Opened {
        /// The open file, shared by the clones of this source.
        file: Arc<std::fs::File>,
        /// The file's name (its path in the archive), for errors.
        name: PathBuf,
    },
    /// Already in the content store (a pulled layer): nothing to write.
    Stored,
}

impl BlobSource {
    /// A reader over the whole blob, from its first byte.
    pub fn reader(&self) -> std::io::Result<Box<dyn std::io::Read + Send + '_>> {
        Ok(match self {
            BlobSource::Bytes(bytes) => Box::new(&bytes[..]),
            BlobSource::File(path) => Box::new(std::fs::File::open(path)?),
            BlobSource::Opened { file, .. } => Box::new(FromStart::new(file)),
            BlobSource::Stored => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the blob is not in the content store",
                ))
            }
        })
    }

    /// What to call the blob's source in an error.
    pub(crate) fn name(&self) -> PathBuf {
        match self {
            BlobSource::Bytes(_) => PathBuf::from("(in memory)"),
            BlobSource::File(path) => path.clone(),
            BlobSource::Opened { name, .. } => name.clone(),
            BlobSource::Stored => PathBuf::from("(content store)"),
        }
    }
}

/// Reads a shared file from its start with positioned reads (its file offset is unused).
pub struct FromStart<'a> {
    file: &'a std::fs::File,
    offset: u64,
}

impl<'a> FromStart<'a> {
    /// A reader at the first byte of `file`.
    pub fn new(file: &'a std::fs::File) -> Self {
        FromStart { file, offset: 0 }
    }
}

impl std::io::Read for FromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}
