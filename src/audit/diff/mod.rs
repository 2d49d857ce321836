//! `stockade audit --diff OLD NEW`: only the security-relevant differences between two
//! specs, each marked as loosening or tightening, plus the findings NEW gains and loses.
//! Command line, environment, working directory and annotations are not compared.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde::Serialize;

use super::checks::{namespace_state, normalize_cap, NsState};
use super::model::{MountView, SpecView, CAP_SETS, HOOK_KINDS};
use super::syscalls;
use super::{Finding, ParsedSpec};

mod filesystem;
mod limits;
use filesystem::{devices, mounts, paths};
use limits::{hooks, limits, sysctls};

/// Which way a change moves the container's privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// NEW allows more.
    Loosened,
    /// NEW allows less.
    Tightened,
    /// Different, neither clearly more nor less.
    Changed,
}

/// One security-relevant difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Whether NEW grants more, less, or something different.
    pub direction: Direction,
    /// `capabilities`, `namespaces`, `seccomp`, `mounts`, `limits`, …
    pub area: &'static str,
    /// One line, what changed.
    pub message: String,
}

/// The differences, and the findings NEW has that OLD had not (and the reverse).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Every security-relevant difference, in a stable order.
    pub changes: Vec<Change>,
    /// Findings NEW has that OLD had not.
    pub new_findings: Vec<Finding>,
    /// Findings OLD had that NEW has not.
    pub resolved_findings: Vec<Finding>,
}

struct Acc(Vec<Change>);

impl Acc {
    fn push(&mut self, direction: Direction, area: &'static str, message: String) {
        self.0.push(Change {
            direction,
            area,
            message,
        });
    }
}

/// Compares `old` with `new`.
pub fn diff(old: &ParsedSpec, new: &ParsedSpec) -> Diff {
    let (o, n) = (&old.view, &new.view);
    let mut acc = Acc(Vec::new());
    capabilities(o, n, &mut acc);
    namespaces(o, n, &mut acc);
    process(o, n, &mut acc);
    seccomp(o, n, &mut acc);
    mounts(o, n, &mut acc);
    paths(o, n, &mut acc);
    devices(o, n, &mut acc);
    limits(o, n, &mut acc);
    sysctls(o, n, &mut acc);
    hooks(o, n, &mut acc);

    let (ro, rn) = (old.audit(), new.audit());
    // Identity across specs: rule and subject (pointers and wording depend on layout).
    let key = |f: &Finding| (f.rule, f.subject.clone());
    let old_keys: BTreeSet<_> = ro.findings.iter().map(key).collect();
    let new_keys: BTreeSet<_> = rn.findings.iter().map(key).collect();
    Diff {
        changes: acc.0,
        new_findings: rn
            .findings
            .iter()
            .filter(|f| !old_keys.contains(&key(f)))
            .cloned()
            .collect(),
        resolved_findings: ro
            .findings
            .iter()
            .filter(|f| !new_keys.contains(&key(f)))
            .cloned()
            .collect(),
    }
}

/// Capability → the sets holding it, as indexes into [`CAP_SETS`] (so they print in the
/// runtime spec's order).
fn caps_of(s: &SpecView) -> BTreeMap<String, BTreeSet<usize>> {
    let mut m: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    if let Some(c) = s.process.as_ref().and_then(|p| p.capabilities.as_ref()) {
        for (i, set) in CAP_SETS.iter().enumerate() {
            for cap in c.set(set) {
                m.entry(normalize_cap(cap)).or_default().insert(i);
            }
        }
    }
    m
}

fn capabilities(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let (co, cn) = (caps_of(o), caps_of(n));
    let all: BTreeSet<&String> = co.keys().chain(cn.keys()).collect();
    let empty = BTreeSet::new();
    for cap in all {
        let so = co.get(cap).unwrap_or(&empty);
        let sn = cn.get(cap).unwrap_or(&empty);
        let gained: Vec<&str> = sn.difference(so).map(|i| CAP_SETS[*i]).collect();
        let lost: Vec<&str> = so.difference(sn).map(|i| CAP_SETS[*i]).collect();
        if !gained.is_empty() {
            acc.push(
                Direction::Loosened,
                "capabilities",
                format!("{cap} gained in {}", gained.join(", ")),
            );
        }
        if !lost.is_empty() {
            acc.push(
                Direction::Tightened,
                "capabilities",
                format!("{cap} dropped from {}", lost.join(", ")),
            );
        }
    }
}

fn namespaces(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    for typ in [
        "pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time",
    ] {
        let (so, sn) = (namespace_state(o, typ).0, namespace_state(n, typ).0);
        if so == sn {
            continue;
        }
        let desc = |s: &NsState| match s {
            NsState::Own => "its own".to_string(),
            NsState::Host => "the host's".to_string(),
            NsState::Joined(p) => format!("joined from {p}"),
        };
        let dir = match (&so, &sn) {
            (_, NsState::Own) => Direction::Tightened,
            (_, NsState::Host) => Direction::Loosened,
            (NsState::Own, NsState::Joined(_)) => Direction::Loosened,
            _ => Direction::Changed,
        };
        acc.push(
            dir,
            "namespaces",
            format!("{typ} namespace: {} → {}", desc(&so), desc(&sn)),
        );
    }
}

fn process(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let uid = |s: &SpecView| {
        s.process
            .as_ref()
            .map(|p| p.user.as_ref().and_then(|u| u.uid).unwrap_or(0))
    };
    let (uo, un) = (uid(o), uid(n));
    if uo != un {
        let dir = match (uo, un) {
            (_, Some(0)) => Direction::Loosened,
            (Some(0), _) => Direction::Tightened,
            _ => Direction::Changed,
        };
        acc.push(dir, "user", format!("uid {} → {}", opt(uo), opt(un)));
    }
    let nnp = |s: &SpecView| {
        s.process
            .as_ref()
            .and_then(|p| p.no_new_privileges)
            .unwrap_or(false)
    };
    if nnp(o) != nnp(n) {
        let dir = if nnp(n) {
            Direction::Tightened
        } else {
            Direction::Loosened
        };
        acc.push(
            dir,
            "process",
            format!("noNewPrivileges {} → {}", nnp(o), nnp(n)),
        );
    }
    let ro = |s: &SpecView| s.root.as_ref().and_then(|r| r.readonly).unwrap_or(false);
    if ro(o) != ro(n) {
        let dir = if ro(n) {
            Direction::Tightened
        } else {
            Direction::Loosened
        };
        acc.push(
            dir,
            "filesystem",
            format!("root.readonly {} → {}", ro(o), ro(n)),
        );
    }
    for (field, get) in [
        (
            "apparmorProfile",
            (|s: &SpecView| s.process.as_ref().and_then(|p| p.apparmor_profile.clone()))
                as fn(&SpecView) -> Option<String>,
        ),
        ("selinuxLabel", |s: &SpecView| {
            s.process.as_ref().and_then(|p| p.selinux_label.clone())
        }),
    ] {
        let (a, b) = (
            get(o).filter(|s| !s.is_empty()),
            get(n).filter(|s| !s.is_empty()),
        );
        if a != b {
            let dir = match b.as_deref() {
                // Unconfined and no profile are the same for the runtime.
                None if a.as_deref() == Some("unconfined") => Direction::Changed,
                None | Some("unconfined") => Direction::Loosened,
                _ if a.is_none() => Direction::Tightened,
                _ => Direction::Changed,
            };
            acc.push(
                dir,
                "lsm",
                format!(
                    "{field} {} → {}",
                    a.as_deref().unwrap_or("(none)"),
                    b.as_deref().unwrap_or("(none)")
                ),
            );
        }
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("(none)".to_string(), |v| v.to_string())
}

fn seccomp(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let so = o.linux.as_ref().and_then(|l| l.seccomp.as_ref());
    let sn = n.linux.as_ref().and_then(|l| l.seccomp.as_ref());
    match (so, sn) {
        (None, None) => {}
        (Some(_), None) => acc.push(
            Direction::Loosened,
            "seccomp",
            "seccomp profile removed: every system call allowed".into(),
        ),
        (None, Some(b)) => acc.push(
            Direction::Tightened,
            "seccomp",
            format!("seccomp profile added (defaultAction {})", b.default_action),
        ),
        (Some(a), Some(b)) => {
            if a.default_action != b.default_action {
                let (ca, cb) = (
                    syscalls::classify(&a.default_action),
                    syscalls::classify(&b.default_action),
                );
                let dir = match cb.cmp(&ca) {
                    std::cmp::Ordering::Greater => Direction::Loosened,
                    std::cmp::Ordering::Less => Direction::Tightened,
                    std::cmp::Ordering::Equal => Direction::Changed,
                };
                acc.push(
                    dir,
                    "seccomp",
                    format!("defaultAction {} → {}", a.default_action, b.default_action),
                );
            }
            let mut names: BTreeSet<&str> = syscalls::named_calls(a).into_iter().collect();
            names.extend(syscalls::named_calls(b));
            names.extend(syscalls::DANGEROUS.iter().map(|(n, _)| *n));
            for name in names {
                let (ea, eb) = (syscalls::effect(a, name), syscalls::effect(b, name));
                if ea.openness() == eb.openness() {
                    continue;
                }
                let dir = if eb.openness() > ea.openness() {
                    Direction::Loosened
                } else {
                    Direction::Tightened
                };
                let danger = syscalls::danger(name)
                    .map(|d| format!(" [{d}]"))
                    .unwrap_or_default();
                acc.push(
                    dir,
                    "seccomp",
                    format!("{name}: {} → {}{danger}", ea.describe(), eb.describe()),
                );
            }
        }
    }
}

/// The diff as text: one line per change (`+` loosened, `-` tightened, `~` changed), then
/// the findings gained and resolved.
pub fn text(old: &str, new: &str, d: &Diff) -> String {
    let mut s = String::new();
    let count = |dir| d.changes.iter().filter(|c| c.direction == dir).count();
    let _ = writeln!(
        s,
        "{old} → {new}: {} loosened, {} tightened, {} changed; {} new finding(s), {} resolved",
        count(Direction::Loosened),
        count(Direction::Tightened),
        count(Direction::Changed),
        d.new_findings.len(),
        d.resolved_findings.len()
    );
    for c in &d.changes {
        let mark = match c.direction {
            Direction::Loosened => '+',
            Direction::Tightened => '-',
            Direction::Changed => '~',
        };
        let _ = writeln!(
            s,
            "  {mark} {:<9}  {:<12}  {}",
            c.direction_str(),
            c.area,
            c.message
        );
    }
    for (title, list) in [
        ("new findings", &d.new_findings),
        ("resolved findings", &d.resolved_findings),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "{title}:");
        for f in list {
            let _ = writeln!(
                s,
                "  {:<8}  {:<12}  {}: {}",
                f.severity.as_str(),
                f.rule,
                f.title,
                f.message
            );
        }
    }
    s
}

impl Change {
    fn direction_str(&self) -> &'static str {
        match self.direction {
            Direction::Loosened => "loosened",
            Direction::Tightened => "tightened",
            Direction::Changed => "changed",
        }
    }
}
