//! `stockade doctor`'s report: the cheap probe plus what needs processes and sockets (runc
//! and containerd versions, containerd reachability), turned into checks with a status and
//! a one-line detail, and the protections this host cannot enforce.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::version::{self, RuncVersion, Version};
use super::{CgroupMode, HostFacts};

mod crun;
pub use crun::{controllers, crun_check, CrunFacts};

/// containerd's default socket.
pub const DEFAULT_CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";

/// The oldest containerd whose API stockade's client is tested against.
const MIN_CONTAINERD: (u32, u32) = (1, 6);

/// What the doctor runs and connects to, behind a trait so tests fake it.
pub trait DoctorEffects {
    /// Runs `program args…` and returns its stdout; an error when it cannot start or exits
    /// non-zero.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<String>;
    /// Connects to the Unix socket at `path` and closes the connection.
    fn connect(&self, path: &Path) -> io::Result<()>;
}

/// The real host: processes from `$PATH`, a plain Unix-socket connect.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEffects;

impl DoctorEffects for SystemEffects {
    fn run(&self, program: &str, args: &[&str]) -> io::Result<String> {
        let out = Command::new(program).args(args).output()?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(io::Error::other(format!(
                "exited with {}: {}",
                out.status,
                stderr.lines().next().unwrap_or("").trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn connect(&self, path: &Path) -> io::Result<()> {
        std::os::unix::net::UnixStream::connect(path).map(drop)
    }
}

/// The containerd address to check: the flag, else `$CONTAINERD_ADDRESS`, else the default.
/// A `unix://` prefix is accepted.
pub fn containerd_socket(flag: Option<&str>, env: Option<&str>) -> PathBuf {
    let addr = flag
        .filter(|s| !s.is_empty())
        .or(env.filter(|s| !s.is_empty()))
        .unwrap_or(DEFAULT_CONTAINERD_ADDRESS);
    PathBuf::from(addr.strip_prefix("unix://").unwrap_or(addr))
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and usable.
    Ok,
    /// Usable, with a caveat the detail names.
    Warn,
    /// Absent or unusable.
    Missing,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Missing => "missing",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (`cgroup`, `apparmor`, `runc`, `runc-advisory`, …).
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// stockade cannot run sandboxes without it.
    pub required: bool,
    /// One line: what was found, or what to do.
    pub detail: String,
}

/// A tool's version as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolVersion {
    /// The first line the tool printed, or why it could not be run.
    pub raw: String,
    /// The parsed version, when the line held one.
    pub version: Option<Version>,
}

/// The whole report, as `stockade doctor --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// stockade can run sandboxes here (nothing required is missing).
    pub usable: bool,
    /// The host facts the checks were made from.
    pub facts: HostFacts,
    /// The runtime binary's version.
    pub runc: Option<ToolVersion>,
    /// containerd's version.
    pub containerd: Option<ToolVersion>,
    /// The containerd socket checked.
    pub containerd_socket: PathBuf,
    /// Whether containerd answered there.
    pub containerd_reachable: bool,
    /// Every check, in a stable order.
    pub checks: Vec<Check>,
    /// Protections sandboxes on this host run without, one line each.
    pub not_enforced: Vec<String>,
}

/// Builds the report from probed `facts`, running runc and containerd through `effects`
/// and connecting to `socket`.
pub fn report(facts: HostFacts, effects: &dyn DoctorEffects, socket: &Path) -> DoctorReport {
    let mut checks = Vec::new();
    let mut not_enforced = Vec::new();
    let mut check = |name: &str, status: Status, required: bool, detail: String| {
        checks.push(Check {
            name: name.into(),
            status,
            required,
            detail,
        });
    };

    // cgroups: limits need the memory, cpu and pids controllers.
    let ctl = if facts.cgroup_controllers.is_empty() {
        "none".to_string()
    } else {
        facts.cgroup_controllers.join(", ")
    };
    let where_ = match facts.cgroup {
        CgroupMode::V1 => "v1 controllers",
        CgroupMode::V2 => "v2 controllers",
        CgroupMode::Hybrid => "v1 controllers (cgroup v2 mounted beside them, unused)",
    };
    let lacking: Vec<(&str, &str)> = [
        ("memory", "memory limit"),
        ("pids", "process limit"),
        ("cpu", "CPU quota"),
    ]
    .into_iter()
    .filter(|(c, _)| !facts.has_controller(c))
    .collect();
    if facts.cgroup_controllers.is_empty() {
        check(
            "cgroup",
            Status::Missing,
            true,
            format!("{}: no controllers available", facts.cgroup),
        );
    } else if lacking.is_empty() {
        check(
            "cgroup",
            Status::Ok,
            false,
            format!("{}; {where_}: {ctl}", facts.cgroup),
        );
    } else {
        let names: Vec<&str> = lacking.iter().map(|(c, _)| *c).collect();
        check(
            "cgroup",
            Status::Warn,
            false,
            format!(
                "{}; {where_}: {ctl}; lacking {}",
                facts.cgroup,
                names.join(", ")
            ),
        );
    }
    for (c, what) in &lacking {
        not_enforced.push(format!(
            "{what}: the {c} cgroup controller is not available — sandboxes run without it"
        ));
    }

    if facts.swap_accounting {
        check(
            "swap-accounting",
            Status::Ok,
            false,
            "memory+swap can be limited (swap disabled in sandboxes)".into(),
        );
    } else if facts.has_controller("memory") {
        check(
            "swap-accounting",
            Status::Warn,
            false,
            "no memory+swap accounting (boot with swapaccount=1 on cgroup v1)".into(),
        );
        not_enforced.push(
            "swap limit: no swap accounting — a sandbox may use swap beyond its memory limit"
                .into(),
        );
    }

    if facts.oom_floor {
        check(
            "oom-floor",
            Status::Ok,
            false,
            "CAP_SYS_RESOURCE held: a sandbox's oom_score_adj is a floor it cannot lower".into(),
        );
    } else {
        check(
            "oom-floor",
            Status::Warn,
            false,
            "no CAP_SYS_RESOURCE: a sandbox's oom_score_adj is set but it can lower it".into(),
        );
        not_enforced.push(
            "oom_score_adj floor: stockade lacks CAP_SYS_RESOURCE — a sandbox can lower its oom_score_adj (to no less than stockade's own); reported in every run result"
                .into(),
        );
    }

    if facts.apparmor {
        check(
            "apparmor",
            Status::Ok,
            false,
            "enabled; sandboxes run under stockade-default".into(),
        );
        match effects.run("apparmor_parser", &["--version"]) {
            Ok(out) => check(
                "apparmor-parser",
                Status::Ok,
                false,
                out.lines().next().unwrap_or("").trim().to_string(),
            ),
            Err(e) => {
                check(
                    "apparmor-parser",
                    Status::Warn,
                    false,
                    format!("apparmor_parser cannot run ({e}); stockade-default cannot be loaded"),
                );
                not_enforced.push(
                    "AppArmor: apparmor_parser missing — stockade-default cannot be loaded, runs fail unless it is already loaded"
                        .into(),
                );
            }
        }
    } else {
        check(
            "apparmor",
            Status::Warn,
            false,
            "not available in the kernel".into(),
        );
        not_enforced.push(
            "AppArmor: not available — sandboxes run without an AppArmor profile; reported in every run result"
                .into(),
        );
    }

    if facts.seccomp {
        check(
            "seccomp",
            Status::Ok,
            true,
            format!("actions: {}", facts.seccomp_actions.join(" ")),
        );
    } else {
        check(
            "seccomp",
            Status::Missing,
            true,
            "the kernel has no seccomp filter support".into(),
        );
    }

    check(
        "user-namespaces",
        if facts.user_namespaces {
            Status::Ok
        } else {
            Status::Warn
        },
        false,
        if facts.user_namespaces {
            "available".into()
        } else {
            "disabled (user.max_user_namespaces is 0 or kernel.unprivileged_userns_clone is 0); policies with a user namespace cannot run".into()
        },
    );

    check(
        "overlayfs",
        if facts.overlayfs {
            Status::Ok
        } else {
            Status::Missing
        },
        true,
        if facts.overlayfs {
            "available".into()
        } else {
            "not in /proc/filesystems and no overlay module; snapshots cannot be mounted".into()
        },
    );

    check(
        "cpus",
        Status::Ok,
        false,
        format!("{} possible CPUs, {}", facts.cpu_count, facts.arch),
    );

    // runc: required, and checked for breakout fixes.
    let runc = match effects.run("runc", &["--version"]) {
        Ok(out) => {
            let parsed = version::parse_runc(&out);
            let raw = out.lines().next().unwrap_or("").trim().to_string();
            match &parsed {
                Some(rv) => {
                    check("runc", Status::Ok, true, describe_runc(rv));
                    for adv in version::runc_missing_fixes(&rv.version) {
                        check(
                            "runc-advisory",
                            Status::Warn,
                            false,
                            format!(
                                "upstream version {} lacks the fix for {} ({}; fixed upstream in {}); check your distribution's security advisories",
                                rv.version.upstream(),
                                adv.ids,
                                adv.summary,
                                adv.fixed_in_text()
                            ),
                        );
                    }
                }
                None => check(
                    "runc",
                    Status::Warn,
                    true,
                    format!("version not recognised: {raw:?}; breakout fixes cannot be checked"),
                ),
            }
            Some(ToolVersion {
                raw,
                version: parsed.map(|r| r.version),
            })
        }
        Err(e) => {
            check(
                "runc",
                Status::Missing,
                true,
                format!("cannot run runc: {e}"),
            );
            None
        }
    };

    let containerd = match effects.run("containerd", &["--version"]) {
        Ok(out) => {
            let parsed = version::parse_containerd(&out);
            let raw = out.lines().next().unwrap_or("").trim().to_string();
            match &parsed {
                Some(v) if (v.major, v.minor) < MIN_CONTAINERD => check(
                    "containerd",
                    Status::Warn,
                    true,
                    format!(
                        "{v}: older than {}.{}, whose API stockade is tested against",
                        MIN_CONTAINERD.0, MIN_CONTAINERD.1
                    ),
                ),
                Some(v) => check("containerd", Status::Ok, true, v.to_string()),
                None => check(
                    "containerd",
                    Status::Warn,
                    true,
                    format!("version not recognised: {raw:?}"),
                ),
            }
            Some(ToolVersion {
                raw,
                version: parsed,
            })
        }
        Err(e) => {
            check(
                "containerd",
                Status::Missing,
                true,
                format!("cannot run containerd: {e}"),
            );
            None
        }
    };

    let reachable = match effects.connect(socket) {
        Ok(()) => {
            check(
                "containerd-socket",
                Status::Ok,
                false,
                format!("{} accepts connections", socket.display()),
            );
            true
        }
        Err(e) => {
            check(
                "containerd-socket",
                Status::Warn,
                false,
                format!(
                    "{}: {e}; start containerd there or pass --address",
                    socket.display()
                ),
            );
            false
        }
    };

    let usable = !checks
        .iter()
        .any(|c| c.required && c.status == Status::Missing);
    DoctorReport {
        usable,
        facts,
        runc,
        containerd,
        containerd_socket: socket.to_path_buf(),
        containerd_reachable: reachable,
        checks,
        not_enforced,
    }
}

impl DoctorReport {
    /// Adds the `disk` check: the mechanism that bounds what sandboxes write to the host's
    /// storage (see [`crate::disk`]), from `facts` probed at `disk_root`. Where none can,
    /// sandboxes with a writable root or a managed workspace cannot run, and that is said.
    pub fn with_disk(mut self, facts: &crate::disk::DiskFacts, disk_root: &Path) -> Self {
        self.checks.push(disk_check(facts, disk_root));
        if let crate::disk::Mechanism::Unavailable { reason } = crate::disk::choose(facts) {
            self.not_enforced.push(format!(
                "disk: {reason} — runs with a writable root or a managed workspace are refused"
            ));
        }
        self
    }
}

impl DoctorReport {
    /// Adds the `crun` check: whether crun could run sandboxes here ([`crun_check`]).
    pub fn with_crun(mut self, facts: &CrunFacts) -> Self {
        self.checks.push(crun_check(facts));
        self
    }

    /// Adds the `network` check: what `egress` needs (see [`crate::network::doctor`]).
    pub fn with_network(mut self, facts: &crate::network::doctor::NetFacts) -> Self {
        let range = crate::network::DEFAULT_RANGE;
        self.checks
            .push(crate::network::doctor::check(facts, &range));
        self
    }
}

/// The `disk` line of the report. Pure.
pub fn disk_check(facts: &crate::disk::DiskFacts, disk_root: &Path) -> Check {
    use crate::disk::{choose, project_quota, Mechanism};
    let fs = facts.fs_type.as_deref().unwrap_or("unknown");
    let quota = if project_quota(fs, &facts.fs_options) {
        format!(
            "; {fs} at {} has project quotas (not used)",
            disk_root.display()
        )
    } else {
        format!(
            "; no project quotas on {} ({fs} without prjquota)",
            disk_root.display()
        )
    };
    let (status, detail) = match choose(facts) {
        Mechanism::LoopImage => (
            Status::Ok,
            format!(
                "loop-ext4: a sparse ext4 image per sandbox in {}, loop-mounted (writable root's upper layer, managed workspace){quota}",
                disk_root.display()
            ),
        ),
        Mechanism::Unavailable { reason } => (Status::Warn, format!("none: {reason}{quota}")),
    };
    Check {
        name: "disk".into(),
        status,
        required: false,
        detail,
    }
}

fn describe_runc(rv: &RuncVersion) -> String {
    match (&rv.commit, rv.is_distribution_build()) {
        (Some(c), true) => format!(
            "{} (upstream {}, distribution build {c})",
            rv.version,
            rv.version.upstream()
        ),
        (_, true) => format!(
            "{} (upstream {}, distribution build)",
            rv.version,
            rv.version.upstream()
        ),
        _ => rv.version.to_string(),
    }
}

impl DoctorReport {
    /// The human table: one check a line, then what is not enforced, then the verdict.
    pub fn to_text(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!("{:<width$}  {:<7}  DETAIL\n", "CHECK", "STATUS");
        for c in &self.checks {
            out += &format!("{:<width$}  {:<7}  {}\n", c.name, c.status, c.detail);
        }
        out += "\n";
        if self.not_enforced.is_empty() {
            out += "Every protection stockade applies is enforced on this host.\n";
        } else {
            out += "Not enforced on this host:\n";
            for n in &self.not_enforced {
                out += &format!("  - {n}\n");
            }
        }
        let warnings = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        let missing: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.required && c.status == Status::Missing)
            .map(|c| c.name.as_str())
            .collect();
        if self.usable {
            out += &format!("\nusable: yes ({warnings} warnings)\n");
        } else {
            out += &format!("\nusable: no (missing: {})\n", missing.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests;
