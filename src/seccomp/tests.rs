//! Unit tests: parse errors name the place at fault, conversion keeps and drops the right
//! rules, and the parser never panics.

use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompOperator};
use proptest::prelude::*;

use super::*;

/// A minimal valid profile around `rules` (a JSON array body).
fn with_rules(rules: &str) -> String {
    format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{rules}]}}"#)
}

struct Case {
    name: &'static str,
    input: String,
    /// The one-line message, exactly.
    want: &'static str,
}

#[test]
fn parse_errors_name_what_and_where() {
    let ok = r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"}"#;
    let cases = [
        Case {
            name: "not json",
            input: "defaultAction: x".into(),
            want: "not JSON: expected value at line 1 column 1",
        },
        Case {
            name: "truncated",
            input: r#"{"defaultAction":"#.into(),
            want: "not JSON: EOF while parsing a value at line 1 column 17",
        },
        Case {
            name: "missing default action",
            input: r#"{"syscalls":[]}"#.into(),
            want: "not a seccomp profile: missing field `defaultAction` at line 1 column 15",
        },
        Case {
            name: "unknown top-level field",
            input: r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAktion":1}"#.into(),
            want: "not a seccomp profile: unknown field `defaultAktion`, expected one of `defaultAction`, `defaultErrnoRet`, `architectures`, `archMap`, `flags`, `listenerPath`, `listenerMetadata`, `syscalls` at line 1 column 49",
        },
        Case {
            name: "unknown default action",
            input: r#"{"defaultAction":"SCMP_ACT_DENY"}"#.into(),
            want: r#"defaultAction: unknown action "SCMP_ACT_DENY""#,
        },
        Case {
            name: "an action name with a line break stays on one line, escaped",
            input: r#"{"defaultAction":"a\nb","syscalls":[]}"#.into(),
            want: r#"defaultAction: unknown action "a\nb""#,
        },
        Case {
            name: "unknown rule action",
            input: with_rules(&format!(r#"{ok},{{"names":["write"],"action":"ALLOW"}}"#)),
            want: r#"syscalls[1].action: unknown action "ALLOW""#,
        },
        Case {
            name: "unknown syscall",
            input: with_rules(&format!(
                r#"{ok},{{"names":["read","write","close","foo"],"action":"SCMP_ACT_ALLOW"}}"#
            )),
            want: r#"syscalls[1].names[3]: unknown syscall "foo""#,
        },
        Case {
            name: "misspelt 32-bit name",
            input: with_rules(r#"{"names":["chown33"],"action":"SCMP_ACT_ALLOW"}"#),
            want: r#"syscalls[0].names[0]: unknown syscall "chown33""#,
        },
        Case {
            name: "misspelt new syscall",
            input: with_rules(r#"{"names":["read","mseal2"],"action":"SCMP_ACT_ALLOW"}"#),
            want: r#"syscalls[0].names[1]: unknown syscall "mseal2""#,
        },
        Case {
            name: "empty names",
            input: with_rules(r#"{"names":[],"action":"SCMP_ACT_ALLOW"}"#),
            want: "syscalls[0].names: no syscall names",
        },
        Case {
            name: "empty name",
            input: with_rules(r#"{"names":["read",""],"action":"SCMP_ACT_ALLOW"}"#),
            want: "syscalls[0].names[1]: empty syscall name",
        },
        Case {
            name: "bad operator",
            input: with_rules(
                r#"{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":1,"op":"=="}]}"#,
            ),
            want: r#"syscalls[0].args[1].op: unknown operator "==""#,
        },
        Case {
            name: "argument index out of range",
            input: with_rules(
                r#"{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}"#,
            ),
            want: "syscalls[0].args[0].index: 6 is not an argument index (0 to 5)",
        },
        Case {
            name: "valueTwo without masked eq",
            input: with_rules(
                r#"{"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"valueTwo":3,"op":"SCMP_CMP_EQ"}]}"#,
            ),
            want: "syscalls[0].args[0].valueTwo: only meaningful with SCMP_CMP_MASKED_EQ",
        },
        Case {
            name: "unknown rule field",
            input: with_rules(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","arg":[]}"#),
            want: "not a seccomp profile: unknown field `arg`, expected one of `names`, `name`, `action`, `errnoRet`, `args`, `comment`, `includes`, `excludes` at line 1 column 95",
        },
        Case {
            name: "errnoRet on allow",
            input: with_rules(r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","errnoRet":1}"#),
            want: "syscalls[0].errnoRet: only meaningful with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
        },
        Case {
            name: "unknown include arch",
            input: with_rules(
                r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["i686"]}}"#,
            ),
            want: r#"syscalls[0].includes.arches[0]: unknown architecture "i686""#,
        },
        Case {
            name: "bad capability",
            input: with_rules(
                r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["sys_admin"]}}"#,
            ),
            want: r#"syscalls[0].excludes.caps[0]: not a capability name: "sys_admin""#,
        },
        Case {
            name: "bad kernel version",
            input: with_rules(
                r#"{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"four"}}"#,
            ),
            want: r#"syscalls[0].includes.minKernel: not a kernel version: "four""#,
        },
        Case {
            name: "unknown archMap architecture",
            input: r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_I386"]}]}"#.into(),
            want: r#"archMap[0].subArchitectures[0]: unknown architecture "SCMP_ARCH_I386""#,
        },
        Case {
            name: "architecture with a line break stays on one line",
            input: r#"{"architectures":["a\nb"],"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#.into(),
            want: r#"architectures[0]: unknown architecture "a\nb""#,
        },
        Case {
            name: "syscall name with a line break stays on one line",
            input: with_rules(r#"{"names":["re\nad"],"action":"SCMP_ACT_ALLOW"}"#),
            want: r#"syscalls[0].names[0]: unknown syscall "re\nad""#,
        },
        Case {
            name: "unknown flag",
            input: r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_FAST"]}"#.into(),
            want: r#"flags[0]: unknown flag "SECCOMP_FILTER_FLAG_FAST""#,
        },
        Case {
            name: "notify without listener",
            input: with_rules(r#"{"names":["read"],"action":"SCMP_ACT_NOTIFY"}"#),
            want: "listenerPath: required when an action is SCMP_ACT_NOTIFY",
        },
        Case {
            name: "defaultErrnoRet with allow",
            input: r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#.into(),
            want: "defaultErrnoRet: only meaningful with defaultAction SCMP_ACT_ERRNO",
        },
    ];
    for c in cases {
        let got = Profile::parse(&c.input)
            .and_then(|p| p.to_oci().map(|_| ()))
            .expect_err(c.name)
            .to_string();
        assert_eq!(got, c.want, "case {:?}", c.name);
        assert!(
            !got.contains('\n'),
            "case {:?}: message is one line",
            c.name
        );
    }
}

#[test]
fn rule_limited_to_one_arch_must_not_name_a_syscall_of_the_other() {
    let p = Profile::parse(&with_rules(
        r#"{"names":["arch_prctl","read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64"]}}"#,
    ))
    .unwrap();
    let e = p.to_oci().unwrap_err().to_string();
    assert_eq!(
        e,
        "syscalls[0]: rule is limited to x86_64 but \"read\" is also a syscall on aarch64; \
         the OCI form cannot limit a rule to one architecture"
    );
}

#[test]
fn other_arch_names_are_accepted_and_left_out_of_the_filter() {
    let p = Profile::parse(&with_rules(
        r#"{"names":["read","chown32","mmap2"],"action":"SCMP_ACT_ALLOW"},
           {"names":["chown32","fchown32"],"action":"SCMP_ACT_ALLOW"},
           {"names":["arch_prctl"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm64"]}},
           {"names":["arm_fadvise64_64","set_tls"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm","arm64"]}}"#,
    ))
    .unwrap();
    let oci = p.to_oci().unwrap();
    let rules = oci.syscalls().clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].names(), &["read".to_string()]);
    let dropped: Vec<(usize, String)> = p
        .dropped_rules(None)
        .unwrap()
        .into_iter()
        .map(|d| (d.index, d.reason))
        .collect();
    assert_eq!(
        dropped,
        [
            (1, "names no syscall of x86_64 or aarch64".to_string()),
            // arch_prctl exists on x86_64 only; the rule applies on aarch64 only.
            (2, "names no syscall of aarch64".to_string()),
            (3, "names no syscall of aarch64".to_string()),
        ]
    );
    let notes = p.name_notes();
    assert_eq!(
        notes.other_arches,
        [
            "arm_fadvise64_64",
            "chown32",
            "fchown32",
            "mmap2",
            "set_tls"
        ]
    );
    assert!(notes.too_new.is_empty());
    assert!(p.warnings().is_empty());
    let text = p.summary().unwrap().to_string();
    assert!(
        text.contains(
            "names not on the target arches (no effect on x86_64 or aarch64): 5\n  \
             arm_fadvise64_64 chown32 fchown32 mmap2 set_tls\n"
        ),
        "{text}"
    );
    for arch in TARGET_ARCHES {
        compile(&oci, arch).unwrap();
    }
}

/// A name from [`NEWER_SYSCALLS`] that the installed libseccomp does not know, if any.
fn unknown_newer_syscall() -> Option<NewerSyscall> {
    NEWER_SYSCALLS
        .iter()
        .copied()
        .find(|n| n.only_on.is_none() && classify(n.name) == NameClass::Newer(*n))
}

#[test]
fn calls_too_new_for_libseccomp_are_accepted_with_a_warning_and_get_the_default_action() {
    let Some(new) = unknown_newer_syscall() else {
        eprintln!(
            "skipped: libseccomp {} knows every call in NEWER_SYSCALLS",
            libseccomp_version()
        );
        return;
    };
    let p = Profile::parse(&with_rules(&format!(
        r#"{{"names":["read","{0}"],"action":"SCMP_ACT_ALLOW"}},
           {{"names":["{0}"],"action":"SCMP_ACT_ERRNO","errnoRet":38}}"#,
        new.name
    )))
    .unwrap();
    let oci = p.to_oci().unwrap();
    let names: Vec<String> = oci
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|r| r.names().clone())
        .collect();
    assert_eq!(names, ["read"], "left out of every rule");
    assert_eq!(
        p.warnings(),
        [format!(
            "syscalls[0].names[1]: \"{}\" (Linux {}) is not known to libseccomp {}; \
             calls get the default action",
            new.name,
            new.since,
            libseccomp_version()
        )]
    );
    let notes = p.name_notes();
    assert_eq!(notes.too_new.len(), 1);
    assert!(notes.other_arches.is_empty());
    let text = p.summary().unwrap().to_string();
    assert!(text.contains("names too new for libseccomp"), "{text}");
    // The compiled filter is the same as without the name: the call gets the default.
    let without = Profile::parse(&with_rules(
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"}"#,
    ))
    .unwrap()
    .to_oci()
    .unwrap();
    for arch in TARGET_ARCHES {
        let bpf = |f: &oci_spec::runtime::LinuxSeccomp| {
            let mut file = tempfile::tempfile().unwrap();
            export_bpf(f, arch, &file).unwrap();
            use std::io::{Read, Seek};
            file.rewind().unwrap();
            let mut v = Vec::new();
            file.read_to_end(&mut v).unwrap();
            v
        };
        assert_eq!(bpf(&oci), bpf(&without), "{arch}");
        // compile() skips such a name even in an OCI section it did not produce.
        let raw = oci_spec::runtime::LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .architectures(vec![arch.oci()])
            .syscalls(vec![oci_spec::runtime::LinuxSyscallBuilder::default()
                .names(vec![new.name.to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        compile(&raw, arch).unwrap();
    }
}

#[test]
fn conversion_keeps_args_errno_and_emits_only_64_bit_arches() {
    let p = Profile::parse(&with_rules(
        r#"{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
           {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
           {"names":["arch_prctl"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","x32"]}}"#,
    ))
    .unwrap();
    let oci = p.to_oci().unwrap();
    assert_eq!(oci.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert_eq!(
        oci.architectures().as_deref(),
        Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchAarch64][..])
    );
    let rules = oci.syscalls().clone().unwrap();
    assert_eq!(rules.len(), 3);
    let arg = rules[0].args().as_ref().unwrap()[0];
    assert_eq!(arg.index(), 0);
    assert_eq!(arg.value(), 0x7E02_0000);
    assert_eq!(arg.value_two(), Some(0));
    assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
    assert_eq!(rules[1].errno_ret(), Some(38));
    assert_eq!(rules[2].names(), &["arch_prctl".to_string()]);
}

#[test]
fn conversion_drops_cap_gated_foreign_arch_redundant_and_new_kernel_rules() {
    let p = Profile::parse(&with_rules(
        r#"{"names":["read"],"action":"SCMP_ACT_ALLOW"},
           {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
           {"names":["s390_runtime_instr"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}},
           {"names":["ptrace"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
           {"names":["bpf"],"action":"SCMP_ACT_ERRNO"},
           {"names":["getpid"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"],"minKernel":"6.0"}}"#,
    ))
    .unwrap();
    let kept = |oci: &oci_spec::runtime::LinuxSeccomp| -> Vec<String> {
        oci.syscalls()
            .iter()
            .flatten()
            .flat_map(|r| r.names().clone())
            .collect()
    };
    // Kernel unknown: the minKernel widening stays out; excludes.minKernel does not apply.
    assert_eq!(kept(&p.to_oci().unwrap()), ["read", "getpid"]);
    let dropped: Vec<usize> = p
        .dropped_rules(None)
        .unwrap()
        .iter()
        .map(|d| d.index)
        .collect();
    assert_eq!(dropped, [1, 2, 3, 4]);
    let new = KernelVersion::parse("6.1.0-18-amd64").unwrap();
    assert_eq!(
        kept(&p.to_oci_for_kernel(Some(new)).unwrap()),
        ["read", "ptrace"]
    );
    let old = KernelVersion::parse("4.4").unwrap();
    assert_eq!(
        kept(&p.to_oci_for_kernel(Some(old)).unwrap()),
        ["read", "getpid"]
    );
}

#[test]
fn kernel_versions_parse_and_order() {
    let v = |s| KernelVersion::parse(s);
    assert_eq!(
        v("5.10"),
        Some(KernelVersion {
            major: 5,
            minor: 10,
            patch: 0
        })
    );
    assert!(v("4.8").unwrap() < v("4.10").unwrap());
    assert!(v("6.18.44-fc").unwrap() > v("6.18.3").unwrap());
    for bad in ["", "4", "x.y", "4.", ".8", "4.8.x"] {
        assert_eq!(v(bad), None, "{bad:?}");
    }
}

#[test]
fn builtin_profiles_parse_convert_and_compile() {
    for name in BUILTIN_PROFILES {
        let text = builtin_profile(name).unwrap();
        let p = Profile::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let oci = p.to_oci().unwrap();
        for arch in TARGET_ARCHES {
            compile(&oci, arch).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let s = p.summary().unwrap();
        assert!(
            s.allowed.iter().all(|c| c.unconditional > 100),
            "{name}: {s}"
        );
    }
    assert!(builtin_profile("docker").is_none());
}

#[test]
fn summary_counts_and_lists_conditions() {
    let p = Profile::parse(&with_rules(
        r#"{"names":["read","write","open"],"action":"SCMP_ACT_ALLOW"},
           {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
           {"names":["write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]}"#,
    ))
    .unwrap();
    let s = p.summary().unwrap();
    // open(2) does not exist on aarch64.
    assert_eq!(
        s.allowed,
        [
            ArchCount {
                arch: TargetArch::X86_64,
                unconditional: 3,
                conditional_only: 1
            },
            ArchCount {
                arch: TargetArch::Aarch64,
                unconditional: 2,
                conditional_only: 1
            }
        ]
    );
    assert_eq!(
        s.conditional_rules,
        [
            "syscalls[1] SCMP_ACT_ALLOW socket: arg0 == 1",
            "syscalls[2] SCMP_ACT_ALLOW write: arg0 == 2"
        ]
    );
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = Profile::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_profile_shaped_json(
        default in prop::sample::select(vec!["SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "SCMP_ACT_KILL", "X", ""]),
        names in prop::collection::vec(prop::sample::select(vec!["read", "clone", "", "foo", "chown32", "arch_prctl", "open"]), 0..4),
        action in prop::sample::select(vec!["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_NOTIFY", "nope"]),
        index in 0u64..9,
        value in any::<u64>(),
        value_two in prop::sample::select(vec![0u64, 1, u64::MAX]),
        op in prop::sample::select(vec!["SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_GT", "?"]),
        arches in prop::collection::vec(prop::sample::select(vec!["amd64", "arm64", "s390x", "i686"]), 0..3),
        errno in prop::option::of(any::<u32>()),
        min_kernel in prop::option::of(prop::sample::select(vec!["4.8", "x", "99.0"])),
    ) {
        let mut rule = serde_json::json!({
            "names": names, "action": action,
            "args": [{"index": index, "value": value, "valueTwo": value_two, "op": op}],
            "includes": {"arches": arches},
        });
        if let Some(e) = errno { rule["errnoRet"] = e.into(); }
        if let Some(k) = min_kernel { rule["includes"]["minKernel"] = k.into(); }
        let doc = serde_json::json!({"defaultAction": default, "syscalls": [rule]});
        if let Ok(p) = Profile::parse(&doc.to_string()) {
            if let Ok(oci) = p.to_oci() {
                let _ = p.summary();
                for arch in TARGET_ARCHES {
                    let _ = compile(&oci, arch);
                }
            }
        }
    }
}
