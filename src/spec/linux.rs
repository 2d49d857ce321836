//! The `linux` section: namespaces, ID mappings, cgroup resources, devices, seccomp,
//! masked and read-only paths, cgroups path.

use oci_spec::runtime::{
    Linux, LinuxBlockIoBuilder, LinuxBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxSeccomp,
};

use super::{builder_err, mounts, NotEnforced, SpecError, SpecRequest};
use crate::host::{CgroupMode, HostFacts};
use crate::policy::{NetworkMode, SeccompChoice, ValidatedPolicy};

/// The CFS period every quota is expressed against: 100 ms, the kernel's default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Character devices the sandbox may use: (major, minor, what). Everything else, every
/// block device included, is denied by the spec's device rules.
///
/// What the runtime adds anyway: runc 1.1 appends its own default rules after the spec's
/// (libcontainer's `AllowedDevices`), and a later rule wins, so no spec can take them back.
/// Measured in `devices.list` of a sandbox without a terminal on this project's hosts
/// (runc 1.1.5, cgroup v1): `b *:* m`, `c *:* m` (mknod of any node, which needs
/// `CAP_MKNOD`, never granted), `c 5:2 rwm` (`/dev/ptmx`), `c 136:* rwm` (pty slaves) and
/// `c 10:200 rwm` (`/dev/net/tun`, a node runc does not create and the sandbox cannot
/// make). The ptys are bounded by the devpts mount instead (none without a terminal, see
/// [`super::TERMINAL_PTYS`]).
pub const ALLOWED_DEVICES: &[(i64, i64, &str)] = &[
    (1, 3, "/dev/null"),
    (1, 5, "/dev/zero"),
    (1, 7, "/dev/full"),
    (1, 8, "/dev/random"),
    (1, 9, "/dev/urandom"),
    (5, 0, "/dev/tty"),
];
/// Added only when a terminal is requested: the pty multiplexer and its slaves.
const TERMINAL_DEVICES: &[(i64, Option<i64>, &str)] =
    &[(5, Some(2), "/dev/ptmx"), (136, None, "/dev/pts/*")];

/// The cgroup every sandbox gets: `/stockade/<id>` (cgroupfs layout, v1 and v2 alike).
pub fn cgroups_path(id: &str) -> String {
    format!("/stockade/{id}")
}

pub(super) fn build(
    policy: &ValidatedPolicy,
    host: &HostFacts,
    req: &SpecRequest<'_>,
    not_enforced: &mut Vec<NotEnforced>,
) -> Result<Linux, SpecError> {
    let mut ns_types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ];
    if policy.user_namespace.is_some() {
        ns_types.push(LinuxNamespaceType::User);
    }
    let namespaces = ns_types
        .into_iter()
        .map(|t| {
            LinuxNamespaceBuilder::default()
                .typ(t)
                .build()
                .map_err(builder_err("linux.namespaces"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut b = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(policy, host, req, not_enforced)?)
        .cgroups_path(cgroups_path(req.id))
        .masked_paths(mounts::masked_paths(host.cpu_count))
        .readonly_paths(mounts::readonly_paths());

    if let Some(m) = policy.user_namespace {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(m.host_id)
            .size(m.size)
            .build()
            .map_err(builder_err("linux.uidMappings"))?;
        b = b.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }

    match &policy.seccomp {
        SeccompChoice::Profile { filter, .. } => {
            if !host.seccomp {
                not_enforced.push(NotEnforced {
                    protection: "seccomp".into(),
                    reason: "the kernel has no seccomp filter support".into(),
                });
            }
            b = b.seccomp(seccomp_for_network(filter, policy.network)?);
        }
        SeccompChoice::Unconfined => {}
    }
    b.build().map_err(builder_err("linux"))
}

/// Adapts a profile to the network mode. With `none`, every unconditional or conditional
/// allowance of `socket` is replaced by one that allows only `AF_UNIX`, so not even a new
/// network namespace's devices can be reached; with `loopback` the profile stands as is;
/// with `egress` and `allowlist`, `socket` is narrowed to `AF_UNIX`, `AF_NETLINK` and `AF_INET` stream or
/// datagram sockets (see [`crate::network::seccomp`]).
pub fn seccomp_for_network(
    filter: &LinuxSeccomp,
    network: NetworkMode,
) -> Result<LinuxSeccomp, SpecError> {
    match network {
        NetworkMode::Loopback => Ok(filter.clone()),
        NetworkMode::Egress | NetworkMode::Allowlist | NetworkMode::Group => {
            crate::network::seccomp::narrow_for_egress(filter)
        }
        NetworkMode::None => crate::network::seccomp::narrow_to_unix(filter),
    }
    .map_err(builder_err("linux.seccomp"))
}

fn device_rule(
    allow: bool,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access.to_string());
    if major.is_some() || minor.is_some() || allow {
        b = b.typ(LinuxDeviceType::C);
    }
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().map_err(builder_err("linux.resources.devices"))
}

fn resources(
    policy: &ValidatedPolicy,
    host: &HostFacts,
    req: &SpecRequest<'_>,
    not_enforced: &mut Vec<NotEnforced>,
) -> Result<LinuxResources, SpecError> {
    let l = &policy.limits;
    let mut memory = LinuxMemoryBuilder::default().limit(l.memory as i64);
    // memory+swap equal to memory: no swap. Needs swap accounting on cgroup v1.
    if host.cgroup == CgroupMode::V2 || host.swap_accounting {
        memory = memory.swap(l.memory as i64);
    } else {
        not_enforced.push(NotEnforced {
            protection: "swap".into(),
            reason: "cgroup v1 without swap accounting (swapaccount=1): the sandbox may swap"
                .into(),
        });
    }
    let quota = i64::from(l.cpu_millis) * (CPU_PERIOD_US as i64) / 1000;
    // Shares in proportion to the quota, so sandboxes under contention split the CPU the way
    // their quotas do (runc turns shares into cpu.weight on cgroup v2).
    let shares = (1024 * u64::from(l.cpu_millis) / 1000).max(2);
    let cpu = LinuxCpuBuilder::default()
        .quota(quota)
        .period(CPU_PERIOD_US)
        .shares(shares)
        .build()
        .map_err(builder_err("linux.resources.cpu"))?;
    let pids = LinuxPidsBuilder::default()
        .limit(l.pids)
        .build()
        .map_err(builder_err("linux.resources.pids"))?;

    let mut devices = vec![device_rule(false, None, None, "rwm")?];
    for (major, minor, _) in ALLOWED_DEVICES {
        devices.push(device_rule(true, Some(*major), Some(*minor), "rwm")?);
    }
    if req.terminal {
        for (major, minor, _) in TERMINAL_DEVICES {
            devices.push(device_rule(true, Some(*major), *minor, "rwm")?);
        }
    }

    let mut b = LinuxResourcesBuilder::default()
        .devices(devices)
        .memory(
            memory
                .build()
                .map_err(builder_err("linux.resources.memory"))?,
        )
        .cpu(cpu)
        .pids(pids);
    if let Some(w) = l.io_weight {
        let has_io = host
            .cgroup_controllers
            .iter()
            .any(|c| c == "io" || c == "blkio");
        if !has_io {
            not_enforced.push(NotEnforced {
                protection: "io_weight".into(),
                reason: "no io/blkio cgroup controller on this host".into(),
            });
        }
        b = b.block_io(
            LinuxBlockIoBuilder::default()
                .weight(w)
                .build()
                .map_err(builder_err("linux.resources.blockIO"))?,
        );
    }
    b.build().map_err(builder_err("linux.resources"))
}
