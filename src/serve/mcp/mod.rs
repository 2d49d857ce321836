//! The MCP server (`stockade mcp`): Model Context Protocol over stdio (JSON-RPC 2.0, one
//! message a line on stdin and stdout; logs go to stderr), offering sandboxes as tools an
//! agent calls ([`tools::TOOLS`]), over the library's front door ([`Sandboxes`]).
//!
//! - The protocol: `initialize` (revisions [`PROTOCOL_VERSIONS`]; a client asking for
//!   another gets the newest), `ping`, `tools/list`, `tools/call`. Anything else is a
//!   JSON-RPC error (`-32601`), which is also how a client probing for later revisions
//!   learns to use `initialize`. Calls run concurrently; answers go out as they finish.
//! - The server's policy (`--policy`) is the default and the ceiling of every call: a call
//!   may tighten it (a `policy` argument, a `timeout`), never loosen it, by the HTTP API's
//!   rules (`http_api::policy`).
//! - At most `max_sandboxes` sandboxes and one-shot runs alive at once
//!   ([`DEFAULT_MAX_SANDBOXES`]).
//! - It drives only the sandboxes it made. They carry [`LABEL_SERVER`] (its pid) and it is
//!   their run directories' owner: when it exits they are removed, and a later server
//!   removes those of one that died ([`McpServer::reclaim_leftovers`]).

mod calls;
pub mod jsonrpc;
pub mod tools;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::sandbox::{Sandbox, Sandboxes};
use crate::serve::docker::create::ServerPolicy;
use crate::serve::http_api::quota::{Ledger, Quotas, Reservation};
use crate::serve::owned;
use jsonrpc::Message;
use tools::ToolError;

/// Label on every sandbox an MCP server made: the pid of that server.
pub const LABEL_SERVER: &str = "stockade-mcp.server";
/// Default of `--max-sandboxes`: sandboxes and one-shot runs alive at once, 8.
pub const DEFAULT_MAX_SANDBOXES: usize = 8;
/// The protocol revisions spoken, oldest first; the last is offered to a client that asks
/// for one not listed.
pub const PROTOCOL_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The longest message read: 16 MiB (a longer line is answered with a parse error and
/// skipped).
pub const MAX_MESSAGE: usize = 16 << 20;

/// The ledger's one holder: this server.
const OWNER: &str = "mcp";

/// The MCP server's state.
pub struct McpServer {
    sandboxes: Sandboxes,
    server: ServerPolicy,
    ledger: Arc<Ledger>,
    max_sandboxes: usize,
    initialized: AtomicBool,
    keepers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl McpServer {
    /// A server over `sandboxes` with `server`'s policy, holding at most `max_sandboxes`.
    pub fn new(sandboxes: Sandboxes, server: ServerPolicy, max_sandboxes: usize) -> McpServer {
        McpServer {
            sandboxes,
            server,
            ledger: Arc::new(Ledger::new(Quotas {
                max_sandboxes,
                max_memory: u64::MAX,
            })),
            max_sandboxes,
            initialized: AtomicBool::new(false),
            keepers: Mutex::new(HashMap::new()),
        }
    }

    /// The front door it drives.
    pub fn sandboxes(&self) -> &Sandboxes {
        &self.sandboxes
    }

    /// Reads messages from `input` until it ends or `stop` resolves, answering each on
    /// `output` (one line each). When the input ends, the calls in progress finish and
    /// answer first, unless `stop` resolves meanwhile: then they are dropped (a run of
    /// theirs is left to crash reclaim). What it made is listed by
    /// [`McpServer::owned_for_removal`].
    pub async fn serve<R, W>(
        self: Arc<Self>,
        input: R,
        output: W,
        stop: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
        let writer = tokio::spawn(async move {
            let mut output = output;
            while let Some(v) = rx.recv().await {
                let mut line = v.to_string();
                line.push('\n');
                if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err()
                {
                    break;
                }
            }
        });
        let mut input = input;
        let mut buf = Vec::new();
        let mut calls = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        let mut stopped = false;
        loop {
            let line = tokio::select! {
                l = read_line(&mut input, &mut buf) => l?,
                () = &mut stop => {
                    stopped = true;
                    break;
                }
            };
            let Some(line) = line else { break };
            let msg = match line {
                Line::TooLong => Message::Invalid(jsonrpc::error(
                    &Value::Null,
                    jsonrpc::PARSE_ERROR,
                    &format!("a message is at most {MAX_MESSAGE} bytes"),
                )),
                Line::Text(t) if t.trim().is_empty() => continue,
                Line::Text(t) => jsonrpc::parse(&t),
            };
            let this = self.clone();
            let tx = tx.clone();
            match msg {
                Message::Request { ref method, .. } if method == "tools/call" => {
                    // A call may take long: run it beside the reading.
                    calls.spawn(async move {
                        if let Some(answer) = this.answer(msg).await {
                            let _ = tx.send(answer);
                        }
                    });
                }
                _ => {
                    if let Some(answer) = this.answer(msg).await {
                        let _ = tx.send(answer);
                    }
                }
            }
        }
        if !stopped {
            // The input ended: calls in progress finish and answer, unless `stop` comes.
            tokio::select! {
                () = async { while calls.join_next().await.is_some() {} } => {}
                () = &mut stop => {}
            }
        }
        calls.abort_all();
        while calls.join_next().await.is_some() {}
        drop(tx);
        let _ = writer.await;
        Ok(())
    }

    /// The answer to one message (`None` for a notification or a stray response).
    pub async fn answer(&self, msg: Message) -> Option<Value> {
        let (id, method, params) = match msg {
            Message::Request { id, method, params } => (id, method, params),
            Message::Notification { method, .. } => {
                tracing::debug!("notification {method}");
                return None;
            }
            Message::Response => return None,
            Message::Invalid(answer) => return Some(answer),
        };
        let ready = self.initialized.load(Ordering::SeqCst);
        Some(match method.as_str() {
            "initialize" => {
                self.initialized.store(true, Ordering::SeqCst);
                jsonrpc::result(&id, initialize_result(&params))
            }
            "ping" => jsonrpc::result(&id, json!({})),
            "tools/list" | "tools/call" if !ready => jsonrpc::error(
                &id,
                jsonrpc::INVALID_REQUEST,
                &format!("{method}: call initialize first"),
            ),
            "tools/list" => jsonrpc::result(&id, tools_list()),
            "tools/call" => match call_params(&params) {
                Ok((tool, args)) => {
                    let r = (tool.call)(self, args).await;
                    if let Err(e) = &r {
                        tracing::info!("{}: {e}", tool.name);
                    }
                    jsonrpc::result(
                        &id,
                        match r {
                            Ok(v) => tools::success(&v),
                            Err(e) => tools::failure(&e),
                        },
                    )
                }
                Err(message) => jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &message),
            },
            _ => jsonrpc::error(
                &id,
                jsonrpc::METHOD_NOT_FOUND,
                &format!("{method}: no such method"),
            ),
        })
    }

    /// Reserves one of the sandboxes it may hold.
    fn reserve(&self, memory: u64) -> Result<Reservation, ToolError> {
        self.ledger.reserve(OWNER, memory).map_err(|_| {
            ToolError(format!(
                "this server already holds {} sandboxes and runs, its limit (--max-sandboxes); kill one first",
                self.max_sandboxes
            ))
        })
    }

    /// The sandbox `id` (or name) if this server made it.
    async fn owned(&self, id: &str) -> Result<Sandbox, ToolError> {
        owned::find(&self.sandboxes, &self.ledger, OWNER, id)
            .await?
            .ok_or_else(|| {
                ToolError::field("sandbox", format!("no sandbox `{id}` of this server's"))
            })
    }

    /// Starts keeping the lifetime and idle timeout of sandbox `id`.
    fn keep(&self, id: &str) {
        let handle = owned::spawn_keeper(&self.sandboxes, &self.ledger, id);
        self.keepers
            .lock()
            .expect("keepers lock")
            .insert(id.to_string(), handle);
    }

    /// The ids of the sandboxes it made that are alive, and stops keeping their deadlines
    /// (it is exiting: they are to be removed).
    pub fn owned_for_removal(&self) -> Vec<String> {
        for (_, h) in self.keepers.lock().expect("keepers lock").drain() {
            h.abort();
        }
        self.ledger.owned(OWNER)
    }

    /// Removes sandbox `id` (one this server made) here and now.
    pub async fn remove(&self, id: &str) {
        owned::remove(&self.sandboxes, &self.ledger, id).await;
    }

    /// Removes the sandboxes an MCP server left when it died (they carry
    /// [`LABEL_SERVER`] and their owner is dead). Those of live servers are left alone.
    /// Returns their ids.
    pub async fn reclaim_leftovers(&self) -> Vec<String> {
        let proc_root = self.sandboxes.runner().proc_root();
        owned::remove_leftovers(&self.sandboxes, |info, sb| {
            info.labels.contains_key(LABEL_SERVER) && !owned::owner_alive(sb, proc_root)
        })
        .await
    }
}

/// `initialize`'s result: the client's revision when spoken, else the newest.
fn initialize_result(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(PROTOCOL_VERSIONS[PROTOCOL_VERSIONS.len() - 1]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "stockade", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Each tool runs in a locked-down Linux sandbox bounded by this server's policy. Use run_command for one command; create_sandbox then exec, write_file, read_file and list_files to keep state between commands; kill_sandbox when done.",
    })
}

/// `tools/list`'s result.
fn tools_list() -> Value {
    let tools: Vec<Value> = tools::TOOLS
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "inputSchema": (t.input_schema)()}))
        .collect();
    json!({ "tools": tools })
}

/// The tool and arguments of a `tools/call`, or the protocol error's message.
fn call_params(params: &Value) -> Result<(&'static tools::Tool, Value), String> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or("params.name: required, the tool's name")?;
    let tool = tools::find(name).ok_or_else(|| format!("params.name: no tool `{name}`"))?;
    let args = params.get("arguments").cloned().unwrap_or(Value::Null);
    if !matches!(args, Value::Null | Value::Object(_)) {
        return Err("params.arguments: must be an object".into());
    }
    Ok((tool, args))
}

/// A line read, or one past [`MAX_MESSAGE`] (skipped to its end).
enum Line {
    Text(String),
    TooLong,
}

/// The next line of `input` (`None` at its end).
async fn read_line<R: AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match (buf.is_empty() && !too_long, too_long) {
                (true, _) => None,
                (false, true) => Some(Line::TooLong),
                (false, false) => Some(Line::Text(String::from_utf8_lossy(buf).into_owned())),
            });
        }
        let (take, end) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_MESSAGE {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        input.consume(if end { take + 1 } else { take });
        if end {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Text(String::from_utf8_lossy(buf).into_owned())
            }));
        }
    }
}

#[cfg(test)]
mod tests;
