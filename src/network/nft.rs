//! The one nftables table stockade owns, rendered from the sandboxes that have a network.
//! Pure: [`render`] takes data and returns the text `nft -f` applies; the whole table is
//! replaced in one transaction every time a sandbox's network is made or removed, so the
//! rules are always exactly those of the live sandboxes and nothing else of the host's
//! ruleset is touched.

use std::fmt::Write;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::cidr::ALWAYS_DENIED;
use super::{Cidr, NetworkMode};

/// The table's family and name: `inet stockade`.
pub const TABLE: &str = "inet stockade";

/// What the table says about one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SandboxRules {
    /// The host side of its veth.
    pub veth: String,
    /// Its address: the only source address accepted from its veth.
    pub addr: Ipv4Addr,
    pub mode: NetworkMode,
    /// Ranges its policy names explicitly, opened although [`ALWAYS_DENIED`] covers them.
    pub allow: Vec<Cidr>,
}

/// The table for sandboxes numbered from the range `range`, whose veths are named
/// `<prefix><slot>`.
///
/// - input: a packet from a sandbox's veth to any address of the host is dropped unless it
///   answers a connection the host opened (a published port's proxy).
/// - forward: nothing is forwarded to a sandbox's veth except replies (no sandbox reaches
///   another, nothing outside reaches a sandbox); from a veth, IPv6 is dropped, then the
///   veth's own chain decides, and a veth without one (not yet, or no longer, a sandbox's)
///   is dropped.
/// - postrouting: sandbox traffic leaving by any other interface is masqueraded.
///
/// With no sandbox at all the table is removed (created first so that the delete succeeds
/// when it does not exist), so a host with no networked sandbox carries no rule of
/// stockade's.
pub fn render(range: &Cidr, prefix: &str, sandboxes: &[SandboxRules]) -> String {
    if sandboxes.is_empty() {
        return format!("table {TABLE}\ndelete table {TABLE}\n");
    }
    let mut sandboxes = sandboxes.to_vec();
    sandboxes.sort();
    let veths = format!("\"{prefix}*\"");
    let mut t = String::new();
    // Creating the table first makes the delete succeed when it does not exist yet; both
    // and the new definition are one transaction.
    let _ = writeln!(t, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    let _ = writeln!(
        t,
        "\tchain host_input {{\n\
         \t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\tiifname {veths} ct state established,related accept\n\
         \t\tiifname {veths} drop\n\
         \t}}\n"
    );
    let _ = writeln!(
        t,
        "\tchain host_forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\toifname {veths} ct state established,related accept\n\
         \t\toifname {veths} drop\n\
         \t\tiifname {veths} jump from_sandbox\n\
         \t}}\n"
    );
    let _ = writeln!(t, "\tchain from_sandbox {{\n\t\tmeta nfproto != ipv4 drop");
    if !sandboxes.is_empty() {
        let map: Vec<String> = sandboxes
            .iter()
            .map(|s| format!("\"{}\" : jump {}", s.veth, chain_name(&s.veth)))
            .collect();
        let _ = writeln!(t, "\t\tiifname vmap {{ {} }}", map.join(", "));
    }
    let _ = writeln!(t, "\t\tdrop\n\t}}\n");
    let denied: Vec<String> = ALWAYS_DENIED.iter().map(|(c, _)| c.to_string()).collect();
    for s in &sandboxes {
        let _ = writeln!(t, "\tchain {} {{", chain_name(&s.veth));
        let _ = writeln!(t, "\t\tip saddr != {} drop", s.addr);
        match s.mode {
            NetworkMode::Egress => {
                if !s.allow.is_empty() {
                    let allow: Vec<String> = s.allow.iter().map(Cidr::to_string).collect();
                    let _ = writeln!(t, "\t\tip daddr {{ {} }} accept", allow.join(", "));
                }
                let _ = writeln!(t, "\t\tip daddr {{ {} }} drop", denied.join(", "));
                let _ = writeln!(t, "\t\taccept");
            }
            // Modes without a veth never reach the table; drop whatever would.
            _ => {
                let _ = writeln!(t, "\t\tdrop");
            }
        }
        let _ = writeln!(t, "\t}}\n");
    }
    let _ = writeln!(
        t,
        "\tchain sandbox_nat {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {range} oifname != {veths} masquerade\n\
         \t}}\n}}"
    );
    t
}

fn chain_name(veth: &str) -> String {
    format!("sandbox_{veth}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str, text: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/golden/nft")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(
            text,
            want,
            "{} differs (UPDATE_GOLDEN=1 rewrites it)",
            path.display()
        );
    }

    fn range() -> Cidr {
        "10.199.0.0/16".parse().unwrap()
    }

    #[test]
    fn no_sandbox_no_table_and_the_host_untouched() {
        let text = render(&range(), "stkv", &[]);
        golden("empty.nft", &text);
        assert_eq!(text.lines().last(), Some("delete table inet stockade"));
        assert!(!text.contains("chain"), "no sandbox, no rule");
        assert!(!text.contains("flush ruleset"));
    }

    #[test]
    fn egress_sandboxes_get_a_chain_each_in_a_stable_order() {
        let a = SandboxRules {
            veth: "stkv7".into(),
            addr: "10.199.0.15".parse().unwrap(),
            mode: NetworkMode::Egress,
            allow: vec![],
        };
        let b = SandboxRules {
            veth: "stkv3".into(),
            addr: "10.199.0.7".parse().unwrap(),
            mode: NetworkMode::Egress,
            allow: vec!["169.254.169.254/32".parse().unwrap()],
        };
        let text = render(&range(), "stkv", &[a.clone(), b.clone()]);
        assert_eq!(text, render(&range(), "stkv", &[b, a]));
        golden("two-egress.nft", &text);
        // The explicitly named range is accepted before the denied ones are dropped.
        let chain = text.split("chain sandbox_stkv3 {").nth(1).unwrap();
        let accept = chain.find("169.254.169.254/32 } accept").unwrap();
        let deny = chain.find("169.254.0.0/16").unwrap();
        assert!(accept < deny);
        assert!(chain.contains("ip saddr != 10.199.0.7 drop"));
    }

    #[test]
    fn every_always_denied_range_is_in_an_egress_chain() {
        let s = SandboxRules {
            veth: "stkv1".into(),
            addr: "10.199.0.3".parse().unwrap(),
            mode: NetworkMode::Egress,
            allow: vec![],
        };
        let text = render(&range(), "stkv", &[s]);
        for (c, why) in ALWAYS_DENIED {
            assert!(text.contains(&c.to_string()), "{c} ({why})");
        }
    }
}
