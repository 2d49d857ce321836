//! Putting an image into containerd: blobs into the content store (digest-verified, skipped
//! when already there), layers unpacked into committed overlayfs snapshots named by chain
//! id, and an image record whose labels keep everything from the garbage collector. All of
//! it under a lease, so that nothing is collected half-way through.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image, InfoRequest, ReadContentRequest,
    UpdateImageRequest, UpdateRequest as UpdateContentRequest, WriteAction, WriteContentRequest,
};
use containerd_client::types;
use tokio_stream::StreamExt;

pub use super::blob_source::{BlobSource, FromStart};
use super::oci::{chain_ids, Descriptor, ImageConfigFile};
use super::{ImageConfig, ImageError, ImageRef, Progress, LABEL_CONFIG, LABEL_SIZE, SNAPSHOTTER};
use crate::containerd::{Client, ContainerdError, LABEL_MANAGED};

mod content;
mod ingest;
use content::content_exists;
pub use content::{blob_stream, read_blob, write_blob};
pub use ingest::{
    abort_ingest, download_ref, find_download, has_blob, ingest_offset, new_download_ref,
    write_stream, Chunks, StreamError,
};

/// How much of a blob goes into one Write message (containerd accepts up to 16 MiB).
const WRITE_CHUNK: usize = 1 << 20;
/// A lease outlives a crashed import by at most this long.
const LEASE_TTL: Duration = Duration::from_secs(3600);

/// The GC label on content and images that keeps the committed snapshot.
pub const LABEL_GC_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.overlayfs";
/// Prefix of GC labels from one blob to another.
pub const LABEL_GC_CONTENT: &str = "containerd.io/gc.ref.content";

/// A layer ready to be stored: its blob, descriptor and uncompressed digest.
#[derive(Clone, Debug)]
pub struct LayerSource {
    /// The blob as the manifest lists it (media type, digest and size as stored).
    pub descriptor: Descriptor,
    /// The digest of the uncompressed tar (the config's `diff_id`).
    pub diff_id: String,
    /// Where the blob's bytes come from.
    pub source: BlobSource,
}

/// Everything an image is made of, read and checked, ready to be put into containerd.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// The manifest's bytes, stored as they are.
    pub manifest: Vec<u8>,
    /// The manifest's descriptor (the image record's target).
    pub manifest_descriptor: Descriptor,
    /// The config's bytes, stored as they are.
    pub config: Vec<u8>,
    /// The config's descriptor.
    pub config_descriptor: Descriptor,
    /// The config, parsed.
    pub config_file: ImageConfigFile,
    /// The layers, base layer first, one per diff id.
    pub layers: Vec<LayerSource>,
}

impl PreparedImage {
    /// The chain id of the whole image (the committed snapshot's name).
    pub fn chain_id(&self) -> Result<String, ImageError> {
        chain_ids(&self.config_file.rootfs.diff_ids)
            .pop()
            .ok_or_else(|| ImageError::Invalid {
                what: "image config".into(),
                reason: "rootfs.diff_ids is empty".into(),
            })
    }
}

pub(crate) fn to_proto(d: &Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Random hex for keys and lease ids.
pub(crate) use crate::ids::random_hex;

/// A lease that expires by itself after [`LEASE_TTL`] should we crash before deleting it.
pub(crate) struct Lease {
    client: Client,
    id: String,
}

impl Lease {
    /// The lease's id (for [`Client::with_lease`]).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) async fn create(client: &Client) -> Result<Lease, ImageError> {
        let id = format!("stockade-import-{}", random_hex(8));
        let expire = SystemTime::now() + LEASE_TTL;
        let labels = HashMap::from([
            ("containerd.io/gc.expire".to_string(), rfc3339(expire)),
            (LABEL_MANAGED.to_string(), "true".to_string()),
        ]);
        client
            .leases()
            .create(client.request(CreateLeaseRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(ContainerdError::rpc("leases.create"))?;
        Ok(Lease {
            client: client.clone(),
            id,
        })
    }

    pub(crate) async fn delete(self) -> Result<(), ImageError> {
        self.client
            .leases()
            .delete(self.client.request(DeleteLeaseRequest {
                id: self.id.clone(),
                sync: false,
            }))
            .await
            .map_err(ContainerdError::rpc("leases.delete"))?;
        Ok(())
    }
}

/// RFC 3339 UTC time (`2006-01-02T15:04:05Z`), as containerd's `gc.expire` label wants.
pub(crate) use crate::rfc3339::seconds as rfc3339;

/// Stores `image` under `name` (a canonical name) and unpacks it. Idempotent: blobs and
/// snapshots that exist are kept, and the record is replaced; when it named another
/// manifest, [`ImageRef::replaced`] says which.
pub async fn store_image(
    client: &Client,
    name: &str,
    image: &PreparedImage,
    progress: &dyn Progress,
) -> Result<ImageRef, ImageError> {
    let chain_id = image.chain_id()?;
    if image.layers.len() != image.config_file.rootfs.diff_ids.len() {
        return Err(ImageError::Invalid {
            what: "image".into(),
            reason: format!(
                "manifest has {} layers but config has {} diff ids",
                image.layers.len(),
                image.config_file.rootfs.diff_ids.len()
            ),
        });
    }
    let lease = Lease::create(client).await?;
    let result = store_under_lease(
        &client.with_lease(Some(lease.id.clone())),
        name,
        image,
        &chain_id,
        progress,
    )
    .await;
    // Once the image record exists, it holds everything; the lease can go either way.
    let deleted = lease.delete().await;
    let image_ref = result?;
    deleted?;
    Ok(image_ref)
}

async fn store_under_lease(
    lc: &Client,
    name: &str,
    image: &PreparedImage,
    chain_id: &str,
    progress: &dyn Progress,
) -> Result<ImageRef, ImageError> {
    let n = image.layers.len();
    for (i, layer) in image.layers.iter().enumerate() {
        progress.stage(&format!(
            "storing layer {}/{n} ({})",
            i + 1,
            human(layer.descriptor.size as u64)
        ));
        write_blob(lc, &layer.descriptor, &layer.source, HashMap::new()).await?;
    }
    let config_labels = HashMap::from([(LABEL_GC_SNAPSHOT.to_string(), chain_id.to_string())]);
    write_blob(
        lc,
        &image.config_descriptor,
        &BlobSource::Bytes(image.config.clone()),
        config_labels,
    )
    .await?;
    let mut manifest_labels = HashMap::from([(
        format!("{LABEL_GC_CONTENT}.config"),
        image.config_descriptor.digest.clone(),
    )]);
    for (i, l) in image.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("{LABEL_GC_CONTENT}.l.{i}"),
            l.descriptor.digest.clone(),
        );
    }
    write_blob(
        lc,
        &image.manifest_descriptor,
        &BlobSource::Bytes(image.manifest.clone()),
        manifest_labels,
    )
    .await?;

    let diff_ids = &image.config_file.rootfs.diff_ids;
    let chains = chain_ids(diff_ids);
    for (i, layer) in image.layers.iter().enumerate() {
        progress.stage(&format!("unpacking layer {}/{n}", i + 1));
        let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
        let t = Instant::now();
        let applied = unpack_layer(lc, layer, &diff_ids[i], parent, &chains[i]).await?;
        tracing::debug!(chain_id = %chains[i], media_type = %layer.descriptor.media_type, applied, ms = t.elapsed().as_millis() as u64, "unpack");
    }

    let config = ImageConfig::from_file(&image.config_file);
    let size: i64 = image.layers.iter().map(|l| l.descriptor.size).sum::<i64>()
        + image.config_descriptor.size
        + image.manifest_descriptor.size;
    let mut labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_GC_SNAPSHOT.to_string(), chain_id.to_string()),
        (
            format!("{LABEL_GC_CONTENT}.config"),
            image.config_descriptor.digest.clone(),
        ),
        (LABEL_SIZE.to_string(), size.to_string()),
    ]);
    // Cached so `resolve` needs no content reads; containerd caps a label at 4 KiB.
    let config_json = serde_json::to_string(&config).unwrap_or_default();
    if LABEL_CONFIG.len() + config_json.len() < 4000 {
        labels.insert(LABEL_CONFIG.to_string(), config_json);
    }
    progress.stage(&format!("recording image {name}"));
    let now = timestamp(SystemTime::now());
    let record = Image {
        name: name.to_string(),
        labels,
        target: Some(to_proto(&image.manifest_descriptor)),
        created_at: Some(now),
        updated_at: Some(now),
    };
    let created = lc
        .images()
        .create(lc.request(CreateImageRequest {
            image: Some(record.clone()),
            source_date_epoch: None,
        }))
        .await;
    let mut replaced = None;
    match created {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            let before = lc
                .images()
                .get(lc.request(GetImageRequest {
                    name: name.to_string(),
                }))
                .await
                .ok()
                .and_then(|r| r.into_inner().image)
                .and_then(|i| i.target)
                .map(|t| t.digest);
            replaced = before.filter(|d| *d != image.manifest_descriptor.digest);
            lc.images()
                .update(lc.request(UpdateImageRequest {
                    image: Some(Image {
                        created_at: None,
                        ..record
                    }),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map_err(ContainerdError::rpc("images.update"))?;
        }
        Err(s) => return Err(ContainerdError::rpc("images.create")(s).into()),
    }
    Ok(ImageRef {
        name: name.to_string(),
        manifest_digest: image.manifest_descriptor.digest.clone(),
        chain_id: chain_id.to_string(),
        snapshotter: SNAPSHOTTER.to_string(),
        config,
        replaced,
    })
}

/// Stat of a snapshot: `Ok(None)` when it does not exist.
pub async fn stat_snapshot(
    client: &Client,
    key: &str,
) -> Result<Option<containerd_client::services::v1::snapshots::Info>, ImageError> {
    match client
        .snapshots()
        .stat(client.request(StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().info),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(ContainerdError::rpc("snapshots.stat")(s).into()),
    }
}

/// Applies one layer on top of `parent` and commits it as `chain_id`, unless that snapshot
/// is already committed. Returns whether it applied the layer.
pub(crate) async fn unpack_layer(
    lc: &Client,
    layer: &LayerSource,
    diff_id: &str,
    parent: &str,
    chain_id: &str,
) -> Result<bool, ImageError> {
    if stat_snapshot(lc, chain_id).await?.is_some() {
        return Ok(false);
    }
    let key = format!("stockade-extract-{}-{}", random_hex(6), chain_id);
    let mounts = lc
        .snapshots()
        .prepare(lc.request(PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_string(),
            key: key.clone(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        }))
        .await
        .map_err(ContainerdError::rpc("snapshots.prepare"))?
        .into_inner()
        .mounts;
    let result = async {
        let applied = lc
            .diff()
            .apply(lc.request(ApplyRequest {
                diff: Some(to_proto(&layer.descriptor)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await
            .map_err(ContainerdError::rpc("diff.apply"))?
            .into_inner()
            .applied
            .map(|d| d.digest)
            .unwrap_or_default();
        if applied != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {} uncompressed", layer.descriptor.digest),
                expected: diff_id.to_string(),
                actual: applied,
            });
        }
        let committed = lc
            .snapshots()
            .commit(lc.request(CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                name: chain_id.to_string(),
                key: key.clone(),
                labels: HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]),
            }))
            .await;
        match committed {
            Ok(_) => Ok(false),
            // Someone else committed the same layer stack meanwhile: theirs is as good.
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(true),
            Err(s) => Err(ContainerdError::rpc("snapshots.commit")(s).into()),
        }
    }
    .await;
    if !matches!(result, Ok(false)) {
        let _ = lc
            .snapshots()
            .remove(lc.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key,
            }))
            .await;
    }
    result.map(|lost_race| !lost_race)
}

/// A size for people to read, in progress lines and `image ls`: bytes below 1 KiB, else
/// the largest binary unit that keeps the number at least 1, rounded to one decimal
/// (`1023 B`, `1.5 KiB`, `5.0 MiB`). Not [`crate::policy::format_size`] on
/// purpose: that one never rounds, so that a policy value reads back exactly, and would
/// print a 5,123,456-byte layer as `5123456`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let cases = [
            (0u64, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ];
        for (secs, want) in cases {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(rfc3339(t), want);
        }
    }

    #[test]
    fn human_sizes_round_to_one_decimal_of_the_largest_unit() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 20, "5.0 MiB"),
            (5_123_456, "4.9 MiB"),
            (3 << 30, "3.0 GiB"),
            (2048 << 40, "2048.0 TiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_hex(8), random_hex(8));
        assert_eq!(random_hex(8).len(), 16);
    }
}
