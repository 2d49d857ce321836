//! Where a put lands: the destination rules of `docker cp` (a directory, a file, a name
//! that does not exist yet, a trailing `/` or `/.`), and the caller's path as it splits.

use super::*;

/// The destination rules of `docker cp`, one row each.
#[test]
fn destination_rules() {
    type Check = fn(&Fixture);
    struct Row {
        rule: &'static str,
        /// Set-up in the root: (path, Some(link target) | None for a file).
        setup: Vec<(&'static str, Option<&'static str>)>,
        dst: &'static str,
        members: Vec<M>,
        want: Result<Check, fn(&FilesError) -> bool>,
    }
    let rows = vec![
        Row {
            rule: "an existing directory receives the top inside it",
            setup: vec![],
            dst: "/dst",
            members: vec![M::Dir("a/"), M::File("a/f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/a/f")).unwrap(), b"1")),
        },
        Row {
            rule: "an existing directory receives the contents of a `./` archive",
            setup: vec![],
            dst: "/dst/",
            members: vec![M::Dir("./"), M::File("./f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/f")).unwrap(), b"1")),
        },
        Row {
            rule: "an existing file is replaced by a file top",
            setup: vec![("dst/t", None)],
            dst: "/dst/t",
            members: vec![M::File("other-name", b"new")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/t")).unwrap(), b"new")),
        },
        Row {
            rule: "an existing file cannot be replaced by a directory",
            setup: vec![("dst/t", None)],
            dst: "/dst/t",
            members: vec![M::Dir("a/"), M::File("a/f", b"1")],
            want: Err(is_conflict),
        },
        Row {
            rule: "a missing destination takes the directory top's name",
            setup: vec![],
            dst: "/dst/new",
            members: vec![M::Dir("a/"), M::File("a/f", b"1"), M::Hard("a/h", "a/f")],
            want: Ok(|f| {
                assert_eq!(std::fs::read(f.at("dst/new/f")).unwrap(), b"1");
                assert_eq!(std::fs::read(f.at("dst/new/h")).unwrap(), b"1");
                assert!(!f.at("dst/a").exists());
            }),
        },
        Row {
            rule: "a missing destination takes a `./` archive's contents",
            setup: vec![],
            dst: "/dst/new",
            members: vec![M::Dir("./"), M::File("./f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/new/f")).unwrap(), b"1")),
        },
        Row {
            rule: "a missing destination takes the file top's name",
            setup: vec![],
            dst: "/dst/new",
            members: vec![M::File("f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/new")).unwrap(), b"1")),
        },
        Row {
            rule: "a missing destination ending in / cannot take a file",
            setup: vec![],
            dst: "/dst/new/",
            members: vec![M::File("f", b"1")],
            want: Err(is_not_found),
        },
        Row {
            rule: "a missing destination ending in / takes a directory",
            setup: vec![],
            dst: "/dst/new/",
            members: vec![M::Dir("a/"), M::File("a/f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/new/f")).unwrap(), b"1")),
        },
        Row {
            rule: "a missing destination takes one top only",
            setup: vec![],
            dst: "/dst/new",
            members: vec![M::File("f", b"1"), M::File("g", b"2")],
            want: Err(is_refused),
        },
        Row {
            rule: "the destination's parent must exist",
            setup: vec![],
            dst: "/nowhere/new",
            members: vec![M::File("f", b"1")],
            want: Err(is_not_found),
        },
        Row {
            rule: "a destination link to a directory is followed",
            setup: vec![("dst/link", Some("/etc"))],
            dst: "/dst/link",
            members: vec![M::File("f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("etc/f")).unwrap(), b"1")),
        },
        Row {
            rule: "a destination link is followed inside the root, never to the host",
            setup: vec![("dst/link", Some("/../../../canary/new"))],
            dst: "/dst/link",
            members: vec![M::File("f", b"1")],
            want: Err(is_not_found),
        },
        Row {
            rule: "a destination link to a missing name in an existing directory creates it",
            setup: vec![("dst/link", Some("../etc/made"))],
            dst: "/dst/link",
            members: vec![M::File("f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("etc/made")).unwrap(), b"1")),
        },
        Row {
            rule: "missing parents inside the archive are created",
            setup: vec![],
            dst: "/dst",
            members: vec![M::File("x/y/z", b"1")],
            want: Ok(|f| {
                assert_eq!(std::fs::read(f.at("dst/x/y/z")).unwrap(), b"1");
                let m = std::fs::metadata(f.at("dst/x/y")).unwrap();
                assert_eq!((m.uid(), m.mode() & 0o7777), (UID, 0o755));
            }),
        },
        Row {
            rule: "`..` in the destination stays inside the root",
            setup: vec![],
            dst: "/../../../dst",
            members: vec![M::File("f", b"1")],
            want: Ok(|f| assert_eq!(std::fs::read(f.at("dst/f")).unwrap(), b"1")),
        },
    ];
    for row in rows {
        let f = Fixture::new();
        for (path, link) in &row.setup {
            match link {
                Some(t) => std::os::unix::fs::symlink(t, f.at(path)).unwrap(),
                None => std::fs::write(f.at(path), "old").unwrap(),
            }
        }
        let before = f.canary_listing();
        match (f.put(row.dst, &archive(&row.members)), row.want) {
            (Ok(_), Ok(check)) => check(&f),
            (Err(e), Err(is)) => assert!(is(&e), "{}: wrong error {e:?}", row.rule),
            (got, _) => panic!("{}: got {got:?}", row.rule),
        }
        assert_eq!(f.canary_listing(), before, "{}", row.rule);
    }
}

#[test]
fn a_fifo_as_destination_is_a_conflict() {
    let f = Fixture::new();
    nix::unistd::mkfifo(
        &f.at("dst/p"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let err = f
        .put("/dst/p", &archive(&[M::File("f", b"1")]))
        .unwrap_err();
    assert!(is_conflict(&err), "{err:?}");
}

#[test]
fn caller_paths_split_as_docker_cp_reads_them() {
    for (path, parent, base, asserts_dir, contents) in [
        ("/a/b", "/a", "b", false, false),
        ("/a/b/", "/a", "b", true, false),
        ("/a/b/.", "/a", "b", true, true),
        ("b", "", "b", false, false),
        ("/", "", "", true, false),
        ("/.", "", "", true, true),
        (".", "", "", true, true),
    ] {
        let cp = CallerPath::parse(path.as_bytes()).unwrap();
        assert_eq!(
            (cp.parent, cp.base, cp.asserts_dir, cp.contents),
            (parent.as_bytes(), base.as_bytes(), asserts_dir, contents),
            "{path}"
        );
    }
    for bad in ["", "/a/..", "a\0b"] {
        assert!(CallerPath::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
}
