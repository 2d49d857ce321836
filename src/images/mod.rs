//! Base images: built from Debian packages ([`build`]) or imported from tarballs
//! ([`archive`]), stored in containerd as OCI images and unpacked once into a committed
//! overlayfs snapshot named by the image's chain id. Sandboxes start from that snapshot.
//!
//! Names: a bare name gets the `stockade/` repository and the `latest` tag, so `busybox` is
//! `stockade/busybox:latest`; a name with a `/` is kept, with `:latest` added when it has
//! no tag or digest ([`normalize_name`]).
//!
//! Every image record carries labels that keep its content and snapshot from containerd's
//! garbage collector (`containerd.io/gc.ref.*`) and a cached copy of its runtime config
//! ([`LABEL_CONFIG`]) so that [`resolve`] costs one Images.Get and one Snapshots.Stat.

pub mod archive;
mod blob_source;
pub mod build;
pub mod layer;
pub mod oci;
pub mod store;

use std::path::PathBuf;

use containerd_client::services::v1::{DeleteImageRequest, GetImageRequest, ListImagesRequest};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::containerd::{Client, ContainerdError};
use oci::ImageConfigFile;
use store::LABEL_GC_SNAPSHOT;

pub use store::{human, PreparedImage};

/// The snapshotter every stockade image is unpacked into.
pub const SNAPSHOTTER: &str = "overlayfs";
/// Image label holding the image's runtime config as JSON (see [`ImageConfig`]).
pub const LABEL_CONFIG: &str = "stockade.image.config";
/// Image label holding the bytes of all the image's blobs.
pub const LABEL_SIZE: &str = "stockade.image.size";
/// Repository bare names are put in.
pub const DEFAULT_REPOSITORY: &str = "stockade";

/// Errors building, importing, finding or removing images.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image `{name}` not found in namespace {namespace} ({hint})")]
    NotFound {
        name: String,
        namespace: String,
        hint: String,
    },
    #[error("image `{name}` has no committed {SNAPSHOTTER} snapshot {chain_id} (re-import it with `stockade image import` or rebuild it)")]
    NotUnpacked { name: String, chain_id: String },
    #[error("image name `{0}` is not valid (use letters, digits and . _ - / : @)")]
    BadName(String),
    #[error("no recipe `{name}` (known: {known})")]
    UnknownRecipe { name: String, known: String },
    #[error("recipe {name}: {reason}")]
    Recipe { name: String, reason: String },
    #[error("{path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    /// One entry of an archive (or a path one of its documents names) is refused.
    #[error("{path}: entry `{entry}`: {reason}")]
    ArchiveEntry {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

/// How to run an image: the runtime part of its OCI config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// `K=V` environment entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Empty means `/`.
    #[serde(default)]
    pub working_dir: String,
    /// Empty means whatever the policy says (stockade's default is 65534:65534).
    #[serde(default)]
    pub user: String,
}

impl ImageConfig {
    pub fn from_file(f: &ImageConfigFile) -> ImageConfig {
        ImageConfig {
            env: f.config.env.clone(),
            entrypoint: f.config.entrypoint.clone(),
            cmd: f.config.cmd.clone(),
            working_dir: f.config.working_dir.clone(),
            user: f.config.user.clone(),
        }
    }
}

/// An image ready to start sandboxes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    /// Full name, e.g. `stockade/busybox:latest`.
    pub name: String,
    /// Digest of its manifest.
    pub manifest_digest: String,
    /// The committed snapshot to use as the parent of a sandbox's active snapshot.
    pub chain_id: String,
    /// The snapshotter that snapshot lives in (always [`SNAPSHOTTER`]).
    pub snapshotter: String,
    pub config: ImageConfig,
}

/// What reports progress of long operations (a terminal spinner, a log, nothing).
pub trait Progress: Send + Sync {
    /// A new step began.
    fn stage(&self, message: &str);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _message: &str) {}
}

/// The full name of an image (see the module docs).
pub fn normalize_name(name: &str) -> Result<String, ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !name.starts_with(['/', ':', '@', '.', '-'])
        && !name.ends_with(['/', ':', '@']);
    if !ok {
        return Err(ImageError::BadName(name.to_string()));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    let tagged = last.contains(':') || name.contains('@');
    let full = if name.contains('/') {
        name.to_string()
    } else {
        format!("{DEFAULT_REPOSITORY}/{name}")
    };
    Ok(if tagged {
        full
    } else {
        format!("{full}:latest")
    })
}

/// The hint in a not-found error: how to get the image.
fn missing_hint(name: &str) -> String {
    let short = name
        .strip_prefix(&format!("{DEFAULT_REPOSITORY}/"))
        .and_then(|n| n.strip_suffix(":latest"));
    match short {
        Some(s) if build::recipe(s).is_some() => {
            format!("build it with `stockade image build {s}`")
        }
        _ => "import it with `stockade image import FILE`".to_string(),
    }
}

fn not_found(client: &Client, name: &str) -> ImageError {
    ImageError::NotFound {
        name: name.to_string(),
        namespace: client.namespace().to_string(),
        hint: missing_hint(&normalize_name(name).unwrap_or_else(|_| name.to_string())),
    }
}

/// Finds the image `name` (bare or full) and checks its snapshot is committed. Costs one
/// Images.Get and one Snapshots.Stat when the record carries the cached config (every
/// image stockade stored does); otherwise it also reads the manifest and config blobs.
pub async fn resolve(client: &Client, name: &str) -> Result<ImageRef, ImageError> {
    let full = normalize_name(name)?;
    let image = match client
        .images()
        .get(client.request(GetImageRequest { name: full.clone() }))
        .await
    {
        Ok(r) => r
            .into_inner()
            .image
            .ok_or_else(|| not_found(client, name))?,
        Err(s) if s.code() == tonic::Code::NotFound => return Err(not_found(client, name)),
        Err(s) => return Err(ContainerdError::rpc("images.get")(s).into()),
    };
    let target = image.target.ok_or_else(|| ImageError::Invalid {
        what: format!("image `{full}`"),
        reason: "record has no target".into(),
    })?;
    let cached = image
        .labels
        .get(LABEL_CONFIG)
        .and_then(|j| serde_json::from_str::<ImageConfig>(j).ok());
    let (chain_id, config) = match (image.labels.get(LABEL_GC_SNAPSHOT), cached) {
        (Some(chain), Some(config)) => (chain.clone(), config),
        _ => read_from_content(client, &full, &target.digest).await?,
    };
    match store::stat_snapshot(client, &chain_id).await? {
        Some(info)
            if info.kind == containerd_client::services::v1::snapshots::Kind::Committed as i32 => {}
        _ => {
            return Err(ImageError::NotUnpacked {
                name: full,
                chain_id,
            })
        }
    }
    Ok(ImageRef {
        name: full,
        manifest_digest: target.digest,
        chain_id,
        snapshotter: SNAPSHOTTER.to_string(),
        config,
    })
}

/// The chain id and config of an image whose record lacks stockade's labels.
async fn read_from_content(
    client: &Client,
    name: &str,
    manifest_digest: &str,
) -> Result<(String, ImageConfig), ImageError> {
    let invalid = |reason: String| ImageError::Invalid {
        what: format!("image `{name}`"),
        reason,
    };
    let bytes = store::read_blob(client, manifest_digest).await?;
    let manifest: oci::Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(format!(
            "manifest {manifest_digest} (an index is not supported here): {e}"
        ))
    })?;
    let bytes = store::read_blob(client, &manifest.config.digest).await?;
    let file: ImageConfigFile = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(format!("config {}: {e}", manifest.config.digest)))?;
    let chain = oci::chain_ids(&file.rootfs.diff_ids)
        .pop()
        .ok_or_else(|| invalid("config has no layers".into()))?;
    Ok((chain, ImageConfig::from_file(&file)))
}

/// One row of `stockade image ls`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    pub name: String,
    pub digest: String,
    /// Bytes of all blobs (compressed layers as stored, config, manifest).
    pub size: u64,
    /// Empty when the record does not name its snapshot.
    pub chain_id: String,
    /// RFC 3339 UTC.
    pub created: String,
}

/// Every image in the client's namespace, sorted by name.
pub async fn list(client: &Client) -> Result<Vec<ImageSummary>, ImageError> {
    let images = client
        .images()
        .list(client.request(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(ContainerdError::rpc("images.list"))?
        .into_inner()
        .images;
    let mut out: Vec<ImageSummary> = images
        .into_iter()
        .map(|i| {
            let target = i.target.unwrap_or_default();
            let size = i
                .labels
                .get(LABEL_SIZE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(target.size.max(0) as u64);
            let created = i
                .created_at
                .map(|t| {
                    store::rfc3339(
                        std::time::SystemTime::UNIX_EPOCH
                            + std::time::Duration::from_secs(t.seconds.max(0) as u64),
                    )
                })
                .unwrap_or_default();
            ImageSummary {
                name: i.name,
                digest: target.digest,
                size,
                chain_id: i.labels.get(LABEL_GC_SNAPSHOT).cloned().unwrap_or_default(),
                created,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes the image record `name`. containerd's garbage collector then drops its blobs and
/// snapshots unless another image or a running sandbox still uses them. Returns the full
/// name removed.
pub async fn remove(client: &Client, name: &str) -> Result<String, ImageError> {
    let full = normalize_name(name)?;
    match client
        .images()
        .delete(client.request(DeleteImageRequest {
            name: full.clone(),
            sync: true,
            target: None,
        }))
        .await
    {
        Ok(_) => Ok(full),
        Err(s) if s.code() == tonic::Code::NotFound => Err(not_found(client, name)),
        Err(s) => Err(ContainerdError::rpc("images.delete")(s).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        let cases = [
            ("busybox", Some("stockade/busybox:latest")),
            ("busybox:1.36", Some("stockade/busybox:1.36")),
            ("stockade/busybox:latest", Some("stockade/busybox:latest")),
            (
                "docker.io/library/python",
                Some("docker.io/library/python:latest"),
            ),
            ("localhost:5000/x", Some("localhost:5000/x:latest")),
            ("localhost:5000/x:v1", Some("localhost:5000/x:v1")),
            ("a/b@sha256:00", Some("a/b@sha256:00")),
            ("", None),
            ("has space", None),
            ("/abs", None),
            ("trailing/", None),
            ("semi;colon", None),
        ];
        for (input, want) in cases {
            let got = normalize_name(input).ok();
            assert_eq!(got.as_deref(), want, "{input}");
        }
    }

    #[test]
    fn not_found_message_says_how_to_get_the_image() {
        let e = ImageError::NotFound {
            name: "busybox".into(),
            namespace: "stockade".into(),
            hint: missing_hint("stockade/busybox:latest"),
        };
        assert_eq!(
            e.to_string(),
            "image `busybox` not found in namespace stockade (build it with `stockade image build busybox`)"
        );
        assert_eq!(
            missing_hint("docker.io/library/node:20"),
            "import it with `stockade image import FILE`"
        );
    }

    #[test]
    fn cached_config_round_trips_and_rejects_unknown_fields() {
        let c = ImageConfig {
            env: vec!["PATH=/bin".into()],
            entrypoint: vec![],
            cmd: vec!["/bin/sh".into()],
            working_dir: "/workspace".into(),
            user: String::new(),
        };
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ImageConfig>(&j).unwrap(), c);
        assert!(serde_json::from_str::<ImageConfig>(r#"{"envv":[]}"#).is_err());
    }
}
