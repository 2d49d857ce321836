//! Disk limits against a private containerd, through `stockade run` and `stockade gc` as a
//! user runs them: every volume of a run (image file, loop device, mount) is gone once the
//! run is removed, and what a killed stockade left is reclaimed by `stockade gc`, with the
//! image of a run whose directory is gone and whose loop device is still attached.
//! Each test has a disk root and a run root of its own; a guard releases what it finds
//! there even when the test fails.

mod common;
mod run_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_image, require_or_skip, PrivateContainerd};
use run_support::assert_no_leftovers;

const BIN: &str = env!("CARGO_BIN_EXE_stockade");

fn needs() -> bool {
    require_or_skip(
        "loop-mounted disk volumes through containerd",
        &[
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            "/usr/sbin/mkfs.ext4",
            "/usr/sbin/losetup",
        ],
    )
}

/// A run root and a disk root of the test's own. Dropping it releases every run's volumes
/// it finds (unmounting only mounts under its own run root, detaching only loop devices
/// backed by its own images) before the directories go.
struct Roots {
    dir: tempfile::TempDir,
}

impl Roots {
    fn new() -> Roots {
        Roots {
            dir: tempfile::Builder::new()
                .prefix("stk-disk-")
                .tempdir_in("/var/tmp")
                .unwrap(),
        }
    }
    fn fifo(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }
    fn disk(&self) -> PathBuf {
        self.dir.path().join("disk")
    }

    /// The images in the disk root.
    fn images(&self) -> Vec<String> {
        names(&self.disk())
    }

    /// Loop devices attached to a file in the disk root, as `losetup -a` lists them.
    fn loops(&self) -> Vec<String> {
        let out = Command::new("losetup").arg("-a").output().unwrap();
        let disk = self.disk().to_string_lossy().into_owned();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&disk))
            .map(str::to_string)
            .collect()
    }

    /// Mounts under the test's directory.
    fn mounts(&self) -> Vec<String> {
        let base = self.dir.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&base))
            .map(str::to_string)
            .collect()
    }

    /// Fails unless no image, loop device or mount of the test's is left, within `within`
    /// (a loop device's autoclear can trail its unmount).
    fn assert_empty(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let (i, l, m) = (self.images(), self.loops(), self.mounts());
            if i.is_empty() && l.is_empty() && m.is_empty() {
                return;
            }
            if start.elapsed() > within {
                panic!("left after {within:?}: images {i:?}, loop devices {l:?}, mounts {m:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Roots {
    fn drop(&mut self) {
        for run in names(&self.fifo()) {
            let _ = stockade::disk::release(&self.fifo().join(run));
        }
        let _ = stockade::disk::reclaim_orphans(&self.disk(), &self.dir.path().join("none"));
    }
}

fn names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn stockade(sub: &str, socket: &Path, roots: &Roots) -> Command {
    let mut c = Command::new(BIN);
    c.arg(sub)
        .arg("--address")
        .arg(socket)
        .arg("--fifo-root")
        .arg(roots.fifo())
        .arg("--disk-root")
        .arg(roots.disk());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_run_leaves_no_image_loop_device_or_mount() {
    if !needs() {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let roots = Roots::new();
    // Both volumes: the writable root's upper layer and a managed workspace.
    let out = stockade("run", c.address(), &roots)
        .args([
            "--no-run-log",
            "--cleanup",
            "inline",
            "--json",
            "--user",
            "0",
            "--read-write-root",
            "--disk",
            "96M",
            "--workspace-size",
            "48M",
            "--",
            "sh",
            "-c",
            "echo x > /root-file && echo y > /workspace/ws-file && df -k / /workspace | tail -2",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["disk"]["mechanism"], "loop-ext4", "{doc}");
    assert_eq!(doc["disk"]["volumes"].as_array().unwrap().len(), 2, "{doc}");
    // The sandbox saw two filesystems of the volumes' sizes (ext4 keeps a little).
    let stdout = doc["stdout"].as_str().unwrap();
    let sizes: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(sizes.len(), 2, "{stdout}");
    assert!((40 << 10..=48 << 10).contains(&sizes[0]), "root {stdout}");
    assert!(
        (40 << 10..=48 << 10).contains(&sizes[1]),
        "workspace {stdout}"
    );
    roots.assert_empty(Duration::from_secs(5));
    assert_no_leftovers(
        &client,
        c.address(),
        &roots.fifo(),
        None,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reclaims_the_volumes_of_a_killed_run_and_orphaned_images() {
    if !needs() {
        return;
    }
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let roots = Roots::new();
    let mut child = stockade("run", c.address(), &roots)
        .args([
            "--no-run-log",
            "--read-write-root",
            "--disk",
            "64M",
            "--workspace-size",
            "32M",
            "--",
            "sleep",
            "60",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Until both volumes are mounted and the task runs.
    let start = Instant::now();
    while roots.mounts().len() < 2
        || roots.images().len() < 2
        || common::census::running_task(&client).await.is_none()
    {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run never started: {:?}", roots.mounts());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SIGKILL: stockade gets no chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(roots.loops().len(), 2, "both images still attached");

    // An image whose run directory is gone, still attached to a loop device.
    let orphan = roots.disk().join("stk-0000feedface0000-root.img");
    std::fs::File::create(&orphan)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let attached = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&orphan)
        .output()
        .unwrap();
    assert!(attached.status.success(), "{attached:?}");
    // Not ours by name: left alone.
    let foreign = roots.disk().join("notes.img");
    std::fs::write(&foreign, b"keep").unwrap();

    let out = stockade("gc", c.address(), &roots).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("removed {}", orphan.display())),
        "{stdout}"
    );
    std::fs::remove_file(&foreign).unwrap();
    roots.assert_empty(Duration::from_secs(5));
    assert_no_leftovers(
        &client,
        c.address(),
        &roots.fifo(),
        None,
        Duration::from_secs(10),
    )
    .await;
}
