//! `allowlist` entries: `CIDR[:PORT[-PORT]]` and `HOSTNAME[:PORT[-PORT]]`. Pure.
//!
//! A host name is matched exactly (case-insensitive, a trailing dot ignored); `*.NAME`
//! matches every name below `NAME` (not `NAME` itself). Ports apply to TCP and UDP alike;
//! no port means every port.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Cidr;

/// Ports `first..=last`, both 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ports {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range (equal to `first` for one port).
    pub last: u16,
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// What an entry names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dest {
    /// An IPv4 range (one address is a /32).
    Range(Cidr),
    /// A host name, lowercase without a trailing dot; `*.` first for a wildcard.
    Host(String),
}

/// One `allowlist` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    /// The destination.
    pub dest: Dest,
    /// The ports; `None` is every port.
    pub ports: Option<Ports>,
}

impl AllowEntry {
    /// Whether the host-name entry matches `name` (any case, trailing dot or not).
    pub fn matches_name(&self, name: &str) -> bool {
        let Dest::Host(pattern) = &self.dest else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}")),
            None => name == *pattern,
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest {
            Dest::Range(c) if c.prefix == 32 => write!(f, "{}", c.addr)?,
            Dest::Range(c) => write!(f, "{c}")?,
            Dest::Host(h) => write!(f, "{h}")?,
        }
        match self.ports {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

fn parse_ports(entry: &str, s: &str) -> Result<Ports, String> {
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("`{entry}`: `{p}` is not a port (1–65535)")),
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("`{entry}`: the port range {first}-{last} is empty"));
    }
    Ok(Ports { first, last })
}

/// A host name of at least `min_labels` labels.
fn valid_host(name: &str, min_labels: usize) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= min_labels
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A name whose last label is all digits would read as an address.
        && !labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for AllowEntry {
    type Err = String;

    /// `A.B.C.D[/N][:PORT[-PORT]]` or `[*.]NAME[:PORT[-PORT]]`; the error names the entry.
    fn from_str(s: &str) -> Result<AllowEntry, String> {
        let (dest, ports) = match s.rsplit_once(':') {
            Some((d, p)) => (d, Some(parse_ports(s, p)?)),
            None => (s, None),
        };
        if dest.contains(':') || dest.starts_with('[') {
            return Err(format!(
                "`{s}`: IPv6 is never allowed; give an IPv4 range or a host name"
            ));
        }
        let numeric = dest
            .split('/')
            .next()
            .is_some_and(|a| a.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        if numeric {
            let c: Cidr = dest.parse().map_err(|e: String| {
                if e.contains(&format!("`{dest}`")) {
                    e.replacen(&format!("`{dest}`"), &format!("`{s}`"), 1)
                } else {
                    format!("`{s}`: {e}")
                }
            })?;
            return Ok(AllowEntry {
                dest: Dest::Range(c),
                ports,
            });
        }
        let name = dest.trim_end_matches('.').to_ascii_lowercase();
        // An exact name has two labels at least; a wildcard's suffix one (`*.test`).
        let (bare, min_labels) = match name.strip_prefix("*.") {
            Some(suffix) => (suffix, 1),
            None => (name.as_str(), 2),
        };
        if !valid_host(bare, min_labels) {
            return Err(format!(
                "`{s}` is neither an IPv4 range (A.B.C.D[/N]) nor a host name \
                 (letters, digits, `-` and dots, at least two labels; `*.` first for every \
                 name below one)"
            ));
        }
        Ok(AllowEntry {
            dest: Dest::Host(name),
            ports,
        })
    }
}

/// Parses `allowlist` entries, sorted and without duplicates; the error names the entry.
pub fn parse_entries(entries: &[String]) -> Result<Vec<AllowEntry>, String> {
    let mut out = Vec::new();
    for e in entries {
        let entry: AllowEntry = e.trim().parse()?;
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_parse_to_what_they_say_and_errors_name_the_entry() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("198.18.0.2", Ok("198.18.0.2")),
            ("198.18.0.2:8080", Ok("198.18.0.2:8080")),
            ("198.18.0.0/24:8000-8100", Ok("198.18.0.0/24:8000-8100")),
            ("0.0.0.0/0:443", Ok("0.0.0.0/0:443")),
            ("API.Example.com.", Ok("api.example.com")),
            ("api.example.com:443", Ok("api.example.com:443")),
            ("*.example.com:443", Ok("*.example.com:443")),
            (
                "198.18.0.1/24",
                Err("`198.18.0.1/24` has bits set below its prefix"),
            ),
            ("198.18.0.2:0", Err("`198.18.0.2:0`: `0` is not a port")),
            ("198.18.0.2:70000", Err("not a port")),
            ("198.18.0.2:+80", Err("not a port")),
            ("198.18.0.2:90-80", Err("the port range 90-80 is empty")),
            ("::1", Err("IPv6 is never allowed")),
            ("[::1]:80", Err("IPv6 is never allowed")),
            ("localhost", Err("`localhost` is neither")),
            ("exa_mple.com", Err("is neither")),
            ("-a.example.com", Err("is neither")),
            ("*.com.", Ok("*.com")),
            ("a.*.com", Err("is neither")),
            ("1.2.3", Err("not an IPv4 address")),
            ("", Err("not an IPv4 address")),
        ];
        for (input, want) in cases {
            match (input.parse::<AllowEntry>(), want) {
                (Ok(e), Ok(w)) => assert_eq!(e.to_string(), *w, "{input}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{input}: {e}");
                    assert!(!e.contains('\n'), "{input}: one line");
                }
                (got, _) => panic!("{input}: {got:?}"),
            }
        }
    }

    #[test]
    fn names_match_exactly_and_wildcards_only_below() {
        let exact: AllowEntry = "api.example.com".parse().unwrap();
        let wild: AllowEntry = "*.example.com".parse().unwrap();
        let range: AllowEntry = "198.18.0.2".parse().unwrap();
        let cases = [
            ("api.example.com", true, true),
            ("API.EXAMPLE.COM.", true, true),
            ("example.com", false, false),
            ("a.api.example.com", false, true),
            ("evilexample.com", false, false),
            ("api.example.com.evil", false, false),
        ];
        for (name, e, w) in cases {
            assert_eq!(exact.matches_name(name), e, "{name}");
            assert_eq!(wild.matches_name(name), w, "{name}");
            assert!(!range.matches_name(name));
        }
    }

    proptest! {
        /// Whatever parses prints back to a string that parses to the same entry.
        #[test]
        fn display_round_trips(a in any::<u32>(), prefix in 0u8..=32, p1 in 1u16.., span in 0u16..100,
                               host in "[a-z][a-z0-9-]{0,10}[a-z0-9]\\.[a-z]{2,6}", wild in any::<bool>(),
                               with_port in any::<bool>()) {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            let cidr = Cidr { addr: std::net::Ipv4Addr::from(a & mask), prefix };
            let ports = with_port.then(|| Ports { first: p1, last: p1.saturating_add(span) });
            let host = if wild { format!("*.{host}") } else { host };
            for dest in [Dest::Range(cidr), Dest::Host(host.clone())] {
                let e = AllowEntry { dest, ports };
                let back: AllowEntry = e.to_string().parse().unwrap();
                prop_assert_eq!(back, e);
            }
        }

        /// Any string either parses or fails with one line that quotes it.
        #[test]
        fn errors_are_one_line_and_name_the_entry(s in "\\PC{0,40}") {
            if let Err(e) = s.parse::<AllowEntry>() {
                prop_assert!(!e.contains('\n'));
                prop_assert!(e.contains(&format!("`{s}`")), "{e}");
            }
        }
    }
}
