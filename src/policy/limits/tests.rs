use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::policy::{Policy, PolicyEnv, PolicyOverrides};

/// No directories, no files: limits need neither.
struct NoFs;

impl PolicyEnv for NoFs {
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn bind_dir(&self, p: &Path) -> Result<crate::policy::HostDir, crate::policy::BindError> {
        Err(crate::policy::BindError::Resolve {
            path: p.to_path_buf(),
            reason: "no such directory".to_string(),
        })
    }
}

fn from_toml(text: &str) -> Result<Limits, String> {
    Policy::from_toml(text, "policy.toml")
        .and_then(|p| p.validate(Some("policy.toml"), &PolicyOverrides::default(), &NoFs))
        .map(|v| v.limits)
        .map_err(|e| e.to_string())
}

fn from_flags(o: PolicyOverrides) -> Result<Limits, String> {
    Policy::default()
        .validate(None, &o, &NoFs)
        .map(|v| v.limits)
        .map_err(|e| e.to_string())
}

/// u64::MAX, the value that became -1 ("unlimited") in the spec.
const U64_MAX: &str = "18446744073709551615";
/// i64::MAX + 1: the smallest value that wraps negative as an i64.
const I64_WRAP: &str = "9223372036854775808";

#[test]
fn sizes_that_would_mean_unlimited_are_refused_naming_the_field() {
    // (policy document, the error's start): one line each, the field named.
    let cases: &[(&str, &str)] = &[
        (
            "[limits]\nmemory = \"18446744073709551615\"",
            "policy.toml: limits.memory: `18446744073709551615` is above the maximum",
        ),
        (
            "[limits]\nmemory = \"9223372036854775808\"",
            "policy.toml: limits.memory: ",
        ),
        (
            "[limits]\nmemory = \"9223372036854775807\"",
            "policy.toml: limits.memory: ",
        ),
        (
            "[limits]\nmemory = \"8388607T\"",
            "policy.toml: limits.memory: ",
        ),
        (
            "[limits]\nmemory = \"1025T\"",
            "policy.toml: limits.memory: ",
        ),
        (
            "[limits]\nfsize = \"18446744073709551615\"",
            "policy.toml: limits.fsize: `18446744073709551615` is above the maximum",
        ),
        (
            "[limits]\nfsize = \"16777215T\"",
            "policy.toml: limits.fsize: ",
        ),
        (
            "[limits]\ntmp_size = \"18446744073709551615\"",
            "policy.toml: limits.tmp_size: ",
        ),
        (
            "[limits]\nshm_size = \"18446744073709551615\"",
            "policy.toml: limits.shm_size: ",
        ),
        (
            "[limits]\nmax_output = \"18446744073709551615\"",
            "policy.toml: limits.max_output: ",
        ),
        (
            "[limits]\nnofile = 9223372036854775807",
            "policy.toml: limits.nofile: 9223372036854775807 is above the maximum of 1048576",
        ),
        ("[limits]\nnofile = 1048577", "policy.toml: limits.nofile: "),
        (
            "[limits]\nnproc = 9223372036854775807",
            "policy.toml: limits.nproc: 9223372036854775807 is above the maximum of 4194304",
        ),
        (
            "[limits]\nnproc = 0",
            "policy.toml: limits.nproc: must be greater than zero",
        ),
        (
            "[limits]\npids = 9223372036854775807",
            "policy.toml: limits.pids: 9223372036854775807 is above the maximum of 4194304",
        ),
        ("[limits]\npids = 4194305", "policy.toml: limits.pids: "),
        (
            "[limits]\npids = -1",
            "policy.toml: limits.pids: -1 must be at least 1",
        ),
        (
            "[limits]\nfsize = \"0\"",
            "policy.toml: limits.fsize: `0` must be greater than zero",
        ),
        (
            "[limits]\ntmp_size = \"0\"",
            "policy.toml: limits.tmp_size: `0` must be greater than zero",
        ),
    ];
    for (doc, want) in cases {
        let e = from_toml(doc).expect_err(doc);
        assert!(
            e.starts_with(want),
            "{doc:?}: got {e:?}, want it to start {want:?}"
        );
        assert!(!e.contains('\n'), "{doc:?}: more than one line: {e:?}");
    }
}

#[test]
fn flags_that_would_mean_unlimited_are_refused_naming_the_flag() {
    let cases: &[(PolicyOverrides, &str)] = &[
        (
            PolicyOverrides {
                memory: Some(U64_MAX.into()),
                ..Default::default()
            },
            "--memory: `18446744073709551615` is above the maximum of 1024Ti",
        ),
        (
            PolicyOverrides {
                memory: Some(I64_WRAP.into()),
                ..Default::default()
            },
            "--memory: ",
        ),
        (
            PolicyOverrides {
                memory: Some("16777216T".into()),
                ..Default::default()
            },
            "--memory: ",
        ),
        (
            PolicyOverrides {
                max_output: Some(U64_MAX.into()),
                ..Default::default()
            },
            "--max-output: ",
        ),
        (
            PolicyOverrides {
                pids: Some("9223372036854775807".into()),
                ..Default::default()
            },
            "--pids: ",
        ),
        (
            PolicyOverrides {
                pids: Some("-1".into()),
                ..Default::default()
            },
            "--pids: ",
        ),
        (
            PolicyOverrides {
                pids: Some("0".into()),
                ..Default::default()
            },
            "--pids: ",
        ),
    ];
    for (o, want) in cases {
        let e = from_flags(o.clone()).expect_err(want);
        assert!(e.starts_with(want), "got {e:?}, want it to start {want:?}");
        assert!(!e.contains('\n'), "more than one line: {e:?}");
    }
}

/// A library caller can write RLIM_INFINITY itself (TOML integers stop at i64::MAX).
#[test]
fn rlim_infinity_from_a_library_caller_is_refused() {
    for (nofile, nproc, field) in [
        (Some(u64::MAX), None, "limits.nofile"),
        (None, Some(u64::MAX), "limits.nproc"),
    ] {
        let p = Policy {
            limits: crate::policy::LimitsSection {
                nofile,
                nproc,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = p
            .validate(None, &PolicyOverrides::default(), &NoFs)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "{field}: 18446744073709551615 is above the maximum"
            )),
            "{e}"
        );
    }
}

#[test]
fn the_largest_accepted_values_are_the_documented_bounds() {
    let l = from_toml(
        "[limits]\nmemory = \"1024Ti\"\nfsize = \"1024Ti\"\ntmp_size = \"1024Ti\"\n\
         shm_size = \"1024Ti\"\nmax_output = \"1024Ti\"\nnofile = 1048576\nnproc = 4194304\n\
         pids = 4194304",
    )
    .unwrap();
    assert_eq!(
        (l.memory, l.fsize, l.tmp_size, l.shm_size, l.max_output),
        (MAX_SIZE, MAX_SIZE, MAX_SIZE, MAX_SIZE, MAX_SIZE)
    );
    assert_eq!(
        (l.nofile, l.nproc, l.pids),
        (MAX_NOFILE, Some(MAX_TASKS), MAX_TASKS as i64)
    );
    let l = from_toml("[limits]\nmemory = \"6Mi\"\nfsize = \"1\"\nnofile = 1\npids = 1").unwrap();
    assert_eq!((l.memory, l.fsize, l.nofile, l.pids), (MIN_MEMORY, 1, 1, 1));
}

#[test]
fn no_limit_is_off_by_default() {
    let l = from_toml("").unwrap();
    assert_eq!(l.memory, DEFAULT_MEMORY);
    assert_eq!(l.fsize, DEFAULT_FSIZE);
    assert_eq!(l.pids, DEFAULT_PIDS);
    assert_eq!(l.nofile, DEFAULT_NOFILE);
    // The one unset limit, documented: RLIMIT_NPROC is per UID host-wide; pids bounds tasks.
    assert_eq!(l.nproc, None);
}

/// A size string: digits of any length, sometimes a unit.
fn size_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..(1 << 21)).prop_map(|n| n.to_string()),
            "[0-9]{1,25}",
        ],
        prop::sample::select(vec!["", "B", "K", "Ki", "M", "Mi", "G", "Gi", "T", "Ti"]),
    )
        .prop_map(|(n, u)| format!("{n}{u}"))
}

proptest! {
    /// Whatever size is written, an accepted one is positive, at most MAX_SIZE, and so
    /// never negative as an i64 nor RLIM_INFINITY; memory is also at least MIN_MEMORY.
    #[test]
    fn an_accepted_size_is_a_real_limit(
        memory in size_text(), fsize in size_text(), tmp in size_text(), shm in size_text(),
        out in size_text(),
    ) {
        let doc = format!(
            "[limits]\nmemory = \"{memory}\"\nfsize = \"{fsize}\"\ntmp_size = \"{tmp}\"\n\
             shm_size = \"{shm}\"\nmax_output = \"{out}\""
        );
        match from_toml(&doc) {
            Ok(l) => {
                prop_assert!((MIN_MEMORY..=MAX_SIZE).contains(&l.memory));
                prop_assert!(i64::try_from(l.memory).is_ok_and(|m| m > 0));
                for v in [l.fsize, l.tmp_size, l.shm_size, l.max_output] {
                    prop_assert!((1..=MAX_SIZE).contains(&v), "{} out of range", v);
                }
            }
            Err(e) => prop_assert!(e.starts_with("policy.toml: limits.") && !e.contains('\n'), "{}", e),
        }
    }

    /// Whatever count is written, an accepted one is positive and within its bound.
    #[test]
    fn an_accepted_count_is_a_real_limit(
        nofile in any::<u64>(), nproc in any::<u64>(), pids in any::<i64>(),
    ) {
        // TOML integers are i64: larger ones are a parse error, which is also a refusal.
        let doc = format!("[limits]\nnofile = {nofile}\nnproc = {nproc}\npids = {pids}");
        if let Ok(l) = from_toml(&doc) {
            prop_assert!((1..=MAX_NOFILE).contains(&l.nofile));
            prop_assert!(l.nproc.is_some_and(|n| (1..=MAX_TASKS).contains(&n)));
            prop_assert!((1..=MAX_TASKS as i64).contains(&l.pids));
        }
    }
}

fn disk_policy(toml: &str, o: PolicyOverrides) -> Result<crate::policy::ValidatedPolicy, String> {
    Policy::from_toml(toml, "policy.toml")
        .and_then(|p| p.validate(Some("policy.toml"), &o, &NoFs))
        .map_err(|e| e.to_string())
}

#[test]
fn disk_has_a_default_and_bounds_like_every_size() {
    assert_eq!(from_toml("").unwrap().disk, DEFAULT_DISK);
    assert_eq!(DEFAULT_DISK, 1 << 30);
    // (document, flag, Ok(bytes) or the error's start)
    let cases: &[(&str, Option<&str>, Result<u64, &str>)] = &[
        ("[limits]\ndisk = \"256M\"", None, Ok(256 << 20)),
        ("[limits]\ndisk = \"16Mi\"", None, Ok(16 << 20)),
        ("", Some("2G"), Ok(2 << 30)),
        ("[limits]\ndisk = \"256M\"", Some("512M"), Ok(512 << 20)),
        (
            "[limits]\ndisk = \"0\"",
            None,
            Err("policy.toml: limits.disk: `0` must be greater than zero"),
        ),
        (
            "[limits]\ndisk = \"15Mi\"",
            None,
            Err("policy.toml: limits.disk: `15Mi` is below the minimum of 16Mi"),
        ),
        (
            "[limits]\ndisk = \"18446744073709551615\"",
            None,
            Err("policy.toml: limits.disk: `18446744073709551615` is above the maximum"),
        ),
        ("", Some("-1"), Err("--disk: ")),
        ("", Some("lots"), Err("--disk: ")),
        (
            "",
            Some(U64_MAX),
            Err("--disk: `18446744073709551615` is above"),
        ),
        (
            "",
            Some("1"),
            Err("--disk: `1` is below the minimum of 16Mi"),
        ),
    ];
    for (doc, flag, want) in cases {
        let o = PolicyOverrides {
            disk: flag.map(str::to_string),
            ..Default::default()
        };
        let got = disk_policy(doc, o).map(|p| p.limits.disk);
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(*w, g, "{doc:?} {flag:?}"),
            (Err(w), Err(e)) => {
                assert!(e.starts_with(w), "{doc:?} {flag:?}: got {e:?}, want {w:?}");
                assert!(!e.contains('\n'), "{e:?}");
            }
            (w, g) => panic!("{doc:?} {flag:?}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn a_managed_workspace_fits_in_the_disk_limit() {
    // (document, --disk, --workspace-size, --read-write-root, Ok(workspace) or error start)
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, Option<&str>, Option<&str>, bool, Result<Option<u64>, &str>)] = &[
        ("", None, None, false, Ok(None)),
        ("", Some("256M"), Some("256M"), false, Ok(Some(256 << 20))),
        ("", Some("256M"), Some("240M"), true, Ok(Some(240 << 20))),
        (
            "[filesystem]\nworkspace_size = \"64Mi\"",
            None,
            None,
            false,
            Ok(Some(64 << 20)),
        ),
        (
            "",
            Some("256M"),
            Some("241M"),
            true,
            Err("--workspace-size: `241M` is above the disk limit (256Mi) less the 16Mi"),
        ),
        (
            "",
            Some("256M"),
            Some("1G"),
            false,
            Err("--workspace-size: `1G` is above the disk limit (256Mi); raise --disk"),
        ),
        (
            "",
            None,
            Some("1M"),
            false,
            Err("--workspace-size: `1M` is below the minimum of 16Mi"),
        ),
        ("", None, Some("0"), false, Err("--workspace-size: `0` must be")),
        ("", None, Some(U64_MAX), false, Err("--workspace-size: ")),
        (
            "[filesystem]\nworkspace_size = \"2Gi\"",
            None,
            None,
            false,
            Err("policy.toml: filesystem.workspace_size: `2Gi` is above the disk limit (1Gi); raise policy.toml: limits.disk"),
        ),
    ];
    for (doc, disk, ws, rw, want) in cases {
        let o = PolicyOverrides {
            disk: disk.map(str::to_string),
            workspace_size: ws.map(str::to_string),
            read_write_root: *rw,
            ..Default::default()
        };
        let got = disk_policy(doc, o);
        match (want, got) {
            (Ok(w), Ok(p)) => {
                assert_eq!(*w, p.managed_workspace, "{doc:?} {disk:?} {ws:?}");
                if w.is_some() {
                    assert_eq!(p.cwd, "/workspace");
                }
            }
            (Err(w), Err(e)) => {
                assert!(e.starts_with(w), "{doc:?} {ws:?}: got {e:?}, want {w:?}");
                assert!(!e.contains('\n'), "{e:?}");
            }
            (w, g) => panic!("{doc:?} {disk:?} {ws:?}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn the_disk_limit_is_part_of_the_policy_hash() {
    let a = disk_policy("", PolicyOverrides::default()).unwrap();
    let b = disk_policy(
        "",
        PolicyOverrides {
            disk: Some("256M".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let c = disk_policy(
        "",
        PolicyOverrides {
            disk: Some("256M".into()),
            workspace_size: Some("64M".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(a.hash(), b.hash());
    assert_ne!(b.hash(), c.hash());
}
