//! Execs: `POST /v1/sandboxes/{id}/exec` answers one JSON document when the command has
//! ended; `/exec/stream` answers at once with NDJSON: `{"type":"stdout"|"stderr","data"}`
//! records as output arrives, then one `{"type":"exit", …}` record (or one
//! `{"type":"error","error":{…}}` when the exec could not run). A client that hangs up on
//! a stream has its exec killed.

use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::error::{ErrorDetail, HttpError};
use super::sandboxes::{check_argv, decode};
use super::wire::{Encoding, ExecBody, ExecOutcome, StreamRecord, TruncatedView};
use super::{read_json, Answer, Caller, HttpApi};
use crate::policy::{parse_duration, parse_size};
use crate::runner::{Cancel, Output, Stdin};
use crate::sandbox::{ExecRequest, ExecResult, Sandbox, SandboxError};
use crate::serve::http::{channel_body, json};

/// What the pumps and the exec report, in order.
enum Event {
    Out { stderr: bool, bytes: Vec<u8> },
    Done(Result<ExecResult, SandboxError>, bool),
}

fn line<T: serde::Serialize>(v: &T) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("a record always serializes");
    b.push(b'\n');
    Bytes::from(b)
}

fn encode(bytes: &[u8], encoding: Encoding) -> String {
    use base64::Engine;
    match encoding {
        Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

/// A request's `timeout` (`30s`): parsed (400 naming `timeout`) and within the sandbox's
/// exec timeout and above zero (403 naming `timeout`). Exec and code cells share it.
pub(super) fn timeout_within(
    t: &str,
    limits: &crate::runner::session::SessionLimits,
) -> Result<std::time::Duration, HttpError> {
    let d = parse_duration(t)
        .map_err(|e| HttpError::invalid(format!("timeout: `{t}`: {e}")).field("timeout"))?;
    if d.as_millis() as u64 > limits.exec_timeout_ms || d.is_zero() {
        return Err(HttpError::forbidden(format!(
            "timeout: `{t}` is zero or above the sandbox's exec timeout of {} ms",
            limits.exec_timeout_ms
        ))
        .field("timeout"));
    }
    Ok(d)
}

/// The exec request of `body`, within the sandbox's limits.
fn request(sb: &Sandbox, body: ExecBody) -> Result<(ExecRequest, Encoding), HttpError> {
    check_argv(&body.argv)?;
    let limits = sb.record().limits;
    let mut req = ExecRequest::new(body.argv);
    req.env = body.env;
    req.cwd = body.cwd;
    req.user = body.user;
    if let Some(s) = &body.stdin {
        req.stdin = Stdin::Bytes(decode("stdin", s, body.encoding)?);
    }
    if let Some(t) = &body.timeout {
        req.timeout = Some(timeout_within(t, &limits)?);
    }
    if let Some(m) = &body.max_output {
        let n = parse_size(m).map_err(|e| {
            HttpError::invalid(format!("max_output: `{m}`: {e}")).field("max_output")
        })?;
        if n > limits.max_output {
            return Err(HttpError::forbidden(format!(
                "max_output: `{m}` is above the sandbox's cap of {} bytes",
                limits.max_output
            ))
            .field("max_output"));
        }
        req.max_output = Some(n);
    }
    Ok((req, body.encoding))
}

/// Runs `req` in `sb`, reporting its output and its end on `events`.
fn start(
    api: &HttpApi,
    sb: Sandbox,
    mut req: ExecRequest,
    cancel: Cancel,
) -> mpsc::Receiver<Event> {
    let (out_w, out_r) = tokio::io::duplex(1 << 16);
    let (err_w, err_r) = tokio::io::duplex(1 << 16);
    req.output = Output::Writers {
        stdout: Box::new(out_w),
        stderr: Box::new(err_w),
    };
    req.cancel = Some(cancel);
    let (tx, rx) = mpsc::channel(16);
    let cgroups = api.sandboxes.runner().cgroups().clone();
    let cgroup = crate::spec::cgroups_path(sb.id());
    tokio::spawn(async move {
        let oom_before = cgroups.usage(&cgroup).oom_kills.unwrap_or(0);
        let pumps = (
            pump(out_r, false, tx.clone()),
            pump(err_r, true, tx.clone()),
        );
        let (result, _, _) = tokio::join!(sb.exec(req), pumps.0, pumps.1);
        let oom = cgroups.usage(&cgroup).oom_kills.unwrap_or(0) > oom_before;
        let _ = tx.send(Event::Done(result, oom)).await;
    });
    rx
}

async fn pump(mut r: tokio::io::DuplexStream, stderr: bool, tx: mpsc::Sender<Event>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let bytes = buf[..n].to_vec();
                if tx.send(Event::Out { stderr, bytes }).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn outcome(r: &ExecResult, oom: bool, encoding: Encoding) -> ExecOutcome {
    ExecOutcome {
        kind: None,
        exec_id: r.exec_id.clone(),
        exit_code: r.exit_code,
        signal: r.signal,
        timed_out: r.timed_out,
        oom_killed: oom,
        stdout: None,
        stderr: None,
        encoding,
        truncated: TruncatedView {
            stdout: r.truncated.stdout,
            stderr: r.truncated.stderr,
        },
        stdout_bytes: r.stdout_bytes,
        stderr_bytes: r.stderr_bytes,
        duration_ms: r.duration_ms,
    }
}

/// `POST /v1/sandboxes/{id}/exec[/stream]`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec",
    params(("id" = String, Path, description = "The sandbox's id or name")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "The command ran, whatever its exit code", body = ExecOutcome),
        (status = 400, description = "A field is malformed, or the command is not found", body = super::error::ErrorBody),
        (status = 403, description = "timeout or max_output above the sandbox's", body = super::error::ErrorBody),
        (status = 404, description = "No such sandbox of the caller's", body = super::error::ErrorBody),
        (status = 409, description = "The sandbox is not running", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn exec(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: Request<Incoming>,
    stream: bool,
) -> Answer {
    let sb = api.owned(caller, id).await?;
    let body: ExecBody = read_json(req).await?;
    let (req, encoding) = request(&sb, body)?;
    let cancel = Cancel::new();
    let started = Instant::now();
    let mut events = start(api, sb, req, cancel.clone());
    if stream {
        return Ok(streamed(api, events, cancel, encoding, started));
    }
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Out {
                stderr: false,
                bytes,
            } => stdout.extend(bytes),
            Event::Out {
                stderr: true,
                bytes,
            } => stderr.extend(bytes),
            Event::Done(result, oom) => {
                api.metrics
                    .observe("stockade_latency_seconds", "op=\"exec\"", started.elapsed());
                let r = result.map_err(|e| failed(api, e))?;
                api.metrics.inc("stockade_execs_total", "");
                let mut o = outcome(&r, oom, encoding);
                o.stdout = Some(encode(&stdout, encoding));
                o.stderr = Some(encode(&stderr, encoding));
                return Ok(json(StatusCode::OK, &o));
            }
        }
    }
    Err(HttpError::internal("the exec ended without a result"))
}

fn failed(api: &HttpApi, e: SandboxError) -> HttpError {
    let e = HttpError::from(e);
    if e.status.is_server_error() {
        api.metrics.inc("stockade_failures_total", "op=\"exec\"");
    }
    e
}

/// The NDJSON answer fed by `events`.
fn streamed(
    api: &HttpApi,
    mut events: mpsc::Receiver<Event>,
    cancel: Cancel,
    encoding: Encoding,
    started: Instant,
) -> Response<crate::serve::http::Body> {
    let (tx, body) = channel_body();
    let metrics = api.metrics.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let bytes = match ev {
                Event::Out { stderr, bytes } => line(&StreamRecord {
                    kind: if stderr { "stderr" } else { "stdout" }.into(),
                    data: Some(encode(&bytes, encoding)),
                    error: None,
                }),
                Event::Done(result, oom) => {
                    metrics.observe("stockade_latency_seconds", "op=\"exec\"", started.elapsed());
                    match &result {
                        Ok(_) => metrics.inc("stockade_execs_total", ""),
                        Err(e) if e.kind() == crate::sandbox::ErrorKind::Internal => {
                            metrics.inc("stockade_failures_total", "op=\"exec\"");
                        }
                        Err(_) => {}
                    }
                    match result {
                        Ok(r) => {
                            let mut o = outcome(&r, oom, encoding);
                            o.kind = Some("exit".into());
                            line(&o)
                        }
                        Err(e) => {
                            let e = HttpError::from(e);
                            line(&StreamRecord {
                                kind: "error".into(),
                                data: None,
                                error: Some(ErrorDetail {
                                    code: e.code.into(),
                                    message: e.message,
                                    field: e.field,
                                }),
                            })
                        }
                    }
                }
            };
            if tx.send(bytes).await.is_err() {
                // The client hung up: the exec is killed.
                cancel.cancel(nix::sys::signal::Signal::SIGKILL as i32);
            }
        }
    });
    crate::serve::http::streamed("application/x-ndjson", body)
}
