//! `stockade image pull REF`: manifest (through an index to the host's platform), config
//! and layers from a registry into containerd, every digest checked.

use std::collections::HashMap;
use std::time::Instant;

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::{classify, oci_reference, RegistryError, RegistryOptions};
use crate::containerd::Client;
use crate::images::oci::{
    self, layer_compression, Descriptor, ImageConfigFile, Index, Manifest, MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST,
};
use crate::images::reference::Reference;
use crate::images::store::{
    self, abort_ingest, find_download, has_blob, new_download_ref, store_image, write_stream,
    BlobSource, Chunks, LayerSource, Lease, PreparedImage, StreamError,
};
use crate::images::{user_image_name, ImageError, ImageRef, Progress};

/// Manifest media types asked for, in order of preference.
const ACCEPT: &[&str] = &[
    MEDIA_MANIFEST,
    MEDIA_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];

/// Manifests and indexes are small; a bigger one is refused.
const MANIFEST_MAX: usize = 4 << 20;

/// Pulls `reference` and stores it under its canonical name. Names in the built-in
/// repository are refused.
pub async fn pull(
    client: &Client,
    reference: &str,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<ImageRef, ImageError> {
    let name = user_image_name(
        reference,
        "the built-in images are made by `stockade image build`, not pulled",
    )?;
    let r = Reference::parse(&name)?;
    let registry = opts.client(&r)?;
    let auth = opts.auth(&r)?;
    let top = oci_reference(&r)?;
    let what = r.familiar();

    progress.stage(&format!("{what}: reading the manifest"));
    let (bytes, digest) = manifest(&registry, &top, &auth, &r, &what).await?;
    if let Some(want) = r.digest() {
        check_digest(&what, want, &digest)?;
    }
    let kind = media_type_of(&bytes);
    let (manifest_bytes, manifest_digest, media_type) =
        if kind == MEDIA_INDEX || kind == MEDIA_DOCKER_LIST || is_index(&bytes) {
            let index: Index = parse(&what, "index", &bytes)?;
            let entry = index
                .manifests
                .iter()
                .find(|m| oci::runs_here(&m.platform))
                .ok_or_else(|| RegistryError::NotFound {
                    reference: what.clone(),
                    detail: format!(
                        "no image for linux/{} in its index",
                        oci::host_architecture()
                    ),
                })?;
            let child = top.clone_with_digest(entry.digest.clone());
            let (b, d) = manifest(&registry, &child, &auth, &r, &what).await?;
            check_digest(&what, &entry.digest, &d)?;
            (b, d, entry.media_type.clone())
        } else {
            (bytes, digest, kind)
        };
    let manifest: Manifest = parse(&what, "manifest", &manifest_bytes)?;
    let media_type = if media_type.is_empty() {
        MEDIA_MANIFEST.to_string()
    } else {
        media_type
    };
    for l in &manifest.layers {
        if layer_compression(&l.media_type).is_none() {
            return Err(RegistryError::Protocol {
                what: format!("{what}: layer {}", l.digest),
                reason: format!("unsupported media type {}", l.media_type),
            }
            .into());
        }
    }

    let mut config = Vec::new();
    registry
        .pull_blob(&top, &oci_descriptor(&manifest.config), &mut config)
        .await
        .map_err(|e| classify(&r, &format!("{what}: config {}", manifest.config.digest), e))?;
    check_digest(
        &format!("{what}: config"),
        &manifest.config.digest,
        &oci::sha256_digest(&config),
    )?;
    let config_file: ImageConfigFile = parse(&what, "config", &config)?;
    if !config_file.architecture.is_empty() && config_file.architecture != oci::host_architecture()
    {
        return Err(RegistryError::NotFound {
            reference: what,
            detail: format!(
                "the image is for {}/{}, this host runs {}",
                config_file.os,
                config_file.architecture,
                oci::host_architecture()
            ),
        }
        .into());
    }
    if config_file.rootfs.diff_ids.len() != manifest.layers.len() || manifest.layers.is_empty() {
        return Err(RegistryError::Protocol {
            what,
            reason: format!(
                "the manifest lists {} layers but the config has {} diff ids",
                manifest.layers.len(),
                config_file.rootfs.diff_ids.len()
            ),
        }
        .into());
    }

    // Layers land in the content store under a lease until the image record holds them.
    let lease = Lease::create(client).await?;
    let lc = client.with_lease(Some(lease.id().to_string()));
    let n = manifest.layers.len();
    // Collected first, so the stream holds futures and no closure (which keeps the pull's
    // future `Send` for a server that spawns it).
    let jobs: Vec<_> = manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (lc, registry, top, r, what) = (&lc, &registry, &top, &r, &what);
            async move {
                let t = Instant::now();
                let got = download_layer(lc, registry, top, r, l).await;
                if let Ok(resumed) = &got {
                    let how = match resumed {
                        None => "already in the content store".to_string(),
                        Some(at) if *at >= l.size.max(0) as u64 => {
                            "already in containerd (another namespace has it)".to_string()
                        }
                        Some(0) => format!("downloaded in {:.1}s", t.elapsed().as_secs_f64()),
                        Some(at) => format!(
                            "downloaded in {:.1}s, resumed at byte {at}",
                            t.elapsed().as_secs_f64()
                        ),
                    };
                    progress.line(&format!(
                        "{what}: layer {}/{n} {} {}: {how}",
                        i + 1,
                        short(&l.digest),
                        store::human(l.size.max(0) as u64),
                    ));
                }
                got
            }
        })
        .collect();
    let downloads = futures_util::stream::iter(jobs)
        .buffer_unordered(opts.concurrency())
        .try_collect::<Vec<_>>()
        .await;
    let result = match downloads {
        Ok(_) => {
            let prepared = PreparedImage {
                manifest_descriptor: Descriptor {
                    media_type,
                    digest: manifest_digest,
                    size: manifest_bytes.len() as i64,
                    annotations: Default::default(),
                    platform: None,
                },
                manifest: manifest_bytes,
                config_descriptor: Descriptor {
                    platform: None,
                    ..manifest.config.clone()
                },
                config,
                layers: manifest
                    .layers
                    .iter()
                    .zip(&config_file.rootfs.diff_ids)
                    .map(|(l, diff_id)| LayerSource {
                        descriptor: Descriptor {
                            platform: None,
                            ..l.clone()
                        },
                        diff_id: diff_id.clone(),
                        source: BlobSource::Stored,
                    })
                    .collect(),
                config_file,
            };
            store_image(client, &name, &prepared, progress).await
        }
        Err(e) => Err(e),
    };
    // An interrupted download keeps its lease (it expires by itself within the hour), so
    // that the partial layer survives for the next attempt to resume.
    if let Err(ImageError::Registry(RegistryError::Interrupted { .. })) = &result {
        return result;
    }
    let deleted = lease.delete().await;
    let image = result?;
    deleted?;
    Ok(image)
}

/// `sha256:0123456789ab` for progress lines.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    }
}

async fn manifest(
    registry: &oci_client::Client,
    reference: &oci_client::Reference,
    auth: &RegistryAuth,
    r: &Reference,
    what: &str,
) -> Result<(Vec<u8>, String), ImageError> {
    let (bytes, _) = registry
        .pull_manifest_raw(reference, auth, ACCEPT)
        .await
        .map_err(|e| classify(r, what, e))?;
    if bytes.len() > MANIFEST_MAX {
        return Err(RegistryError::Protocol {
            what: what.to_string(),
            reason: format!("manifest of {} bytes is too large", bytes.len()),
        }
        .into());
    }
    // The digest of the bytes themselves, whatever a header claimed.
    let digest = oci::sha256_digest(&bytes);
    Ok((bytes.to_vec(), digest))
}

fn check_digest(what: &str, expected: &str, actual: &str) -> Result<(), ImageError> {
    if expected != actual {
        return Err(RegistryError::Tampered {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
        .into());
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    doc: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        RegistryError::Protocol {
            what: format!("{what}: {doc}"),
            reason: e.to_string(),
        }
        .into()
    })
}

/// The `mediaType` a document declares (empty when none).
fn media_type_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    serde_json::from_slice::<Probe>(bytes)
        .map(|p| p.media_type)
        .unwrap_or_default()
}

/// An index without a `mediaType` is known by its `manifests` list.
fn is_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| v.get("manifests").is_some() && v.get("layers").is_none())
}

/// One layer into the content store, resuming an interrupted download when the registry
/// serves ranges. Returns the offset it resumed from (`None` when the store had it).
async fn download_layer(
    lc: &Client,
    registry: &oci_client::Client,
    top: &oci_client::Reference,
    r: &Reference,
    layer: &Descriptor,
) -> Result<Option<u64>, ImageError> {
    if has_blob(lc, &layer.digest).await? {
        return Ok(None);
    }
    let what = format!("{}: layer {}", r.familiar(), layer.digest);
    let size = layer.size.max(0) as u64;
    let ingest = match find_download(lc, &layer.digest).await? {
        Some((ingest, offset)) if offset < size => ingest,
        Some((stale, _)) => {
            // Complete yet never committed: its bytes failed the digest check.
            discard(lc, &stale).await;
            new_download_ref(&layer.digest)
        }
        None => new_download_ref(&layer.digest),
    };
    let desc = oci_descriptor(layer);
    // containerd says where the ingest stands; the registry is asked for the rest.
    let (desc, what_open) = (&desc, what.as_str());
    let open = |offset: u64| async move {
        let what = what_open;
        if offset >= size {
            return Ok(futures_util::stream::empty().boxed());
        }
        if offset == 0 {
            return Ok(registry
                .pull_blob_stream(top, desc)
                .await
                .map_err(|e| classify(r, what, e))?
                .stream);
        }
        match registry
            .pull_blob_stream_partial(top, desc, offset, Some(size - offset))
            .await
            .map_err(|e| classify(r, what, e))?
        {
            BlobResponse::Partial(s) => Ok(s.stream),
            // The registry sent the whole blob: skip what the ingest has.
            BlobResponse::Full(s) => Ok(skip(s.stream, offset)),
        }
    };
    let written = write_stream(lc, layer, &ingest, open, HashMap::new(), &|_| {}).await;
    match written {
        Ok(offset) => Ok(Some(offset)),
        Err(StreamError::Source { written, error }) => {
            // Bytes that fail the digest check are not worth resuming.
            let reason = error.to_string();
            if reason.contains("digest") || reason.contains("Digest") {
                discard(lc, &ingest).await;
                // "Invalid digest. Expected A, got B": B is what arrived.
                let actual = reason
                    .rsplit_once("got ")
                    .map_or(reason.as_str(), |(_, got)| got.trim_end_matches('.'))
                    .to_string();
                return Err(RegistryError::Tampered {
                    what,
                    expected: layer.digest.clone(),
                    actual,
                }
                .into());
            }
            Err(RegistryError::Interrupted {
                what,
                written,
                size: layer.size,
                reason,
            }
            .into())
        }
        Err(StreamError::Store(ImageError::DigestMismatch { actual, .. })) => {
            discard(lc, &ingest).await;
            Err(RegistryError::Tampered {
                what,
                expected: layer.digest.clone(),
                actual,
            }
            .into())
        }
        Err(StreamError::Store(e)) => Err(e),
    }
}

/// `stream` without its first `n` bytes.
fn skip(stream: Chunks, n: u64) -> Chunks {
    let mut left = n;
    stream
        .map(move |chunk| {
            chunk.map(|mut c| {
                let drop = left.min(c.len() as u64) as usize;
                left -= drop as u64;
                c.split_off(drop)
            })
        })
        .boxed()
}

/// Drops an ingest whose bytes failed the digest check. containerd releases the ingest's
/// lock only once the write stream is wound down, so a few tries, 100 ms apart.
async fn discard(lc: &Client, ingest: &str) {
    for _ in 0..20 {
        if abort_ingest(lc, ingest).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn skipping_drops_exactly_the_first_bytes() {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = ["abc", "de", "fghij"]
            .iter()
            .map(|c| Ok(bytes::Bytes::from_static(c.as_bytes())))
            .collect();
        let parts: Vec<bytes::Bytes> = skip(futures_util::stream::iter(chunks).boxed(), 4)
            .try_collect()
            .await
            .unwrap();
        let rest = parts.concat();
        assert_eq!(rest, b"efghij");
    }

    #[test]
    fn documents_are_told_apart() {
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(br#"{"schemaVersion":2,"config":{},"layers":[]}"#));
        assert_eq!(
            media_type_of(br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#),
            MEDIA_INDEX
        );
        assert_eq!(media_type_of(b"{}"), "");
    }

    #[test]
    fn a_digest_that_differs_is_named_as_tampering() {
        let e = check_digest("x: config", "sha256:aa", "sha256:bb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x: config: the registry's bytes do not match the digest: expected sha256:aa, got sha256:bb"
        );
    }
}
