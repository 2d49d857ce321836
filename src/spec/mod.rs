//! [`ValidatedPolicy`] + [`HostFacts`] → OCI runtime [`Spec`]. Pure: no filesystem, no
//! syscalls. The same spec is what `stockade spec` prints and what `stockade run` runs.

mod linux;
mod mounts;
mod process;

use oci_spec::runtime::{RootBuilder, Spec, SpecBuilder};
use serde::Serialize;
use thiserror::Error;

use crate::host::HostFacts;
use crate::policy::ValidatedPolicy;

pub use linux::{cgroups_path, seccomp_for_network, ALLOWED_DEVICES};
pub use mounts::{
    masked_paths, readonly_paths, stage_binds, CONTAINERD_MASKED_PATHS, MANAGED_WORKSPACE_SOURCE,
    POWERCAP_PATH, TERMINAL_PTYS,
};
pub use process::{apparmor_profile_name, run_as_uid};

/// The OCI runtime-spec version stockade's specs declare (what runc 1.1 implements).
pub const OCI_VERSION: &str = "1.0.2";
/// Annotation carrying the policy hash.
pub const ANNOTATION_POLICY_HASH: &str = "org.stockade.policy.hash";
/// Annotation carrying the seccomp profile's name.
pub const ANNOTATION_SECCOMP: &str = "org.stockade.seccomp.profile";
/// Annotation carrying the network mode (`none`, `loopback`, `egress`).
pub const ANNOTATION_NETWORK: &str = "org.stockade.network";
/// Annotation carrying the image name.
pub const ANNOTATION_IMAGE: &str = "org.stockade.image";
/// Where the workspace appears inside the sandbox.
pub const WORKSPACE_PATH: &str = "/workspace";
/// Where the read-only input appears inside the sandbox.
pub const INPUT_PATH: &str = "/input";
/// Where the sandbox's own sized tmpfs is (`limits.tmp_size`).
pub const TMP_PATH: &str = "/tmp";

/// What one run adds to a policy: its id, its command, whether it has a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecRequest<'a> {
    /// Container id; names the cgroup. Letters, digits, `-`, `_`, `.`.
    pub id: &'a str,
    /// The command and its arguments.
    pub args: &'a [String],
    /// Allocate a pseudo-terminal (adds `/dev/ptmx` and `/dev/pts/*` to the device list and
    /// mounts a devpts instance of at most [`TERMINAL_PTYS`] ptys; without one there is no
    /// devpts).
    pub terminal: bool,
}

/// A protection the policy asked for that this host cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NotEnforced {
    /// `apparmor`, `seccomp`, `swap`, `io_weight`, …
    pub protection: String,
    /// One line on why.
    pub reason: String,
}

/// A built spec and what of the policy it could not carry out on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltSpec {
    /// The OCI runtime spec.
    pub spec: Spec,
    /// Protections the policy asks for that this host cannot enforce.
    pub not_enforced: Vec<NotEnforced>,
}

/// Why a spec could not be built.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The process has no argv.
    #[error("no command given (put it after `--`)")]
    EmptyCommand,
    /// A container id outside the accepted characters or length.
    #[error("container id `{0}` must be 1–64 letters, digits, `-`, `_` or `.`")]
    BadId(String),
    /// An argument holds a NUL byte.
    #[error("command argument {index} contains a NUL byte")]
    NulInArgument {
        /// Its position in argv.
        index: usize,
    },
    /// oci-spec refused a section.
    #[error("building the {part} section: {message}")]
    Builder {
        /// The section.
        part: &'static str,
        /// Its message.
        message: String,
    },
}

pub(crate) fn builder_err(part: &'static str) -> impl Fn(oci_spec::OciSpecError) -> SpecError {
    move |e| SpecError::Builder {
        part,
        message: e.to_string(),
    }
}

/// Builds the spec `stockade run` uses for `req` under `policy` on `host`.
pub fn build(
    policy: &ValidatedPolicy,
    host: &HostFacts,
    req: &SpecRequest<'_>,
) -> Result<BuiltSpec, SpecError> {
    if req.args.is_empty() {
        return Err(SpecError::EmptyCommand);
    }
    if let Some(index) = req.args.iter().position(|a| a.contains('\0')) {
        return Err(SpecError::NulInArgument { index });
    }
    if req.id.is_empty()
        || req.id.len() > 64
        || !req
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(SpecError::BadId(req.id.to_string()));
    }

    let mut not_enforced = Vec::new();
    let process = process::build(policy, host, req, &mut not_enforced)?;
    let linux = linux::build(policy, host, req, &mut not_enforced)?;

    let mut annotations = std::collections::HashMap::new();
    annotations.insert(ANNOTATION_POLICY_HASH.to_string(), policy.hash());
    annotations.insert(ANNOTATION_IMAGE.to_string(), policy.image.clone());
    annotations.insert(
        ANNOTATION_NETWORK.to_string(),
        policy.network.as_str().to_string(),
    );
    if let crate::policy::SeccompChoice::Profile { name, .. } = &policy.seccomp {
        annotations.insert(ANNOTATION_SECCOMP.to_string(), name.clone());
    }

    let spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(policy.read_only_root)
                .build()
                .map_err(builder_err("root"))?,
        )
        .hostname(policy.hostname.clone())
        .process(process)
        .mounts(mounts::build(policy, req.terminal))
        .linux(linux)
        .annotations(annotations)
        .build()
        .map_err(builder_err("spec"))?;
    Ok(BuiltSpec { spec, not_enforced })
}

/// The spec as JSON in a canonical form: object keys sorted (serde_json's map is ordered)
/// and capability sets, which oci-spec keeps as hash sets, sorted. Equal specs give equal
/// values, whatever the hash seed.
pub fn canonical_json(spec: &Spec) -> serde_json::Value {
    let mut value = serde_json::to_value(spec).expect("a spec always serializes");
    if let Some(caps) = value
        .pointer_mut("/process/capabilities")
        .and_then(|c| c.as_object_mut())
    {
        for set in caps.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    value
}

/// `sha256:<hex>` of the spec's canonical JSON: the identity of exactly what ran.
pub fn digest(spec: &Spec) -> String {
    let json = serde_json::to_vec(&canonical_json(spec)).expect("a JSON value always serializes");
    crate::digest::sha256(json)
}

/// Pretty canonical JSON, as `stockade spec` prints it.
pub fn to_pretty_json(spec: &Spec) -> String {
    serde_json::to_string_pretty(&canonical_json(spec)).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests;
