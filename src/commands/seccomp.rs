//! `stockade seccomp`: check a profile, print its OCI form, compile it to BPF.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use stockade::oci_spec::runtime::LinuxSeccomp;
use stockade::policy::NetworkMode;
use stockade::seccomp::{self, Profile, TargetArch};

#[derive(Debug, clap::Subcommand)]
pub enum SeccompCommand {
    /// Validate a profile (Docker's JSON format) and summarise what it allows.
    Check {
        /// The profile file.
        file: PathBuf,
    },
    /// Compile a profile with libseccomp and write the BPF program, as the sandbox runs it.
    Export {
        /// Where to write the BPF (an array of struct sock_filter, host byte order).
        #[arg(long, value_name = "FILE")]
        bpf: PathBuf,
        #[command(flatten)]
        select: Select,
        /// x86_64 or aarch64 [default: this host's].
        #[arg(long, value_name = "ARCH")]
        arch: Option<String>,
    },
    /// Print a profile's OCI form (`linux.seccomp`) as JSON.
    Show {
        #[command(flatten)]
        select: Select,
    },
}

/// Which profile, adapted to which network mode.
#[derive(Debug, clap::Args)]
pub struct Select {
    /// A built-in profile name (default, strict) or a file.
    #[arg(long, value_name = "NAME|PATH", default_value = "default")]
    profile: String,
    /// none narrows socket() to AF_UNIX, as `run` does; loopback leaves the profile as is;
    /// egress, allowlist and group narrow it to AF_UNIX, AF_NETLINK and AF_INET stream or
    /// datagram sockets.
    #[arg(long, value_name = "MODE", default_value = "none")]
    network: String,
}

pub async fn run(cmd: SeccompCommand) -> Result<u8> {
    match cmd {
        SeccompCommand::Check { file } => {
            let profile = read_profile(&file)?;
            for w in profile.warnings() {
                eprintln!("stockade: warning: {}: {w}", file.display());
            }
            let summary = profile
                .summary()
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            emit(&format!("{}: ok\n{summary}", file.display()))?;
            Ok(0)
        }
        SeccompCommand::Export { bpf, select, arch } => {
            let arch = match arch {
                Some(a) => a
                    .parse::<TargetArch>()
                    .map_err(|e| anyhow!("--arch: {e}"))?,
                None => TargetArch::native().ok_or_else(|| {
                    anyhow!(
                        "--arch: this host ({}) is neither x86_64 nor aarch64; name one",
                        std::env::consts::ARCH
                    )
                })?,
            };
            let filter = select.filter()?;
            let out = File::create(&bpf).with_context(|| format!("--bpf {}", bpf.display()))?;
            seccomp::export_bpf(&filter, arch, &out)
                .map_err(|e| anyhow!("--bpf {}: {e}", bpf.display()))?;
            let len = out.metadata().map(|m| m.len()).unwrap_or(0);
            eprintln!(
                "wrote {} ({} instructions, {arch}, profile {}, network {})",
                bpf.display(),
                len / 8,
                select.profile,
                select.network
            );
            Ok(0)
        }
        SeccompCommand::Show { select } => {
            let filter = select.filter()?;
            emit(&format!("{}\n", serde_json::to_string_pretty(&filter)?))?;
            Ok(0)
        }
    }
}

impl Select {
    /// The OCI filter `run` would use for this profile and network mode.
    fn filter(&self) -> Result<LinuxSeccomp> {
        let network = NetworkMode::from_name(&self.network).ok_or_else(|| {
            anyhow!(
                "--network: `{}` is not a network mode ({})",
                self.network,
                NetworkMode::NAMES
            )
        })?;
        let profile = match seccomp::builtin_profile(&self.profile) {
            Some(text) => {
                Profile::parse(text).map_err(|e| anyhow!("--profile {}: {e}", self.profile))?
            }
            None => {
                let p = read_profile(Path::new(&self.profile)).map_err(|e| {
                    anyhow!(
                        "--profile: {e:#} (built-in profiles: {})",
                        seccomp::BUILTIN_PROFILES.join(", ")
                    )
                })?;
                for w in p.warnings() {
                    eprintln!("stockade: warning: {}: {w}", self.profile);
                }
                p
            }
        };
        let oci = profile
            .to_oci()
            .map_err(|e| anyhow!("--profile {}: {e}", self.profile))?;
        stockade::spec::seccomp_for_network(&oci, network)
            .map_err(|e| anyhow!("--network {}: {e}", self.network))
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("stdout"),
        _ => Ok(()),
    }
}

fn read_profile(path: &Path) -> Result<Profile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Profile::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}
