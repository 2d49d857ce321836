//! The one nftables table stockade owns, rendered from the sandboxes that have a network.
//! Pure: [`render`] takes data and returns the text `nft -f` applies; the whole table is
//! replaced in one transaction every time a sandbox's network is made or removed, so the
//! rules are always exactly those of the live sandboxes and nothing else of the host's
//! ruleset is touched.

use std::fmt::Write;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::allow::{AllowEntry, Dest};
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
    /// Its network mode (which rule set it gets).
    pub mode: NetworkMode,
    /// Ranges its policy names explicitly, opened although [`ALWAYS_DENIED`] covers them.
    pub allow: Vec<Cidr>,
    /// The group network it is a member of (mode `group`).
    pub group: Option<String>,
    /// Its published ports: the only ports the host may open connections to.
    pub published: Vec<u16>,
    /// `allowlist`: the entries, in the order whose index names their admission sets.
    pub entries: Vec<AllowEntry>,
    /// `allowlist` with host names: the host side of its veth, where its DNS forwarder
    /// listens (UDP and TCP port 53).
    pub dns: Option<Ipv4Addr>,
    /// Addresses the DNS forwarder admitted and that have not expired yet.
    pub admitted: Vec<Admitted>,
}

/// One address a host-name entry resolved to, admitted for what is left of its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Admitted {
    /// The index of the entry in [`SandboxRules::entries`].
    pub entry: usize,
    /// The address.
    pub addr: Ipv4Addr,
    /// Milliseconds left before it expires (at least 1).
    pub left_ms: u64,
}

/// The name of the admission set of entry `index` of the sandbox whose veth is `veth`.
pub fn admission_set(veth: &str, index: usize) -> String {
    format!("admit_{veth}_{index}")
}

/// The `nft -f` script that admits `addr` to entry `index`'s set for `left_ms`, replacing
/// an element that is already there (so its timeout starts again).
pub fn admit_script(veth: &str, index: usize, addr: Ipv4Addr, left_ms: u64) -> String {
    let set = admission_set(veth, index);
    let ms = left_ms.max(1);
    format!(
        "add element {TABLE} {set} {{ {addr} timeout {ms}ms }}\n\
         delete element {TABLE} {set} {{ {addr} }}\n\
         add element {TABLE} {set} {{ {addr} timeout {ms}ms }}\n"
    )
}

/// `meta l4proto { tcp, udp }` and the entry's ports, if any.
fn l4(entry: &AllowEntry) -> String {
    match entry.ports {
        Some(p) => format!("meta l4proto {{ tcp, udp }} th dport {p}"),
        None => "meta l4proto { tcp, udp }".to_string(),
    }
}

/// Whether range `c` lies inside one of the always-denied ranges (so naming it is
/// naming a denied range explicitly).
fn inside_denied(c: &Cidr) -> bool {
    ALWAYS_DENIED
        .iter()
        .any(|(d, _)| d.prefix <= c.prefix && d.contains(c.addr))
}

/// The body of an `allowlist` sandbox's chain after its source check.
fn allowlist_rules(t: &mut String, s: &SandboxRules, denied: &[String]) {
    // A connection admitted when it began outlives its admission.
    let _ = writeln!(t, "\t\tct state established accept");
    // DNS goes to the forwarder only (host input, not forwarded).
    let _ = writeln!(t, "\t\tmeta l4proto {{ tcp, udp }} th dport 53 drop");
    let ranges = || {
        s.entries.iter().filter_map(|e| match e.dest {
            Dest::Range(c) => Some((c, e)),
            Dest::Host(_) => None,
        })
    };
    // A range inside a denied one is named explicitly: accepted before the denial.
    for (c, e) in ranges().filter(|(c, _)| inside_denied(c)) {
        let _ = writeln!(t, "\t\tip daddr {c} {} accept", l4(e));
    }
    let _ = writeln!(t, "\t\tip daddr {{ {} }} drop", denied.join(", "));
    for (c, e) in ranges().filter(|(c, _)| !inside_denied(c)) {
        let _ = writeln!(t, "\t\tip daddr {c} {} accept", l4(e));
    }
    for (i, e) in s.entries.iter().enumerate() {
        if matches!(e.dest, Dest::Host(_)) {
            let _ = writeln!(
                t,
                "\t\tip daddr @{} {} accept",
                admission_set(&s.veth, i),
                l4(e)
            );
        }
    }
    let _ = writeln!(t, "\t\tdrop");
}

/// The admission sets of an `allowlist` sandbox, with what is admitted now.
fn admission_sets(t: &mut String, s: &SandboxRules) {
    for (i, e) in s.entries.iter().enumerate() {
        if !matches!(e.dest, Dest::Host(_)) {
            continue;
        }
        let _ = writeln!(
            t,
            "\tset {} {{\n\t\ttype ipv4_addr; flags timeout;",
            admission_set(&s.veth, i)
        );
        let elements: Vec<String> = s
            .admitted
            .iter()
            .filter(|a| a.entry == i)
            .map(|a| format!("{} timeout {}ms", a.addr, a.left_ms.max(1)))
            .collect();
        if !elements.is_empty() {
            let _ = writeln!(t, "\t\telements = {{ {} }}", elements.join(", "));
        }
        let _ = writeln!(t, "\t}}\n");
    }
}

/// The table for sandboxes numbered from the range `range`, whose veths are named
/// `<prefix><slot>`.
///
/// - input: a packet from a sandbox's veth to any address of the host is dropped unless it
///   answers a connection the host opened (a published port's proxy) or is an `allowlist`
///   sandbox's DNS query to its forwarder (its own address to its gateway, port 53).
/// - output: the host opens connections through a sandbox's veth only to its published
///   ports (the proxy's); everything else new is dropped.
/// - forward: nothing is forwarded to a sandbox's veth except replies and, between the
///   veths of one group's members, what the sender's chain accepts (no other sandbox
///   reaches another, nothing outside reaches a sandbox); from a veth, IPv6 is dropped,
///   then the veth's own chain decides, and a veth without one (not yet, or no longer, a
///   sandbox's) is dropped. A group member's chain accepts only packets to another
///   member of its group, out of that member's veth.
/// - postrouting: sandbox traffic leaving by any other interface is masqueraded.
///
/// With no sandbox at all the table is removed (created first so that the delete succeeds
/// when it does not exist), so a host with no networked sandbox carries no rule of
/// stockade's.
pub fn render(range: &Cidr, prefix: &str, sandboxes: &[SandboxRules]) -> String {
    if sandboxes.is_empty() {
        return format!("table {TABLE}\ndelete table {TABLE}\n");
    }
    render_table(range, prefix, sandboxes)
}

/// The table with no sandbox's chain: nothing is forwarded to or from any veth with the
/// prefix and the host takes nothing from them but replies. For addresses that are
/// claimed but whose records cannot be read (damaged, or written by another version of
/// stockade): their veths must stay closed, never run with no table at all.
pub fn render_closed(range: &Cidr, prefix: &str) -> String {
    render_table(range, prefix, &[])
}

fn render_table(range: &Cidr, prefix: &str, sandboxes: &[SandboxRules]) -> String {
    let mut sandboxes = sandboxes.to_vec();
    sandboxes.sort();
    let veths = format!("\"{prefix}*\"");
    let mut t = String::new();
    // Creating the table first makes the delete succeed when it does not exist yet; both
    // and the new definition are one transaction.
    let _ = writeln!(t, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    for s in &sandboxes {
        admission_sets(&mut t, s);
    }
    let _ = writeln!(
        t,
        "\tchain host_input {{\n\
         \t\ttype filter hook input priority filter - 10; policy accept;\n\
         \t\tiifname {veths} ct state established,related accept"
    );
    for s in &sandboxes {
        if let Some(gw) = s.dns {
            let _ = writeln!(
                t,
                "\t\tiifname \"{}\" ip saddr {} ip daddr {gw} meta l4proto {{ tcp, udp }} \
                 th dport 53 accept",
                s.veth, s.addr
            );
        }
    }
    let _ = writeln!(t, "\t\tiifname {veths} drop\n\t}}\n");
    let published: Vec<String> = sandboxes
        .iter()
        .flat_map(|s| s.published.iter().map(move |p| format!("{} . {p}", s.addr)))
        .collect();
    let _ = writeln!(
        t,
        "\tchain host_output {{\n\
         \t\ttype filter hook output priority filter - 10; policy accept;\n\
         \t\toifname {veths} ct state established,related accept"
    );
    if !published.is_empty() {
        let _ = writeln!(
            t,
            "\t\toifname {veths} ip daddr . tcp dport {{ {} }} accept",
            published.join(", ")
        );
    }
    let _ = writeln!(t, "\t\toifname {veths} drop\n\t}}\n");
    let groups = group_veths(&sandboxes);
    let _ = writeln!(
        t,
        "\tchain host_forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\toifname {veths} ct state established,related accept"
    );
    for (_, veths, _) in &groups {
        let set = veths.join(", ");
        let _ = writeln!(
            t,
            "\t\tiifname {{ {set} }} oifname {{ {set} }} jump from_sandbox"
        );
    }
    let _ = writeln!(
        t,
        "\t\toifname {veths} drop\n\
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
            NetworkMode::Group => {
                let members = groups
                    .iter()
                    .find(|(name, _, _)| Some(name) == s.group.as_ref());
                if let Some((_, veths, addrs)) = members {
                    let _ = writeln!(
                        t,
                        "\t\toifname {{ {} }} ip daddr {{ {} }} accept",
                        veths.join(", "),
                        addrs.join(", ")
                    );
                }
                let _ = writeln!(t, "\t\tdrop");
            }
            NetworkMode::Allowlist => allowlist_rules(&mut t, s, &denied),
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

/// Each group with members: its name, its members' veths (quoted) and their addresses,
/// sorted by name.
fn group_veths(sandboxes: &[SandboxRules]) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for s in sandboxes {
        let (Some(name), NetworkMode::Group) = (&s.group, s.mode) else {
            continue;
        };
        let i = match out.iter().position(|(n, _, _)| n == name) {
            Some(i) => i,
            None => {
                out.push((name.clone(), Vec::new(), Vec::new()));
                out.len() - 1
            }
        };
        out[i].1.push(format!("\"{}\"", s.veth));
        out[i].2.push(s.addr.to_string());
    }
    out.sort();
    out
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

    /// An `egress` sandbox with nothing opened beyond the mode's defaults.
    fn egress(veth: &str, addr: &str) -> SandboxRules {
        SandboxRules {
            veth: veth.into(),
            addr: addr.parse().unwrap(),
            mode: NetworkMode::Egress,
            allow: vec![],
            group: None,
            published: vec![],
            entries: vec![],
            dns: None,
            admitted: vec![],
        }
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
        let a = egress("stkv7", "10.199.0.15");
        let b = SandboxRules {
            veth: "stkv3".into(),
            addr: "10.199.0.7".parse().unwrap(),
            mode: NetworkMode::Egress,
            allow: vec!["169.254.169.254/32".parse().unwrap()],
            group: None,
            published: vec![],
            entries: vec![],
            dns: None,
            admitted: vec![],
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

    fn member(slot: u8, group: &str) -> SandboxRules {
        SandboxRules {
            veth: format!("stkv{slot}"),
            addr: Ipv4Addr::new(10, 199, 0, slot * 2 + 1),
            mode: NetworkMode::Group,
            allow: vec![],
            group: Some(group.into()),
            published: vec![],
            entries: vec![],
            dns: None,
            admitted: vec![],
        }
    }

    #[test]
    fn group_members_reach_their_own_group_only_and_published_ports_are_let_in() {
        let mut web = member(4, "b");
        web.published = vec![80, 443];
        let text = render(
            &range(),
            "stkv",
            &[member(1, "a"), member(2, "a"), member(3, "b"), web],
        );
        golden("groups.nft", &text);
        // Forwarding between veths of one group only, each jumping to the sender's chain.
        assert!(text.contains(
            "iifname { \"stkv1\", \"stkv2\" } oifname { \"stkv1\", \"stkv2\" } jump from_sandbox"
        ));
        assert!(text.contains(
            "iifname { \"stkv3\", \"stkv4\" } oifname { \"stkv3\", \"stkv4\" } jump from_sandbox"
        ));
        // The group rules come before the drop of everything else into a veth.
        let fwd = text.split("chain host_forward {").nth(1).unwrap();
        assert!(
            fwd.find("jump from_sandbox").unwrap() < fwd.find("oifname \"stkv*\" drop").unwrap()
        );
        // A member's chain: its own address only, then its group's veths and addresses.
        let chain = text.split("chain sandbox_stkv1 {").nth(1).unwrap();
        let chain = &chain[..chain.find('}').unwrap() + 60];
        assert!(chain.contains("ip saddr != 10.199.0.3 drop"), "{chain}");
        assert!(
            chain.contains(
                "oifname { \"stkv1\", \"stkv2\" } ip daddr { 10.199.0.3, 10.199.0.5 } accept"
            ),
            "{chain}"
        );
        // The host opens connections to the published ports of that address only.
        assert!(text.contains(
            "oifname \"stkv*\" ip daddr . tcp dport { 10.199.0.9 . 80, 10.199.0.9 . 443 } accept"
        ));
        let out = text.split("chain host_output {").nth(1).unwrap();
        assert!(out.contains("oifname \"stkv*\" drop"));
    }

    #[test]
    fn every_always_denied_range_is_in_an_egress_chain() {
        let s = egress("stkv1", "10.199.0.3");
        let text = render(&range(), "stkv", &[s]);
        for (c, why) in ALWAYS_DENIED {
            assert!(text.contains(&c.to_string()), "{c} ({why})");
        }
    }

    #[test]
    fn allowlist_passes_its_entries_and_admitted_addresses_only() {
        let entries = crate::network::allow::parse_entries(&[
            "198.18.0.2:8080".into(),
            "api.test:8000-8100".into(),
            "10.1.2.0/24".into(),
            "0.0.0.0/0:443".into(),
        ])
        .unwrap();
        let s = SandboxRules {
            veth: "stkv4".into(),
            addr: "10.199.0.9".parse().unwrap(),
            mode: NetworkMode::Allowlist,
            allow: vec![],
            entries,
            dns: Some("10.199.0.8".parse().unwrap()),
            group: None,
            published: vec![],
            admitted: vec![Admitted {
                entry: 3,
                addr: "198.18.0.4".parse().unwrap(),
                left_ms: 1500,
            }],
        };
        let text = render(&range(), "stkv", &[s]);
        golden("allowlist.nft", &text);
        let chain = text.split("chain sandbox_stkv4 {").nth(1).unwrap();
        let pos = |needle: &str| {
            chain
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} not in {chain}"))
        };
        // DNS elsewhere first, then the range inside a denied one, the denial, the rest.
        assert!(pos("th dport 53 drop") < pos("ip daddr 10.1.2.0/24"));
        assert!(pos("ip daddr 10.1.2.0/24") < pos("169.254.0.0/16"));
        assert!(pos("169.254.0.0/16") < pos("ip daddr 0.0.0.0/0"));
        assert!(
            pos("ip daddr @admit_stkv4_3 meta l4proto { tcp, udp } th dport 8000-8100 accept") > 0
        );
        // The forwarder is reached on the gateway, port 53, from the sandbox's address only.
        assert!(text.contains(
            "iifname \"stkv4\" ip saddr 10.199.0.9 ip daddr 10.199.0.8 meta l4proto { tcp, udp } th dport 53 accept"
        ));
        assert!(text.contains("elements = { 198.18.0.4 timeout 1500ms }"));
    }

    #[test]
    fn an_admission_replaces_the_element_so_its_timeout_starts_again() {
        let s = admit_script("stkv4", 1, "198.18.0.4".parse().unwrap(), 2000);
        assert_eq!(
            s.lines().collect::<Vec<_>>(),
            [
                "add element inet stockade admit_stkv4_1 { 198.18.0.4 timeout 2000ms }",
                "delete element inet stockade admit_stkv4_1 { 198.18.0.4 }",
                "add element inet stockade admit_stkv4_1 { 198.18.0.4 timeout 2000ms }",
            ]
        );
    }

    #[test]
    fn the_closed_table_drops_every_veth_and_is_valid_nft() {
        let text = render_closed(&range(), "stkv");
        // Not the removal `render` gives for no sandbox: a table is defined.
        assert_ne!(text, render(&range(), "stkv", &[]));
        assert!(text.contains("table inet stockade {"), "{text}");
        assert!(text.contains("\t\tiifname \"stkv*\" drop"), "{text}");
        assert!(text.contains("\t\toifname \"stkv*\" drop"), "{text}");
        assert!(!text.contains("jump sandbox_"), "{text}");
        // Checked by nft itself where it is installed (no kernel change: -c).
        if let Ok(mut child) = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            // nft -c needs CAP_NET_ADMIN; without it there is nothing to learn.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || err.contains("Operation not permitted"),
                "nft -c refused the closed table: {err}\n{text}"
            );
        }
    }
}
