//! Sandboxes (create, list, get, delete, extend lifetime) and one-shot runs.

use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::HttpError;
use super::wire::{CreateSandbox, Encoding, ExtendLifetime, RunBody, SandboxList};
use super::{read_json, Answer, Caller, HttpApi, LABEL_TOKEN};
use crate::policy::{parse_duration, HostPolicyEnv};
use crate::runner::{RunRequest, Stdin};
use crate::sandbox::CreateRequest;
use crate::serve::http::json;

fn duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, HttpError> {
    text.map(|t| {
        parse_duration(t)
            .map_err(|e| HttpError::invalid(format!("{field}: `{t}`: {e}")).field(field))
    })
    .transpose()
}

/// Decodes `text` as `encoding` says; `field` names it in errors.
pub(super) fn decode(field: &str, text: &str, encoding: Encoding) -> Result<Vec<u8>, HttpError> {
    use base64::Engine;
    match encoding {
        Encoding::Utf8 => Ok(text.as_bytes().to_vec()),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| HttpError::invalid(format!("{field}: not base64: {e}")).field(field)),
    }
}

pub(super) fn check_argv(argv: &[String]) -> Result<(), HttpError> {
    if argv.first().is_none_or(String::is_empty) {
        return Err(HttpError::invalid("argv: required, the command first").field("argv"));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(HttpError::invalid("argv: contains a NUL byte").field("argv"));
    }
    Ok(())
}

/// `POST /v1/sandboxes` → 201 and the sandbox as `GET` shows it.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = CreateSandbox,
    responses(
        (status = 201, description = "Created", body = Object),
        (status = 400, description = "A field is malformed", body = super::error::ErrorBody),
        (status = 403, description = "A field asks for more than the server's policy grants", body = super::error::ErrorBody),
        (status = 409, description = "The name is taken", body = super::error::ErrorBody),
        (status = 429, description = "The token's quota is used up", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn create(api: &HttpApi, caller: &Caller, req: Request<Incoming>) -> Answer {
    let body: CreateSandbox = read_json(req).await?;
    let policy = super::policy::request_policy(&api.server, body.policy.as_ref(), &HostPolicyEnv)?;
    let lifetime = duration("lifetime", body.lifetime.as_deref())?;
    let idle_timeout = duration("idle_timeout", body.idle_timeout.as_deref())?;
    if body.labels.contains_key(LABEL_TOKEN) {
        return Err(
            HttpError::invalid(format!("labels: `{LABEL_TOKEN}` is reserved")).field("labels"),
        );
    }
    let reservation = api.ledger.reserve(&caller.token, policy.limits.memory)?;
    let mut labels = body.labels;
    labels.insert(LABEL_TOKEN.to_string(), caller.token.clone());
    let start = Instant::now();
    let made = api
        .sandboxes
        .create(CreateRequest {
            policy,
            name: body.name,
            lifetime,
            idle_timeout,
            labels,
            tty: false,
        })
        .await;
    api.metrics
        .observe("stockade_latency_seconds", "op=\"create\"", start.elapsed());
    let sb = match made {
        Ok(sb) => sb,
        Err(e) => {
            let e = HttpError::from(e);
            if e.status.is_server_error() {
                api.metrics.inc("stockade_failures_total", "op=\"create\"");
            }
            return Err(e);
        }
    };
    reservation.commit(sb.id());
    api.metrics
        .inc("stockade_sandbox_starts_total", "kind=\"sandbox\"");
    if lifetime.is_some() || idle_timeout.is_some() {
        api.keep(sb.id());
    }
    Ok(json(StatusCode::CREATED, &sb.inspect().await?))
}

/// `GET /v1/sandboxes`: the caller's sandboxes.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    responses((status = 200, description = "The caller's sandboxes", body = SandboxList)),
    security(("bearer" = [])))]
pub(super) async fn list(api: &HttpApi, caller: &Caller) -> Answer {
    let mine = api.ledger.owned(&caller.token);
    let sandboxes = api
        .sandboxes
        .list()
        .await?
        .into_iter()
        .filter(|s| mine.contains(&s.id))
        .collect();
    Ok(json(StatusCode::OK, &SandboxList { sandboxes }))
}

/// `GET /v1/sandboxes/{id}`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "The sandbox's id or name")),
    responses(
        (status = 200, description = "Its state, limits and usage", body = Object),
        (status = 404, description = "No such sandbox of the caller's", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get(api: &HttpApi, caller: &Caller, id: &str) -> Answer {
    let sb = api.owned(caller, id).await?;
    Ok(json(StatusCode::OK, &sb.inspect().await?))
}

/// `DELETE /v1/sandboxes/{id}`: kills and removes it.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "The sandbox's id or name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such sandbox of the caller's", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn delete(api: &HttpApi, caller: &Caller, id: &str) -> Answer {
    let sb = api.owned(caller, id).await?;
    let sid = sb.id().to_string();
    match sb.remove(true).await {
        Ok(()) | Err(crate::sandbox::SandboxError::NotFound(_)) => {}
        Err(e) => {
            api.metrics.inc("stockade_failures_total", "op=\"delete\"");
            return Err(e.into());
        }
    }
    api.ledger.release(&sid);
    Ok(crate::serve::http::status_only(StatusCode::NO_CONTENT))
}

/// `POST /v1/sandboxes/{id}/extend`: it may live `by` longer from now.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/extend", tag = "sandboxes",
    params(("id" = String, Path, description = "The sandbox's id or name")),
    request_body = ExtendLifetime,
    responses(
        (status = 200, description = "Its state with the new expiry", body = Object),
        (status = 400, description = "`by` is malformed", body = super::error::ErrorBody),
        (status = 404, description = "No such sandbox of the caller's", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn extend(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let mut sb = api.owned(caller, id).await?;
    let body: ExtendLifetime = read_json::<Option<ExtendLifetime>>(req)
        .await?
        .ok_or_else(|| HttpError::invalid("by: required").field("by"))?;
    let by = duration("by", Some(&body.by))?.unwrap_or_default();
    if by.is_zero() {
        return Err(HttpError::invalid("by: must be more than zero").field("by"));
    }
    let now = crate::runner::session::now_ms();
    let created = sb.record().created_unix_ms;
    let lifetime = Duration::from_millis(now.saturating_sub(created)) + by;
    sb.set_lifetime(lifetime)?;
    api.keep(sb.id());
    Ok(json(StatusCode::OK, &sb.inspect().await?))
}

/// `POST /v1/run`: one command in a fresh sandbox, removed afterwards; the answer is the
/// `stockade run --json` document. The sandbox is a ready one of the caller's pool for
/// this policy when there is one (`pooled: true`), else started cold (`pooled: false`).
#[utoipa::path(post, path = "/v1/run", tag = "run",
    request_body = RunBody,
    responses(
        (status = 200, description = "The command ran (whatever its exit code): the `stockade run --json` document; `pooled` says whether it took a ready sandbox of the caller's pool for this policy", body = Object),
        (status = 400, description = "A field is malformed, or the command is not found", body = super::error::ErrorBody),
        (status = 403, description = "The policy asks for more than the server grants", body = super::error::ErrorBody),
        (status = 429, description = "The token's quota is used up", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn run(api: &HttpApi, caller: &Caller, req: Request<Incoming>) -> Answer {
    let body: RunBody = read_json(req).await?;
    check_argv(&body.argv)?;
    let policy = super::policy::request_policy(&api.server, body.policy.as_ref(), &HostPolicyEnv)?;
    let stdin = match &body.stdin {
        Some(s) => Stdin::Bytes(decode("stdin", s, body.encoding)?),
        None => Stdin::Null,
    };
    let reservation = api.ledger.reserve(&caller.token, policy.limits.memory)?;
    let start = Instant::now();
    let pool = super::pools::matching(api, caller, &policy.hash()).await;
    let result = api
        .sandboxes
        .runner()
        .run_in_pool_or_cold(
            RunRequest::new(policy, body.argv).stdin(stdin),
            pool.as_ref(),
        )
        .await;
    drop(reservation);
    api.metrics
        .observe("stockade_latency_seconds", "op=\"run\"", start.elapsed());
    match result {
        Ok(r) => {
            api.metrics.inc("stockade_runs_total", "result=\"ok\"");
            let kind = if r.pooled { "run_pooled" } else { "run_cold" };
            api.metrics
                .inc("stockade_sandbox_starts_total", &format!("kind=\"{kind}\""));
            Ok(json(StatusCode::OK, &r))
        }
        Err(e) => {
            api.metrics.inc("stockade_runs_total", "result=\"failed\"");
            let e = HttpError::from(crate::sandbox::SandboxError::from(e));
            if e.status.is_server_error() {
                api.metrics.inc("stockade_failures_total", "op=\"run\"");
            }
            Err(e)
        }
    }
}
