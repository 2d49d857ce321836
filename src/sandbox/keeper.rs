//! The keeper of a session's deadlines: sleeps until the nearest one and removes the
//! session when it has passed. It also serves the session's published ports and hosts its
//! other network services (an `allowlist` sandbox's DNS forwarder), and then stays until
//! the session is gone even without a deadline. The CLI runs it in a detached process of its own (recorded
//! as the run directory's owner); a long-lived owner runs it on a task.

use std::time::Duration;

use super::SandboxError;
use crate::runner::session::{self, Expiry, SessionRecord, Verdict};
use crate::runner::Runner;

/// The longest the keeper sleeps before looking again: a session removed meanwhile ends
/// its keeper within this.
pub const KEEPER_POLL: Duration = Duration::from_secs(2);

/// How long a keeper tries to bind a session's published ports while its creator lets
/// them go.
const ADOPT_PATIENCE: Duration = Duration::from_secs(5);

pub(super) async fn keep(runner: &Runner, id: &str) -> Result<Option<Expiry>, SandboxError> {
    let dir = runner.fifo_root().join(id);
    // Published ports are served while the keeper lives (see crate::network::publish).
    let adopted = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            crate::network::publish::adopt(
                &crate::network::host::IpRoute::default(),
                &dir,
                ADOPT_PATIENCE,
            )
        })
    };
    if let Ok(Err(e)) = adopted.await {
        tracing::warn!("sandbox {id}: published ports: {e}");
    }
    // The sandbox's other network services (a DNS forwarder) live as long as this keeper.
    let services = crate::network::has_service(&dir);
    if services {
        if let Err(e) = crate::network::start_services(&dir) {
            tracing::warn!("sandbox {id}: {e}");
        }
    }
    loop {
        let Some(record) = SessionRecord::read(&dir) else {
            // Removed by someone else.
            return Ok(None);
        };
        // A stopped sandbox is kept until a deadline passes, as a stopped container is;
        // only crash reclaim, with no keeper to ask, removes one whose init is gone.
        let verdict = session::decide(
            &record.deadlines(),
            session::last_activity_ms(&dir),
            true,
            session::now_ms(),
        );
        match verdict {
            Verdict::Remove(why) => {
                super::remove(runner, &record).await?;
                tracing::info!("sandbox {id} removed: {why:?}");
                return Ok(Some(why));
            }
            Verdict::Keep { until_ms: None }
                if !services && !crate::network::publish::running(&dir) =>
            {
                return Ok(None)
            }
            Verdict::Keep { until_ms: None } => tokio::time::sleep(KEEPER_POLL).await,
            Verdict::Keep {
                until_ms: Some(until),
            } => {
                let wait = Duration::from_millis(until.saturating_sub(session::now_ms()));
                tokio::time::sleep(wait.min(KEEPER_POLL)).await;
            }
        }
    }
}
