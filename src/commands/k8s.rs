//! `stockade k8s render`: print the Kubernetes objects that run a policy's sandbox with the
//! same confinement as `stockade run`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::cli::PolicyArgs;
use stockade::k8s::{self, Kind, Options};

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the policy as Kubernetes YAML: node profile installer, RuntimeClass, and a Pod,
    /// Job, agent-sandbox SandboxTemplate or SandboxTemplate + SandboxWarmPool.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Name of the workload objects [default: stockade-sandbox].
    #[arg(long, default_value = k8s::DEFAULT_NAME)]
    pub name: String,
    /// Namespace of the workload objects.
    #[arg(long, default_value = k8s::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Name of the RuntimeClass the pod runs under.
    #[arg(long, default_value = k8s::DEFAULT_RUNTIME_CLASS)]
    pub runtime_class: String,
    /// CRI runtime handler of the RuntimeClass (a runtime of the node's containerd config).
    #[arg(long, default_value = k8s::DEFAULT_HANDLER)]
    pub runtime_handler: String,
    /// pod, job, sandbox-template or warm-pool.
    #[arg(long, default_value = "pod", value_parser = parse_kind)]
    pub kind: Kind,
    /// Sandboxes a warm pool keeps ready (--kind warm-pool).
    #[arg(long, default_value_t = k8s::DEFAULT_REPLICAS)]
    pub replicas: u32,
    /// The kubelet's root directory on the nodes (its seccomp profiles are under `seccomp/`).
    #[arg(long, value_name = "DIR", default_value = k8s::DEFAULT_KUBELET_DIR)]
    pub kubelet_dir: String,
    /// Image of the node installer DaemonSet (needs sh, mkdir, cp, chroot, sleep).
    #[arg(long, value_name = "IMAGE", default_value = k8s::DEFAULT_INSTALLER_IMAGE)]
    pub installer_image: String,
    /// Write the YAML to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The command and its arguments [default: the image's own].
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

pub async fn run(cmd: K8sCommand) -> Result<u8> {
    match cmd {
        K8sCommand::Render(args) => render(args),
    }
}

fn render(args: RenderArgs) -> Result<u8> {
    let policy = super::load_policy(&args.policy)?;
    let opts = Options {
        name: args.name,
        namespace: args.namespace,
        runtime_class: args.runtime_class,
        handler: args.runtime_handler,
        kind: args.kind,
        command: args.command,
        kubelet_dir: args.kubelet_dir,
        installer_image: args.installer_image,
        replicas: args.replicas,
    };
    let yaml = k8s::to_yaml(&k8s::render(&policy, &opts)?);
    match &args.output {
        Some(path) => std::fs::write(path, yaml)
            .with_context(|| format!("-o {}: cannot write", path.display()))?,
        None => print!("{yaml}"),
    }
    Ok(0)
}
