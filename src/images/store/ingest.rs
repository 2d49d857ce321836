//! Streaming a blob into the content store as it arrives (a download), resumable: an
//! interrupted write stays in containerd as an ingest named by its ref, [`ingest_offset`]
//! says how far it got, and the next write continues from there. containerd checks the
//! digest and size of the whole blob at commit, so a resumed blob is verified as a whole.

use containerd_client::services::v1::{AbortRequest, StatusRequest};

use super::*;

/// The ingest ref a download of `digest` writes under: the same for every attempt, so a
/// later attempt finds what an interrupted one wrote.
pub fn download_ref(digest: &str) -> String {
    format!("stockade-pull-{}", digest.replace(':', "-"))
}

/// True when the content store holds `digest`.
pub async fn has_blob(client: &Client, digest: &str) -> Result<bool, ImageError> {
    content_exists(client, digest).await
}

/// Bytes an earlier, interrupted write of `reference` left in the content store (0 when
/// there is no such ingest).
pub async fn ingest_offset(client: &Client, reference: &str) -> Result<u64, ImageError> {
    match client
        .content()
        .status(client.request(StatusRequest {
            r#ref: reference.to_string(),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().status.map_or(0, |s| s.offset.max(0) as u64)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(0),
        Err(s) => Err(ContainerdError::rpc("content.status")(s).into()),
    }
}

/// Drops the ingest `reference` (nothing when there is none).
pub async fn abort_ingest(client: &Client, reference: &str) -> Result<(), ImageError> {
    match client
        .content()
        .abort(client.request(AbortRequest {
            r#ref: reference.to_string(),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(ContainerdError::rpc("content.abort")(s).into()),
    }
}

/// How a streamed write ended short of a commit.
#[derive(Debug)]
pub enum StreamError {
    /// The source failed after `written` bytes of the blob were in the ingest.
    Source { written: u64, error: std::io::Error },
    /// containerd refused the blob (a digest or size that does not match is
    /// [`ImageError::DigestMismatch`]).
    Store(ImageError),
}

/// Writes the bytes of `chunks` into ingest `reference` from `offset` on (0 starts over)
/// and commits the blob as `desc` with `labels`. `on_chunk` is told the bytes written so
/// far. When the source fails the ingest is left for a later attempt to resume.
pub async fn write_stream<S>(
    client: &Client,
    desc: &Descriptor,
    reference: &str,
    offset: u64,
    mut chunks: S,
    labels: HashMap<String, String>,
    on_chunk: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), StreamError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Unpin,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
    let req = |action: WriteAction, offset: u64, data: Vec<u8>| WriteContentRequest {
        action: action as i32,
        r#ref: reference.to_string(),
        total: desc.size,
        expected: desc.digest.clone(),
        offset: offset as i64,
        data,
        labels: HashMap::new(),
    };
    let rpc = async {
        let mut responses = client
            .content()
            .write(client.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await?
            .into_inner();
        while let Some(r) = responses.next().await {
            r?;
        }
        Ok::<(), tonic::Status>(())
    };
    let feed = async move {
        let mut written = offset;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|error| (written, error))?;
            for part in chunk.chunks(WRITE_CHUNK) {
                if tx
                    .send(req(WriteAction::Write, written, part.to_vec()))
                    .await
                    .is_err()
                {
                    return Ok(written);
                }
                written += part.len() as u64;
            }
            on_chunk(written);
        }
        let mut commit = req(WriteAction::Commit, written, Vec::new());
        commit.labels = labels.clone();
        let _ = tx.send(commit).await;
        // The sender is dropped here, which ends the request stream.
        Ok::<u64, (u64, std::io::Error)>(written)
    };
    let (fed, stored) = tokio::join!(feed, rpc);
    if let Err((written, error)) = fed {
        return Err(StreamError::Source { written, error });
    }
    match stored {
        Ok(()) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s)
            if s.code() == tonic::Code::FailedPrecondition
                || s.code() == tonic::Code::InvalidArgument =>
        {
            Err(StreamError::Store(ImageError::DigestMismatch {
                what: format!("blob {}", desc.digest),
                expected: format!("{} ({} bytes)", desc.digest, desc.size),
                actual: s.message().to_string(),
            }))
        }
        Err(s) => Err(StreamError::Store(
            ContainerdError::rpc("content.write")(s).into(),
        )),
    }
}
