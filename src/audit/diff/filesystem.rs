//! Differences in mounts, masked and read-only paths, and devices.

use super::*;

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

pub(super) fn mounts(o: &SpecView, n: &SpecView, acc: &mut Acc) {
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

pub(super) fn paths(o: &SpecView, n: &SpecView, acc: &mut Acc) {
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

pub(super) fn devices(o: &SpecView, n: &SpecView, acc: &mut Acc) {
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
