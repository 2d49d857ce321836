//! The native HTTP API (`stockade serve --http ADDR`): JSON over HTTP/1.1 under `/v1/`,
//! over the library's front door ([`Sandboxes`], [`crate::runner::Runner`]).
//!
//! - Every route but `GET /v1/health` and `GET /openapi.json` needs
//!   `Authorization: Bearer TOKEN` with a token of `--token-file` ([`auth`]); without one
//!   the answer is 401 and nothing is started.
//! - A token sees and drives only the sandboxes it made, within its quotas ([`quota`]).
//! - A request's policy is the server's, tightened ([`policy`]).
//! - Bodies are capped: JSON at [`MAX_JSON`], uploads at `--http-max-body` (413 past it).
//! - Errors are `{"error": {"code", "message", "field"}}` ([`error`]); every answer has an
//!   `X-Request-Id` header, the id its log line carries.
//! - The server owns the sandboxes it made: it keeps their deadlines, removes them when it
//!   stops, and at start removes those an earlier server left (label [`LABEL_TOKEN`]).
//! - A token's warm pools (`pools.rs`) run in the server's process: it drains them when it
//!   stops, and a dead server's pooled sandboxes (their run directories owned by a process
//!   that is gone) are reclaimed at the next start like any crashed run.

pub mod auth;
pub(crate) mod code;
pub mod error;
mod exec;
pub(crate) mod files;
pub mod metrics;
pub mod openapi;
pub mod policy;
mod pools;
pub mod quota;
mod sandboxes;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

use crate::sandbox::{Sandbox, Sandboxes};
use crate::serve::docker::create::ServerPolicy;
use crate::serve::http::{json, Body};
use crate::serve::owned;
use auth::Tokens;
use error::HttpError;
use metrics::Metrics;
use quota::{Ledger, Quotas};

/// Label on every sandbox this API made: the name of the token that made it.
pub const LABEL_TOKEN: &str = "stockade-http.token";
/// The largest JSON request body: 1 MiB.
pub const MAX_JSON: usize = 1 << 20;
/// Default of `--http-max-body`: the largest upload (a file or a tar archive), 64 MiB.
pub const DEFAULT_MAX_BODY: u64 = 64 << 20;
/// The API's version, the prefix of its routes.
pub const API: &str = "v1";

/// A handler's answer.
pub type Answer = Result<Response<Body>, HttpError>;

/// How the API is configured.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The tokens that may use it.
    pub tokens: Tokens,
    /// The quotas of each token.
    pub quotas: Quotas,
    /// The largest upload, in bytes.
    pub max_body: u64,
}

/// The API's state.
pub struct HttpApi {
    /// The front door.
    pub sandboxes: Sandboxes,
    /// The server's policy: default and ceiling of every request.
    pub server: ServerPolicy,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    tokens: Tokens,
    ledger: Arc<Ledger>,
    max_body: u64,
    keepers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    pools: tokio::sync::Mutex<HashMap<String, pools::OwnedPool>>,
}

/// Who is asking: the token's name and the request's id.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name.
    pub token: String,
}

impl HttpApi {
    /// The API over `sandboxes`, with `server`'s policy.
    pub fn new(sandboxes: Sandboxes, server: ServerPolicy, config: HttpConfig) -> HttpApi {
        HttpApi {
            sandboxes,
            server,
            metrics: Arc::new(Metrics::default()),
            tokens: config.tokens,
            ledger: Arc::new(Ledger::new(config.quotas)),
            max_body: config.max_body,
            keepers: Mutex::new(HashMap::new()),
            pools: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Answers one request, with its `X-Request-Id` header and its log line.
    pub async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let id = crate::runner::new_id().replacen(crate::runner::ID_PREFIX, "req-", 1);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut resp = match self.answer(req).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(request_id = %id, "{method} {path}: {} {}", e.status.as_u16(), e.message);
                e.response()
            }
        };
        let status = resp.status().as_u16();
        self.metrics.inc(
            "stockade_http_requests_total",
            &format!("code=\"{status}\""),
        );
        tracing::info!(
            request_id = %id,
            "{method} {path} {status} {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
        if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
    }

    async fn answer(&self, req: Request<Incoming>) -> Answer {
        let path = req.uri().path().to_string();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().clone();
        // Unauthenticated: liveness and the API's description.
        match (&method, segs.as_slice()) {
            (&Method::GET, ["openapi.json"]) => return Ok(openapi::response()),
            (&Method::GET, [API, "health"]) => {
                return Ok(json(
                    StatusCode::OK,
                    &wire::Health {
                        status: "ok".into(),
                    },
                ))
            }
            _ => {}
        }
        let caller = self.authenticate(&req)?;
        let Some((&API, rest)) = segs.split_first() else {
            return Err(HttpError::not_found(format!(
                "{method} {path}: no such route"
            )));
        };
        match (&method, rest) {
            (&Method::GET, ["version"]) => Ok(json(
                StatusCode::OK,
                &wire::Version {
                    version: env!("CARGO_PKG_VERSION").into(),
                    api: API.into(),
                },
            )),
            (&Method::GET, ["metrics"]) => Ok(Response::builder()
                .header("Content-Type", "text/plain; version=0.0.4")
                .body(crate::serve::http::full(
                    self.metrics.render(self.ledger.all().len()),
                ))
                .expect("a valid response")),
            (&Method::POST, ["run"]) => sandboxes::run(self, &caller, req).await,
            (&Method::POST, ["pools"]) => pools::fill(self, &caller, req).await,
            (&Method::GET, ["pools"]) => pools::list(self, &caller).await,
            (&Method::GET, ["pools", id]) => pools::get(self, &caller, id).await,
            (&Method::DELETE, ["pools", id]) => pools::drain(self, &caller, id).await,
            (&Method::POST, ["sandboxes"]) => sandboxes::create(self, &caller, req).await,
            (&Method::GET, ["sandboxes"]) => sandboxes::list(self, &caller).await,
            (&Method::GET, ["sandboxes", id]) => sandboxes::get(self, &caller, id).await,
            (&Method::DELETE, ["sandboxes", id]) => sandboxes::delete(self, &caller, id).await,
            (&Method::POST, ["sandboxes", id, "extend"]) => {
                sandboxes::extend(self, &caller, id, req).await
            }
            (&Method::POST, ["sandboxes", id, "exec"]) => {
                exec::exec(self, &caller, id, req, false).await
            }
            (&Method::POST, ["sandboxes", id, "exec", "stream"]) => {
                exec::exec(self, &caller, id, req, true).await
            }
            (&Method::POST, ["sandboxes", id, "code"]) => code::run(self, &caller, id, req).await,
            (&Method::PUT, ["sandboxes", id, "files"]) => {
                files::write(self, &caller, id, req).await
            }
            (&Method::GET, ["sandboxes", id, "files"]) => {
                files::read(self, &caller, id, &req).await
            }
            (&Method::DELETE, ["sandboxes", id, "files"]) => {
                files::remove(self, &caller, id, &req).await
            }
            (&Method::GET, ["sandboxes", id, "files", "list"]) => {
                files::list(self, &caller, id, &req).await
            }
            (&Method::GET, ["sandboxes", id, "files", "stat"]) => {
                files::stat(self, &caller, id, &req).await
            }
            (&Method::POST, ["sandboxes", id, "files", "mkdir"]) => {
                files::mkdir(self, &caller, id, &req).await
            }
            (&Method::PUT, ["sandboxes", id, "archive"]) => {
                files::put_archive(self, &caller, id, req).await
            }
            (&Method::GET, ["sandboxes", id, "archive"]) => {
                files::get_archive(self, &caller, id, &req).await
            }
            _ => Err(HttpError::not_found(format!(
                "{method} {path}: no such route (see /openapi.json)"
            ))),
        }
    }

    fn authenticate(&self, req: &Request<Incoming>) -> Result<Caller, HttpError> {
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let name = auth::bearer(header)
            .and_then(|t| self.tokens.check(t))
            .ok_or_else(HttpError::unauthorized)?;
        Ok(Caller {
            token: name.to_string(),
        })
    }

    /// The sandbox `id` (or name) if `caller` made it; 404 otherwise, whoever made it.
    async fn owned(&self, caller: &Caller, id: &str) -> Result<Sandbox, HttpError> {
        owned::find(&self.sandboxes, &self.ledger, &caller.token, id)
            .await?
            .ok_or_else(|| HttpError::not_found(format!("no such sandbox: {id}")).field("id"))
    }

    /// Starts keeping the lifetime and idle timeout of sandbox `id` (once).
    fn keep(&self, id: &str) {
        let mut keepers = self.keepers.lock().expect("keepers lock");
        if keepers.get(id).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let handle = owned::spawn_keeper(&self.sandboxes, &self.ledger, id);
        keepers.insert(id.to_string(), handle);
    }

    /// Drains every pool and removes every sandbox this server made (it is stopping).
    pub async fn remove_all(&self) {
        let drained = pools::drain_all(self).await;
        if drained > 0 {
            tracing::info!("pools drained: {drained} ready sandboxes removed");
        }
        for (_, h) in self.keepers.lock().expect("keepers lock").drain() {
            h.abort();
        }
        for id in self.ledger.all() {
            owned::remove(&self.sandboxes, &self.ledger, &id).await;
        }
    }

    /// Removes the sandboxes an earlier server of this API left (it crashed or was
    /// killed): they carry [`LABEL_TOKEN`]. Returns their ids.
    pub async fn reclaim_leftovers(&self) -> Vec<String> {
        owned::remove_leftovers(&self.sandboxes, |info, _| {
            info.labels.contains_key(LABEL_TOKEN)
        })
        .await
    }
}

/// Reads a JSON body (at most [`MAX_JSON`] bytes; an empty body is `T::default()`).
async fn read_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, HttpError> {
    let bytes = read_body(req, MAX_JSON as u64).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let text = e.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.starts_with("unknown field") || text.starts_with("missing field"))
            .map(str::to_string);
        let mut err = HttpError::invalid(format!("request body: {text}"));
        err.field = Some(field.unwrap_or_else(|| "body".to_string()));
        err
    })
}

/// Reads a body of at most `limit` bytes; 413 past it (told by `Content-Length` before
/// anything is read, or found while reading).
async fn read_body(req: Request<Incoming>, limit: u64) -> Result<Bytes, HttpError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(HttpError::too_large(limit));
    }
    let limited = http_body_util::Limited::new(req.into_body(), limit as usize);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(HttpError::too_large(limit)),
        Err(e) => Err(HttpError::invalid(format!("request body: {e}")).field("body")),
    }
}

/// A required query parameter.
fn param(q: &HashMap<String, String>, key: &str) -> Result<String, HttpError> {
    q.get(key)
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| HttpError::invalid(format!("{key}: required")).field(key))
}
