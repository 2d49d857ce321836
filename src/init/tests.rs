use super::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::symlink;

/// A scratch directory in a root-owned 0755 chain (`/run` on the hosts stockade runs on;
/// `/tmp` is world-writable and would be refused).
fn scratch() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("stockade-init-test-")
        .tempdir_in("/run")
        .expect("tempdir in /run (the tests run as root)");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn inode(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

/// The file at `p` is the init: regular, root-owned, 0555, the embedded bytes.
fn assert_is_init(p: &Path) {
    let m = std::fs::symlink_metadata(p).unwrap();
    assert!(m.is_file(), "{} is not a regular file", p.display());
    assert_eq!((m.uid(), m.gid()), (0, 0), "{} owner", p.display());
    assert_eq!(m.mode() & 0o7777, 0o555, "{} mode", p.display());
    assert!(
        std::fs::read(p).unwrap() == BINARY,
        "{} contents",
        p.display()
    );
}

#[test]
fn the_embedded_init_is_elf_and_its_digest_is_of_its_bytes() {
    assert_eq!(&BINARY[..4], b"\x7fELF");
    let d = digest();
    assert_eq!(
        d,
        format!("sha256:{:x}", Sha256::digest(BINARY)),
        "digest of the embedded bytes"
    );
}

#[test]
fn a_fresh_install_creates_the_directories_and_a_0555_root_file() {
    let t = scratch();
    let dir = t.path().join("run/stockade/init");
    let got = install(&dir).unwrap();
    let hex = &digest()["sha256:".len()..];
    assert_eq!(got.sha256, digest());
    assert_eq!(got.path, dir.join(&hex[..16]).join("stockade-init"));
    assert_is_init(&got.path);
    assert_eq!(mode(&dir), 0o755);
    assert_eq!(mode(got.path.parent().unwrap()), 0o755);
    // Nothing else is left behind (no temporary file).
    let entries: Vec<_> = std::fs::read_dir(got.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("stockade-init")]);
}

#[test]
fn a_current_install_is_reused_not_rewritten() {
    let t = scratch();
    let first = install(t.path()).unwrap();
    let ino = inode(&first.path);
    let ctime = std::fs::metadata(&first.path).unwrap().ctime_nsec();
    let again = install(t.path()).unwrap();
    assert_eq!(again, first);
    assert_eq!(inode(&again.path), ino, "the file was replaced");
    assert_eq!(std::fs::metadata(&again.path).unwrap().ctime_nsec(), ctime);
}

#[test]
fn a_wrong_file_at_the_path_is_replaced() {
    type Spoil = fn(&Path, &Path);
    let cases: [(&str, Spoil); 6] = [
        ("wrong contents, same size and mode", |p, _| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
            let mut b = BINARY.to_vec();
            b[BINARY.len() / 2] ^= 0xff;
            std::fs::write(p, b).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o555)).unwrap();
        }),
        ("truncated", |p, _| {
            std::fs::remove_file(p).unwrap();
            std::fs::write(p, &BINARY[..100]).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o555)).unwrap();
        }),
        ("writable mode", |p, _| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }),
        ("setuid mode", |p, _| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o4555)).unwrap();
        }),
        ("owned by nobody", |p, _| {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }),
        ("a link to the right bytes elsewhere", |p, elsewhere| {
            std::fs::remove_file(p).unwrap();
            std::fs::write(elsewhere, BINARY).unwrap();
            std::fs::set_permissions(elsewhere, std::fs::Permissions::from_mode(0o555)).unwrap();
            symlink(elsewhere, p).unwrap();
        }),
    ];
    for (name, spoil) in cases {
        let t = scratch();
        let first = install(t.path()).unwrap();
        let elsewhere = t.path().join("elsewhere");
        spoil(&first.path, &elsewhere);
        let ino = inode(&first.path);
        let again = install(t.path()).unwrap();
        assert_eq!(again, first, "{name}");
        assert_is_init(&again.path);
        assert_ne!(inode(&again.path), ino, "{name}: not replaced");
        if elsewhere.exists() {
            // The link was replaced, not followed.
            assert_eq!(mode(&elsewhere), 0o555, "{name}");
            assert!(std::fs::symlink_metadata(&again.path).unwrap().is_file());
        }
    }
}

#[test]
fn a_digest_directory_that_is_not_root_owned_0755_is_put_right() {
    let t = scratch();
    let first = install(t.path()).unwrap();
    let sub = first.path.parent().unwrap().to_path_buf();
    std::os::unix::fs::chown(&sub, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
    install(t.path()).unwrap();
    let m = std::fs::symlink_metadata(&sub).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755));
    // A file where the directory belongs is replaced by the directory.
    std::fs::remove_dir_all(&sub).unwrap();
    std::fs::write(&sub, b"not a directory").unwrap();
    let again = install(t.path()).unwrap();
    assert_is_init(&again.path);
}

#[test]
fn a_directory_others_could_change_is_refused_with_one_line_naming_it() {
    struct Case {
        name: &'static str,
        /// Builds the directory to install into under the scratch directory.
        make: fn(&Path) -> PathBuf,
        want: &'static str,
    }
    let cases = [
        Case {
            name: "owned by nobody",
            make: |t| sub_dir(t, "nobody", 0o755, 65534),
            want: "not-root-owned",
        },
        Case {
            name: "group-writable",
            make: |t| sub_dir(t, "group-w", 0o775, 0),
            want: "writable",
        },
        Case {
            name: "world-writable",
            make: |t| sub_dir(t, "world-w", 0o777, 0),
            want: "writable",
        },
        Case {
            name: "sticky world-writable",
            make: |t| sub_dir(t, "sticky", 0o1777, 0),
            want: "writable",
        },
        Case {
            name: "below a world-writable directory",
            make: |t| sub_dir(t, "open", 0o777, 0).join("init"),
            want: "writable",
        },
        Case {
            name: "below a directory owned by nobody",
            make: |t| sub_dir(t, "theirs", 0o755, 65534).join("init"),
            want: "not-root-owned",
        },
        Case {
            name: "a file",
            make: |t| {
                std::fs::write(t.join("file"), b"").unwrap();
                t.join("file")
            },
            want: "io",
        },
    ];
    fn sub_dir(t: &Path, name: &str, mode: u32, uid: u32) -> PathBuf {
        let d = t.join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&d, Some(uid), None).unwrap();
        d
    }
    for case in cases {
        let t = scratch();
        let dir = (case.make)(t.path());
        let err = install(&dir).expect_err(case.name);
        let got = match &err {
            InitError::NotRootOwned { .. } => "not-root-owned",
            InitError::Writable { .. } => "writable",
            InitError::NotDirectory { .. } => "not-directory",
            InitError::Io { .. } => "io",
        };
        assert_eq!(got, case.want, "{}: {err}", case.name);
        let line = err.to_string();
        assert!(!line.contains('\n'), "{}: {line}", case.name);
        assert!(
            line.contains(&dir.display().to_string()),
            "{}: {line}",
            case.name
        );
        // Nothing was written anywhere under the refused directory.
        let hex = &digest()["sha256:".len()..];
        assert!(!dir.join(&hex[..16]).exists(), "{}", case.name);
    }
}

#[test]
fn the_mount_is_a_read_only_nosuid_nodev_bind_at_the_fixed_path() {
    let m = mount(Path::new(
        "/run/stockade/init/0123456789abcdef/stockade-init",
    ));
    assert_eq!(m.destination(), Path::new(SANDBOX_PATH));
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(
        m.source().as_deref(),
        Some(Path::new(
            "/run/stockade/init/0123456789abcdef/stockade-init"
        ))
    );
    let opts = m.options().clone().unwrap_or_default();
    for want in ["bind", "ro", "nosuid", "nodev"] {
        assert!(opts.iter().any(|o| o == want), "{want} missing: {opts:?}");
    }
    for not in ["rw", "noexec", "rbind", "shared", "rshared"] {
        assert!(!opts.iter().any(|o| o == not), "{not} present: {opts:?}");
    }
}

#[test]
fn args_hold_the_sandbox_open_or_run_the_command_after_a_separator() {
    assert_eq!(args(&[]), vec![SANDBOX_PATH.to_string()]);
    let cmd = vec!["sh".to_string(), "-c".to_string(), "--".to_string()];
    assert_eq!(
        args(&cmd),
        vec![
            SANDBOX_PATH.to_string(),
            "--".to_string(),
            "sh".to_string(),
            "-c".to_string(),
            "--".to_string()
        ]
    );
}
