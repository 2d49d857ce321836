//! `stockade image push REF`: the local image REF (its manifest, config and layers as the
//! content store holds them, so its digest does not change) to the registry REF names.
//! Blobs the registry already has are not sent again. Layers are streamed from the
//! content store to the registry in chunks (oci-client's `push_blob_stream`), so a push
//! holds no layer whole in memory.

use std::time::Instant;

use futures_util::{StreamExt as _, TryStreamExt as _};
use oci_client::errors::OciDistributionError;
use oci_client::RegistryOperation;

use super::{classify, oci_reference, RegistryError, RegistryOptions};
use crate::containerd::Client;
use crate::images::archive::export_refs;
use crate::images::oci::Descriptor;
use crate::images::reference::Reference;
use crate::images::store;
use crate::images::{ImageError, Progress};

/// What a push sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The reference pushed to (canonical).
    pub name: String,
    /// The manifest digest, the same locally and in the registry.
    pub digest: String,
    /// Blobs uploaded, and blobs the registry already had.
    pub uploaded: usize,
    pub present: usize,
}

/// Pushes the local image `reference` to its registry.
pub async fn push(
    client: &Client,
    reference: &str,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<Pushed, ImageError> {
    let r = Reference::parse(reference)?;
    let registry = opts.client(&r)?;
    let auth = opts.auth(&r)?;
    let target = oci_reference(&r)?;
    let what = r.familiar();
    progress.stage(&format!("{what}: reading the local image"));
    let image = export_refs(client, &r.canonical()).await?;
    registry
        .store_auth_if_needed(target.resolve_registry(), &auth)
        .await;
    registry
        .auth(&target, &auth, RegistryOperation::Push)
        .await
        .map_err(|e| classify(&r, &what, e))?;

    // Layers are streamed from the content store chunk by chunk (never whole in memory);
    // the config is small and already read.
    let mut blobs: Vec<(Descriptor, Option<Vec<u8>>)> = image
        .layers
        .iter()
        .map(|l| (l.descriptor.clone(), None))
        .collect();
    blobs.push((image.config_descriptor.clone(), Some(image.config.clone())));
    let n = blobs.len();
    let sent: Vec<bool> =
        futures_util::stream::iter(blobs.into_iter().enumerate().map(|(i, (desc, bytes))| {
            let (registry, target, r, what) = (&registry, &target, &r, &what);
            async move {
                let t = Instant::now();
                let digest = desc.digest.clone();
                let blob_what = format!("{what}: blob {digest}");
                if registry
                    .blob_exists(target, &digest)
                    .await
                    .map_err(|e| classify(r, &blob_what, e))?
                {
                    progress.line(&format!(
                        "{what}: blob {}/{n} {digest} already there",
                        i + 1
                    ));
                    return Ok::<bool, ImageError>(false);
                }
                let size = desc.size.max(0) as u64;
                match bytes {
                    Some(bytes) => registry.push_blob(target, bytes, &digest).await,
                    None => {
                        let stream = store::blob_stream(client, &digest).await?.map(|c| {
                            c.map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))
                        });
                        registry
                            .push_blob_stream(target, stream, &digest, Some(size))
                            .await
                    }
                }
                .map_err(|e| classify(r, &blob_what, e))?;
                progress.line(&format!(
                    "{what}: blob {}/{n} {digest} {} in {:.1}s",
                    i + 1,
                    store::human(size),
                    t.elapsed().as_secs_f64()
                ));
                Ok(true)
            }
        }))
        .buffer_unordered(opts.concurrency())
        .try_collect()
        .await?;

    progress.stage(&format!("{what}: writing the manifest"));
    let content_type =
        image
            .manifest_descriptor
            .media_type
            .parse()
            .map_err(|_| RegistryError::Protocol {
                what: what.clone(),
                reason: format!(
                    "media type `{}` is not a header value",
                    image.manifest_descriptor.media_type
                ),
            })?;
    registry
        .push_manifest_raw(&target, image.manifest.clone(), content_type)
        .await
        .map_err(|e| classify(&r, &what, e))?;
    let uploaded = sent.iter().filter(|s| **s).count();
    Ok(Pushed {
        name: r.canonical(),
        digest: image.manifest_descriptor.digest,
        uploaded,
        present: sent.len() - uploaded,
    })
}
