use std::path::{Path, PathBuf};

use super::*;
use crate::policy::{BindError, Policy, PolicyOverrides, ValidatedPolicy};

/// Directories that exist, each its own canonical path; bind roots are the defaults.
struct Dirs(&'static [&'static str]);

impl PolicyEnv for Dirs {
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }
    fn bind_dir(&self, path: &Path) -> Result<HostDir, BindError> {
        match self.0.iter().position(|d| Path::new(d) == path) {
            Some(i) => Ok(HostDir {
                path: path.to_path_buf(),
                dev: 8,
                ino: 100 + i as u64,
            }),
            None => Err(BindError::Resolve {
                path: path.to_path_buf(),
                reason: "no such directory".into(),
            }),
        }
    }
}

const DIRS: Dirs = Dirs(&["/srv/a", "/srv/b", "/srv/w", "/etc", "/opt/x", "/srv"]);

fn flags(v: &[&str], tmpfs: &[&str]) -> Result<ValidatedPolicy, String> {
    let mounts = v
        .iter()
        .map(|s| BindMount::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let tmpfs = tmpfs
        .iter()
        .map(|s| TmpfsMount::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                mounts,
                tmpfs,
                ..Default::default()
            },
            &DIRS,
        )
        .map_err(|e| e.to_string())
}

#[test]
fn bind_flags_parse_as_docker_writes_them() {
    struct Case {
        input: &'static str,
        want: Result<(&'static str, &'static str, bool), &'static str>,
    }
    let cases = [
        Case {
            input: "/srv/a:/data",
            want: Ok(("/srv/a", "/data", false)),
        },
        Case {
            input: "/srv/a:/data:ro",
            want: Ok(("/srv/a", "/data", true)),
        },
        Case {
            input: "/srv/a:/data:rw",
            want: Ok(("/srv/a", "/data", false)),
        },
        Case {
            input: "data:/data",
            want: Err("named volumes are not supported"),
        },
        Case {
            input: "./a:/data",
            want: Err("must be absolute"),
        },
        Case {
            input: "/srv/a",
            want: Err("is not HOST:CONTAINER"),
        },
        Case {
            input: "/srv/a:/d:ro:x",
            want: Err("is not HOST:CONTAINER"),
        },
        Case {
            input: "/srv/a:/d:z",
            want: Err("`z` is not supported"),
        },
        Case {
            input: "/srv/a:/d:shared",
            want: Err("`shared` is not supported"),
        },
        Case {
            input: "/srv/a:/d:ro,rw",
            want: Err("both ro and rw"),
        },
    ];
    for c in cases {
        let got = BindMount::parse(c.input);
        match (got, c.want) {
            (Ok(m), Ok((src, dst, ro))) => {
                assert_eq!(
                    (m.source.as_path(), m.destination.as_str(), m.read_only),
                    (Path::new(src), dst, ro),
                    "{}",
                    c.input
                );
            }
            (Err(e), Err(want)) => assert!(e.contains(want), "{}: {e}", c.input),
            (got, want) => panic!("{}: got {got:?}, want {want:?}", c.input),
        }
    }
}

#[test]
fn tmpfs_flags_parse_and_refuse_what_would_loosen_them() {
    let t = TmpfsMount::parse("/cache:size=128m,mode=0700,exec,nosuid").unwrap();
    assert_eq!(t.destination, "/cache");
    assert_eq!(t.size.as_deref(), Some("128m"));
    assert_eq!(t.mode.as_deref(), Some("0700"));
    assert_eq!(t.exec, Some(true));
    assert_eq!(TmpfsMount::parse("/c").unwrap().exec, None);
    for bad in ["/c:suid", "/c:dev", "/c:ro", "/c:uid=0", "/c:size"] {
        let e = TmpfsMount::parse(bad).unwrap_err();
        assert!(e.contains("is not supported"), "{bad}: {e}");
    }
}

#[test]
fn hostile_and_mistaken_mounts_are_refused_in_one_line_naming_the_flag() {
    // (binds, tmpfs, what the error says)
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&["/srv/a:data"], &[], "`data` must be an absolute path"),
        (&["/srv/a:/data/../etc"], &[], "must be normalised"),
        (&["/srv/a:/data/."], &[], "must be normalised"),
        (&["/srv/a:/data//x"], &[], "must be normalised"),
        (&["/srv/a:/data/"], &[], "must be normalised"),
        (&["/srv/a:/"], &[], "would hide the image's whole root"),
        (&["/srv/a:/proc"], &[], "`/proc` is reserved"),
        (&["/srv/a:/proc/sys/kernel"], &[], "is reserved"),
        (&["/srv/a:/sys/fs/cgroup"], &[], "is reserved"),
        (&["/srv/a:/dev/shm"], &[], "is reserved"),
        (&["/srv/a:/.stockade/init"], &[], "is reserved"),
        (&["/srv/a:/tmp"], &[], "limits.tmp_size"),
        (&[], &["/proc"], "is reserved"),
        (&[], &["relative"], "must be an absolute path"),
        (
            &["/srv/a:/data", "/srv/b:/data"],
            &[],
            "`/data` is already mounted",
        ),
        (&["/srv/a:/data"], &["/data"], "`/data` is already mounted"),
        (
            &["/srv/a:/workspace", "/srv/b:/workspace"],
            &[],
            "`/workspace` is already mounted",
        ),
        // Sources: checked as --workspace is.
        (&["/srv/../etc:/data"], &[], "`..` is not allowed"),
        (&["/etc:/data"], &[], "protected host path"),
        (&["/srv:/data"], &[], "not beneath an allowed bind root"),
        (&["/opt/x:/data"], &[], "not beneath an allowed bind root"),
        (&["/srv/nope:/data"], &[], "no such directory"),
        (&[], &["/c:size=0"], "greater than zero"),
        (&[], &["/c:size=2048Ti"], "above the maximum"),
        (&[], &["/c:mode=999"], "not an octal mode"),
        (&[], &["/c:mode=17777"], "not an octal mode"),
    ];
    for (binds, tmpfs, want) in cases {
        let e = match flags(binds, tmpfs) {
            Ok(_) => panic!("{binds:?} {tmpfs:?}: accepted"),
            Err(e) => e,
        };
        assert!(e.contains(want), "{binds:?} {tmpfs:?}: {e}");
        assert!(!e.contains('\n'), "{e}");
        let flag = if tmpfs.is_empty() {
            "-v: "
        } else {
            "--tmpfs: "
        };
        assert!(e.starts_with(flag), "{binds:?} {tmpfs:?}: {e}");
    }
}

#[test]
fn dotdot_in_a_source_is_refused_by_the_host_env_too() {
    let m = BindMount::parse("/tmp/../etc:/data").unwrap();
    let e = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                mounts: vec![m],
                ..Default::default()
            },
            &crate::policy::HostPolicyEnv,
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("-v: ") && e.contains("`..`"), "{e}");
}

#[test]
fn a_symlinked_source_is_refused_even_beneath_a_root() {
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let real = t.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let validate = |src: &Path| {
        Policy::default().validate(
            None,
            &PolicyOverrides {
                mounts: vec![BindMount {
                    source: src.to_path_buf(),
                    destination: "/data".into(),
                    read_only: false,
                }],
                ..Default::default()
            },
            &crate::policy::HostPolicyEnv,
        )
    };
    let e = validate(&link).unwrap_err().to_string();
    assert!(e.contains("symbolic link"), "{e}");
    let e = validate(&link.join("x")).unwrap_err().to_string();
    assert!(e.contains("symbolic link") || e.contains("no such"), "{e}");
    let ok = validate(&real).unwrap();
    assert_eq!(ok.binds[0].source.path, real);
}

#[test]
fn binds_and_tmpfs_validate_to_what_was_asked_with_safe_defaults() {
    let p = flags(
        &["/srv/a:/data:ro", "/srv/b:/data/out"],
        &["/cache", "/build:size=1g,mode=755,exec"],
    )
    .unwrap();
    assert_eq!(p.binds.len(), 2);
    assert_eq!(p.binds[0].destination, "/data");
    assert!(p.binds[0].read_only);
    assert_eq!(p.binds[0].source.path, PathBuf::from("/srv/a"));
    assert!(!p.binds[1].read_only);
    assert_eq!(
        p.tmpfs[0],
        Tmpfs {
            destination: "/cache".into(),
            size: DEFAULT_TMPFS_SIZE,
            mode: 0o1777,
            exec: false,
        }
    );
    assert_eq!((p.tmpfs[1].size, p.tmpfs[1].mode), (1 << 30, 0o755));
    assert!(p.tmpfs[1].exec);
    assert_ne!(p.hash(), flags(&[], &[]).unwrap().hash());
}

#[test]
fn workspace_and_input_binds_are_the_shorthands_exactly() {
    let long = flags(&["/srv/w:/workspace", "/srv/a:/input:ro"], &[]).unwrap();
    let short = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                workspace: Some("/srv/w".into()),
                input: Some("/srv/a".into()),
                ..Default::default()
            },
            &DIRS,
        )
        .unwrap();
    assert_eq!(long, short);
    assert_eq!(long.cwd, "/workspace");
    assert!(long.binds.is_empty());
    // Read-only at /workspace is an ordinary bind.
    let ro = flags(&["/srv/w:/workspace:ro"], &[]).unwrap();
    assert!(ro.workspace.is_none() && ro.binds.len() == 1);
    // And a shorthand plus the same destination is a duplicate.
    let e = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                workspace: Some("/srv/w".into()),
                mounts: vec![BindMount::parse("/srv/a:/workspace").unwrap()],
                ..Default::default()
            },
            &DIRS,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("`/workspace` is already mounted"), "{e}");
}

#[test]
fn the_policy_file_takes_the_same_mounts_and_names_the_entry_at_fault() {
    let text = r#"
        [[filesystem.mounts]]
        source = "/srv/a"
        destination = "/data"
        read_only = true

        [[filesystem.tmpfs]]
        destination = "/cache"
        size = "16Mi"
        exec = true
    "#;
    let p = Policy::from_toml(text, "p.toml")
        .unwrap()
        .validate(Some("p.toml"), &PolicyOverrides::default(), &DIRS)
        .unwrap();
    assert_eq!(p.binds[0].destination, "/data");
    assert!(p.tmpfs[0].exec);

    let bad = "[[filesystem.mounts]]\nsource = \"/srv/a\"\ndestination = \"/proc\"\n";
    let e = Policy::from_toml(bad, "p.toml")
        .unwrap()
        .validate(Some("p.toml"), &PolicyOverrides::default(), &DIRS)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("p.toml: filesystem.mounts[0]: "), "{e}");

    let unknown = "[[filesystem.tmpfs]]\ndestination = \"/c\"\nsuid = true\n";
    let e = Policy::from_toml(unknown, "p.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("suid"), "{e}");
    // A flag's entry after the file's is named by the flag.
    let e = Policy::from_toml(text, "p.toml")
        .unwrap()
        .validate(
            Some("p.toml"),
            &PolicyOverrides {
                mounts: vec![BindMount::parse("/srv/b:/data").unwrap()],
                ..Default::default()
            },
            &DIRS,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("-v: ") && e.contains("already mounted"),
        "{e}"
    );
}

#[test]
fn too_many_mounts_are_refused() {
    let many: Vec<String> = (0..=MAX_TMPFS).map(|i| format!("/t{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let e = flags(&[], &refs).unwrap_err();
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn workspace_owner_is_keep_or_sandbox_and_needs_a_workspace() {
    let with = |owner: &str, ws: Option<&str>| {
        Policy::default()
            .validate(
                None,
                &PolicyOverrides {
                    workspace: ws.map(PathBuf::from),
                    workspace_owner: Some(owner.into()),
                    ..Default::default()
                },
                &DIRS,
            )
            .map_err(|e| e.to_string())
    };
    assert!(
        with("sandbox", Some("/srv/w"))
            .unwrap()
            .workspace_owner_sandbox
    );
    assert!(
        !with("keep", Some("/srv/w"))
            .unwrap()
            .workspace_owner_sandbox
    );
    let e = with("sandbox", None).unwrap_err();
    assert!(e.starts_with("--workspace-owner: "), "{e}");
    let e = with("root", Some("/srv/w")).unwrap_err();
    assert!(e.contains("`root` is not a workspace owner"), "{e}");
}
