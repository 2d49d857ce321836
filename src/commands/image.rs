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
    /// Build a base image from a recipe in rootfs/ (busybox, python, node), or an image
    /// from a Dockerfile (-f DOCKERFILE -t NAME CONTEXT).
    Build(BuildArgs),
    /// Import an OCI image layout or `docker save` tarball (gzip or not).
    Import(ImportArgs),
    /// List images.
    Ls(LsArgs),
    /// Remove an image (its content and snapshots go when nothing else uses them).
    Rm(RmArgs),
    /// Pull an image from an OCI registry (busybox is docker.io/library/busybox:latest).
    Pull(PullArgs),
    /// Push a local image to the registry its name says.
    Push(PullArgs),
    /// Give an image another name (e.g. a registry's, before pushing).
    Tag(TagArgs),
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference: NAME[:TAG] or NAME@sha256:DIGEST, with an optional REGISTRY/ first.
    pub reference: String,
    /// User name for the registry [default: the registry's entry in the Docker config].
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password (or token) for --username from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Talk plain HTTP to this registry (must be the reference's registry).
    #[arg(long, value_name = "REGISTRY")]
    pub plain_http: Vec<String>,
    /// Accept any TLS certificate from this registry (must be the reference's registry).
    #[arg(long, value_name = "REGISTRY")]
    pub insecure: Vec<String>,
    /// Docker client config with registry credentials [default: $DOCKER_CONFIG/config.json,
    /// else ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Layers transferred at once.
    #[arg(long, value_name = "N", default_value_t = images::registry::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

impl PullArgs {
    fn options(&self) -> Result<images::registry::RegistryOptions> {
        let credentials = match &self.username {
            Some(user) => {
                let mut password = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)
                    .map_err(|e| anyhow::anyhow!("--password-stdin: {e}"))?;
                let password = password.trim_end_matches(['\n', '\r']).to_string();
                if password.is_empty() {
                    anyhow::bail!("--password-stdin: stdin held no password");
                }
                Some(images::registry::Credentials {
                    username: user.clone(),
                    password,
                })
            }
            None => None,
        };
        Ok(images::registry::RegistryOptions {
            plain_http: self.plain_http.clone(),
            insecure: self.insecure.clone(),
            credentials,
            docker_config: self.docker_config.clone(),
            concurrency: self.concurrency,
        })
    }
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to name.
    pub source: String,
    /// Its new name.
    pub target: String,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
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
    pub(super) async fn connect(&self) -> Result<Client> {
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
    /// A recipe (busybox, python, node); or, with -f (or when it is a directory holding a
    /// Dockerfile), the build context directory.
    #[arg(value_name = "RECIPE|CONTEXT")]
    pub target: String,
    /// Image name of a recipe build [default: the built-in name, stockade/<recipe>].
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub name: Option<String>,
    /// Build this Dockerfile with CONTEXT as its context [default with a context
    /// directory: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    pub file: Option<PathBuf>,
    /// Name of the image a Dockerfile build makes (required for one).
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tag: Option<String>,
    /// A build argument for an ARG of the Dockerfile.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_args: Vec<String>,
    /// Run every step of a Dockerfile build, using no cached layer.
    #[arg(long)]
    pub no_cache: bool,
    /// The layer cache of Dockerfile builds.
    #[arg(long, value_name = "DIR", default_value = images::build_dockerfile::DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Talk plain HTTP to this registry when FROM pulls (must be the image's registry).
    #[arg(long, value_name = "REGISTRY")]
    pub plain_http: Vec<String>,
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
    /// Image references (`busybox` is docker.io/library/busybox:latest; the built-in
    /// images are stockade/<recipe>).
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub containerd: ContainerdArgs,
}

/// A spinner on stderr, shown only when stderr is a terminal.
pub(super) struct Spinner {
    bar: Option<indicatif::ProgressBar>,
}

impl Spinner {
    pub(super) fn new() -> Spinner {
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
    pub(super) fn finish(&self) {
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
    fn line(&self, message: &str) {
        match &self.bar {
            Some(b) => b.println(message),
            None => eprintln!("{message}"),
        }
    }
}

/// The familiar form of a canonical name (`busybox:latest`), as Docker shows it.
pub(super) fn familiar(canonical: &str) -> String {
    images::Reference::parse(canonical)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| canonical.to_string())
}

/// One line on stderr when storing an image took its name from another.
pub(super) fn report_replaced(r: &images::ImageRef) {
    if let Some(old) = &r.replaced {
        eprintln!(
            "stockade: {}: replaced the image it named before ({old})",
            familiar(&r.name)
        );
    }
}

pub async fn run(cmd: ImageCommand) -> Result<u8> {
    match cmd {
        ImageCommand::Build(a) if super::image_build::is_dockerfile_build(&a) => {
            super::image_build::run(a).await
        }
        ImageCommand::Build(a) => {
            if a.tag.is_some() || !a.build_args.is_empty() || a.no_cache {
                anyhow::bail!(
                    "-t, --build-arg and --no-cache are for Dockerfile builds (-f DOCKERFILE CONTEXT); `{}` is a recipe, named with --name",
                    a.target
                );
            }
            let client = a.containerd.connect().await?;
            let spinner = Spinner::new();
            let t = Instant::now();
            let report = build::build(
                &client,
                &a.target,
                a.name.as_deref(),
                &build::BuildHost::system(),
                &spinner,
            )
            .await;
            spinner.finish();
            let report = report?;
            report_replaced(&report.image);
            println!(
                "{} {} chain {} ({} layer, {} unpacked, {} entries; rootfs {:.2}s, layer {:.2}s, store {:.2}s, total {:.2}s)",
                familiar(&report.image.name),
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
                report_replaced(&r);
                println!(
                    "{} {} chain {}",
                    familiar(&r.name),
                    r.manifest_digest,
                    r.chain_id
                );
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
            let width = list
                .iter()
                .map(|i| i.reference.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!(
                "{:width$}  {:12}  {:>10}  {:12}  CREATED",
                "NAME", "DIGEST", "SIZE", "CHAIN ID"
            );
            for i in &list {
                println!(
                    "{:width$}  {:12}  {:>10}  {:12}  {}",
                    i.reference,
                    short(&i.digest),
                    human(i.size),
                    short(&i.chain_id),
                    i.created
                );
            }
            Ok(0)
        }
        ImageCommand::Pull(a) => {
            let opts = a.options()?;
            let client = a.containerd.connect().await?;
            let spinner = Spinner::new();
            let t = Instant::now();
            let r = images::registry::pull(&client, &a.reference, &opts, &spinner).await;
            spinner.finish();
            let r = r?;
            report_replaced(&r);
            println!(
                "{} {} chain {} ({:.2}s)",
                familiar(&r.name),
                r.manifest_digest,
                r.chain_id,
                t.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        ImageCommand::Push(a) => {
            let opts = a.options()?;
            let client = a.containerd.connect().await?;
            let spinner = Spinner::new();
            let t = Instant::now();
            let p = images::registry::push(&client, &a.reference, &opts, &spinner).await;
            spinner.finish();
            let p = p?;
            println!(
                "{} {} ({} blobs sent, {} already there; {:.2}s)",
                familiar(&p.name),
                p.digest,
                p.uploaded,
                p.present,
                t.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        ImageCommand::Tag(a) => {
            let client = a.containerd.connect().await?;
            let r = images::tag(&client, &a.source, &a.target).await?;
            report_replaced(&r);
            println!("{} {}", familiar(&r.name), r.manifest_digest);
            Ok(0)
        }
        ImageCommand::Rm(a) => {
            let client = a.containerd.connect().await?;
            for n in &a.names {
                let full = images::remove(&client, n).await?;
                println!("removed {}", familiar(&full));
            }
            Ok(0)
        }
    }
}
