//! The sandboxes a server made, as the servers share their handling: finding one of a
//! holder's own (the [`Ledger`] says who made it), keeping its lifetime and idle timeout,
//! removing it, and reclaiming at start what an earlier server left.

use std::path::Path;
use std::sync::Arc;

use super::http_api::quota::Ledger;
use crate::sandbox::{Sandbox, SandboxError, SandboxInfo, Sandboxes};

/// The sandbox `id` (or name) if `holder` made it; `Ok(None)` when there is no such
/// sandbox or another holder made it (the two are not told apart, so that nobody learns of
/// another's sandboxes).
pub(super) async fn find(
    sandboxes: &Sandboxes,
    ledger: &Ledger,
    holder: &str,
    id: &str,
) -> Result<Option<Sandbox>, SandboxError> {
    let sb = match sandboxes.get(id).await {
        Ok(sb) => sb,
        Err(SandboxError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((ledger.owner(sb.id()).as_deref() == Some(holder)).then_some(sb))
}

/// Starts the task that keeps sandbox `id`'s lifetime and idle timeout
/// ([`Sandboxes::keep`]) and gives its share of `ledger` back once the sandbox is gone.
pub(super) fn spawn_keeper(
    sandboxes: &Sandboxes,
    ledger: &Arc<Ledger>,
    id: &str,
) -> tokio::task::JoinHandle<()> {
    let sandboxes = sandboxes.clone();
    let ledger = ledger.clone();
    let owned = id.to_string();
    tokio::spawn(async move {
        match sandboxes.keep(&owned).await {
            Ok(Some(why)) => tracing::info!("sandbox {owned} removed: {why:?}"),
            Ok(None) => {}
            Err(e) => tracing::warn!("keeping sandbox {owned}: {e}"),
        }
        if sandboxes.get(&owned).await.is_err() {
            ledger.release(&owned);
        }
    })
}

/// Removes sandbox `id` (killing what runs in it) and gives its share of `ledger` back. A
/// sandbox already gone is fine; a failure is logged.
pub(super) async fn remove(sandboxes: &Sandboxes, ledger: &Ledger, id: &str) {
    match sandboxes.get(id).await {
        Ok(sb) => {
            if let Err(e) = sb.remove(true).await {
                tracing::warn!("removing {id}: {e}");
            }
        }
        Err(SandboxError::NotFound(_)) => {}
        Err(e) => tracing::warn!("removing {id}: {e}"),
    }
    ledger.release(id);
}

/// Removes every sandbox that `left` picks (an earlier server's, by its labels or records)
/// and returns their ids. A failure is logged and the sandbox skipped.
pub(super) async fn remove_leftovers(
    sandboxes: &Sandboxes,
    left: impl Fn(&SandboxInfo, &Sandbox) -> bool,
) -> Vec<String> {
    let mut removed = Vec::new();
    for info in sandboxes.list().await.unwrap_or_default() {
        let Ok(sb) = sandboxes.get(&info.id).await else {
            continue;
        };
        if !left(&info, &sb) {
            continue;
        }
        match sb.remove(true).await {
            Ok(()) => removed.push(info.id),
            Err(e) => tracing::warn!("removing {}: {e}", info.id),
        }
    }
    removed
}

/// Whether the process recorded as the owner of `sb`'s run directory still runs (under
/// `proc_root`, the host's `/proc` unless a test gives another).
pub(super) fn owner_alive(sb: &Sandbox, proc_root: &Path) -> bool {
    crate::runner::read_owner(&sb.run_dir()).is_some_and(|pid| {
        crate::procfs::ProcStat::read(proc_root, pid).is_some_and(|s| !s.has_exited())
    })
}
