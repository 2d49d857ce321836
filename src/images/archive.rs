//! `stockade image import FILE`: an OCI image layout tarball or a `docker save` tarball
//! (either gzip-compressed or not) into containerd, through the same pipeline as `build`.
//!
//! The archive is unpacked into a scratch directory under the rule of `unpacked`: only
//! regular files, directories and links to regular files of the same archive, and every
//! read goes through the archive's own entry table and `openat2` beneath the scratch
//! directory, never through a filesystem link. Paths that the archive's documents name
//! (digests, docker-save `Config` and `Layers`) are checked before anything is opened,
//! and every blob's digest is checked before anything is sent to containerd, so a
//! truncated, tampered or hostile archive fails with the archive and entry named.

mod docker_save;
mod export;
mod oci_layout;
mod unpacked;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::store::{store_image, PreparedImage};
use super::{user_image_name, ImageError, ImageRef, Progress};
use crate::containerd::Client;

pub use export::{export, export_refs, write_oci_layout};
pub use unpacked::{unpack_archive, Unpacked};

/// Annotation containerd (and `ctr export`) put on index entries: the full image name.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for the reference name (a full name or only a tag).
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image found in an archive, checked and ready to store.
#[derive(Clone, Debug)]
pub struct FoundImage {
    /// Names from the archive (normalised); empty when it names none.
    pub names: Vec<String>,
    /// Its manifest, config and layers, ready for [`store_image`].
    pub image: PreparedImage,
}

/// Imports every image in the archive at `path`. `name` replaces the archive's own names
/// (then the archive must hold exactly one image). Scratch space is made under `scratch`.
pub async fn import(
    client: &Client,
    path: &Path,
    name: Option<&str>,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Vec<ImageRef>, ImageError> {
    let name = name
        .map(|n| user_image_name(n, "choose another --name"))
        .transpose()?;
    let dir = tempfile::Builder::new()
        .prefix("stockade-import-")
        .tempdir_in(scratch)
        .map_err(|source| ImageError::Io {
            path: scratch.to_path_buf(),
            source,
        })?;
    progress.stage(&format!("reading {}", path.display()));
    let (archive, out) = (path.to_path_buf(), dir.path().to_path_buf());
    let found = tokio::task::spawn_blocking(move || read_layout(&unpack_archive(&archive, &out)?))
        .await
        .map_err(|e| ImageError::Invalid {
            what: path.display().to_string(),
            reason: e.to_string(),
        })??;
    if name.is_some() && found.len() != 1 {
        return Err(ImageError::Archive {
            path: path.to_path_buf(),
            reason: format!("holds {} images; --name needs exactly one", found.len()),
        });
    }
    let mut plan = Vec::new();
    for f in found {
        let names = match &name {
            Some(n) => vec![n.clone()],
            None if f.names.is_empty() => {
                return Err(ImageError::Archive {
                    path: path.to_path_buf(),
                    reason: format!(
                        "image {} has no name in the archive; give one with --name",
                        f.image.manifest_descriptor.digest
                    ),
                })
            }
            None => f
                .names
                .iter()
                .map(|n| user_image_name(n, "import it under another name with --name"))
                .collect::<Result<Vec<_>, _>>()?,
        };
        plan.push((names, f.image));
    }
    // Every name is checked before anything is stored.
    let mut refs = Vec::new();
    for (names, image) in plan {
        for n in names {
            refs.push(store_image(client, &n, &image, progress).await?);
        }
    }
    Ok(refs)
}

/// Reads the images of an unpacked archive: an OCI layout (`index.json`) or a docker-save
/// (`manifest.json`).
pub fn read_layout(u: &Unpacked) -> Result<Vec<FoundImage>, ImageError> {
    if u.has_file("index.json") {
        oci_layout::read(u)
    } else if u.has_file("manifest.json") {
        docker_save::read(u)
    } else {
        Err(u.invalid("neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)"))
    }
}

/// A JSON document of the archive.
fn parse<T: serde::de::DeserializeOwned>(
    u: &Unpacked,
    what: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| u.invalid(format!("{what}: {e}")))
}

/// sha256 digest and length of an opened file of the archive, read from its start.
fn hash_file(u: &Unpacked, name: &str, file: &File) -> Result<(String, u64), ImageError> {
    let mut r = super::store::FromStart::new(file);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| u.read_failed(name, &e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((crate::digest::finish(h), len))
}

/// What an opened entry is called in errors once it is handed to the store.
fn source_name(u: &Unpacked, name: &str) -> std::path::PathBuf {
    format!("{}: entry `{}`", u.archive().display(), name.escape_debug()).into()
}

#[cfg(test)]
mod tests;
