//! Base images against a real (private) containerd: build, resolve, idempotence, removal,
//! import of OCI-layout and docker-save tarballs, and clear errors for broken ones.

mod common;

use std::time::Instant;

use stockade::images::{self, build, store, ImageError, NoProgress, SNAPSHOTTER};

#[tokio::test]
async fn busybox_builds_resolves_and_is_committed() {
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
    assert_eq!(built.image.name, "stockade/busybox:latest");

    let t = Instant::now();
    let r = images::resolve(&client, "busybox").await.unwrap();
    eprintln!("resolve: {:?}", t.elapsed());
    assert_eq!(r, built.image);
    assert_eq!(r.snapshotter, SNAPSHOTTER);
    assert_eq!(r.config.cmd, vec!["/bin/sh"]);
    assert_eq!(r.config.working_dir, "/workspace");

    let info = store::stat_snapshot(&client, &r.chain_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info.kind,
        containerd_client::services::v1::snapshots::Kind::Committed as i32
    );
}
