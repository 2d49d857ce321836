//! The architectures stockade builds filters for, and syscall-name resolution through
//! libseccomp's tables.

use std::fmt;
use std::str::FromStr;

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::Arch;

/// An architecture stockade emits seccomp rules for.
///
/// Only the two 64-bit ABIs are listed. The 32-bit compat ABIs that Docker adds through
/// `archMap` (`SCMP_ARCH_X86`, `SCMP_ARCH_X32`, `SCMP_ARCH_ARM`) are left out on purpose:
/// sandboxed code has no reason to make 32-bit system calls, and a filter that does not list
/// an ABI answers every call made through it with libseccomp's bad-architecture action
/// instead of evaluating an allowlist that was written for another syscall table. That is
/// narrower than Docker's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetArch {
    /// x86-64 (`SCMP_ARCH_X86_64`, Docker's `amd64`).
    X86_64,
    /// AArch64 (`SCMP_ARCH_AARCH64`, Docker's `arm64`).
    Aarch64,
}

/// Every architecture stockade emits rules for, in the order they appear in specs.
pub const TARGET_ARCHES: [TargetArch; 2] = [TargetArch::X86_64, TargetArch::Aarch64];

impl TargetArch {
    /// The architecture this program was built for, if it is one stockade targets.
    pub fn native() -> Option<TargetArch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(TargetArch::X86_64),
            "aarch64" => Some(TargetArch::Aarch64),
            _ => None,
        }
    }

    /// The kernel's (uname) name: `x86_64` or `aarch64`.
    pub fn name(self) -> &'static str {
        match self {
            TargetArch::X86_64 => "x86_64",
            TargetArch::Aarch64 => "aarch64",
        }
    }

    /// The name Docker's `includes.arches` / `excludes.arches` use (Go's `GOARCH`).
    pub fn docker_name(self) -> &'static str {
        match self {
            TargetArch::X86_64 => "amd64",
            TargetArch::Aarch64 => "arm64",
        }
    }

    /// The OCI spec's architecture token.
    pub fn oci(self) -> Arch {
        match self {
            TargetArch::X86_64 => Arch::ScmpArchX86_64,
            TargetArch::Aarch64 => Arch::ScmpArchAarch64,
        }
    }

    /// libseccomp's architecture token.
    pub fn scmp(self) -> ScmpArch {
        match self {
            TargetArch::X86_64 => ScmpArch::X8664,
            TargetArch::Aarch64 => ScmpArch::Aarch64,
        }
    }

    /// The architecture of an OCI token, if it is one stockade targets.
    pub fn from_oci(arch: Arch) -> Option<TargetArch> {
        TARGET_ARCHES.into_iter().find(|a| a.oci() == arch)
    }

    /// The other target architecture.
    pub(crate) fn other(self) -> TargetArch {
        match self {
            TargetArch::X86_64 => TargetArch::Aarch64,
            TargetArch::Aarch64 => TargetArch::X86_64,
        }
    }
}

impl fmt::Display for TargetArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`TargetArch::from_str`]: the name that was not recognised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture `{0}` (expected x86_64 or aarch64)")]
pub struct UnknownArch(pub String);

impl FromStr for TargetArch {
    type Err = UnknownArch;

    /// Accepts the kernel's names and Docker's (`amd64`, `arm64`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(TargetArch::X86_64),
            "aarch64" | "arm64" => Ok(TargetArch::Aarch64),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}

/// How libseccomp knows a syscall name on one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// A real system call with this number.
    Number(i32),
    /// A name in libseccomp's tables that has no number on this architecture (for example
    /// `chown32` on x86_64); rules naming it have no effect there.
    Absent,
    /// libseccomp has never heard of it (a typo, or newer than the installed library).
    Unknown,
}

/// Resolves `name` on `arch` with libseccomp.
pub fn resolve(name: &str, arch: TargetArch) -> Resolution {
    match ScmpSyscall::from_name_by_arch(name, arch.scmp()) {
        Ok(sc) if sc.as_raw_syscall() >= 0 => Resolution::Number(sc.as_raw_syscall()),
        Ok(_) => Resolution::Absent,
        Err(_) => Resolution::Unknown,
    }
}

/// Docker's architecture names (`includes.arches`), all accepted in profiles. Rules that
/// name only architectures other than [`TARGET_ARCHES`] are dropped on conversion.
pub const DOCKER_ARCH_NAMES: &[&str] = &[
    "amd64",
    "arm64",
    "x86",
    "x32",
    "arm",
    "ppc",
    "ppc64",
    "ppc64le",
    "s390",
    "s390x",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mipsel",
    "mipsel64",
    "mips64n32",
    "mipsel64n32",
    "riscv64",
    "loong64",
    "parisc",
    "parisc64",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_distinguishes_real_absent_and_unknown() {
        assert_eq!(
            resolve("getpid", TargetArch::X86_64),
            Resolution::Number(39)
        );
        assert_eq!(
            resolve("getpid", TargetArch::Aarch64),
            Resolution::Number(172)
        );
        // open(2) has no number on aarch64 (only openat).
        assert_eq!(resolve("open", TargetArch::Aarch64), Resolution::Absent);
        assert_eq!(resolve("chown32", TargetArch::X86_64), Resolution::Absent);
        assert_eq!(
            resolve("no_such_syscall", TargetArch::X86_64),
            Resolution::Unknown
        );
    }

    #[test]
    fn arch_names_round_trip() {
        for a in TARGET_ARCHES {
            assert_eq!(a.name().parse::<TargetArch>(), Ok(a));
            assert_eq!(a.docker_name().parse::<TargetArch>(), Ok(a));
            assert_eq!(TargetArch::from_oci(a.oci()), Some(a));
            assert_eq!(a.other().other(), a);
        }
        assert!("i386".parse::<TargetArch>().is_err());
    }
}
