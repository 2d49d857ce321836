//! `stockade mcp`: the MCP server on stdin and stdout (see `stockade::serve::mcp`), its
//! logs on stderr. It stops when stdin ends or at SIGTERM or SIGINT; the sandboxes it made
//! are then handed to detached `stockade rm -f ID` helpers (own process group, recorded as
//! each sandbox's owner), so they are removed even when the client kills this process a
//! moment after closing its stdin. At start it removes what a crashed server left.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use tokio::io::AsyncWriteExt;

use stockade::serve::mcp::{McpServer, DEFAULT_MAX_SANDBOXES};

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The server's policy (TOML): the default and the ceiling of every tool call
    /// [default: the built-in defaults].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Sandboxes and one-shot runs alive at once [default: 8].
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SANDBOXES)]
    pub max_sandboxes: usize,
    /// OCI runtime binary the runc shim drives instead of runc [default: runc].
    #[arg(long, value_name = "BIN", env = "STOCKADE_RUNC_BINARY")]
    pub runc_binary: Option<String>,
    #[command(flatten)]
    pub place: super::sandbox::Place,
}

pub async fn run(args: McpArgs) -> Result<u8> {
    let server = super::serve::server_policy(args.policy.as_deref(), Vec::new())?;
    for w in &server.ceiling.warnings {
        tracing::warn!("{w}");
    }
    let sandboxes = super::serve::server_sandboxes(&args.place, args.runc_binary.clone()).await?;
    let mcp = Arc::new(McpServer::new(
        sandboxes.clone(),
        server,
        args.max_sandboxes,
    ));
    for id in mcp.reclaim_leftovers().await {
        tracing::info!("removed {id}, left by an MCP server that died");
    }
    tracing::info!("serving MCP on stdin and stdout");

    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    };
    let served = mcp
        .clone()
        .serve(
            tokio::io::BufReader::new(stdin()),
            tokio::io::stdout(),
            stop,
        )
        .await;
    let mut out = tokio::io::stdout();
    let _ = out.flush().await;
    for id in mcp.owned_for_removal() {
        let rm: [&std::ffi::OsStr; 5] = [
            "rm".as_ref(),
            "-f".as_ref(),
            id.as_ref(),
            "--init-dir".as_ref(),
            args.place.init_dir.as_os_str(),
        ];
        let c = sandboxes.runner().containerd();
        if let Err(e) = super::spawn_run_owner(&rm, c.as_ref(), &args.place.fifo_root, &id) {
            tracing::warn!("starting the removal of {id}: {e}; removing it here");
            mcp.remove(&id).await;
        }
    }
    sandboxes.runner().wait_cleanups().await;
    served.context("reading stdin")?;
    Ok(0)
}

/// Stdin as an async reader, read on a thread of its own: a read blocked on stdin must
/// not keep the process from exiting (a blocking-pool read would hold the runtime's
/// shutdown until the client wrote or closed).
fn stdin() -> tokio::io::DuplexStream {
    let (mut w, r) = tokio::io::duplex(64 << 10);
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
                Ok(n) => {
                    if handle.block_on(w.write_all(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    r
}
