//! `stockade exec`: run a command in a live sandbox (see `stockade::sandbox::exec`) and exit
//! with its exit code, as `run` does. With `-t` the local terminal is put in raw mode for
//! the exec's duration and its window size is given at start and forwarded on every
//! SIGWINCH.

use anyhow::{Context, Result};
use clap::Args;

use stockade::policy::parse_duration;
use stockade::runner::{Cancel, Output};
use stockade::sandbox::{ExecRequest, Sandbox};

use super::sandbox::Place;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Forward stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal (stdout and stderr arrive merged).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Environment variable K=V added to the sandbox's (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox [default: the sandbox's].
    #[arg(long = "workdir", short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// UID[:GID] to run as; 0 only in a sandbox whose user is 0 [default: the sandbox's].
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Wall-clock limit of this exec; exit 124 when hit [default: the policy's timeout].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Print one JSON result document instead of streaming the output.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub place: Place,
    /// Sandbox id or name.
    #[arg(value_name = "ID|NAME")]
    pub sandbox: String,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `--timeout`, when given, as a duration.
pub(super) fn timeout_flag(timeout: Option<&str>) -> Result<Option<std::time::Duration>> {
    timeout
        .map(parse_duration)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--timeout: {e}"))
}

/// The live sandbox `id_or_name` at `place`.
pub(super) async fn live_sandbox(place: &Place, id_or_name: &str) -> Result<Sandbox> {
    let sandboxes = super::sandbox::sandboxes(place, None, None).await?;
    sandboxes
        .get(id_or_name)
        .await
        .map_err(super::sandbox::one_line)
}

pub async fn run(args: ExecArgs) -> Result<u8> {
    let timeout = timeout_flag(args.timeout.as_deref())?;
    let sb = live_sandbox(&args.place, &args.sandbox).await?;
    let cancel = Cancel::new();
    let signals = super::run::watch_signals(cancel.clone())?;
    let mut req = ExecRequest::new(args.command.clone());
    req.env = args.env.clone();
    req.cwd = args.workdir.clone();
    req.user = args.user.clone();
    req.tty = args.tty;
    req.timeout = timeout;
    req.cancel = Some(cancel);
    if args.interactive {
        req.stdin = super::run::stdin_chunks();
    }
    req.output = if args.json {
        Output::Capture
    } else {
        super::run::forwarded(args.tty)
    };
    let raw = if args.tty { RawTerminal::enter() } else { None };
    if args.tty {
        req.console_size = window_size();
        req.resize = Some(window_sizes()?);
    }
    let outcome = sb.exec(req).await;
    drop(raw);
    signals.abort();
    match outcome {
        Ok(result) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else if result.timed_out {
                eprintln!("stockade: {}: timed out, killed", args.command[0]);
            } else if result.truncated.stdout || result.truncated.stderr {
                eprintln!("stockade: output truncated at the sandbox's max output");
            }
            Ok(result.exit_code)
        }
        Err(e) => {
            eprintln!("stockade: {e}");
            Ok(e.exit_code())
        }
    }
}

/// The local terminal in raw mode, restored when dropped. `None` when stdin is not a
/// terminal.
struct RawTerminal {
    saved: rustix::termios::Termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use rustix::termios::{tcsetattr, OptionalActions};
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The local terminal's size (columns, rows), when stdout is one.
fn window_size() -> Option<(u16, u16)> {
    rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|w| w.ws_col > 0 && w.ws_row > 0)
        .map(|w| (w.ws_col, w.ws_row))
}

/// The local terminal's size after every SIGWINCH, as (columns, rows).
fn window_sizes() -> Result<tokio::sync::mpsc::Receiver<(u16, u16)>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut winch =
        signal(SignalKind::window_change()).context("installing the SIGWINCH handler")?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(s) = window_size() {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
