//! Base images against a real (private) containerd: build, resolve, idempotence, what the
//! garbage collector keeps and drops, import of OCI-layout and docker-save tarballs, and
//! clear errors for broken ones. Each test runs its own containerd under /tmp/stk-*.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};
use containerd_client::services::v1::{
    CreateImageRequest, CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    Image, InfoRequest, ListImagesRequest,
};
use stockade::containerd::Client;
use stockade::images::{self, archive, build, store, ImageError, NoProgress, SNAPSHOTTER};
use tokio_stream::StreamExt;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stk-test-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

/// Runs containerd's garbage collector now: deleting a lease with `sync` collects.
async fn collect_garbage(client: &Client) {
    let id = "stockade-test-gc".to_string();
    client
        .leases()
        .create(client.request(CreateLeaseRequest {
            id: id.clone(),
            labels: HashMap::new(),
        }))
        .await
        .unwrap();
    client
        .leases()
        .delete(client.request(DeleteLeaseRequest { id, sync: true }))
        .await
        .unwrap();
}

async fn content_exists(client: &Client, digest: &str) -> bool {
    client
        .content()
        .info(client.request(InfoRequest {
            digest: digest.to_string(),
        }))
        .await
        .is_ok()
}

async fn snapshot_count(client: &Client) -> usize {
    let mut s = client
        .snapshots()
        .list(client.request(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(r) = s.next().await {
        n += r.unwrap().info.len();
    }
    n
}

async fn image_names(client: &Client) -> Vec<String> {
    let mut v: Vec<String> = client
        .images()
        .list(client.request(ListImagesRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.name)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn busybox_builds_resolves_and_survives_garbage_collection() {
    if !common::require_root_or_skip("image build") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;

    let t = Instant::now();
    let built = build::build(
        &client,
        "busybox",
        None,
        &build::BuildHost::system(),
        &NoProgress,
    )
    .await
    .unwrap();
    eprintln!(
        "build busybox: {:?} (rootfs {:.3}s, layer {:.3}s, store {:.3}s, {} entries, {} bytes)",
        t.elapsed(),
        built.seconds_rootfs,
        built.seconds_layer,
        built.seconds_store,
        built.entries,
        built.layer_size
    );
    assert_eq!(built.image.name, "docker.io/stockade/busybox:latest");

    let mut times = Vec::new();
    let mut r = None;
    for _ in 0..50 {
        let t = Instant::now();
        r = Some(images::resolve(&client, "stockade/busybox").await.unwrap());
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "resolve x50: min {:?}, median {:?}, max {:?}",
        times[0], times[25], times[49]
    );
    let r = r.unwrap();
    assert_eq!(r, built.image);
    assert_eq!(
        images::resolve(&client, "stockade/busybox:latest")
            .await
            .unwrap(),
        r
    );
    assert_eq!(r.snapshotter, SNAPSHOTTER);
    assert_eq!(r.config.cmd, vec!["/bin/sh"]);
    assert_eq!(r.config.working_dir, "/workspace");
    assert!(r.config.env.iter().any(|e| e.starts_with("PATH=")));

    // The import lease is gone; a collection must keep the snapshot and every blob.
    collect_garbage(&client).await;
    let info = store::stat_snapshot(&client, &r.chain_id)
        .await
        .unwrap()
        .expect("snapshot kept");
    assert_eq!(info.kind, Kind::Committed as i32);
    let exported = archive::export(&client, "stockade/busybox").await.unwrap();
    assert_eq!(exported.manifest_descriptor.digest, r.manifest_digest);
    for l in &exported.layers {
        assert!(content_exists(&client, &l.descriptor.digest).await);
    }
    // The snapshot really holds the root filesystem: busybox and its applets.
    assert_eq!(exported.layers.len(), 1);
    let images::store::BlobSource::Bytes(layer) = &exported.layers[0].source else {
        panic!("export reads into memory")
    };
    let names: Vec<String> = tar::Archive::new(&layer[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for want in [
        "bin/busybox",
        "bin/sh",
        "etc/passwd",
        "tmp",
        "workspace",
        "input",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing");
    }
}

#[tokio::test]
async fn building_twice_is_idempotent_and_deterministic() {
    if !common::require_root_or_skip("image build") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let host = build::BuildHost::system();
    let a = build::build(&client, "busybox", None, &host, &NoProgress)
        .await
        .unwrap();
    let snapshots = snapshot_count(&client).await;
    let b = build::build(&client, "busybox", None, &host, &NoProgress)
        .await
        .unwrap();
    assert_eq!(a.image, b.image, "same recipe, same image");
    assert_eq!(snapshot_count(&client).await, snapshots);
    assert_eq!(
        image_names(&client).await,
        vec!["docker.io/stockade/busybox:latest"]
    );
}

#[tokio::test]
async fn missing_images_and_rm() {
    if !common::require_root_or_skip("image rm") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let err = images::resolve(&client, "stockade/busybox")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "image `stockade/busybox` not found in namespace stockade (build it with `stockade image build busybox`)"
    );

    let r = common::busybox_image(&client).await;
    // Another namespace does not see it.
    let other = client.in_namespace("elsewhere");
    assert!(matches!(
        images::resolve(&other, "stockade/busybox").await,
        Err(ImageError::NotFound { .. })
    ));

    assert_eq!(
        images::remove(&client, "stockade/busybox").await.unwrap(),
        "docker.io/stockade/busybox:latest"
    );
    assert!(matches!(
        images::resolve(&client, "stockade/busybox").await,
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        images::remove(&client, "stockade/busybox").await,
        Err(ImageError::NotFound { .. })
    ));
    // Nothing else holds them, so the collector dropped the snapshot and the blobs.
    collect_garbage(&client).await;
    assert!(store::stat_snapshot(&client, &r.chain_id)
        .await
        .unwrap()
        .is_none());
    assert!(!content_exists(&client, &r.manifest_digest).await);
}

#[tokio::test]
async fn oci_layout_import_round_trips_and_is_idempotent() {
    if !common::require_root_or_skip("image import") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let r = common::busybox_image(&client).await;
    let tmp = scratch();
    let tarball = tmp.path().join("busybox-oci.tar");
    let exported = archive::export(&client, "stockade/busybox").await.unwrap();
    archive::write_oci_layout(&tarball, "copied:1", &exported).unwrap();

    // Into a second namespace: the same containerd, nothing shared at the image level.
    let other = client.in_namespace("imported");
    let first = archive::import(&other, &tarball, None, tmp.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].name, "docker.io/library/copied:1");
    assert_eq!(first[0].manifest_digest, r.manifest_digest);
    assert_eq!(first[0].chain_id, r.chain_id);
    assert_eq!(first[0].config, r.config);
    let snapshots = snapshot_count(&other).await;
    let again = archive::import(&other, &tarball, None, tmp.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(snapshot_count(&other).await, snapshots);
    assert_eq!(
        image_names(&other).await,
        vec!["docker.io/library/copied:1"]
    );

    // gzip-compressed archive, renamed.
    let gz = tmp.path().join("busybox-oci.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&tarball).unwrap()).unwrap();
    enc.finish().unwrap();
    let renamed = archive::import(&other, &gz, Some("renamed"), tmp.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(renamed[0].name, "docker.io/library/renamed:latest");
    assert_eq!(
        images::resolve(&other, "renamed").await.unwrap().chain_id,
        r.chain_id
    );
}

/// A `docker save`-shaped tarball: manifest.json, `<id>.json` config, `<id>/layer.tar`
/// (here one layer gzip-compressed, as newer Dockers may write).
fn write_docker_save(out: &Path, image: &store::PreparedImage, tag: &str, gzip_layer: bool) {
    common::write_docker_save(out, &image.config, image, tag, |bytes| {
        if gzip_layer {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap()
        } else {
            bytes.to_vec()
        }
    });
}

#[tokio::test]
async fn docker_save_import_works_plain_and_gzip() {
    if !common::require_root_or_skip("image import") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let r = common::busybox_image(&client).await;
    let exported = archive::export(&client, "stockade/busybox").await.unwrap();
    let tmp = scratch();
    for (gzip, tag) in [(false, "savedbox:1"), (true, "savedbox:gz")] {
        let tarball = tmp.path().join(format!("save-{gzip}.tar"));
        write_docker_save(&tarball, &exported, tag, gzip);
        let got = archive::import(&client, &tarball, None, tmp.path(), &NoProgress)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, format!("docker.io/library/{tag}"));
        // Same layer content: the same snapshot, whatever the compression.
        assert_eq!(got[0].chain_id, r.chain_id);
        assert_eq!(got[0].config, r.config);
        let resolved = images::resolve(&client, tag).await.unwrap();
        assert_eq!(resolved, got[0]);
    }
}

/// `docker save busybox:latest` imported as a new user would: it becomes Docker's
/// `busybox` (docker.io/library/busybox:latest) beside the built-in `stockade/busybox`,
/// which keeps its digest; importing another image under the same name says what it
/// replaced; an archive naming the built-in repository is refused whole.
#[tokio::test]
async fn a_docker_save_of_busybox_never_replaces_the_built_in() {
    if !common::require_root_or_skip("image import") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let builtin = common::busybox_image(&client).await;
    let exported = archive::export(&client, "stockade/busybox").await.unwrap();
    // The user's busybox: same files, another config (so another manifest).
    let variant = |cmd: &str| {
        let mut image = exported.clone();
        image.config_file.config.cmd = vec![cmd.to_string()];
        image.config = serde_json::to_vec(&image.config_file).unwrap();
        image.config_descriptor = stockade::images::oci::Descriptor::new(
            &exported.config_descriptor.media_type,
            &image.config,
        );
        image
    };
    let tmp = scratch();
    let save = tmp.path().join("busybox-save.tar");
    write_docker_save(&save, &variant("/bin/echo"), "busybox:latest", false);
    let got = archive::import(&client, &save, None, tmp.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(got[0].name, "docker.io/library/busybox:latest");
    assert_eq!(got[0].replaced, None);
    assert_ne!(got[0].manifest_digest, builtin.manifest_digest);
    let still = images::resolve(&client, "stockade/busybox").await.unwrap();
    assert_eq!(still.manifest_digest, builtin.manifest_digest);
    assert_eq!(
        images::resolve(&client, "busybox")
            .await
            .unwrap()
            .manifest_digest,
        got[0].manifest_digest
    );

    // Another image under the same name replaces it, and says so.
    let save2 = tmp.path().join("busybox-save-2.tar");
    write_docker_save(&save2, &variant("/bin/true"), "busybox:latest", false);
    let again = archive::import(&client, &save2, None, tmp.path(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        again[0].replaced.as_deref(),
        Some(got[0].manifest_digest.as_str())
    );

    // The built-in repository is not for imports, whether the archive or --name says so.
    let hostile = tmp.path().join("stockade-save.tar");
    write_docker_save(
        &hostile,
        &variant("/bin/false"),
        "stockade/busybox:latest",
        false,
    );
    let before = image_names(&client).await;
    let err = archive::import(&client, &hostile, None, tmp.path(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Reserved { .. }), "{err}");
    let err = archive::import(
        &client,
        &save,
        Some("stockade/python"),
        tmp.path(),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::Reserved { .. }), "{err}");
    assert_eq!(image_names(&client).await, before);
    assert_eq!(
        images::resolve(&client, "stockade/busybox")
            .await
            .unwrap()
            .manifest_digest,
        builtin.manifest_digest
    );

    // The CLI says so on stderr, in one line.
    let out = stockade(&["image", "import", save.to_str().unwrap()], d.address());
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("busybox:latest: replaced the image it named before (sha256:"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("busybox:latest sha256:"));
    let out = stockade(&["image", "import", hostile.to_str().unwrap()], d.address());
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("`stockade/busybox:latest` is reserved"),
        "{err}"
    );
}

#[tokio::test]
async fn corrupted_archives_fail_clearly() {
    if !common::require_root_or_skip("image import") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    common::busybox_image(&client).await;
    let exported = archive::export(&client, "stockade/busybox").await.unwrap();
    let tmp = scratch();
    let good = tmp.path().join("good.tar");
    archive::write_oci_layout(&good, "x:1", &exported).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let other = client.in_namespace("corrupt");

    // Truncated in the middle of the layer.
    let truncated = tmp.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // One byte of the layer flipped (the layer is the last and largest blob).
    let flipped = tmp.path().join("flipped.tar");
    let mut f = bytes.clone();
    let at = bytes.len() - 4096;
    f[at] ^= 0x55;
    std::fs::write(&flipped, &f).unwrap();
    // Not a tar at all.
    let garbage = tmp.path().join("garbage.tar");
    std::fs::write(&garbage, b"this is not an image archive\n".repeat(40)).unwrap();

    for (path, want) in [
        (&truncated, "truncated.tar"),
        (&flipped, "digest mismatch"),
        (&garbage, "garbage.tar"),
    ] {
        let err = archive::import(&other, path, None, tmp.path(), &NoProgress)
            .await
            .unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    assert!(image_names(&other).await.is_empty());
}

/// An image record without stockade's labels (as `ctr` would make) still resolves, from
/// the manifest and config in the content store.
#[tokio::test]
async fn a_foreign_record_resolves_from_content() {
    if !common::require_root_or_skip("resolve") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let r = common::busybox_image(&client).await;
    let exported = archive::export(&client, "stockade/busybox").await.unwrap();
    let target = exported.manifest_descriptor.clone();
    client
        .images()
        .create(client.request(CreateImageRequest {
            image: Some(Image {
                name: "example.com/plain:1".into(),
                labels: HashMap::new(),
                target: Some(containerd_client::types::Descriptor {
                    media_type: target.media_type,
                    digest: target.digest,
                    size: target.size,
                    annotations: HashMap::new(),
                }),
                created_at: None,
                updated_at: None,
            }),
            source_date_epoch: None,
        }))
        .await
        .unwrap();
    let got = images::resolve(&client, "example.com/plain:1")
        .await
        .unwrap();
    assert_eq!(got.chain_id, r.chain_id);
    assert_eq!(got.config, r.config);
}

fn stockade(args: &[&str], address: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .arg("--address")
        .arg(address)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_image_commands() {
    if !common::require_root_or_skip("stockade image") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let out = stockade(&["image", "build", "busybox"], d.address());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stockade/busybox:latest sha256:"));

    let out = stockade(&["image", "ls", "--json"], d.address());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "docker.io/stockade/busybox:latest");
    assert_eq!(v[0]["reference"], "stockade/busybox:latest");
    assert!(v[0]["chain_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(v[0]["size"].as_u64().unwrap() > 1_000_000);

    let out = stockade(&["image", "ls"], d.address());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("stockade/busybox:latest"));

    let out = stockade(&["image", "rm", "stockade/busybox"], d.address());
    assert!(out.status.success());
    let out = stockade(&["image", "rm", "stockade/busybox"], d.address());
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image `stockade/busybox` not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = stockade(&["image", "build", "nosuch"], d.address());
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no recipe `nosuch` (known: busybox, python, node)"));

    // An explicit address that does not answer is an error, not a private daemon.
    let dead = d.base().join("dead.sock");
    let out = stockade(&["image", "ls"], &dead);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dead.sock"));
}

/// Mounts a read-only view of `chain_id` at a tempdir, runs `check` on it, and cleans up.
async fn with_view<T>(client: &Client, chain_id: &str, check: impl FnOnce(&Path) -> T) -> T {
    use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
    let key = format!("stockade-test-view-{}", std::process::id());
    let mounts = client
        .snapshots()
        .view(client.request(ViewSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.clone(),
            parent: chain_id.into(),
            labels: HashMap::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let target = tempfile::Builder::new()
        .prefix("stk-view-")
        .tempdir_in("/tmp")
        .unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    let mut flags = nix::mount::MsFlags::MS_RDONLY;
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "ro" => {}
            "rbind" => flags |= nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            "bind" => flags |= nix::mount::MsFlags::MS_BIND,
            other => data.push(other.to_string()),
        }
    }
    let data = data.join(",");
    nix::mount::mount(
        Some(m.source.as_str()),
        target.path(),
        Some(m.r#type.as_str()),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .unwrap();
    /// Unmounts before the tempdir is removed, also when `check` panics (removing a
    /// directory with a mount on it would delete through the mount).
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let result = {
        let _mounted = Unmount(target.path());
        check(target.path())
    };
    client
        .snapshots()
        .remove(client.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key,
        }))
        .await
        .unwrap();
    result
}

/// The python image: slow (mmdebstrap downloads and installs ~30 MB of Debian packages, a
/// minute or two), but it is what the python sandboxes stand on, so CI builds it.
#[tokio::test]
async fn python_builds_from_debian_packages() {
    if !common::require_or_skip(
        "python image build",
        &["/usr/bin/containerd", "/usr/bin/mmdebstrap"],
    ) {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let built = build::build(
        &client,
        "python",
        None,
        &build::BuildHost::system(),
        &NoProgress,
    )
    .await
    .unwrap();
    eprintln!(
        "build python: rootfs {:.1}s, layer {:.1}s, store {:.1}s, {} entries, {} bytes",
        built.seconds_rootfs,
        built.seconds_layer,
        built.seconds_store,
        built.entries,
        built.layer_size
    );
    let r = images::resolve(&client, "stockade/python").await.unwrap();
    assert_eq!(r.config.cmd, vec!["/usr/bin/python3"]);
    with_view(&client, &r.chain_id, |root| {
        assert!(root.join("usr/bin/python3").exists());
        // Documentation, manuals and translations are never unpacked (their directories may
        // remain, empty); apt's lists are removed; merged /usr keeps perl out.
        fn files_under(p: &Path) -> usize {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .unwrap()
                    .flatten()
                    .map(|e| files_under(&e.path()))
                    .sum(),
                Ok(_) => 1,
                Err(_) => 0,
            }
        }
        for gone in [
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
            "var/lib/apt/lists",
            "var/cache/apt",
            "usr/share/perl",
        ] {
            assert_eq!(
                files_under(&root.join(gone)),
                0,
                "{gone} should hold no files"
            );
        }
        assert!(root.join("bin").is_symlink(), "merged /usr");
        // Bytecode is hash-checked (flags word 1 = hash-based, unchecked), so fixed mtimes
        // cost nothing at import time.
        let pyc = std::fs::read_dir(root.join("usr/lib/python3.11/__pycache__"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("os."))
            .unwrap();
        let bytes = std::fs::read(pyc.path()).unwrap();
        assert_eq!(&bytes[4..8], &[1, 0, 0, 0]);
    })
    .await;
}

#[tokio::test]
async fn the_busybox_snapshot_holds_a_usable_root() {
    if !common::require_root_or_skip("snapshot view") {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    let r = common::busybox_image(&client).await;
    with_view(&client, &r.chain_id, |root| {
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.contains("nobody:x:65534:65534:"));
        assert!(std::fs::read_to_string(root.join("etc/hosts"))
            .unwrap()
            .contains("127.0.0.1\tlocalhost"));
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        use std::os::unix::fs::PermissionsExt;
        let tmp = std::fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        for dir in ["dev", "proc", "sys", "workspace", "input"] {
            assert!(root.join(dir).is_dir(), "{dir}");
        }
        // Runs on the host too: it is static.
        let out = Command::new(root.join("bin/busybox"))
            .args(["echo", "ok"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"ok\n");
    })
    .await;
}

/// The node image: Debian's nodejs (a minute or two of mmdebstrap), and a sandbox on it
/// runs `node -e` under the default policy.
#[tokio::test]
async fn node_builds_from_debian_packages_and_runs_node_e() {
    if !common::require_or_skip(
        "node image build",
        &[
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            "/usr/bin/mmdebstrap",
        ],
    ) {
        return;
    }
    let d = common::PrivateContainerd::start().await;
    let out = stockade(&["image", "build", "node"], d.address());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8_lossy(&out.stdout);
    eprintln!("build node: {built}");
    assert!(built.starts_with("stockade/node:latest sha256:"), "{built}");
    let fifo = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args([
            "run",
            "--no-audit-log",
            "--image",
            "stockade/node",
            "--address",
        ])
        .arg(d.address())
        .arg("--fifo-root")
        .arg(fifo.path().join("fifo"))
        .args([
            "--",
            "node",
            "-e",
            "console.log(6 * 7, typeof process.versions.v8)",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42 string\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}
