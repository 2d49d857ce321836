//! The run sequence against containerd. See the module documentation of [`super`] for the
//! phases and which overlap. The pieces a sandbox is made of are in [`objects`], the live
//! part of a run (start, wait, timeout, cancel, drain) in [`live`], sandboxes made ahead of
//! their use (pooled, long-lived) in [`prepare`].

mod live;
mod objects;
mod prepare;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) use live::{feed, next_cancel, sinks, spawn_stdin};
pub(crate) use objects::exec_error;
use prepare::command_line;
pub(crate) use prepare::Pid1;

use super::exit::{self, Outcome};
use super::output::Reported;
use super::{
    fifo, journal, uids, BaseImage, CleanupMode, Phases, Prepared, RunError, RunLog, RunRequest,
    RunResult, Runner, Stdin, ID_PREFIX,
};
use crate::disk;
use crate::policy::ValidatedPolicy;
use crate::spec;

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// How the process ended, as far as the wait loop saw it.
struct Ended {
    status: u32,
    timed_out: bool,
    cancelled_by: Option<i32>,
}

impl Runner {
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
        let log = self.log_for(&req.run_log);
        let r = self.run_inner(req, prepared, &mut fail, log.as_ref()).await;
        if let (Err(e), Some(id)) = (&r, &pooled_id) {
            // A prepared sandbox is never handed out twice: whatever failed, it goes.
            if !matches!(e, RunError::Lost { .. }) {
                if let Err(c) = self.cleanup(id).await {
                    tracing::warn!("{c}");
                }
            }
        }
        if let (Err(e), Some((log, _))) = (&r, &log) {
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
        log: Option<&(PathBuf, u32)>,
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
            run_log: _,
            image,
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
            None => id.unwrap_or_else(crate::runner::new_id),
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
            None => self.base_image_or(&policy.image, image).await?,
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
                    self.forget_image(&base);
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
        let Reported {
            stdout,
            stderr,
            truncated,
            stdout_bytes,
            stderr_bytes,
        } = Reported::of(&pumped_out, &pumped_err);
        let mut result = RunResult {
            id: id.clone(),
            exit_code: exit::exit_code(&outcome),
            pooled: live.pooled,
            signal: exit::signal_of(ended.status),
            timed_out: ended.timed_out,
            oom_killed,
            cancelled_by: ended.cancelled_by,
            stdout,
            stderr,
            truncated,
            stdout_bytes,
            stderr_bytes,
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
        if let Some((log, uid)) = log {
            let line = journal::RunRecord::from_result(&result, &args, *uid).to_line();
            if let Err(e) = journal::append(log, &line) {
                tracing::warn!("{e}");
                result.warnings.push(e.to_string());
            }
        }
        Ok(result)
    }

    /// The file run `log` asks for, with the caller's UID; `None` when nothing is logged.
    fn log_for(&self, log: &RunLog) -> Option<(PathBuf, u32)> {
        match log {
            RunLog::Runner => {
                let uid = nix::unistd::getuid().as_raw();
                self.inner.run_log.clone().map(|p| (p, uid))
            }
            RunLog::Off => None,
            RunLog::File { path, uid } => Some((path.clone(), *uid)),
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
}

/// What is known of a run so far, for the run-log line of a run that fails.
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
