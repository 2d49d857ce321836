//! The MCP tools: the table ([`TOOLS`]: name, description, input schema, handler), each
//! tool's arguments (serde, unknown fields refused) and how a result becomes MCP content.
//! Pure but for the handlers the table points at (in `calls`).
//!
//! A tool's JSON Schema is declared here and is what `tools/list` shows; the arguments are
//! read into the matching struct, which refuses what the schema refuses (a unit test holds
//! the two to the same examples). A refusal is a tool error ([`ToolError`]: one line naming
//! the argument), which an agent can read and correct, not a protocol error.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::policy::{parse_duration, Policy};
use crate::runner::Truncated;
use crate::serve::http_api::error::HttpError;

use super::McpServer;

/// A tool's handler: its arguments in, its structured result out.
pub type Handler = for<'a> fn(&'a McpServer, Value) -> BoxFuture<'a, Result<Value, ToolError>>;

/// One tool.
pub struct Tool {
    /// Its name, as `tools/call` gives it.
    pub name: &'static str,
    /// What it does, for the agent choosing it.
    pub description: &'static str,
    /// The JSON Schema of its arguments.
    pub input_schema: fn() -> Value,
    /// Runs it.
    pub call: Handler,
}

/// Every tool this server offers, in the order `tools/list` shows them. A tool is one
/// entry: its schema function here and its handler in `calls`.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "run_command",
        description: "Run a command in a new sandbox that is removed afterwards. Give `command` (a shell command line, run with /bin/sh -c) or `argv`. Returns exit_code, stdout, stderr and timed_out.",
        input_schema: run_command_schema,
        call: |s, a| Box::pin(super::calls::run_command(s, a)),
    },
    Tool {
        name: "create_sandbox",
        description: "Create a long-lived sandbox to run several commands in and keep files between them. Returns its id; pass the id (or its name) as `sandbox` to the other tools.",
        input_schema: create_sandbox_schema,
        call: |s, a| Box::pin(super::calls::create_sandbox(s, a)),
    },
    Tool {
        name: "exec",
        description: "Run a command in a sandbox made with create_sandbox. Give `command` (a shell command line, run with /bin/sh -c) or `argv`. Returns exit_code, stdout, stderr and timed_out.",
        input_schema: exec_schema,
        call: |s, a| Box::pin(super::calls::exec(s, a)),
    },
    Tool {
        name: "write_file",
        description: "Write a file in a sandbox (its directory must exist; an existing file is replaced).",
        input_schema: write_file_schema,
        call: |s, a| Box::pin(super::calls::write_file(s, a)),
    },
    Tool {
        name: "read_file",
        description: "Read a file of a sandbox (at most 1 MiB), as UTF-8 text or base64.",
        input_schema: read_file_schema,
        call: |s, a| Box::pin(super::calls::read_file(s, a)),
    },
    Tool {
        name: "list_files",
        description: "List a directory of a sandbox: each entry's name, kind, size, mode and modification time.",
        input_schema: list_files_schema,
        call: |s, a| Box::pin(super::calls::list_files(s, a)),
    },
    Tool {
        name: "list_sandboxes",
        description: "List the sandboxes this server made that are still alive.",
        input_schema: list_sandboxes_schema,
        call: |s, a| Box::pin(super::calls::list_sandboxes(s, a)),
    },
    Tool {
        name: "run_python",
        description: "Run Python code in a sandbox made with create_sandbox (its image must have python3, e.g. stockade/python). Variables, imports and functions live on between calls, like a notebook. Returns stdout, stderr, result (repr of the last expression), error (name, value, traceback), execution_count, timed_out and restarted (the interpreter was restarted and earlier state is gone).",
        input_schema: run_python_schema,
        call: |s, a| Box::pin(super::calls::run_python(s, a)),
    },
    Tool {
        name: "kill_sandbox",
        description: "Kill a sandbox and remove it with everything in it.",
        input_schema: kill_sandbox_schema,
        call: |s, a| Box::pin(super::calls::kill_sandbox(s, a)),
    },
];

/// The tool named `name`.
pub fn find(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

/// The largest file `read_file` returns: 1 MiB (an agent's context holds little more).
pub const MAX_READ: u64 = 1 << 20;

/// A tool call refused or failed: one line, starting with the argument at fault when one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError(pub String);

impl ToolError {
    /// `field: reason`.
    pub fn field(field: &str, reason: impl std::fmt::Display) -> ToolError {
        ToolError(format!("{field}: {reason}"))
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.replace(['\n', '\r'], " "))
    }
}

impl From<HttpError> for ToolError {
    fn from(e: HttpError) -> ToolError {
        match &e.field {
            Some(f) if !e.message.starts_with(f.as_str()) => ToolError::field(f, &e.message),
            _ => ToolError(e.message),
        }
    }
}

impl From<crate::sandbox::SandboxError> for ToolError {
    fn from(e: crate::sandbox::SandboxError) -> ToolError {
        HttpError::from(e).into()
    }
}

/// Reads a tool's arguments (`null` is no arguments).
pub fn args<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ToolError> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v).map_err(|e| {
        let text = e.to_string();
        match text.split('`').nth(1) {
            Some(f) if text.starts_with("unknown field") || text.starts_with("missing field") => {
                ToolError::field(f, text.split(',').next().unwrap_or(&text))
            }
            _ => ToolError::field("arguments", text),
        }
    })
}

/// How bytes travel in a tool's arguments and results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8 text. The default.
    #[default]
    Utf8,
    /// Standard base64 with padding.
    Base64,
}

/// `run_command`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCommand {
    /// A shell command line (`/bin/sh -c`). This or `argv`.
    pub command: Option<String>,
    /// The command and its arguments. This or `command`.
    pub argv: Option<Vec<String>>,
    /// Killed after this long (`30s`), at most the server's `limits.timeout`. Default: the
    /// server's.
    pub timeout: Option<String>,
    /// Standard input, as text. Default: none.
    pub stdin: Option<String>,
    /// Policy fields that tighten the server's (the policy file's, as JSON). Default: none.
    pub policy: Option<serde_json::Map<String, Value>>,
}

/// `run_python`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunPython {
    /// The sandbox's id or name. Required.
    pub sandbox: String,
    /// The cell's code. Required.
    pub code: String,
    /// Interrupted after this long, at most the sandbox's exec timeout. Default: that timeout.
    pub timeout: Option<String>,
}

/// `create_sandbox`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// A name to find it by. Default: none.
    pub name: Option<String>,
    /// Removed this long after creation (`10m`). Default: none (until killed or the server
    /// exits).
    pub lifetime: Option<String>,
    /// Removed after no exec for this long. Default: none.
    pub idle_timeout: Option<String>,
    /// As for `run_command`. Default: none.
    pub policy: Option<serde_json::Map<String, Value>>,
}

/// `exec`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// The sandbox's id or name. Required.
    pub sandbox: String,
    /// As for `run_command`.
    pub command: Option<String>,
    /// As for `run_command`.
    pub argv: Option<Vec<String>>,
    /// Killed after this long, at most the sandbox's exec timeout. Default: that timeout.
    pub timeout: Option<String>,
    /// Standard input, as text. Default: none.
    pub stdin: Option<String>,
    /// Working directory (absolute). Default: the sandbox's.
    pub cwd: Option<String>,
    /// `K=V` added to the environment. Default: none.
    #[serde(default)]
    pub env: Vec<String>,
}

/// `write_file`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// The sandbox's id or name. Required.
    pub sandbox: String,
    /// Absolute path of the file in the sandbox. Required.
    pub path: String,
    /// The file's content, in `encoding`. Required.
    pub content: String,
    /// Default `utf8`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// `read_file`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// The sandbox's id or name. Required.
    pub sandbox: String,
    /// Absolute path of the file in the sandbox. Required.
    pub path: String,
    /// How the content is returned. Default `utf8` (a file that is not UTF-8 is refused:
    /// ask for `base64`).
    #[serde(default)]
    pub encoding: Encoding,
}

/// `list_files`' arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListFiles {
    /// The sandbox's id or name. Required.
    pub sandbox: String,
    /// Absolute path of the directory in the sandbox. Required.
    pub path: String,
}

/// `kill_sandbox`'s arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxIn {
    /// The sandbox's id or name. Required.
    pub sandbox: String,
}

/// `list_sandboxes`' arguments: none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The command of `command` or `argv` (exactly one): a shell line runs as `/bin/sh -c`.
pub fn command_of(
    command: Option<String>,
    argv: Option<Vec<String>>,
) -> Result<Vec<String>, ToolError> {
    let argv = match (command, argv) {
        (Some(c), None) => {
            if c.trim().is_empty() {
                return Err(ToolError::field("command", "empty"));
            }
            vec!["/bin/sh".to_string(), "-c".to_string(), c]
        }
        (None, Some(a)) => {
            if a.first().is_none_or(String::is_empty) {
                return Err(ToolError::field("argv", "required, the command first"));
            }
            a
        }
        (Some(_), Some(_)) => {
            return Err(ToolError::field(
                "command",
                "give either command or argv, not both",
            ))
        }
        (None, None) => return Err(ToolError::field("command", "required (or argv)")),
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ToolError::field("argv", "contains a NUL byte"));
    }
    Ok(argv)
}

/// The request policy of `policy` (the policy file's fields, as JSON) with `timeout`
/// (a run's) as its `limits.timeout`; `None` when neither is given.
pub fn policy_of(
    policy: Option<serde_json::Map<String, Value>>,
    timeout: Option<&str>,
) -> Result<Option<Policy>, ToolError> {
    let mut p: Option<Policy> = policy
        .map(|v| {
            serde_json::from_value(Value::Object(v)).map_err(|e| ToolError::field("policy", e))
        })
        .transpose()?;
    if let Some(t) = timeout {
        parse_duration(t).map_err(|e| ToolError::field("timeout", format!("`{t}`: {e}")))?;
        let p = p.get_or_insert_with(Policy::default);
        if p.limits.timeout.is_some() {
            return Err(ToolError::field(
                "timeout",
                "given twice (also as policy.limits.timeout)",
            ));
        }
        p.limits.timeout = Some(t.to_string());
    }
    Ok(p)
}

/// What a command did, as `run_command` and `exec` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutput {
    /// The command's exit code; 124 when it timed out, 128+N when signal N ended it.
    pub exit_code: u8,
    /// Its stdout (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// It was killed at its timeout.
    pub timed_out: bool,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Which of stdout and stderr were cut at the output cap.
    pub truncated: Truncated,
}

impl From<crate::runner::RunResult> for CommandOutput {
    fn from(r: crate::runner::RunResult) -> CommandOutput {
        CommandOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            timed_out: r.timed_out,
            signal: r.signal,
            truncated: r.truncated,
        }
    }
}

impl From<crate::sandbox::ExecResult> for CommandOutput {
    fn from(r: crate::sandbox::ExecResult) -> CommandOutput {
        CommandOutput {
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            timed_out: r.timed_out,
            signal: r.signal,
            truncated: r.truncated,
        }
    }
}

/// A sandbox as `create_sandbox` and `list_sandboxes` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxView {
    /// Its id.
    pub id: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// `running`, `stopped`…
    pub state: String,
    /// Its image.
    pub image: String,
    /// When it was made (RFC 3339 UTC).
    pub created: String,
    /// When its lifetime ends, unix ms; none without a lifetime.
    pub expires_unix_ms: Option<u64>,
}

impl From<crate::sandbox::SandboxInfo> for SandboxView {
    fn from(i: crate::sandbox::SandboxInfo) -> SandboxView {
        SandboxView {
            id: i.id,
            name: i.name,
            state: crate::sandbox::main_process::state_name(i.state).to_string(),
            image: i.image,
            created: i.created,
            expires_unix_ms: i.expires_unix_ms,
        }
    }
}

/// A tool's result: the structured value, and the same as JSON text for clients that read
/// only text content.
pub fn success(structured: &Value) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false,
    })
}

/// A tool's failure: its one line as text, `isError` set.
pub fn failure(e: &ToolError) -> Value {
    json!({
        "content": [{"type": "text", "text": e.to_string()}],
        "isError": true,
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn sandbox_prop() -> Value {
    json!({"type": "string", "description": "The sandbox's id (from create_sandbox) or name."})
}

fn path_prop(what: &str) -> Value {
    json!({"type": "string", "description": format!("Absolute path of {what} in the sandbox.")})
}

fn policy_prop() -> Value {
    json!({
        "type": "object",
        "description": "Policy fields that tighten this server's policy, as in a stockade policy file (e.g. {\"limits\": {\"memory\": \"128Mi\"}, \"image\": \"stockade/busybox\"}). No limit may exceed the server's; host directories, capabilities and wider networks are refused. Default: the server's policy.",
    })
}

fn command_props(timeout: &str) -> serde_json::Map<String, Value> {
    let v = json!({
        "command": {"type": "string", "description": "A shell command line, run with /bin/sh -c. Give this or argv."},
        "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "The command and its arguments, run without a shell. Give this or command."},
        "timeout": {"type": "string", "description": timeout},
        "stdin": {"type": "string", "description": "Standard input, as text. Default: none."},
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

fn run_command_schema() -> Value {
    let mut p = command_props(
        "Kill it after this long (30s, 5m); at most the server policy's limits.timeout. Default: that timeout.",
    );
    p.insert("policy".into(), policy_prop());
    object(Value::Object(p), &[])
}

fn create_sandbox_schema() -> Value {
    object(
        json!({
            "name": {"type": "string", "description": "A name to find it by (letters, digits, _, ., -). Default: none."},
            "lifetime": {"type": "string", "description": "Remove it this long after creation (10m, 2h). Default: when killed or when this server exits."},
            "idle_timeout": {"type": "string", "description": "Remove it after no exec for this long. Default: none."},
            "policy": policy_prop(),
        }),
        &[],
    )
}

fn exec_schema() -> Value {
    let mut p = command_props(
        "Kill it after this long (30s); at most the sandbox's exec timeout. Default: that timeout.",
    );
    p.insert("sandbox".into(), sandbox_prop());
    p.insert(
        "cwd".into(),
        json!({"type": "string", "description": "Working directory (absolute). Default: the sandbox's."}),
    );
    p.insert(
        "env".into(),
        json!({"type": "array", "items": {"type": "string"}, "description": "K=V pairs added to the environment. Default: none."}),
    );
    object(Value::Object(p), &["sandbox"])
}

fn encoding_prop(what: &str) -> Value {
    json!({"type": "string", "enum": ["utf8", "base64"], "description": format!("How {what} is encoded. Default: utf8.")})
}

fn write_file_schema() -> Value {
    object(
        json!({
            "sandbox": sandbox_prop(),
            "path": path_prop("the file"),
            "content": {"type": "string", "description": "The file's content."},
            "encoding": encoding_prop("content"),
        }),
        &["sandbox", "path", "content"],
    )
}

fn read_file_schema() -> Value {
    object(
        json!({
            "sandbox": sandbox_prop(),
            "path": path_prop("the file"),
            "encoding": encoding_prop("the returned content"),
        }),
        &["sandbox", "path"],
    )
}

fn list_files_schema() -> Value {
    object(
        json!({"sandbox": sandbox_prop(), "path": path_prop("the directory")}),
        &["sandbox", "path"],
    )
}

fn list_sandboxes_schema() -> Value {
    object(json!({}), &[])
}

fn run_python_schema() -> Value {
    object(
        json!({
            "sandbox": sandbox_prop(),
            "code": {"type": "string", "description": "Python code; the value of its last line, when an expression, is returned as result."},
            "timeout": {"type": "string", "description": "Interrupt it after this long (30s); at most the sandbox's exec timeout. Default: that timeout."},
        }),
        &["sandbox", "code"],
    )
}

fn kill_sandbox_schema() -> Value {
    object(json!({"sandbox": sandbox_prop()}), &["sandbox"])
}

#[cfg(test)]
mod tests;
