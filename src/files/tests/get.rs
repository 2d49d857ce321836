//! Copies out of a sandbox root: links are archived, never followed; special files are
//! never opened; the caps hold.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::super::*;
use super::Fixture;

/// One entry of an archive as read back: kind, mode, owner, link target, contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Got {
    pub kind: u8,
    pub mode: u32,
    pub owner: (u64, u64),
    pub link: Vec<u8>,
    pub data: Vec<u8>,
}

/// The archive's entries by name, through the `tar` crate's ordinary reader.
pub(super) fn entries(bytes: &[u8]) -> BTreeMap<String, Got> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let h = e.header().clone();
        let link = e
            .link_name_bytes()
            .map(std::borrow::Cow::into_owned)
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(
            name,
            Got {
                kind: h.entry_type().as_byte(),
                mode: h.mode().unwrap(),
                owner: (h.uid().unwrap(), h.gid().unwrap()),
                link,
                data,
            },
        );
    }
    out
}

fn get_bytes(f: &Fixture, src: &str, opts: &GetOptions) -> Result<Vec<u8>, FilesError> {
    let mut out = Vec::new();
    get(&f.root, src, &mut out, opts)?;
    Ok(out)
}

fn tree(f: &Fixture) {
    let d = f.at("dst/tree");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/f"), "content").unwrap();
    std::os::unix::fs::symlink(f.canary.join("secret"), d.join("to-host")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("abs")).unwrap();
    std::fs::hard_link(d.join("sub/f"), d.join("twin")).unwrap();
    std::os::unix::fs::chown(d.join("sub/f"), Some(4321), Some(8765)).unwrap();
}

#[test]
fn links_in_the_tree_are_archived_as_links_never_as_the_host_file() {
    let f = Fixture::new();
    tree(&f);
    let got = entries(&get_bytes(&f, "/dst/tree", &GetOptions::default()).unwrap());
    let link = &got["tree/to-host"];
    assert_eq!(link.kind, b'2');
    assert_eq!(
        link.link,
        f.canary.join("secret").as_os_str().as_encoded_bytes()
    );
    assert!(got.values().all(|g| g.data != b"host secret\n"));
    assert_eq!(got["tree/sub/f"].data, b"content");
    assert_eq!(got["tree/sub/f"].owner, (4321, 8765));
    // The second name of a file is a hard link to the first one archived.
    assert_eq!(got["tree/twin"].kind, b'1');
    assert_eq!(got["tree/twin"].link, b"tree/sub/f");
}

#[test]
fn a_top_level_link_is_archived_as_a_link_or_followed_inside_the_root() {
    let f = Fixture::new();
    tree(&f);
    let got = entries(&get_bytes(&f, "/dst/tree/abs", &GetOptions::default()).unwrap());
    assert_eq!(got["abs"].kind, b'2');
    assert_eq!(got["abs"].link, b"/etc/passwd");
    let follow = GetOptions {
        follow_link: true,
        ..GetOptions::default()
    };
    let got = entries(&get_bytes(&f, "/dst/tree/abs", &follow).unwrap());
    assert_eq!(
        got["abs"].data, b"sandbox passwd\n",
        "the sandbox's file, not the host's"
    );
    // A followed link to the host's canary resolves inside the root, where it is missing.
    let err = get_bytes(&f, "/dst/tree/to-host", &follow).unwrap_err();
    assert!(matches!(err, FilesError::NotFound { .. }), "{err:?}");
}

#[test]
fn contents_of_a_directory_with_a_trailing_slash_dot() {
    let f = Fixture::new();
    tree(&f);
    let got = entries(&get_bytes(&f, "/dst/tree/sub/.", &GetOptions::default()).unwrap());
    assert_eq!(got.keys().collect::<Vec<_>>(), ["./", "./f"]);
}

#[test]
fn a_fifo_in_the_tree_is_skipped_without_being_opened() {
    let f = Fixture::new();
    tree(&f);
    let p = f.at("dst/tree/sub/pipe");
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let root = f.root.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let r = get(&root, "/dst/tree", &mut out, &GetOptions::default());
        let _ = tx.send(r.map(|s| (s, out)));
    });
    let (summary, out) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("get must not block on a FIFO")
        .unwrap();
    assert_eq!(summary.skipped, 1);
    assert!(!entries(&out).contains_key("tree/sub/pipe"));
    // As the top path, too.
    let got = entries(&get_bytes(&f, "/dst/tree/sub/pipe", &GetOptions::default()).unwrap());
    assert!(got.is_empty());
}

#[test]
fn caps_on_bytes_and_entries_hold() {
    let f = Fixture::new();
    tree(&f);
    for (limits, what) in [
        (
            Limits {
                max_bytes: 3,
                max_entries: 100,
            },
            "byte",
        ),
        (
            Limits {
                max_bytes: 1 << 20,
                max_entries: 2,
            },
            "entry count",
        ),
    ] {
        let opts = GetOptions {
            limits,
            ..GetOptions::default()
        };
        match get_bytes(&f, "/dst/tree", &opts) {
            Err(FilesError::Limit { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn missing_sources_and_pseudo_filesystems() {
    let f = Fixture::new();
    let err = get_bytes(&f, "/nothing/here", &GetOptions::default()).unwrap_err();
    assert!(matches!(err, FilesError::NotFound { .. }), "{err:?}");
    // The host's /proc stands for a sandbox's: kernel state is not copied.
    let host = open_root(Path::new("/")).unwrap();
    let err = get(&host, "/proc/version", Vec::new(), &GetOptions::default()).unwrap_err();
    assert!(matches!(err, FilesError::Conflict { .. }), "{err:?}");
    assert_eq!(
        pseudo_filesystem(open_root(Path::new("/proc")).unwrap()).unwrap(),
        Some("proc")
    );
}

#[test]
fn long_names_and_targets_survive() {
    let f = Fixture::new();
    let long = "n".repeat(150);
    let dir = f.at("dst/long").join(&long);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&long), "deep").unwrap();
    std::os::unix::fs::symlink("t".repeat(200), dir.join("l")).unwrap();
    let got = entries(&get_bytes(&f, "/dst/long", &GetOptions::default()).unwrap());
    assert_eq!(got[&format!("long/{long}/{long}")].data, b"deep");
    assert_eq!(
        got[&format!("long/{long}/l")].link,
        "t".repeat(200).as_bytes()
    );
}
