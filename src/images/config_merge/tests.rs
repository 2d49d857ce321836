//! The merge rules as tables: each row is an image config, what the caller gave, and the
//! process the validated policy ends up with.

use super::*;
use crate::policy::{HostPolicyEnv, TmpfsMount};

/// Stockade's default sandbox user (`nobody`).
const NOBODY: &str = "65534:65534";

fn v(words: &[&str]) -> Vec<String> {
    words.iter().map(ToString::to_string).collect()
}

/// An image like a Dockerfile build leaves: ENTRYPOINT, CMD, ENV, WORKDIR, USER.
fn app() -> ImageConfig {
    ImageConfig {
        env: v(&["PATH=/app/bin:/usr/bin:/bin", "APP=1", "MODE=image"]),
        entrypoint: v(&["/bin/echo", "entry"]),
        cmd: v(&["default-arg"]),
        working_dir: "/app".into(),
        user: "1000:1000".into(),
    }
}

fn given(command: &[&str], entrypoint: Option<&[&str]>) -> Requested {
    Requested {
        command: v(command),
        entrypoint: entrypoint.map(v),
    }
}

/// What a row says, the image, what was given, and the command (or the error) it makes.
type CommandCase = (
    &'static str,
    ImageConfig,
    Requested,
    Result<Vec<&'static str>, MergeError>,
);

#[test]
fn the_command_follows_dockers_rules() {
    let cmd_only = ImageConfig {
        cmd: v(&["/bin/sh"]),
        ..ImageConfig::default()
    };
    let entry_only = ImageConfig {
        entrypoint: v(&["/entry"]),
        ..ImageConfig::default()
    };
    #[rustfmt::skip]
    let cases: &[CommandCase] = &[
        ("nothing given: ENTRYPOINT then CMD", app(), given(&[], None), Ok(vec!["/bin/echo", "entry", "default-arg"])),
        ("a command replaces CMD, keeps ENTRYPOINT", app(), given(&["x", "y"], None), Ok(vec!["/bin/echo", "entry", "x", "y"])),
        ("--entrypoint replaces ENTRYPOINT and drops CMD", app(), given(&[], Some(&["/bin/true"])), Ok(vec!["/bin/true"])),
        ("--entrypoint and a command", app(), given(&["-c", "id"], Some(&["/bin/sh"])), Ok(vec!["/bin/sh", "-c", "id"])),
        ("--entrypoint \"\" clears ENTRYPOINT: the command runs alone", app(), given(&["pwd"], Some(&[""])), Ok(vec!["pwd"])),
        ("an image with CMD only", cmd_only.clone(), given(&[], None), Ok(vec!["/bin/sh"])),
        ("a command replaces the CMD-only image's", cmd_only, given(&["ls"], None), Ok(vec!["ls"])),
        ("an image with ENTRYPOINT only", entry_only, given(&["a"], None), Ok(vec!["/entry", "a"])),
        ("a command, an empty image", ImageConfig::default(), given(&["ls"], None), Ok(vec!["ls"])),
        ("nothing anywhere", ImageConfig::default(), given(&[], None), Err(MergeError::NoCommand)),
        ("--entrypoint \"\" and no command", app(), given(&[], Some(&[""])), Err(MergeError::NoCommand)),
        ("an empty first word", ImageConfig::default(), given(&["", "x"], None), Err(MergeError::NoCommand)),
    ];
    let policy = Policy::default();
    let o = PolicyOverrides::default();
    for (what, image, req, want) in cases {
        let got = merge("app", image, req, &policy, &o).map(|m| m.argv);
        let want = want.clone().map(|w| v(&w));
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn no_command_is_one_line_naming_both_ways_out() {
    let e = merge(
        "x",
        &ImageConfig::default(),
        &Requested::default(),
        &Policy::default(),
        &PolicyOverrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no command: give one after -- or use an image with CMD/ENTRYPOINT"
    );
}

/// The process a merged policy validates to: env, cwd, user and the warnings.
fn process(
    image: &ImageConfig,
    policy: &Policy,
    o: &PolicyOverrides,
) -> (Vec<String>, String, String, Vec<String>) {
    let m = merge_process("app", image, policy, o).unwrap();
    let p = m.policy.validate(None, o, &HostPolicyEnv).unwrap();
    (
        p.env,
        p.cwd,
        format!("{}:{}", p.user.uid, p.user.gid),
        m.warnings,
    )
}

fn policy_env(env: &[&str]) -> Policy {
    let mut p = Policy::default();
    p.process.env = Some(v(env));
    p
}

#[test]
fn env_is_defaults_then_image_then_policy_then_flags() {
    let flags = PolicyOverrides {
        env: v(&["MODE=flag", "FLAG=1"]),
        ..PolicyOverrides::default()
    };
    let cases: &[(&str, Policy, PolicyOverrides, &[&str])] = &[
        (
            "the image's over the defaults",
            Policy::default(),
            PolicyOverrides::default(),
            &[
                "HOME=/tmp",
                "PATH=/app/bin:/usr/bin:/bin",
                "APP=1",
                "MODE=image",
            ],
        ),
        (
            "the policy's over the image's",
            policy_env(&["MODE=policy"]),
            PolicyOverrides::default(),
            &[
                "HOME=/tmp",
                "PATH=/app/bin:/usr/bin:/bin",
                "APP=1",
                "MODE=policy",
            ],
        ),
        (
            "flags over both",
            policy_env(&["MODE=policy"]),
            flags,
            &[
                "HOME=/tmp",
                "PATH=/app/bin:/usr/bin:/bin",
                "APP=1",
                "MODE=flag",
                "FLAG=1",
            ],
        ),
    ];
    for (what, policy, o, want) in cases {
        let (env, ..) = process(&app(), policy, o);
        assert_eq!(env, v(want), "{what}");
    }
}

#[test]
fn image_env_stockade_cannot_carry_is_skipped_with_a_warning() {
    let image = ImageConfig {
        env: v(&["GOOD=1", "dotted.name=x", "NOEQUALS"]),
        ..ImageConfig::default()
    };
    let (env, _, _, warnings) = process(&image, &Policy::default(), &PolicyOverrides::default());
    assert!(env.contains(&"GOOD=1".to_string()), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("dotted")), "{env:?}");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("image `app`: ENV `dotted.name=x` skipped"));
}

fn with_cwd(cwd: &str) -> Policy {
    let mut p = Policy::default();
    p.process.cwd = Some(cwd.into());
    p
}

fn tmpfs_at(dest: &str) -> PolicyOverrides {
    PolicyOverrides {
        tmpfs: vec![TmpfsMount::parse(dest).unwrap()],
        ..PolicyOverrides::default()
    }
}

fn workdir(dir: &str) -> ImageConfig {
    ImageConfig {
        working_dir: dir.into(),
        ..ImageConfig::default()
    }
}

#[test]
fn cwd_is_explicit_then_image_then_policy_default() {
    let flag = PolicyOverrides {
        cwd: Some("/flag".into()),
        ..PolicyOverrides::default()
    };
    let none = PolicyOverrides::default();
    let cases: &[(&str, ImageConfig, Policy, PolicyOverrides, &str)] = &[
        (
            "the image's WORKDIR",
            workdir("/app"),
            Policy::default(),
            none.clone(),
            "/app",
        ),
        (
            "a trailing slash",
            workdir("/app/"),
            Policy::default(),
            none.clone(),
            "/app",
        ),
        (
            "WORKDIR /",
            workdir("/"),
            Policy::default(),
            none.clone(),
            "/",
        ),
        (
            "-w over the image",
            workdir("/app"),
            Policy::default(),
            flag.clone(),
            "/flag",
        ),
        (
            "the policy's cwd over the image",
            workdir("/app"),
            with_cwd("/pol"),
            none.clone(),
            "/pol",
        ),
        (
            "-w over the policy",
            workdir("/app"),
            with_cwd("/pol"),
            flag,
            "/flag",
        ),
        (
            "no WORKDIR: the policy default",
            workdir(""),
            Policy::default(),
            none.clone(),
            "/tmp",
        ),
        (
            "WORKDIR /workspace with nothing mounted there: the policy default (built-in images)",
            workdir("/workspace"),
            Policy::default(),
            none,
            "/tmp",
        ),
        (
            "WORKDIR /workspace with a mount there",
            workdir("/workspace"),
            Policy::default(),
            tmpfs_at("/workspace"),
            "/workspace",
        ),
    ];
    for (what, image, policy, o, want) in cases {
        let (_, cwd, ..) = process(image, policy, o);
        assert_eq!(cwd, *want, "{what}");
    }
}

#[test]
fn a_workdir_with_dot_dot_or_relative_is_refused_naming_the_image() {
    for dir in ["app", "/app/../etc", "../x"] {
        let e = merge_process(
            "app",
            &workdir(dir),
            &Policy::default(),
            &PolicyOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("image `app`: WorkingDir `{dir}` must be an absolute path without `..`")
        );
    }
}

fn user(u: &str) -> ImageConfig {
    ImageConfig {
        user: u.into(),
        ..ImageConfig::default()
    }
}

#[test]
fn an_image_user_is_granted_only_when_numeric_and_not_root() {
    let default = NOBODY.to_string();
    let flag = |u: &str| PolicyOverrides {
        user: Some(u.into()),
        ..PolicyOverrides::default()
    };
    let mut policy_user = Policy::default();
    policy_user.process.user = Some("2000:2000".into());
    let none = PolicyOverrides::default();
    let cases: &[(&str, &str, Policy, PolicyOverrides, &str, bool)] = &[
        (
            "numeric UID:GID",
            "1000:1000",
            Policy::default(),
            none.clone(),
            "1000:1000",
            false,
        ),
        (
            "numeric UID alone",
            "1000",
            Policy::default(),
            none.clone(),
            "1000:1000",
            false,
        ),
        (
            "no USER",
            "",
            Policy::default(),
            none.clone(),
            &default,
            false,
        ),
        (
            "root by name",
            "root",
            Policy::default(),
            none.clone(),
            &default,
            true,
        ),
        (
            "root by number",
            "0",
            Policy::default(),
            none.clone(),
            &default,
            true,
        ),
        (
            "root's group",
            "1000:0",
            Policy::default(),
            none.clone(),
            &default,
            true,
        ),
        (
            "a user name",
            "node",
            Policy::default(),
            none.clone(),
            &default,
            true,
        ),
        (
            "a name and group",
            "app:app",
            Policy::default(),
            none.clone(),
            &default,
            true,
        ),
        (
            "(uid_t)-1",
            "4294967295",
            Policy::default(),
            none.clone(),
            &default,
            true,
        ),
        (
            "--user over the image",
            "1000",
            Policy::default(),
            flag("3000:3000"),
            "3000:3000",
            false,
        ),
        (
            "--user root over the image, explicitly",
            "1000",
            Policy::default(),
            flag("0"),
            "0:0",
            false,
        ),
        (
            "the policy's user over the image",
            "1000",
            policy_user.clone(),
            none.clone(),
            "2000:2000",
            false,
        ),
        (
            "the policy's user over a root image, no warning",
            "root",
            policy_user,
            none,
            "2000:2000",
            false,
        ),
    ];
    for (what, image_user, policy, o, want, warned) in cases {
        let (_, _, got, warnings) = process(&user(image_user), policy, o);
        assert_eq!(got, *want, "{what}");
        assert_eq!(!warnings.is_empty(), *warned, "{what}: {warnings:?}");
    }
}

#[test]
fn an_image_never_makes_the_sandbox_root() {
    // The attack: an image that says USER root (or 0, or 0:0) and nothing else.
    for u in ["root", "0", "0:0", "00", "root:root", "0:1000"] {
        let (_, _, got, warnings) =
            process(&user(u), &Policy::default(), &PolicyOverrides::default());
        assert_eq!(got, NOBODY, "USER {u}");
        assert_eq!(
            warnings,
            vec![format!("image `app`: USER `{u}` not granted (only a numeric UID[:GID] other than 0 is); running as the default sandbox user, choose one with --user")]
        );
    }
}

#[test]
fn an_empty_image_config_changes_nothing() {
    let policy = Policy::default();
    let o = PolicyOverrides::default();
    let m = merge_process("x", &ImageConfig::default(), &policy, &o).unwrap();
    assert_eq!(m.policy, policy);
    assert!(m.warnings.is_empty());
}

#[test]
fn the_built_in_images_keep_the_policy_defaults() {
    // What `rootfs/busybox.toml` declares: the default PATH and HOME, CMD /bin/sh, WORKDIR
    // /workspace, no USER. `stockade run -- pwd` stays in /tmp as nobody.
    let busybox = ImageConfig {
        env: v(&[
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/tmp",
        ]),
        cmd: v(&["/bin/sh"]),
        working_dir: "/workspace".into(),
        ..ImageConfig::default()
    };
    let o = PolicyOverrides::default();
    let plain = Policy::default()
        .validate(None, &o, &HostPolicyEnv)
        .unwrap();
    let m = merge(
        "stockade/busybox",
        &busybox,
        &given(&["pwd"], None),
        &Policy::default(),
        &o,
    )
    .unwrap();
    let merged = m.policy.validate(None, &o, &HostPolicyEnv).unwrap();
    assert_eq!(m.argv, v(&["pwd"]));
    assert_eq!(
        (&merged.env, &merged.cwd, merged.user),
        (&plain.env, &plain.cwd, plain.user)
    );
}
