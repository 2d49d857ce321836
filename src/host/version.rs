//! Version strings of runc and containerd, as upstream and distributions print them, and the
//! runc security fixes a version has upstream.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;

/// An upstream version (`1.1.12`, `1.0.0-rc6`, `1.4.0-rc.3`) plus whatever a build or a
/// distribution appended (`+ds1`, `-0ubuntu2~22.04.1`, `~ds1`), kept apart: a distribution
/// suffix means fixes may have been backported beyond what the upstream number says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number.
    pub patch: u32,
    /// Release candidate number (`-rc6`, `-rc.3`); `None` for a release.
    pub rc: Option<u32>,
    /// Text after the upstream version (`+ds1`, `-1+deb12u1`, `+dev`), if any.
    pub suffix: Option<String>,
}

impl Version {
    /// Parses the first version-looking token of `s` (a leading `v` allowed).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        let (nums, rest) = split_numeric(s);
        let mut parts = nums.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        // Pre-release: only `-rcN` / `-rc.N` are upstream's; any other hyphen suffix is a
        // distribution revision (`-0ubuntu2`, `-1+deb12u1`).
        let (rc, rest) = match rest.strip_prefix("-rc") {
            Some(r) => {
                let r = r.strip_prefix('.').unwrap_or(r);
                let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
                (Some(r[..end].parse().unwrap_or(0)), &r[end..])
            }
            None => (None, rest),
        };
        let suffix = (!rest.is_empty()).then(|| rest.to_string());
        Some(Version {
            major,
            minor,
            patch,
            rc,
            suffix,
        })
    }

    /// `major.minor.patch[-rcN]`, without any suffix.
    pub fn upstream(&self) -> String {
        match self.rc {
            Some(rc) => format!("{}.{}.{}-rc{rc}", self.major, self.minor, self.patch),
            None => format!("{}.{}.{}", self.major, self.minor, self.patch),
        }
    }

    /// Ordering of upstream versions (suffixes ignored): a release candidate comes before
    /// its release.
    pub fn cmp_upstream(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.rc, other.rc) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(&b),
            })
    }

    fn branch(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.upstream(),
            self.suffix.as_deref().unwrap_or("")
        )
    }
}

/// Splits `1.2.3-rc1` into `1.2.3` and `-rc1`.
fn split_numeric(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let nums = s[..end].trim_end_matches('.');
    (nums, &s[nums.len()..])
}

/// What `runc --version` said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuncVersion {
    /// The version `runc --version` printed.
    pub version: Version,
    /// The `commit:` line, which distribution builds set to the package version
    /// (`1.1.5+ds1-1+deb12u1`).
    pub commit: Option<String>,
}

impl RuncVersion {
    /// Whether the build is likely a distribution package (its fixes may be backported).
    pub fn is_distribution_build(&self) -> bool {
        self.version
            .suffix
            .as_deref()
            .is_some_and(|s| s != "+dev" && !s.starts_with("+dev"))
            || self.commit.as_deref().is_some_and(|c| {
                // Upstream commit lines are `v1.1.12-0-g51d5e946` or a bare hash.
                !c.starts_with('v') && !c.chars().all(|ch| ch.is_ascii_hexdigit())
            })
    }
}

/// Parses `runc --version` output: `runc version 1.1.12` then `commit: …`, `spec: …` lines.
pub fn parse_runc(output: &str) -> Option<RuncVersion> {
    let mut lines = output.lines();
    let first = lines.find(|l| !l.trim().is_empty())?;
    let rest = first.trim().strip_prefix("runc version")?;
    let version = Version::parse(rest.split_whitespace().next()?)?;
    let commit = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit:"))
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty());
    Some(RuncVersion { version, commit })
}

/// Parses `containerd --version` output: `containerd <module path> <version> [<revision>]`.
pub fn parse_containerd(output: &str) -> Option<Version> {
    let line = output.lines().find(|l| !l.trim().is_empty())?;
    let mut words = line.split_whitespace();
    if words.next()? != "containerd" {
        return None;
    }
    words.find_map(|w| {
        let first = w.strip_prefix('v').unwrap_or(w);
        if first.starts_with(|c: char| c.is_ascii_digit()) && first.contains('.') {
            Version::parse(w)
        } else {
            None
        }
    })
}

/// A runc container-breakout fix and the upstream releases that carry it, one per release
/// branch (`major.minor`). A version has the fix when its branch's fixed release is at or
/// below it, or when its branch is newer than every branch listed.
#[derive(Debug, Clone, Copy)]
pub struct Advisory {
    /// The advisory ids (CVE, GHSA).
    pub ids: &'static str,
    /// One line, what the flaw allows.
    pub summary: &'static str,
    /// The first fixed release of each release branch (`1.1.12`).
    pub fixed_in: &'static [&'static str],
}

/// The runc breakout fixes `stockade doctor` checks for.
pub const RUNC_ADVISORIES: &[Advisory] = &[
    Advisory {
        ids: "CVE-2019-5736",
        summary: "a container process could overwrite the host runc binary through /proc/self/exe",
        fixed_in: &["1.0.0-rc7"],
    },
    Advisory {
        ids: "CVE-2024-21626",
        summary: "a leaked host file descriptor let a container's working directory reach the host filesystem",
        fixed_in: &["1.1.12"],
    },
    Advisory {
        ids: "CVE-2025-31133, CVE-2025-52565, CVE-2025-52881",
        summary: "races on maskedPaths (/dev/null), the /dev/console bind mount and redirected procfs writes allowed breakouts",
        fixed_in: &["1.2.8", "1.3.3", "1.4.0-rc.3"],
    },
];

impl Advisory {
    /// Whether upstream release `v` carries this fix.
    pub fn fixed_upstream(&self, v: &Version) -> bool {
        let fixes: Vec<Version> = self
            .fixed_in
            .iter()
            .map(|f| Version::parse(f).expect("advisory versions parse"))
            .collect();
        if let Some(f) = fixes.iter().find(|f| f.branch() == v.branch()) {
            return v.cmp_upstream(f) != Ordering::Less;
        }
        fixes.iter().all(|f| v.branch() > f.branch())
    }

    /// The first fixed release listed (for messages).
    pub fn fixed_in_text(&self) -> String {
        self.fixed_in.join(" / ")
    }
}

/// The advisories whose fix upstream release `v` lacks.
pub fn runc_missing_fixes(v: &Version) -> Vec<&'static Advisory> {
    RUNC_ADVISORIES
        .iter()
        .filter(|a| !a.fixed_upstream(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_real_runc_outputs() {
        struct Case {
            name: &'static str,
            output: &'static str,
            upstream: &'static str,
            suffix: Option<&'static str>,
            commit: Option<&'static str>,
            distro: bool,
        }
        let cases = [
            Case {
                name: "Debian 12",
                output: "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n",
                upstream: "1.1.5",
                suffix: Some("+ds1"),
                commit: Some("1.1.5+ds1-1+deb12u1"),
                distro: true,
            },
            Case {
                name: "upstream static release",
                output: "runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\nspec: 1.0.2-dev\ngo: go1.20.13\nlibseccomp: 2.5.4\n",
                upstream: "1.1.12",
                suffix: None,
                commit: Some("v1.1.12-0-g51d5e946"),
                distro: false,
            },
            Case {
                name: "Ubuntu 22.04",
                output: "runc version 1.1.12-0ubuntu2~22.04.1\nspec: 1.0.2-dev\ngo: go1.21.1\nlibseccomp: 2.5.3\n",
                upstream: "1.1.12",
                suffix: Some("-0ubuntu2~22.04.1"),
                commit: None,
                distro: true,
            },
            Case {
                name: "old release candidate",
                output: "runc version 1.0.0-rc6\ncommit: 079817cc26ec5292ac375bb9f47f373d33574949\nspec: 1.0.1-dev\n",
                upstream: "1.0.0-rc6",
                suffix: None,
                commit: Some("079817cc26ec5292ac375bb9f47f373d33574949"),
                distro: false,
            },
            Case {
                name: "patched rc build",
                output: "runc version 1.0.0-rc6+dev\ncommit: 09c8266bf2fcf9519a651b04ae54c967b9ab86ec\nspec: 1.0.1-dev\n",
                upstream: "1.0.0-rc6",
                suffix: Some("+dev"),
                commit: Some("09c8266bf2fcf9519a651b04ae54c967b9ab86ec"),
                distro: false,
            },
            Case {
                name: "rc93",
                output: "runc version 1.0.0-rc93\ncommit: 12644e614e25b05da6fd08a38ffa0cfe1903fdec\nspec: 1.0.2-dev\ngo: go1.13.15\nlibseccomp: 2.5.1\n",
                upstream: "1.0.0-rc93",
                suffix: None,
                commit: Some("12644e614e25b05da6fd08a38ffa0cfe1903fdec"),
                distro: false,
            },
            Case {
                name: "dotted rc",
                output: "runc version 1.4.0-rc.3\ncommit: v1.4.0-rc.3-0-gabcdef12\nspec: 1.3.0\ngo: go1.24.9\nlibseccomp: 2.6.0\n",
                upstream: "1.4.0-rc3",
                suffix: None,
                commit: Some("v1.4.0-rc.3-0-gabcdef12"),
                distro: false,
            },
            Case {
                name: "Fedora, no commit line",
                output: "runc version 1.2.8\nspec: 1.2.1\ngo: go1.24.9\nlibseccomp: 2.5.5\n",
                upstream: "1.2.8",
                suffix: None,
                commit: None,
                distro: false,
            },
        ];
        for c in cases {
            let got = parse_runc(c.output).unwrap_or_else(|| panic!("{}: no parse", c.name));
            assert_eq!(got.version.upstream(), c.upstream, "{}", c.name);
            assert_eq!(got.version.suffix.as_deref(), c.suffix, "{}", c.name);
            assert_eq!(got.commit.as_deref(), c.commit, "{}", c.name);
            assert_eq!(got.is_distribution_build(), c.distro, "{}", c.name);
        }
    }

    #[test]
    fn rejects_what_is_not_a_runc_version() {
        for bad in [
            "",
            "runc version unknown\n",
            "crun version 1.8.1\n",
            "runc version\n",
            "bash: runc: command not found\n",
        ] {
            assert_eq!(parse_runc(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_real_containerd_outputs() {
        let cases = [
            (
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
                "1.6.20",
                Some("~ds1"),
            ),
            (
                "containerd github.com/containerd/containerd v1.7.13 7c3aca7a610df76212171d200ca3811ff6096eb8\n",
                "1.7.13",
                None,
            ),
            (
                "containerd containerd.io 1.6.28 ae07eda36dd25f8a1b98dfbf587313b99c0190bb\n",
                "1.6.28",
                None,
            ),
            (
                "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376\n",
                "2.1.4",
                None,
            ),
            (
                "containerd github.com/containerd/containerd 1.7.12 1.7.12-0ubuntu2~22.04.1\n",
                "1.7.12",
                None,
            ),
        ];
        for (out, upstream, suffix) in cases {
            let got = parse_containerd(out).unwrap_or_else(|| panic!("{out:?}: no parse"));
            assert_eq!(got.upstream(), upstream, "{out:?}");
            assert_eq!(got.suffix.as_deref(), suffix, "{out:?}");
        }
        assert_eq!(
            parse_containerd("ctr github.com/containerd/containerd 1.6.20\n"),
            None
        );
        assert_eq!(
            parse_containerd("containerd github.com/containerd/containerd\n"),
            None
        );
    }

    #[test]
    fn upstream_ordering_puts_candidates_before_releases() {
        let ordered = [
            "0.1.1",
            "1.0.0-rc5",
            "1.0.0-rc6",
            "1.0.0-rc10",
            "1.0.0-rc93",
            "1.0.0",
            "1.0.3",
            "1.1.5",
            "1.1.12",
            "1.2.0",
            "1.2.8",
            "1.3.3",
            "1.4.0-rc.2",
            "1.4.0-rc.3",
            "1.4.0",
        ];
        for w in ordered.windows(2) {
            assert_eq!(
                v(w[0]).cmp_upstream(&v(w[1])),
                Ordering::Less,
                "{} < {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(v("1.1.5+ds1").cmp_upstream(&v("1.1.5")), Ordering::Equal);
    }

    #[test]
    fn advisories_by_upstream_version() {
        // (version, ids whose fix it lacks)
        let cases: &[(&str, &[&str])] = &[
            (
                "1.0.0-rc6",
                &["CVE-2019-5736", "CVE-2024-21626", "CVE-2025-31133"],
            ),
            ("1.0.0-rc7", &["CVE-2024-21626", "CVE-2025-31133"]),
            ("1.0.0-rc93", &["CVE-2024-21626", "CVE-2025-31133"]),
            ("1.1.5+ds1", &["CVE-2024-21626", "CVE-2025-31133"]),
            ("1.1.11", &["CVE-2024-21626", "CVE-2025-31133"]),
            ("1.1.12", &["CVE-2025-31133"]),
            ("1.1.15", &["CVE-2025-31133"]),
            ("1.2.0", &["CVE-2025-31133"]),
            ("1.2.7", &["CVE-2025-31133"]),
            ("1.2.8", &[]),
            ("1.3.2", &["CVE-2025-31133"]),
            ("1.3.3", &[]),
            ("1.4.0-rc.2", &["CVE-2025-31133"]),
            ("1.4.0-rc.3", &[]),
            ("1.4.0", &[]),
            ("1.5.1", &[]),
            ("2.0.0", &[]),
        ];
        for (ver, want) in cases {
            let got: Vec<&str> = runc_missing_fixes(&v(ver))
                .iter()
                .map(|a| a.ids.split(',').next().unwrap_or(""))
                .collect();
            assert_eq!(&got, want, "runc {ver}");
        }
    }

    proptest::proptest! {
        #[test]
        fn version_parse_never_panics(s in "\\PC{0,40}") {
            let _ = Version::parse(&s);
            let _ = parse_runc(&s);
            let _ = parse_containerd(&s);
        }

        #[test]
        fn version_display_round_trips(
            major in 0u32..50, minor in 0u32..50, patch in 0u32..50,
            rc in proptest::option::of(0u32..200),
            suffix in proptest::option::of("[+~][a-z0-9.~+-]{1,12}"),
        ) {
            let ver = Version { major, minor, patch, rc, suffix };
            proptest::prop_assert_eq!(Version::parse(&ver.to_string()), Some(ver));
        }
    }
}
