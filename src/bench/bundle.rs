//! A runc bundle per workload for the `runc run` contender: the image's committed base
//! snapshot mounted read-only through a containerd view snapshot (the very root filesystem
//! stockade and ctr run), and stockade's own spec for the policy with an absolute root path.
//! Everything is removed by [`Bundles::remove`]; a `Bundles` dropped without it (an early
//! return, a panic) still unmounts its views and removes its directory at once, and hands
//! the view snapshots' removal to the runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use containerd_client::services::v1::snapshots::{RemoveSnapshotRequest, ViewSnapshotRequest};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{BenchError, Workload};
use crate::containerd::Client;
use crate::host::HostFacts;
use crate::images::ImageRef;
use crate::policy::ValidatedPolicy;
use crate::spec::{self, SpecRequest};

pub(super) struct Bundles {
    client: Client,
    snapshotter: String,
    dir: PathBuf,
    views: Vec<String>,
    mounts: Vec<PathBuf>,
    bundles: Vec<(String, PathBuf)>,
}

fn setup_err(what: &str) -> impl Fn(String) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

impl Bundles {
    pub async fn prepare(
        client: &Client,
        host: &HostFacts,
        policy: &ValidatedPolicy,
        workloads: &[Workload],
        images: &BTreeMap<String, ImageRef>,
        work_dir: &Path,
    ) -> Result<Bundles, BenchError> {
        let dir = work_dir.join(format!("runc-bench-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("state"))
            .map_err(|e| setup_err("creating the bundle directory")(e.to_string()))?;
        let mut b = Bundles {
            client: client.clone(),
            snapshotter: crate::runner::DEFAULT_SNAPSHOTTER.to_string(),
            dir,
            views: Vec::new(),
            mounts: Vec::new(),
            bundles: Vec::new(),
        };
        if let Err(e) = b.fill(host, policy, workloads, images).await {
            b.remove().await;
            return Err(e);
        }
        Ok(b)
    }

    async fn fill(
        &mut self,
        host: &HostFacts,
        policy: &ValidatedPolicy,
        workloads: &[Workload],
        images: &BTreeMap<String, ImageRef>,
    ) -> Result<(), BenchError> {
        let mut rootfs_of: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (name, img) in images {
            let key = format!("bench-view-{}-{}", std::process::id(), self.views.len());
            let resp = self
                .client
                .snapshots()
                .view(self.client.request(ViewSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.clone(),
                    parent: img.chain_id.clone(),
                    labels: Default::default(),
                }))
                .await
                .map_err(|s| {
                    BenchError::Setup(format!("Snapshots.View of {name}: {}", s.message()))
                })?
                .into_inner();
            self.views.push(key);
            let target = self.dir.join(format!("rootfs-{}", self.views.len()));
            std::fs::create_dir_all(&target)
                .map_err(|e| setup_err("creating a rootfs mount point")(e.to_string()))?;
            let m = resp
                .mounts
                .first()
                .ok_or_else(|| BenchError::Setup("Snapshots.View returned no mount".into()))?;
            mount_one(&m.r#type, &m.source, &m.options, &target)
                .map_err(setup_err("mounting the view"))?;
            self.mounts.push(target.clone());
            rootfs_of.insert(name.clone(), target);
        }
        for w in workloads {
            let Some(rootfs) = rootfs_of.get(&w.image) else {
                continue;
            };
            let mut p = policy.clone();
            p.image = w.image.clone();
            let built = spec::build(
                &p,
                host,
                &SpecRequest {
                    id: "runc-bench",
                    args: &w.args,
                    terminal: false,
                },
            )
            .map_err(|e| BenchError::Setup(e.to_string()))?;
            let mut json = spec::canonical_json(&built.spec);
            json["root"]["path"] = serde_json::Value::String(rootfs.display().to_string());
            // runc names the cgroup after the container id when no path is given, so
            // concurrent runs of one bundle do not collide.
            if let Some(linux) = json["linux"].as_object_mut() {
                linux.remove("cgroupsPath");
            }
            let bdir = self.dir.join(format!("bundle-{}", w.name));
            std::fs::create_dir_all(&bdir)
                .and_then(|_| {
                    std::fs::write(
                        bdir.join("config.json"),
                        serde_json::to_vec_pretty(&json).unwrap_or_default(),
                    )
                })
                .map_err(|e| setup_err("writing config.json")(e.to_string()))?;
            self.bundles.push((w.name.clone(), bdir));
        }
        Ok(())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn list(&self) -> Vec<(String, PathBuf)> {
        self.bundles.clone()
    }

    /// Unmounts the views, removes the view snapshots and the directory.
    pub async fn remove(mut self) {
        self.unmount();
        remove_views(
            self.client.clone(),
            self.snapshotter.clone(),
            std::mem::take(&mut self.views),
        )
        .await;
    }

    /// Unmounts the views and removes the directory (what needs no RPC).
    fn unmount(&mut self) {
        for m in std::mem::take(&mut self.mounts) {
            if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                tracing::warn!("unmounting {}: {e}", m.display());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Bundles {
    fn drop(&mut self) {
        self.unmount();
        let views = std::mem::take(&mut self.views);
        if views.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(remove_views(
                    self.client.clone(),
                    self.snapshotter.clone(),
                    views,
                ));
            }
            Err(_) => tracing::warn!("view snapshots left for `stockade gc`: {views:?}"),
        }
    }
}

async fn remove_views(client: Client, snapshotter: String, views: Vec<String>) {
    for key in views {
        let _ = client
            .snapshots()
            .remove(client.request(RemoveSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key,
            }))
            .await;
    }
}

/// Mounts one containerd mount (`bind` or `overlay`) read-only at `target`.
fn mount_one(typ: &str, source: &str, options: &[String], target: &Path) -> Result<(), String> {
    match typ {
        "bind" => {
            mount(
                Some(source),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("bind {source}: {e}"))?;
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| format!("read-only remount: {e}"))
        }
        "overlay" => {
            let data: Vec<&str> = options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "ro" && *o != "rw")
                .collect();
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(data.join(",").as_str()),
            )
            .map_err(|e| format!("overlay: {e}"))
        }
        other => Err(format!("unsupported mount type {other}")),
    }
}
