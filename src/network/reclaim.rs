//! Reclaiming what crashed runs left: stale claims, orphaned veths and namespace files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::host::{self, NetHost};
use super::{apply_table, refresh_hosts, slots, NetConfig, NetworkError, VETH_PREFIX};

/// What [`reconcile`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Reclaimed {
    /// Slots whose claim was removed.
    pub claims: Vec<u32>,
    /// Host-side veths deleted.
    pub links: Vec<String>,
    /// Namespace files unmounted and removed.
    pub netns: Vec<PathBuf>,
}

impl Reclaimed {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.links.is_empty() && self.netns.is_empty()
    }
}

/// Removes what crashed runs left: claims whose run directory is gone (older than
/// `grace`), namespace files in `cfg.netns_root` that no claim names and whose run
/// directory under `fifo_root` is gone (older than `grace`), and `stkv*` links no claim
/// names; then re-renders the table if anything went.
pub fn reconcile_with(
    host: &dyn NetHost,
    cfg: &NetConfig,
    fifo_root: &Path,
    grace: std::time::Duration,
) -> Result<Reclaimed, NetworkError> {
    if !cfg.claims.exists() && !cfg.netns_root.exists() {
        // No sandbox ever had a network here.
        return Ok(Reclaimed::default());
    }
    let mut done = Reclaimed::default();
    for (index, run_dir) in slots::stale(&cfg.claims, grace) {
        slots::release(&cfg.claims, index, &run_dir)?;
        done.claims.push(index);
    }
    let claimed: Vec<String> = slots::claims(&cfg.claims)
        .into_iter()
        .map(|(i, _)| format!("{VETH_PREFIX}{i}"))
        .collect();
    for link in host.links(VETH_PREFIX) {
        let ours = link[VETH_PREFIX.len()..].parse::<u32>().is_ok();
        if ours && !claimed.contains(&link) {
            host.delete_link(&link)?;
            done.links.push(link);
        }
    }
    // A namespace file is made after its run's claim and removed before it, so one that no
    // claim's run directory names (runners with other run directories included) is a
    // crash's, once it is older than the grace.
    let claimed_ids: Vec<std::ffi::OsString> = slots::claims(&cfg.claims)
        .into_iter()
        .filter_map(|(_, run_dir)| run_dir.file_name().map(std::ffi::OsStr::to_os_string))
        .collect();
    if let Ok(entries) = std::fs::read_dir(&cfg.netns_root) {
        let now = std::time::SystemTime::now();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name.to_str() else { continue };
            if !id.starts_with(crate::runner::ID_PREFIX)
                || claimed_ids.contains(&name)
                || fifo_root.join(id).exists()
            {
                continue;
            }
            let young = std::fs::symlink_metadata(e.path())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_none_or(|age| age < grace);
            if young {
                continue;
            }
            host.remove_netns(&e.path())?;
            done.netns.push(e.path());
        }
    }
    if !done.is_empty() {
        apply_table(host, &cfg.claims, &cfg.range)?;
        refresh_hosts(&cfg.claims, &cfg.groups)?;
    }
    Ok(done)
}

/// [`reconcile_with`] on the real host.
pub fn reconcile(cfg: &NetConfig, fifo_root: &Path) -> Result<Reclaimed, NetworkError> {
    reconcile_with(
        &host::IpRoute::default(),
        cfg,
        fifo_root,
        slots::CLAIM_GRACE,
    )
}
