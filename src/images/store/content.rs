//! Blobs in containerd's content store: written digest-verified (skipped when present), labelled, read back.

use super::*;

/// Writes one blob unless the store has it; sets `labels` on it either way. Returns
/// whether bytes were written.
pub async fn write_blob(
    client: &Client,
    desc: &Descriptor,
    source: &BlobSource,
    labels: HashMap<String, String>,
) -> Result<bool, ImageError> {
    if content_exists(client, &desc.digest).await? {
        set_content_labels(client, &desc.digest, labels).await?;
        return Ok(false);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let reference = format!("stockade-{}", desc.digest.replace(':', "-"));
    let total = desc.size;
    let expected = desc.digest.clone();
    let feeder_source = source.clone();
    let feeder_ref = reference.clone();
    let feeder = tokio::spawn(async move {
        let req = |action: WriteAction, offset: i64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: feeder_ref.clone(),
            total,
            expected: expected.clone(),
            offset,
            data,
            labels: HashMap::new(),
        };
        let mut offset = 0i64;
        match feeder_source {
            BlobSource::Bytes(bytes) => {
                for chunk in bytes.chunks(WRITE_CHUNK) {
                    if tx
                        .send(req(WriteAction::Write, offset, chunk.to_vec()))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    offset += chunk.len() as i64;
                }
            }
            source => {
                // Files are read on a blocking thread, one chunk at a time.
                let name = source.name();
                let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel(2);
                let reader = tokio::task::spawn_blocking(move || {
                    let mut r = source.reader()?;
                    loop {
                        let mut buf = vec![0u8; WRITE_CHUNK];
                        let mut filled = 0;
                        while filled < buf.len() {
                            let n = r.read(&mut buf[filled..])?;
                            if n == 0 {
                                break;
                            }
                            filled += n;
                        }
                        if filled == 0 {
                            return Ok(());
                        }
                        buf.truncate(filled);
                        if chunks_tx.blocking_send(buf).is_err() {
                            return Ok(());
                        }
                    }
                });
                while let Some(buf) = chunks.recv().await {
                    let len = buf.len() as i64;
                    if tx.send(req(WriteAction::Write, offset, buf)).await.is_err() {
                        return Ok(());
                    }
                    offset += len;
                }
                reader
                    .await
                    .map_err(|e| (name.clone(), std::io::Error::other(e)))?
                    .map_err(|e: std::io::Error| (name, e))?;
            }
        }
        let mut commit = req(WriteAction::Commit, offset, Vec::new());
        commit.labels = labels;
        let _ = tx.send(commit).await;
        Ok::<(), (PathBuf, std::io::Error)>(())
    });
    let outcome = async {
        let mut responses = client
            .content()
            .write(client.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await?
            .into_inner();
        while let Some(r) = responses.next().await {
            r?;
        }
        Ok::<(), tonic::Status>(())
    }
    .await;
    let fed = feeder.await.map_err(|e| ImageError::Invalid {
        what: desc.digest.clone(),
        reason: format!("writer task failed: {e}"),
    })?;
    if let Err((path, source)) = fed {
        return Err(ImageError::Io { path, source });
    }
    match outcome {
        Ok(()) => Ok(true),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
        Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message().contains("digest") => {
            Err(ImageError::DigestMismatch {
                what: format!("blob {reference}"),
                expected: desc.digest.clone(),
                actual: s.message().to_string(),
            })
        }
        Err(s) => {
            // Another writer may have committed the same blob meanwhile.
            if content_exists(client, &desc.digest).await? {
                return Ok(false);
            }
            Err(ContainerdError::rpc("content.write")(s).into())
        }
    }
}

pub(super) async fn content_exists(client: &Client, digest: &str) -> Result<bool, ImageError> {
    match client
        .content()
        .info(client.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(ContainerdError::rpc("content.info")(s).into()),
    }
}

async fn set_content_labels(
    client: &Client,
    digest: &str,
    labels: HashMap<String, String>,
) -> Result<(), ImageError> {
    if labels.is_empty() {
        return Ok(());
    }
    let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
    client
        .content()
        .update(client.request(UpdateContentRequest {
            info: Some(containerd_client::services::v1::Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask { paths }),
        }))
        .await
        .map_err(ContainerdError::rpc("content.update"))?;
    Ok(())
}

/// Reads a whole blob from the content store.
pub async fn read_blob(client: &Client, digest: &str) -> Result<Vec<u8>, ImageError> {
    let mut stream = blob_stream(client, digest).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A blob's bytes as Content.Read streams them, chunk by chunk (a layer is never held
/// whole in memory); an error mid-stream ends it.
pub async fn blob_stream(
    client: &Client,
    digest: &str,
) -> Result<
    impl tokio_stream::Stream<Item = Result<bytes::Bytes, ImageError>> + Send + 'static,
    ImageError,
> {
    let stream = client
        .content()
        .read(client.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(ContainerdError::rpc("content.read"))?
        .into_inner();
    Ok(stream.map(|chunk| {
        chunk
            .map(|c| bytes::Bytes::from(c.data))
            .map_err(|s| ContainerdError::rpc("content.read")(s).into())
    }))
}
