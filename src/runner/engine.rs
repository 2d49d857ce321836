//! The run sequence against containerd. See the module documentation of [`super`] for the
//! phases and which overlap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::{Container, CreateTaskRequest};
use containerd_client::types::Mount;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::exit::{self, classify_exec_error, ExecFailure, Outcome};
use super::output::{pump, Pumped, Sink};
use super::{
    fifo, journal, seal, uids, BaseImage, CleanupMode, Output, Phases, Prepared, RunError,
    RunRequest, RunResult, Runner, Stdin, Truncated, DRAIN_GRACE, ID_PREFIX, KILL_GRACE,
    LABEL_CREATED, LABEL_GC_ROOT, LABEL_OWNER, SPEC_TYPE_URL, TRAMPOLINE,
};
use crate::apparmor;
use crate::containerd::{Containerd, ContainerdError, LABEL_MANAGED};
use crate::disk;
use crate::policy::{AppArmorChoice, ValidatedPolicy, DEFAULT_APPARMOR_PROFILE};
use crate::spec::{self, SpecRequest};

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

fn labels(now: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_CREATED.to_string(), now.to_string()),
        (LABEL_OWNER.to_string(), std::process::id().to_string()),
    ])
}

/// How the process ended, as far as the wait loop saw it.
struct Ended {
    status: u32,
    timed_out: bool,
    cancelled_by: Option<i32>,
}

impl Runner {
    /// Resolves an image through the cache, asking the image source on a miss.
    async fn base_image(&self, name: &str) -> Result<BaseImage, RunError> {
        if let Some(b) = self.inner.image_cache.lock().expect("cache lock").get(name) {
            return Ok(b.clone());
        }
        let i = &self.inner;
        let base = i
            .images
            .resolve(i.containerd.as_ref(), &i.snapshotter, name)
            .await
            .map_err(|reason| RunError::Image {
                name: name.to_string(),
                reason,
            })?;
        i.image_cache
            .lock()
            .expect("cache lock")
            .insert(name.to_string(), base.clone());
        Ok(base)
    }

    fn forget_image(&self, name: &str) {
        self.inner
            .image_cache
            .lock()
            .expect("cache lock")
            .remove(name);
    }

    /// Runs one command in a new sandbox and returns what it did. Everything the run
    /// created is removed according to the runner's [`CleanupMode`], on success and on
    /// every failure after the run directory exists.
    pub async fn run(&self, req: RunRequest) -> Result<RunResult, RunError> {
        self.run_maybe_prepared(req, None).await
    }

    /// Runs one command in a sandbox made ahead of time by [`Runner::prepare`] (here or in
    /// another process). The request's policy must be the one the sandbox was prepared with
    /// (same policy hash and image). The sandbox's task is already running: its pid 1 is a
    /// trampoline blocked reading one command line from its stdin, so the run writes the
    /// command and the trampoline `exec`s it under the very spec a cold run would have
    /// (same process, mounts and limits; `tests/pool.rs` compares them field by field).
    /// This process becomes the run's owner. The sandbox is used once: afterwards it is
    /// removed like any run.
    pub async fn run_prepared(
        &self,
        prepared: Prepared,
        req: RunRequest,
    ) -> Result<RunResult, RunError> {
        self.run_maybe_prepared(req, Some(prepared)).await
    }

    async fn run_maybe_prepared(
        &self,
        req: RunRequest,
        prepared: Option<Prepared>,
    ) -> Result<RunResult, RunError> {
        let mut fail = Attempt::default();
        let t0 = Instant::now();
        let pooled_id = prepared.as_ref().map(|p| p.id.clone());
        let r = self.run_inner(req, prepared, &mut fail).await;
        if let (Err(e), Some(id)) = (&r, &pooled_id) {
            // A prepared sandbox is never handed out twice: whatever failed, it goes.
            if !matches!(e, RunError::Lost { .. }) {
                if let Err(c) = self.cleanup(id).await {
                    tracing::warn!("{c}");
                }
            }
        }
        if let (Err(e), Some(log)) = (&r, &self.inner.run_log) {
            // A run that never got to exit is logged too, with the exit code it maps to.
            if !fail.id.is_empty() {
                let record = journal::RunRecord::failed(&fail, e, ms(t0.elapsed()));
                if let Err(je) = journal::append(log, &record.to_line()) {
                    tracing::warn!("{je}");
                }
            }
        }
        r
    }

    async fn run_inner(
        &self,
        req: RunRequest,
        prepared: Option<Prepared>,
        fail: &mut Attempt,
    ) -> Result<RunResult, RunError> {
        let t0 = Instant::now();
        let RunRequest {
            policy,
            args,
            id,
            stdin,
            output,
            terminal,
            cancel,
        } = req;
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The hash covers the image name too.
        let policy_hash = policy.hash();
        if let Some(p) = &prepared {
            if id.is_some() {
                return Err(RunError::Config(
                    "a run in a prepared sandbox takes the sandbox's id".into(),
                ));
            }
            if terminal {
                return Err(RunError::Config(
                    "a prepared sandbox has no terminal; run with a terminal cold".into(),
                ));
            }
            if args.first().is_some_and(|a| a.contains('=')) {
                return Err(RunError::Config(
                    "a prepared sandbox cannot run a command whose name contains `=`".into(),
                ));
            }
            if p.policy_hash != policy_hash {
                return Err(RunError::Config(format!(
                    "sandbox {} was prepared for policy {}, not {policy_hash}",
                    p.id, p.policy_hash
                )));
            }
        }
        let id = match &prepared {
            Some(p) => p.id.clone(),
            None => id.unwrap_or_else(super::new_id),
        };
        if !id.starts_with(ID_PREFIX) {
            return Err(RunError::Config(format!(
                "run id `{id}` must start with `{ID_PREFIX}`"
            )));
        }
        let mut phases = Phases::default();
        *fail = Attempt {
            started_at_unix_ms: started_unix.as_millis() as u64,
            id: id.clone(),
            argv: args.clone(),
            image: policy.image.clone(),
            image_digest: None,
            policy_hash,
            spec_digest: None,
            runtime: self.inner.runtime_binary.clone(),
        };

        let t = Instant::now();
        let base = match &prepared {
            Some(p) => p.image.clone(),
            None => self.base_image(&policy.image).await?,
        };
        phases.resolve_image_ms = ms(t.elapsed());
        fail.image = base.name.clone();
        fail.image_digest = base.digest.clone();

        let t = Instant::now();
        let root = &self.inner.fifo_root;
        let refused = self.uid_refused(&policy)?;
        let (claim, sandbox_uid) = match &prepared {
            Some(p) => (None, uids::recorded(&root.join(&p.id))),
            None => {
                let c = self.claim_uid(&policy, &id, refused.is_some())?;
                let u = c.as_ref().map(uids::Claim::uid);
                (c, u)
            }
        };
        let mut built = self.build_spec(&policy, &id, &args, terminal, sandbox_uid)?;
        built.not_enforced.extend(refused);
        let spec_digest = spec::digest(&built.spec);
        fail.spec_digest = Some(spec_digest.clone());
        let spec_json = serde_json::to_vec(&built.spec).expect("a spec always serializes");
        self.ensure_apparmor(&policy)?;
        let want_stdin = !matches!(stdin, Stdin::Null);
        let pooled = prepared.is_some();
        let made = match prepared {
            // The pooled task's FIFOs exist; its pid 1 waits for the command line.
            Some(mut p) => fifo::write_owner(&root.join(&id), std::process::id()).and_then(|()| {
                let opened = match p.opened.take() {
                    Some(o) => o,
                    None => fifo::open(&p.fifos)?,
                };
                // `env -i` with the spec's environment: the shell exports variables of
                // its own (PWD, SHLVL), which must not reach the command.
                let env = built.spec.process().as_ref().and_then(|p| p.env().clone());
                let mut line = vec!["env".to_string(), "-i".to_string()];
                line.extend(env.unwrap_or_default());
                line.extend(args.iter().cloned());
                Ok((p.fifos, opened, Some(command_line(&line))))
            }),
            None => fifo::create(root, &id, want_stdin, terminal).map(|(d, o)| (d, o, None)),
        };
        let (dir, opened, preamble) = made.map_err(|source| RunError::RunDir {
            path: root.join(&id),
            source,
        })?;
        phases.setup_ms = ms(t.elapsed());

        // From here on, every exit path removes what exists (the UID with the run
        // directory).
        let recorded = match claim {
            Some(c) => c.recorded(&root.join(&id)),
            None => Ok(()),
        };
        if let Err(e) = recorded {
            if let Err(c) = self.cleanup(&id).await {
                tracing::warn!("{c}");
            }
            return Err(e.into());
        }
        let live = Live {
            id: &id,
            policy: &policy,
            base: &base,
            args: &args,
            terminal,
            timeout: policy.limits.timeout,
            max_output: policy.limits.max_output,
            dir: &dir,
            pooled,
            sandbox_uid,
        };
        let result = match preamble {
            Some(line) => {
                self.start_and_wait(
                    &live,
                    opened,
                    stdin,
                    Some(line),
                    output,
                    cancel,
                    &mut phases,
                )
                .await
            }
            None => {
                self.run_created(&live, spec_json, opened, stdin, output, cancel, &mut phases)
                    .await
            }
        };
        let (ended, pumped_out, pumped_err, usage) = match result {
            Ok(v) => v,
            Err(e) => {
                if matches!(e, RunError::Image { .. }) {
                    self.forget_image(&policy.image);
                }
                // A failed run is removed before the error is returned, whatever the
                // cleanup mode, except that a lost containerd leaves it to the next
                // reconciliation (the FIFO directory marks it).
                if !matches!(e, RunError::Lost { .. }) {
                    if let Err(c) = self.cleanup(&id).await {
                        tracing::warn!("{c}");
                    }
                }
                return Err(e);
            }
        };

        let oom_killed = usage.oom_kills.unwrap_or(0) > 0;
        let outcome = Outcome {
            status: ended.status,
            timed_out: ended.timed_out,
            oom_killed,
            cancelled_by: ended.cancelled_by,
        };
        let mut result = RunResult {
            id: id.clone(),
            exit_code: exit::exit_code(&outcome),
            pooled: live.pooled,
            signal: exit::signal_of(ended.status),
            timed_out: ended.timed_out,
            oom_killed,
            cancelled_by: ended.cancelled_by,
            stdout: String::from_utf8_lossy(&pumped_out.captured).into_owned(),
            stderr: String::from_utf8_lossy(&pumped_err.captured).into_owned(),
            truncated: Truncated {
                stdout: pumped_out.truncated,
                stderr: pumped_err.truncated,
            },
            stdout_bytes: pumped_out.total,
            stderr_bytes: pumped_err.total,
            duration_ms: 0.0,
            phases: Phases::default(),
            usage,
            image: base.name.clone(),
            image_digest: base.digest.clone(),
            policy_hash: fail.policy_hash.clone(),
            spec_digest,
            runtime: self.inner.runtime_binary.clone(),
            uid: sandbox_uid.unwrap_or(policy.user.uid),
            disk: disk::DiskUse::of(&policy, disk::plan(&policy)),
            not_enforced: built.not_enforced,
            warnings: [&policy.warnings[..], &self.inner.runtime_warnings[..]].concat(),
            started_at: journal::rfc3339_millis(started_unix.as_millis() as u64),
            started_at_unix_ms: started_unix.as_millis() as u64,
        };
        self.dispose(&id, &mut phases).await;
        result.phases = phases;
        result.duration_ms = ms(t0.elapsed());
        if let Some(log) = &self.inner.run_log {
            let uid = nix::unistd::getuid().as_raw();
            let line = journal::RunRecord::from_result(&result, &args, uid).to_line();
            if let Err(e) = journal::append(log, &line) {
                tracing::warn!("{e}");
                result.warnings.push(e.to_string());
            }
        }
        Ok(result)
    }

    /// The spec of run `id` as containerd gets it: built from the policy, its binds pointed
    /// at their staging mounts, and the `oom_score_adj` floor reported where this process
    /// cannot set it.
    fn build_spec(
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
    fn uid_refused(&self, policy: &ValidatedPolicy) -> Result<Option<spec::NotEnforced>, RunError> {
        if !policy.uid_per_sandbox {
            return Ok(None);
        }
        seal::idmap_refused(&self.inner.proc_root, policy, &self.inner.idmap_support)
    }

    /// Claims a UID of its own for sandbox `id` when its policy asks for one and the host
    /// can give it (`refused` says it cannot).
    fn claim_uid(
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
    fn ensure_apparmor(&self, policy: &ValidatedPolicy) -> Result<(), RunError> {
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

    /// Removes run `id` as the cleanup mode says.
    async fn dispose(&self, id: &str, phases: &mut Phases) {
        match self.inner.cleanup {
            CleanupMode::Inline => {
                let t = Instant::now();
                if let Err(e) = self.cleanup(id).await {
                    tracing::warn!("{e}");
                }
                phases.cleanup_ms = Some(ms(t.elapsed()));
            }
            CleanupMode::Background => self.remove_later(id).await,
            CleanupMode::Caller => {}
        }
    }

    /// Everything after the run directory exists, up to the collected results.
    #[allow(clippy::too_many_arguments)]
    async fn run_created(
        &self,
        live: &Live<'_>,
        spec_json: Vec<u8>,
        opened: fifo::Opened,
        stdin: Stdin,
        output: Output,
        cancel: Option<super::Cancel>,
        phases: &mut Phases,
    ) -> Result<(Ended, Pumped, Pumped, super::Usage), RunError> {
        let Live {
            id,
            policy,
            base,
            args,
            terminal,
            dir,
            sandbox_uid,
            ..
        } = *live;
        let i = &self.inner;
        let c = &i.containerd;

        seal::stage(&i.fifo_root.join(id), &i.proc_root, policy, sandbox_uid)?;
        let (disks, objects, net) = tokio::join!(
            self.make_disks(id, policy, sandbox_uid),
            self.create_objects(id, base, spec_json, HashMap::new()),
            self.make_network(id, policy)
        );
        let (mounts, t_prep, t_cont) = objects?;
        let (disks, t_disk) = disks?;
        phases.network_ms = net?;
        let mounts = bound_rootfs(&disks, mounts)?;
        phases.prepare_snapshot_ms = t_prep;
        phases.create_container_ms = t_cont;
        phases.disk_ms = t_disk;

        let t = Instant::now();
        let task = c
            .create_task(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: path_string(dir.stdin.as_deref()),
                stdout: dir.stdout.to_string_lossy().into_owned(),
                stderr: path_string(dir.stderr.as_deref()),
                terminal,
                ..Default::default()
            })
            .await;
        let pid = task.map_err(|e| exec_error(args, e))?;
        seal::seal(&i.proc_root, pid, policy)?;
        phases.create_task_ms = ms(t.elapsed());

        self.start_and_wait(live, opened, stdin, None, output, cancel, phases)
            .await
    }

    /// From a created task to the collected results: output pumps, stdin (after
    /// `preamble`, when given), Wait, Start, the timeout and cancel loop, usage, drain.
    #[allow(clippy::too_many_arguments)]
    async fn start_and_wait(
        &self,
        live: &Live<'_>,
        opened: fifo::Opened,
        stdin: Stdin,
        preamble: Option<Vec<u8>>,
        output: Output,
        cancel: Option<super::Cancel>,
        phases: &mut Phases,
    ) -> Result<(Ended, Pumped, Pumped, super::Usage), RunError> {
        let Live {
            id,
            args,
            timeout,
            max_output,
            ..
        } = *live;
        let i = &self.inner;
        let c = &i.containerd;
        // The shim has its ends open now: reading sees data, not an early end of file.
        let (out_sink, err_sink) = sinks(output);
        let out_pump = tokio::spawn(pump(opened.stdout, out_sink, max_output));
        let err_pump = opened
            .stderr
            .map(|r| tokio::spawn(pump(r, err_sink, max_output)));
        let stdin_task = opened
            .stdin
            .map(|tx| spawn_stdin(c.clone(), id.to_string(), None, tx, preamble, stdin));

        // Wait before Start, so that the exit cannot be missed.
        let wait_client = c.clone();
        let wait_id = id.to_string();
        let mut wait: JoinHandle<Result<u32, ContainerdError>> =
            tokio::spawn(async move { wait_client.wait_task(&wait_id).await });

        // A pooled task was started when it was prepared: its pid 1 waits for the line.
        let t = Instant::now();
        let started = match live.pooled {
            true => Ok(()),
            false => c.start_task(id).await,
        };
        phases.start_ms = ms(t.elapsed());
        if let Err(e) = started {
            wait.abort();
            out_pump.abort();
            if let Some(p) = &err_pump {
                p.abort();
            }
            return Err(exec_error(args, e));
        }

        let t_run = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut cancel = cancel.as_ref().map(|c| c.subscribe());
        let mut timed_out = false;
        let mut cancelled_by = None;
        let joined = loop {
            tokio::select! {
                r = &mut wait => break r,
                _ = tokio::time::sleep_until(deadline), if !timed_out && cancelled_by.is_none() => {
                    timed_out = true;
                    self.kill(id).await?;
                }
                sig = next_cancel(&mut cancel), if cancelled_by.is_none() => {
                    cancelled_by = Some(sig);
                    self.kill(id).await?;
                }
            }
        };
        let status = match joined {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(RunError::Lost {
                    id: id.to_string(),
                    message: e.to_string(),
                })
            }
            Err(join) => {
                return Err(RunError::Lost {
                    id: id.to_string(),
                    message: join.to_string(),
                })
            }
        };
        phases.run_ms = ms(t_run.elapsed());

        let t = Instant::now();
        // Usage and OOM are read before the task (and with it the cgroup) is deleted.
        let usage = i.cgroups.usage(&spec::cgroups_path(id));
        if let Some(s) = stdin_task {
            s.abort();
        }
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            let o = out_pump.await.unwrap_or_default();
            let e = match err_pump {
                Some(p) => p.await.unwrap_or_default(),
                None => Pumped::default(),
            };
            (o, e)
        })
        .await;
        let (pumped_out, pumped_err) = match drained {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!("run {id}: output still open {DRAIN_GRACE:?} after exit");
                (Pumped::default(), Pumped::default())
            }
        };
        phases.collect_ms = ms(t.elapsed());
        Ok((
            Ended {
                status,
                timed_out,
                cancelled_by,
            },
            pumped_out,
            pumped_err,
            usage,
        ))
    }

    /// Snapshots.Prepare and Containers.Create, concurrently (they do not depend on each
    /// other: the container record only names the snapshot key). Returns the snapshot's
    /// mounts and the two calls' milliseconds.
    async fn create_objects(
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
    async fn make_disks(
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
    /// sandbox `id` (see [`crate::network`]) on a blocking thread, and how long that took
    /// (`None` when it needs none). What is made is recorded in the run directory first, so
    /// the run's cleanup removes it on every path.
    async fn make_network(
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
        let (id, mode, rules) = (id.to_string(), policy.network, policy.network_rules.clone());
        tokio::task::spawn_blocking(move || {
            crate::network::setup(
                &crate::network::host::IpRoute::default(),
                &cfg,
                &id,
                &run_dir,
                mode,
                &rules,
            )
        })
        .await
        .map_err(|e| RunError::Config(format!("network: {e}")))?
        .map_err(|e| RunError::Config(e.to_string()))?;
        Ok(Some(ms(t.elapsed())))
    }

    /// Makes a sandbox ahead of its run: the run directory (owned by this process) with
    /// its three FIFOs, the snapshot on the image's base, the container with the policy's
    /// spec, and the task created (`runc create`: namespaces, cgroup, mounts, credentials,
    /// capabilities, no_new_privs, seccomp and AppArmor all in place) and started. Its pid 1
    /// is the image's `/bin/sh` running [`TRAMPOLINE`], blocked reading one command line
    /// from stdin, which it then `exec`s: the spec differs from a cold run's only in
    /// `process.args`, and the command becomes pid 1 with everything else identical. The
    /// objects carry `labels` besides stockade's own. On failure, whatever was made is
    /// removed.
    pub async fn prepare(
        &self,
        policy: &ValidatedPolicy,
        labels: HashMap<String, String>,
    ) -> Result<Prepared, RunError> {
        let made = self
            .make_sandbox(policy, super::new_id(), labels, Pid1::Trampoline)
            .await?;
        let (fifos, opened) = made.fifos.expect("a trampoline has FIFOs");
        Ok(Prepared {
            id: made.id,
            image: made.base,
            policy_hash: made.policy_hash,
            fifos,
            pid: made.pid,
            pid_start: None,
            created_unix_ms: made.created_unix_ms,
            opened: Some(opened),
        })
    }

    /// The one path that makes a started sandbox whose pid 1 waits: the run directory
    /// (owned by this process), the sandbox's UID, bind staging, snapshot, container with
    /// the policy's spec (its `process.args` what `pid1` says), the task created, sealed
    /// and started. On failure, whatever was made is removed.
    pub(crate) async fn make_sandbox(
        &self,
        policy: &ValidatedPolicy,
        id: String,
        labels: HashMap<String, String>,
        pid1: Pid1<'_>,
    ) -> Result<MadeSandbox, RunError> {
        let base = self.base_image(&policy.image).await?;
        let (args, ptys) = match pid1 {
            Pid1::Trampoline => (trampoline_args(), false),
            Pid1::Init { ptys, .. } => (crate::init::args(&[]), ptys),
            Pid1::Main { argv, tty, .. } => (crate::init::args(argv), tty),
        };
        // Only a main command has a terminal of its own (pid 1 with it).
        let pid1_terminal = matches!(pid1, Pid1::Main { tty: true, .. });
        let refused = self.uid_refused(policy)?;
        let claim = self.claim_uid(policy, &id, refused.is_some())?;
        let sandbox_uid = claim.as_ref().map(uids::Claim::uid);
        // Terminal devices for later execs; pid 1 itself never has a terminal.
        let mut built = self.build_spec(policy, &id, &args, ptys, sandbox_uid)?;
        if let Some(p) = built.spec.process_mut() {
            p.set_terminal(Some(pid1_terminal));
        }
        built.not_enforced.extend(refused);
        if let Pid1::Init { host_path, .. } | Pid1::Main { host_path, .. } = pid1 {
            let mut mounts = built.spec.mounts().clone().unwrap_or_default();
            mounts.push(crate::init::mount(host_path));
            built.spec.set_mounts(Some(mounts));
        }
        let spec_digest = spec::digest(&built.spec);
        let spec_json = serde_json::to_vec(&built.spec).expect("a spec always serializes");
        self.ensure_apparmor(policy)?;
        let root = &self.inner.fifo_root;
        let run_dir = |source| RunError::RunDir {
            path: root.join(&id),
            source,
        };
        fifo::mark(root, &id).map_err(run_dir)?;
        let made = async {
            if let Some(c) = claim {
                c.recorded(&root.join(&id))?;
            }
            // A trampoline reads its command line from stdin; the init reads nothing and
            // writes nothing worth keeping (its stdio is the shim's /dev/null).
            let fifos = match pid1 {
                Pid1::Trampoline => {
                    Some(fifo::create_fifos(root, &id, true, false).map_err(run_dir)?)
                }
                Pid1::Init { .. } => None,
                Pid1::Main { stdin, tty, .. } => {
                    Some(fifo::create_fifos(root, &id, stdin, tty).map_err(run_dir)?)
                }
            };
            let dir = fifos.as_ref().map(|(d, _)| d);
            seal::stage(&root.join(&id), &self.inner.proc_root, policy, sandbox_uid)?;
            let (disks, objects, net) = tokio::join!(
                self.make_disks(&id, policy, sandbox_uid),
                self.create_objects(&id, &base, spec_json, labels),
                self.make_network(&id, policy)
            );
            let (mounts, _, _) = objects?;
            net?;
            let mounts = bound_rootfs(&disks?.0, mounts)?;
            let c = &self.inner.containerd;
            let pid = c
                .create_task(CreateTaskRequest {
                    container_id: id.clone(),
                    rootfs: mounts,
                    stdin: path_string(dir.and_then(|d| d.stdin.as_deref())),
                    stdout: path_string(dir.map(|d| d.stdout.as_path())),
                    stderr: path_string(dir.and_then(|d| d.stderr.as_deref())),
                    terminal: pid1_terminal,
                    ..Default::default()
                })
                .await
                .map_err(|e| exec_error(&args, e))?;
            seal::seal(&self.inner.proc_root, pid, policy)?;
            // Started now, so that a run does not wait for `runc start`: the trampoline
            // blocks reading its command line, and nothing of a run's has executed yet. A
            // main command starts when its owner says (`Sandbox::start`).
            if !matches!(pid1, Pid1::Main { .. }) {
                c.start_task(&id).await.map_err(|e| exec_error(&args, e))?;
            }
            Ok::<_, RunError>(MadeSandbox {
                id: id.clone(),
                base: base.clone(),
                policy_hash: policy.hash(),
                spec_digest: spec_digest.clone(),
                uid: sandbox_uid.unwrap_or(policy.user.uid),
                not_enforced: built.not_enforced.clone(),
                fifos,
                pid,
                created_unix_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64,
            })
        };
        match made.await {
            Ok(p) => Ok(p),
            Err(e) => {
                if matches!(e, RunError::Image { .. }) {
                    self.forget_image(&policy.image);
                }
                if let Err(c) = self.cleanup(&id).await {
                    tracing::warn!("{c}");
                }
                Err(e)
            }
        }
    }

    /// SIGKILL to every process of the run's task.
    async fn kill(&self, id: &str) -> Result<(), RunError> {
        let sigkill = nix::sys::signal::Signal::SIGKILL as u32;
        let kill = self.inner.containerd.kill_task(id, sigkill, true);
        match tokio::time::timeout(KILL_GRACE, kill).await {
            Err(_) => Err(RunError::Unkillable { id: id.to_string() }),
            // Already gone: the wait reports the exit.
            Ok(Err(e)) if e.is_not_found() => Ok(()),
            Ok(Err(e)) => Err(RunError::Lost {
                id: id.to_string(),
                message: e.to_string(),
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

pub(crate) async fn next_cancel(rx: &mut Option<tokio::sync::watch::Receiver<Option<i32>>>) -> i32 {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if let Some(sig) = *rx.borrow_and_update() {
            return sig;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// What pid 1 of a sandbox made ahead of its use is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pid1<'a> {
    /// The image's `/bin/sh` running [`TRAMPOLINE`]: a pooled sandbox, used once.
    Trampoline,
    /// stockade's init holding the sandbox open (a long-lived sandbox), installed on the
    /// host at `host_path` and bound read-only at [`crate::init::SANDBOX_PATH`]; with
    /// `ptys`, the sandbox has the devpts (and its device rules) that execs with a terminal
    /// need, as a run with a terminal has.
    Init {
        host_path: &'a std::path::Path,
        ptys: bool,
    },
    /// stockade's init running `argv` as its only child (`-- CMD ARG...`: signals
    /// forwarded, exits as the command did): a sandbox whose life is one command's, as a
    /// Docker container's is. Its stdio goes through FIFOs in the run directory (stdin only
    /// with `stdin`; stdout alone, from a terminal of its own, with `tty`). The task is
    /// created, not started.
    Main {
        host_path: &'a std::path::Path,
        argv: &'a [String],
        tty: bool,
        stdin: bool,
    },
}

/// A started sandbox whose pid 1 waits, as [`Runner::make_sandbox`] made it.
#[derive(Debug)]
pub(crate) struct MadeSandbox {
    pub id: String,
    pub base: BaseImage,
    pub policy_hash: String,
    pub spec_digest: String,
    /// The UID pid 1 runs as (a host UID of the sandbox's own unless the policy names one).
    pub uid: u32,
    pub not_enforced: Vec<spec::NotEnforced>,
    /// The run directory's FIFOs and our open ends (a trampoline's; none for an init).
    pub fifos: Option<(fifo::RunDir, fifo::Opened)>,
    /// Host pid of pid 1.
    pub pid: u32,
    pub created_unix_ms: u64,
}

/// pid 1 of a prepared sandbox: `/bin/sh -c TRAMPOLINE`.
fn trampoline_args() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), TRAMPOLINE.into()]
}

/// The command line a prepared sandbox's trampoline reads: every argument single-quoted
/// (a `'` inside becomes `'\''`, a newline `'"$N"'`, so that the line stays one line),
/// ending in a newline. `eval "exec …"` of it runs exactly `args`, with no expansion.
pub(crate) fn command_line(args: &[String]) -> Vec<u8> {
    let mut line = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push('\'');
        for ch in a.chars() {
            match ch {
                '\'' => line.push_str("'\\''"),
                '\n' => line.push_str("'\"$N\"'"),
                c => line.push(c),
            }
        }
        line.push('\'');
    }
    line.push('\n');
    line.into_bytes()
}

/// The rootfs mounts Tasks.Create gets: the snapshot's, with the overlay's upper layer on
/// the root volume when there is one (see [`disk::bound_rootfs`]).
fn bound_rootfs(disks: &disk::Provisioned, mounts: Vec<Mount>) -> Result<Vec<Mount>, RunError> {
    let Some((upper, work)) = &disks.root else {
        return Ok(mounts);
    };
    let (mounts, own_upper) = disk::bound_rootfs(mounts, upper, work)?;
    disk::copy_root(&own_upper, upper)?;
    Ok(mounts)
}

fn path_string(p: Option<&std::path::Path>) -> String {
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

pub(crate) fn sinks(output: Output) -> (Sink, Sink) {
    match output {
        Output::Capture => (Sink::Capture, Sink::Capture),
        Output::Inherit => (
            Sink::Forward(Box::new(tokio::io::stdout())),
            Sink::Forward(Box::new(tokio::io::stderr())),
        ),
        Output::Writers { stdout, stderr } => (Sink::Forward(stdout), Sink::Forward(stderr)),
    }
}

/// Forwards the request's stdin into the FIFO; at its end, closes our end and asks the
/// shim to close the process's stdin (the task's, or exec process `exec_id`'s), so that
/// the command sees end of file.
pub(crate) fn spawn_stdin(
    c: Arc<dyn Containerd>,
    id: String,
    exec_id: Option<String>,
    mut tx: tokio::net::unix::pipe::Sender,
    preamble: Option<Vec<u8>>,
    stdin: Stdin,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(p) = preamble {
            if tx.write_all(&p).await.is_err() {
                return;
            }
        }
        match stdin {
            Stdin::Null => {}
            Stdin::Bytes(b) => {
                let _ = tx.write_all(&b).await;
            }
            Stdin::Reader(mut r) => {
                let _ = tokio::io::copy(&mut r, &mut tx).await;
            }
            Stdin::Chunks(mut rx) => {
                while let Some(chunk) = rx.recv().await {
                    if tx.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(tx);
        let _ = match exec_id {
            Some(e) => c.close_process_stdin(&id, &e).await,
            None => c.close_stdin(&id).await,
        };
    })
}

/// What is known of a run so far, for the audit line of a run that fails.
#[derive(Debug, Default, Clone)]
pub struct Attempt {
    pub started_at_unix_ms: u64,
    pub id: String,
    pub argv: Vec<String>,
    pub image: String,
    pub image_digest: Option<String>,
    pub policy_hash: String,
    pub spec_digest: Option<String>,
    pub runtime: Option<super::RuntimeBinary>,
}

/// What the live part of a run needs to know.
#[derive(Clone, Copy)]
struct Live<'a> {
    id: &'a str,
    policy: &'a ValidatedPolicy,
    base: &'a BaseImage,
    args: &'a [String],
    terminal: bool,
    timeout: std::time::Duration,
    max_output: u64,
    dir: &'a fifo::RunDir,
    pooled: bool,
    /// The host UID of the sandbox's own, when it has one.
    sandbox_uid: Option<u32>,
}
