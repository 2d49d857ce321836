//! The `socket` rules of a seccomp filter narrowed for a sandbox with a veth (`egress`):
//! `AF_UNIX`, `AF_NETLINK` (reading its own links and routes), and `AF_INET` only as
//! `SOCK_STREAM` or `SOCK_DGRAM`. Never `AF_INET6`, `AF_PACKET` or a raw socket, whatever
//! the profile allowed; nothing the profile did not allow is added. Pure.

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// `socket()`'s domain for Unix sockets (Linux's value).
pub const AF_UNIX: u64 = 1;
/// `socket()`'s domain for IPv4.
pub const AF_INET: u64 = 2;
/// `socket()`'s domain for IPv6.
pub const AF_INET6: u64 = 10;
/// `socket()`'s domain for netlink.
pub const AF_NETLINK: u64 = 16;
/// `socket()`'s domain for raw link-layer packets.
pub const AF_PACKET: u64 = 17;
/// `socket()`'s type for a byte stream (TCP under `AF_INET`).
pub const SOCK_STREAM: u64 = 1;
/// `socket()`'s type for datagrams (UDP under `AF_INET`).
pub const SOCK_DGRAM: u64 = 2;
/// `socket()`'s type for raw sockets.
pub const SOCK_RAW: u64 = 3;
/// The bits of `socket()`'s type argument that are the type (the rest are
/// `SOCK_NONBLOCK`/`SOCK_CLOEXEC`).
pub const SOCK_TYPE_MASK: u64 = 0xf;

fn eq(index: usize, value: u64) -> Result<LinuxSeccompArg, oci_spec::OciSpecError> {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(LinuxSeccompOperator::ScmpCmpEq)
        .build()
}

fn type_is(value: u64) -> Result<LinuxSeccompArg, oci_spec::OciSpecError> {
    LinuxSeccompArgBuilder::default()
        .index(1usize)
        .value(SOCK_TYPE_MASK)
        .value_two(value)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
}

fn allow_socket(args: Vec<LinuxSeccompArg>) -> Result<LinuxSyscall, oci_spec::OciSpecError> {
    LinuxSyscallBuilder::default()
        .names(vec!["socket".to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(args)
        .build()
}

/// The family an allowing rule is limited to (an `==` on argument 0), if any.
fn family(rule: &LinuxSyscall) -> Option<u64> {
    rule.args().as_ref()?.iter().find_map(|a| {
        (a.index() == 0 && a.op() == LinuxSeccompOperator::ScmpCmpEq).then(|| a.value())
    })
}

/// `filter` with `socket` taken out of every rule that allows it, and the rules `replace`
/// gives for each such rule (in order) appended: the one mechanism by which a network
/// mode narrows what the profile allowed. Nothing is added where no rule allowed `socket`.
pub fn replace_socket_allowances(
    filter: &LinuxSeccomp,
    mut replace: impl FnMut(&LinuxSyscall) -> Result<Vec<LinuxSyscall>, oci_spec::OciSpecError>,
) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let mut out = filter.clone();
    let mut syscalls = out.syscalls().clone().unwrap_or_default();
    let mut added = Vec::new();
    for rule in &mut syscalls {
        if rule.action() != LinuxSeccompAction::ScmpActAllow
            || !rule.names().iter().any(|n| n == "socket")
        {
            continue;
        }
        added.extend(replace(rule)?);
        let names: Vec<String> = rule
            .names()
            .iter()
            .filter(|n| *n != "socket")
            .cloned()
            .collect();
        rule.set_names(names);
    }
    syscalls.retain(|r| !r.names().is_empty());
    syscalls.extend(added);
    out.set_syscalls(Some(syscalls));
    Ok(out)
}

/// `filter` with `socket` allowed only for `AF_UNIX` (the `none` mode), once, where the
/// profile allowed `socket` at all.
pub fn narrow_to_unix(filter: &LinuxSeccomp) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let mut first = true;
    replace_socket_allowances(filter, |_| {
        if !std::mem::take(&mut first) {
            return Ok(vec![]);
        }
        Ok(vec![allow_socket(vec![eq(0, AF_UNIX)?])?])
    })
}

/// `filter` with every allowance of `socket` replaced by its narrowed form (see the
/// module's documentation).
pub fn narrow_for_egress(filter: &LinuxSeccomp) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    replace_socket_allowances(filter, |rule| {
        let families: Vec<u64> = match family(rule) {
            Some(f) => vec![f],
            None => vec![AF_UNIX, AF_NETLINK, AF_INET],
        };
        // The rule's other conditions stay on every replacement.
        let rest: Vec<LinuxSeccompArg> = rule
            .args()
            .iter()
            .flatten()
            .filter(|a| !(a.index() == 0 && a.op() == LinuxSeccompOperator::ScmpCmpEq))
            .copied()
            .collect();
        let mut added = Vec::new();
        for f in families {
            let with = |extra: Vec<LinuxSeccompArg>| {
                let mut a = vec![eq(0, f)?];
                a.extend(rest.iter().copied());
                a.extend(extra);
                allow_socket(a)
            };
            match f {
                AF_UNIX | AF_NETLINK => added.push(with(vec![])?),
                AF_INET => {
                    added.push(with(vec![type_is(SOCK_STREAM)?])?);
                    added.push(with(vec![type_is(SOCK_DGRAM)?])?);
                }
                _ => {}
            }
        }
        Ok(added)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_profile() -> LinuxSeccomp {
        let policy = crate::policy::Policy::default()
            .validate(None, &Default::default(), &crate::policy::HostPolicyEnv)
            .expect("default policy");
        match policy.seccomp {
            crate::policy::SeccompChoice::Profile { filter, .. } => filter,
            crate::policy::SeccompChoice::Unconfined => panic!("the default policy has a profile"),
        }
    }

    /// Every `socket` rule as (family, type) pairs it allows; `None` type: any.
    fn socket_rules(f: &LinuxSeccomp) -> Vec<(u64, Option<u64>)> {
        let mut out: Vec<(u64, Option<u64>)> = f
            .syscalls()
            .clone()
            .unwrap_or_default()
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .filter(|r| r.names().iter().any(|n| n == "socket"))
            .map(|r| {
                let fam = family(r).expect("every socket rule names a family");
                let ty = r.args().as_ref().and_then(|a| {
                    a.iter().find(|a| a.index() == 1).map(|a| {
                        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
                        assert_eq!(a.value(), SOCK_TYPE_MASK);
                        a.value_two().expect("datum")
                    })
                });
                (fam, ty)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn egress_allows_unix_netlink_and_inet_stream_or_dgram_only() {
        let narrowed = narrow_for_egress(&default_profile()).unwrap();
        assert_eq!(
            socket_rules(&narrowed),
            vec![
                (AF_UNIX, None),
                (AF_INET, Some(SOCK_STREAM)),
                (AF_INET, Some(SOCK_DGRAM)),
                (AF_NETLINK, None),
            ]
        );
        for denied in [AF_INET6, AF_PACKET] {
            assert!(!socket_rules(&narrowed).iter().any(|(f, _)| *f == denied));
        }
    }

    #[test]
    fn an_unconditional_socket_rule_is_narrowed_too_and_nothing_is_widened() {
        let any = allow_socket(vec![]).unwrap();
        let mut f = default_profile();
        f.set_syscalls(Some(vec![any]));
        let n = narrow_for_egress(&f).unwrap();
        assert_eq!(socket_rules(&n).len(), 4);
        assert!(!socket_rules(&n).contains(&(AF_INET, Some(SOCK_RAW))));
        // A profile without socket stays without it.
        f.set_syscalls(Some(vec![]));
        assert!(socket_rules(&narrow_for_egress(&f).unwrap()).is_empty());
    }
}
