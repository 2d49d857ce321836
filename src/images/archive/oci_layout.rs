//! Reading an OCI image layout (`index.json`, `blobs/sha256/*`) out of an unpacked archive.
//! Blobs are found only by digest: a digest that is not `sha256:<64 hex>` is refused before
//! any path is made of it.

use std::io::Read;
use std::sync::Arc;

use super::{hash_file, parse, source_name, FoundImage, Unpacked};
use super::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::images::oci::{
    self, layer_compression, Descriptor, ImageConfigFile, Index, Manifest, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST,
};
use crate::images::store::{BlobSource, LayerSource, PreparedImage};
use crate::images::{normalize_name, ImageError};

/// The archive path of the blob `digest`, which `named_in` gives.
fn blob_name(u: &Unpacked, digest: &str, named_in: &str) -> Result<String, ImageError> {
    if !oci::is_sha256_digest(digest) {
        return Err(u.refused(
            digest,
            format!("named in {named_in}, is not a sha256 digest"),
        ));
    }
    Ok(format!("blobs/sha256/{}", &digest[7..]))
}

/// A blob's bytes, checked against its descriptor.
fn read_blob(u: &Unpacked, d: &Descriptor, named_in: &str) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    let name = blob_name(u, &d.digest, named_in)?;
    // One byte more than the descriptor says is enough to know it lies.
    u.open(&name, named_in)?
        .take(d.size.max(0) as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| u.read_failed(&name, &e))?;
    let actual = oci::sha256_digest(&bytes);
    if actual != d.digest || bytes.len() as i64 != d.size {
        return Err(ImageError::DigestMismatch {
            what: format!("{}: blob {}", u.archive().display(), d.digest),
            expected: format!("{} ({} bytes)", d.digest, d.size),
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}

pub(super) fn read(u: &Unpacked) -> Result<Vec<FoundImage>, ImageError> {
    let index: Index = parse(u, "index.json", &u.read("index.json", "the archive")?)?;
    let mut found = Vec::new();
    for entry in &index.manifests {
        let names = entry_names(entry);
        let Some(manifest_desc) = select_manifest(u, entry, "index.json", 0)? else {
            continue;
        };
        let what = format!("manifest {}", manifest_desc.digest);
        let manifest_bytes = read_blob(u, &manifest_desc, "index.json")?;
        let manifest: Manifest = parse(u, &what, &manifest_bytes)?;
        let config = read_blob(u, &manifest.config, &what)?;
        let config_file: ImageConfigFile =
            parse(u, &format!("config {}", manifest.config.digest), &config)?;
        check_layer_count(u, &manifest, &config_file)?;
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers.iter().zip(&config_file.rootfs.diff_ids) {
            if layer_compression(&l.media_type).is_none() {
                return Err(u.invalid(format!(
                    "layer {}: unsupported media type {}",
                    l.digest, l.media_type
                )));
            }
            let name = blob_name(u, &l.digest, &what)?;
            let file = u.open(&name, &what)?;
            let (actual, len) = hash_file(u, &name, &file)?;
            if actual != l.digest || l.size as u64 != len {
                return Err(ImageError::DigestMismatch {
                    what: format!("{}: layer {}", u.archive().display(), l.digest),
                    expected: l.digest.clone(),
                    actual: format!("{actual} ({len} bytes)"),
                });
            }
            layers.push(LayerSource {
                descriptor: Descriptor {
                    platform: None,
                    ..l.clone()
                },
                diff_id: diff_id.clone(),
                source: BlobSource::Opened {
                    file: Arc::new(file),
                    name: source_name(u, &name),
                },
            });
        }
        found.push(FoundImage {
            names,
            image: PreparedImage {
                manifest: manifest_bytes,
                manifest_descriptor: Descriptor {
                    media_type: manifest_desc.media_type.clone(),
                    digest: manifest_desc.digest.clone(),
                    size: manifest_desc.size,
                    annotations: Default::default(),
                    platform: None,
                },
                config_descriptor: Descriptor {
                    platform: None,
                    ..manifest.config.clone()
                },
                config,
                config_file,
                layers,
            },
        });
    }
    if found.is_empty() {
        return Err(u.invalid(format!(
            "no image for linux/{} in index.json",
            oci::host_architecture()
        )));
    }
    Ok(found)
}

/// The names an index entry gives its image, normalised; a bare tag is no name.
pub(super) fn entry_names(entry: &Descriptor) -> Vec<String> {
    let candidates = [
        entry.annotations.get(ANNOTATION_CONTAINERD_NAME),
        entry
            .annotations
            .get(ANNOTATION_REF_NAME)
            .filter(|r| r.contains(':') || r.contains('/')),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|n| normalize_name(n).ok())
        .take(1)
        .collect()
}

/// The image manifest an index entry leads to on this platform: the entry itself, or the
/// matching manifest of a nested index. `None` when no platform matches.
fn select_manifest(
    u: &Unpacked,
    entry: &Descriptor,
    named_in: &str,
    depth: u32,
) -> Result<Option<Descriptor>, ImageError> {
    match entry.media_type.as_str() {
        MEDIA_MANIFEST | MEDIA_DOCKER_MANIFEST => Ok(Some(entry.clone())),
        MEDIA_INDEX | MEDIA_DOCKER_LIST if depth < 4 => {
            let what = format!("index {}", entry.digest);
            let index: Index = parse(u, &what, &read_blob(u, entry, named_in)?)?;
            for m in index
                .manifests
                .iter()
                .filter(|m| oci::runs_here(&m.platform))
            {
                if let Some(d) = select_manifest(u, m, &what, depth + 1)? {
                    return Ok(Some(d));
                }
            }
            Ok(None)
        }
        other => Err(u.invalid(format!(
            "index entry {}: unsupported media type {other}",
            entry.digest
        ))),
    }
}

fn check_layer_count(
    u: &Unpacked,
    manifest: &Manifest,
    config: &ImageConfigFile,
) -> Result<(), ImageError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() || manifest.layers.is_empty() {
        return Err(u.invalid(format!(
            "manifest lists {} layers but the config has {} diff ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    Ok(())
}
