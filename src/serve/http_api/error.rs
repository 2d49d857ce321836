//! The native API's errors: a status and `{"error": {"code", "message", "field"}}`, the
//! message one line, the field the request's (`policy.limits.memory`, `argv`, `path`…)
//! when one is at fault.

use hyper::{Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::policy::PolicyError;
use crate::sandbox::{ErrorKind, SandboxError};
use crate::serve::http::{json, Body};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`invalid`, `unauthorized`, `quota_exceeded`…).
    pub code: &'static str,
    /// One line for a person.
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `too_large`, `quota_exceeded`, `unsupported_media_type`, `no_interpreter` (the
    /// sandbox's image has no interpreter for the code's language), `interpreter_failed`,
    /// `internal`.
    pub code: String,
    /// One line for a person.
    pub message: String,
    /// The request field at fault (a JSON path like `policy.limits.memory`, or a query
    /// parameter), or null.
    pub field: Option<String>,
}

impl HttpError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> HttpError {
        self.field = Some(field.into());
        self
    }

    /// 400: the request is malformed.
    pub fn invalid(message: impl Into<String>) -> HttpError {
        HttpError::new(400, "invalid", message)
    }
    /// 401: no token, or a token not in the token file.
    pub fn unauthorized() -> HttpError {
        HttpError::new(
            401,
            "unauthorized",
            "a bearer token from the server's token file is required (Authorization: Bearer TOKEN)",
        )
    }
    /// 403: stockade will not grant what is asked.
    pub fn forbidden(message: impl Into<String>) -> HttpError {
        HttpError::new(403, "forbidden", message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(404, "not_found", message)
    }
    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> HttpError {
        HttpError::new(405, "method_not_allowed", message)
    }
    /// 409.
    pub fn conflict(message: impl Into<String>) -> HttpError {
        HttpError::new(409, "conflict", message)
    }
    /// 413: the body is larger than the server takes.
    pub fn too_large(limit: u64) -> HttpError {
        HttpError::new(
            413,
            "too_large",
            format!("the request body is larger than this server's limit of {limit} bytes"),
        )
    }
    /// 415.
    pub fn unsupported_media(message: impl Into<String>) -> HttpError {
        HttpError::new(415, "unsupported_media_type", message)
    }
    /// 429: a quota of the token's would be exceeded.
    pub fn quota(message: impl Into<String>) -> HttpError {
        HttpError::new(429, "quota_exceeded", message)
    }
    /// 500.
    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError::new(500, "internal", message)
    }

    /// The response, with the message on one line.
    pub fn response(&self) -> Response<Body> {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.replace(['\n', '\r'], " "),
                field: self.field.clone(),
            },
        };
        json(self.status, &body)
    }
}

impl From<SandboxError> for HttpError {
    fn from(e: SandboxError) -> HttpError {
        // An image the store does not have is the request's fault.
        if let SandboxError::Run(crate::runner::RunError::Image { .. }) = &e {
            return HttpError::invalid(format!("policy.image: {e}")).field("policy.image");
        }
        match &e {
            SandboxError::NoInterpreter { .. } => {
                return HttpError::new(409, "no_interpreter", e.to_string()).field("language")
            }
            SandboxError::Interpreter { .. } => {
                return HttpError::new(409, "interpreter_failed", e.to_string())
            }
            _ => {}
        }
        let field = match &e {
            SandboxError::Invalid { field, .. } => Some((*field).to_string()),
            SandboxError::Files { .. } | SandboxError::ReadOnly { .. } => Some("path".to_string()),
            _ => None,
        };
        let message = e.to_string();
        let mut out = match e.kind() {
            ErrorKind::Invalid => HttpError::invalid(message),
            ErrorKind::NotFound => HttpError::not_found(message),
            ErrorKind::Conflict => HttpError::conflict(message),
            ErrorKind::Forbidden => HttpError::forbidden(message),
            ErrorKind::Internal => HttpError::internal(message),
        };
        out.field = field;
        out
    }
}

/// A policy error as the request field it came from (`policy.limits.memory`).
pub fn from_policy(e: PolicyError) -> HttpError {
    match e {
        PolicyError::Field { ref origin, .. } => {
            let field = format!("policy.{origin}");
            HttpError::invalid(format!("policy.{e}")).field(field)
        }
        PolicyError::Parse { .. } => HttpError::invalid(e.to_string()).field("policy"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_error_is_one_json_line_with_code_message_and_field() {
        let e = HttpError::invalid("two\nlines").field("argv");
        let r = e.response();
        assert_eq!(r.status(), 400);
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "invalid", "message": "two lines", "field": "argv"}})
        );
    }

    #[test]
    fn a_policy_error_names_the_request_field() {
        let e = from_policy(PolicyError::Field {
            origin: "limits.memory".into(),
            message: "`lots`: not a size".into(),
        });
        assert_eq!(e.status, 400);
        assert_eq!(e.field.as_deref(), Some("policy.limits.memory"));
        assert_eq!(e.message, "policy.limits.memory: `lots`: not a size");
    }
}
