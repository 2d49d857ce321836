//! Copies into a sandbox root (a temporary directory standing for `/proc/<pid>/root`)
//! beside a canary directory that stands for the host: hostile archives are refused and
//! the canary never changes. Owners are set, so these run as root (as stockade does).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

mod destination;
mod get;
mod owners;
mod race;
mod roundtrip;

/// The sandbox user the tests put files for.
const UID: u32 = 1234;
const GID: u32 = 5678;

/// A sandbox root and, beside it, the "host" canary.
struct Fixture {
    _dir: tempfile::TempDir,
    root_path: PathBuf,
    canary: PathBuf,
    root: OwnedFd,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        let canary = dir.path().join("canary");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::fs::write(root_path.join("etc/passwd"), "sandbox passwd\n").unwrap();
        std::fs::create_dir_all(root_path.join("dst")).unwrap();
        std::fs::create_dir_all(&canary).unwrap();
        std::fs::write(canary.join("secret"), "host secret\n").unwrap();
        let root = open_root(&root_path).unwrap();
        Fixture {
            _dir: dir,
            root_path,
            canary,
            root,
        }
    }

    /// A path inside the root, as the host sees it.
    fn at(&self, p: &str) -> PathBuf {
        self.root_path.join(p.trim_start_matches('/'))
    }

    fn put(&self, dst: &str, archive: &[u8]) -> Result<PutSummary, FilesError> {
        put(&self.root, dst, archive, &put_opts())
    }

    /// Every name under the canary, with its size: what "the host" holds.
    fn canary_listing(&self) -> BTreeMap<PathBuf, u64> {
        listing(&self.canary)
    }
}

fn put_opts() -> PutOptions {
    PutOptions {
        uid: UID,
        gid: GID,
        limits: Limits {
            max_bytes: 1 << 20,
            max_entries: 64,
        },
        archive_owner: None,
    }
}

fn listing(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            }
            out.insert(e.path(), m.len());
        }
    }
    out
}

/// One member of a hand-made archive; names and targets are stored verbatim.
#[derive(Clone, Debug)]
enum M {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    Mode(&'static str, u32),
    Sym(&'static str, String),
    Hard(&'static str, &'static str),
    Kind(&'static str, u8),
    /// Alone in its archive: a regular file whose size field says this much, followed by
    /// 4 KiB of data only.
    Sized(&'static str, u64),
}

fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

fn archive(members: &[M]) -> Vec<u8> {
    use tar::EntryType as T;
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let (name, kind, data, mode, link): (&str, T, &[u8], u32, Option<&str>) = match m {
            M::Dir(n) => (n, T::Directory, b"", 0o755, None),
            M::File(n, d) => (n, T::Regular, d, 0o644, None),
            M::Mode(n, mode) => (n, T::Regular, b"x", *mode, None),
            M::Sym(n, t) => (n, T::Symlink, b"", 0o777, Some(t.as_str())),
            M::Hard(n, t) => (n, T::Link, b"", 0o644, Some(t)),
            M::Kind(n, k) => (n, T::new(*k), b"", 0o644, None),
            M::Sized(n, size) => {
                let mut h = raw_header(n.as_bytes(), T::Regular, *size, 0o644);
                h.set_cksum();
                let mut out = h.as_bytes().to_vec();
                out.extend(std::iter::repeat_n(0u8, 4096));
                return out;
            }
        };
        let mut h = raw_header(name.as_bytes(), kind, data.len() as u64, mode);
        if let Some(l) = link {
            h.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn is_refused(e: &FilesError) -> bool {
    matches!(e, FilesError::Refused { .. })
}
fn is_limit(e: &FilesError) -> bool {
    matches!(e, FilesError::Limit { .. })
}
fn is_not_found(e: &FilesError) -> bool {
    matches!(e, FilesError::NotFound { .. })
}
fn is_conflict(e: &FilesError) -> bool {
    matches!(e, FilesError::Conflict { .. })
}

#[test]
fn hostile_archives_are_refused_and_nothing_appears_outside_the_root() {
    struct Case {
        name: &'static str,
        /// What "the sandbox" placed in the root first: (path in root, link target).
        planted: Vec<(&'static str, String)>,
        members: Vec<M>,
        refused: fn(&FilesError) -> bool,
    }
    let canary = |f: &Fixture| f.canary.display().to_string();
    let cases = |f: &Fixture| {
        vec![
            Case {
                name: "dot-dot",
                planted: vec![],
                members: vec![M::File("../x", b"x")],
                refused: is_refused,
            },
            Case {
                name: "absolute",
                planted: vec![],
                members: vec![M::File("/etc/x", b"x")],
                refused: is_refused,
            },
            Case {
                name: "climbing",
                planted: vec![],
                members: vec![M::Dir("a/"), M::File("a/../../x", b"x")],
                refused: is_refused,
            },
            Case {
                name: "file through a link to / from the same archive",
                planted: vec![],
                members: vec![M::Sym("l", "/".into()), M::File("l/etc/passwd", b"pwned")],
                refused: is_refused,
            },
            Case {
                name: "file through a link to the host's canary",
                planted: vec![],
                members: vec![M::Sym("l", canary(f)), M::File("l/pwned", b"pwned")],
                refused: is_refused,
            },
            Case {
                name: "hard link through a link",
                planted: vec![],
                members: vec![M::Sym("l", canary(f)), M::Hard("h", "l/secret")],
                refused: is_refused,
            },
            Case {
                name: "hard link to an absolute file",
                planted: vec![],
                members: vec![M::Hard("h", "/etc/shadow")],
                refused: is_refused,
            },
            Case {
                name: "hard link to a sandbox file the archive did not make",
                planted: vec![],
                members: vec![M::Hard("h", "../etc/passwd")],
                refused: is_refused,
            },
            Case {
                name: "hard link to a later entry",
                planted: vec![],
                members: vec![M::Hard("h", "f"), M::File("f", b"x")],
                refused: is_refused,
            },
            Case {
                name: "character device",
                planted: vec![],
                members: vec![M::Kind("null", b'3')],
                refused: is_refused,
            },
            Case {
                name: "block device",
                planted: vec![],
                members: vec![M::Kind("sda", b'4')],
                refused: is_refused,
            },
            Case {
                name: "fifo",
                planted: vec![],
                members: vec![M::Kind("p", b'6')],
                refused: is_refused,
            },
            Case {
                name: "sparse file",
                planted: vec![],
                members: vec![M::Kind("s", b'S')],
                refused: is_refused,
            },
            Case {
                name: "over the byte cap",
                planted: vec![],
                members: vec![M::Sized("big", 2 << 20)],
                refused: is_limit,
            },
            Case {
                name: "over the entry cap",
                planted: vec![],
                members: (0..65).map(|_| M::Dir("d/")).collect(),
                refused: is_limit,
            },
            Case {
                name: "a directory of the destination is a link the sandbox planted",
                planted: vec![("dst/out", canary(f))],
                members: vec![M::File("out/file", b"pwned")],
                refused: is_refused,
            },
            Case {
                name: "a relative planted link climbing to the canary",
                planted: vec![("dst/out", "../../canary".into())],
                members: vec![M::Dir("out/"), M::File("out/file", b"pwned")],
                refused: is_refused,
            },
            Case {
                name: "a name beneath a file",
                planted: vec![],
                members: vec![M::File("f", b"x"), M::File("f/x", b"x")],
                refused: is_refused,
            },
            Case {
                name: "a file over a directory",
                planted: vec![],
                members: vec![M::Dir("d/"), M::File("d", b"x")],
                refused: is_refused,
            },
            Case {
                name: "a directory over a file",
                planted: vec![],
                members: vec![M::File("d", b"x"), M::Dir("d/")],
                refused: is_refused,
            },
            Case {
                name: "the destination itself as a file",
                planted: vec![],
                members: vec![M::File("./", b"x")],
                refused: is_refused,
            },
        ]
    };
    let n = cases(&Fixture::new()).len();
    for i in 0..n {
        let f = Fixture::new();
        let case = cases(&f).swap_remove(i);
        for (path, target) in &case.planted {
            std::os::unix::fs::symlink(target, f.at(path)).unwrap();
        }
        let before = f.canary_listing();
        let err = f.put("/dst", &archive(&case.members)).expect_err(case.name);
        assert!((case.refused)(&err), "{}: wrong error {err:?}", case.name);
        assert!(!err.to_string().contains('\n'), "{}: one line", case.name);
        assert_eq!(
            f.canary_listing(),
            before,
            "{}: the canary changed",
            case.name
        );
        assert_eq!(
            std::fs::read_to_string(f.at("etc/passwd")).unwrap(),
            "sandbox passwd\n",
            "{}",
            case.name
        );
    }
}

#[test]
fn a_long_name_member_over_the_extension_cap_is_refused_before_it_is_read() {
    let f = Fixture::new();
    let mut h = raw_header(
        b"././@LongLink",
        tar::EntryType::GNULongName,
        1 << 30,
        0o644,
    );
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 4096));
    let err = f.put("/dst", &bytes).unwrap_err();
    assert!(is_refused(&err), "{err:?}");
}

#[test]
fn a_truncated_archive_is_a_bad_archive() {
    let f = Fixture::new();
    let mut bytes = archive(&[M::File("f", &[7u8; 2000])]);
    bytes.truncate(1024);
    let err = f.put("/dst", &bytes).unwrap_err();
    assert!(matches!(err, FilesError::BadArchive { .. }), "{err:?}");
}

#[test]
fn neutralised_setuid_setgid_and_sticky_bits_are_dropped_and_the_owner_is_the_sandbox_user() {
    let f = Fixture::new();
    for (name, mode, want) in [
        ("suid", 0o4755, 0o755),
        ("sgid", 0o2755, 0o755),
        ("sticky", 0o1777, 0o777),
        ("plain", 0o640, 0o640),
    ] {
        f.put("/dst", &archive(&[M::Mode(name, mode)])).unwrap();
        let m = std::fs::symlink_metadata(f.at("dst").join(name)).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, want, "{name}");
        assert_eq!((m.uid(), m.gid()), (UID, GID), "{name}");
    }
    f.put(
        "/dst",
        &archive(&[
            M::Dir("d/"),
            M::Sym("d/l", "/etc/passwd".into()),
            M::Hard("d/h", "suid"),
        ]),
    )
    .unwrap_err(); // `suid` was not made by this archive
    let l = std::fs::symlink_metadata(f.at("dst/d/l")).unwrap();
    let d = std::fs::symlink_metadata(f.at("dst/d")).unwrap();
    assert_eq!((l.uid(), l.gid(), d.uid(), d.gid()), (UID, GID, UID, GID));
    assert_eq!(
        std::fs::read_link(f.at("dst/d/l")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn existing_names_are_replaced_not_written_through() {
    let f = Fixture::new();
    let before = f.canary_listing();
    // A link the sandbox left at the name, pointing at the host's file.
    std::os::unix::fs::symlink(f.canary.join("secret"), f.at("dst/victim")).unwrap();
    // A hard link the sandbox made to another of its files.
    std::fs::write(f.at("etc/inner"), "inner\n").unwrap();
    std::fs::hard_link(f.at("etc/inner"), f.at("dst/hard")).unwrap();
    f.put(
        "/dst",
        &archive(&[M::File("victim", b"new"), M::File("hard", b"new")]),
    )
    .unwrap();
    assert_eq!(std::fs::read(f.at("dst/victim")).unwrap(), b"new");
    assert!(std::fs::symlink_metadata(f.at("dst/victim"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read(f.at("dst/hard")).unwrap(), b"new");
    assert_eq!(
        std::fs::read_to_string(f.at("etc/inner")).unwrap(),
        "inner\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.canary.join("secret")).unwrap(),
        "host secret\n"
    );
    assert_eq!(f.canary_listing(), before);
    let leftovers: Vec<_> = std::fs::read_dir(f.at("dst"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".stockade"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
