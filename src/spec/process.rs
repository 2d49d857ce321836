//! The `process` section: command, identity, environment, capabilities, rlimits,
//! `noNewPrivileges`, AppArmor and `oomScoreAdj`.

use std::collections::HashSet;

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType,
    Process, ProcessBuilder, UserBuilder,
};

use super::{builder_err, NotEnforced, SpecError, SpecRequest};
use crate::host::HostFacts;
use crate::policy::{AppArmorChoice, ValidatedPolicy};

pub(super) fn build(
    policy: &ValidatedPolicy,
    host: &HostFacts,
    req: &SpecRequest<'_>,
    not_enforced: &mut Vec<NotEnforced>,
) -> Result<Process, SpecError> {
    let user = UserBuilder::default()
        .uid(policy.user.uid)
        .gid(policy.user.gid)
        // No supplementary groups: runc would otherwise keep none anyway, but say it.
        .additional_gids(Vec::<u32>::new())
        .build()
        .map_err(builder_err("process.user"))?;

    let mut b = ProcessBuilder::default()
        .terminal(req.terminal)
        .user(user)
        .args(req.args.to_vec())
        .env(policy.env.clone())
        .cwd(policy.cwd.clone())
        .capabilities(capabilities(policy)?)
        .rlimits(rlimits(policy)?)
        .no_new_privileges(policy.no_new_privileges)
        .oom_score_adj(policy.limits.oom_score_adj);

    match &policy.apparmor {
        AppArmorChoice::Profile(name) if host.apparmor => {
            b = b.apparmor_profile(apparmor_profile_name(name, policy));
        }
        AppArmorChoice::Profile(name) => not_enforced.push(NotEnforced {
            protection: "apparmor".into(),
            reason: format!("the kernel has no AppArmor, so profile {name} is not applied"),
        }),
        AppArmorChoice::Unconfined => {}
    }
    b.build().map_err(builder_err("process"))
}

/// The profile a run is confined by. The built-in profile comes in one variant per network
/// mode (their network rules differ, and reloading one profile would change every sandbox
/// already running under it), so the default name resolves to the variant for the policy's
/// network; any other name is used as given.
pub fn apparmor_profile_name(name: &str, policy: &ValidatedPolicy) -> String {
    if name == crate::policy::DEFAULT_APPARMOR_PROFILE {
        crate::apparmor::default_profile_name(policy.network).to_string()
    } else {
        name.to_string()
    }
}

/// No capability in any set unless the policy grants one. A granted capability goes into
/// the bounding, permitted and effective sets; when the process is not uid 0 it must also be
/// inheritable and ambient, or `execve` of a non-root process would drop it.
fn capabilities(
    policy: &ValidatedPolicy,
) -> Result<oci_spec::runtime::LinuxCapabilities, SpecError> {
    let granted: HashSet<Capability> = policy.cap_add.iter().copied().collect();
    let carried = if policy.user.uid == 0 {
        HashSet::new()
    } else {
        granted.clone()
    };
    LinuxCapabilitiesBuilder::default()
        .bounding(granted.clone())
        .permitted(granted.clone())
        .effective(granted)
        .inheritable(carried.clone())
        .ambient(carried)
        .build()
        .map_err(builder_err("process.capabilities"))
}

fn rlimit(typ: PosixRlimitType, n: u64) -> Result<PosixRlimit, SpecError> {
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(n)
        .hard(n)
        .build()
        .map_err(builder_err("process.rlimits"))
}

/// Soft and hard equal, so the sandbox cannot raise its own soft limit.
fn rlimits(policy: &ValidatedPolicy) -> Result<Vec<PosixRlimit>, SpecError> {
    let l = &policy.limits;
    let mut out = vec![
        rlimit(PosixRlimitType::RlimitNofile, l.nofile)?,
        // No core dumps: they would write memory contents to the workspace.
        rlimit(PosixRlimitType::RlimitCore, 0)?,
        rlimit(PosixRlimitType::RlimitFsize, l.fsize)?,
    ];
    if let Some(n) = l.nproc {
        out.push(rlimit(PosixRlimitType::RlimitNproc, n)?);
    }
    Ok(out)
}

/// Makes the spec's process run as host UID `uid`: a sandbox's own UID (see
/// [`crate::runner::uids`]), chosen per run and so not part of the policy or its hash.
pub fn run_as_uid(spec: &mut oci_spec::runtime::Spec, uid: u32) {
    if let Some(p) = spec.process_mut() {
        let mut user = p.user().clone();
        user.set_uid(uid);
        p.set_user(user);
    }
}
