//! Reading a `docker save` archive (`manifest.json` naming each image's config and layer
//! files) out of an unpacked archive. The names in `manifest.json` are paths of the
//! archive: one that is absolute, has `..` or is not a regular file of the archive (or a
//! link to one, see [`super::unpacked`]) is refused before anything is opened.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::{hash_file, parse, source_name, FoundImage, Unpacked};
use crate::images::oci::{Descriptor, ImageConfigFile, Manifest, MEDIA_CONFIG, MEDIA_MANIFEST};
use crate::images::store::{BlobSource, LayerSource, PreparedImage};
use crate::images::{layer, normalize_name, ImageError};

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

const MANIFEST: &str = "manifest.json";

pub(super) fn read(u: &Unpacked) -> Result<Vec<FoundImage>, ImageError> {
    let entries: Vec<DockerSaveEntry> = parse(u, MANIFEST, &u.read(MANIFEST, "the archive")?)?;
    let mut found = Vec::new();
    for e in entries {
        let config = u.read(&e.config, MANIFEST)?;
        let config_file: ImageConfigFile = parse(u, &e.config, &config)?;
        if config_file.rootfs.diff_ids.len() != e.layers.len() || e.layers.is_empty() {
            return Err(u.invalid(format!(
                "{}: {} layers but the config has {} diff ids",
                e.config,
                e.layers.len(),
                config_file.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (rel, diff_id) in e.layers.iter().zip(&config_file.rootfs.diff_ids) {
            let file = u.open(rel, MANIFEST)?;
            let (digest, size) = hash_file(u, rel, &file)?;
            let mut magic = [0u8; 2];
            let gzip = file.read_exact_at(&mut magic, 0).is_ok() && magic == [0x1f, 0x8b];
            // An uncompressed layer is its own diff: check it now rather than after unpacking.
            if !gzip && &digest != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("{}: layer {rel}", u.archive().display()),
                    expected: diff_id.clone(),
                    actual: digest,
                });
            }
            layers.push(LayerSource {
                descriptor: layer::layer_descriptor(gzip, digest, size),
                diff_id: diff_id.clone(),
                source: BlobSource::Opened {
                    file: Arc::new(file),
                    name: source_name(u, rel),
                },
            });
        }
        let config_descriptor = Descriptor::new(MEDIA_CONFIG, &config);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_string()),
            config: config_descriptor.clone(),
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| normalize_name(t).ok())
            .collect();
        found.push(FoundImage {
            names,
            image: PreparedImage {
                manifest_descriptor: Descriptor::new(MEDIA_MANIFEST, &manifest_bytes),
                manifest: manifest_bytes,
                config_descriptor,
                config,
                config_file,
                layers,
            },
        });
    }
    if found.is_empty() {
        return Err(u.invalid("manifest.json lists no images"));
    }
    Ok(found)
}
