//! The code interpreter: `POST /v1/sandboxes/{id}/code` runs one cell in the sandbox's
//! interpreter ([`crate::sandbox::Sandbox::run_code`]), whose globals survive between
//! calls; calls to one sandbox take turns.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::HttpError;
use super::exec::timeout_within;
use super::wire::{CodeBody, CodeResult};
use super::{read_json, Answer, Caller, HttpApi};
use crate::sandbox::{CodeLanguage, CodeRequest, Sandbox};
use crate::serve::http::json;

/// The cell of `body`, within the sandbox's limits.
/// The cell a request asks for, checked against the sandbox: the language known, the timeout
/// within its exec timeout. The MCP server's `run_python` makes its cells here too.
pub(crate) fn request(sb: &Sandbox, body: CodeBody) -> Result<CodeRequest, HttpError> {
    let limits = sb.record().limits;
    let mut req = CodeRequest::new(body.code);
    if let Some(l) = &body.language {
        req.language = CodeLanguage::parse(l)?;
    }
    if let Some(t) = &body.timeout {
        req.timeout = Some(timeout_within(t, &limits)?);
    }
    Ok(req)
}

/// The label of `stockade_code_runs_total` for an outcome.
fn result_label(r: &Result<crate::sandbox::CodeOutcome, HttpError>) -> &'static str {
    match r {
        Ok(o) if o.restarted => "restarted",
        Ok(o) if o.timed_out => "timeout",
        Ok(o) if o.error.is_some() => "error",
        Ok(_) => "ok",
        Err(_) => "failed",
    }
}

/// `POST /v1/sandboxes/{id}/code`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/code", tag = "code",
    params(("id" = String, Path, description = "The sandbox's id or name")),
    request_body = CodeBody,
    responses(
        (status = 200, description = "The cell ran (its exception, if any, is in `error`)", body = CodeResult),
        (status = 400, description = "A field is malformed, or the language is not one stockade runs", body = super::error::ErrorBody),
        (status = 403, description = "timeout above the sandbox's", body = super::error::ErrorBody),
        (status = 404, description = "No such sandbox of the caller's", body = super::error::ErrorBody),
        (status = 409, description = "The sandbox is not running, its image has no interpreter (`no_interpreter`), or its interpreter failed (`interpreter_failed`)", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn run(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let sb = api.owned(caller, id).await?;
    let body: CodeBody = read_json(req).await?;
    let cell = request(&sb, body)?;
    let started = Instant::now();
    // On a task of its own: a client that hangs up does not cut the cell (and its exec's
    // cleanup) short; the next cell waits its turn behind it.
    let result = tokio::spawn(async move { sb.run_code(&cell).await })
        .await
        .map_err(|e| HttpError::internal(format!("the cell's task failed: {e}")))?
        .map_err(HttpError::from);
    api.metrics
        .observe("stockade_latency_seconds", "op=\"code\"", started.elapsed());
    api.metrics.inc(
        "stockade_code_runs_total",
        &format!("result=\"{}\"", result_label(&result)),
    );
    if result.as_ref().is_err_and(|e| e.status.is_server_error()) {
        api.metrics.inc("stockade_failures_total", "op=\"code\"");
    }
    Ok(json(StatusCode::OK, &CodeResult::from(result?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::{CodeError, CodeOutcome};

    #[test]
    fn each_outcome_has_one_result_label() {
        let ok = CodeOutcome {
            stdout: String::new(),
            stderr: String::new(),
            result: None,
            error: None,
            execution_count: 1,
            timed_out: false,
            restarted: false,
        };
        let error = CodeOutcome {
            error: Some(CodeError {
                name: "E".into(),
                value: String::new(),
                traceback: String::new(),
            }),
            ..ok.clone()
        };
        let timeout = CodeOutcome {
            timed_out: true,
            ..error.clone()
        };
        let restarted = CodeOutcome {
            restarted: true,
            ..timeout.clone()
        };
        let cases = [
            (Ok(ok), "ok"),
            (Ok(error), "error"),
            (Ok(timeout), "timeout"),
            (Ok(restarted), "restarted"),
            (Err(HttpError::conflict("x")), "failed"),
        ];
        for (r, want) in cases {
            assert_eq!(result_label(&r), want);
        }
    }
}
