//! The DNS forwarder of an `allowlist` sandbox that names host names: it listens on the
//! host side of the sandbox's veth (UDP and TCP port 53; the sandbox's `/etc/resolv.conf`
//! names it), answers only the allowlisted names ([`decide`]), asks the upstream
//! resolvers, and admits the resolved addresses into the sandbox's admission sets in
//! stockade's nftables table for their TTL. Admissions are also written to the run
//! directory ([`ADMITTED_FILE`]) under the table lock, so a re-render of the table keeps
//! them.
//!
//! The forwarder is a task of the process that owns the sandbox's lifetime (the one-shot
//! run's, the server's, a session's keeper); it records that process's PID in the
//! sandbox's network record and ends when the record is gone ([`release`](super::release)
//! also stops one of its own process at once).

pub mod decide;
mod serve;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::NetworkError;
pub use serve::start;

/// Admissions of a sandbox's forwarder, in its run directory.
pub const ADMITTED_FILE: &str = "dns-admitted.json";
/// The sandbox's resolver configuration, in its run directory, bind-mounted read-only on
/// its `/etc/resolv.conf`.
pub const RESOLV_FILE: &str = "resolv.conf";
/// Where the host's resolvers are read from when the policy names none.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Parses `network.dns_upstream` entries (`A.B.C.D[:PORT]`, port 53 by default).
pub fn parse_upstreams(entries: &[String]) -> Result<Vec<SocketAddrV4>, String> {
    entries
        .iter()
        .map(|e| {
            e.parse::<SocketAddrV4>()
                .or_else(|_| e.parse::<Ipv4Addr>().map(|a| SocketAddrV4::new(a, 53)))
                .map_err(|_| format!("`{e}` is not a resolver address (A.B.C.D[:PORT])"))
        })
        .collect()
}

/// The IPv4 `nameserver` lines of a resolv.conf text, port 53.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddrV4> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.parse::<Ipv4Addr>().ok())
                .flatten()
        })
        .map(|a| SocketAddrV4::new(a, 53))
        .collect()
}

/// The forwarder's part of a network record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsService {
    /// Where it listens (UDP and TCP port 53): the host side of the veth.
    pub listen: Ipv4Addr,
    /// The resolvers it asks.
    pub upstream: Vec<SocketAddrV4>,
    /// The process hosting it, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// One admission as recorded: the entry's index, the address, when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recorded {
    /// Index of the entry.
    pub entry: usize,
    /// The address.
    pub addr: Ipv4Addr,
    /// Expiry, milliseconds since the epoch.
    pub expires_unix_ms: u64,
}

/// The admissions recorded in `run_dir` that have not expired at `now_ms`, as table
/// elements. A missing or unreadable file is none.
pub fn admitted(run_dir: &Path, now_ms: u64) -> Vec<super::nft::Admitted> {
    read_recorded(run_dir)
        .into_iter()
        .filter(|r| r.expires_unix_ms > now_ms)
        .map(|r| super::nft::Admitted {
            entry: r.entry,
            addr: r.addr,
            left_ms: r.expires_unix_ms - now_ms,
        })
        .collect()
}

fn read_recorded(run_dir: &Path) -> Vec<Recorded> {
    std::fs::read(run_dir.join(ADMITTED_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// `recorded` with `new` merged in (a later expiry wins) and what expired by `now_ms` gone.
pub fn merge(mut recorded: Vec<Recorded>, new: &[Recorded], now_ms: u64) -> Vec<Recorded> {
    recorded.retain(|r| r.expires_unix_ms > now_ms);
    for n in new {
        match recorded
            .iter_mut()
            .find(|r| r.entry == n.entry && r.addr == n.addr)
        {
            Some(r) => r.expires_unix_ms = r.expires_unix_ms.max(n.expires_unix_ms),
            None => recorded.push(*n),
        }
    }
    recorded
}

/// Admits `admissions` for the sandbox whose network record is in `run_dir` (veth
/// `veth`, table lock in `claims`): records them and adds them to the live table, both
/// under the table lock.
pub fn admit(
    host: &dyn super::host::NetHost,
    claims: &Path,
    run_dir: &Path,
    veth: &str,
    admissions: &[decide::Admission],
) -> Result<(), NetworkError> {
    if admissions.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let new: Vec<Recorded> = admissions
        .iter()
        .map(|a| Recorded {
            entry: a.entry,
            addr: a.addr,
            expires_unix_ms: now + u64::from(a.ttl) * 1000,
        })
        .collect();
    let _lock = super::table_lock(claims)?;
    let all = merge(read_recorded(run_dir), &new, now);
    let path = run_dir.join(ADMITTED_FILE);
    let tmp = run_dir.join(format!(".{ADMITTED_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(&all).expect("admissions serialize"),
    )
    .and_then(|()| std::fs::rename(&tmp, &path))
    .map_err(|source| NetworkError::Io { path, source })?;
    let script: String = admissions
        .iter()
        .map(|a| super::nft::admit_script(veth, a.entry, a.addr, u64::from(a.ttl) * 1000))
        .collect();
    host.apply_nft(&script)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Forwarders running in this process, by run directory.
static RUNNING: Mutex<Option<HashMap<PathBuf, tokio::task::AbortHandle>>> = Mutex::new(None);

fn register(run_dir: &Path, handle: tokio::task::AbortHandle) {
    let mut running = RUNNING.lock().expect("forwarders lock");
    if let Some(old) = running
        .get_or_insert_with(HashMap::new)
        .insert(run_dir.to_path_buf(), handle)
    {
        old.abort();
    }
}

/// Stops the forwarder of `run_dir` if this process runs it.
pub fn stop(run_dir: &Path) {
    let mut running = RUNNING.lock().expect("forwarders lock");
    if let Some(h) = running.as_mut().and_then(|m| m.remove(run_dir)) {
        h.abort();
    }
}

/// Whether this process runs the forwarder of `run_dir`.
pub fn running_here(run_dir: &Path) -> bool {
    let running = RUNNING.lock().expect("forwarders lock");
    running
        .as_ref()
        .and_then(|m| m.get(run_dir))
        .is_some_and(|h| !h.is_finished())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_and_host_nameservers() {
        assert_eq!(
            parse_upstreams(&["198.18.0.2".into(), "198.18.0.3:5353".into()]).unwrap(),
            vec![
                "198.18.0.2:53".parse::<SocketAddrV4>().unwrap(),
                "198.18.0.3:5353".parse().unwrap()
            ]
        );
        let e = parse_upstreams(&["dns.example".into()]).unwrap_err();
        assert!(e.contains("`dns.example`"), "{e}");
        let conf = "# comment\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n\
                    nameserver 1.1.1.1 # trailing\nsearch example\n";
        assert_eq!(
            nameservers(conf),
            vec![
                "127.0.0.53:53".parse::<SocketAddrV4>().unwrap(),
                "1.1.1.1:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn merging_keeps_the_later_expiry_and_drops_the_expired() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let r = |entry, a: &str, t| Recorded {
            entry,
            addr: ip(a),
            expires_unix_ms: t,
        };
        let old = vec![
            r(0, "198.18.0.2", 500),
            r(0, "198.18.0.3", 2000),
            r(1, "198.18.0.2", 900),
        ];
        let new = [
            r(0, "198.18.0.3", 1500),
            r(1, "198.18.0.2", 3000),
            r(2, "198.18.0.4", 4000),
        ];
        assert_eq!(
            merge(old, &new, 1000),
            vec![
                r(0, "198.18.0.3", 2000),
                r(1, "198.18.0.2", 3000),
                r(2, "198.18.0.4", 4000)
            ]
        );
    }

    #[test]
    fn recorded_admissions_become_table_elements_with_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            Recorded {
                entry: 0,
                addr: "198.18.0.2".parse().unwrap(),
                expires_unix_ms: 10_500,
            },
            Recorded {
                entry: 1,
                addr: "198.18.0.3".parse().unwrap(),
                expires_unix_ms: 9_000,
            },
        ];
        std::fs::write(
            dir.path().join(ADMITTED_FILE),
            serde_json::to_vec(&recs).unwrap(),
        )
        .unwrap();
        let got = admitted(dir.path(), 10_000);
        assert_eq!(
            got,
            vec![super::super::nft::Admitted {
                entry: 0,
                addr: "198.18.0.2".parse().unwrap(),
                left_ms: 500
            }]
        );
        assert!(admitted(&dir.path().join("missing"), 0).is_empty());
    }
}
