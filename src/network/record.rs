//! The record in a run directory ([`RECORD_FILE`]) naming what a sandbox's network is made
//! of, and the sandbox's nftables rules derived from it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{dns, nft, publish, AllowEntry, Cidr, NetworkError, NetworkMode, RECORD_FILE};
#[cfg(doc)]
use super::{release, slots, ALWAYS_DENIED};

/// What a sandbox's network is made of, written to its run directory before any of it is
/// made, so that [`release`] knows what to remove whatever the run got to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRecord {
    /// The policy's network mode.
    pub mode: NetworkMode,
    /// The namespace file.
    pub netns: PathBuf,
    /// The claims directory and the slot claimed there.
    pub claims: PathBuf,
    /// The slot's index in the range (see [`slots`]).
    pub slot: u32,
    /// Host side of the veth.
    pub veth: String,
    /// The host side's address: the sandbox's gateway.
    pub host_addr: Ipv4Addr,
    /// The sandbox's address (`eth0`).
    pub sandbox_addr: Ipv4Addr,
    /// The range the slot is from (the table's masquerade rule names it).
    pub range: Cidr,
    /// Ranges its policy opens although [`ALWAYS_DENIED`] covers them.
    pub allow: Vec<Cidr>,
    /// The group network it is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The names it is known by in its group: its id, then its session name if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Its published ports, as bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<publish::Published>,
    /// Its group's hosts file, bind-mounted at its `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<PathBuf>,
    /// The process running the published ports' proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_pid: Option<u32>,
    /// `allowlist`: the entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<AllowEntry>,
    /// `allowlist` with host names: the DNS forwarder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<dns::DnsService>,
}

impl NetRecord {
    /// The sandbox's rules, with the admissions recorded in `run_dir` that are live now.
    pub(super) fn rules(&self, run_dir: &Path) -> nft::SandboxRules {
        nft::SandboxRules {
            veth: self.veth.clone(),
            addr: self.sandbox_addr,
            mode: self.mode,
            allow: self.allow.clone(),
            group: self.group.clone(),
            published: self.published.iter().map(|p| p.port).collect(),
            entries: self.entries.clone(),
            dns: self.dns.as_ref().map(|d| d.listen),
            admitted: if self.dns.is_some() {
                dns::admitted(run_dir, dns::now_ms())
            } else {
                Vec::new()
            },
        }
    }
}

/// The record in `run_dir`, if it has one.
pub fn read_record(run_dir: &Path) -> Result<Option<NetRecord>, NetworkError> {
    let path = run_dir.join(RECORD_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| NetworkError::Record {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(NetworkError::Io { path, source }),
    }
}

pub(crate) fn write_record(run_dir: &Path, r: &NetRecord) -> Result<(), NetworkError> {
    let path = run_dir.join(RECORD_FILE);
    let tmp = run_dir.join(format!(".{RECORD_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(r).expect("a record always serializes");
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| NetworkError::Io { path, source })
}
