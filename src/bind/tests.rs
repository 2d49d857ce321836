//! Bind sources: paths made absolute, roots, resolution without links, staging mounts that
//! never take user data with them, and the in-task check.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::*;
use nix::mount::MsFlags;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Staging needs mount(2): root, as CI runs. Elsewhere the test says why it skips.
fn can_mount(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root under CI"
    );
    eprintln!("skipping {test}: needs root to mount");
    false
}

fn identity(p: &Path) -> HostDir {
    let m = std::fs::metadata(p).unwrap();
    HostDir {
        path: p.to_path_buf(),
        dev: m.dev(),
        ino: m.ino(),
    }
}

#[test]
fn paths_are_made_absolute_and_parent_components_refused() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("/srv/ws", "/x", Some("/srv/ws")),
        ("ws", "/home/a", Some("/home/a/ws")),
        ("./ws/./sub/", "/home/a", Some("/home/a/ws/sub")),
        ("//srv//ws", "/", Some("/srv/ws")),
        ("../ws", "/home/a", None),
        ("/srv/ws/../etc", "/", None),
    ];
    for (given, cwd, want) in cases {
        assert_eq!(
            absolute(Path::new(given), Path::new(cwd)),
            want.map(PathBuf::from),
            "{given} in {cwd}"
        );
    }
}

#[test]
fn only_directories_strictly_beneath_a_root_qualify() {
    let roots = roots_from(None);
    let cases: &[(&str, bool)] = &[
        ("/tmp/job", true),
        ("/home/alice/project", true),
        ("/srv/w", true),
        ("/tmp", false),
        ("/home", false),
        ("/tmpfoo/x", false),
        ("/opt/app", false),
        ("/var/lib/dpkg", false),
        ("/var/backups/x", false),
        ("/etc/ssl", false),
    ];
    for (p, ok) in cases {
        assert_eq!(beneath_root(Path::new(p), &roots).is_some(), *ok, "{p}");
    }
}

#[test]
fn roots_come_from_the_environment_value_or_the_defaults() {
    let defaults: Vec<PathBuf> = DEFAULT_BIND_ROOTS.iter().map(PathBuf::from).collect();
    assert_eq!(roots_from(None), defaults);
    assert_eq!(roots_from(Some("")), defaults);
    assert_eq!(roots_from(Some("relative:also/relative")), defaults);
    assert_eq!(
        roots_from(Some("/data/jobs:relative:/scratch/")),
        vec![PathBuf::from("/data/jobs"), PathBuf::from("/scratch")]
    );
}

#[test]
fn resolution_refuses_a_link_in_any_component() {
    let t = tempfile::tempdir().unwrap();
    let real = t.path().join("real");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
    std::os::unix::fs::symlink("/etc", real.join("etc")).unwrap();

    let got = resolve(&real.join("sub")).unwrap();
    assert_eq!(got, identity(&real.join("sub")));

    for p in [
        t.path().join("link"),
        t.path().join("link/sub"),
        real.join("etc"),
    ] {
        let e = resolve(&p).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{}: {e}", p.display());
        assert!(!e.contains('\n'));
    }
    let e = resolve(&real.join("missing")).unwrap_err().to_string();
    assert!(e.ends_with("no such directory"), "{e}");
    std::fs::write(real.join("file"), "x").unwrap();
    let e = resolve(&real.join("file")).unwrap_err().to_string();
    assert!(e.ends_with("not a directory"), "{e}");
}

/// The staging mount shows the validated directory; removing it unmounts and removes only
/// the empty mount points: the user's files stay where they were.
#[test]
fn staging_mounts_the_directory_and_unstaging_never_removes_user_files() {
    if !can_mount("staging") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ws = t.path().join("ws");
    let input = t.path().join("in");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&input).unwrap();
    std::fs::write(ws.join("keep"), "data").unwrap();
    let run = t.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let (w, i) = (resolve(&ws).unwrap(), resolve(&input).unwrap());

    stage(&run, &[("workspace", &w, false), ("input", &i, true)], None).unwrap();
    let staged = staged_path(&run, "workspace");
    assert_eq!(identity(&staged).ino, w.ino);
    assert_eq!(
        std::fs::read_to_string(staged.join("keep")).unwrap(),
        "data"
    );
    std::fs::write(staged.join("new"), "through staging").unwrap();
    let ro = std::fs::write(staged_path(&run, "input").join("x"), "no");
    assert_eq!(ro.unwrap_err().raw_os_error(), Some(nix::libc::EROFS));

    unstage(&run).unwrap();
    assert!(!run.join(STAGING_DIR).exists());
    assert_eq!(std::fs::read_to_string(ws.join("keep")).unwrap(), "data");
    assert_eq!(
        std::fs::read_to_string(ws.join("new")).unwrap(),
        "through staging"
    );
    // Idempotent, and a run directory without staging is fine.
    unstage(&run).unwrap();
}

/// The attack: between validation and the run, the directory is replaced (renamed away
/// and recreated, or swapped for a link to a host directory). Nothing is mounted.
#[test]
fn a_directory_replaced_after_validation_is_not_mounted() {
    if !can_mount("staging") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let validated = resolve(&ws).unwrap();
    let run = t.path().join("run");
    std::fs::create_dir(&run).unwrap();

    std::fs::rename(&ws, t.path().join("ws-archived")).unwrap();
    std::fs::create_dir(&ws).unwrap();
    let e = stage(&run, &[("workspace", &validated, false)], None).unwrap_err();
    assert!(matches!(e, BindError::Changed { .. }), "{e}");
    assert!(
        !run.join(STAGING_DIR).exists(),
        "a failed stage leaves nothing"
    );

    std::fs::remove_dir(&ws).unwrap();
    std::os::unix::fs::symlink("/etc", &ws).unwrap();
    let e = stage(&run, &[("workspace", &validated, false)], None).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!run.join(STAGING_DIR).exists());
}

#[test]
fn unstaging_removes_stacked_mounts_and_refuses_to_remove_a_non_empty_directory() {
    if !can_mount("staging") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let run = t.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let w = resolve(&ws).unwrap();
    stage(&run, &[("workspace", &w, false)], None).unwrap();
    let staged = staged_path(&run, "workspace");
    // A second mount stacked on the first, as a crash mid-way could leave.
    nix::mount::mount(
        Some(&ws),
        &staged,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    unstage(&run).unwrap();
    assert!(!run.join(STAGING_DIR).exists());

    // Something that is not a mount and not empty is left alone, with an error.
    std::fs::create_dir_all(staged_path(&run, "input")).unwrap();
    std::fs::write(staged_path(&run, "input").join("f"), "x").unwrap();
    let e = unstage(&run).unwrap_err().to_string();
    assert!(e.contains("input"), "{e}");
    assert!(staged_path(&run, "input").join("f").exists());
}

/// With a per-sandbox UID, the staging mount is ID-mapped: the workspace's on-disk owner
/// (65534) appears as the sandbox's UID, and what the sandbox's UID writes lands on disk as
/// 65534, so the next sandbox (another UID) finds it its own. Other owners stay as they
/// are, and the mapping holds only on the staging mount.
#[test]
fn an_idmapped_stage_shows_the_policy_uid_as_the_sandbox_uid() {
    use std::os::unix::fs::MetadataExt;
    if !can_mount("idmapped staging") {
        return;
    }
    let sandbox_uid = 1_900_123_456;
    let t = tempfile::tempdir().unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(65534), Some(65534)).unwrap();
    std::fs::write(ws.join("roots"), "r").unwrap();
    let run = t.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let w = resolve(&ws).unwrap();
    let userns = crate::idmap::UserNs::new(
        Path::new("/proc"),
        &crate::idmap::swap_uid_map(65534, sandbox_uid),
        &crate::idmap::identity_map(),
    )
    .unwrap();
    if !idmap_supported("workspace", &w, &userns).unwrap() {
        eprintln!(
            "skipped: the filesystem of {} has no idmapped mounts",
            ws.display()
        );
        return;
    }
    stage(&run, &[("workspace", &w, false)], Some(&userns)).unwrap();
    let staged = staged_path(&run, "workspace");
    assert_eq!(std::fs::metadata(&staged).unwrap().uid(), sandbox_uid);
    assert_eq!(std::fs::metadata(staged.join("roots")).unwrap().uid(), 0);
    assert_eq!(
        std::fs::metadata(&ws).unwrap().uid(),
        65534,
        "the host's view is unchanged"
    );
    // As the sandbox's UID, from inside the staging mount (its parents are root's 0700).
    let as_sandbox = |script: &str| {
        std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={sandbox_uid}"),
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
                script,
            ])
            .current_dir(&staged)
            .status()
            .unwrap()
    };
    let made = as_sandbox("touch made-in-sandbox");
    assert!(made.success(), "the sandbox UID may write its workspace");
    let on_disk = std::fs::metadata(ws.join("made-in-sandbox")).unwrap();
    assert_eq!((on_disk.uid(), on_disk.gid()), (65534, 65534));
    // Root's own file stays root's: the sandbox UID cannot replace it in place.
    assert!(!as_sandbox("echo x > roots").success());
    // And the host's 65534 (not the sandbox) sees the mapped directory as someone else's.
    let host_nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "touch",
            "by-host-nobody",
        ])
        .current_dir(&staged)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !host_nobody.success(),
        "on the mapped mount 65534 is not the owner"
    );
    unstage(&run).unwrap();
}

/// The in-task check reads `<proc>/<pid>/root/<dest>`; a fake proc tree stands in for it.
#[test]
fn the_in_task_check_compares_identity_and_refuses_links_and_files() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("42/root");
    std::fs::create_dir_all(root.join("workspace")).unwrap();
    std::fs::create_dir_all(root.join("other")).unwrap();
    std::os::unix::fs::symlink("other", root.join("input")).unwrap();
    let want = identity(&root.join("workspace"));
    let other = identity(&root.join("other"));
    let proc_root = t.path();

    verify_in_task(proc_root, 42, &[("workspace", "/workspace", &want)]).unwrap();
    let cases: &[(&str, &HostDir, &str)] = &[
        ("/workspace", &other, "device"),
        ("/input", &other, "something other than a directory"),
        ("/missing", &want, "nothing readable"),
    ];
    for (dest, want, seen) in cases {
        let e = verify_in_task(proc_root, 42, &[("workspace", dest, want)])
            .unwrap_err()
            .to_string();
        assert!(e.contains(seen) && e.contains("aborted"), "{dest}: {e}");
    }
}

#[test]
fn a_workspace_is_writable_only_through_the_class_the_user_falls_in() {
    // (owner, group, mode, writable by 65534:65534)
    for (owner, group, mode, want) in [
        (0, 0, 0o755, false),
        (0, 0, 0o777, true),
        (0, 0, 0o1777, true),
        (65534, 65534, 0o755, true),
        (65534, 0, 0o555, false),
        (0, 65534, 0o775, true),
        (0, 65534, 0o755, false),
        // The owner class decides for the owner, even when others may write.
        (65534, 0, 0o577, false),
        (0, 0, 0o772, false),
    ] {
        assert_eq!(
            writable_by(owner, group, mode, 65534, 65534),
            want,
            "{owner}:{group} {mode:o}"
        );
    }
}

#[test]
fn a_root_owned_0755_workspace_is_refused_in_one_line_or_given_to_the_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: changing a directory's owner needs root");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ws.join("kept"), "x").unwrap();
    let dir = resolve(&ws).unwrap();

    let e = ensure_writable(&dir, 65534, 65534, false).unwrap_err();
    let line = e.to_string();
    assert!(matches!(e, BindError::NotWritable { .. }), "{line}");
    assert!(!line.contains('\n'), "{line}");
    for part in [
        ws.to_str().unwrap(),
        "65534:65534",
        "owner 0:0",
        "mode 0755",
        "--workspace-owner sandbox",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert_eq!(
        std::fs::metadata(&ws).unwrap().uid(),
        0,
        "refusing changes nothing"
    );

    assert!(ensure_writable(&dir, 65534, 65534, true).unwrap(), "given");
    let m = std::fs::metadata(&ws).unwrap();
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    assert_eq!(
        std::fs::metadata(ws.join("kept")).unwrap().uid(),
        0,
        "only the directory itself changes owner"
    );
    assert!(!ensure_writable(&dir, 65534, 65534, true).unwrap(), "once");

    // A directory swapped in at the same path is not the one validated: not touched.
    std::fs::rename(&ws, t.path().join("old")).unwrap();
    std::fs::create_dir(&ws).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = ensure_writable(&dir, 65534, 65534, true).unwrap_err();
    assert!(matches!(e, BindError::Changed { .. }), "{e}");
    assert_eq!(std::fs::metadata(&ws).unwrap().uid(), 0);
}
