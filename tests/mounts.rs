//! Docker-style mounts against a real containerd: two `-v` binds (one read-only), two
//! tmpfs mounts (one `noexec` by default, one `exec`) and `-w`, read and written from
//! inside; the read-only bind refuses writes with EROFS; what the sandbox wrote reaches the
//! host owned by the policy's user (not the sandbox's own UID); nothing is left after.

mod common;
mod run_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stockade::host::{self, HostPaths};
use stockade::policy::{BindMount, HostPolicyEnv, Policy, PolicyOverrides, TmpfsMount};
use stockade::runner::{CleanupMode, RunRequest, Runner, StoreImages};

use common::{busybox_image, require_root_or_skip, PrivateContainerd};
use run_support::assert_no_leftovers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_binds_and_tmpfs_are_read_and_written_and_ro_is_erofs() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let fifo = tempfile::tempdir().unwrap();
    let runner = Runner::builder()
        .client(client.clone())
        .host(host::probe(&HostPaths::system()).expect("probe host"))
        .images(Arc::new(StoreImages::default()))
        .fifo_root(fifo.path())
        .cleanup(CleanupMode::Inline)
        .build()
        .expect("runner");

    let dirs = tempfile::tempdir_in("/tmp").unwrap();
    let input = dirs.path().join("in");
    let out = dirs.path().join("out");
    std::fs::create_dir(&input).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(input.join("hello"), "from the host\n").unwrap();
    // The policy's user (65534) writes the read-write bind.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let bind = |s: String| BindMount::parse(&s).unwrap();
    let policy = Policy::default()
        .validate(
            None,
            &PolicyOverrides {
                mounts: vec![
                    bind(format!("{}:/data/in:ro", input.display())),
                    bind(format!("{}:/data/out", out.display())),
                ],
                tmpfs: vec![
                    TmpfsMount::parse("/cache:size=8m").unwrap(),
                    TmpfsMount::parse("/build:size=8m,exec").unwrap(),
                ],
                cwd: Some("/data/out".into()),
                ..Default::default()
            },
            &HostPolicyEnv,
        )
        .expect("valid policy");
    let script = "cat /data/in/hello; \
         echo written > f && cat /data/out/f; \
         touch /data/in/x 2>&1; \
         echo t > /cache/t && cat /cache/t; \
         cp /bin/busybox /cache/true && /cache/true 2>/dev/null && echo cache-exec; \
         cp /bin/busybox /build/true && /build/true && echo build-exec; \
         pwd; grep -E ' /(cache|build) ' /proc/mounts | cut -d' ' -f2,4";
    let id = stockade::runner::new_id();
    let r = runner
        .run(RunRequest::new(policy, ["sh", "-c", script]).id(id.clone()))
        .await
        .expect("run");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert_eq!(lines[0], "from the host", "{r:?}");
    assert_eq!(lines[1], "written");
    assert_eq!(
        lines[2], "touch: /data/in/x: Read-only file system",
        "EROFS"
    );
    assert_eq!(lines[3], "t");
    assert!(!r.stdout.contains("cache-exec"), "a tmpfs is noexec: {r:?}");
    assert_eq!(lines[4], "build-exec", "`exec` allows it: {r:?}");
    assert_eq!(lines[5], "/data/out", "-w");
    let opts: Vec<&str> = lines[6..].to_vec();
    assert!(
        opts.iter()
            .any(|l| l.starts_with("/cache ") && l.contains("nosuid,nodev,noexec")),
        "{opts:?}"
    );
    assert!(
        opts.iter().any(|l| l.starts_with("/build ")
            && l.contains("nosuid,nodev")
            && !l.contains("noexec")),
        "{opts:?}"
    );

    // The host sees the write, owned by the policy's user; nothing reached the input.
    let f = std::fs::metadata(out.join("f")).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("f")).unwrap(), "written\n");
    assert_eq!((f.uid(), f.gid()), (65534, 65534));
    assert!(!input.join("x").exists());

    assert_no_leftovers(
        &client,
        c.address(),
        fifo.path(),
        Some(std::slice::from_ref(&id)),
        Duration::from_secs(30),
    )
    .await;
    assert!(Path::new(&out).exists(), "the host directories stay");
}

/// A root-owned 0755 workspace (what `mkdir` as root gives) with the default user: refused
/// before the sandbox starts, in one line, exit 125; with `--workspace-owner sandbox` the
/// directory is given to the policy's user and the sandbox writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_workspace_is_refused_at_start_and_workspace_owner_fixes_it() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let fifo = tempfile::tempdir().unwrap();
    let runner = Runner::builder()
        .client(client.clone())
        .host(host::probe(&HostPaths::system()).expect("probe host"))
        .images(Arc::new(StoreImages::default()))
        .fifo_root(fifo.path())
        .cleanup(CleanupMode::Inline)
        .build()
        .expect("runner");
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let ws = t.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = |owner: Option<&str>| {
        Policy::default()
            .validate(
                None,
                &PolicyOverrides {
                    workspace: Some(ws.clone()),
                    workspace_owner: owner.map(str::to_string),
                    ..Default::default()
                },
                &HostPolicyEnv,
            )
            .expect("valid policy")
    };
    let script = ["sh", "-c", "echo hi > /workspace/f && cat /workspace/f"];

    let refused = stockade::runner::new_id();
    let e = runner
        .run(RunRequest::new(policy(None), script).id(refused.clone()))
        .await
        .expect_err("refused");
    let line = e.to_string();
    assert_eq!(e.exit_code(), 125, "{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains(ws.to_str().unwrap())
            && line.contains("owner 0:0, mode 0755")
            && line.contains("65534:65534")
            && line.contains("--workspace-owner sandbox"),
        "{line}"
    );
    assert_eq!(std::fs::metadata(&ws).unwrap().uid(), 0);

    let fixed = stockade::runner::new_id();
    let r = runner
        .run(RunRequest::new(policy(Some("sandbox")), script).id(fixed.clone()))
        .await
        .expect("run");
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "hi\n"), "{r:?}");
    let dir = std::fs::metadata(&ws).unwrap();
    let file = std::fs::metadata(ws.join("f")).unwrap();
    assert_eq!((dir.uid(), dir.gid()), (65534, 65534));
    assert_eq!(
        (file.uid(), file.gid()),
        (65534, 65534),
        "the policy's user, not the sandbox's own UID {}",
        r.uid
    );

    assert_no_leftovers(
        &client,
        c.address(),
        fifo.path(),
        Some(&[refused, fixed]),
        Duration::from_secs(30),
    )
    .await;
}
