//! Base images: built from Debian packages ([`build`]) or imported from tarballs
//! ([`archive`]), stored in containerd as OCI images and unpacked once into a committed
//! overlayfs snapshot named by the image's chain id. Sandboxes start from that snapshot.
//!
//! Names follow Docker's normalisation ([`mod@reference`]): `busybox` is
//! `docker.io/library/busybox:latest`, and image records carry that canonical name. The
//! images built from stockade's own recipes are `stockade/<recipe>`
//! (`docker.io/stockade/<recipe>:latest`), a repository no import, pull or tag may write,
//! so a user's image never replaces a built-in one. Storing under a name that already
//! names another image replaces it and says so ([`ImageRef::replaced`]).
//!
//! Every image record carries labels that keep its content and snapshot from containerd's
//! garbage collector (`containerd.io/gc.ref.*`) and a cached copy of its runtime config
//! ([`LABEL_CONFIG`]) so that [`resolve`] costs one Images.Get and one Snapshots.Stat.

pub mod archive;
mod blob_source;
pub mod build;
pub mod build_context;
pub mod build_dockerfile;
pub mod build_step;
pub mod config_merge;
pub mod dockerfile;
mod error;
pub mod layer;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod store;

use containerd_client::services::v1::{DeleteImageRequest, GetImageRequest, ListImagesRequest};
use serde::{Deserialize, Serialize};

use crate::containerd::{Client, ContainerdError};
pub use error::ImageError;
use oci::ImageConfigFile;
pub use reference::{Reference, ReferenceError};
use store::LABEL_GC_SNAPSHOT;

pub use store::{human, PreparedImage};

/// The snapshotter every stockade image is unpacked into.
pub const SNAPSHOTTER: &str = "overlayfs";
/// Image label holding the image's runtime config as JSON (see [`ImageConfig`]).
pub const LABEL_CONFIG: &str = "stockade.image.config";
/// Image label holding the bytes of all the image's blobs.
pub const LABEL_SIZE: &str = "stockade.image.size";

/// How to run an image: the runtime part of its OCI config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// `K=V` environment entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// ENTRYPOINT: the command's leading words, unless the caller replaces them
    /// ([`config_merge`] says which wins).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// CMD: the words after ENTRYPOINT when the caller gives no command.
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
    /// The runtime part of an image's full OCI config file.
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
    /// Canonical name, e.g. `docker.io/stockade/busybox:latest`.
    pub name: String,
    /// Digest of its manifest.
    pub manifest_digest: String,
    /// The committed snapshot to use as the parent of a sandbox's active snapshot.
    pub chain_id: String,
    /// The snapshotter that snapshot lives in (always [`SNAPSHOTTER`]).
    pub snapshotter: String,
    /// How to run it.
    pub config: ImageConfig,
    /// When storing it replaced another image of the same name: that image's manifest
    /// digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

/// What reports progress of long operations (a terminal spinner, a log, nothing).
pub trait Progress: Send + Sync {
    /// A new step began.
    fn stage(&self, message: &str);
    /// A step finished that deserves a line of its own (a layer downloaded).
    fn line(&self, message: &str) {
        self.stage(message);
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _message: &str) {}
}

/// The canonical name of an image reference (see the module docs).
pub fn normalize_name(name: &str) -> Result<String, ImageError> {
    Ok(Reference::parse(name)?.canonical())
}

/// The canonical name of `name`, refused when it lies in the built-in repository: what
/// imports, pulls and tags call the images they write.
pub fn user_image_name(name: &str, hint: &str) -> Result<String, ImageError> {
    let r = Reference::parse(name)?;
    if r.is_builtin() {
        return Err(ImageError::Reserved {
            name: r.familiar(),
            hint: hint.to_string(),
        });
    }
    Ok(r.canonical())
}

/// The hint in a not-found error: how to get the image.
fn missing_hint(canonical: &str) -> String {
    let recipe_of = |prefix: &str| {
        canonical
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(":latest"))
            .filter(|s| build::recipe(s).is_some())
    };
    if let Some(s) = recipe_of(reference::BUILTIN_PREFIX) {
        return format!("build it with `stockade image build {s}`");
    }
    let familiar = Reference::parse(canonical)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| canonical.to_string());
    match recipe_of("docker.io/library/") {
        Some(s) => format!(
            "the built-in image is `stockade/{s}`; this name is Docker Hub's, so pull it with `stockade image pull {familiar}`"
        ),
        None => format!(
            "pull it with `stockade image pull {familiar}` or import it with `stockade image import FILE`"
        ),
    }
}

pub(crate) fn not_found(client: &Client, name: &str) -> ImageError {
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
    resolve_known(client, name, &|_| false).await
}

/// [`resolve`], without the Snapshots.Stat when `committed(chain_id)` says that snapshot
/// was already seen committed. A chain id names its content, so a long-lived process may
/// remember it; the image record itself is always read, since a name can be re-pointed.
pub async fn resolve_known(
    client: &Client,
    name: &str,
    committed: &(dyn Fn(&str) -> bool + Sync),
) -> Result<ImageRef, ImageError> {
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
    if !committed(&chain_id) {
        match store::stat_snapshot(client, &chain_id).await? {
            Some(info)
                if info.kind
                    == containerd_client::services::v1::snapshots::Kind::Committed as i32 => {}
            _ => {
                return Err(ImageError::NotUnpacked {
                    name: full,
                    chain_id,
                })
            }
        }
    }
    Ok(ImageRef {
        name: full,
        manifest_digest: target.digest,
        chain_id,
        snapshotter: SNAPSHOTTER.to_string(),
        config,
        replaced: None,
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
    /// Canonical name (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Familiar name (`busybox:latest`), as Docker shows it.
    pub reference: String,
    /// Digest of its manifest (`sha256:...`).
    pub digest: String,
    /// Bytes of all blobs (compressed layers as stored, config, manifest).
    pub size: u64,
    /// Empty when the record does not name its snapshot.
    pub chain_id: String,
    /// RFC 3339 UTC.
    pub created: String,
}

/// Every image in the client's namespace, sorted by name ([`summaries`]).
pub async fn list(client: &Client) -> Result<Vec<ImageSummary>, ImageError> {
    let images = client
        .images()
        .list(client.request(ListImagesRequest { filters: vec![] }))
        .await
        .map_err(ContainerdError::rpc("images.list"))?
        .into_inner()
        .images;
    Ok(summaries(images))
}

/// The rows of `stockade image ls` for these image records, sorted by name. A record
/// under a name that is not canonical (`stockade/busybox:latest`, as releases before
/// Docker's normalisation stored it) is hidden when the canonical name has a record too:
/// every command looks images up by the canonical name, so the old record is a leftover
/// that would show as a duplicate row. Alone, it is shown under the name it has.
pub fn summaries(images: Vec<containerd_client::services::v1::Image>) -> Vec<ImageSummary> {
    let names: std::collections::HashSet<String> = images.iter().map(|i| i.name.clone()).collect();
    let mut out: Vec<ImageSummary> = images
        .into_iter()
        .filter(|i| {
            normalize_name(&i.name).map_or(true, |canonical| {
                canonical == i.name || !names.contains(&canonical)
            })
        })
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
                reference: Reference::parse(&i.name)
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| i.name.clone()),
                name: i.name,
                digest: target.digest,
                size,
                chain_id: i.labels.get(LABEL_GC_SNAPSHOT).cloned().unwrap_or_default(),
                created,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Gives the image `source` the name `target` as well (the same manifest, config and
/// snapshot). `target` may not lie in the built-in repository. Returns the new name's
/// image, with [`ImageRef::replaced`] set when `target` named another image before.
pub async fn tag(client: &Client, source: &str, target: &str) -> Result<ImageRef, ImageError> {
    let from = normalize_name(source)?;
    let to = user_image_name(target, "choose another target name")?;
    let image = match client
        .images()
        .get(client.request(GetImageRequest { name: from.clone() }))
        .await
    {
        Ok(r) => r
            .into_inner()
            .image
            .ok_or_else(|| not_found(client, source))?,
        Err(s) if s.code() == tonic::Code::NotFound => return Err(not_found(client, source)),
        Err(s) => return Err(ContainerdError::rpc("images.get")(s).into()),
    };
    let before = client
        .images()
        .get(client.request(GetImageRequest { name: to.clone() }))
        .await
        .ok()
        .and_then(|r| r.into_inner().image)
        .and_then(|i| i.target)
        .map(|t| t.digest);
    let record = containerd_client::services::v1::Image {
        name: to.clone(),
        created_at: None,
        updated_at: None,
        ..image
    };
    let result = if before.is_some() {
        client
            .images()
            .update(
                client.request(containerd_client::services::v1::UpdateImageRequest {
                    image: Some(record),
                    update_mask: None,
                    source_date_epoch: None,
                }),
            )
            .await
            .map(|_| ())
            .map_err(ContainerdError::rpc("images.update"))
    } else {
        client
            .images()
            .create(
                client.request(containerd_client::services::v1::CreateImageRequest {
                    image: Some(record),
                    source_date_epoch: None,
                }),
            )
            .await
            .map(|_| ())
            .map_err(ContainerdError::rpc("images.create"))
    };
    result?;
    let mut r = resolve(client, &to).await?;
    r.replaced = before.filter(|d| *d != r.manifest_digest);
    Ok(r)
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

    /// An image record as the store holds it (the fake store of these tests).
    fn record(name: &str, digest: &str) -> containerd_client::services::v1::Image {
        containerd_client::services::v1::Image {
            name: name.to_string(),
            target: Some(containerd_client::types::Descriptor {
                digest: digest.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_legacy_unnormalised_record_beside_its_canonical_one_is_not_listed() {
        let rows = |records: Vec<_>| -> Vec<(String, String)> {
            summaries(records)
                .into_iter()
                .map(|s| (s.name, s.reference))
                .collect()
        };
        let own = |n: &str| (n.to_string(), "stockade/busybox:latest".to_string());
        // Both records: one row, the canonical one.
        assert_eq!(
            rows(vec![
                record("stockade/busybox:latest", "sha256:old"),
                record("docker.io/stockade/busybox:latest", "sha256:new"),
                record("docker.io/library/busybox:latest", "sha256:hub"),
            ]),
            vec![
                (
                    "docker.io/library/busybox:latest".to_string(),
                    "busybox:latest".to_string()
                ),
                own("docker.io/stockade/busybox:latest"),
            ]
        );
        // The legacy record alone is still shown, under its own name.
        assert_eq!(
            rows(vec![record("stockade/busybox:latest", "sha256:old")]),
            vec![own("stockade/busybox:latest")]
        );
        // A name that does not parse is shown as it is.
        assert_eq!(rows(vec![record("has space", "sha256:x")]).len(), 1);
    }

    #[test]
    fn names_are_canonical_docker_references() {
        let cases = [
            ("busybox", Some("docker.io/library/busybox:latest")),
            (
                "stockade/busybox",
                Some("docker.io/stockade/busybox:latest"),
            ),
            ("localhost:5000/x:v1", Some("localhost:5000/x:v1")),
            ("has space", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_name(input).ok().as_deref(), want, "{input}");
        }
    }

    #[test]
    fn user_images_may_not_take_built_in_names() {
        assert_eq!(
            user_image_name("busybox:latest", "h").unwrap(),
            "docker.io/library/busybox:latest"
        );
        let e =
            user_image_name("stockade/busybox", "give it another name with --name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "image name `stockade/busybox:latest` is reserved for stockade's built-in images (made by `stockade image build`); give it another name with --name"
        );
    }

    #[test]
    fn not_found_message_says_how_to_get_the_image() {
        let e = ImageError::NotFound {
            name: "stockade/busybox".into(),
            namespace: "stockade".into(),
            hint: missing_hint("docker.io/stockade/busybox:latest"),
        };
        assert_eq!(
            e.to_string(),
            "image `stockade/busybox` not found in namespace stockade (build it with `stockade image build busybox`)"
        );
        assert_eq!(
            missing_hint("docker.io/library/busybox:latest"),
            "the built-in image is `stockade/busybox`; this name is Docker Hub's, so pull it with `stockade image pull busybox:latest`"
        );
        assert_eq!(
            missing_hint("docker.io/library/node:20"),
            "pull it with `stockade image pull node:20` or import it with `stockade image import FILE`"
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
