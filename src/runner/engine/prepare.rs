//! Sandboxes made ahead of their use: a pooled one (pid 1 a trampoline waiting for one
//! command line) and a long-lived one (pid 1 stockade's init), through one path.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::CreateTaskRequest;

use super::objects::{bound_rootfs, exec_error, path_string};
use crate::policy::ValidatedPolicy;
use crate::runner::{fifo, seal, uids, BaseImage, Prepared, RunError, Runner, TRAMPOLINE};
use crate::spec;

impl Runner {
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
            .make_sandbox(policy, crate::runner::new_id(), labels, Pid1::Trampoline)
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
                    self.forget_image(&base);
                }
                if let Err(c) = self.cleanup(&id).await {
                    tracing::warn!("{c}");
                }
                Err(e)
            }
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
