//! How an image name becomes the committed snapshot a run is prepared on. The runner asks
//! an [`ImageSource`] once per name and caches the answer; if the snapshot has since gone,
//! Snapshots.Prepare fails, the cache entry is dropped and the source is asked again.

use containerd_client::services::v1::snapshots::Kind;

pub use crate::containerd::BoxFuture;
use crate::containerd::Containerd;

/// A committed base snapshot to run on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseImage {
    /// The image name the policy used.
    pub name: String,
    /// Key of the committed snapshot (for an unpacked image: its chain id).
    pub snapshot: String,
    /// The image's manifest digest, when known (recorded in results and the run log).
    pub digest: Option<String>,
}

/// Resolves image names to base snapshots.
pub trait ImageSource: Send + Sync {
    /// The base snapshot of `name` in `snapshotter`, asking `containerd`, or one line
    /// saying why there is none.
    fn resolve<'a>(
        &'a self,
        containerd: &'a dyn Containerd,
        snapshotter: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BaseImage, String>>;
}

/// Treats an image name as the key of a committed snapshot (as `stockade image` stores
/// bases that were built directly as snapshots, and as tests create them).
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotImages;

impl ImageSource for SnapshotImages {
    fn resolve<'a>(
        &'a self,
        containerd: &'a dyn Containerd,
        snapshotter: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BaseImage, String>> {
        Box::pin(async move {
            match containerd.stat_snapshot(snapshotter, name).await {
                Ok(info) => {
                    if info.kind != Kind::Committed as i32 {
                        return Err(format!("image `{name}`: snapshot is not committed"));
                    }
                    Ok(BaseImage {
                        name: name.to_string(),
                        snapshot: name.to_string(),
                        digest: None,
                    })
                }
                Err(e) if e.is_not_found() => Err(format!(
                    "image `{name}`: no committed snapshot of that name in namespace `{}`",
                    containerd.namespace()
                )),
                Err(e) => Err(format!("image `{name}`: {e}")),
            }
        })
    }
}

/// Resolves names through stockade's image store ([`crate::images::resolve`]): the image
/// record names its manifest digest and the chain id of its committed snapshot. The store
/// is read over the gRPC connection behind the seam ([`Containerd::client`]); a fake has
/// none, so it has no image store either.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreImages;

impl ImageSource for StoreImages {
    fn resolve<'a>(
        &'a self,
        containerd: &'a dyn Containerd,
        _snapshotter: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<BaseImage, String>> {
        Box::pin(async move {
            let Some(client) = containerd.client() else {
                return Err(format!(
                    "image `{name}`: the image store needs a connection to containerd"
                ));
            };
            let r = crate::images::resolve(client, name)
                .await
                .map_err(|e| e.to_string())?;
            Ok(BaseImage {
                name: r.name,
                snapshot: r.chain_id,
                digest: Some(r.manifest_digest),
            })
        })
    }
}
