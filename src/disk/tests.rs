use super::*;
use crate::policy::{Policy, PolicyOverrides};
use containerd_client::types::Mount;

fn policy(o: PolicyOverrides) -> ValidatedPolicy {
    Policy::default()
        .validate(None, &o, &crate::policy::HostPolicyEnv)
        .unwrap()
}

#[test]
fn the_plan_bounds_every_place_a_sandbox_writes_to_disk() {
    struct Case {
        name: &'static str,
        o: PolicyOverrides,
        want: Vec<(VolumeKind, u64)>,
    }
    let m = |n: u64| n << 20;
    let cases = [
        Case {
            name: "read-only root, no workspace: nothing to bound",
            o: PolicyOverrides::default(),
            want: vec![],
        },
        Case {
            name: "writable root: the whole limit",
            o: PolicyOverrides {
                read_write_root: true,
                disk: Some("256M".into()),
                ..Default::default()
            },
            want: vec![(VolumeKind::Root, m(256))],
        },
        Case {
            name: "writable root, default limit",
            o: PolicyOverrides {
                read_write_root: true,
                ..Default::default()
            },
            want: vec![(VolumeKind::Root, 1 << 30)],
        },
        Case {
            name: "managed workspace on a read-only root",
            o: PolicyOverrides {
                disk: Some("256M".into()),
                workspace_size: Some("256M".into()),
                ..Default::default()
            },
            want: vec![(VolumeKind::Workspace, m(256))],
        },
        Case {
            name: "both: they share the limit",
            o: PolicyOverrides {
                read_write_root: true,
                disk: Some("256M".into()),
                workspace_size: Some("200M".into()),
                ..Default::default()
            },
            want: vec![(VolumeKind::Root, m(56)), (VolumeKind::Workspace, m(200))],
        },
    ];
    for c in cases {
        let p = policy(c.o);
        let got: Vec<_> = plan(&p).iter().map(|v| (v.kind, v.bytes)).collect();
        assert_eq!(got, c.want, "{}", c.name);
        let total: u64 = plan(&p).iter().map(|v| v.bytes).sum();
        assert!(total <= p.limits.disk, "{}: {total} over the limit", c.name);
        for v in plan(&p) {
            assert_eq!(v.inodes, inodes_for(v.bytes), "{}", c.name);
        }
        let used = DiskUse::of(&p, plan(&p));
        let want = if plan(&p).is_empty() {
            "none"
        } else {
            "loop-ext4"
        };
        assert_eq!(used.mechanism, want, "{}", c.name);
    }
}

#[test]
fn inodes_are_bounded_with_the_size() {
    let cases = [
        (16u64 << 20, 1024u64),
        (256 << 20, 16384),
        (1 << 30, 65536),
        (1 << 40, 1 << 26),
    ];
    for (bytes, want) in cases {
        assert_eq!(inodes_for(bytes), want, "{bytes}");
    }
    // The integration tests' flood: 100,000 empty files cannot fit in 256 MiB.
    assert!(inodes_for(256 << 20) < 100_000);
}

#[test]
fn the_mechanism_follows_what_the_host_has() {
    let facts = |loop_control: bool, ext4: bool, missing: &[&str]| DiskFacts {
        fs_type: Some("ext4".into()),
        fs_options: vec!["rw".into()],
        loop_control,
        tools: TOOLS
            .iter()
            .map(|t| (t.to_string(), !missing.contains(t)))
            .collect(),
        ext4,
    };
    let cases: &[(DiskFacts, Result<Mechanism, &str>)] = &[
        (facts(true, true, &[]), Ok(Mechanism::LoopImage)),
        (facts(false, true, &[]), Err("no /dev/loop-control")),
        (facts(true, false, &[]), Err("the kernel has no ext4")),
        (
            facts(true, true, &["mkfs.ext4"]),
            Err("missing mkfs.ext4 (e2fsprogs"),
        ),
        (
            facts(true, true, &["mkfs.ext4", "losetup"]),
            Err("missing mkfs.ext4, losetup"),
        ),
    ];
    for (f, want) in cases {
        match (choose(f), want) {
            (got, Ok(w)) => assert_eq!(&got, w, "{f:?}"),
            (Mechanism::Unavailable { reason }, Err(w)) => {
                assert!(reason.starts_with(w), "{reason:?} vs {w:?}");
            }
            (got, Err(w)) => panic!("{f:?}: got {got:?}, want {w:?}"),
        }
    }
    assert_eq!(Mechanism::LoopImage.name(), "loop-ext4");
}

#[test]
fn project_quotas_are_recognised_from_mount_options() {
    let o = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    let cases = [
        ("xfs", "rw,relatime,attr2,inode64,prjquota", true),
        ("xfs", "rw,relatime,attr2,inode64,pquota", true),
        ("xfs", "rw,relatime,attr2,inode64,pqnoenforce", false),
        ("xfs", "rw,relatime,attr2,inode64,noquota", false),
        ("ext4", "rw,relatime,prjquota", true),
        ("ext4", "rw,relatime,discard", false),
        ("btrfs", "rw,prjquota", false),
        ("tmpfs", "rw", false),
    ];
    for (fs, opts, want) in cases {
        assert_eq!(project_quota(fs, &o(opts)), want, "{fs} {opts}");
    }
}

#[test]
fn the_filesystem_of_a_path_is_its_longest_mount_point() {
    let mountinfo = "\
24 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
25 24 0:22 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=1g
26 24 259:1 / /var/lib/stockade rw shared:7 - xfs /dev/vdb rw,attr2,prjquota
garbage line
";
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("/var/lib/stockade/disk", Some(("xfs", "prjquota"))),
        ("/var/lib/stockadex", Some(("ext4", "discard"))),
        ("/run/stockade", Some(("tmpfs", "size=1g"))),
        ("/", Some(("ext4", "rw"))),
    ];
    for (path, want) in cases {
        let got = fs_of(mountinfo, Path::new(path));
        match (got, want) {
            (Some((t, o)), Some((wt, wo))) => {
                assert_eq!(&t, wt, "{path}");
                assert!(o.contains(&wo.to_string()), "{path}: {o:?}");
            }
            (g, w) => panic!("{path}: got {g:?}, want {w:?}"),
        }
    }
    assert_eq!(fs_of("", Path::new("/x")), None);
}

fn overlay(options: &[&str]) -> Mount {
    Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: options
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
    }
}

#[test]
fn the_rootfs_gets_the_bounded_upper_layer_or_is_refused() {
    let upper = Path::new("/run/s/stk-1/disk-root/upper");
    let work = Path::new("/run/s/stk-1/disk-root/work");
    let (got, old) = bound_rootfs(
        vec![overlay(&[
            "index=off",
            "workdir=/c/snapshots/9/work",
            "upperdir=/c/snapshots/9/fs",
            "lowerdir=/c/snapshots/1/fs",
        ])],
        upper,
        work,
    )
    .unwrap();
    assert_eq!(old, Path::new("/c/snapshots/9/fs"));
    assert_eq!(
        got,
        vec![overlay(&[
            "index=off",
            "workdir=/run/s/stk-1/disk-root/work",
            "upperdir=/run/s/stk-1/disk-root/upper",
            "lowerdir=/c/snapshots/1/fs",
        ])]
    );
    // Never passed on unbounded.
    let bind = Mount {
        r#type: "bind".into(),
        source: "/c/snapshots/9/fs".into(),
        target: String::new(),
        options: vec!["rbind".into(), "rw".into()],
    };
    let refused = [
        vec![bind.clone()],
        vec![],
        vec![overlay(&["lowerdir=/a"])],
        vec![overlay(&["upperdir=/u", "lowerdir=/a"])],
        vec![overlay(&["workdir=/w", "upperdir=/u", "lowerdir=/a"]), bind],
    ];
    for mounts in refused {
        let e = bound_rootfs(mounts.clone(), upper, work).unwrap_err();
        assert!(matches!(e, DiskError::NoOverlay { .. }), "{mounts:?}: {e}");
    }
}

#[test]
fn losetup_output_and_image_names_are_read_strictly() {
    let out = "/dev/loop3: [65024]:10223780 (/var/lib/stockade/disk/stk-ab-root.img)\n\
               /dev/loop12: [65024]:10223781 (/var/lib/stockade/disk/stk-ab-root.img (deleted))\n";
    assert_eq!(parse_losetup_j(out), vec!["/dev/loop3", "/dev/loop12"]);
    assert_eq!(parse_losetup_j(""), Vec::<String>::new());
    assert_eq!(parse_losetup_j("losetup: oops\n"), Vec::<String>::new());
    let names = [
        ("stk-0123abcd-root.img", Some("stk-0123abcd")),
        ("stk-0123abcd-workspace.img", Some("stk-0123abcd")),
        ("stk-0123abcd-root.img.tmp", None),
        ("other-root.img", None),
        ("stk-0123abcd.img", None),
        ("stk-0123abcd-home.img", None),
    ];
    for (n, want) in names {
        assert_eq!(run_of_image(n), want, "{n}");
    }
}

#[test]
fn release_without_a_record_does_nothing_and_orphans_are_found_by_name() {
    let t = tempfile::tempdir().unwrap();
    let run_dir = t.path().join("fifo/stk-live");
    std::fs::create_dir_all(&run_dir).unwrap();
    release(&run_dir).unwrap();
    let disk_root = t.path().join("disk");
    std::fs::create_dir(&disk_root).unwrap();
    for n in [
        "stk-live-root.img",
        "stk-gone-root.img",
        "stk-gone-workspace.img",
        "notes.txt",
    ] {
        std::fs::write(disk_root.join(n), b"").unwrap();
    }
    let mut removed = reclaim_orphans(&disk_root, &t.path().join("fifo")).unwrap();
    removed.sort();
    assert_eq!(
        removed,
        vec![
            disk_root.join("stk-gone-root.img"),
            disk_root.join("stk-gone-workspace.img")
        ]
    );
    let mut left: Vec<_> = std::fs::read_dir(&disk_root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, vec!["notes.txt", "stk-live-root.img"]);
    assert_eq!(
        reclaim_orphans(&t.path().join("none"), t.path()).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn a_host_workspace_is_reported_as_not_enforced() {
    let p = policy(PolicyOverrides::default());
    assert_eq!(host_workspace_not_enforced(&p), None);
    let mut p = p;
    p.workspace = Some(crate::policy::HostDir {
        path: "/srv/w".into(),
        dev: 1,
        ino: 2,
    });
    let n = host_workspace_not_enforced(&p).unwrap();
    assert_eq!(n.protection, "disk");
    assert!(
        n.reason
            .starts_with("disk not enforced for /workspace: /srv/w"),
        "{}",
        n.reason
    );
}

#[test]
fn nothing_is_provisioned_for_a_released_run() {
    let t = tempfile::tempdir().unwrap();
    let run_dir = t.path().join("stk-r");
    std::fs::create_dir(&run_dir).unwrap();
    release(&run_dir).unwrap();
    assert!(run_dir.join(RELEASED_FILE).exists());
    let plan = [Volume {
        kind: VolumeKind::Root,
        bytes: 16 << 20,
        inodes: 1024,
    }];
    let e = provision(&t.path().join("disk"), &run_dir, "stk-r", &plan, (0, 0)).unwrap_err();
    assert!(matches!(e, DiskError::Record { .. }), "{e}");
    assert!(!t.path().join("disk").exists(), "no image made");
    // A run directory that is gone is released already.
    release(&t.path().join("stk-gone")).unwrap();
}
