//! The fake's snapshots: Prepare, Stat, Remove, Mounts and List over the model, with the
//! refusals containerd's snapshotter makes (a missing parent, a key taken, a missing key).

use containerd_client::services::v1::snapshots::{Info, Kind, PrepareSnapshotRequest};
use containerd_client::types::Mount;

use super::{passes, status, FakeContainerd, Op};
use crate::containerd::api::Rpc;

/// The mounts of the active snapshot `key` on `parent`, as containerd's overlayfs
/// snapshotter answers them.
fn overlay(key: &str, parent: &str) -> Vec<Mount> {
    vec![Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            "index=off".into(),
            format!("workdir=/fake/snapshots/{key}/work"),
            format!("upperdir=/fake/snapshots/{key}/fs"),
            format!("lowerdir={parent}"),
        ],
    }]
}

pub(super) fn prepare(fake: &FakeContainerd, req: PrepareSnapshotRequest) -> Rpc<'_, Vec<Mount>> {
    let key = req.key.clone();
    fake.answer(Op::PrepareSnapshot, "prepare snapshot", &key, move |f| {
        let op = "prepare snapshot";
        let mut s = f.lock();
        if !s.snapshots.contains_key(&req.parent) {
            return Err(status(op, tonic::Code::NotFound, "no such parent"));
        }
        if s.snapshots.contains_key(&req.key) {
            return Err(status(op, tonic::Code::AlreadyExists, "key taken"));
        }
        let info = Info {
            name: req.key.clone(),
            parent: req.parent.clone(),
            kind: Kind::Active as i32,
            labels: req.labels,
            ..Default::default()
        };
        s.snapshots.insert(req.key.clone(), info);
        Ok(overlay(&req.key, &req.parent))
    })
}

pub(super) fn stat<'a>(fake: &'a FakeContainerd, key: &'a str) -> Rpc<'a, Info> {
    fake.answer(Op::StatSnapshot, "stat snapshot", key, move |f| {
        f.lock()
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| status("stat snapshot", tonic::Code::NotFound, "no such key"))
    })
}

pub(super) fn remove<'a>(fake: &'a FakeContainerd, key: &'a str) -> Rpc<'a, ()> {
    fake.answer(Op::RemoveSnapshot, "remove snapshot", key, move |f| match f
        .lock()
        .snapshots
        .remove(key)
    {
        Some(_) => Ok(()),
        None => Err(status(
            "remove snapshot",
            tonic::Code::NotFound,
            "no such key",
        )),
    })
}

pub(super) fn mounts<'a>(fake: &'a FakeContainerd, key: &'a str) -> Rpc<'a, Vec<Mount>> {
    fake.answer(Op::SnapshotMounts, "snapshot mounts", key, move |f| {
        let s = f.lock();
        match s.snapshots.get(key) {
            Some(i) if i.kind == Kind::Active as i32 => Ok(overlay(key, &i.parent)),
            Some(_) => Err(status(
                "snapshot mounts",
                tonic::Code::FailedPrecondition,
                "not an active snapshot",
            )),
            None => Err(status(
                "snapshot mounts",
                tonic::Code::NotFound,
                "no such key",
            )),
        }
    })
}

pub(super) fn list(fake: &FakeContainerd, filters: Vec<String>) -> Rpc<'_, Vec<Info>> {
    fake.answer(Op::ListSnapshots, "list snapshots", "", move |f| {
        let s = f.lock();
        let v = s.snapshots.values().filter(|i| passes(&filters, &i.labels));
        Ok(v.cloned().collect())
    })
}
