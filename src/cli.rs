//! Command-line grammar (clap derive). No logic: each subcommand's arguments live beside its
//! handler in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use stockade::containerd::DEFAULT_NAMESPACE;

use crate::commands;

/// Run untrusted code in locked-down Linux containers through containerd.
#[derive(Debug, Parser)]
#[command(name = "stockade", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log verbosity (repeat for more); `STOCKADE_LOG` takes a tracing filter instead.
    /// After a subcommand only the long form works: there `-v` is a bind (`-v HOST:CTR`),
    /// as in Docker.
    #[arg(long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log verbosity, before the subcommand (`stockade -vv run …`).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub v: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new sandbox and exit with its exit code.
    Run(commands::run::RunArgs),
    /// Print the OCI runtime spec that `run` would use.
    Spec(commands::spec::SpecArgs),
    /// Lint OCI specs or the live containers of a containerd host.
    Audit(commands::audit::AuditArgs),
    /// Build, import, list and remove base images.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Render the policy as Kubernetes objects.
    #[command(subcommand)]
    K8s(commands::k8s::K8sCommand),
    /// Report what this host supports and what is missing.
    Doctor(commands::doctor::DoctorArgs),
    /// Check and compile seccomp profiles.
    #[command(subcommand)]
    Seccomp(commands::seccomp::SeccompCommand),
    /// Render and check AppArmor profiles.
    #[command(subcommand)]
    Apparmor(commands::apparmor::AppArmorCommand),
    /// Group networks: create, ls, rm.
    #[command(subcommand)]
    Network(commands::network::NetworkCommand),
    /// Remove what crashed runs left behind.
    Gc(commands::gc::GcArgs),
    /// Manage stockade's private containerd.
    #[command(subcommand)]
    Daemon(commands::daemon::DaemonCommand),
    /// Measure start latency against `ctr run --rm` and bare `runc run`, in one run.
    #[cfg(feature = "bench")]
    Bench(commands::bench::BenchArgs),
    /// Keep sandboxes ready ahead of runs (warm pools): fill, ls, drain.
    #[command(subcommand)]
    Pool(commands::pool::PoolCommand),
    /// Create a long-lived sandbox and print its id.
    Create(commands::sandbox::CreateArgs),
    /// Run a command in a live sandbox and exit with its exit code.
    Exec(commands::exec::ExecArgs),
    /// Run a cell of Python in a live sandbox's interpreter, whose globals survive between
    /// calls; exit 1 when it raises.
    Code(commands::code::CodeArgs),
    /// Copy files between the host and a live sandbox (`NAME_OR_ID:PATH` on one side, a
    /// host path or `-` for a tar stream on the other).
    Cp(commands::cp::CpArgs),
    /// List live sandboxes.
    Ls(commands::sandbox::LsArgs),
    /// Show one sandbox as JSON.
    Inspect(commands::sandbox::InspectArgs),
    /// Stop a sandbox: SIGTERM, then SIGKILL after the grace period.
    Stop(commands::sandbox::StopArgs),
    /// Remove sandboxes (with -f also running ones).
    Rm(commands::sandbox::RmArgs),
    /// Serve the Docker Engine API on a Unix socket: Docker clients' containers become
    /// stockade sandboxes.
    Serve(commands::serve::ServeArgs),
    /// Serve sandboxes as MCP tools (Model Context Protocol) on stdin and stdout, for an
    /// agent's MCP client to start.
    Mcp(commands::mcp::McpArgs),
    /// Enforce a sandbox's lifetime and idle timeout (started by `create`).
    #[command(hide = true)]
    SandboxKeeper(commands::sandbox::KeeperArgs),
}

/// Where runs are made, shared by `run`, `pool fill` and `bench`: the containerd, the OCI
/// runtime binary its runc shim drives, and the containerd namespace.
#[derive(Debug, Clone, Args)]
pub struct RunnerArgs {
    /// containerd socket [default: $CONTAINERD_ADDRESS, else
    /// /run/containerd/containerd.sock, else stockade's private containerd].
    #[arg(long, value_name = "SOCK")]
    pub address: Option<PathBuf>,
    /// OCI runtime binary the runc shim drives instead of runc, e.g. crun (it must
    /// accept runc's command line) [default: runc].
    #[arg(long, value_name = "BIN", env = "STOCKADE_RUNC_BINARY")]
    pub runc_binary: Option<String>,
    /// containerd namespace runs and images live in.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

/// Policy flags shared by `run`, `spec`, `pool`, `create` and `k8s render`. Each replaces the policy file's value.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Policy file (TOML). Without it, the built-in defaults apply.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Image to run, a Docker-style reference (busybox is docker.io/library/busybox)
    /// [default: stockade/busybox, the built-in image].
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,
    /// Memory limit, e.g. 256M or 1Gi; swap is disabled [default: 512Mi].
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU quota in cores, e.g. 0.5 [default: 1].
    #[arg(long, value_name = "CORES")]
    pub cpus: Option<String>,
    /// Maximum number of processes and threads [default: 256].
    #[arg(long, value_name = "N")]
    pub pids: Option<String>,
    /// Wall-clock limit, e.g. 30s, 1500ms, 5m; exit 124 when hit [default: 300s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// none (only AF_UNIX sockets), loopback (own loopback only), egress (outbound
    /// IPv4 through NAT; never the host, other sandboxes, private, link-local or metadata
    /// ranges), allowlist (only the --allow entries) or NAME, a group network made by `stockade network create NAME` (its
    /// members and nothing else) [default: none].
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,
    /// With --network egress: open a range the always-denied list covers. With --network
    /// allowlist: a destination the sandbox may reach, CIDR[:PORT[-PORT]] or
    /// HOSTNAME[:PORT[-PORT]] (`*.NAME` for every name below NAME). Repeatable.
    #[arg(long, value_name = "ENTRY")]
    pub allow: Vec<String>,
    /// Publish a sandbox port on the host's loopback: [127.0.0.1:]HOSTPORT:PORT[/tcp]
    /// (repeatable; HOSTPORT 0 picks a free port; needs egress, allowlist or a group network).
    #[arg(
        long = "publish",
        short = 'p',
        value_name = "[127.0.0.1:]HOSTPORT:PORT"
    )]
    pub publish: Vec<String>,
    /// Host directory mounted read-write at /workspace.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Host directory mounted read-only at /input.
    #[arg(long, value_name = "DIR")]
    pub input: Option<PathBuf>,
    /// Bind a host directory: HOST:CTR[:ro|rw], HOST absolute and beneath a bind root
    /// (repeatable; `-v DIR:/workspace` is --workspace, `-v DIR:/input:ro` is --input).
    #[arg(long = "volume", short = 'v', value_name = "HOST:CTR[:ro|rw]")]
    pub volume: Vec<String>,
    /// A tmpfs: PATH[:size=SIZE,mode=OCTAL,exec] (repeatable; always nosuid,nodev;
    /// noexec unless `exec`) [default size 64Mi, mode 1777].
    #[arg(long, value_name = "PATH[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Who owns the --workspace directory: keep (a workspace the sandbox's user cannot
    /// write is refused at start) or sandbox (then it is given to that user, the policy's
    /// 65534:65534 by default) [default: keep].
    #[arg(long, value_name = "keep|sandbox")]
    pub workspace_owner: Option<String>,
    /// Working directory inside the sandbox [default: /workspace with a workspace, else /tmp].
    #[arg(long = "workdir", short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Environment variable K=V (repeatable).
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// UID[:GID] to run as [default: 65534:65534].
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Cap on each of stdout and stderr, e.g. 1M [default: 10Mi].
    #[arg(long, value_name = "SIZE")]
    pub max_output: Option<String>,
    /// Grant a capability from the safe allowlist (repeatable; prints a warning).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Seccomp profile: default, strict, a file, or unconfined [default: default].
    #[arg(long, value_name = "PROFILE")]
    pub seccomp: Option<String>,
    /// AppArmor profile name or unconfined [default: stockade-default].
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// Make the root filesystem writable.
    #[arg(long)]
    pub read_write_root: bool,
    /// Host storage the sandbox may fill (writable root and managed workspace together),
    /// e.g. 256M [default: 1Gi].
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// A managed workspace of this size at /workspace, made for the sandbox and removed
    /// with it; counted in --disk. Not with --workspace.
    #[arg(long, value_name = "SIZE")]
    pub workspace_size: Option<String>,
}
