//! Sandbox networking beyond the sandbox's own loopback.
//!
//! A sandbox whose policy says `network.mode = "egress"` gets a network namespace made by
//! stockade before its task (a namespace file bind-mounted at `<netns root>/<id>`, whose
//! path the spec's `linux.namespaces` names, as containerd's CRI plugin does), one routed
//! veth pair (`stkv<slot>` on the host, `eth0` inside) with a /31 claimed from a
//! stockade-owned range ([`slots`]), and its rules in the one nftables table stockade owns
//! ([`nft`]), replaced atomically from the live sandboxes' records. Everything is named
//! in the run directory's `network.json` before it is made, and [`release`] removes it on
//! every path; [`reconcile`] removes what crashed runs left.
//!
//! The host effects are behind [`host::NetHost`] (real: [`host::IpRoute`]; fake:
//! [`host::FakeHost`]), so the allocation and the rules are tested without root.

pub mod allow;
pub mod cidr;
pub mod dns;
pub mod doctor;
pub mod group;
pub mod host;
pub mod nft;
pub mod publish;
pub mod seccomp;
pub mod slots;

mod reclaim;
mod record;
mod rules;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

pub use crate::policy::NetworkMode;
pub use allow::{AllowEntry, Dest, Ports};
pub use cidr::{Cidr, ALWAYS_DENIED};
use host::{NetHost, Veth};
pub use reclaim::{reconcile, reconcile_with, Reclaimed};
pub(crate) use record::write_record;
pub use record::{read_record, NetRecord};
pub use rules::{parse_allow, NetworkRules};

/// Where sandboxes' network namespace files are bind-mounted by default.
pub const DEFAULT_NETNS_ROOT: &str = "/run/stockade/netns";
/// Where address claims live by default. Host-wide on purpose: two stockade processes
/// with different run directories must still not share an address.
pub const DEFAULT_NET_CLAIMS: &str = "/run/stockade/net";
/// Where group networks live by default (see [`group`]); host-wide, beside the claims.
pub const DEFAULT_GROUPS: &str = "/run/stockade/groups";
/// The range sandbox addresses come from by default: 32 768 sandboxes, a /31 each. Inside
/// 10/8, which every sandbox is denied anyway. [`NetConfig::range`] changes it where the
/// host already uses it.
pub const DEFAULT_RANGE: Cidr = Cidr::new(10, 199, 0, 0, 16);
/// Host-side veth names: this prefix and the slot number. The nftables table matches every
/// interface with this prefix, so a veth that is not (or no longer) a live sandbox's is
/// dropped.
pub const VETH_PREFIX: &str = "stkv";
/// The record in a run directory naming what its network is made of.
pub const RECORD_FILE: &str = "network.json";
/// The lock file in the claims directory, held while the table is rendered and applied.
const LOCK_FILE: &str = ".table.lock";

/// Errors of sandbox networking; each renders as one line.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// A file or directory of the network's state could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A host command or system call (`ip`, `nsenter`, `nft`, a namespace mount, a
    /// listener) failed.
    #[error("network: {what}: {message}")]
    Command {
        /// The command or operation and its arguments.
        what: String,
        /// Why it failed (its stderr, or the error).
        message: String,
    },
    /// Every slot of the sandbox address range is claimed.
    #[error("network: all sandbox addresses of {range} are in use")]
    Exhausted {
        /// The range ([`NetConfig::range`]).
        range: Cidr,
    },
    /// A network or group record on disk is not valid JSON of its kind.
    #[error("{}: not a network record: {message}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
    /// A group network cannot be made, joined or removed (a bad name, one that does not
    /// exist or already does, one still in use).
    #[error("network {name}: {message}")]
    Group {
        /// The group's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

pub(crate) fn make_dir(dir: &Path) -> Result<(), NetworkError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NetworkError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

pub(crate) fn gone_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Where and how sandbox networks are made. Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Parent of the namespace files. Default [`DEFAULT_NETNS_ROOT`].
    pub netns_root: PathBuf,
    /// Address claims. Default [`DEFAULT_NET_CLAIMS`].
    pub claims: PathBuf,
    /// Sandbox addresses. Default [`DEFAULT_RANGE`].
    pub range: Cidr,
    /// Group networks. Default [`DEFAULT_GROUPS`].
    pub groups: PathBuf,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            netns_root: PathBuf::from(DEFAULT_NETNS_ROOT),
            claims: PathBuf::from(DEFAULT_NET_CLAIMS),
            range: DEFAULT_RANGE,
            groups: PathBuf::from(DEFAULT_GROUPS),
        }
    }
}

impl NetConfig {
    /// The namespace file of sandbox `id`.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_root.join(id)
    }
}

/// Whether a mode needs a namespace (and veth) made by stockade.
pub fn needs_netns(mode: NetworkMode) -> bool {
    matches!(
        mode,
        NetworkMode::Egress | NetworkMode::Allowlist | NetworkMode::Group
    )
}

/// Whether the sandbox whose run directory is `run_dir` has a network service that a
/// process must keep running for it (an `allowlist` DNS forwarder).
pub fn has_service(run_dir: &Path) -> bool {
    read_record(run_dir)
        .ok()
        .flatten()
        .is_some_and(|r| r.dns.is_some())
}

/// Starts, on the current Tokio runtime, the network services the sandbox whose run
/// directory is `run_dir` needs (its DNS forwarder), hosted by this process until the
/// sandbox's network is released; nothing when it needs none.
pub fn start_services(run_dir: &Path) -> Result<(), NetworkError> {
    dns::start(run_dir).map(|_| ())
}

/// Mounts the resolver file [`setup`] writes for an `allowlist` sandbox (naming its DNS
/// forwarder) read-only on the sandbox's `/etc/resolv.conf`.
pub fn mount_resolv_conf(spec: &mut oci_spec::runtime::Spec, run_dir: &Path) {
    bind_file_ro(
        spec,
        Path::new("/etc/resolv.conf"),
        &run_dir.join(dns::RESOLV_FILE),
    );
}

/// Bind-mounts the host file `source` read-only (no suid, devices or exec) on `dest` in
/// `spec`, replacing any mount already there: a group's `/etc/hosts`, an allowlist
/// sandbox's `/etc/resolv.conf`.
pub(crate) fn bind_file_ro(spec: &mut oci_spec::runtime::Spec, dest: &Path, source: &Path) {
    let Ok(m) = oci_spec::runtime::MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(
            ["rbind", "ro", "nosuid", "nodev", "noexec"]
                .map(String::from)
                .to_vec(),
        )
        .build()
    else {
        return;
    };
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|x| x.destination() != dest);
    mounts.push(m);
    spec.set_mounts(Some(mounts));
}

/// What a made network gives the run: the sandbox's address and its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attached {
    /// The policy's network mode.
    pub mode: NetworkMode,
    /// The sandbox's address (`eth0`).
    pub address: Ipv4Addr,
    /// Its default route: the host side of the veth.
    pub gateway: Ipv4Addr,
    /// The host side's link name.
    pub veth: String,
}

/// Makes the network of sandbox `id` (run directory `run_dir`, which exists): claims a
/// slot, records it, creates the namespace file, replaces the table with one that has the
/// sandbox's rules, then creates the veth. On failure, what was made stays recorded and
/// the caller's cleanup ([`release`]) removes it.
pub fn setup(
    host: &dyn NetHost,
    cfg: &NetConfig,
    id: &str,
    run_dir: &Path,
    mode: NetworkMode,
    rules: &NetworkRules,
) -> Result<Attached, NetworkError> {
    if let Some(g) = &rules.group {
        group::read(&cfg.groups, g)?;
    }
    let slot = slots::claim(&cfg.claims, &cfg.range, run_dir)?;
    let record = NetRecord {
        mode,
        netns: cfg.netns_path(id),
        claims: cfg.claims.clone(),
        slot: slot.index,
        veth: format!("{VETH_PREFIX}{}", slot.index),
        host_addr: slot.host,
        sandbox_addr: slot.sandbox,
        range: cfg.range,
        allow: rules.allow.clone(),
        group: rules.group.clone(),
        names: match &rules.group {
            Some(_) => group::member_names(run_dir.parent().unwrap_or(run_dir), id),
            None => Vec::new(),
        },
        hosts: rules
            .group
            .as_ref()
            .map(|g| group::hosts_path(&cfg.groups, g)),
        // The proxy's ports are opened when it has bound them.
        published: Vec::new(),
        proxy_pid: None,
        entries: rules.entries.clone(),
        dns: (mode == NetworkMode::Allowlist && rules.needs_dns()).then(|| dns::DnsService {
            listen: slot.host,
            upstream: rules.dns_upstream.clone(),
            pid: None,
        }),
    };
    if let Err(e) = write_record(run_dir, &record) {
        let _ = slots::release(&cfg.claims, slot.index, run_dir);
        return Err(e);
    }
    if mode == NetworkMode::Allowlist {
        // Names the forwarder; with no host name entry nothing answers, and DNS fails fast.
        let path = run_dir.join(dns::RESOLV_FILE);
        std::fs::write(&path, format!("nameserver {}\n", record.host_addr))
            .map_err(|source| NetworkError::Io { path, source })?;
    }
    // A link of this name can only be a crashed run's whose claim was reclaimed.
    host.delete_link(&record.veth)?;
    host.create_netns(&record.netns)?;
    apply_table(host, &cfg.claims, &cfg.range)?;
    if record.group.is_some() {
        refresh_hosts(&cfg.claims, &cfg.groups)?;
    }
    host.add_veth(&Veth {
        host: record.veth.clone(),
        netns: record.netns.clone(),
        host_addr: record.host_addr,
        sandbox_addr: record.sandbox_addr,
    })?;
    Ok(Attached {
        mode,
        address: record.sandbox_addr,
        gateway: record.host_addr,
        veth: record.veth,
    })
}

/// Removes the network recorded in `run_dir`: the veth, the namespace file, the claim and
/// the sandbox's rules (the table re-rendered without them). Nothing recorded: nothing to
/// do. Every step is tried; the record goes only when all succeeded.
pub fn release_with(host: &dyn NetHost, run_dir: &Path) -> Result<(), NetworkError> {
    dns::stop(run_dir);
    let Some(r) = read_record(run_dir)? else {
        return Ok(());
    };
    let mut first: Option<NetworkError> = None;
    let mut keep = |res: Result<(), NetworkError>| {
        if let Err(e) = res {
            first.get_or_insert(e);
        }
    };
    publish::stop(run_dir);
    keep(host.delete_link(&r.veth));
    keep(host.remove_netns(&r.netns));
    keep(slots::release(&r.claims, r.slot, run_dir));
    keep(apply_table(host, &r.claims, &r.range));
    if let Some(groups) = r
        .hosts
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        keep(refresh_hosts(&r.claims, groups));
    }
    match first {
        Some(e) => Err(e),
        None => std::fs::remove_file(run_dir.join(dns::ADMITTED_FILE))
            .or_else(gone_ok)
            .and_then(|()| std::fs::remove_file(run_dir.join(RECORD_FILE)))
            .or_else(gone_ok)
            .map_err(|source| NetworkError::Io {
                path: run_dir.join(RECORD_FILE),
                source,
            }),
    }
}

/// [`release_with`] on the real host.
pub fn release(run_dir: &Path) -> Result<(), NetworkError> {
    release_with(&host::IpRoute::default(), run_dir)
}

/// Renders the table from every claim in `claims` whose run directory holds a record for
/// it, and applies it; serialised by a lock in the claims directory, so the last writer
/// always renders what is live.
pub fn apply_table(host: &dyn NetHost, claims: &Path, range: &Cidr) -> Result<(), NetworkError> {
    let _lock = table_lock(claims)?;
    let live = live_rules(claims);
    // Claims whose records cannot be read keep the table, closed, rather than removing it
    // and leaving their veths unfiltered (fail closed).
    let script = if live.is_empty() && !slots::claims(claims).is_empty() {
        nft::render_closed(range, VETH_PREFIX)
    } else {
        nft::render(range, VETH_PREFIX, &live)
    };
    host.apply_nft(&script)
}

/// The table lock of the claims directory `claims`, held until dropped.
pub(crate) fn table_lock(claims: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, NetworkError> {
    make_dir(claims)?;
    let lock_path = claims.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| NetworkError::Io {
            path: lock_path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        NetworkError::Io {
            path: lock_path.clone(),
            source: std::io::Error::from(e),
        }
    })
}

/// The record of every claim whose run directory records that same claim.
pub fn live_records(claims: &Path) -> Vec<NetRecord> {
    slots::claims(claims)
        .into_iter()
        .filter_map(|(index, run_dir)| {
            let r = read_record(&run_dir).ok().flatten()?;
            (r.slot == index && r.claims == claims).then_some(r)
        })
        .collect()
}

/// The rules of every claim whose run directory records that same claim.
fn live_rules(claims: &Path) -> Vec<nft::SandboxRules> {
    slots::claims(claims)
        .into_iter()
        .filter_map(|(index, run_dir)| {
            let r = read_record(&run_dir).ok().flatten()?;
            (r.slot == index && r.claims == claims).then(|| r.rules(&run_dir))
        })
        .collect()
}

/// Every group network of `cfg` with its live members.
pub fn groups(cfg: &NetConfig) -> Vec<group::GroupInfo> {
    group::list(&cfg.groups, &live_records(&cfg.claims))
}

/// Makes group network `name` of `cfg`.
pub fn create_group(cfg: &NetConfig, name: &str) -> Result<group::GroupRecord, NetworkError> {
    group::create(&cfg.groups, name)
}

/// Removes group network `name` of `cfg`, refused while it has live members; under the
/// table's lock, so no member's rules are rendered meanwhile.
pub fn remove_group(cfg: &NetConfig, name: &str) -> Result<(), NetworkError> {
    let _lock = table_lock(&cfg.claims)?;
    group::remove(&cfg.groups, name, &live_records(&cfg.claims))
}

/// Rewrites every group's hosts file in `groups` from the live records of `claims`, under
/// the table's lock (the last writer writes what is live).
pub fn refresh_hosts(claims: &Path, groups: &Path) -> Result<(), NetworkError> {
    let _lock = table_lock(claims)?;
    group::write_hosts(groups, &live_records(claims))
}

/// Points the spec's network namespace at the namespace file `path` (made by [`setup`]).
pub fn join_netns(spec: &mut oci_spec::runtime::Spec, path: &Path) {
    use oci_spec::runtime::LinuxNamespaceType;
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for n in &mut namespaces {
        if n.typ() == LinuxNamespaceType::Network {
            n.set_path(Some(path.to_path_buf()));
        }
    }
    linux.set_namespaces(Some(namespaces));
}

#[cfg(test)]
mod tests;
