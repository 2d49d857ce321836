use super::*;
use oci_spec::runtime::{MountBuilder, RootBuilder, SpecBuilder};

fn overlay() -> Vec<Mount> {
    vec![Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            "index=off".into(),
            "workdir=/s/9/work".into(),
            "upperdir=/s/9/fs".into(),
            "lowerdir=/s/2/fs:/s/1/fs".into(),
        ],
    }]
}

#[test]
fn a_read_only_root_is_an_overlay_of_lower_layers_only() {
    let p = plan(&overlay(), None, false).unwrap();
    assert_eq!(p.options, ["lowerdir=/s/9/fs:/s/2/fs:/s/1/fs"]);
    assert!(!p.bind);
    let bound = plan(
        &overlay(),
        Some((
            Path::new("/r/disk-root/upper"),
            Path::new("/r/disk-root/work"),
        )),
        false,
    )
    .unwrap();
    assert_eq!(
        bound.options,
        ["lowerdir=/r/disk-root/upper:/s/2/fs:/s/1/fs"],
        "the root volume's upper layer is what the sandbox wrote"
    );
}

#[test]
fn a_writable_root_is_the_overlay_the_task_had() {
    let p = plan(&overlay(), None, true).unwrap();
    assert_eq!(
        p.options,
        [
            "index=off",
            "upperdir=/s/9/fs",
            "workdir=/s/9/work",
            "lowerdir=/s/2/fs:/s/1/fs"
        ]
    );
    let bound = plan(
        &overlay(),
        Some((Path::new("/r/u"), Path::new("/r/w"))),
        true,
    )
    .unwrap();
    assert!(bound.options.contains(&"upperdir=/r/u".to_string()));
    assert!(bound.options.contains(&"workdir=/r/w".to_string()));
}

#[test]
fn unexpected_snapshot_mounts_are_refused() {
    assert!(plan(&[], None, false).is_err());
    let two = [overlay(), overlay()].concat();
    assert!(plan(&two, None, false).is_err());
    let mut odd = overlay();
    odd[0].r#type = "ext4".into();
    assert!(plan(&odd, None, false).is_err());
    let mut lowerless = overlay();
    lowerless[0].options.retain(|o| !o.starts_with("lowerdir="));
    assert!(plan(&lowerless, None, false).is_err());
}

fn spec(root_ro: bool) -> Spec {
    let m = |dest: &str, typ: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source("/src")
            .options(opts.iter().map(ToString::to_string).collect::<Vec<_>>())
            .build()
            .unwrap()
    };
    SpecBuilder::default()
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(root_ro)
                .build()
                .unwrap(),
        )
        .mounts(vec![
            m("/proc", "proc", &[]),
            m("/tmp", "tmpfs", &["size=1m"]),
            m("/workspace", "bind", &["rbind", "rw"]),
            m("/input", "none", &["bind", "ro"]),
        ])
        .build()
        .unwrap()
}

#[test]
fn a_path_lies_in_its_longest_mount() {
    let s = spec(true);
    assert_eq!(place(&s, "/etc/passwd"), Place::Root { read_only: true });
    assert_eq!(place(&spec(false), "/"), Place::Root { read_only: false });
    assert_eq!(
        place(&s, "/workspace/a/b"),
        Place::Bind {
            dest: "/workspace".into(),
            read_only: false
        }
    );
    assert_eq!(
        place(&s, "/input/"),
        Place::Bind {
            dest: "/input".into(),
            read_only: true
        }
    );
    assert_eq!(
        place(&s, "/tmp/x"),
        Place::Tmpfs {
            dest: "/tmp".into()
        }
    );
    assert_eq!(
        place(&s, "/workspace/../proc/self"),
        Place::Kernel {
            dest: "/proc".into(),
            typ: "proc".into()
        }
    );
    assert_eq!(
        place(&s, "/workspacex"),
        Place::Root { read_only: true },
        "a prefix is matched by components, not by bytes"
    );
}

#[test]
fn the_spec_binds_are_found_with_their_mode() {
    let b = binds(&spec(true));
    assert_eq!(
        b,
        [
            ("/src".to_string(), "/workspace".to_string(), false),
            ("/src".to_string(), "/input".to_string(), true)
        ]
    );
}

#[test]
fn leftover_mount_directories_of_dead_processes_are_reclaimed() {
    let t = tempfile::tempdir().unwrap();
    let proc_root = t.path().join("proc");
    std::fs::create_dir_all(proc_root.join(std::process::id().to_string())).unwrap();
    std::fs::write(
        proc_root.join(std::process::id().to_string()).join("stat"),
        format!(
            "{} (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0",
            std::process::id()
        ),
    )
    .unwrap();
    let run = t.path().join("run");
    let mine = run.join(format!("{MOUNT_PREFIX}{}-0", std::process::id()));
    let dead = run.join(format!("{MOUNT_PREFIX}999999999-0"));
    let other = run.join("stdout");
    for d in [&mine, &dead, &other] {
        std::fs::create_dir_all(d).unwrap();
    }
    reclaim(&run, Some(&proc_root)).unwrap();
    assert!(mine.exists(), "a live process's mount is its own");
    assert!(!dead.exists());
    reclaim(&run, None).unwrap();
    assert!(!mine.exists());
    assert!(other.exists(), "only mount directories are touched");
    reclaim(&t.path().join("missing"), None).unwrap();
}
