//! Differences in resource limits, sysctls and hooks.

use super::*;

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

pub(super) fn limits(o: &SpecView, n: &SpecView, acc: &mut Acc) {
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
    let milli = |c: Option<&crate::audit::model::CpuView>| {
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

pub(super) fn sysctls(o: &SpecView, n: &SpecView, acc: &mut Acc) {
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
                acc.push(Direction::Changed, "sysctls", format!("{k}: {old} → {v}"));
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

pub(super) fn hooks(o: &SpecView, n: &SpecView, acc: &mut Acc) {
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
