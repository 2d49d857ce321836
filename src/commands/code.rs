//! `stockade code`: runs a cell of Python in a live sandbox's interpreter, whose globals
//! survive between calls (see `stockade::sandbox::code`). Prints what the cell wrote, then
//! its result as Python's REPL does, or the exception's traceback on stderr (exit 1).
//! Terminal control sequences in what the sandbox answers are neutralised when printed to
//! a terminal, as `run` does.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use stockade::runner::escapes::{locale_is_utf8, Neutralizer};
use stockade::sandbox::{CodeOutcome, CodeRequest};

#[derive(Debug, Args)]
pub struct CodeArgs {
    /// The code to run, instead of FILE.
    #[arg(short = 'c', value_name = "CODE", conflicts_with = "file")]
    pub code: Option<String>,
    /// Interrupt the cell after this long [default and most: the sandbox's exec timeout].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Print the outcome as one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub place: super::sandbox::Place,
    /// Sandbox id or name.
    #[arg(value_name = "ID|NAME")]
    pub sandbox: String,
    /// A file of code; without it (and without -c), or `-`, the code is read from stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

pub async fn run(args: CodeArgs) -> Result<u8> {
    let code = match (&args.code, &args.file) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) if p != Path::new("-") => {
            std::fs::read_to_string(p).with_context(|| p.display().to_string())?
        }
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the code from stdin")?;
            s
        }
    };
    let mut req = CodeRequest::new(code);
    req.timeout = super::exec::timeout_flag(args.timeout.as_deref())?;
    let sb = super::exec::live_sandbox(&args.place, &args.sandbox).await?;
    match sb.run_code(&req).await {
        Ok(o) if args.json => {
            println!("{}", serde_json::to_string_pretty(&o)?);
            Ok(u8::from(o.error.is_some()))
        }
        Ok(o) => {
            print_outcome(&o)?;
            Ok(u8::from(o.error.is_some()))
        }
        Err(e) => {
            eprintln!("stockade: {e}");
            Ok(e.exit_code())
        }
    }
}

/// `o` as Python shows it: output, the result's repr on stdout, the traceback on stderr.
fn print_outcome(o: &CodeOutcome) -> Result<()> {
    let mut out = o.stdout.clone();
    if let Some(r) = &o.result {
        out.push_str(r);
        out.push('\n');
    }
    let mut err = o.stderr.clone();
    if let Some(e) = &o.error {
        if e.traceback.is_empty() {
            err.push_str(&format!("{}: {}\n", e.name, e.value));
        } else {
            err.push_str(&e.traceback);
        }
    }
    let utf8 = locale_is_utf8();
    let shown = |text: &str, terminal: bool| match terminal {
        true => Neutralizer::all(utf8, text.as_bytes()),
        false => text.as_bytes().to_vec(),
    };
    std::io::stdout().write_all(&shown(&out, std::io::stdout().is_terminal()))?;
    std::io::stdout().flush()?;
    std::io::stderr().write_all(&shown(&err, std::io::stderr().is_terminal()))?;
    if o.restarted {
        eprintln!("stockade: the interpreter was restarted; earlier globals are lost");
    }
    Ok(())
}
