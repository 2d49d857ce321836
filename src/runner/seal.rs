//! What a run does from the host around Tasks.Create, before anything of the sandbox's own
//! runs: stage the policy's bind sources (before the task exists), then, once runc has
//! built the sandbox and before it starts, check what the sandbox sees at `/workspace` and
//! `/input` and set pid 1's `oom_score_adj` from the host.
//!
//! A write to `oom_score_adj` by a process holding `CAP_SYS_RESOURCE` also sets the
//! kernel's floor for that process and its descendants: below it, the sandbox (which has
//! no capabilities) cannot go. Where stockade itself lacks `CAP_SYS_RESOURCE` (some
//! container hosts drop it even for root), the value is set but the floor stays where it
//! was; [`crate::host::HostFacts::oom_floor`] (and `stockade doctor`) says which, and runs report it as not
//! enforced.

use std::path::Path;

use super::RunError;
use crate::bind::{self, HostDir, STAGING_DIR};
use crate::idmap::{self, UserNs};
use crate::policy::ValidatedPolicy;
use crate::spec::{NotEnforced, INPUT_PATH, WORKSPACE_PATH};

/// The policy's binds: (staging name, destination in the sandbox, directory, read-only).
/// `-v` binds are staged as `bind-<index>`.
fn binds(policy: &ValidatedPolicy) -> Vec<(String, &str, &HostDir, bool)> {
    let mut v = Vec::new();
    if let Some(w) = &policy.workspace {
        v.push(("workspace".to_string(), WORKSPACE_PATH, w, false));
    }
    if let Some(i) = &policy.input {
        v.push(("input".to_string(), INPUT_PATH, i, true));
    }
    for (n, b) in policy.binds.iter().enumerate() {
        v.push((
            bind::extra_name(n),
            b.destination.as_str(),
            &b.source,
            b.read_only,
        ));
    }
    v
}

/// Points the spec's binds at the staging mounts in `run_dir` (a spec without binds is left
/// as it is; a managed workspace is staged as `workspace` too).
pub(crate) fn stage_spec(
    spec: &mut oci_spec::runtime::Spec,
    run_dir: &Path,
    policy: &ValidatedPolicy,
) {
    let b = binds(policy);
    let mut names: Vec<(&str, &str)> = vec![(WORKSPACE_PATH, "workspace")];
    names.extend(b.iter().map(|(name, dest, _, _)| (*dest, name.as_str())));
    crate::spec::stage_binds(spec, &run_dir.join(STAGING_DIR), &names);
}

/// Mounts the policy's bind sources at their staging paths in `run_dir` (see
/// [`crate::bind::stage`]); nothing without binds. With `sandbox_uid` (a UID of the
/// sandbox's own), the staging mounts show the policy's UID as that UID (see
/// [`crate::idmap`]).
pub(crate) fn stage(
    run_dir: &Path,
    proc_root: &Path,
    policy: &ValidatedPolicy,
    sandbox_uid: Option<u32>,
) -> Result<(), RunError> {
    if let Some(ws) = &policy.workspace {
        bind::ensure_writable(
            ws,
            policy.user.uid,
            policy.user.gid,
            policy.workspace_owner_sandbox,
        )?;
    }
    let all = binds(policy);
    let b: Vec<_> = all
        .iter()
        .map(|(name, _, dir, ro)| (name.as_str(), *dir, *ro))
        .collect();
    if b.is_empty() {
        return Ok(());
    }
    let userns = match sandbox_uid {
        Some(uid) => Some(swap_userns(proc_root, policy.user.uid, uid)?),
        None => None,
    };
    Ok(bind::stage(run_dir, &b, userns.as_ref())?)
}

/// The user namespace that maps on-disk `from` to the sandbox's `to`.
fn swap_userns(proc_root: &Path, from: u32, to: u32) -> Result<UserNs, RunError> {
    UserNs::new(
        proc_root,
        &idmap::swap_uid_map(from, to),
        &idmap::identity_map(),
    )
    .map_err(RunError::from)
}

/// The first of the policy's bind sources whose filesystem cannot be mounted ID-mapped
/// (so the sandbox cannot have a UID of its own), as a `not_enforced` entry; `cache`
/// remembers the answer per filesystem (device).
pub(crate) fn idmap_refused(
    proc_root: &Path,
    policy: &ValidatedPolicy,
    cache: &std::sync::Mutex<std::collections::HashMap<u64, bool>>,
) -> Result<Option<NotEnforced>, RunError> {
    for (name, _, dir, _) in binds(policy) {
        let known = cache.lock().expect("not poisoned").get(&dir.dev).copied();
        let ok = match known {
            Some(ok) => ok,
            None => {
                let probe =
                    swap_userns(proc_root, policy.user.uid, policy.user.uid.wrapping_add(1))?;
                let ok = bind::idmap_supported(&name, dir, &probe)?;
                cache.lock().expect("not poisoned").insert(dir.dev, ok);
                ok
            }
        };
        if !ok {
            return Ok(Some(NotEnforced {
                protection: "uid".into(),
                reason: format!(
                    "the filesystem of the {name} {} cannot be mounted ID-mapped; the \
                     sandbox runs as uid {} and shares that uid's per-user limits",
                    dir.path.display(),
                    policy.user.uid
                ),
            }));
        }
    }
    Ok(None)
}

/// Between Tasks.Create and Start: checks the binds as the sandbox sees them and sets
/// `oom_score_adj` of pid 1 (`pid`) from the host, reading it back.
pub(crate) fn seal(proc_root: &Path, pid: u32, policy: &ValidatedPolicy) -> Result<(), RunError> {
    let all = binds(policy);
    let b: Vec<_> = all
        .iter()
        .map(|(name, dest, dir, _)| (name.as_str(), *dest, *dir))
        .collect();
    bind::verify_in_task(proc_root, pid, &b)?;
    set_oom_score_adj(proc_root, pid, policy.limits.oom_score_adj)
}

/// What a run reports when the floor cannot be set (see the module documentation).
pub(crate) fn oom_floor_not_enforced(value: i32) -> NotEnforced {
    NotEnforced {
        protection: "oom_score_adj".into(),
        reason: format!(
            "stockade lacks CAP_SYS_RESOURCE, so {value} is set but is no floor: the sandbox can lower it (to no less than stockade's own)"
        ),
    }
}

fn set_oom_score_adj(proc_root: &Path, pid: u32, value: i32) -> Result<(), RunError> {
    let path = proc_root.join(pid.to_string()).join("oom_score_adj");
    let fail = |reason: String| RunError::OomScoreAdj { pid, value, reason };
    std::fs::write(&path, value.to_string()).map_err(|e| fail(e.to_string()))?;
    let read = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    match read.trim().parse::<i32>() {
        Ok(v) if v == value => Ok(()),
        _ => Err(fail(format!("it reads {} afterwards", read.trim()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_score_adj_is_written_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("7")).unwrap();
        set_oom_score_adj(t.path(), 7, 500).unwrap();
        let f = t.path().join("7/oom_score_adj");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "500");
        let e = set_oom_score_adj(t.path(), 8, 500).unwrap_err().to_string();
        assert!(e.contains("pid 8") && !e.contains('\n'), "{e}");
    }
}
