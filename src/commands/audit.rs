//! `stockade audit`: lint OCI runtime specs (files, bundles, stdin) or the live containers
//! of a containerd, print a table, JSON or SARIF, and exit 1 when `--fail-on` is met.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use stockade::audit::live::{self, Namespaces};
use stockade::audit::render::{self, Target};
use stockade::audit::{self as core, diff, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for people (coloured on a terminal unless NO_COLOR is set).
    Text,
    /// Machine-readable JSON.
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
    /// Markdown (only with --list-rules).
    Markdown,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Spec files (config.json), Kubernetes manifests (Pod, Job, CronJob, Deployment,
    /// StatefulSet, DaemonSet, ReplicaSet, agent-sandbox SandboxTemplate; YAML or JSON),
    /// bundle directories, or `-` for stdin; with --containerd,
    /// container ids (none: every container of the namespace).
    #[arg(value_name = "FILE|ID")]
    pub inputs: Vec<String>,
    /// Audit the live containers of a containerd through its Containers API.
    #[arg(long)]
    pub containerd: bool,
    /// containerd namespace to read with --containerd, e.g. default, k8s.io, stockade.
    // No `requires`: a value from the environment would make every file audit fail.
    #[arg(
        long,
        short = 'n',
        value_name = "NS",
        env = "CONTAINERD_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
    /// Read every namespace of the containerd (instead of --namespace).
    #[arg(long, requires = "containerd")]
    pub all_namespaces: bool,
    /// containerd socket [default: $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock].
    #[arg(long, value_name = "PATH", requires = "containerd")]
    pub address: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Exit 1 when a finding is at or above SEVERITY (critical, high, medium, low, info).
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    pub fail_on: Option<Severity>,
    /// Show only the security-relevant differences from OLD to NEW (files, bundles or `-`).
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with_all = ["inputs", "containerd"])]
    pub diff: Option<Vec<String>>,
    /// Print the rule catalog instead of auditing.
    #[arg(long, conflicts_with_all = ["inputs", "containerd", "diff"])]
    pub list_rules: bool,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    s.parse()
}

pub async fn run(args: AuditArgs) -> Result<u8> {
    if args.format == Format::Markdown && !args.list_rules {
        bail!("--format markdown is only for --list-rules");
    }
    if args.list_rules {
        return list_rules(args.format);
    }
    if let Some(pair) = &args.diff {
        return run_diff(&pair[0], &pair[1], &args);
    }
    let (targets, skipped) = if args.containerd {
        live_targets(&args).await?
    } else {
        if args.inputs.is_empty() {
            bail!("nothing to audit: give spec files, bundle directories, `-`, --containerd or --diff");
        }
        if args.inputs.iter().filter(|i| *i == "-").count() > 1 {
            bail!("`-` (stdin) given more than once");
        }
        let mut targets = Vec::with_capacity(args.inputs.len());
        for input in &args.inputs {
            let (source, text) = read_input(input)?;
            if core::k8s::is_manifest(&text) {
                // Kubernetes YAML: findings point into the manifest, without line numbers.
                let report =
                    core::k8s::audit_manifest_merged(&text).with_context(|| source.clone())?;
                targets.push(Target {
                    source,
                    text: None,
                    report,
                });
                continue;
            }
            let report = core::audit_json(&text).with_context(|| source.clone())?;
            targets.push(Target {
                source,
                text: Some(text),
                report,
            });
        }
        (targets, 0)
    };
    print!("{}", render_targets(&targets, args.format));
    if skipped > 0 {
        bail!("{skipped} container(s) could not be audited (see the warnings above)");
    }
    let failed = args.fail_on.is_some_and(|t| {
        targets
            .iter()
            .any(|x| x.report.at_or_above(t).next().is_some())
    });
    Ok(u8::from(failed))
}

fn render_targets(targets: &[Target], format: Format) -> String {
    match format {
        Format::Text => {
            let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            render::text(targets, colour)
        }
        Format::Json => pretty(&render::json(targets)),
        Format::Sarif => pretty(&render::sarif(targets)),
        Format::Markdown => unreachable!("rejected above"),
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("a JSON value serializes") + "\n"
}

/// Reads `input`: `-` is stdin, a directory is a bundle (its `config.json`), anything else a
/// spec file. Returns the name to show and the text.
fn read_input(input: &str) -> Result<(String, String)> {
    if input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("-: cannot read stdin")?;
        return Ok(("-".to_string(), text));
    }
    let path = Path::new(input);
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let name = file.display().to_string();
    let text = std::fs::read_to_string(&file).with_context(|| format!("{name}: cannot read"))?;
    Ok((name, text))
}

async fn live_targets(args: &AuditArgs) -> Result<(Vec<Target>, usize)> {
    let address = stockade::containerd::resolve_address(args.address.as_deref());
    let namespaces = if args.all_namespaces {
        Namespaces::All
    } else {
        Namespaces::One(args.namespace.clone())
    };
    let first_ns = match &namespaces {
        Namespaces::One(ns) => ns.as_str(),
        Namespaces::All => "default",
    };
    let client = stockade::containerd::Client::connect(&address, first_ns).await?;
    let specs = live::collect(&client, &namespaces, &args.inputs).await?;
    let mut targets = Vec::with_capacity(specs.len());
    let mut skipped = 0;
    for s in specs {
        let source = s.source();
        let Some(text) = s.spec else {
            eprintln!("stockade: warning: {source}: the container has no spec; skipped");
            skipped += 1;
            continue;
        };
        match core::audit_json(&text) {
            Ok(report) => targets.push(Target {
                source,
                text: Some(text),
                report,
            }),
            Err(e) => {
                eprintln!("stockade: warning: {source}: {e}; skipped");
                skipped += 1;
            }
        }
    }
    Ok((targets, skipped))
}

fn run_diff(old: &str, new: &str, args: &AuditArgs) -> Result<u8> {
    if old == "-" && new == "-" {
        bail!("--diff: `-` (stdin) given for both OLD and NEW");
    }
    let (old_name, old_text) = read_input(old)?;
    let (new_name, new_text) = read_input(new)?;
    let po = core::parse(&old_text).with_context(|| old_name.clone())?;
    let pn = core::parse(&new_text).with_context(|| new_name.clone())?;
    let d = diff::diff(&po, &pn);
    match args.format {
        Format::Text => print!("{}", diff::text(&old_name, &new_name, &d)),
        Format::Json => print!(
            "{}",
            pretty(&serde_json::json!({ "old": old_name, "new": new_name, "diff": d }))
        ),
        Format::Sarif => {
            // The findings NEW gains, as a SARIF log over NEW.
            let target = Target {
                source: new_name,
                text: Some(new_text),
                report: core::Report {
                    findings: d.new_findings.clone(),
                },
            };
            print!("{}", pretty(&render::sarif(&[target])));
        }
        Format::Markdown => unreachable!("rejected above"),
    }
    let failed = args
        .fail_on
        .is_some_and(|t| d.new_findings.iter().any(|f| f.severity >= t));
    Ok(u8::from(failed))
}

fn list_rules(format: Format) -> Result<u8> {
    match format {
        Format::Markdown => print!("{}", core::rules_markdown()),
        Format::Json => print!("{}", pretty(&serde_json::to_value(core::RULES)?)),
        Format::Text => {
            for r in core::RULES {
                println!("{:<12}  {:<8}  {}", r.id, r.severity.as_str(), r.title);
            }
        }
        Format::Sarif => bail!("--list-rules supports --format text, json or markdown"),
    }
    Ok(0)
}
