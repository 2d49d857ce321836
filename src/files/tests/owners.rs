//! Archive mode (`cp -a`): owners kept from the archive, mapped, and the hostile-archive
//! rules unchanged; and `stat` of sandbox paths.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::super::*;
use super::{archive, put_opts, raw_header, Fixture, GID, M, UID};

/// An archive of one directory and one setuid file owned by `uid:gid`.
fn owned_by(uid: u64, gid: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, mode, data) in [
        ("top/", tar::EntryType::Directory, 0o750, &b""[..]),
        ("top/run", tar::EntryType::Regular, 0o4755, &b"x"[..]),
    ] {
        let mut h = raw_header(name.as_bytes(), kind, data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn keep(map: OwnerMap) -> PutOptions {
    PutOptions {
        archive_owner: Some(map),
        ..put_opts()
    }
}

#[test]
fn archive_mode_keeps_the_archive_owners_and_still_drops_set_id_bits() {
    let f = Fixture::new();
    put(
        &f.root,
        "/dst",
        &owned_by(4321, 8765)[..],
        &keep(OwnerMap::default()),
    )
    .unwrap();
    let d = std::fs::metadata(f.at("dst/top")).unwrap();
    let r = std::fs::metadata(f.at("dst/top/run")).unwrap();
    assert_eq!((d.uid(), d.gid()), (4321, 8765));
    assert_eq!((r.uid(), r.gid()), (4321, 8765));
    assert_eq!(r.permissions().mode() & 0o7777, 0o755, "setuid dropped");
}

#[test]
fn archive_mode_maps_owners_through_a_user_namespace_and_refuses_unmapped_ones() {
    let f = Fixture::new();
    let map = OwnerMap {
        uids: vec![(0, 200_000, 65_536)],
        gids: vec![(0, 300_000, 65_536)],
    };
    put(
        &f.root,
        "/dst",
        &owned_by(1000, 1001)[..],
        &keep(map.clone()),
    )
    .unwrap();
    let r = std::fs::metadata(f.at("dst/top/run")).unwrap();
    assert_eq!((r.uid(), r.gid()), (201_000, 301_001));
    let e = put(&f.root, "/dst/", &owned_by(70_000, 0)[..], &keep(map)).unwrap_err();
    assert!(
        matches!(e, FilesError::Refused { .. }) && e.to_string().contains("does not map"),
        "{e}"
    );
}

#[test]
fn archive_mode_keeps_every_hostile_archive_rule() {
    let f = Fixture::new();
    for (i, members) in [
        vec![M::File("../escape", b"x")],
        vec![M::File("/abs", b"x")],
        vec![M::Kind("dev", b'3')],
        vec![M::Kind("fifo", b'6')],
        vec![M::Sym("l", "/".into()), M::File("l/through", b"x")],
    ]
    .into_iter()
    .enumerate()
    {
        let e = put(
            &f.root,
            "/dst",
            &archive(&members)[..],
            &keep(OwnerMap::default()),
        )
        .unwrap_err();
        assert!(matches!(e, FilesError::Refused { .. }), "case {i}: {e}");
    }
    assert_eq!(
        f.canary_listing().len(),
        1,
        "nothing appeared beside the secret"
    );
}

#[test]
fn parents_an_archive_does_not_list_belong_to_the_sandbox_user_in_archive_mode() {
    let f = Fixture::new();
    put(
        &f.root,
        "/dst",
        &owned_by(7, 7)[..],
        &keep(OwnerMap::default()),
    )
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = raw_header(b"a/b/c", tar::EntryType::Regular, 1, 0o644);
    h.set_uid(7);
    h.set_gid(7);
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    put(
        &f.root,
        "/dst",
        &b.into_inner().unwrap()[..],
        &keep(OwnerMap::default()),
    )
    .unwrap();
    let a = std::fs::metadata(f.at("dst/a")).unwrap();
    let c = std::fs::metadata(f.at("dst/a/b/c")).unwrap();
    assert_eq!((a.uid(), a.gid()), (UID, GID));
    assert_eq!((c.uid(), c.gid()), (7, 7));
}

#[test]
fn stat_reports_files_directories_and_links_without_following_the_last() {
    let f = Fixture::new();
    std::fs::write(f.at("dst/file"), "12345").unwrap();
    std::os::unix::fs::symlink("../etc/passwd", f.at("dst/rel")).unwrap();
    std::os::unix::fs::symlink("/etc", f.at("dst/abs")).unwrap();
    let s = stat(&f.root, "/dst/file").unwrap();
    assert_eq!((s.name.as_str(), s.size, s.is_dir()), ("file", 5, false));
    assert_eq!(s.mode & 0o170000, 0o100000);
    assert!(stat(&f.root, "/dst").unwrap().is_dir());
    assert_eq!(stat(&f.root, "/").unwrap().name, "/");
    let rel = stat(&f.root, "/dst/rel").unwrap();
    assert_eq!(rel.mode & 0o170000, 0o120000);
    assert_eq!(rel.link_target, "/dst/../etc/passwd");
    assert_eq!(stat(&f.root, "dst/abs").unwrap().link_target, "/etc");
    assert!(
        stat(&f.root, "/dst/abs/").unwrap().is_dir(),
        "a trailing / follows"
    );
    assert!(matches!(
        stat(&f.root, "/missing").unwrap_err(),
        FilesError::NotFound { .. }
    ));
    // A link out of the root is resolved inside it: `/etc` of the sandbox, not the host's.
    std::os::unix::fs::symlink(&f.canary, f.at("dst/out")).unwrap();
    assert!(matches!(
        stat(&f.root, "/dst/out/secret").unwrap_err(),
        FilesError::NotFound { .. }
    ));
}
