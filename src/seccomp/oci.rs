//! Conversion of a [`Profile`] to the OCI runtime spec's `LinuxSeccomp`, and a summary of
//! what a profile allows.

use std::collections::BTreeSet;
use std::fmt;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder,
};

use super::arch::{
    classify, libseccomp_version, resolve, NameClass, NewerSyscall, Resolution, TargetArch,
    TARGET_ARCHES,
};
use super::profile::{arch_applies, KernelVersion, Profile, Rule};
use super::SeccompError;

/// A rule left out of the OCI form, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Position in the profile's `syscalls` array.
    pub index: usize,
    /// The rule's syscall names.
    pub names: Vec<String>,
    /// Why it was left out.
    pub reason: String,
}

/// What a profile allows, for `stockade seccomp check`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The profile's default action.
    pub default_action: LinuxSeccompAction,
    /// Its errno, when the default action returns one.
    pub default_errno_ret: Option<u32>,
    /// Per architecture: syscalls allowed without conditions, and syscalls allowed only
    /// when argument conditions hold (`SCMP_ACT_ALLOW` and `SCMP_ACT_LOG` count as allowed).
    pub allowed: Vec<ArchCount>,
    /// Applied rules that carry argument conditions, one line each.
    pub conditional_rules: Vec<String>,
    /// Rules the conversion left out.
    pub dropped: Vec<Dropped>,
    /// Names that are not part of the x86_64/aarch64 filter.
    pub names: NameNotes,
}

/// The names in a profile that are accepted but filter nothing on x86_64 and aarch64.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameNotes {
    /// System calls of other architectures only (`chown32`, `arm_fadvise64_64`), sorted.
    pub other_arches: Vec<String>,
    /// Calls on a target architecture that the installed libseccomp is too old to know,
    /// each with the first place the profile names it. They get the default action.
    pub too_new: Vec<TooNew>,
}

/// A name of [`NameNotes::too_new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooNew {
    /// Where the profile first names it (`syscalls[0].names[301]`).
    pub at: String,
    /// The syscall.
    pub syscall: NewerSyscall,
}

impl TooNew {
    /// The one-line warning for this name, given the installed libseccomp's version.
    pub fn warning(&self, libseccomp: &str) -> String {
        let only = self
            .syscall
            .only_on
            .map(|a| format!(", {a} only"))
            .unwrap_or_default();
        format!(
            "{}: \"{}\" (Linux {}{only}) is not known to libseccomp {libseccomp}; \
             calls get the default action",
            self.at, self.syscall.name, self.syscall.since
        )
    }
}

/// Allowed-syscall counts on one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchCount {
    /// The architecture.
    pub arch: TargetArch,
    /// Syscalls allowed without conditions.
    pub unconditional: usize,
    /// Syscalls allowed only when argument conditions hold.
    pub conditional_only: usize,
}

/// Renders one condition the way `check` prints it, e.g. `arg0 & 0x7e020000 == 0x0`.
pub fn describe_arg(a: &LinuxSeccompArg) -> String {
    use LinuxSeccompOperator::*;
    let i = a.index();
    let v = a.value();
    match a.op() {
        ScmpCmpMaskedEq => format!("arg{i} & {v:#x} == {:#x}", a.value_two().unwrap_or(0)),
        ScmpCmpNe => format!("arg{i} != {v}"),
        ScmpCmpLt => format!("arg{i} < {v}"),
        ScmpCmpLe => format!("arg{i} <= {v}"),
        ScmpCmpEq => format!("arg{i} == {v}"),
        ScmpCmpGe => format!("arg{i} >= {v}"),
        ScmpCmpGt => format!("arg{i} > {v}"),
    }
}

/// Whether an action lets the syscall run.
pub(crate) fn is_allowing(a: LinuxSeccompAction) -> bool {
    matches!(
        a,
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
    )
}

impl Profile {
    /// The names that filter nothing on x86_64 and aarch64: other architectures' calls and
    /// calls too new for the installed libseccomp (a call of that table that exists only on
    /// another architecture counts as another architecture's).
    pub fn name_notes(&self) -> NameNotes {
        let mut other = BTreeSet::new();
        let mut too_new: Vec<TooNew> = Vec::new();
        for r in &self.rules {
            for (j, n) in r.names.iter().enumerate() {
                match classify(n) {
                    NameClass::Target | NameClass::Unknown => {}
                    NameClass::OtherArches => {
                        other.insert(n.clone());
                    }
                    NameClass::Newer(s)
                        if s.only_on.is_some_and(|a| a.parse::<TargetArch>().is_err()) =>
                    {
                        other.insert(n.clone());
                    }
                    NameClass::Newer(s) => {
                        if !too_new.iter().any(|t| t.syscall.name == s.name) {
                            too_new.push(TooNew {
                                at: format!("syscalls[{}].names[{j}]", r.index),
                                syscall: s,
                            });
                        }
                    }
                }
            }
        }
        NameNotes {
            other_arches: other.into_iter().collect(),
            too_new,
        }
    }

    /// One-line warnings about the profile: each call it names that the installed
    /// libseccomp is too old to filter.
    pub fn warnings(&self) -> Vec<String> {
        let version = libseccomp_version();
        self.name_notes()
            .too_new
            .iter()
            .map(|t| t.warning(&version))
            .collect()
    }

    /// The OCI form, for a kernel whose version is not known (as when a spec is built):
    /// see [`Profile::to_oci_for_kernel`].
    pub fn to_oci(&self) -> Result<LinuxSeccomp, SeccompError> {
        self.to_oci_for_kernel(None)
    }

    /// The OCI form. `architectures` is always [`TARGET_ARCHES`]; rules are kept, dropped
    /// or refused as follows:
    /// - `includes.caps` non-empty: dropped. stockade never grants the capabilities Docker
    ///   gates syscalls on (`CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, ...), so such a rule would
    ///   allow calls the sandbox has no right to; `excludes.caps` never matches for the same
    ///   reason.
    /// - `includes.arches` / `excludes.arches` leaving neither x86_64 nor aarch64: dropped.
    ///   Leaving exactly one of them: kept only if none of its names is a syscall on the
    ///   other (the OCI form cannot tie a rule to one architecture), an error otherwise.
    /// - names that are a syscall on none of the target architectures the rule applies to
    ///   (other architectures' calls, calls too new for the installed libseccomp) are left
    ///   out of the rule, and a rule left with no names is dropped: a runtime whose
    ///   libseccomp knows more must not filter differently from what stockade checked.
    /// - `includes.minKernel`: kept only when `kernel` is known and at least that version;
    ///   an unknown kernel counts as older than any version, so rules that widen a profile
    ///   only on new kernels stay out. `excludes.minKernel` drops the rule when `kernel` is
    ///   known and at least that version.
    pub fn to_oci_for_kernel(
        &self,
        kernel: Option<KernelVersion>,
    ) -> Result<LinuxSeccomp, SeccompError> {
        self.convert(kernel).map(|(spec, _)| spec)
    }

    /// The rules [`Profile::to_oci_for_kernel`] leaves out, with the reason.
    pub fn dropped_rules(
        &self,
        kernel: Option<KernelVersion>,
    ) -> Result<Vec<Dropped>, SeccompError> {
        self.convert(kernel).map(|(_, d)| d)
    }

    /// What the profile allows on each target architecture (kernel unknown).
    pub fn summary(&self) -> Result<Summary, SeccompError> {
        let (_, dropped) = self.convert(None)?;
        let applied: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|r| !dropped.iter().any(|d| d.index == r.index))
            .collect();
        let allowed = TARGET_ARCHES
            .into_iter()
            .map(|arch| {
                let mut uncond = BTreeSet::new();
                let mut cond = BTreeSet::new();
                for r in applied.iter().filter(|r| is_allowing(r.action)) {
                    for n in &r.names {
                        if let Resolution::Number(_) = resolve(n, arch) {
                            if r.args.is_empty() {
                                uncond.insert(n.as_str());
                            } else {
                                cond.insert(n.as_str());
                            }
                        }
                    }
                }
                ArchCount {
                    arch,
                    unconditional: uncond.len(),
                    conditional_only: cond.difference(&uncond).count(),
                }
            })
            .collect();
        let conditional_rules = applied
            .iter()
            .filter(|r| !r.args.is_empty())
            .map(|r| {
                let conds: Vec<String> = r.args.iter().map(describe_arg).collect();
                format!(
                    "syscalls[{}] {} {}: {}",
                    r.index,
                    action_name(r.action),
                    r.names.join(","),
                    conds.join(" && ")
                )
            })
            .collect();
        Ok(Summary {
            default_action: self.default_action,
            default_errno_ret: self.default_errno_ret,
            allowed,
            conditional_rules,
            dropped,
            names: self.name_notes(),
        })
    }

    fn convert(
        &self,
        kernel: Option<KernelVersion>,
    ) -> Result<(LinuxSeccomp, Vec<Dropped>), SeccompError> {
        let mut syscalls: Vec<LinuxSyscall> = Vec::new();
        let mut dropped = Vec::new();
        for r in &self.rules {
            if let Some(reason) = self.drop_reason(r, kernel) {
                dropped.push(Dropped {
                    index: r.index,
                    names: r.names.clone(),
                    reason,
                });
                continue;
            }
            let arches: Vec<TargetArch> = TARGET_ARCHES
                .into_iter()
                .filter(|a| arch_applies(a.docker_name(), &r.includes, &r.excludes))
                .collect();
            let names: Vec<String> = r
                .names
                .iter()
                .filter(|n| {
                    arches
                        .iter()
                        .any(|a| matches!(resolve(n, *a), Resolution::Number(_)))
                })
                .cloned()
                .collect();
            if names.is_empty() {
                dropped.push(Dropped {
                    index: r.index,
                    names: r.names.clone(),
                    reason: format!(
                        "names no syscall of {}",
                        arches
                            .iter()
                            .map(|a| a.name())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                });
                continue;
            }
            if let [only] = arches[..] {
                let other = only.other();
                if let Some(n) = names
                    .iter()
                    .find(|n| matches!(resolve(n, other), Resolution::Number(_)))
                {
                    return Err(SeccompError::Invalid {
                        at: format!("syscalls[{}]", r.index),
                        what: format!(
                            "rule is limited to {only} but \"{n}\" is also a syscall on {other}; \
                             the OCI form cannot limit a rule to one architecture"
                        ),
                    });
                }
            }
            let mut b = LinuxSyscallBuilder::default().names(names).action(r.action);
            if let Some(e) = r.errno_ret {
                b = b.errno_ret(e);
            }
            if !r.args.is_empty() {
                b = b.args(r.args.clone());
            }
            syscalls.push(b.build().map_err(|e| SeccompError::Invalid {
                at: format!("syscalls[{}]", r.index),
                what: e.to_string(),
            })?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(self.default_action)
            .architectures(TARGET_ARCHES.iter().map(|a| a.oci()).collect::<Vec<_>>())
            .syscalls(syscalls);
        if let Some(e) = self.default_errno_ret {
            b = b.default_errno_ret(e);
        }
        if !self.flags.is_empty() {
            b = b.flags(self.flags.clone());
        }
        if let Some(p) = &self.listener_path {
            b = b.listener_path(p.clone());
        }
        if let Some(m) = &self.listener_metadata {
            b = b.listener_metadata(m.clone());
        }
        let spec = b.build().map_err(|e| SeccompError::Invalid {
            at: "profile".into(),
            what: e.to_string(),
        })?;
        Ok((spec, dropped))
    }
}

impl Profile {
    fn drop_reason(&self, r: &Rule, kernel: Option<KernelVersion>) -> Option<String> {
        if r.action == self.default_action
            && (r.action != LinuxSeccompAction::ScmpActErrno
                || r.errno_ret.unwrap_or(1) == self.default_errno_ret.unwrap_or(1))
        {
            // A rule that repeats the default action only documents a denial; runtimes
            // and libseccomp reject or skip it, so it stays out of the spec.
            return Some("same as the default action (documents a denial)".into());
        }
        drop_reason(r, kernel)
    }
}

fn drop_reason(r: &Rule, kernel: Option<KernelVersion>) -> Option<String> {
    if !r.includes.caps.is_empty() {
        return Some(format!(
            "needs {}, which stockade never grants",
            r.includes.caps.join("+")
        ));
    }
    if !TARGET_ARCHES
        .iter()
        .any(|a| arch_applies(a.docker_name(), &r.includes, &r.excludes))
    {
        return Some(if r.includes.arches.is_empty() {
            format!("excluded on {}", r.excludes.arches.join(","))
        } else {
            format!("only for {}", r.includes.arches.join(","))
        });
    }
    if let Some(min) = r.includes.min_kernel {
        match kernel {
            None => {
                return Some(format!(
                    "needs kernel >= {min}, and the kernel is not known when the spec is built"
                ))
            }
            Some(k) if k < min => return Some(format!("needs kernel >= {min}; this is {k}")),
            Some(_) => {}
        }
    }
    if let (Some(min), Some(k)) = (r.excludes.min_kernel, kernel) {
        if k >= min {
            return Some(format!("excluded on kernel >= {min}; this is {k}"));
        }
    }
    None
}

/// The `SCMP_ACT_*` name of an action.
pub fn action_name(a: LinuxSeccompAction) -> &'static str {
    use LinuxSeccompAction::*;
    match a {
        ScmpActKill => "SCMP_ACT_KILL",
        ScmpActKillThread => "SCMP_ACT_KILL_THREAD",
        ScmpActKillProcess => "SCMP_ACT_KILL_PROCESS",
        ScmpActTrap => "SCMP_ACT_TRAP",
        ScmpActErrno => "SCMP_ACT_ERRNO",
        ScmpActNotify => "SCMP_ACT_NOTIFY",
        ScmpActTrace => "SCMP_ACT_TRACE",
        ScmpActLog => "SCMP_ACT_LOG",
        ScmpActAllow => "SCMP_ACT_ALLOW",
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "default action: {}", action_name(self.default_action))?;
        if self.default_action == LinuxSeccompAction::ScmpActErrno {
            write!(f, " (errno {})", self.default_errno_ret.unwrap_or(1))?;
        }
        writeln!(f)?;
        for c in &self.allowed {
            writeln!(
                f,
                "{}: {} syscalls allowed unconditionally, {} more only under conditions",
                c.arch, c.unconditional, c.conditional_only
            )?;
        }
        writeln!(f, "rules with conditions: {}", self.conditional_rules.len())?;
        for r in &self.conditional_rules {
            writeln!(f, "  {r}")?;
        }
        writeln!(f, "rules dropped: {}", self.dropped.len())?;
        for d in &self.dropped {
            writeln!(
                f,
                "  syscalls[{}] {}: {}",
                d.index,
                d.names.join(","),
                d.reason
            )?;
        }
        if !self.names.other_arches.is_empty() {
            writeln!(
                f,
                "names not on the target arches (no effect on x86_64 or aarch64): {}",
                self.names.other_arches.len()
            )?;
            writeln!(f, "  {}", self.names.other_arches.join(" "))?;
        }
        if !self.names.too_new.is_empty() {
            writeln!(
                f,
                "names too new for libseccomp {} (calls get the default action): {}",
                libseccomp_version(),
                self.names.too_new.len()
            )?;
            for t in &self.names.too_new {
                let only = t
                    .syscall
                    .only_on
                    .map(|a| format!(", {a} only"))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "  {} {} (Linux {}{only})",
                    t.at, t.syscall.name, t.syscall.since
                )?;
            }
        }
        Ok(())
    }
}
