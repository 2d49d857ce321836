//! Images out of stockade: [`export`] reads one back from containerd's content store, and
//! [`write_oci_layout`] writes it as an OCI image layout tarball.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
use crate::containerd::Client;
use crate::images::oci::{Descriptor, ImageConfigFile, Index, Manifest, MEDIA_INDEX};
use crate::images::store::{BlobSource, LayerSource, PreparedImage};
use crate::images::{normalize_name, ImageError};

/// Writes an image as an OCI image layout tarball: `oci-layout`, `index.json` (naming the
/// image with both the containerd and OCI annotations) and `blobs/sha256/*`. Used by tests
/// and by anyone moving a built image to another host.
pub fn write_oci_layout(out: &Path, name: &str, image: &PreparedImage) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut b = tar::Builder::new(std::io::BufWriter::new(File::create(out).map_err(io)?));
    let mut add = |path: &str, data: &mut dyn Read, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout", &mut &layout[..], layout.len() as u64).map_err(io)?;
    let mut entry = image.manifest_descriptor.clone();
    entry
        .annotations
        .insert(ANNOTATION_CONTAINERD_NAME.to_string(), name.to_string());
    entry.annotations.insert(
        ANNOTATION_REF_NAME.to_string(),
        name.rsplit(':').next().unwrap_or("latest").to_string(),
    );
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.to_string()),
        manifests: vec![entry],
    };
    let index = serde_json::to_vec(&index).unwrap_or_default();
    add("index.json", &mut &index[..], index.len() as u64).map_err(io)?;
    let blob = |d: &Descriptor| format!("blobs/sha256/{}", &d.digest[7..]);
    add(
        &blob(&image.manifest_descriptor),
        &mut &image.manifest[..],
        image.manifest.len() as u64,
    )
    .map_err(io)?;
    add(
        &blob(&image.config_descriptor),
        &mut &image.config[..],
        image.config.len() as u64,
    )
    .map_err(io)?;
    for l in &image.layers {
        let mut reader = l.source.reader().map_err(io)?;
        add(&blob(&l.descriptor), &mut reader, l.descriptor.size as u64).map_err(io)?;
    }
    b.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io)?;
    Ok(())
}

/// Reads the image `name` back out of containerd's content store (manifest, config and
/// layers, all in memory) so it can be written with [`write_oci_layout`].
pub async fn export(client: &Client, name: &str) -> Result<PreparedImage, ImageError> {
    let mut image = export_refs(client, name).await?;
    for l in &mut image.layers {
        l.source =
            BlobSource::Bytes(crate::images::store::read_blob(client, &l.descriptor.digest).await?);
    }
    Ok(image)
}

/// [`export`] without reading the layers: each is [`BlobSource::Stored`], to be streamed
/// from the content store by its digest ([`crate::images::store::blob_stream`]).
pub async fn export_refs(client: &Client, name: &str) -> Result<PreparedImage, ImageError> {
    let full = normalize_name(name)?;
    let image = client
        .images()
        .get(
            client.request(containerd_client::services::v1::GetImageRequest { name: full.clone() }),
        )
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => crate::images::not_found(client, name),
            _ => crate::containerd::ContainerdError::rpc("images.get")(s).into(),
        })?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| ImageError::Invalid {
            what: format!("image `{full}`"),
            reason: "record has no target".into(),
        })?;
    let manifest = crate::images::store::read_blob(client, &image.digest).await?;
    let parsed: Manifest = serde_json::from_slice(&manifest).map_err(|e| ImageError::Invalid {
        what: format!("manifest {}", image.digest),
        reason: e.to_string(),
    })?;
    let config = crate::images::store::read_blob(client, &parsed.config.digest).await?;
    let config_file: ImageConfigFile =
        serde_json::from_slice(&config).map_err(|e| ImageError::Invalid {
            what: format!("config {}", parsed.config.digest),
            reason: e.to_string(),
        })?;
    let mut layers = Vec::new();
    for (l, diff_id) in parsed.layers.iter().zip(&config_file.rootfs.diff_ids) {
        layers.push(LayerSource {
            descriptor: l.clone(),
            diff_id: diff_id.clone(),
            source: BlobSource::Stored,
        });
    }
    Ok(PreparedImage {
        manifest_descriptor: Descriptor {
            media_type: image.media_type,
            digest: image.digest,
            size: image.size,
            annotations: Default::default(),
            platform: None,
        },
        manifest,
        config_descriptor: parsed.config.clone(),
        config,
        config_file,
        layers,
    })
}
