//! One `RUN` of a Dockerfile build as a layer: the command runs in a one-shot stockade
//! sandbox on the parent snapshot (the build policy: writable root, network `none`, no
//! capabilities, the default seccomp filter and limits), then containerd's Diff service
//! writes the change between the parent and the run's snapshot into the content store as an
//! uncompressed layer (the root the command saw: the parent with the run's root volume as
//! its upper layer, see [`crate::disk`]). The run (container, task, snapshot, run directory) and the view of
//! the parent are removed on every path.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::DiffRequest;

use super::oci::{Descriptor, MEDIA_LAYER_TAR};
use super::store::random_hex;
use crate::containerd::{Containerd, LABEL_MANAGED};
use crate::runner::{RunError, RunRequest, Runner};

/// How a `RUN` step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The command exited non-zero (or was killed): its code and output.
    #[error("exited with {code}")]
    Failed {
        /// The exit code stockade reports (`docker run`'s convention).
        code: u8,
        /// What it wrote to stdout and stderr.
        output: String,
    },
    /// The sandbox could not run it.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A containerd call failed.
    #[error(transparent)]
    Containerd(#[from] crate::containerd::ContainerdError),
    /// The run's snapshot mounts could not be read.
    #[error("{0}")]
    Mounts(String),
}

/// What a `RUN` made: its layer (uncompressed; the digest is the diff id) and output.
#[derive(Debug, Clone)]
pub struct StepLayer {
    /// The layer blob in the content store.
    pub layer: Descriptor,
    /// stdout then stderr of the command.
    pub output: String,
}

/// Runs `req` (its policy's image is the parent snapshot's key) with `runner`, which must
/// resolve images as snapshot keys and leave cleanup to its caller
/// ([`crate::runner::CleanupMode::Caller`]); diffs through `containerd` (a client under
/// the build's lease, so that the layer blob is kept until the image names it).
pub async fn run_step(
    runner: &Runner,
    containerd: &dyn Containerd,
    snapshotter: &str,
    req: RunRequest,
) -> Result<StepLayer, StepError> {
    let parent = req.policy.image.clone();
    let result = runner.run(req).await;
    let result = match result {
        Ok(r) => r,
        // A failed run removed what it made (the runner's error paths clean up).
        Err(e) => return Err(e.into()),
    };
    let id = result.id.clone();
    let mut output = result.stdout.clone();
    output.push_str(&result.stderr);
    let diffed = if result.exit_code == 0 {
        diff_run(runner, containerd, snapshotter, &parent, &id).await
    } else {
        Err(StepError::Failed {
            code: result.exit_code,
            output: output.clone(),
        })
    };
    if let Err(e) = runner.cleanup(&id).await {
        tracing::warn!("removing build step {id}: {e}");
    }
    Ok(StepLayer {
        layer: diffed?,
        output,
    })
}

/// The layer between `parent` and the snapshot of run `id`.
async fn diff_run(
    runner: &Runner,
    containerd: &dyn Containerd,
    snapshotter: &str,
    parent: &str,
    id: &str,
) -> Result<Descriptor, StepError> {
    let mut right = containerd
        .snapshot_mounts(snapshotter, id)
        .await
        .map_err(|e| StepError::Mounts(format!("snapshot {id}: mounts: {e}")))?;
    // A writable root's changes are on the run's root volume, not in the snapshot's own
    // upper directory (see `crate::disk`): diff the root the command saw.
    let volume = runner.fifo_root().join(id).join(crate::disk::ROOT_MOUNT);
    if volume.join("upper").is_dir() {
        right = crate::disk::bound_rootfs(right, &volume.join("upper"), &volume.join("work"))
            .map_err(|e| StepError::Mounts(format!("run {id}: {e}")))?
            .0;
    }
    let view = format!("stockade-build-view-{}", random_hex(6));
    let left = containerd
        .prepare_snapshot(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: view.clone(),
            parent: parent.to_string(),
            labels: HashMap::from([(LABEL_MANAGED.to_string(), "true".to_string())]),
        })
        .await?;
    let diffed = containerd
        .diff(DiffRequest {
            left,
            right,
            media_type: MEDIA_LAYER_TAR.to_string(),
            r#ref: format!("stockade-build-{id}"),
            labels: HashMap::new(),
            source_date_epoch: None,
        })
        .await;
    if let Err(e) = containerd.remove_snapshot(snapshotter, &view).await {
        tracing::warn!("removing build view {view}: {e}");
    }
    let d = diffed?;
    Ok(Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: Default::default(),
        platform: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::containerd::fake::{Behaviour, FakeContainerd, Op, Reply};
    use crate::policy::{HostPolicyEnv, Policy, PolicyOverrides};

    /// A runner over a fake with the committed snapshot `sha256:parent`, cleaning up only
    /// when told (as a build's runner does).
    fn rig() -> (tempfile::TempDir, FakeContainerd, Runner) {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        std::fs::create_dir(&proc_root).unwrap();
        let fake = FakeContainerd::new().proc_root(&proc_root);
        fake.add_base("sha256:parent");
        let runner = fake
            .runner_builder(dir.path(), &proc_root)
            .cleanup(crate::runner::CleanupMode::Caller)
            .build()
            .unwrap();
        (dir, fake, runner)
    }

    fn policy(image: &str) -> crate::policy::ValidatedPolicy {
        let o = PolicyOverrides {
            image: Some(image.to_string()),
            read_write_root: true,
            ..Default::default()
        };
        Policy::default()
            .validate(None, &o, &HostPolicyEnv)
            .unwrap()
    }

    #[tokio::test]
    async fn a_failing_run_leaves_nothing_behind_and_reports_its_output() {
        let (_dir, fake, runner) = rig();
        fake.behaviour(Behaviour::Exits {
            status: 3,
            after: std::time::Duration::ZERO,
            stdout: b"broken\n".to_vec(),
        });
        let e = run_step(
            &runner,
            &fake,
            "overlayfs",
            RunRequest::new(policy("sha256:parent"), ["false"]),
        )
        .await
        .unwrap_err();
        match e {
            StepError::Failed { code, output } => {
                assert_eq!(code, 3);
                assert_eq!(output, "broken\n");
            }
            other => panic!("{other}"),
        }
        assert_eq!(fake.count(Op::Diff), 0);
        assert_eq!(fake.leftovers(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_failing_diff_leaves_nothing_behind() {
        let (_dir, fake, runner) = rig();
        fake.script(Op::Diff, Reply::fail(tonic::Code::Internal));
        let shared: Arc<dyn Containerd> = Arc::new(fake.clone());
        let e = run_step(
            &runner,
            shared.as_ref(),
            "overlayfs",
            RunRequest::new(policy("sha256:parent"), ["true"]),
        )
        .await
        .unwrap_err();
        // The run's mounts are read through the seam and the diff is asked for; it fails,
        // and everything the step made (the view included) is still removed.
        assert!(matches!(e, StepError::Containerd(_)), "{e}");
        assert_eq!(fake.count(Op::Diff), 1);
        assert_eq!(fake.leftovers(), Vec::<String>::new());
    }
}
