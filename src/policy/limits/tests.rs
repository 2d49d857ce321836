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
