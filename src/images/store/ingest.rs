//! Streaming a blob into the content store as it arrives (a download), resumable: an
//! interrupted write stays in containerd as an ingest named by its ref, [`find_download`]
//! finds it and says how far it got, and the next write continues from there. containerd checks the
//! digest and size of the whole blob at commit, so a resumed blob is verified as a whole.

use containerd_client::services::v1::{AbortRequest, ListStatusesRequest, StatusRequest};

use super::*;

/// The prefix of every ingest ref a download of `digest` writes under. Each attempt that
/// starts afresh takes a new ref ([`new_download_ref`]); a later attempt finds an earlier
/// one's ingest by this prefix ([`find_download`]) and continues it.
pub fn download_ref(digest: &str) -> String {
    format!("stockade-pull-{}-", digest.replace(':', "-"))
}

/// A fresh ingest ref for a download of `digest`.
pub fn new_download_ref(digest: &str) -> String {
    format!("{}{}", download_ref(digest), random_hex(6))
}

/// The interrupted download of `digest` that got furthest: its ref and how many bytes it
/// holds. `None` when there is none.
pub async fn find_download(
    client: &Client,
    digest: &str,
) -> Result<Option<(String, u64)>, ImageError> {
    let prefix = download_ref(digest);
    let statuses = client
        .content()
        .list_statuses(client.request(ListStatusesRequest { filters: vec![] }))
        .await
        .map_err(ContainerdError::rpc("content.list_statuses"))?
        .into_inner()
        .statuses;
    Ok(statuses
        .into_iter()
        .filter(|s| s.r#ref.starts_with(&prefix))
        .map(|s| (s.r#ref, s.offset.max(0) as u64))
        .max_by_key(|(_, offset)| *offset))
}

/// True when the content store holds `digest`.
pub async fn has_blob(client: &Client, digest: &str) -> Result<bool, ImageError> {
    content_exists(client, digest).await
}

/// Bytes the ingest `reference` holds (0 when there is no such ingest).
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
    Source {
        /// Bytes of the blob in the ingest when the source failed.
        written: u64,
        /// The source's error.
        error: std::io::Error,
    },
    /// containerd refused the blob (a digest or size that does not match is
    /// [`ImageError::DigestMismatch`]).
    Store(ImageError),
}

/// The bytes of a blob from some offset on, as they arrive.
pub type Chunks = futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// Writes a blob into ingest `reference` and commits it as `desc` with `labels`. containerd
/// says first how many bytes the ingest already holds (an interrupted earlier write, or all
/// of them when another namespace has the blob); `open` is given that offset and returns
/// the bytes from there on. `on_chunk` is told the bytes written so far. Returns the offset
/// the write started at. When the source fails the ingest is left for a later attempt.
pub async fn write_stream<F, Fut>(
    client: &Client,
    desc: &Descriptor,
    reference: &str,
    open: F,
    labels: HashMap<String, String>,
    on_chunk: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, StreamError>
where
    F: FnOnce(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Chunks, ImageError>>,
{
    let store_err = |s: tonic::Status| StreamError::Store(classify(desc, s));
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
    let _ = tx.send(req(WriteAction::Stat, 0, Vec::new())).await;
    let mut responses = client
        .content()
        .write(client.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .map_err(store_err)?
        .into_inner();
    let start = match responses.next().await {
        Some(Ok(r)) => r.offset.max(0) as u64,
        Some(Err(s)) => return Err(store_err(s)),
        None => {
            return Err(StreamError::Store(ImageError::Invalid {
                what: format!("blob {}", desc.digest),
                reason: "containerd closed the write before saying where it stood".into(),
            }))
        }
    };
    let mut chunks = open(start).await.map_err(StreamError::Store)?;
    let rpc = async {
        while let Some(r) = responses.next().await {
            r?;
        }
        Ok::<(), tonic::Status>(())
    };
    let feed = async move {
        let mut written = start;
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
        Ok(()) => Ok(start),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(start),
        Err(s) => Err(store_err(s)),
    }
}

/// A refusal of containerd's, as an error: a digest or size that does not match is
/// [`ImageError::DigestMismatch`].
fn classify(desc: &Descriptor, s: tonic::Status) -> ImageError {
    match s.code() {
        tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
            ImageError::DigestMismatch {
                what: format!("blob {}", desc.digest),
                expected: format!("{} ({} bytes)", desc.digest, desc.size),
                actual: s.message().to_string(),
            }
        }
        _ => ContainerdError::rpc("content.write")(s).into(),
    }
}
