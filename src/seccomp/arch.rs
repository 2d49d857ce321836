//! The architectures stockade builds filters for, and syscall-name resolution through
//! libseccomp's tables.

use std::fmt;
use std::str::FromStr;

use libseccomp::{ScmpArch, ScmpSyscall, ScmpVersion};
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

/// Every architecture libseccomp has a syscall table for (as of libseccomp 2.6). A name that
/// is a system call on none of them (as far as the installed library knows) is a typo,
/// unless [`NEWER_SYSCALLS`] lists it. Tokens the installed library predates resolve
/// nothing.
pub const LIBSECCOMP_ARCHES: &[ScmpArch] = &[
    ScmpArch::X86,
    ScmpArch::X8664,
    ScmpArch::X32,
    ScmpArch::Arm,
    ScmpArch::Aarch64,
    ScmpArch::Loongarch64,
    ScmpArch::M68k,
    ScmpArch::Mips,
    ScmpArch::Mips64,
    ScmpArch::Mips64N32,
    ScmpArch::Mipsel,
    ScmpArch::Mipsel64,
    ScmpArch::Mipsel64N32,
    ScmpArch::Ppc,
    ScmpArch::Ppc64,
    ScmpArch::Ppc64Le,
    ScmpArch::S390,
    ScmpArch::S390X,
    ScmpArch::Parisc,
    ScmpArch::Parisc64,
    ScmpArch::Riscv64,
    ScmpArch::Sheb,
    ScmpArch::Sh,
];

/// A Linux system call that an older libseccomp may not know by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewerSyscall {
    /// Its name.
    pub name: &'static str,
    /// The first kernel release that has it.
    pub since: &'static str,
    /// The only architecture it exists on, when it is not a generic system call.
    pub only_on: Option<&'static str>,
}

/// System calls newer than what some libseccomp 2.5.x builds know (upstream 2.5.4, released
/// in 2022, predates all of them; Debian 12's 2.5.4 knows those up to Linux 6.7's futex2
/// calls). Profiles such as Docker's name them, so a name listed here is
/// accepted even when the installed library does not know it; it is then left out of the
/// filter and the call gets the profile's default action, with a warning. This table is
/// consulted only for names the installed library does not know, so a newer library
/// resolves and filters them normally. A name that is neither known to the library nor
/// listed here is an error. Add an entry only for a call in a released kernel.
pub const NEWER_SYSCALLS: &[NewerSyscall] = &[
    // RISC-V CPU feature probing; not on x86_64 or aarch64.
    newer("riscv_hwprobe", "6.4", Some("riscv64")),
    // Page cache residency statistics.
    newer("cachestat", "6.5", None),
    // fchmodat with a flags argument (AT_SYMLINK_NOFOLLOW).
    newer("fchmodat2", "6.6", None),
    // Shadow stacks for CET and similar.
    newer("map_shadow_stack", "6.6", None),
    // futex2: the new futex interface.
    newer("futex_wake", "6.7", None),
    newer("futex_wait", "6.7", None),
    newer("futex_requeue", "6.7", None),
    // Mount listing by mount ID.
    newer("statmount", "6.8", None),
    newer("listmount", "6.8", None),
    // LSM attribute interface.
    newer("lsm_get_self_attr", "6.8", None),
    newer("lsm_set_self_attr", "6.8", None),
    newer("lsm_list_modules", "6.8", None),
    // Sealing of memory mappings.
    newer("mseal", "6.10", None),
    // Return probes' trampoline; x86_64 only.
    newer("uretprobe", "6.11", Some("x86_64")),
    // Extended attributes relative to a directory descriptor.
    newer("setxattrat", "6.13", None),
    newer("getxattrat", "6.13", None),
    newer("listxattrat", "6.13", None),
    newer("removexattrat", "6.13", None),
    // open_tree with mount attributes.
    newer("open_tree_attr", "6.15", None),
    // Inode attributes (FS_IOC_FSGETXATTR) by path.
    newer("file_getattr", "6.17", None),
    newer("file_setattr", "6.17", None),
];

const fn newer(
    name: &'static str,
    since: &'static str,
    only_on: Option<&'static str>,
) -> NewerSyscall {
    NewerSyscall {
        name,
        since,
        only_on,
    }
}

/// What a syscall name in a profile is, judged by the installed libseccomp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameClass {
    /// A system call on x86_64 or aarch64 (or both).
    Target,
    /// A system call only on other architectures (`chown32`, `arm_fadvise64_64`): accepted,
    /// and no part of the x86_64/aarch64 filter.
    OtherArches,
    /// Unknown to the installed library but listed in [`NEWER_SYSCALLS`]: accepted, left
    /// out of the filter, so calls get the default action.
    Newer(NewerSyscall),
    /// A system call on no architecture: a typo.
    Unknown,
}

/// Classifies a syscall name (see [`NameClass`]).
pub fn classify(name: &str) -> NameClass {
    let numbered = |arch: ScmpArch| matches!(ScmpSyscall::from_name_by_arch(name, arch), Ok(sc) if sc.as_raw_syscall() >= 0);
    if TARGET_ARCHES.iter().any(|a| numbered(a.scmp())) {
        NameClass::Target
    } else if LIBSECCOMP_ARCHES.iter().any(|a| numbered(*a)) {
        NameClass::OtherArches
    } else if let Some(n) = NEWER_SYSCALLS.iter().find(|n| n.name == name) {
        NameClass::Newer(*n)
    } else {
        NameClass::Unknown
    }
}

/// The installed libseccomp's version, `2.5.4`, or `(unknown version)`.
pub fn libseccomp_version() -> String {
    match ScmpVersion::current() {
        Ok(v) => format!("{}.{}.{}", v.major, v.minor, v.micro),
        Err(_) => "(unknown version)".into(),
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
    fn names_are_classified_across_all_libseccomp_arches() {
        assert_eq!(classify("read"), NameClass::Target);
        // x86_64 only, or aarch64 only: still a target name.
        assert_eq!(classify("arch_prctl"), NameClass::Target);
        assert_eq!(classify("open"), NameClass::Target);
        for other in [
            "chown32",
            "arm_fadvise64_64",
            "s390_runtime_instr",
            "mmap2",
            "socketcall",
            "sync_file_range2",
        ] {
            assert_eq!(classify(other), NameClass::OtherArches, "{other}");
        }
        for typo in ["no_such_syscall", "chown33", "Read", "mseal2"] {
            assert_eq!(classify(typo), NameClass::Unknown, "{typo}");
        }
    }

    #[test]
    fn newer_syscalls_table_is_consulted_only_when_the_library_lacks_a_name() {
        for n in NEWER_SYSCALLS {
            let got = classify(n.name);
            let known = LIBSECCOMP_ARCHES.iter().any(|a| {
                matches!(ScmpSyscall::from_name_by_arch(n.name, *a), Ok(sc) if sc.as_raw_syscall() >= 0)
            });
            if known {
                assert!(
                    matches!(got, NameClass::Target | NameClass::OtherArches),
                    "{}: {got:?}",
                    n.name
                );
            } else {
                assert_eq!(got, NameClass::Newer(*n), "{}", n.name);
            }
            let v = n
                .since
                .split('.')
                .map(|p| p.parse::<u32>().unwrap())
                .collect::<Vec<_>>();
            assert!(
                v.len() == 2 && (v[0], v[1]) > (5, 17),
                "{}: {}",
                n.name,
                n.since
            );
        }
        let mut names: Vec<&str> = NEWER_SYSCALLS.iter().map(|n| n.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NEWER_SYSCALLS.len(), "duplicate entries");
        // libseccomp 2.5 (Debian 12 ships 2.5.4) predates Linux 6.10's mseal.
        if libseccomp_version().starts_with("2.5.") {
            assert!(matches!(classify("mseal"), NameClass::Newer(n) if n.since == "6.10"));
        }
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
