//! The exec's process spec: the sandbox's own, with only what an exec may change replaced.

use super::*;
use oci_spec::runtime::{Capability, LinuxCapabilitiesBuilder, ProcessBuilder, UserBuilder};

fn sandbox_process(uid: u32, gid: u32) -> Process {
    let none: std::collections::HashSet<Capability> = Default::default();
    ProcessBuilder::default()
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(vec![gid])
                .build()
                .unwrap(),
        )
        .args(vec!["/.stockade/init".to_string()])
        .env(vec![
            "PATH=/usr/bin:/bin".to_string(),
            "HOME=/tmp".to_string(),
        ])
        .cwd("/workspace")
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(none.clone())
                .effective(none.clone())
                .permitted(none.clone())
                .inheritable(none.clone())
                .ambient(none)
                .build()
                .unwrap(),
        )
        .no_new_privileges(true)
        .apparmor_profile("stockade-default")
        .oom_score_adj(500)
        .build()
        .unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

#[test]
fn an_exec_keeps_every_confinement_of_the_sandbox_and_replaces_only_its_own_fields() {
    let base = sandbox_process(1_900_000_001, 65534);
    let p = process_spec(
        &base,
        &strings(&["sh", "-c", "id"]),
        &strings(&["HOME=/work", "X=1"]),
        Some("/tmp"),
        None,
        Some((101, 33)),
    )
    .unwrap();
    assert_eq!(p.args().as_deref(), Some(&strings(&["sh", "-c", "id"])[..]));
    assert_eq!(p.cwd(), Path::new("/tmp"));
    assert_eq!(p.terminal(), Some(true));
    let size = p.console_size().unwrap();
    assert_eq!((size.width(), size.height()), (101, 33));
    let env = env_map(&p);
    assert_eq!(env["HOME"], "/work", "replaced");
    assert_eq!(env["X"], "1", "added");
    assert_eq!(env["PATH"], "/usr/bin:/bin", "kept");
    assert_eq!(p.env().as_ref().unwrap().len(), 3, "no duplicate HOME");
    // What confines it is the sandbox's, unchanged.
    assert_eq!(p.user(), base.user());
    assert_eq!(p.capabilities(), base.capabilities());
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.apparmor_profile(), base.apparmor_profile());
    assert_eq!(p.oom_score_adj(), Some(500));
    assert_eq!(p.rlimits(), base.rlimits());
}

#[test]
fn user_zero_is_refused_unless_the_sandbox_is_root_and_other_users_drop_extra_groups() {
    let base = sandbox_process(1_900_000_001, 65534);
    let argv = strings(&["id"]);
    for u in ["0", "0:0", "1000:0", "0:1000"] {
        match process_spec(&base, &argv, &[], None, Some(u), None) {
            Err(SandboxError::Invalid {
                field: "user",
                reason,
            }) => {
                assert!(reason.contains("refused"), "{u}: {reason}");
                assert!(!reason.contains('\n'));
            }
            other => panic!("{u}: {other:?}"),
        }
    }
    let p = process_spec(&base, &argv, &[], None, Some("1000"), None).unwrap();
    assert_eq!(
        (p.user().uid(), p.user().gid()),
        (1000, 65534),
        "gid defaults to the sandbox's"
    );
    assert_eq!(p.user().additional_gids(), &None);
    let p = process_spec(&base, &argv, &[], None, Some("1000:1001"), None).unwrap();
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
    for bad in ["root", "1000:", ":1", "-1", "1:2:3"] {
        assert!(
            matches!(
                process_spec(&base, &argv, &[], None, Some(bad), None),
                Err(SandboxError::Invalid { field: "user", .. })
            ),
            "{bad}"
        );
    }
    let root = sandbox_process(0, 0);
    let p = process_spec(&root, &argv, &[], None, Some("0"), None).unwrap();
    assert_eq!(p.user().uid(), 0, "a root sandbox may exec as root");
}

#[test]
fn malformed_requests_are_invalid_input() {
    let base = sandbox_process(65534, 65534);
    /// (argv, env, cwd, the field named)
    type Case<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a str>, &'a str);
    let cases: [Case; 5] = [
        (&[], &[], None, "command"),
        (&[""], &[], None, "command"),
        (&["id"], &["NOEQUALS"], None, "env"),
        (&["id"], &["=v"], None, "env"),
        (&["id"], &[], Some("relative/dir"), "workdir"),
    ];
    for (argv, env, cwd, want) in cases {
        match process_spec(&base, &strings(argv), &strings(env), cwd, None, None) {
            Err(SandboxError::Invalid { field, .. }) => assert_eq!(field, want),
            other => panic!("{argv:?} {env:?} {cwd:?}: {other:?}"),
        }
    }
}
