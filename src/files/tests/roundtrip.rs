//! Round trips: random archives of allowed entries through put and get, and archives of
//! GNU tar through both.

use std::collections::BTreeMap;
use std::process::Command;

use proptest::prelude::*;

use super::super::*;
use super::get::{entries, Got};
use super::{Fixture, GID, UID};

/// A tree of allowed entries: name → (kind, mode, data or link target).
#[derive(Debug, Clone)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Link(String),
}

fn tree() -> impl Strategy<Value = BTreeMap<String, Node>> {
    let name = proptest::collection::vec(prop_oneof!["a", "b", "c d", "é"], 1..4)
        .prop_map(|parts| parts.join("/"));
    let node = prop_oneof![
        (0u32..0o10000).prop_map(Node::Dir),
        (
            0u32..0o10000,
            proptest::collection::vec(any::<u8>(), 0..2000)
        )
            .prop_map(|(m, d)| Node::File(m, d)),
        "[a-z/.]{1,20}".prop_map(Node::Link),
    ];
    proptest::collection::btree_map(name, node, 1..12).prop_map(|mut t| {
        // A name beneath a file or link is not a tree: make every parent a directory.
        let names: Vec<String> = t.keys().cloned().collect();
        for n in names {
            let mut p = n.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !matches!(t.get(parent), Some(Node::Dir(_))) {
                    t.insert(parent.to_string(), Node::Dir(0o755));
                }
                p = parent;
            }
        }
        t
    })
}

fn to_archive(t: &BTreeMap<String, Node>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, node) in t {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_600_000_000);
        match node {
            Node::Dir(m) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                h.set_size(0);
                b.append_data(&mut h, format!("top/{name}"), std::io::empty())
                    .unwrap();
            }
            Node::File(m, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, format!("top/{name}"), d.as_slice())
                    .unwrap();
            }
            Node::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                // Stored verbatim (the builder's own setter would tidy `a//b`).
                h.as_gnu_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
                b.append_data(&mut h, format!("top/{name}"), std::io::empty())
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn allowed_archives_round_trip_through_put_and_get(t in tree()) {
        let f = Fixture::new();
        f.put("/dst", &to_archive(&t)).unwrap();
        let mut out = Vec::new();
        get(&f.root, "/dst/top/.", &mut out, &GetOptions::default()).unwrap();
        let got = entries(&out);
        let mut want: BTreeMap<String, Got> = BTreeMap::new();
        want.insert("./".into(), got["./"].clone()); // the implied top directory
        for (name, node) in &t {
            let (key, kind, mode, link, data) = match node {
                Node::Dir(m) => (format!("./{name}/"), b'5', m & 0o777, vec![], vec![]),
                Node::File(m, d) => (format!("./{name}"), b'0', m & 0o777, vec![], d.clone()),
                Node::Link(l) => (format!("./{name}"), b'2', 0o777, l.clone().into_bytes(), vec![]),
            };
            want.insert(key, Got { kind, mode, owner: (UID.into(), GID.into()), link, data });
        }
        prop_assert_eq!(got, want);
    }
}

fn tar_cmd(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("tar")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tar {args:?}");
    out.stdout
}

#[test]
fn archives_of_gnu_tar_extract_and_gnu_tar_reads_what_get_writes() {
    let f = Fixture::new();
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    let long = "x".repeat(120);
    std::fs::create_dir_all(s.join("proj/src").join(&long)).unwrap();
    std::fs::write(s.join("proj/src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(s.join("proj/src").join(&long).join("deep"), "deep\n").unwrap();
    std::os::unix::fs::symlink("src/main.rs", s.join("proj/link")).unwrap();
    std::fs::hard_link(s.join("proj/src/main.rs"), s.join("proj/hard")).unwrap();
    let dir = s.display().to_string();
    for format in ["gnu", "posix", "ustar"] {
        if format == "ustar" {
            std::fs::remove_dir_all(s.join("proj/src").join(&long)).unwrap();
        }
        let bytes = tar_cmd(
            &[
                "-C",
                &dir,
                &format!("--format={format}"),
                "-cf",
                "-",
                "proj",
            ],
            None,
        );
        let dst = format!("/dst/{format}");
        f.put(&dst, &bytes).unwrap();
        let p = f.at(&dst);
        assert_eq!(
            std::fs::read_to_string(p.join("src/main.rs")).unwrap(),
            "fn main() {}\n"
        );
        assert_eq!(
            std::fs::read_link(p.join("link")).unwrap().to_str(),
            Some("src/main.rs")
        );
        assert_eq!(
            std::fs::read_to_string(p.join("hard")).unwrap(),
            "fn main() {}\n"
        );
        if format != "ustar" {
            assert_eq!(
                std::fs::read_to_string(p.join("src").join(&long).join("deep")).unwrap(),
                "deep\n"
            );
        }
    }
    let mut out = Vec::new();
    get(&f.root, "/dst/gnu", &mut out, &GetOptions::default()).unwrap();
    let listed = String::from_utf8(tar_cmd(&["-tf", "-"], Some(&out))).unwrap();
    for name in [
        "gnu/",
        "gnu/hard",
        "gnu/link",
        "gnu/src/main.rs",
        &format!("gnu/src/{long}/deep"),
    ] {
        assert!(listed.lines().any(|l| l == name), "{name} not in {listed}");
    }
    let back = tempfile::tempdir().unwrap();
    tar_cmd(
        &["-C", &back.path().display().to_string(), "-xf", "-"],
        Some(&out),
    );
    assert_eq!(
        std::fs::read_to_string(back.path().join("gnu/hard")).unwrap(),
        "fn main() {}\n"
    );
}
