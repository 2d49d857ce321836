//! The one fake of the host a policy is validated against ([`PolicyEnv`]): no disk, files
//! and directories as the test says.

use std::path::{Path, PathBuf};

use stockade::policy::{BindError, HostDir, PolicyEnv};

/// A host without a disk. Files: none, or every non-empty path reads as one text
/// ([`FakePolicyEnv::files_read_as`]). Directories: every absolute path is one, at that
/// path (relative ones do not exist), or, with [`FakePolicyEnv::dirs_beneath`], every
/// path is one, moved beneath a root unless it is already there. Each directory has
/// device 8, inode 2; bind roots are the defaults.
#[derive(Debug, Default)]
pub struct FakePolicyEnv {
    file: Option<String>,
    root: Option<PathBuf>,
}

impl FakePolicyEnv {
    /// No files; every absolute directory exists at its own path.
    pub fn new() -> FakePolicyEnv {
        FakePolicyEnv::default()
    }

    /// Every file with a non-empty path reads as `text`.
    pub fn files_read_as(mut self, text: impl Into<String>) -> FakePolicyEnv {
        self.file = Some(text.into());
        self
    }

    /// Every directory exists, resolved beneath `root` (`/w` is `ROOT/w`, `ROOT/a` stays).
    pub fn dirs_beneath(mut self, root: impl Into<PathBuf>) -> FakePolicyEnv {
        self.root = Some(root.into());
        self
    }
}

impl PolicyEnv for FakePolicyEnv {
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        match &self.file {
            Some(text) if !path.as_os_str().is_empty() => Ok(text.clone()),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                path.display().to_string(),
            )),
        }
    }

    fn bind_dir(&self, path: &Path) -> Result<HostDir, BindError> {
        let resolved = match &self.root {
            Some(root) if path.starts_with(root) => path.to_path_buf(),
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None if path.is_absolute() => path.to_path_buf(),
            None => {
                return Err(BindError::Resolve {
                    path: path.to_path_buf(),
                    reason: "no such directory".to_string(),
                })
            }
        };
        Ok(HostDir {
            path: resolved,
            dev: 8,
            ino: 2,
        })
    }
}
