//! The tools' handlers: arguments read ([`super::tools`]), the request policy made by the
//! HTTP API's rules (`http_api::policy::request_policy`: tighten, never loosen), then the
//! library's front door ([`crate::sandbox::Sandboxes`], the runner).

use std::time::Duration;

use serde_json::{json, Value};

use super::tools::{
    args, command_of, policy_of, CommandOutput, CreateSandbox, Encoding, Exec, ListFiles, NoArgs,
    ReadFile, RunCommand, RunPython, SandboxIn, SandboxView, ToolError, WriteFile, MAX_READ,
};
use super::{McpServer, LABEL_SERVER};
use crate::policy::{format_duration, parse_duration, HostPolicyEnv};
use crate::runner::{RunRequest, Stdin};
use crate::sandbox::{CreateRequest, ExecRequest};
use crate::serve::http_api::{files, policy::request_policy};

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ToolError> {
    serde_json::to_value(v).map_err(|e| ToolError(format!("rendering the result: {e}")))
}

fn duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, ToolError> {
    text.map(|t| parse_duration(t).map_err(|e| ToolError::field(field, format!("`{t}`: {e}"))))
        .transpose()
}

fn stdin_of(s: Option<String>) -> Stdin {
    s.map_or(Stdin::Null, |s| Stdin::Bytes(s.into_bytes()))
}

/// `run_command`: one command in a fresh sandbox, removed afterwards.
pub(super) async fn run_command(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: RunCommand = args(a)?;
    let argv = command_of(a.command, a.argv)?;
    if let Some(t) = duration("timeout", a.timeout.as_deref())? {
        let max = s.server.ceiling.limits.timeout;
        if t > max || t.is_zero() {
            return Err(ToolError::field(
                "timeout",
                format!(
                    "`{}` is zero or above this server's ceiling of {}",
                    a.timeout.as_deref().unwrap_or_default(),
                    format_duration(max)
                ),
            ));
        }
    }
    let policy = policy_of(a.policy, a.timeout.as_deref())?;
    let policy = request_policy(&s.server, policy.as_ref(), &HostPolicyEnv)?;
    let reservation = s.reserve(policy.limits.memory)?;
    let result = s
        .sandboxes
        .runner()
        .run(RunRequest::new(policy, argv).stdin(stdin_of(a.stdin)))
        .await;
    drop(reservation);
    let r = result.map_err(|e| ToolError::from(crate::sandbox::SandboxError::from(e)))?;
    to_value(&CommandOutput::from(r))
}

/// `create_sandbox`.
pub(super) async fn create_sandbox(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: CreateSandbox = args(a)?;
    let lifetime = duration("lifetime", a.lifetime.as_deref())?;
    let idle_timeout = duration("idle_timeout", a.idle_timeout.as_deref())?;
    let policy = policy_of(a.policy, None)?;
    let policy = request_policy(&s.server, policy.as_ref(), &HostPolicyEnv)?;
    let reservation = s.reserve(policy.limits.memory)?;
    let mut req = CreateRequest::new(policy);
    req.name = a.name;
    req.lifetime = lifetime;
    req.idle_timeout = idle_timeout;
    req.labels
        .insert(LABEL_SERVER.to_string(), std::process::id().to_string());
    let sb = s.sandboxes.create(req).await?;
    reservation.commit(sb.id());
    if lifetime.is_some() || idle_timeout.is_some() {
        s.keep(sb.id());
    }
    tracing::info!("created sandbox {}", sb.id());
    to_value(&SandboxView::from(sb.inspect().await?))
}

/// `exec`: a command in a sandbox of this server's.
pub(super) async fn exec(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: Exec = args(a)?;
    let argv = command_of(a.command, a.argv)?;
    let sb = s.owned(&a.sandbox).await?;
    let limits = sb.record().limits;
    let mut req = ExecRequest::new(argv);
    req.env = a.env;
    req.cwd = a.cwd;
    req.stdin = stdin_of(a.stdin);
    if let Some(t) = duration("timeout", a.timeout.as_deref())? {
        if t.as_millis() > u128::from(limits.exec_timeout_ms) || t.is_zero() {
            return Err(ToolError::field(
                "timeout",
                format!(
                    "`{}` is zero or above the sandbox's exec timeout of {}",
                    a.timeout.as_deref().unwrap_or_default(),
                    format_duration(Duration::from_millis(limits.exec_timeout_ms))
                ),
            ));
        }
        req.timeout = Some(t);
    }
    to_value(&CommandOutput::from(sb.exec(req).await?))
}

/// `write_file`.
pub(super) async fn write_file(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: WriteFile = args(a)?;
    let data = match a.encoding {
        Encoding::Utf8 => a.content.into_bytes(),
        Encoding::Base64 => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&a.content)
                .map_err(|e| ToolError::field("content", format!("not base64: {e}")))?
        }
    };
    let sb = s.owned(&a.sandbox).await?;
    let w = files::write_file(&sb, a.path, &data).await?;
    Ok(json!({"path": w.path, "bytes": data.len()}))
}

/// `read_file`.
pub(super) async fn read_file(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: ReadFile = args(a)?;
    let sb = s.owned(&a.sandbox).await?;
    let data = files::read_file(&sb, &a.path, MAX_READ).await?;
    let bytes = data.len();
    let content = match a.encoding {
        Encoding::Utf8 => String::from_utf8(data).map_err(|_| {
            ToolError::field(
                "path",
                format!(
                    "`{}` is not UTF-8 text; read it with encoding base64",
                    a.path
                ),
            )
        })?,
        Encoding::Base64 => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(data)
        }
    };
    Ok(json!({"path": a.path, "content": content, "encoding": a.encoding, "bytes": bytes}))
}

/// `list_files`.
pub(super) async fn list_files(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: ListFiles = args(a)?;
    let sb = s.owned(&a.sandbox).await?;
    let entries = files::list_dir(&sb, &a.path).await?;
    Ok(json!({"path": a.path, "entries": to_value(&entries)?}))
}

/// `list_sandboxes`: this server's live sandboxes.
pub(super) async fn list_sandboxes(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let NoArgs {} = args(a)?;
    let mine = s.ledger.owned(super::OWNER);
    let sandboxes: Vec<SandboxView> = s
        .sandboxes
        .list()
        .await?
        .into_iter()
        .filter(|i| mine.contains(&i.id))
        .map(SandboxView::from)
        .collect();
    Ok(json!({"sandboxes": to_value(&sandboxes)?}))
}

/// `kill_sandbox`: kills and removes it.
pub(super) async fn kill_sandbox(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: SandboxIn = args(a)?;
    let sb = s.owned(&a.sandbox).await?;
    let id = sb.id().to_string();
    match sb.remove(true).await {
        Ok(()) | Err(crate::sandbox::SandboxError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    s.ledger.release(&id);
    tracing::info!("removed sandbox {id}");
    Ok(json!({"id": id, "removed": true}))
}

/// `run_python`: a cell in the sandbox's interpreter, made and checked as the HTTP API's
/// `POST /v1/sandboxes/{id}/code` makes it.
pub(super) async fn run_python(s: &McpServer, a: Value) -> Result<Value, ToolError> {
    let a: RunPython = args(a)?;
    let sb = s.owned(&a.sandbox).await?;
    let body = crate::serve::http_api::wire::CodeBody {
        code: a.code,
        language: None,
        timeout: a.timeout,
    };
    let cell = crate::serve::http_api::code::request(&sb, body)?;
    let outcome = sb.run_code(&cell).await?;
    to_value(&crate::serve::http_api::wire::CodeResult::from(outcome))
}
