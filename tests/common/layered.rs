//! Images made in a test: the built-in busybox plus one layer of files, stored under a name
//! (storing again under the same name re-points it, as a rebuild or a new pull does).

use stockade::containerd::Client;
use stockade::images::oci::{self, Descriptor, Manifest, MEDIA_LAYER_GZIP, MEDIA_MANIFEST};
use stockade::images::store::{self, BlobSource, LayerSource, PreparedImage};
use stockade::images::{self, ImageRef, NoProgress};

/// An uncompressed layer holding `files` (path, content), each a regular file, mode 0644.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, *content).unwrap();
    }
    tar.into_inner().unwrap()
}

/// `bytes`, gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A gzip layer holding `files`: (blob, diff id).
pub fn gzip_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let tar = tar_of(files);
    (gzip(&tar), oci::sha256_digest(&tar))
}

/// `base` with `layers` (blob, diff id, media type) on top: config and manifest rewritten.
pub fn with_layers(base: &PreparedImage, layers: Vec<(Vec<u8>, String, &str)>) -> PreparedImage {
    let mut prepared = base.clone();
    for (blob, diff_id, media_type) in layers {
        prepared.config_file.rootfs.diff_ids.push(diff_id.clone());
        prepared.layers.push(LayerSource {
            descriptor: Descriptor::new(media_type, &blob),
            diff_id,
            source: BlobSource::Bytes(blob),
        });
    }
    prepared.config = serde_json::to_vec(&prepared.config_file).unwrap();
    prepared.config_descriptor =
        Descriptor::new(&base.config_descriptor.media_type, &prepared.config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: prepared.config_descriptor.clone(),
        layers: prepared
            .layers
            .iter()
            .map(|l| l.descriptor.clone())
            .collect(),
        annotations: Default::default(),
    };
    prepared.manifest = serde_json::to_vec(&manifest).unwrap();
    prepared.manifest_descriptor = Descriptor::new(MEDIA_MANIFEST, &prepared.manifest);
    prepared
}

/// The busybox image (built first if need be) plus one gzip layer of `files`, stored and
/// unpacked as `name`.
pub async fn busybox_plus(client: &Client, name: &str, files: &[(&str, &[u8])]) -> ImageRef {
    super::busybox_image(client).await;
    let base = images::archive::export(client, "stockade/busybox")
        .await
        .unwrap();
    let (blob, diff_id) = gzip_layer(files);
    let prepared = with_layers(&base, vec![(blob, diff_id, MEDIA_LAYER_GZIP)]);
    let canonical = images::normalize_name(name).unwrap();
    store::store_image(client, &canonical, &prepared, &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("store {name}: {e}"))
}
