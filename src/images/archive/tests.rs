//! What import reads out of an archive, and what it refuses: archives are built here entry
//! by entry, names written raw (the tar crate's setters refuse `..`; attackers do not use
//! setters).

use std::path::Path;

use super::oci_layout::entry_names;
use super::*;
use crate::images::oci::{self, Descriptor, MEDIA_MANIFEST};
use crate::images::store::PreparedImage;

/// One entry of a test archive.
#[derive(Clone)]
enum E {
    File(String, Vec<u8>),
    Dir(&'static str),
    Symlink(String, String),
    Hardlink(String, String),
    Char(&'static str),
    Block(&'static str),
    Fifo(&'static str),
}

fn file(name: &str, bytes: &[u8]) -> E {
    E::File(name.to_string(), bytes.to_vec())
}

fn sym(name: &str, target: &str) -> E {
    E::Symlink(name.to_string(), target.to_string())
}

fn hard(name: &str, target: &str) -> E {
    E::Hardlink(name.to_string(), target.to_string())
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (name, kind, link, data): (&str, _, _, &[u8]) = match e {
            E::File(n, d) => (n, tar::EntryType::Regular, None, d),
            E::Dir(n) => (n, tar::EntryType::Directory, None, b""),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, Some(t), b""),
            E::Hardlink(n, t) => (n, tar::EntryType::Link, Some(t), b""),
            E::Char(n) => (n, tar::EntryType::Char, None, b""),
            E::Block(n) => (n, tar::EntryType::Block, None, b""),
            E::Fifo(n) => (n, tar::EntryType::Fifo, None, b""),
        };
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A one-layer image whose layer holds `/etc/hostname`.
fn tiny_image(dir: &Path) -> PreparedImage {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"sandbox\n").unwrap();
    let layer = crate::images::layer::write_layer(&root, &dir.join("layer.tar"), false).unwrap();
    let recipe = crate::images::build::recipe("busybox")
        .unwrap()
        .parse()
        .unwrap();
    crate::images::build::prepared_image(&recipe, "busybox", &layer)
}

fn layer_bytes(image: &PreparedImage) -> Vec<u8> {
    let mut v = Vec::new();
    image.layers[0]
        .source
        .reader()
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

fn blob(digest: &str) -> String {
    format!("blobs/sha256/{}", &digest[7..])
}

/// The index.json of a layout whose one manifest is `manifest` (a digest, as given).
fn index_naming(manifest: &str, size: i64) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": manifest, "size": size,
            "annotations": {"io.containerd.image.name": "docker.io/library/tiny:1"}
        }]
    })
    .to_string()
    .into_bytes()
}

/// A good OCI layout: `oci-layout`, `index.json`, `blobs/sha256/*`.
fn oci_entries(image: &PreparedImage) -> Vec<E> {
    let m = &image.manifest_descriptor;
    vec![
        file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        file("index.json", &index_naming(&m.digest, m.size)),
        E::Dir("blobs/"),
        E::Dir("blobs/sha256/"),
        file(&blob(&m.digest), &image.manifest),
        file(&blob(&image.config_descriptor.digest), &image.config),
        file(
            &blob(&image.layers[0].descriptor.digest),
            &layer_bytes(image),
        ),
    ]
}

/// A docker-save `manifest.json` naming `config` and `layers`.
fn docker_manifest(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::json!([{"Config": config, "RepoTags": ["tiny:1"], "Layers": layers}])
        .to_string()
        .into_bytes()
}

/// A good docker-save archive, as older Docker writes it: `<id>/layer.tar`, `<id>.json`.
fn docker_entries(image: &PreparedImage) -> Vec<E> {
    vec![
        file(
            "manifest.json",
            &docker_manifest("cfg.json", &["aaa/layer.tar"]),
        ),
        file("cfg.json", &image.config),
        E::Dir("aaa/"),
        file("aaa/layer.tar", &layer_bytes(image)),
    ]
}

/// Unpacks `entries` as an archive and reads its images.
fn import_entries(dir: &Path, entries: &[E]) -> Result<Vec<FoundImage>, ImageError> {
    let n = std::fs::read_dir(dir).unwrap().count();
    let tarball = dir.join(format!("archive-{n}.tar"));
    std::fs::write(&tarball, tar_of(entries)).unwrap();
    let out = dir.join(format!("out-{n}"));
    std::fs::create_dir(&out).unwrap();
    read_layout(&unpack_archive(&tarball, &out)?)
}

fn with(mut base: Vec<E>, extra: &[E]) -> Vec<E> {
    base.extend_from_slice(extra);
    base
}

#[test]
fn hostile_entries_are_refused_with_the_entry_named() {
    let d = tempfile::tempdir().unwrap();
    let image = tiny_image(d.path());
    let oci = oci_entries(&image);
    let docker = docker_entries(&image);
    let oci_head = oci[..2].to_vec(); // oci-layout, index.json: no blobs
    let layer = layer_bytes(&image);
    let cases: Vec<(&str, Vec<E>, &str)> = vec![
        (
            "blobs is a link to a directory outside",
            with(oci_head.clone(), &[sym("blobs", "/root/secret-dir")]),
            "entry `blobs`: links to `/root/secret-dir`, which is absolute",
        ),
        (
            "x is a link to the host's root",
            vec![
                file(
                    "manifest.json",
                    &docker_manifest("x/etc/passwd", &["x/etc/hostname"]),
                ),
                sym("x", "/"),
            ],
            "entry `x`: links to `/`, which is absolute",
        ),
        (
            "a hard link to the host's /etc/shadow",
            with(docker.clone(), &[hard("hl", "/etc/shadow")]),
            "entry `hl`: links to `/etc/shadow`, which is absolute",
        ),
        (
            "a hard link to a name the archive does not have",
            with(docker.clone(), &[hard("hl", "etc/shadow")]),
            "entry `hl`: links to `etc/shadow`, which is not in the archive",
        ),
        (
            "a character device",
            with(docker.clone(), &[E::Char("dev/mem")]),
            "entry `dev/mem`: is a character device",
        ),
        (
            "a block device",
            with(docker.clone(), &[E::Block("sda")]),
            "entry `sda`: is a block device",
        ),
        (
            "a fifo",
            with(docker.clone(), &[E::Fifo("pipe")]),
            "entry `pipe`: is a FIFO",
        ),
        (
            "an entry named with ..",
            with(docker.clone(), &[file("../../tmp/escape", b"x")]),
            "entry `../../tmp/escape`: has `..`",
        ),
        (
            "an absolute entry",
            with(docker.clone(), &[file("/tmp/escape", b"x")]),
            "entry `/tmp/escape`: is absolute",
        ),
        (
            "a link that climbs out of the archive",
            with(docker.clone(), &[sym("aaa/up", "../../etc/passwd")]),
            "entry `aaa/up`: links to `../../etc/passwd`, which climbs out",
        ),
        (
            "a link to a directory of the archive",
            with(docker.clone(), &[sym("l", "aaa")]),
            "entry `l`: links to `aaa`, a directory",
        ),
        (
            "a link whose target has a line break",
            with(docker.clone(), &[sym("l", "a\nb")]),
            "entry `l`: links to `a\\nb`, which is not in the archive",
        ),
        (
            "a link that loops",
            with(docker.clone(), &[sym("l1", "l2"), sym("l2", "l1")]),
            "entry `l1`: links to `l2`, through more than 16 links",
        ),
        (
            "a file beneath a link",
            with(
                oci_head.clone(),
                &[
                    E::Dir("real/"),
                    sym("blobs", "real"),
                    file(&blob(&image.manifest_descriptor.digest), &image.manifest),
                ],
            ),
            "lies beneath `blobs`, not a directory",
        ),
        (
            "a name given twice",
            with(docker.clone(), &[file("aaa/layer.tar", &layer)]),
            "entry `aaa/layer.tar`: appears twice",
        ),
        (
            "an index.json naming ../../etc/passwd",
            with(
                oci[2..].to_vec(),
                &[file("index.json", &index_naming("../../etc/passwd", 10))],
            ),
            "entry `../../etc/passwd`: named in index.json, is not a sha256 digest",
        ),
        (
            "an index.json naming sha256:../../etc/passwd",
            with(
                oci[2..].to_vec(),
                &[file(
                    "index.json",
                    &index_naming("sha256:../../../etc/passwd", 10),
                )],
            ),
            "entry `sha256:../../../etc/passwd`: named in index.json, is not a sha256 digest",
        ),
        (
            "a manifest.json naming an absolute config",
            with(
                docker[1..].to_vec(),
                &[file(
                    "manifest.json",
                    &docker_manifest("/etc/passwd", &["aaa/layer.tar"]),
                )],
            ),
            "entry `/etc/passwd`: named in manifest.json, is absolute",
        ),
        (
            "a manifest.json naming a layer with ..",
            with(
                docker[1..].to_vec(),
                &[file(
                    "manifest.json",
                    &docker_manifest("cfg.json", &["aaa/../../../etc/shadow"]),
                )],
            ),
            "entry `aaa/../../../etc/shadow`: named in manifest.json, has `..`",
        ),
        (
            "a manifest.json naming a host path not in the archive",
            with(
                docker[1..].to_vec(),
                &[file(
                    "manifest.json",
                    &docker_manifest("etc/passwd", &["aaa/layer.tar"]),
                )],
            ),
            "entry `etc/passwd`: named in manifest.json, is not in the archive",
        ),
    ];
    for (what, entries, want) in cases {
        let err = import_entries(d.path(), &entries)
            .err()
            .unwrap_or_else(|| panic!("{what}: imported"));
        let msg = err.to_string();
        eprintln!("{what}: {msg}");
        assert!(msg.contains(want), "{what}: got {msg}");
        assert!(msg.contains("archive-"), "{what}: archive not named: {msg}");
        assert!(!msg.contains('\n'), "{what}: not one line: {msg}");
    }
}

#[test]
fn a_probe_through_a_link_answers_the_same_whether_the_host_file_exists_or_not() {
    let d = tempfile::tempdir().unwrap();
    let host = d.path().join("host-file");
    let probe = format!("x{}", host.display());
    let entries = vec![
        file("manifest.json", &docker_manifest(&probe, &[&probe])),
        sym("x", "/"),
    ];
    std::fs::write(&host, b"{}").unwrap();
    let present = import_entries(d.path(), &entries).unwrap_err().to_string();
    std::fs::remove_file(&host).unwrap();
    let absent = import_entries(d.path(), &entries).unwrap_err().to_string();
    let strip = |m: &str| m.split_once(": ").unwrap().1.to_string(); // the archive's name
    assert_eq!(strip(&present), strip(&absent));
    assert!(present.contains("entry `x`"), "{present}");
}

#[test]
fn a_good_oci_layout_and_a_good_docker_save_import() {
    let d = tempfile::tempdir().unwrap();
    let image = tiny_image(d.path());
    for entries in [oci_entries(&image), docker_entries(&image)] {
        let found = import_entries(d.path(), &entries).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].names, vec!["docker.io/library/tiny:1"]);
        assert_eq!(found[0].image.config, image.config);
        assert_eq!(found[0].image.layers[0].diff_id, image.layers[0].diff_id);
        assert_eq!(layer_bytes(&found[0].image), layer_bytes(&image));
    }
}

/// Docker writes links in its archives: a layer saved twice links to the first copy, and
/// newer Docker links `<id>/layer.tar` to the blob. They name files of the same archive
/// and are read as those files; nothing in the scratch directory is a link.
#[test]
fn links_to_files_of_the_same_archive_are_read_as_those_files() {
    let d = tempfile::tempdir().unwrap();
    let image = tiny_image(d.path());
    let layer = layer_bytes(&image);
    let diff = &image.layers[0].diff_id;
    let config = serde_json::json!({
        "architecture": oci::host_architecture(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff, diff]},
    })
    .to_string();
    let lb = blob(diff);
    let variants: Vec<(&str, Vec<E>)> = vec![
        (
            "a repeated layer links to the first copy",
            vec![
                file(
                    "manifest.json",
                    &docker_manifest("c.json", &["a/layer.tar", "b/layer.tar"]),
                ),
                file("c.json", config.as_bytes()),
                E::Dir("a/"),
                E::Dir("b/"),
                sym("b/layer.tar", "../a/layer.tar"),
                file("a/layer.tar", &layer),
            ],
        ),
        (
            "layer dirs link to blobs, the manifest names both",
            vec![
                file(
                    "manifest.json",
                    &docker_manifest("c.json", &["a/layer.tar", &lb]),
                ),
                file("c.json", config.as_bytes()),
                E::Dir("blobs/"),
                E::Dir("blobs/sha256/"),
                E::File(lb.clone(), layer.clone()),
                E::Dir("a/"),
                sym("a/layer.tar", "../blobs/./sha256/../sha256/LINK"),
                sym("blobs/sha256/LINK", &diff[7..]),
            ],
        ),
        (
            "a hard link names the file from the archive's root",
            vec![
                file(
                    "manifest.json",
                    &docker_manifest("c.json", &["a/layer.tar", "b.tar"]),
                ),
                file("c.json", config.as_bytes()),
                file("a/layer.tar", &layer),
                hard("b.tar", "a/layer.tar"),
            ],
        ),
    ];
    for (what, entries) in variants {
        let found = import_entries(d.path(), &entries).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(found[0].image.layers.len(), 2, "{what}");
        for l in &found[0].image.layers {
            assert_eq!(&l.diff_id, diff, "{what}");
            assert_eq!(l.descriptor.digest, *diff, "{what}");
        }
    }
    for dir in std::fs::read_dir(d.path()).unwrap().flatten() {
        if dir.file_name().to_string_lossy().starts_with("out-") {
            for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
                assert!(f.file_type().unwrap().is_file(), "{:?}", f.path());
            }
        }
    }
}

#[test]
fn an_oci_layout_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let image = tiny_image(d.path());
    let tarball = d.path().join("image.tar");
    write_oci_layout(&tarball, "stockade/tiny:1", &image).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let found = read_layout(&unpack_archive(&tarball, &out).unwrap()).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].names, vec!["docker.io/stockade/tiny:1"]);
    assert_eq!(
        found[0].image.manifest_descriptor,
        image.manifest_descriptor
    );
    assert_eq!(found[0].image.config, image.config);
    assert_eq!(found[0].image.layers[0].diff_id, image.layers[0].diff_id);
}

#[test]
fn a_tampered_blob_is_named() {
    let d = tempfile::tempdir().unwrap();
    let image = tiny_image(d.path());
    let digest = &image.layers[0].descriptor.digest;
    let mut entries = oci_entries(&image);
    let mut bytes = layer_bytes(&image);
    bytes[600] ^= 1;
    *entries.last_mut().unwrap() = E::File(blob(digest), bytes);
    let err = import_entries(d.path(), &entries).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(digest.as_str()));
}

#[test]
fn neither_layout_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let err = import_entries(d.path(), &[file("README", b"hello")]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("archive-") && msg.contains(": neither an OCI image layout"),
        "{msg}"
    );
}

#[test]
fn entry_names_prefer_the_full_name_and_ignore_bare_tags() {
    let mut d = Descriptor::new(MEDIA_MANIFEST, b"m");
    assert!(entry_names(&d).is_empty());
    d.annotations
        .insert(ANNOTATION_REF_NAME.into(), "latest".into());
    assert!(entry_names(&d).is_empty());
    d.annotations
        .insert(ANNOTATION_REF_NAME.into(), "busybox:1".into());
    assert_eq!(entry_names(&d), vec!["docker.io/library/busybox:1"]);
    d.annotations.insert(
        ANNOTATION_CONTAINERD_NAME.into(),
        "docker.io/library/busybox:1".into(),
    );
    assert_eq!(entry_names(&d), vec!["docker.io/library/busybox:1"]);
}
