//! `stockade image build|import|ls|rm`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use stockade::containerd::daemon::{connect_or_start, DaemonPaths};
use stockade::containerd::{Client, DEFAULT_NAMESPACE};
use stockade::images::{self, archive, build, human, Progress};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a base image from a recipe in rootfs/ (busybox, python).
    Build(BuildArgs),
    /// Import an OCI image layout or `docker save` tarball (gzip or not).
    Import(ImportArgs),
    /// List images.
    Ls(LsArgs),
    /// Remove an image (its content and snapshots go when nothing else uses them).
    Rm(RmArgs),
}

/// Where to find containerd.
#[derive(Debug, Clone, Args)]
pub struct ContainerdArgs {
    /// containerd socket [default: $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock;
    /// when neither is given and nothing answers, stockade's private containerd].
    #[arg(long, value_name = "SOCKET")]
    pub address: Option<PathBuf>,
    /// containerd namespace.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

impl ContainerdArgs {
    async fn connect(&self) -> Result<Client> {
        Ok(connect_or_start(
            self.address.as_deref(),
            &self.namespace,
            &DaemonPaths::system(),
        )
        .await?)
    }
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Recipe: busybox or python.
    pub recipe: String,
    /// Image name [default: the recipe's, i.e. stockade/<recipe>:latest].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball.
    pub file: PathBuf,
    /// Image name, replacing the one in the archive (which must then hold one image).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image names (bare names mean stockade/<name>:latest).
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

/// A spinner on stderr, shown only when stderr is a terminal.
struct Spinner {
    bar: Option<indicatif::ProgressBar>,
}

impl Spinner {
    fn new() -> Spinner {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            {
                b.set_style(style);
            }
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Spinner { bar }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for Spinner {
    fn stage(&self, message: &str) {
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
        }
    }
}

pub async fn run(cmd: ImageCommand) -> Result<u8> {
    match cmd {
        ImageCommand::Build(a) => {
            let client = a.containerd.connect().await?;
            let spinner = Spinner::new();
            let t = Instant::now();
            let report = build::build(
                &client,
                &a.recipe,
                a.name.as_deref(),
                &build::BuildHost::system(),
                &spinner,
            )
            .await;
            spinner.finish();
            let report = report?;
            println!(
                "{} {} chain {} ({} layer, {} unpacked, {} entries; rootfs {:.2}s, layer {:.2}s, store {:.2}s, total {:.2}s)",
                report.image.name,
                report.image.manifest_digest,
                report.image.chain_id,
                human(report.layer_size),
                human(report.uncompressed_size),
                report.entries,
                report.seconds_rootfs,
                report.seconds_layer,
                report.seconds_store,
                t.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        ImageCommand::Import(a) => {
            let client = a.containerd.connect().await?;
            let spinner = Spinner::new();
            let scratch = build::BuildHost::system().scratch;
            let refs =
                archive::import(&client, &a.file, a.name.as_deref(), &scratch, &spinner).await;
            spinner.finish();
            for r in refs? {
                println!("{} {} chain {}", r.name, r.manifest_digest, r.chain_id);
            }
            Ok(0)
        }
        ImageCommand::Ls(a) => {
            let client = a.containerd.connect().await?;
            let list = images::list(&client).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            let short = |d: &str| {
                d.strip_prefix("sha256:")
                    .unwrap_or(d)
                    .chars()
                    .take(12)
                    .collect::<String>()
            };
            let width = list.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
            println!(
                "{:width$}  {:12}  {:>10}  {:12}  CREATED",
                "NAME", "DIGEST", "SIZE", "CHAIN ID"
            );
            for i in &list {
                println!(
                    "{:width$}  {:12}  {:>10}  {:12}  {}",
                    i.name,
                    short(&i.digest),
                    human(i.size),
                    short(&i.chain_id),
                    i.created
                );
            }
            Ok(0)
        }
        ImageCommand::Rm(a) => {
            let client = a.containerd.connect().await?;
            for n in &a.names {
                let full = images::remove(&client, n).await?;
                println!("removed {full}");
            }
            Ok(0)
        }
    }
}
