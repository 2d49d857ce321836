//! What `egress` needs from the host, for `stockade doctor`: the tools, nftables in the
//! kernel, IPv4 forwarding on the uplinks (stockade never turns it on host-wide), and a
//! sandbox range no host route uses. [`probe`] reads the host (paths passed in); [`check`]
//! is pure.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Serialize;

use super::Cidr;
use crate::host::doctor::{Check, Status};

/// What was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetFacts {
    /// Tools not found on `PATH`.
    pub missing_tools: Vec<String>,
    /// `nft list tables` worked (the kernel has nf_tables and we may use it).
    pub nftables: bool,
    /// Interfaces holding a default route, each with its `net.ipv4.conf.<if>.forwarding`.
    pub uplinks: Vec<(String, bool)>,
    /// Host routes (not stockade's veths) that overlap the sandbox range.
    pub overlapping_routes: Vec<String>,
}

/// Probes the host: `PATH` for the tools, `nft`, and the routes and sysctls under
/// `proc_root`.
pub fn probe(proc_root: &Path, range: &Cidr) -> NetFacts {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing_tools = ["ip", "nft", "nsenter"]
        .iter()
        .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(std::string::ToString::to_string)
        .collect();
    let nftables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success());
    let routes = std::fs::read_to_string(proc_root.join("net/route")).unwrap_or_default();
    let mut uplinks = Vec::new();
    let mut overlapping_routes = Vec::new();
    for (iface, dest, mask) in parse_routes(&routes) {
        if iface.starts_with(super::VETH_PREFIX) {
            continue;
        }
        if mask == 0 {
            if !uplinks.iter().any(|(i, _)| i == &iface) {
                let f = std::fs::read_to_string(
                    proc_root.join(format!("sys/net/ipv4/conf/{iface}/forwarding")),
                )
                .is_ok_and(|v| v.trim() == "1");
                uplinks.push((iface, f));
            }
            continue;
        }
        let route = Cidr {
            addr: dest,
            prefix: mask.count_ones() as u8,
        };
        if route.overlaps(range) {
            overlapping_routes.push(format!("{route} dev {iface}"));
        }
    }
    NetFacts {
        missing_tools,
        nftables,
        uplinks,
        overlapping_routes,
    }
}

/// `/proc/net/route` rows: interface, destination, netmask (the kernel prints each
/// network-order value as a native-endian number).
fn parse_routes(text: &str) -> Vec<(String, Ipv4Addr, u32)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            Some((
                f[0].to_string(),
                Ipv4Addr::from(dest.to_ne_bytes()),
                u32::from_be_bytes(mask.to_ne_bytes()),
            ))
        })
        .collect()
}

/// The `network` line of the report. Pure.
pub fn check(f: &NetFacts, range: &Cidr) -> Check {
    let mut problems = Vec::new();
    if !f.missing_tools.is_empty() {
        problems.push(format!("missing {}", f.missing_tools.join(", ")));
    }
    if !f.nftables {
        problems.push("nftables unusable (`nft list tables` failed)".to_string());
    }
    for r in &f.overlapping_routes {
        problems.push(format!("host route {r} overlaps the sandbox range {range}"));
    }
    let off: Vec<&str> = f
        .uplinks
        .iter()
        .filter(|(_, on)| !on)
        .map(|(i, _)| i.as_str())
        .collect();
    let forwarding = if f.uplinks.is_empty() {
        "no default route".to_string()
    } else if off.is_empty() {
        "uplink forwarding on".to_string()
    } else {
        format!(
            "replies cannot return until forwarding is on for the uplink ({}: sysctl -w {})",
            off.join(", "),
            off.iter()
                .map(|i| format!("net.ipv4.conf.{i}.forwarding=1"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    let (status, detail) = if problems.is_empty() {
        (
            if off.is_empty() && !f.uplinks.is_empty() {
                Status::Ok
            } else {
                Status::Warn
            },
            format!("egress: veths from {range}, table inet stockade; {forwarding}"),
        )
    } else {
        (
            Status::Warn,
            format!("egress unavailable: {}; {forwarding}", problems.join("; ")),
        )
    };
    Check {
        name: "network".into(),
        status,
        required: false,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
br0\t0000C70A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    #[test]
    #[cfg(target_endian = "little")]
    fn routes_parse_to_uplinks_and_ranges() {
        let r = parse_routes(ROUTES);
        assert_eq!(r[0], ("eth0".into(), Ipv4Addr::UNSPECIFIED, 0));
        assert_eq!(r[1].1, "172.17.0.0".parse::<Ipv4Addr>().unwrap());
        assert_eq!(r[1].2.count_ones(), 16);
        assert_eq!(r[2].1, "10.199.0.0".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn the_check_names_what_is_missing_and_the_sysctl_to_set() {
        let range = super::super::DEFAULT_RANGE;
        let ok = NetFacts {
            nftables: true,
            uplinks: vec![("eth0".into(), true)],
            ..Default::default()
        };
        assert_eq!(check(&ok, &range).status, Status::Ok);
        let off = NetFacts {
            uplinks: vec![("eth0".into(), false)],
            ..ok.clone()
        };
        let c = check(&off, &range);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("net.ipv4.conf.eth0.forwarding=1"),
            "{}",
            c.detail
        );
        let bad = NetFacts {
            missing_tools: vec!["nft".into()],
            overlapping_routes: vec!["10.199.0.0/16 dev br0".into()],
            ..ok
        };
        let c = check(&bad, &range);
        assert!(
            c.detail.starts_with("egress unavailable: missing nft;"),
            "{}",
            c.detail
        );
        assert!(c
            .detail
            .contains("overlaps the sandbox range 10.199.0.0/16"));
        assert!(!c.detail.contains('\n'));
    }
}
