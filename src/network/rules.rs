//! The network part of a policy beyond its mode ([`NetworkRules`]) and the parsing of
//! `network.allow` for the `egress` mode. Pure.

use serde::Serialize;

#[cfg(doc)]
use super::ALWAYS_DENIED;
use super::{allow, dns, publish, AllowEntry, Cidr, NetworkMode};

/// The network part of a policy beyond its mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetworkRules {
    /// `egress`: ranges opened although [`ALWAYS_DENIED`] covers them (`network.allow`,
    /// `--allow`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Cidr>,
    /// The group network joined (`network.group`, `--network NAME`), with mode `group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Ports published on the host's loopback (`network.publish`, `-p`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<publish::PortSpec>,
    /// `allowlist`: the only destinations reached (`network.allow`, `--allow`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<AllowEntry>,
    /// `allowlist`: the resolvers the DNS forwarder asks (`network.dns_upstream`); empty
    /// means the host's `/etc/resolv.conf` nameservers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_upstream: Vec<std::net::SocketAddrV4>,
}

impl NetworkRules {
    /// Whether nothing beyond the mode's defaults is said.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty()
            && self.entries.is_empty()
            && self.dns_upstream.is_empty()
            && self.group.is_none()
            && self.publish.is_empty()
    }

    /// Parses the policy's `network.allow` and `network.dns_upstream` for `mode`; the
    /// error names the field and the entry at fault.
    pub fn parse(
        mode: NetworkMode,
        allow: &[String],
        dns_upstream: &[String],
    ) -> Result<NetworkRules, (&'static str, String)> {
        let mut rules = NetworkRules::default();
        if mode == NetworkMode::Allowlist {
            rules.entries = allow::parse_entries(allow).map_err(|m| ("network.allow", m))?;
            rules.dns_upstream =
                dns::parse_upstreams(dns_upstream).map_err(|m| ("network.dns_upstream", m))?;
        } else {
            rules.allow = parse_allow(mode, allow).map_err(|m| ("network.allow", m))?;
            if !dns_upstream.is_empty() {
                return Err((
                    "network.dns_upstream",
                    format!(
                        "only the allowlist mode has a DNS forwarder; the mode is {}",
                        mode.as_str()
                    ),
                ));
            }
        }
        Ok(rules)
    }

    /// Whether an `allowlist` sandbox needs the DNS forwarder (it names a host).
    pub fn needs_dns(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.dest, allow::Dest::Host(_)))
    }
}

/// Parses `network.allow` entries for `mode`; the error is the message for one line.
pub fn parse_allow(mode: NetworkMode, entries: &[String]) -> Result<Vec<Cidr>, String> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if mode != NetworkMode::Egress {
        return Err(format!(
            "entries need a network mode that reaches out (egress, allowlist); the mode is {}",
            mode.as_str()
        ));
    }
    let mut out = Vec::new();
    for e in entries {
        if e.contains(':') {
            return Err(format!(
                "`{e}`: ports need --network allowlist; give a range (A.B.C.D[/N])"
            ));
        }
        if e.chars().any(|c| c.is_ascii_alphabetic()) && !e.contains('/') {
            return Err(format!(
                "`{e}`: host names need --network allowlist; give an address or range (A.B.C.D[/N])"
            ));
        }
        let c: Cidr = e.parse()?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.sort();
    Ok(out)
}
