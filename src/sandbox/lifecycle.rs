//! A live sandbox's state as [`SandboxInfo`], and the end of its life: signals, a stop with
//! a grace period, and removal of everything it made.

use std::time::Duration;

use super::{remove, session, Sandbox, SandboxError, SandboxInfo};
use crate::containerd::TaskStatus;
use crate::runner::{RunError, KILL_GRACE};

impl Sandbox {
    /// Its state, limits and usage.
    pub async fn inspect(&self) -> Result<SandboxInfo, SandboxError> {
        let r = &self.record;
        let state = self.state().await?;
        let usage = self
            .runner()
            .cgroups()
            .usage(&crate::spec::cgroups_path(&r.id));
        Ok(SandboxInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            state,
            pid: r.pid,
            image: r.image.clone(),
            created: crate::runner::journal::rfc3339_millis(r.created_unix_ms),
            created_unix_ms: r.created_unix_ms,
            last_activity_unix_ms: session::last_activity_ms(&self.run_dir()),
            expires_unix_ms: r.lifetime_ms.map(|l| r.created_unix_ms + l),
            idle_timeout_ms: r.idle_timeout_ms,
            policy_hash: r.policy_hash.clone(),
            spec_digest: r.spec_digest.clone(),
            uid: r.uid,
            limits: r.limits,
            usage,
            labels: r.labels.clone(),
            not_enforced: r.not_enforced.clone(),
            network: crate::network::read_record(&self.run_dir())
                .ok()
                .flatten()
                .map(|n| super::NetworkInfo {
                    mode: n.mode,
                    address: n.sandbox_addr,
                    group: n.group,
                    published: n.published,
                }),
        })
    }

    /// Sends `signal` to its init (the init ends on SIGTERM, SIGINT, SIGHUP and SIGQUIT;
    /// SIGKILL ends it, and with it every process of the sandbox).
    pub async fn kill(&self, signal: i32) -> Result<(), SandboxError> {
        if !(1..=64).contains(&signal) {
            return Err(SandboxError::Invalid {
                field: "signal",
                reason: format!("{signal} is not a signal number"),
            });
        }
        match self
            .runner()
            .containerd()
            .kill_task(self.id(), signal as u32, false)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(SandboxError::NotRunning {
                id: self.id().to_string(),
                state: "stopped".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops it: SIGTERM to its init, then SIGKILL to every process after `grace`. It stays
    /// (stopped) until removed or expired. Stopping a stopped sandbox does nothing.
    pub async fn stop(&self, grace: Duration) -> Result<(), SandboxError> {
        let c = self.runner().containerd().clone();
        let id = self.id();
        if self.state().await? != TaskStatus::Running {
            return Ok(());
        }
        let wait = c.wait_task(id);
        tokio::pin!(wait);
        let term = nix::sys::signal::Signal::SIGTERM as u32;
        match c.kill_task(id, term, false).await {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        if tokio::time::timeout(grace, &mut wait).await.is_ok() {
            return Ok(());
        }
        let kill = nix::sys::signal::Signal::SIGKILL as u32;
        match c.kill_task(id, kill, true).await {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        match tokio::time::timeout(KILL_GRACE, &mut wait).await {
            Ok(_) => Ok(()),
            Err(_) => Err(RunError::Unkillable { id: id.to_string() }.into()),
        }
    }

    /// Removes it and everything it made (task, container, snapshot, cgroup, run
    /// directory, UID, name). A running sandbox is refused unless `force`, which kills it.
    pub async fn remove(self, force: bool) -> Result<(), SandboxError> {
        if !force && self.state().await? == TaskStatus::Running {
            return Err(SandboxError::Running {
                id: self.id().to_string(),
            });
        }
        remove(self.runner(), &self.record).await
    }
}
