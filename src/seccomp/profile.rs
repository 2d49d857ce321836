//! Docker's seccomp profile format: the serde document and its validation into a
//! [`Profile`].

use std::fmt;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use serde::Deserialize;

use super::arch::{classify, NameClass, DOCKER_ARCH_NAMES};
use super::SeccompError;

/// The JSON document as written (Docker's `types.Seccomp`). Every field Docker defines is
/// accepted; anything else is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ProfileDoc {
    /// Required: what happens to a syscall no rule matches.
    default_action: String,
    /// errno for an `SCMP_ACT_ERRNO` default action; absent means EPERM (1), as runc does.
    #[serde(default)]
    default_errno_ret: Option<u32>,
    /// Accepted for compatibility and checked, but not used: stockade always emits
    /// [`TARGET_ARCHES`](super::TARGET_ARCHES) (see [`TargetArch`](super::TargetArch)).
    #[serde(default)]
    architectures: Vec<String>,
    /// Same as `architectures`.
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    /// Seccomp filter flags (`SECCOMP_FILTER_FLAG_*`); absent means none.
    #[serde(default)]
    flags: Vec<String>,
    /// Socket of a seccomp agent for `SCMP_ACT_NOTIFY`; absent means none.
    #[serde(default)]
    listener_path: Option<PathBuf>,
    /// Opaque data for the seccomp agent; absent means none.
    #[serde(default)]
    listener_metadata: Option<String>,
    /// The rules, in order; absent means none.
    #[serde(default)]
    syscalls: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleDoc {
    /// The syscalls the rule applies to.
    #[serde(default)]
    names: Vec<String>,
    /// Docker's deprecated single-name form; joined to `names`.
    #[serde(default)]
    name: Option<String>,
    action: String,
    /// errno for `SCMP_ACT_ERRNO` (absent: EPERM) or the value for `SCMP_ACT_TRACE`.
    #[serde(default)]
    errno_ret: Option<u32>,
    /// Conditions, all of which must hold; absent means none.
    #[serde(default)]
    args: Option<Vec<ArgDoc>>,
    /// Why the rule exists (required in stockade's own profiles, optional in user ones).
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    includes: Option<FilterDoc>,
    #[serde(default)]
    excludes: Option<FilterDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ArgDoc {
    index: u64,
    value: u64,
    /// Only meaningful for `SCMP_CMP_MASKED_EQ` (the value compared after masking with
    /// `value`); absent means 0.
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FilterDoc {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// A kernel version, as `includes.minKernel` gives it (`"4.8"`, `"5.10.12"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number (0 when not given).
    pub patch: u32,
}

impl KernelVersion {
    /// Parses `MAJOR.MINOR[.PATCH]`; anything after the numbers (`-rc1`, `-amd64`) is ignored.
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let mut parts = s[..end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        Some(KernelVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// When a rule applies (Docker's `includes` / `excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// Docker architecture names (`amd64`, `arm64`, ...); empty means any.
    pub arches: Vec<String>,
    /// Capabilities (`CAP_SYS_ADMIN`, ...); empty means none.
    pub caps: Vec<String>,
    /// The lowest kernel the rule applies on (`minKernel`).
    pub min_kernel: Option<KernelVersion>,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Position in the document's `syscalls` array, for messages.
    pub index: usize,
    /// The syscall names.
    pub names: Vec<String>,
    /// What the filter does on a match.
    pub action: LinuxSeccompAction,
    /// The errno returned, for `SCMP_ACT_ERRNO`.
    pub errno_ret: Option<u32>,
    /// Conditions in OCI form (for `SCMP_CMP_MASKED_EQ`, `value` is the mask and
    /// `valueTwo` the value compared, as in libseccomp).
    pub args: Vec<LinuxSeccompArg>,
    /// The profile's comment for the rule.
    pub comment: Option<String>,
    /// The rule applies only where these hold.
    pub includes: Condition,
    /// The rule does not apply where these hold.
    pub excludes: Condition,
}

/// A parsed and checked profile. Make one with [`Profile::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// What the filter does with a syscall no rule matches.
    pub default_action: LinuxSeccompAction,
    /// Its errno, for `SCMP_ACT_ERRNO`.
    pub default_errno_ret: Option<u32>,
    /// Filter flags (`SECCOMP_FILTER_FLAG_*`).
    pub flags: Vec<LinuxSeccompFilterFlag>,
    /// The seccomp notify listener's socket (`listenerPath`).
    pub listener_path: Option<PathBuf>,
    /// Metadata passed to that listener.
    pub listener_metadata: Option<String>,
    /// The rules, in document order.
    pub rules: Vec<Rule>,
}

/// Parses an action name (`SCMP_ACT_*`).
pub(crate) fn parse_action(s: &str) -> Option<LinuxSeccompAction> {
    use LinuxSeccompAction::*;
    Some(match s {
        "SCMP_ACT_KILL" => ScmpActKill,
        "SCMP_ACT_KILL_THREAD" => ScmpActKillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpActKillProcess,
        "SCMP_ACT_TRAP" => ScmpActTrap,
        "SCMP_ACT_ERRNO" => ScmpActErrno,
        "SCMP_ACT_TRACE" => ScmpActTrace,
        "SCMP_ACT_LOG" => ScmpActLog,
        "SCMP_ACT_NOTIFY" => ScmpActNotify,
        "SCMP_ACT_ALLOW" => ScmpActAllow,
        _ => return None,
    })
}

fn parse_op(s: &str) -> Option<LinuxSeccompOperator> {
    use LinuxSeccompOperator::*;
    Some(match s {
        "SCMP_CMP_NE" => ScmpCmpNe,
        "SCMP_CMP_LT" => ScmpCmpLt,
        "SCMP_CMP_LE" => ScmpCmpLe,
        "SCMP_CMP_EQ" => ScmpCmpEq,
        "SCMP_CMP_GE" => ScmpCmpGe,
        "SCMP_CMP_GT" => ScmpCmpGt,
        "SCMP_CMP_MASKED_EQ" => ScmpCmpMaskedEq,
        _ => return None,
    })
}

fn parse_flag(s: &str) -> Option<LinuxSeccompFilterFlag> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn invalid(at: impl Into<String>, what: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        at: at.into(),
        what: what.into(),
    }
}

impl Profile {
    /// Parses a Docker-format profile and checks it: JSON shape (unknown fields are errors),
    /// action and operator names, argument indexes, architecture and capability names,
    /// kernel versions, and every syscall name against libseccomp's tables for every
    /// architecture it supports. A name that is a system call on no architecture is an
    /// error (a typo), unless it is in [`NEWER_SYSCALLS`](super::NEWER_SYSCALLS) and only
    /// the installed library is too old to know it. Names of other architectures' calls
    /// (`chown32`) are accepted and have no effect on x86_64 and aarch64; see
    /// [`Profile::name_notes`].
    pub fn parse(json: &str) -> Result<Profile, SeccompError> {
        let doc: ProfileDoc = serde_json::from_str(json).map_err(|e| {
            let one_line = e.to_string().replace('\n', " ");
            match e.classify() {
                serde_json::error::Category::Data => SeccompError::Shape(one_line),
                _ => SeccompError::NotJson(one_line),
            }
        })?;
        Profile::from_doc(doc)
    }

    fn from_doc(doc: ProfileDoc) -> Result<Profile, SeccompError> {
        let default_action =
            parse_action(&doc.default_action).ok_or_else(|| SeccompError::UnknownAction {
                at: "defaultAction".into(),
                action: doc.default_action.clone(),
            })?;
        if doc.default_errno_ret.is_some() && default_action != LinuxSeccompAction::ScmpActErrno {
            return Err(invalid(
                "defaultErrnoRet",
                "only meaningful with defaultAction SCMP_ACT_ERRNO",
            ));
        }
        for (i, a) in doc.architectures.iter().enumerate() {
            check_scmp_arch(&format!("architectures[{i}]"), a)?;
        }
        for (i, m) in doc.arch_map.iter().enumerate() {
            check_scmp_arch(&format!("archMap[{i}].architecture"), &m.architecture)?;
            for (j, s) in m.sub_architectures.iter().flatten().enumerate() {
                check_scmp_arch(&format!("archMap[{i}].subArchitectures[{j}]"), s)?;
            }
        }
        let flags = doc
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| {
                parse_flag(f)
                    .ok_or_else(|| invalid(format!("flags[{i}]"), format!("unknown flag {f:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut rules = Vec::with_capacity(doc.syscalls.len());
        for (i, r) in doc.syscalls.into_iter().enumerate() {
            rules.push(rule_from_doc(i, r)?);
        }
        let uses_notify = default_action == LinuxSeccompAction::ScmpActNotify
            || rules
                .iter()
                .any(|r| r.action == LinuxSeccompAction::ScmpActNotify);
        if uses_notify && doc.listener_path.is_none() {
            return Err(invalid(
                "listenerPath",
                "required when an action is SCMP_ACT_NOTIFY",
            ));
        }
        Ok(Profile {
            default_action,
            default_errno_ret: doc.default_errno_ret,
            flags,
            listener_path: doc.listener_path,
            listener_metadata: doc.listener_metadata,
            rules,
        })
    }
}

fn check_scmp_arch(at: &str, s: &str) -> Result<(), SeccompError> {
    s.parse::<libseccomp::ScmpArch>()
        .map(|_| ())
        .map_err(|_| invalid(at, format!("unknown architecture {s:?}")))
}

fn condition_from_doc(at: &str, f: Option<FilterDoc>) -> Result<Condition, SeccompError> {
    let f = f.unwrap_or_default();
    for (k, a) in f.arches.iter().enumerate() {
        if !DOCKER_ARCH_NAMES.contains(&a.as_str()) {
            return Err(invalid(
                format!("{at}.arches[{k}]"),
                format!("unknown architecture {a:?}"),
            ));
        }
    }
    for (k, c) in f.caps.iter().enumerate() {
        let ok = c.len() > 4
            && c.starts_with("CAP_")
            && c[4..].bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
        if !ok {
            return Err(invalid(
                format!("{at}.caps[{k}]"),
                format!("not a capability name: {c:?}"),
            ));
        }
    }
    let min_kernel = match &f.min_kernel {
        None => None,
        Some(s) => Some(KernelVersion::parse(s).ok_or_else(|| {
            invalid(
                format!("{at}.minKernel"),
                format!("not a kernel version: {s:?}"),
            )
        })?),
    };
    Ok(Condition {
        arches: f.arches,
        caps: f.caps,
        min_kernel,
    })
}

fn rule_from_doc(i: usize, r: RuleDoc) -> Result<Rule, SeccompError> {
    let at = format!("syscalls[{i}]");
    let action = parse_action(&r.action).ok_or_else(|| SeccompError::UnknownAction {
        at: format!("{at}.action"),
        action: r.action.clone(),
    })?;
    if r.errno_ret.is_some()
        && !matches!(
            action,
            LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
        )
    {
        return Err(invalid(
            format!("{at}.errnoRet"),
            "only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
        ));
    }
    let mut names = r.names;
    if let Some(n) = r.name {
        names.push(n);
    }
    if names.is_empty() {
        return Err(invalid(format!("{at}.names"), "no syscall names"));
    }
    let includes = condition_from_doc(&format!("{at}.includes"), r.includes)?;
    let excludes = condition_from_doc(&format!("{at}.excludes"), r.excludes)?;

    let mut args = Vec::new();
    for (k, a) in r.args.unwrap_or_default().into_iter().enumerate() {
        let aat = format!("{at}.args[{k}]");
        let op = parse_op(&a.op).ok_or_else(|| SeccompError::UnknownOperator {
            at: format!("{aat}.op"),
            op: a.op.clone(),
        })?;
        if a.index > 5 {
            return Err(invalid(
                format!("{aat}.index"),
                format!("{} is not an argument index (0 to 5)", a.index),
            ));
        }
        let mut b = LinuxSeccompArgBuilder::default()
            .index(a.index as usize)
            .value(a.value)
            .op(op);
        if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
            b = b.value_two(a.value_two);
        } else if a.value_two != 0 {
            return Err(invalid(
                format!("{aat}.valueTwo"),
                "only meaningful with SCMP_CMP_MASKED_EQ",
            ));
        }
        args.push(b.build().map_err(|e| invalid(aat.clone(), e.to_string()))?);
    }

    for (j, name) in names.iter().enumerate() {
        let nat = format!("{at}.names[{j}]");
        if name.is_empty() {
            return Err(invalid(nat, "empty syscall name"));
        }
        if classify(name) == NameClass::Unknown {
            return Err(SeccompError::UnknownSyscall {
                at: nat,
                name: name.clone(),
            });
        }
    }
    Ok(Rule {
        index: i,
        names,
        action,
        errno_ret: r.errno_ret,
        args,
        comment: r.comment,
        includes,
        excludes,
    })
}

/// Whether a rule with these conditions applies on the Docker-named architecture, judged
/// by `arches` alone.
pub(crate) fn arch_applies(docker_arch: &str, inc: &Condition, exc: &Condition) -> bool {
    (inc.arches.is_empty() || inc.arches.iter().any(|a| a == docker_arch))
        && !exc.arches.iter().any(|a| a == docker_arch)
}
