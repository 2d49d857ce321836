//! The native API's request and response bodies. Request bodies refuse unknown fields;
//! every default is documented on its field (and so in the OpenAPI document).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::policy::Policy;

/// `GET /v1/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the server answers.
    pub status: String,
}

/// `GET /v1/version`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    /// stockade's version.
    pub version: String,
    /// The API's version: `v1`.
    pub api: String,
}

/// `POST /v1/sandboxes`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// The sandbox's policy, with the policy file's fields (`image`, `limits.memory`,
    /// `network.mode`…); each field left out is the server's, and no limit may exceed the
    /// server's. Default: the server's policy.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Policy>,
    /// A name to find it by besides its id (letters, digits, `_`, `.`, `-`). Default: none.
    pub name: Option<String>,
    /// Removed this long after creation (`30s`, `10m`, `2h`). Default: none (until
    /// deleted or the server stops).
    pub lifetime: Option<String>,
    /// Removed after no exec for this long. Default: none.
    pub idle_timeout: Option<String>,
    /// Labels of the caller's. Default: none.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/sandboxes/{id}/extend`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendLifetime {
    /// How much longer it may live from now (`10m`). Required.
    pub by: String,
}

/// How bytes travel in JSON: as UTF-8 text (invalid bytes of output replaced) or base64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8 text. The default.
    #[default]
    Utf8,
    /// Standard base64 with padding.
    Base64,
}

/// `POST /v1/sandboxes/{id}/exec` and `/exec/stream`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The command and its arguments. Required, not empty.
    pub argv: Vec<String>,
    /// `K=V` added to the sandbox's environment. Default: none.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (absolute). Default: the sandbox's.
    pub cwd: Option<String>,
    /// `UID[:GID]` to run as. Default: the sandbox's user.
    pub user: Option<String>,
    /// Standard input, in `encoding`. Default: none (end of file).
    pub stdin: Option<String>,
    /// How `stdin` and the output are encoded. Default `utf8`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Killed after this long (`30s`), at most the sandbox's exec timeout. Default: the
    /// sandbox's exec timeout.
    pub timeout: Option<String>,
    /// Cap on each of stdout and stderr (`1Mi`), at most the sandbox's. Default: the
    /// sandbox's.
    pub max_output: Option<String>,
}

/// `POST /v1/run`: one command in a fresh sandbox, removed afterwards.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// As for a sandbox's create. Default: the server's policy.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Policy>,
    /// The command and its arguments. Required, not empty.
    pub argv: Vec<String>,
    /// Standard input, in `encoding`. Default: none.
    pub stdin: Option<String>,
    /// How `stdin` is encoded. Default `utf8`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// Which of stdout and stderr were cut at the output cap.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct TruncatedView {
    /// Stdout was cut.
    pub stdout: bool,
    /// Stderr was cut.
    pub stderr: bool,
}

/// How an exec ended: the non-streamed answer, and (without output, with
/// `"type": "exit"`) the last record of a stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecOutcome {
    /// `exit` in a stream.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The exec's id.
    pub exec_id: String,
    /// The command's code; 124 when the timeout killed it, 128+N for signal N.
    pub exit_code: u8,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The timeout killed it.
    pub timed_out: bool,
    /// The kernel's OOM killer killed a process of the sandbox while it ran.
    pub oom_killed: bool,
    /// Stdout in `encoding` (not in a stream, whose chunks carried it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Stderr in `encoding` (not in a stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// The encoding of the output.
    pub encoding: Encoding,
    /// Which streams were cut at the cap.
    pub truncated: TruncatedView,
    /// Bytes written to stdout, kept or not.
    pub stdout_bytes: u64,
    /// Bytes written to stderr, kept or not.
    pub stderr_bytes: u64,
    /// From the request to the exit, in milliseconds.
    pub duration_ms: f64,
}

/// One record of a streamed exec before its `exit`: a chunk of output, or the error that
/// ended the exec.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamRecord {
    /// `stdout`, `stderr` or `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The chunk, in the request's encoding (absent for `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// For `error`: what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorDetail>,
}

/// `GET /v1/sandboxes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxList {
    /// The caller's sandboxes, oldest first (as `GET /v1/sandboxes/{id}` shows each).
    #[schema(value_type = Vec<Object>)]
    pub sandboxes: Vec<crate::sandbox::SandboxInfo>,
}

/// A file in a sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileEntry {
    /// Its name (the last component).
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// Bytes (files), 0 otherwise.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, unix seconds.
    pub mtime: u64,
    /// Where a symbolic link points.
    pub link_target: Option<String>,
}

/// `GET /v1/sandboxes/{id}/files/list`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// The directory listed.
    pub path: String,
    /// Its entries, by name.
    pub entries: Vec<FileEntry>,
}

/// What a write or an archive upload took.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// Where.
    pub path: String,
    /// Entries written (1 for a file).
    pub entries: u64,
    /// Bytes of files written.
    pub bytes: u64,
}

/// `POST /v1/sandboxes/{id}/code`: one cell for the sandbox's interpreter, which keeps its
/// globals between calls.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    /// The code (at most 1 MiB); its last statement, when an expression, is the result.
    pub code: String,
    /// `python`, the only language. Default: `python`.
    pub language: Option<String>,
    /// Interrupted after this long (`30s`), at most the sandbox's exec timeout. Default: the
    /// sandbox's exec timeout.
    pub timeout: Option<String>,
}

/// An exception a cell raised.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CodeErrorView {
    /// Its class name (`ZeroDivisionError`); `InterpreterKilled` or `InterpreterExited`
    /// when the interpreter itself went.
    pub name: String,
    /// `str()` of it (`division by zero`).
    pub value: String,
    /// The formatted traceback.
    pub traceback: String,
}

/// What a cell did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CodeResult {
    /// What it wrote to stdout, capped at the sandbox's `max_output` bytes.
    pub stdout: String,
    /// What it wrote to stderr, likewise capped.
    pub stderr: String,
    /// The `repr` of its last expression; null when there is none or it is `None`.
    pub result: Option<String>,
    /// The exception it raised; null when none.
    pub error: Option<CodeErrorView>,
    /// The cell's number in its interpreter (1, 2, …; a new interpreter counts from 1).
    pub execution_count: u64,
    /// It outlived its timeout and was interrupted.
    pub timed_out: bool,
    /// The globals of earlier cells are gone: a new interpreter replaced one that exited
    /// or did not answer its interrupt.
    pub restarted: bool,
}

impl From<crate::sandbox::CodeOutcome> for CodeResult {
    fn from(o: crate::sandbox::CodeOutcome) -> CodeResult {
        CodeResult {
            stdout: o.stdout,
            stderr: o.stderr,
            result: o.result,
            error: o.error.map(|e| CodeErrorView {
                name: e.name,
                value: e.value,
                traceback: e.traceback,
            }),
            execution_count: o.execution_count,
            timed_out: o.timed_out,
            restarted: o.restarted,
        }
    }
}

/// `POST /v1/pools`: keep `size` sandboxes ready for one policy.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FillPool {
    /// Ready sandboxes to keep: at least 1; they count toward the token's quotas
    /// (sandboxes alive, and `size` × the policy's memory limit). Required.
    #[schema(minimum = 1)]
    pub size: usize,
    /// As for a sandbox's create: a run whose policy is this one exactly takes a ready
    /// sandbox. Default: the server's policy.
    #[schema(value_type = Option<Object>)]
    pub policy: Option<Policy>,
}

/// A pool of the caller's.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PoolView {
    /// The pool's id (`pool-…`).
    pub id: String,
    /// The image its sandboxes run.
    pub image: String,
    /// The hash of its policy: a run under a policy of the same hash may take a sandbox.
    pub policy_hash: String,
    /// Ready sandboxes it keeps.
    pub size: usize,
    /// Sandboxes ready now.
    pub ready: usize,
    /// Sandboxes being prepared now.
    pub preparing: usize,
    /// Runs that took a ready sandbox.
    pub taken: u64,
    /// Runs that found it empty (and ran cold).
    pub misses: u64,
    /// Memory the ready sandboxes hold (their waiting pid 1s and shims), in bytes.
    pub memory_bytes: u64,
    /// The last failure to prepare a sandbox, if any.
    pub last_error: Option<String>,
}

/// `GET /v1/pools`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolList {
    /// The caller's pools.
    pub pools: Vec<PoolView>,
}

/// `DELETE /v1/pools/{id}`: what the drain removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drained {
    /// The pool's id.
    pub id: String,
    /// Ready sandboxes removed.
    pub removed: usize,
}
