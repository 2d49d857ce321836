//! `-v` binds and `--tmpfs` mounts → the spec's mounts.

use super::*;
use crate::policy::{BindMount, TmpfsMount};

fn with_mounts(binds: &[&str], tmpfs: &[&str]) -> Value {
    let p = policy(
        "",
        PolicyOverrides {
            mounts: binds.iter().map(|b| BindMount::parse(b).unwrap()).collect(),
            tmpfs: tmpfs
                .iter()
                .map(|t| TmpfsMount::parse(t).unwrap())
                .collect(),
            cwd: Some("/data".into()),
            ..Default::default()
        },
    );
    build_json(&p, &HostFacts::capable_v2(), false).0
}

fn find<'a>(spec: &'a Value, dest: &str) -> &'a Value {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
        .unwrap_or_else(|| panic!("no mount at {dest}"))
}

#[test]
fn binds_are_private_nosuid_nodev_and_read_only_when_asked() {
    let s = with_mounts(&["/a:/data:ro", "/b:/out"], &[]);
    let data = find(&s, "/data");
    assert_eq!(data["type"], "bind");
    assert_eq!(data["source"], "/srv/a");
    assert_eq!(
        sorted(&data["options"]),
        ["bind", "nodev", "nosuid", "ro", "rprivate"]
    );
    assert_eq!(
        sorted(&find(&s, "/out")["options"]),
        ["bind", "nodev", "nosuid", "rprivate", "rw"]
    );
    assert_eq!(s["process"]["cwd"], "/data");
}

#[test]
fn tmpfs_is_nosuid_nodev_noexec_and_sized_unless_it_says_exec() {
    let s = with_mounts(&[], &["/cache", "/build:size=1g,mode=0755,exec"]);
    let cache = find(&s, "/cache");
    assert_eq!(cache["type"], "tmpfs");
    assert_eq!(
        sorted(&cache["options"]),
        ["mode=1777", "nodev", "noexec", "nosuid", "size=65536k"]
    );
    assert_eq!(
        sorted(&find(&s, "/build")["options"]),
        ["mode=755", "nodev", "nosuid", "size=1048576k"]
    );
}

#[test]
fn parents_are_mounted_before_what_lies_beneath_them() {
    let s = with_mounts(&["/b:/data/deep/er", "/a:/data"], &["/data/deep"]);
    let order: Vec<&str> = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .filter(|d| d.starts_with("/data"))
        .collect();
    assert_eq!(order, ["/data", "/data/deep", "/data/deep/er"]);
}

#[test]
fn a_run_stages_every_bind_by_its_own_name() {
    let s = with_mounts(&["/a:/data", "/b:/out"], &["/cache"]);
    let mut spec: Spec = serde_json::from_value(s).unwrap();
    stage_binds(
        &mut spec,
        Path::new("/run/x/binds"),
        &[
            ("/data", "bind-0"),
            ("/out", "bind-1"),
            ("/cache", "bind-9"),
        ],
    );
    let source = |d: &str| {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(d))
            .unwrap()
            .source()
            .clone()
            .unwrap()
    };
    assert_eq!(source("/data"), Path::new("/run/x/binds/bind-0"));
    assert_eq!(source("/out"), Path::new("/run/x/binds/bind-1"));
    // Only binds are staged: a tmpfs keeps its source.
    assert_eq!(source("/cache"), Path::new("tmpfs"));
}
