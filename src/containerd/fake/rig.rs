//! A runner over a fake containerd, for tests without root.

use std::path::Path;
use std::sync::Arc;

use super::FakeContainerd;
use crate::runner::{Runner, RunnerBuilder, RuntimeBinary, SnapshotImages};

impl FakeContainerd {
    /// A runner builder over this fake: images are the fake's committed snapshots, the
    /// runtime binary a fixed `runc`, no AppArmor, and every host path the run path touches
    /// (FIFOs and run directories, UID claims, cgroups) beneath `dir`, `/proc` at
    /// `proc_root` (the one this fake was made with). Callers add what their tests vary.
    pub fn runner_builder(&self, dir: &Path, proc_root: &Path) -> RunnerBuilder {
        Runner::builder()
            .containerd(Arc::new(self.clone()))
            .images(Arc::new(SnapshotImages))
            .runtime_binary(RuntimeBinary {
                path: "/usr/sbin/runc".into(),
                sha256: "sha256:0".into(),
                default: true,
            })
            .fifo_root(dir.join("fifo"))
            .uid_claims(dir.join("uids"))
            .cgroup_root(dir.join("cgroup"))
            .proc_root(proc_root)
            .apparmor(None)
    }
}
