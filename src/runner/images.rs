//! How an image name becomes the committed snapshot a run is prepared on. The runner asks
//! an [`ImageSource`] on every run that was not handed its image already, so a name that
//! was re-pointed (an image rebuilt or pulled again) is seen on the next run, also in a
//! long-lived server. What a source may remember is only what cannot change: that a
//! content-addressed snapshot is committed. If that snapshot has since gone,
//! Snapshots.Prepare fails and the runner tells the source to forget it.

use std::collections::HashSet;
use std::sync::Mutex;

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

    /// Drops whatever was remembered about `base`: a run found its snapshot unusable.
    /// Default: nothing is remembered.
    fn forget(&self, _base: &BaseImage) {}
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
///
/// The record is read on every call (one Images.Get); the Snapshots.Stat that checks its
/// snapshot is committed is made once per chain id and remembered, at most
/// [`REMEMBERED_CHAINS`] of them.
#[derive(Debug, Default)]
pub struct StoreImages {
    committed: Mutex<HashSet<String>>,
}

/// How many committed chain ids a [`StoreImages`] remembers before it starts over, so a
/// long-lived process that sees image after image keeps a bounded set.
pub const REMEMBERED_CHAINS: usize = 256;

impl StoreImages {
    fn knows(&self, chain_id: &str) -> bool {
        self.committed.lock().expect("chain set").contains(chain_id)
    }

    fn remember(&self, chain_id: &str) {
        let mut set = self.committed.lock().expect("chain set");
        if set.len() >= REMEMBERED_CHAINS {
            set.clear();
        }
        set.insert(chain_id.to_string());
    }
}

impl From<&crate::images::ImageRef> for BaseImage {
    fn from(r: &crate::images::ImageRef) -> BaseImage {
        BaseImage {
            name: r.name.clone(),
            snapshot: r.chain_id.clone(),
            digest: Some(r.manifest_digest.clone()),
        }
    }
}

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
            let known = |chain: &str| self.knows(chain);
            let r = crate::images::resolve_known(client, name, &known)
                .await
                .map_err(|e| e.to_string())?;
            self.remember(&r.chain_id);
            Ok(BaseImage::from(&r))
        })
    }

    fn forget(&self, base: &BaseImage) {
        self.committed
            .lock()
            .expect("chain set")
            .remove(&base.snapshot);
    }
}
