//! Seccomp profiles: Docker's JSON format, checked with libseccomp, converted to the OCI
//! spec's `LinuxSeccomp`, and compiled to BPF.
//!
//! ```
//! use stockade::seccomp::{builtin_profile, Profile};
//! let profile = Profile::parse(builtin_profile("default").unwrap()).unwrap();
//! let oci = profile.to_oci().unwrap();
//! assert!(oci.syscalls().as_ref().unwrap().iter().any(|r| r.names().contains(&"read".to_string())));
//! ```
//!
//! The built-in profiles live in `seccomp-profiles/` with a comment on every rule:
//! - `default`: an allowlist no wider than Docker's default profile for a container without
//!   capabilities, narrowed where sandboxed code never needs a call;
//! - `strict`: narrower still, for interpreters (python3, node, sh).
//!
//! `tests/seccomp_profiles.rs` proves both are within Docker's allowance; rules whose action
//! repeats the default only document a denial and stay out of the OCI form.
//!
//! Syscall names are checked against the installed libseccomp's tables for every
//! architecture it supports: a name that is a syscall nowhere is an error. Other
//! architectures' calls (`chown32`, as in Docker's profile) are accepted and filter nothing
//! on x86_64 and aarch64. Calls newer than the library (on Debian 12's 2.5.4: `mseal`,
//! `listmount`, `statmount`, `lsm_*`, `*xattrat`, `uretprobe`) are accepted only if
//! [`NEWER_SYSCALLS`] lists them; they cannot be filtered, so they get the default action,
//! and [`Profile::warnings`] says so.

mod arch;
mod bpf;
mod oci;
mod profile;

use thiserror::Error;

pub use arch::{
    classify, libseccomp_version, resolve, NameClass, NewerSyscall, Resolution, TargetArch,
    UnknownArch, DOCKER_ARCH_NAMES, LIBSECCOMP_ARCHES, NEWER_SYSCALLS, TARGET_ARCHES,
};
pub use bpf::{compile, export_bpf};
pub use oci::{action_name, describe_arg, ArchCount, Dropped, NameNotes, Summary, TooNew};
pub use profile::{Condition, KernelVersion, Profile, Rule};

/// Names accepted by `--seccomp` besides a path and `unconfined`.
pub const BUILTIN_PROFILES: &[&str] = &["default", "strict"];

/// Why a profile was rejected or could not be compiled. Every message is one line naming
/// the place at fault (`syscalls[12].names[3]`, `defaultAction`, ...).
#[derive(Debug, Error)]
pub enum SeccompError {
    /// The text is not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not a profile's shape (unknown field, missing field, wrong type).
    #[error("not a seccomp profile: {0}")]
    Shape(String),
    // Names are shown quoted and escaped (`{:?}`): a name with a line break in it still
    // gives one line.
    /// An action name libseccomp does not have.
    #[error("{at}: unknown action {action:?}")]
    UnknownAction {
        /// Where in the profile (`syscalls[2].action`).
        at: String,
        /// The name given.
        action: String,
    },
    /// A comparison operator that does not exist.
    #[error("{at}: unknown operator {op:?}")]
    UnknownOperator {
        /// Where in the profile.
        at: String,
        /// The operator given.
        op: String,
    },
    /// A syscall name unknown on every target architecture.
    #[error("{at}: unknown syscall {name:?}")]
    UnknownSyscall {
        /// Where in the profile.
        at: String,
        /// The name given.
        name: String,
    },
    /// A value out of range or contradictory.
    #[error("{at}: {what}")]
    Invalid {
        /// Where in the profile.
        at: String,
        /// What is wrong.
        what: String,
    },
    /// libseccomp refused the filter for an architecture.
    #[error("compiling for {arch}: {at}: {reason}")]
    Compile {
        /// The architecture.
        arch: &'static str,
        /// Where in the profile.
        at: String,
        /// libseccomp's reason.
        reason: String,
    },
}

/// The text of a built-in profile.
pub fn builtin_profile(name: &str) -> Option<&'static str> {
    match name {
        "default" => Some(include_str!("../../seccomp-profiles/default.json")),
        "strict" => Some(include_str!("../../seccomp-profiles/strict.json")),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
