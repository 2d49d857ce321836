//! The `crun` line of `stockade doctor`: whether crun could run this host's sandboxes,
//! which it does with less CPU per sandbox than runc (a C program started for each create,
//! start and delete instead of a Go one), and why it is not used when it is not.

use super::{Check, Status};
use crate::host::CgroupMode;

/// What decides whether crun can run sandboxes here. Probed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrunFacts {
    /// crun's first `--version` line; `None` when crun is not found.
    pub version: Option<String>,
    /// The host's cgroup layout.
    pub cgroup: CgroupMode,
    /// On a hybrid host, the controllers its cgroup v2 side holds
    /// (`/sys/fs/cgroup/unified/cgroup.controllers`); empty elsewhere.
    pub unified_controllers: Vec<String>,
    /// The runtime binary sandboxes are run under (`STOCKADE_RUNC_BINARY`); `None`: runc.
    pub selected: Option<String>,
}

/// The `crun` line. Pure.
pub fn crun_check(f: &CrunFacts) -> Check {
    let faster = "crun starts sandboxes for less CPU than runc";
    let detail = match (&f.version, f.selected.as_deref()) {
        (_, Some(sel)) if sel.rsplit('/').next() == Some("crun") => {
            format!("in use ({sel}, from STOCKADE_RUNC_BINARY)")
        }
        (None, _) => format!(
            "not installed; runc is used. {faster}: install it (Debian: crun) and pass \
             --runc-binary crun where the host allows it"
        ),
        (Some(v), _) if f.cgroup == CgroupMode::Hybrid && !f.unified_controllers.is_empty() => {
            let held = f.unified_controllers.join(", ");
            format!(
                "{v} installed, not usable here: it refuses a hybrid cgroup layout whose v2 \
                 side holds controllers ({held}); {faster}, and would run here if those \
                 controllers were mounted as v1 hierarchies instead (stockade never changes \
                 the host's cgroups itself)"
            )
        }
        (Some(v), _) => format!(
            "{v} installed and usable here, not the default: {faster}; pass --runc-binary \
             crun (or set STOCKADE_RUNC_BINARY=crun) to use it"
        ),
    };
    Check {
        name: "crun".into(),
        status: Status::Ok,
        required: false,
        detail,
    }
}

/// The controllers listed in a `cgroup.controllers` file's text.
pub fn controllers(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        version: Option<&str>,
        cgroup: CgroupMode,
        unified: &str,
        sel: Option<&str>,
    ) -> CrunFacts {
        CrunFacts {
            version: version.map(str::to_string),
            cgroup,
            unified_controllers: controllers(unified),
            selected: sel.map(str::to_string),
        }
    }

    #[test]
    fn the_crun_line_says_whether_crun_would_run_here_and_why_not() {
        let v = Some("crun version 1.8.1");
        // (facts, words the detail must hold)
        let table: &[(CrunFacts, &[&str])] = &[
            (
                facts(None, CgroupMode::V2, "", None),
                &["not installed", "less CPU"],
            ),
            (
                facts(v, CgroupMode::Hybrid, "hugetlb\n", None),
                &[
                    "crun version 1.8.1",
                    "not usable here",
                    "(hugetlb)",
                    "never changes",
                ],
            ),
            (
                facts(v, CgroupMode::Hybrid, "", None),
                &["usable here", "--runc-binary crun"],
            ),
            (
                facts(v, CgroupMode::V2, "cpu memory pids", None),
                &["usable here", "less CPU"],
            ),
            (
                facts(v, CgroupMode::Hybrid, "hugetlb", Some("/usr/bin/crun")),
                &["in use (/usr/bin/crun"],
            ),
            (
                facts(v, CgroupMode::V2, "", Some("/usr/local/bin/runc-wrapper")),
                &["usable here"],
            ),
        ];
        for (f, want) in table {
            let c = crun_check(f);
            assert_eq!(
                (c.name.as_str(), c.status, c.required),
                ("crun", Status::Ok, false)
            );
            for w in *want {
                assert!(c.detail.contains(w), "{f:?}: {w:?} not in {:?}", c.detail);
            }
        }
    }
}
