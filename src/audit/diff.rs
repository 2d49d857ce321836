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
    pub direction: Direction,
    /// `capabilities`, `namespaces`, `seccomp`, `mounts`, `limits`, …
    pub area: &'static str,
    pub message: String,
}

/// The differences, and the findings NEW has that OLD had not (and the reverse).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub new_findings: Vec<Finding>,
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

fn mount_desc(m: &MountView) -> String {
    format!(
        "{} {} {} [{}]",
        m.destination.as_deref().unwrap_or("?"),
        m.typ.as_deref().unwrap_or("-"),
        m.source.as_deref().unwrap_or("-"),
        m.options.as_deref().unwrap_or_default().join(",")
    )
}

/// Options whose removal loosens a mount.
const PROTECTIVE_OPTIONS: &[&str] = &["ro", "nosuid", "nodev", "noexec"];

fn mounts(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let by_dest = |s: &SpecView| -> BTreeMap<String, MountView> {
        s.mounts
            .iter()
            .flatten()
            .map(|m| (m.destination.clone().unwrap_or_default(), m.clone()))
            .collect()
    };
    let (mo, mn) = (by_dest(o), by_dest(n));
    for (dest, m) in &mn {
        match mo.get(dest) {
            None => acc.push(
                if m.is_bind() {
                    Direction::Loosened
                } else {
                    Direction::Changed
                },
                "mounts",
                format!("mount added: {}", mount_desc(m)),
            ),
            Some(old) => {
                if old.source != m.source || old.typ != m.typ {
                    acc.push(
                        Direction::Changed,
                        "mounts",
                        format!("mount {dest}: {} → {}", mount_desc(old), mount_desc(m)),
                    );
                }
                for opt in PROTECTIVE_OPTIONS {
                    let (had, has) = if *opt == "ro" {
                        (old.is_read_only(), m.is_read_only())
                    } else {
                        (old.has_option(opt), m.has_option(opt))
                    };
                    if had && !has {
                        acc.push(
                            Direction::Loosened,
                            "mounts",
                            format!("mount {dest}: `{opt}` removed"),
                        );
                    } else if !had && has {
                        acc.push(
                            Direction::Tightened,
                            "mounts",
                            format!("mount {dest}: `{opt}` added"),
                        );
                    }
                }
                let shared = |m: &MountView| m.has_option("shared") || m.has_option("rshared");
                if !shared(old) && shared(m) {
                    acc.push(
                        Direction::Loosened,
                        "mounts",
                        format!("mount {dest}: shared propagation"),
                    );
                }
            }
        }
    }
    for (dest, m) in &mo {
        if !mn.contains_key(dest) {
            acc.push(
                if m.is_bind() {
                    Direction::Tightened
                } else {
                    Direction::Changed
                },
                "mounts",
                format!("mount removed: {}", mount_desc(m)),
            );
        }
    }
    let prop = |s: &SpecView| s.linux.as_ref().and_then(|l| l.rootfs_propagation.clone());
    if prop(o) != prop(n) {
        acc.push(
            Direction::Changed,
            "mounts",
            format!("rootfsPropagation {} → {}", opt(prop(o)), opt(prop(n))),
        );
    }
}

fn paths(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    type Get = fn(&SpecView) -> BTreeSet<String>;
    let masked: Get = |s| {
        s.linux
            .as_ref()
            .and_then(|l| l.masked_paths.clone())
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    let readonly: Get = |s| {
        s.linux
            .as_ref()
            .and_then(|l| l.readonly_paths.clone())
            .unwrap_or_default()
            .into_iter()
            .collect()
    };
    for (what, get) in [("masked", masked), ("read-only", readonly)] {
        let (a, b) = (get(o), get(n));
        for p in a.difference(&b) {
            acc.push(
                Direction::Loosened,
                "paths",
                format!("{p} no longer {what}"),
            );
        }
        for p in b.difference(&a) {
            acc.push(Direction::Tightened, "paths", format!("{p} now {what}"));
        }
    }
}

fn devices(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let rules = |s: &SpecView| -> Vec<String> {
        s.linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .and_then(|r| r.devices.as_ref())
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{} {} {}:{} {}",
                    if d.allow { "allow" } else { "deny" },
                    d.typ.as_deref().unwrap_or("a"),
                    d.major.map_or("*".into(), |v| v.to_string()),
                    d.minor.map_or("*".into(), |v| v.to_string()),
                    d.access.as_deref().unwrap_or("rwm")
                )
            })
            .collect()
    };
    let (a, b) = (rules(o), rules(n));
    if a != b {
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.iter().collect(), b.iter().collect());
        for r in sb.difference(&sa) {
            let dir = if r.starts_with("allow") {
                Direction::Loosened
            } else {
                Direction::Tightened
            };
            acc.push(dir, "devices", format!("device rule added: {r}"));
        }
        for r in sa.difference(&sb) {
            let dir = if r.starts_with("allow") {
                Direction::Tightened
            } else {
                Direction::Loosened
            };
            acc.push(dir, "devices", format!("device rule removed: {r}"));
        }
        if sa == sb {
            acc.push(
                Direction::Changed,
                "devices",
                "device rules reordered".into(),
            );
        }
    }
    let nodes = |s: &SpecView| -> BTreeSet<String> {
        s.linux
            .as_ref()
            .and_then(|l| l.devices.as_ref())
            .into_iter()
            .flatten()
            .map(|d| d.path.clone().unwrap_or_default())
            .collect()
    };
    let (a, b) = (nodes(o), nodes(n));
    for p in b.difference(&a) {
        acc.push(
            Direction::Loosened,
            "devices",
            format!("device node added: {p}"),
        );
    }
    for p in a.difference(&b) {
        acc.push(
            Direction::Tightened,
            "devices",
            format!("device node removed: {p}"),
        );
    }
}

/// Compares a limit where `None` (or a value ≤ 0) means unlimited.
fn limit(acc: &mut Acc, area: &'static str, what: &str, a: Option<i64>, b: Option<i64>) {
    let norm = |v: Option<i64>| v.filter(|v| *v > 0);
    let (a, b) = (norm(a), norm(b));
    if a == b {
        return;
    }
    let show = |v: Option<i64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    let dir = match (a, b) {
        (_, None) => Direction::Loosened,
        (None, Some(_)) => Direction::Tightened,
        (Some(x), Some(y)) if y > x => Direction::Loosened,
        _ => Direction::Tightened,
    };
    acc.push(dir, area, format!("{what} {} → {}", show(a), show(b)));
}

fn limits(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let res = |s: &SpecView| s.linux.as_ref().and_then(|l| l.resources.clone());
    let (ra, rb) = (res(o).unwrap_or_default(), res(n).unwrap_or_default());
    limit(
        acc,
        "limits",
        "memory limit",
        ra.memory.as_ref().and_then(|m| m.limit),
        rb.memory.as_ref().and_then(|m| m.limit),
    );
    limit(
        acc,
        "limits",
        "pids limit",
        ra.pids.as_ref().and_then(|p| p.limit),
        rb.pids.as_ref().and_then(|p| p.limit),
    );
    // CPU as thousandths of a core, so quota/period pairs compare.
    let milli = |c: Option<&super::model::CpuView>| {
        c.and_then(|c| match (c.quota, c.period) {
            (Some(q), Some(p)) if q > 0 && p > 0 => Some(q * 1000 / p as i64),
            _ => None,
        })
    };
    limit(
        acc,
        "limits",
        "CPU quota (millicores)",
        milli(ra.cpu.as_ref()),
        milli(rb.cpu.as_ref()),
    );
    let rl = |s: &SpecView| -> BTreeMap<String, Option<u64>> {
        s.process
            .as_ref()
            .and_then(|p| p.rlimits.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.typ, r.hard))
            .collect()
    };
    let (la, lb) = (rl(o), rl(n));
    let keys: BTreeSet<&String> = la.keys().chain(lb.keys()).collect();
    for k in keys {
        // RLIM_INFINITY (u64::MAX) is no limit.
        let to_i = |v: Option<&Option<u64>>| {
            v.copied()
                .flatten()
                .filter(|h| *h != u64::MAX)
                .map(|h| h.min(i64::MAX as u64 - 1) as i64)
        };
        let (a, b) = (to_i(la.get(k)), to_i(lb.get(k)));
        // A hard limit of 0 (RLIMIT_CORE 0) is a limit, not "unlimited": compare +1.
        limit(
            acc,
            "rlimits",
            &format!("{k} hard limit"),
            a.map(|v| v.saturating_add(1)),
            b.map(|v| v.saturating_add(1)),
        );
    }
}

fn sysctls(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let get = |s: &SpecView| {
        s.linux
            .as_ref()
            .and_then(|l| l.sysctl.clone())
            .unwrap_or_default()
    };
    let (a, b) = (get(o), get(n));
    for (k, v) in &b {
        match a.get(k) {
            None => acc.push(Direction::Loosened, "sysctls", format!("{k}={v} added")),
            Some(old) if old != v => {
                acc.push(Direction::Changed, "sysctls", format!("{k}: {old} → {v}"))
            }
            Some(_) => {}
        }
    }
    for (k, v) in &a {
        if !b.contains_key(k) {
            acc.push(Direction::Tightened, "sysctls", format!("{k}={v} removed"));
        }
    }
}

fn hooks(o: &SpecView, n: &SpecView, acc: &mut Acc) {
    let get = |s: &SpecView| -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        if let Some(h) = s.hooks.as_ref() {
            for kind in HOOK_KINDS {
                for hook in h.kind(kind) {
                    set.insert(format!("{kind} {}", hook.path.as_deref().unwrap_or("?")));
                }
            }
        }
        set
    };
    let (a, b) = (get(o), get(n));
    for h in b.difference(&a) {
        acc.push(Direction::Loosened, "hooks", format!("hook added: {h}"));
    }
    for h in a.difference(&b) {
        acc.push(Direction::Tightened, "hooks", format!("hook removed: {h}"));
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
