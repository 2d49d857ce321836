//! The pieces a sandbox is made of, each made or checked on its own: the base image
//! (cached), the spec, the sandbox's own UID, the AppArmor profile, the snapshot and
//! container, the bounded volumes and the network; and how a Tasks.Create failure reads.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::Container;
use containerd_client::types::Mount;

use super::ms;
use crate::apparmor;
use crate::containerd::{ContainerdError, LABEL_MANAGED};
use crate::disk;
use crate::policy::{AppArmorChoice, ValidatedPolicy, DEFAULT_APPARMOR_PROFILE};
use crate::runner::exit::{classify_exec_error, ExecFailure};
use crate::runner::{
    seal, uids, BaseImage, RunError, Runner, LABEL_CREATED, LABEL_GC_ROOT, LABEL_OWNER,
    SPEC_TYPE_URL,
};
use crate::spec::{self, SpecRequest};

fn labels(now: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_CREATED.to_string(), now.to_string()),
        (LABEL_OWNER.to_string(), std::process::id().to_string()),
    ])
}

impl Runner {
    /// Resolves an image through the image source.
    pub(super) async fn base_image(&self, name: &str) -> Result<BaseImage, RunError> {
        let i = &self.inner;
        i.images
            .resolve(i.containerd.as_ref(), &i.snapshotter, name)
            .await
            .map_err(|reason| RunError::Image {
                name: name.to_string(),
                reason,
            })
    }

    /// `base`, when the caller handed it over for `name`; otherwise resolved.
    pub(super) async fn base_image_or(
        &self,
        name: &str,
        base: Option<BaseImage>,
    ) -> Result<BaseImage, RunError> {
        match base {
            // The caller resolved the name the policy names (bare or full).
            Some(b)
                if b.name == name
                    || crate::images::normalize_name(name).is_ok_and(|full| full == b.name) =>
            {
                Ok(b)
            }
            _ => self.base_image(name).await,
        }
    }

    /// Tells the image source a run found `base`'s snapshot unusable.
    pub(super) fn forget_image(&self, base: &BaseImage) {
        self.inner.images.forget(base);
    }

    /// The spec of run `id` as containerd gets it: built from the policy, its binds pointed
    /// at their staging mounts, and the `oom_score_adj` floor reported where this process
    /// cannot set it.
    pub(super) fn build_spec(
        &self,
        policy: &ValidatedPolicy,
        id: &str,
        args: &[String],
        terminal: bool,
        sandbox_uid: Option<u32>,
    ) -> Result<spec::BuiltSpec, RunError> {
        let mut built = spec::build(
            policy,
            &self.inner.host,
            &SpecRequest { id, args, terminal },
        )?;
        if let Some(uid) = sandbox_uid {
            spec::run_as_uid(&mut built.spec, uid);
        }
        seal::stage_spec(&mut built.spec, &self.inner.fifo_root.join(id), policy);
        if crate::network::needs_netns(policy.network) {
            crate::network::join_netns(&mut built.spec, &self.inner.network.netns_path(id));
        }
        if let Some(g) = &policy.network_rules.group {
            let hosts = crate::network::group::hosts_path(&self.inner.network.groups, g);
            crate::network::group::mount_hosts(&mut built.spec, &hosts);
        }
        if policy.network == crate::policy::NetworkMode::Allowlist {
            crate::network::mount_resolv_conf(&mut built.spec, &self.inner.fifo_root.join(id));
        }
        built
            .not_enforced
            .extend(disk::host_workspace_not_enforced(policy));
        if !self.inner.oom_floor {
            built
                .not_enforced
                .push(seal::oom_floor_not_enforced(policy.limits.oom_score_adj));
        }
        Ok(built)
    }

    /// Why a policy that asks for a UID of the sandbox's own cannot have one here (a bind
    /// source on a filesystem without ID-mapped mounts), as a `not_enforced` entry.
    pub(super) fn uid_refused(
        &self,
        policy: &ValidatedPolicy,
    ) -> Result<Option<spec::NotEnforced>, RunError> {
        if !policy.uid_per_sandbox {
            return Ok(None);
        }
        seal::idmap_refused(&self.inner.proc_root, policy, &self.inner.idmap_support)
    }

    /// Claims a UID of its own for sandbox `id` when its policy asks for one and the host
    /// can give it (`refused` says it cannot).
    pub(super) fn claim_uid(
        &self,
        policy: &ValidatedPolicy,
        id: &str,
        refused: bool,
    ) -> Result<Option<uids::Claim>, RunError> {
        if !policy.uid_per_sandbox || refused {
            return Ok(None);
        }
        let run_dir = self.inner.fifo_root.join(id);
        Ok(Some(uids::claim(
            &self.inner.uid_claims,
            &self.inner.uid_range,
            &run_dir,
        )?))
    }

    /// Where the host has AppArmor and the policy uses the built-in profile, makes sure the
    /// profile (the variant for the policy's network mode) is loaded: two small file reads
    /// when it already is, `apparmor_parser -r` once when it is not. Other profile names
    /// must be loaded by the administrator; runc refuses to start under a missing one.
    pub(super) fn ensure_apparmor(&self, policy: &ValidatedPolicy) -> Result<(), RunError> {
        let Some(ctx) = &self.inner.apparmor else {
            return Ok(());
        };
        match &policy.apparmor {
            AppArmorChoice::Profile(name)
                if self.inner.host.apparmor && name == DEFAULT_APPARMOR_PROFILE =>
            {
                apparmor::ensure_default_loaded(
                    &apparmor::SystemParser::find(),
                    ctx,
                    policy.network,
                )
                .map(drop)
                .map_err(|e| RunError::AppArmor(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Snapshots.Prepare and Containers.Create, concurrently (they do not depend on each
    /// other: the container record only names the snapshot key). Returns the snapshot's
    /// mounts and the two calls' milliseconds.
    pub(super) async fn create_objects(
        &self,
        id: &str,
        base: &BaseImage,
        spec_json: Vec<u8>,
        extra_labels: HashMap<String, String>,
    ) -> Result<(Vec<Mount>, f64, f64), RunError> {
        let i = &self.inner;
        let c = &i.containerd;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let with_extra = |mut l: HashMap<String, String>| {
            l.extend(extra_labels.clone());
            l
        };
        let prepare = async {
            let t = Instant::now();
            let mut l = with_extra(labels(now));
            l.insert(LABEL_GC_ROOT.to_string(), now.to_string());
            let r = c
                .prepare_snapshot(PrepareSnapshotRequest {
                    snapshotter: i.snapshotter.clone(),
                    key: id.to_string(),
                    parent: base.snapshot.clone(),
                    labels: l,
                })
                .await;
            (r, t.elapsed())
        };
        let create_container = async {
            let t = Instant::now();
            let r = c
                .create_container(Container {
                    id: id.to_string(),
                    labels: with_extra(labels(now)),
                    image: base.name.clone(),
                    runtime: Some(Runtime {
                        name: i.runtime.clone(),
                        options: i.runtime_options.clone(),
                    }),
                    spec: Some(prost_types::Any {
                        type_url: SPEC_TYPE_URL.to_string(),
                        value: spec_json,
                    }),
                    snapshotter: i.snapshotter.clone(),
                    snapshot_key: id.to_string(),
                    ..Default::default()
                })
                .await;
            (r, t.elapsed())
        };
        let ((prepared, t_prep), (created, t_cont)) = tokio::join!(prepare, create_container);
        let mounts = match prepared {
            Ok(mounts) => mounts,
            Err(e) if e.is_not_found() => {
                return Err(RunError::Image {
                    name: base.name.clone(),
                    reason: format!(
                        "image `{}`: base snapshot {} is gone ({e})",
                        base.name, base.snapshot
                    ),
                })
            }
            Err(e) => return Err(e.into()),
        };
        created?;
        Ok((mounts, ms(t_prep), ms(t_cont)))
    }

    /// Makes the bounded volumes the policy needs for sandbox `id` (see [`crate::disk`]) on
    /// a blocking thread, and how long that took (`None` when it needs none). What is made
    /// is recorded in the run directory, so the run's cleanup removes it on every path.
    pub(super) async fn make_disks(
        &self,
        id: &str,
        policy: &ValidatedPolicy,
        sandbox_uid: Option<u32>,
    ) -> Result<(disk::Provisioned, Option<f64>), RunError> {
        let plan = disk::plan(policy);
        if plan.is_empty() {
            return Ok((disk::Provisioned::default(), None));
        }
        let t = Instant::now();
        let (mut uid, mut gid) = (sandbox_uid.unwrap_or(policy.user.uid), policy.user.gid);
        if let Some(m) = &policy.user_namespace {
            (uid, gid) = (m.host_id.saturating_add(uid), m.host_id.saturating_add(gid));
        }
        let disk_root = self.inner.disk_root.clone();
        let run_dir = self.inner.fifo_root.join(id);
        let id = id.to_string();
        let made = tokio::task::spawn_blocking(move || {
            disk::provision(&disk_root, &run_dir, &id, &plan, (uid, gid))
        })
        .await
        .map_err(|e| RunError::Config(format!("disk limit: {e}")))??;
        Ok((made, Some(ms(t.elapsed()))))
    }

    /// Makes the network namespace, veth and rules the policy's network mode needs for
    /// sandbox `id` (see [`crate::network`]), and starts its published ports' proxy in this
    /// process ([`crate::network::publish`]), on a blocking thread, and how long that took
    /// (`None` when it needs none). What is made is recorded in the run directory first, so
    /// the run's cleanup removes it on every path.
    pub(super) async fn make_network(
        &self,
        id: &str,
        policy: &ValidatedPolicy,
    ) -> Result<Option<f64>, RunError> {
        if !crate::network::needs_netns(policy.network) {
            return Ok(None);
        }
        let t = Instant::now();
        let cfg = self.inner.network.clone();
        let run_dir = self.inner.fifo_root.join(id);
        let services = run_dir.clone();
        let (id, mode, rules) = (id.to_string(), policy.network, policy.network_rules.clone());
        tokio::task::spawn_blocking(move || {
            let host = crate::network::host::IpRoute::default();
            crate::network::setup(&host, &cfg, &id, &run_dir, mode, &rules)?;
            crate::network::publish::start_recorded(&host, &run_dir, &rules.publish)
        })
        .await
        .map_err(|e| RunError::Config(format!("network: {e}")))?
        .map_err(|e| RunError::Config(e.to_string()))?;
        // Hosted by this process until the network is released.
        crate::network::start_services(&services).map_err(|e| RunError::Config(e.to_string()))?;
        Ok(Some(ms(t.elapsed())))
    }
}

/// The rootfs mounts Tasks.Create gets: the snapshot's, with the overlay's upper layer on
/// the root volume when there is one (see [`disk::bound_rootfs`]).
pub(super) fn bound_rootfs(
    disks: &disk::Provisioned,
    mounts: Vec<Mount>,
) -> Result<Vec<Mount>, RunError> {
    let Some((upper, work)) = &disks.root else {
        return Ok(mounts);
    };
    let (mounts, own_upper) = disk::bound_rootfs(mounts, upper, work)?;
    disk::copy_root(&own_upper, upper)?;
    Ok(mounts)
}

pub(super) fn path_string(p: Option<&std::path::Path>) -> String {
    p.map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Maps a Tasks.Create / Tasks.Start failure to "command not found" (127), "cannot
/// execute" (126), or stockade's own failure (125).
pub(crate) fn exec_error(args: &[String], e: ContainerdError) -> RunError {
    let msg = e.to_string();
    let command = args.first().cloned().unwrap_or_default();
    match classify_exec_error(&msg) {
        Some(ExecFailure::NotFound) => RunError::CommandNotFound {
            command,
            detail: msg,
        },
        Some(ExecFailure::NotExecutable) => RunError::CommandNotExecutable {
            command,
            detail: msg,
        },
        None => RunError::Containerd(e),
    }
}
