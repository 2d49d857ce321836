//! The `stockade-default` AppArmor profile: rendered from `apparmor/stockade-default.tmpl`
//! (pure), checked with `apparmor_parser -Q -K`, and loaded with `apparmor_parser -r` on
//! hosts whose kernel has AppArmor. The parser runs behind [`Parser`], so tests fake it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::policy::NetworkMode;

/// The template the default profile is rendered from.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../apparmor/stockade-default.tmpl");

/// Where `apparmor_parser` is looked for first; `$PATH` after it.
pub const DEFAULT_PARSER: &str = "/usr/sbin/apparmor_parser";

/// Where the kernel lists loaded profiles (under securityfs).
pub const PROFILES_FILE: &str = "/sys/kernel/security/apparmor/profiles";

/// Longest profile name accepted (the policy accepts the same).
const MAX_NAME: usize = 128;

/// Errors of profile rendering and loading; each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    /// A profile name outside the accepted characters or length.
    #[error("AppArmor profile name {0:?}: use 1-128 of A-Z a-z 0-9 - _ . starting with a letter or digit")]
    BadName(String),
    /// `apparmor_parser` could not be started.
    #[error("{parser}: cannot run: {source}")]
    ParserUnavailable {
        /// The parser binary.
        parser: String,
        /// Why it could not run.
        #[source]
        source: io::Error,
    },
    /// `apparmor_parser` refused the profile.
    #[error("apparmor_parser rejected profile {name}: {detail}")]
    Rejected {
        /// The profile's name.
        name: String,
        /// What the parser printed.
        detail: String,
    },
    /// The kernel has no AppArmor; the reason seen.
    #[error("the kernel has no AppArmor ({0}); profiles cannot be loaded on this host")]
    KernelLacksAppArmor(String),
    /// The kernel's AppArmor state could not be read.
    #[error("{path}: {source}")]
    State {
        /// The file read.
        path: PathBuf,
        /// The read error.
        #[source]
        source: io::Error,
    },
}

/// What a profile is rendered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    name: String,
    network: NetworkMode,
}

impl Params {
    /// Checks `name` is a plain profile name (no spaces, quotes or AppArmor syntax).
    pub fn new(name: &str, network: NetworkMode) -> Result<Params, AppArmorError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(AppArmorError::BadName(name.to_string()));
        }
        Ok(Params {
            name: name.to_string(),
            network,
        })
    }

    /// The built-in profile for `network`: `stockade-default` for `none` and
    /// `stockade-default-loopback` for `loopback`. The two modes need different network
    /// rules, and a loaded profile applies to every process confined by it, so each mode
    /// has its own name: loading one never changes sandboxes running under the other.
    pub fn default_for(network: NetworkMode) -> Params {
        Params {
            name: default_profile_name(network).to_string(),
            network,
        }
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network mode the profile is rendered for.
    pub fn network(&self) -> NetworkMode {
        self.network
    }
}

/// The built-in profile's name for a network mode (see [`Params::default_for`]).
pub fn default_profile_name(network: NetworkMode) -> &'static str {
    match network {
        NetworkMode::None => "stockade-default",
        NetworkMode::Loopback => "stockade-default-loopback",
        // A group member needs the same socket families as egress.
        NetworkMode::Egress | NetworkMode::Allowlist | NetworkMode::Group => {
            "stockade-default-egress"
        }
    }
}

fn network_word(network: NetworkMode) -> &'static str {
    match network {
        NetworkMode::None => "none",
        NetworkMode::Loopback => "loopback",
        NetworkMode::Egress | NetworkMode::Allowlist | NetworkMode::Group => "egress",
    }
}

/// Renders the built-in profile. Pure.
pub fn render(params: &Params) -> String {
    render_template(DEFAULT_TEMPLATE, params)
}

/// Renders `template`: `{{name}}` and `{{network}}` are replaced; a line
/// `{{if network=MODE}}` starts a block kept only for that mode, `{{end}}` ends it; lines
/// starting with `#:` document the template and are dropped.
pub fn render_template(template: &str, params: &Params) -> String {
    let mode = network_word(params.network);
    let mut out = String::with_capacity(template.len());
    let mut keep = true;
    for line in template.lines() {
        let t = line.trim();
        if let Some(cond) = t
            .strip_prefix("{{if network=")
            .and_then(|r| r.strip_suffix("}}"))
        {
            keep = cond == mode;
            continue;
        }
        if t == "{{end}}" {
            keep = true;
            continue;
        }
        if t.starts_with("#:") {
            continue;
        }
        if keep {
            out += &line
                .replace("{{name}}", &params.name)
                .replace("{{network}}", mode);
            out.push('\n');
        }
    }
    out
}

/// `sha256:<hex>` of a profile's text.
pub fn content_hash(text: &str) -> String {
    crate::digest::sha256(text)
}

/// Runs `apparmor_parser` with `args`, feeding `stdin`.
pub trait Parser {
    /// `Ok(Ok(()))` when it exits 0, `Ok(Err(stderr))` when it refuses, `Err` when it
    /// cannot be run.
    fn run(&self, args: &[&str], stdin: &str) -> io::Result<Result<(), String>>;
    /// How to name the parser in messages.
    fn describe(&self) -> String;
}

/// The real `apparmor_parser` binary.
#[derive(Debug, Clone)]
pub struct SystemParser {
    /// Where the binary is.
    pub path: PathBuf,
}

impl SystemParser {
    /// [`DEFAULT_PARSER`] if it exists, else `apparmor_parser` from `$PATH`.
    pub fn find() -> SystemParser {
        let default = Path::new(DEFAULT_PARSER);
        SystemParser {
            path: if default.exists() {
                default.to_path_buf()
            } else {
                PathBuf::from("apparmor_parser")
            },
        }
    }
}

impl Parser for SystemParser {
    fn run(&self, args: &[&str], stdin: &str) -> io::Result<Result<(), String>> {
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut pipe) = child.stdin.take() {
            // The parser reads all of stdin before it answers; a write error means it
            // exited early, and its status says why.
            let _ = pipe.write_all(stdin.as_bytes());
        }
        let out = child.wait_with_output()?;
        if out.status.success() {
            Ok(Ok(()))
        } else {
            Ok(Err(String::from_utf8_lossy(&out.stderr).into_owned()))
        }
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// The parser's complaint, one line: its own lines joined, minus the cache notice it prints
/// on kernels without AppArmor.
fn first_reason(stderr: &str, status_only: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Cache read/write disabled"))
        .collect();
    if lines.is_empty() {
        status_only.to_string()
    } else {
        lines.join("; ")
    }
}

/// Name of the first `profile NAME` in `text` (for messages), or `"(unnamed)"`.
fn profile_name_in(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("profile "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("(unnamed)")
        .to_string()
}

/// Checks `text` compiles, without loading it and without kernel support
/// (`apparmor_parser -Q -K`).
pub fn check(parser: &dyn Parser, text: &str) -> Result<(), AppArmorError> {
    match parser.run(&["-Q", "-K"], text) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(stderr)) => Err(AppArmorError::Rejected {
            name: profile_name_in(text),
            detail: first_reason(&stderr, "it exited non-zero without a reason"),
        }),
        Err(source) => Err(AppArmorError::ParserUnavailable {
            parser: parser.describe(),
            source,
        }),
    }
}

/// What [`ensure_loaded`] needs to know about the host.
#[derive(Debug, Clone)]
pub struct LoadContext {
    /// `HostFacts::apparmor`: the kernel has AppArmor enabled.
    pub kernel_has_apparmor: bool,
    /// The kernel's list of loaded profiles ([`PROFILES_FILE`] on the real host).
    pub profiles_file: PathBuf,
    /// Where the hash of each loaded profile's text is kept (`<name>.sha256`), e.g.
    /// `/var/lib/stockade/apparmor`.
    pub state_dir: PathBuf,
}

/// What [`ensure_loaded`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The kernel already had this exact text under this name; nothing ran.
    AlreadyLoaded,
    /// `apparmor_parser -r` loaded or replaced it.
    Loaded,
}

/// Makes sure profile `name` with exactly `text` is loaded in the kernel. Cheap when it is:
/// one read of the kernel's profile list and one of the hash file, no process. Otherwise
/// loads it with `apparmor_parser -r` and records the text's hash.
pub fn ensure_loaded(
    parser: &dyn Parser,
    ctx: &LoadContext,
    name: &str,
    text: &str,
) -> Result<Loaded, AppArmorError> {
    if !ctx.kernel_has_apparmor {
        return Err(AppArmorError::KernelLacksAppArmor(format!(
            "{} is missing or not Y",
            "/sys/module/apparmor/parameters/enabled"
        )));
    }
    let hash = content_hash(text);
    let hash_file = ctx.state_dir.join(format!("{name}.sha256"));
    if kernel_lists(&ctx.profiles_file, name)? && read_hash(&hash_file)? == Some(hash.clone()) {
        return Ok(Loaded::AlreadyLoaded);
    }
    match parser.run(&["-r"], text) {
        Ok(Ok(())) => {}
        Ok(Err(stderr)) => {
            return Err(AppArmorError::Rejected {
                name: name.to_string(),
                detail: first_reason(&stderr, "it exited non-zero without a reason"),
            })
        }
        Err(source) => {
            return Err(AppArmorError::ParserUnavailable {
                parser: parser.describe(),
                source,
            })
        }
    }
    write_hash(&ctx.state_dir, &hash_file, &hash)?;
    Ok(Loaded::Loaded)
}

/// Renders the built-in profile for `network` and makes sure it is loaded (see
/// [`ensure_loaded`]); returns the profile name the OCI spec must name.
pub fn ensure_default_loaded(
    parser: &dyn Parser,
    ctx: &LoadContext,
    network: NetworkMode,
) -> Result<(String, Loaded), AppArmorError> {
    let params = Params::default_for(network);
    let loaded = ensure_loaded(parser, ctx, params.name(), &render(&params))?;
    Ok((params.name, loaded))
}

/// Whether the kernel's profile list (`name (mode)` lines) has `name`.
fn kernel_lists(profiles_file: &Path, name: &str) -> Result<bool, AppArmorError> {
    let text = match std::fs::read_to_string(profiles_file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(AppArmorError::State {
                path: profiles_file.to_path_buf(),
                source,
            })
        }
    };
    Ok(text.lines().any(|l| {
        let listed = l.rsplit_once(" (").map_or(l, |(n, _)| n);
        listed == name
    }))
}

fn read_hash(path: &Path) -> Result<Option<String>, AppArmorError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AppArmorError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the hash through a temporary file and a rename, so a concurrent reader sees the
/// old hash or the new one, never half of one.
fn write_hash(dir: &Path, path: &Path, hash: &str) -> Result<(), AppArmorError> {
    let state = |p: &Path| {
        let p = p.to_path_buf();
        move |source| AppArmorError::State { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(state(dir))?;
    let tmp = path.with_extension(format!("sha256.{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{hash}\n")).map_err(state(&tmp))?;
    std::fs::rename(&tmp, path).map_err(state(path))?;
    Ok(())
}

#[cfg(test)]
mod tests;
