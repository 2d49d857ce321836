//! HTTP plumbing shared by the handlers: the body type, JSON and error responses, query
//! strings, request bodies, and streamed or hijacked responses.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

/// Every response's body.
pub type Body = BoxBody<Bytes, Infallible>;

/// The largest request body read (a create request is a few KiB).
pub const MAX_BODY: usize = 4 << 20;

/// An error answered as Docker answers errors: the status and `{"message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, answered as `message` on one line.
    pub message: String,
}

impl ApiError {
    /// An error with `status` (500 when it is not a valid status code).
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }
    /// 400: the request is malformed or asks for what is not served.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
    /// 404: no such container, image, exec or route.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }
    /// 409: the request conflicts with the object's state or use (a name taken, a running
    /// container, an image in use).
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }
    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }

    /// The response.
    pub fn response(&self) -> Response<Body> {
        // One line whatever the message holds.
        let message = self.message.replace('\n', " ");
        json(self.status, &serde_json::json!({ "message": message }))
    }
}

impl From<crate::sandbox::SandboxError> for ApiError {
    fn from(e: crate::sandbox::SandboxError) -> ApiError {
        use crate::sandbox::ErrorKind;
        let status = match e.kind() {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Forbidden => 403,
            ErrorKind::Internal => 500,
        };
        ApiError::new(status, e.to_string())
    }
}

/// A handler's answer.
pub type Answer = Result<Response<Body>, ApiError>;

/// A body of `bytes`, in one piece.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// `status` with `value` as JSON.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("a response always serializes");
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(bytes))
        .expect("a valid response")
}

/// 200 with `value` as JSON.
pub fn ok_json(value: &impl serde::Serialize) -> Answer {
    Ok(json(StatusCode::OK, value))
}

/// `status` with no body.
pub fn no_content(status: StatusCode) -> Answer {
    Ok(status_only(status))
}

/// The response of `status` with no body.
pub fn status_only(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(empty())
        .expect("a valid response")
}

/// 200 with `body` (usually a [`channel_body`], so that the head goes out at once) of
/// `content_type`.
pub fn streamed(content_type: &'static str, body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", content_type)
        .body(body)
        .expect("a valid response")
}

/// A body fed by a channel: the response's head goes out at once, each chunk as it is
/// sent, and the body ends when every sender is dropped.
pub fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_stream(rx);
    (tx, StreamBody::new(stream).boxed())
}

/// A writer into a [`channel_body`], for a blocking thread: each write is sent as one
/// chunk, and a write after the response was dropped fails with `BrokenPipe`.
pub struct ChannelWriter(pub mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn futures_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl tokio_stream::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok(Frame::data(b)))
}

/// The query string as a map (the last value of a repeated key wins).
pub fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in req.uri().query().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k), decode(v));
    }
    out
}

/// Percent-decoding (and `+` as a space), as query strings are encoded.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a query flag is set (`1`, `true`, `True`).
pub fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

/// The request body as JSON (`T::default()` when empty), at most [`MAX_BODY`] bytes.
pub async fn read_json<T: serde::de::DeserializeOwned + Default>(
    body: Incoming,
) -> Result<T, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| ApiError::bad(format!("request body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

/// The 101 answer to a request that upgrades to a raw stream (`Upgrade: tcp`), with the
/// content type saying whether the stream is multiplexed.
pub fn switching(multiplexed: bool) -> Response<Body> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .header("Content-Type", content_type(multiplexed))
        .body(empty())
        .expect("a valid response")
}

/// The content type of a stream of container output.
pub fn content_type(multiplexed: bool) -> &'static str {
    if multiplexed {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(super::decode("a%2Fb+c"), "a/b c");
        assert_eq!(super::decode("%7B%22x%22%3A1%7D"), "{\"x\":1}");
        assert_eq!(super::decode("100%"), "100%");
        assert_eq!(super::decode("%zz"), "%zz");
    }
}
