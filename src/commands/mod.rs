//! One module per subcommand: its arguments and its handler. Handlers return the process
//! exit code; an `Err` becomes exit 125 with a one-line message.

pub mod apparmor;
pub mod audit;
#[cfg(feature = "bench")]
pub mod bench;
mod client_writer;
pub mod code;
pub mod cp;
pub mod daemon;
pub mod doctor;
pub mod exec;
pub mod gc;
pub mod image;
mod image_build;
pub mod k8s;
pub mod mcp;
pub mod network;
pub mod pool;
pub mod run;
mod run_served;
pub mod sandbox;
pub mod seccomp;
pub mod serve;
pub mod spec;

use anyhow::{Context, Result};

use crate::cli::{Cli, Command, PolicyArgs};
use stockade::containerd::Client;
use stockade::images::config_merge::{self, Requested};
use stockade::images::ImageConfig;
use stockade::policy::{
    BindMount, HostPolicyEnv, Policy, PolicyOverrides, TmpfsMount, ValidatedPolicy, DEFAULT_IMAGE,
};

/// Runs the chosen subcommand.
pub async fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run(a) => run::run(a).await,
        Command::Spec(a) => spec::run(a).await,
        Command::Audit(a) => audit::run(a).await,
        Command::Image(a) => image::run(a).await,
        Command::K8s(a) => k8s::run(a).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Seccomp(a) => seccomp::run(a).await,
        Command::Apparmor(a) => apparmor::run(a).await,
        Command::Network(a) => network::run(a).await,
        Command::Gc(a) => gc::run(a).await,
        Command::Daemon(a) => daemon::run(a).await,
        #[cfg(feature = "bench")]
        Command::Bench(a) => bench::run(a).await,
        Command::Pool(a) => pool::run(a).await,
        Command::Create(a) => sandbox::create(a).await,
        Command::Exec(a) => exec::run(a).await,
        Command::Code(a) => code::run(a).await,
        Command::Cp(a) => cp::run(a).await,
        Command::Ls(a) => sandbox::ls(a).await,
        Command::Inspect(a) => sandbox::inspect(a).await,
        Command::Stop(a) => sandbox::stop(a).await,
        Command::Rm(a) => sandbox::rm(a).await,
        Command::Serve(a) => serve::run(a).await,
        Command::Mcp(a) => mcp::run(a).await,
        Command::SandboxKeeper(a) => sandbox::keeper(a).await,
    }
}

/// The policy in `--policy FILE` and the file's name for messages; the default policy
/// without one.
pub fn read_policy(path: Option<&std::path::Path>) -> Result<(Policy, Option<String>)> {
    match path {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--policy {name}: cannot read"))?;
            Ok((Policy::from_toml(&text, &name)?, Some(name)))
        }
        None => Ok((Policy::default(), None)),
    }
}

/// Reads the policy file (if any), applies the flags and validates the result. Warnings
/// about loosened protections go to stderr. For a sandbox on an image whose config counts
/// (`run`, `create`, `pool fill`), see [`PolicyInputs::with_image`].
pub fn load_policy(args: &PolicyArgs) -> Result<ValidatedPolicy> {
    policy_inputs(args)?.validate()
}

/// A policy file read and the flags parsed, not yet validated: what an image's config is
/// merged into.
#[derive(Debug, Clone)]
pub struct PolicyInputs {
    pub policy: Policy,
    /// The policy file's name, for messages.
    pub file: Option<String>,
    pub overrides: PolicyOverrides,
}

/// Reads the policy file (if any) and parses the flags (`-v`, `--tmpfs`).
pub fn policy_inputs(args: &PolicyArgs) -> Result<PolicyInputs> {
    let (policy, file) = read_policy(args.policy.as_deref())?;
    let mounts = args
        .volume
        .iter()
        .map(|v| BindMount::parse(v).map_err(|e| anyhow::anyhow!("-v: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let tmpfs = args
        .tmpfs
        .iter()
        .map(|v| TmpfsMount::parse(v).map_err(|e| anyhow::anyhow!("--tmpfs: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let overrides = PolicyOverrides {
        image: args.image.clone(),
        memory: args.memory.clone(),
        cpus: args.cpus.clone(),
        pids: args.pids.clone(),
        timeout: args.timeout.clone(),
        network: args.network.clone(),
        allow: args.allow.clone(),
        publish: args.publish.clone(),
        workspace: args.workspace.clone(),
        input: args.input.clone(),
        env: args.env.clone(),
        user: args.user.clone(),
        max_output: args.max_output.clone(),
        cap_add: args.cap_add.clone(),
        seccomp: args.seccomp.clone(),
        apparmor: args.apparmor.clone(),
        read_write_root: args.read_write_root,
        disk: args.disk.clone(),
        workspace_size: args.workspace_size.clone(),
        mounts,
        tmpfs,
        cwd: args.workdir.clone(),
        workspace_owner: args.workspace_owner.clone(),
    };
    Ok(PolicyInputs {
        policy,
        file,
        overrides,
    })
}

impl PolicyInputs {
    /// The image the sandbox starts from: `--image`, else the policy's, else the default.
    pub fn image(&self) -> &str {
        self.overrides
            .image
            .as_deref()
            .or(self.policy.image.as_deref())
            .unwrap_or(DEFAULT_IMAGE)
    }

    /// Merges the config of the image from stockade's store ([`config_merge`]): with
    /// `requested`, the command too (returned; empty without). Warnings (an image USER not
    /// granted, say) go to stderr.
    pub async fn with_image(
        self,
        client: &Client,
        requested: Option<&Requested>,
    ) -> Result<(PolicyInputs, Vec<String>)> {
        let image = stockade::images::resolve(client, self.image()).await?;
        self.merge(&image.config, requested)
    }

    /// [`PolicyInputs::with_image`] with the image's config already read.
    pub fn merge(
        self,
        config: &ImageConfig,
        requested: Option<&Requested>,
    ) -> Result<(PolicyInputs, Vec<String>)> {
        let (inputs, argv, warnings) = self.merge_quiet(config, requested)?;
        for w in &warnings {
            eprintln!("stockade: warning: {w}");
        }
        Ok((inputs, argv))
    }

    /// [`PolicyInputs::merge`], returning its warnings instead of printing them.
    pub fn merge_quiet(
        mut self,
        config: &ImageConfig,
        requested: Option<&Requested>,
    ) -> Result<(PolicyInputs, Vec<String>, Vec<String>)> {
        let name = self.image().to_string();
        let merged = match requested {
            Some(r) => config_merge::merge(&name, config, r, &self.policy, &self.overrides)?,
            None => config_merge::merge_process(&name, config, &self.policy, &self.overrides)?,
        };
        self.policy = merged.policy;
        Ok((self, merged.argv, merged.warnings))
    }

    /// Applies the flags and validates, printing nothing: a flag's error is found before
    /// containerd is asked for the image's config.
    pub fn check(&self) -> Result<ValidatedPolicy> {
        self.check_in(&HostPolicyEnv)
    }

    /// [`PolicyInputs::check`] with the filesystem as `env` says (a served client's).
    pub fn check_in(&self, env: &dyn stockade::policy::PolicyEnv) -> Result<ValidatedPolicy> {
        Ok(self
            .policy
            .clone()
            .validate(self.file.as_deref(), &self.overrides, env)?)
    }

    /// Applies the flags and validates. Warnings about loosened protections go to stderr.
    pub fn validate(self) -> Result<ValidatedPolicy> {
        let validated = self.check()?;
        for w in &validated.warnings {
            eprintln!("stockade: warning: {w}");
        }
        Ok(validated)
    }
}

/// The runtime binary `--runc-binary` / `STOCKADE_RUNC_BINARY` asks for, checked and
/// hashed (the message of a refusal names the flag); `None` when none is asked for.
pub fn requested_runtime(binary: Option<&str>) -> Result<Option<stockade::runner::RuntimeBinary>> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    binary
        .filter(|b| !b.is_empty())
        .map(|b| stockade::runner::RuntimeBinary::requested(b, &path))
        .transpose()
        .map_err(Into::into)
}

/// Logs the runner's runtime binary (`-v`) and prints its warnings, one line each.
pub fn report_runtime(runner: &stockade::runner::Runner) {
    for line in runtime_report(runner) {
        eprintln!("{line}");
    }
}

/// Logs the runner's runtime binary (`-v`); its warnings as the lines to print.
pub fn runtime_report(runner: &stockade::runner::Runner) -> Vec<String> {
    if let Some(rb) = runner.runtime_binary() {
        tracing::info!(
            path = %rb.path.display(),
            sha256 = %rb.sha256,
            default = rb.default,
            "OCI runtime"
        );
    }
    runner
        .runtime_warnings()
        .iter()
        .map(|w| format!("stockade: warning: {w}"))
        .collect()
}

/// What a pool and its callers compare to tell their runtimes apart: the resolved path of
/// a runtime other than the default, `None` for the default.
pub fn pool_runtime_key(runner: &stockade::runner::Runner) -> Option<String> {
    runner.pool_runtime_key()
}

/// Starts this binary again as `ARGS --address … --namespace … --fifo-root FIFO_ROOT`,
/// detached (its own process group, no stdio), to act for run `id` after this process
/// exits, and records it as the run directory's owner (so reclaim leaves the run to it).
/// Returns its pid.
pub(crate) fn spawn_run_owner<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    containerd: &dyn stockade::containerd::api::Containerd,
    fifo_root: &std::path::Path,
    id: &str,
) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new("/proc/self/exe")
        .args(args)
        .arg("--address")
        .arg(containerd.address())
        .arg("--namespace")
        .arg(containerd.namespace())
        .arg("--fifo-root")
        .arg(fifo_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    let _ = stockade::runner::write_owner(&fifo_root.join(id), child.id());
    Ok(child.id())
}
