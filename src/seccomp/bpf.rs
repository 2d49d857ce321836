//! Compiling an OCI `LinuxSeccomp` to a libseccomp filter for one architecture, as the
//! runtime does, and exporting its BPF.

use std::os::fd::AsFd;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::arch::{classify, resolve, NameClass, Resolution, TargetArch};
use super::SeccompError;

/// errno of an `SCMP_ACT_ERRNO` action that gives none (runc's choice too).
const EPERM: u32 = 1;

fn scmp_action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    use LinuxSeccompAction::*;
    let errno = errno.unwrap_or(EPERM);
    Ok(match a {
        ScmpActKill | ScmpActKillThread => ScmpAction::KillThread,
        ScmpActKillProcess => ScmpAction::KillProcess,
        ScmpActTrap => ScmpAction::Trap,
        ScmpActErrno => ScmpAction::Errno(
            i32::try_from(errno)
                .ok()
                .filter(|e| *e <= 4095)
                .ok_or_else(|| format!("errno {errno} is out of range"))?,
        ),
        ScmpActTrace => ScmpAction::Trace(
            u16::try_from(errno).map_err(|_| format!("trace value {errno} is out of range"))?,
        ),
        ScmpActLog => ScmpAction::Log,
        ScmpActNotify => ScmpAction::Notify,
        ScmpActAllow => ScmpAction::Allow,
    })
}

fn compile_err(arch: TargetArch, at: String, reason: impl ToString) -> SeccompError {
    SeccompError::Compile {
        arch: arch.name(),
        at,
        reason: reason.to_string(),
    }
}

/// Builds the libseccomp filter for `arch` from an OCI seccomp section. Names that are not
/// syscalls on `arch`, or that are in [`NEWER_SYSCALLS`](super::NEWER_SYSCALLS) and unknown
/// to the installed library, are skipped (the runtime does the same); rules whose action equals
/// the default action are skipped as redundant. The filter keeps libseccomp's defaults
/// otherwise (bad-architecture action: kill; `no_new_privs` set on load).
pub fn compile(filter: &LinuxSeccomp, arch: TargetArch) -> Result<ScmpFilterContext, SeccompError> {
    if let Some(archs) = filter.architectures() {
        if !archs.contains(&arch.oci()) {
            return Err(compile_err(
                arch,
                "architectures".into(),
                "the filter does not list this architecture",
            ));
        }
    }
    let default = scmp_action(filter.default_action(), filter.default_errno_ret())
        .map_err(|e| compile_err(arch, "defaultAction".into(), e))?;
    let mut ctx =
        ScmpFilterContext::new(default).map_err(|e| compile_err(arch, "filter".into(), e))?;
    if ScmpArch::native() != arch.scmp() {
        ctx.add_arch(arch.scmp())
            .map_err(|e| compile_err(arch, "filter".into(), e))?;
        ctx.remove_arch(ScmpArch::native())
            .map_err(|e| compile_err(arch, "filter".into(), e))?;
    }
    for (i, rule) in filter.syscalls().iter().flatten().enumerate() {
        let at = format!("syscalls[{i}]");
        let action = scmp_action(rule.action(), rule.errno_ret())
            .map_err(|e| compile_err(arch, at.clone(), e))?;
        if action == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let op = match a.op() {
                    LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                    LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                    LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                    LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                    LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                    LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                    LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(a.value()),
                };
                let datum = match a.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
                    _ => a.value(),
                };
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        for name in rule.names() {
            let nr = match resolve(name, arch) {
                Resolution::Number(n) => n,
                Resolution::Absent => continue,
                // Too new for this libseccomp: it cannot be filtered and gets the default
                // action (runc skips such names too).
                Resolution::Unknown if matches!(classify(name), NameClass::Newer(_)) => continue,
                Resolution::Unknown => {
                    return Err(compile_err(
                        arch,
                        at.clone(),
                        format!("unknown syscall {name:?}"),
                    ))
                }
            };
            ctx.add_rule_conditional(action, nr, &conds)
                .map_err(|e| compile_err(arch, format!("{at} {name}"), e))?;
        }
    }
    Ok(ctx)
}

/// Compiles `filter` for `arch` and writes the BPF program (an array of `struct
/// sock_filter`, host byte order) to `out`.
pub fn export_bpf(
    filter: &LinuxSeccomp,
    arch: TargetArch,
    out: impl AsFd,
) -> Result<(), SeccompError> {
    compile(filter, arch)?
        .export_bpf(out)
        .map_err(|e| compile_err(arch, "export".into(), e))
}
