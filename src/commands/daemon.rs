//! `stockade daemon start|status|stop`: the private containerd stockade starts when no
//! containerd answers at the default socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use stockade::containerd::daemon::{self, DaemonPaths, STOP_GRACE};

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the private containerd (or find it running) and wait until it answers.
    Start(DaemonArgs),
    /// Say whether the private containerd is running, with its PID and version.
    Status(StatusArgs),
    /// Stop the private containerd: SIGTERM, then SIGKILL after a grace period.
    Stop(StopArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    /// Keep the daemon's root, state, socket and log under DIR instead of
    /// /var/lib/stockade/containerd, /run/stockade/containerd and /var/log/stockade.
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
}

impl DaemonArgs {
    fn paths(&self) -> DaemonPaths {
        match &self.base {
            Some(b) => DaemonPaths::under(b),
            None => DaemonPaths::system(),
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Seconds to wait after SIGTERM before SIGKILL [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
}

pub async fn run(cmd: DaemonCommand) -> Result<u8> {
    match cmd {
        DaemonCommand::Start(a) => {
            let paths = a.paths();
            let pid = daemon::ensure_running(&paths).await?;
            println!(
                "containerd running, pid {pid}, socket {}",
                paths.socket.display()
            );
            Ok(0)
        }
        DaemonCommand::Status(a) => {
            let s = daemon::status(&a.daemon.paths()).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                match (s.pid, &s.version) {
                    (Some(pid), Some(v)) => println!(
                        "running: pid {pid}, containerd {v}, socket {}",
                        s.socket.display()
                    ),
                    (Some(pid), None) => println!(
                        "starting or stuck: pid {pid} does not answer on {}",
                        s.socket.display()
                    ),
                    _ => println!("not running (socket {})", s.socket.display()),
                }
            }
            // Like `systemctl is-active`: 0 when running, 3 otherwise.
            Ok(if s.is_running() { 0 } else { 3 })
        }
        DaemonCommand::Stop(a) => {
            let grace = a.grace.map(Duration::from_secs).unwrap_or(STOP_GRACE);
            let paths = a.daemon.paths();
            let stopped =
                tokio::task::spawn_blocking(move || daemon::stop(&paths, grace)).await??;
            match stopped {
                Some(pid) => println!("stopped containerd pid {pid}"),
                None => println!("not running"),
            }
            Ok(0)
        }
    }
}
