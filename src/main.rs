//! The `stockade` binary: parse arguments, set up logging, run one command, map the outcome
//! to an exit code. Errors from stockade itself exit 125 with one line on stderr.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// Exit code for failures of stockade itself (as `docker run` uses it).
const EXIT_STOCKADE_FAILED: u8 = 125;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    // clap's message is several lines; the first carries the reason.
                    let msg = e.to_string();
                    let first = msg.lines().next().unwrap_or("invalid arguments");
                    eprintln!("stockade: {}", first.trim_start_matches("error: "));
                    ExitCode::from(EXIT_STOCKADE_FAILED)
                }
            };
        }
    };
    init_tracing(cli.verbose.saturating_add(cli.v));

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stockade: starting the async runtime: {e}");
            return ExitCode::from(EXIT_STOCKADE_FAILED);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("stockade: {line}");
            ExitCode::from(EXIT_STOCKADE_FAILED)
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("STOCKADE_LOG") {
        Ok(f) => EnvFilter::new(f),
        Err(_) => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
