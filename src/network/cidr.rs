//! IPv4 ranges (`198.18.0.0/15`, a bare address meaning `/32`) and the ranges no sandbox
//! reaches unless its policy names them. Pure.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 range in canonical form: no bits set below the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The range's first address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl Cidr {
    /// The range `a.b.c.d/prefix`, taken as given: the caller writes it canonical (a
    /// constant; parsing checks what users write).
    pub const fn new(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            addr: Ipv4Addr::new(a, b, c, d),
            prefix,
        }
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether `ip` lies inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `A.B.C.D/N` or `A.B.C.D` (a single address). A range with bits set below its
    /// prefix is refused, naming the range that was probably meant.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an IPv4 address or range (A.B.C.D[/N])"))?;
        let prefix = match p {
            None => 32,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= 32 && !p.starts_with('+') => n,
                _ => return Err(format!("`{s}`: the prefix length must be 0–32")),
            },
        };
        let c = Cidr { addr, prefix };
        let canonical = Ipv4Addr::from(u32::from(addr) & c.mask());
        if canonical != addr {
            return Err(format!(
                "`{s}` has bits set below its prefix (did you mean {canonical}/{prefix}?)"
            ));
        }
        Ok(c)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Destinations every networked sandbox is denied, whatever its mode, unless its policy
/// names a range that covers them (`network.allow`). The host itself (every address it
/// has, on any interface) and other sandboxes are denied apart from this list and can
/// never be allowed.
pub const ALWAYS_DENIED: &[(Cidr, &str)] = &[
    (Cidr::new(0, 0, 0, 0, 8), "this network (0/8)"),
    (Cidr::new(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (
        Cidr::new(100, 64, 0, 0, 10),
        "shared address space (carrier-grade NAT)",
    ),
    (Cidr::new(127, 0, 0, 0, 8), "loopback"),
    (
        Cidr::new(169, 254, 0, 0, 16),
        "link-local (cloud metadata at 169.254.169.254)",
    ),
    (Cidr::new(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (Cidr::new(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (Cidr::new(224, 0, 0, 0, 4), "multicast"),
    (
        Cidr::new(240, 0, 0, 0, 4),
        "reserved, and the limited broadcast 255.255.255.255",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_single_addresses_and_refuses_the_rest_in_one_line() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("198.18.0.0/15", Ok("198.18.0.0/15")),
            ("198.18.0.7", Ok("198.18.0.7/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("198.18.0.1/15", Err("did you mean 198.18.0.0/15?")),
            ("198.18.0.0/33", Err("prefix length must be 0–32")),
            ("198.18.0.0/+8", Err("prefix length")),
            ("example.com", Err("not an IPv4 address")),
            ("::1", Err("not an IPv4 address")),
            ("", Err("not an IPv4 address")),
        ];
        for (input, want) in cases {
            match (input.parse::<Cidr>(), want) {
                (Ok(c), Ok(w)) => assert_eq!(c.to_string(), *w, "{input}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{input}: {e}");
                    assert!(!e.contains('\n'));
                }
                (got, _) => panic!("{input}: {got:?}"),
            }
        }
    }

    #[test]
    fn containment_and_overlap() {
        let meta: Ipv4Addr = "169.254.169.254".parse().unwrap();
        assert!(ALWAYS_DENIED.iter().any(|(c, _)| c.contains(meta)));
        let up: Ipv4Addr = "198.18.0.2".parse().unwrap();
        assert!(!ALWAYS_DENIED.iter().any(|(c, _)| c.contains(up)));
        assert!(Cidr::new(10, 0, 0, 0, 8).overlaps(&Cidr::new(10, 199, 0, 0, 16)));
        assert!(!Cidr::new(10, 0, 0, 0, 8).overlaps(&Cidr::new(11, 0, 0, 0, 8)));
        assert_eq!(Cidr::new(10, 199, 0, 0, 16).size(), 65536);
        assert!(Cidr::new(0, 0, 0, 0, 0).contains(up));
    }
}
