//! `stockade cp` against a real containerd (root; with `CI=true` nothing skips): a file and
//! a directory in and out of a running session (contents, modes, the sandbox's UID as
//! owner, usable by a later exec), `-` both ways through GNU tar, hostile archives on stdin
//! refused in one line with nothing written outside, a link to `/etc/shadow` copied as the
//! link, `-a` keeping owners, and a stopped sandbox: files out of its root, a copy into its
//! gone tmpfs or its read-only root refused in one line.

mod common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::cli::{assert_one_line_125, CliHost};
use common::require_root_or_skip;

/// What this test asks of the CLI beyond [`CliHost::stockade`].
trait Cp {
    /// `stockade SUB ARGS…`, which must succeed: its stdout.
    fn ok(&self, sub: &str, args: &[&str], stdin: &[u8]) -> Vec<u8>;
    /// `stockade exec ID -- sh -c SCRIPT`: its stdout; it must succeed.
    fn sh(&self, id: &str, script: &str) -> String;
}

impl Cp for CliHost {
    fn ok(&self, sub: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let out = self.stockade(sub, args, stdin);
        assert_eq!(out.code, 0, "{sub} {args:?}: {}", out.stderr);
        out.stdout
    }

    fn sh(&self, id: &str, script: &str) -> String {
        let out = self.ok("exec", &[id, "--", "sh", "-c", script], b"");
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A tar member with `name` written into the header as raw bytes (the `tar` crate refuses
/// to spell hostile names itself).
fn raw_member(
    b: &mut tar::Builder<Vec<u8>>,
    name: &[u8],
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if kind == tar::EntryType::Char {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_in_and_out_of_a_session() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let env = CliHost::start().await;
    let id = String::from_utf8(env.ok("create", &["--name", "cpbox"], b""))
        .unwrap()
        .trim()
        .to_string();
    let info: serde_json::Value =
        serde_json::from_slice(&env.ok("inspect", &["cpbox"], b"")).unwrap();
    let uid = info["uid"].as_u64().unwrap();

    // Host → sandbox: a file into an existing directory, a directory under a new name.
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("a.txt");
    std::fs::write(&file, b"alpha\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let tree = host.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), b"deep\n").unwrap();
    std::fs::set_permissions(tree.join("sub/f"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("sub/f", tree.join("l")).unwrap();
    env.ok("cp", &[file.to_str().unwrap(), "cpbox:/tmp/"], b"");
    env.ok(
        "cp",
        &[tree.to_str().unwrap(), &format!("{id}:/tmp/t2")],
        b"",
    );
    let seen = env.sh(
        "cpbox",
        "stat -c '%u %a' /tmp/a.txt /tmp/t2 /tmp/t2/sub/f; readlink /tmp/t2/l; cat /tmp/a.txt /tmp/t2/l",
    );
    assert_eq!(
        seen,
        format!("{uid} 640\n{uid} 755\n{uid} 750\nsub/f\nalpha\ndeep\n"),
        "owner = the sandbox's UID, modes and contents kept"
    );
    // Usable by the sandbox's own processes afterwards.
    env.sh(
        "cpbox",
        "echo more >> /tmp/a.txt && echo x > /tmp/t2/sub/new",
    );

    // Sandbox → host: a directory into an existing directory, a file under a new name.
    let out = tempfile::tempdir().unwrap();
    let out_s = format!("{}/", out.path().display());
    env.ok("cp", &["cpbox:/tmp/t2", &out_s], b"");
    let got = out.path().join("t2");
    assert_eq!(std::fs::read(got.join("sub/f")).unwrap(), b"deep\n");
    assert_eq!(std::fs::read(got.join("sub/new")).unwrap(), b"x\n");
    assert_eq!(mode(&got.join("sub/f")), 0o750);
    assert_eq!(
        std::fs::read_link(got.join("l")).unwrap(),
        Path::new("sub/f")
    );
    assert_eq!(
        std::fs::metadata(got.join("sub/f")).unwrap().uid(),
        0,
        "the invoking user's"
    );
    let copy = out.path().join("renamed.txt");
    env.ok("cp", &["cpbox:/tmp/a.txt", copy.to_str().unwrap()], b"");
    assert_eq!(std::fs::read(&copy).unwrap(), b"alpha\nmore\n");
    assert_eq!(mode(&copy), 0o640);

    // `-` both ways, through GNU tar.
    let gnu = Command::new("tar")
        .arg("-C")
        .arg(host.path())
        .args(["-cf", "-", "tree"])
        .output()
        .unwrap();
    assert!(gnu.status.success());
    env.ok("cp", &["-", "cpbox:/tmp/"], &gnu.stdout);
    assert_eq!(env.sh("cpbox", "cat /tmp/tree/sub/f"), "deep\n");
    let stream = env.ok("cp", &["cpbox:/tmp/tree", "-"], b"");
    let unpacked = tempfile::tempdir().unwrap();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(unpacked.path())
        .args(["-xf", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    tar.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(tar.wait().unwrap().success());
    let back = unpacked.path().join("tree");
    assert_eq!(std::fs::read(back.join("sub/f")).unwrap(), b"deep\n");
    assert_eq!(mode(&back.join("sub/f")), 0o750);
    assert_eq!(
        std::fs::read_link(back.join("l")).unwrap(),
        Path::new("sub/f")
    );

    // Hostile archives on stdin: one line, 125, nothing written outside.
    let marker = tempfile::tempdir().unwrap();
    let marker_s = marker.path().to_str().unwrap().to_string();
    env.sh("cpbox", "mkdir -p /tmp/in");
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dot-dot",
            {
                let mut b = tar::Builder::new(Vec::new());
                raw_member(&mut b, b"../x", tar::EntryType::Regular, None, b"x");
                b.into_inner().unwrap()
            },
            "refused",
        ),
        (
            "absolute",
            {
                let mut b = tar::Builder::new(Vec::new());
                raw_member(&mut b, b"/abs_x", tar::EntryType::Regular, None, b"x");
                b.into_inner().unwrap()
            },
            "refused",
        ),
        (
            "through a link",
            {
                let mut b = tar::Builder::new(Vec::new());
                raw_member(&mut b, b"l", tar::EntryType::Symlink, Some(&marker_s), b"");
                raw_member(&mut b, b"l/pwned", tar::EntryType::Regular, None, b"x");
                b.into_inner().unwrap()
            },
            "refused",
        ),
        (
            "device",
            {
                let mut b = tar::Builder::new(Vec::new());
                raw_member(&mut b, b"null", tar::EntryType::Char, None, b"");
                b.into_inner().unwrap()
            },
            "refused",
        ),
        ("garbage", b"this is not a tar archive".repeat(40), "tar"),
    ];
    for (what, archive, says) in &hostile {
        let r = env.stockade("cp", &["-", "cpbox:/tmp/in/"], archive);
        assert_one_line_125(what, &r, says);
    }
    assert_eq!(std::fs::read_dir(marker.path()).unwrap().count(), 0);
    assert!(!Path::new("/abs_x").exists() && !Path::new("/x").exists());
    assert_eq!(
        env.sh(
            "cpbox",
            "ls -A /tmp/in; ls /tmp/x /abs_x /tmp/in/null 2>&1 | grep -c 'No such'"
        ),
        "l\n3\n",
        "only the link (data, never followed) landed"
    );

    // A link to /etc/shadow is copied out as the link, not as a file.
    env.sh("cpbox", "ln -s /etc/shadow /tmp/shadow");
    let stream = env.ok("cp", &["cpbox:/tmp/shadow", "-"], b"");
    let mut ar = tar::Archive::new(&stream[..]);
    let entries: Vec<_> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.header().entry_type(),
                e.link_name().unwrap().map(std::borrow::Cow::into_owned),
                e.size(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![(
            tar::EntryType::Symlink,
            Some(PathBuf::from("/etc/shadow")),
            0
        )]
    );
    env.ok("cp", &["cpbox:/tmp/shadow", &out_s], b"");
    assert_eq!(
        std::fs::read_link(out.path().join("shadow")).unwrap(),
        Path::new("/etc/shadow")
    );

    // Bad input: one line each.
    let r = env.stockade("cp", &["nosuch:/tmp", "-"], b"");
    assert_one_line_125("unknown sandbox", &r, "no such sandbox: nosuch");
    let r = env.stockade("cp", &["cpbox:/nope/at/all", "-"], b"");
    assert_one_line_125("missing path", &r, "no such file or directory");
    let r = env.stockade("cp", &[file.to_str().unwrap(), "/tmp/"], b"");
    assert_one_line_125("no sandbox side", &r, "NAME_OR_ID:PATH");

    // Archive mode keeps the source's owner (still without set-ID bits).
    let owned = host.path().join("owned");
    std::fs::write(&owned, b"o\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(4321), Some(4322)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o4755)).unwrap();
    env.ok("cp", &["-a", owned.to_str().unwrap(), "cpbox:/tmp/"], b"");
    assert_eq!(
        env.sh("cpbox", "stat -c '%u %g %a' /tmp/owned"),
        "4321 4322 755\n"
    );

    // A stopped sandbox: its image's files still come out; its /tmp (a tmpfs) is gone and
    // its root is read-only, each refused in one line.
    env.ok("stop", &["--time", "2s", "cpbox"], b"");
    let tar = env.ok("cp", &["cpbox:/etc/passwd", "-"], b"");
    let mut a = tar::Archive::new(&tar[..]);
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.path().unwrap(), Path::new("passwd"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut e, &mut text).unwrap();
    assert!(text.starts_with("root:"), "{text}");
    let r = env.stockade("cp", &[file.to_str().unwrap(), "cpbox:/tmp/"], b"");
    assert_one_line_125("into a stopped sandbox's tmpfs", &r, "tmpfs");
    let r = env.stockade("cp", &[file.to_str().unwrap(), "cpbox:/"], b"");
    assert_one_line_125("into a read-only root", &r, "read-only");
    env.ok("rm", &["cpbox"], b"");
    let fifo = env.dir.path().join("fifo");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*fifo.to_string_lossy()),
        "no mount is left under the run directories"
    );
}
