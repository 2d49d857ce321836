//! The probe against fake host trees built in a tempdir from captured mount tables
//! (`tests/fixtures/host/`).

use std::path::Path;

use super::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/host");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A fake host root: files with contents and empty directories.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(files: &[(&str, &str)], dirs: &[&str]) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        }
        for d in dirs {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Tree { dir }
    }

    fn probe(&self) -> Result<HostFacts, HostError> {
        probe(&HostPaths::under(self.dir.path()))
    }
}

const ACTIONS: &str = "kill_process kill_thread trap errno user_notif trace log allow\n";
const FILESYSTEMS: &str =
    "nodev\tsysfs\nnodev\tproc\nnodev\tcgroup\nnodev\tcgroup2\nnodev\toverlay\n\text4\n";
const FILESYSTEMS_NO_OVERLAY: &str = "nodev\tsysfs\nnodev\tproc\nnodev\tcgroup\n\text4\n";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(std::string::ToString::to_string).collect()
}

#[test]
fn hybrid_host_like_this_one() {
    let mountinfo = fixture("hybrid-split.mountinfo");
    let tree = Tree::new(
        &[
            ("proc/self/mountinfo", &mountinfo),
            // Root with every capability: its oom_score_adj writes are floors.
            (
                "proc/self/status",
                "Name:\tstockade\nCapEff:\t000001ffffffffff\n",
            ),
            ("proc/sys/kernel/seccomp/actions_avail", ACTIONS),
            ("proc/sys/user/max_user_namespaces", "96365\n"),
            ("proc/filesystems", FILESYSTEMS),
            ("sys/devices/system/cpu/possible", "0-1\n"),
            (
                "sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("sys/fs/cgroup/unified/cgroup.controllers", "hugetlb\n"),
        ],
        &["sys/kernel/security"],
    );
    let facts = tree.probe().expect("probe");
    assert_eq!(facts.cgroup, CgroupMode::Hybrid);
    // The v2 hierarchy's own controllers (hugetlb) are not the ones runc uses here.
    assert_eq!(
        facts.cgroup_controllers,
        strings(&["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"])
    );
    assert!(facts.swap_accounting);
    assert!(!facts.apparmor, "no apparmor module in sysfs");
    assert!(facts.seccomp);
    assert_eq!(facts.seccomp_actions.len(), 8);
    assert!(facts.user_namespaces);
    assert!(facts.overlayfs);
    assert_eq!(facts.cpu_count, 2);
    assert_eq!(facts.arch, std::env::consts::ARCH);
    assert!(facts.oom_floor, "CAP_SYS_RESOURCE is in the effective set");
    // The same facts the spec builder's fixed "CI host" assumes.
    let expected = HostFacts {
        arch: facts.arch.clone(),
        ..HostFacts::hybrid_no_apparmor()
    };
    assert_eq!(facts, expected);
}

#[test]
fn pure_v2_with_apparmor() {
    let tree = Tree::new(
        &[
            ("proc/self/mountinfo", &fixture("v2.mountinfo")),
            ("proc/sys/kernel/seccomp/actions_avail", ACTIONS),
            ("proc/sys/user/max_user_namespaces", "63422\n"),
            ("proc/sys/kernel/unprivileged_userns_clone", "1\n"),
            ("proc/filesystems", FILESYSTEMS_NO_OVERLAY),
            ("sys/devices/system/cpu/possible", "0-7\n"),
            ("sys/module/apparmor/parameters/enabled", "Y\n"),
            (
                "sys/fs/cgroup/cgroup.controllers",
                "cpuset cpu io memory hugetlb pids rdma misc\n",
            ),
            ("sys/fs/cgroup/system.slice/memory.max", "max\n"),
            ("sys/fs/cgroup/system.slice/memory.swap.max", "max\n"),
        ],
        &["sys/kernel/security/apparmor"],
    );
    let facts = tree.probe().expect("probe");
    assert_eq!(facts.cgroup, CgroupMode::V2);
    assert_eq!(
        facts.cgroup_controllers,
        strings(&["cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma"])
    );
    assert!(facts.swap_accounting);
    assert!(facts.apparmor);
    assert!(facts.user_namespaces);
    assert!(
        facts.overlayfs,
        "an overlay mount in the table proves overlayfs"
    );
    assert_eq!(facts.cpu_count, 8);
}

#[test]
fn v2_child_without_swap_file_means_no_swap_accounting() {
    let tree = Tree::new(
        &[
            ("proc/self/mountinfo", &fixture("v2.mountinfo")),
            ("proc/sys/kernel/seccomp/actions_avail", ACTIONS),
            ("proc/filesystems", FILESYSTEMS),
            ("sys/devices/system/cpu/online", "0\n"),
            ("sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n"),
            ("sys/fs/cgroup/init.scope/memory.max", "max\n"),
            // AppArmor compiled in but disabled at boot (apparmor=0).
            ("sys/module/apparmor/parameters/enabled", "N\n"),
        ],
        &["sys/kernel/security/apparmor"],
    );
    let facts = tree.probe().expect("probe");
    assert_eq!(facts.cgroup, CgroupMode::V2);
    assert!(!facts.swap_accounting);
    assert!(!facts.apparmor, "enabled=N");
    assert!(!facts.user_namespaces, "no max_user_namespaces file");
    assert_eq!(facts.cpu_count, 1, "falls back to the online list");
}

#[test]
fn legacy_v1_with_co_mounted_controllers() {
    let tree = Tree::new(
        &[
            ("proc/self/mountinfo", &fixture("v1.mountinfo")),
            (
                "proc/sys/kernel/seccomp/actions_avail",
                "kill_process kill_thread trap errno trace log allow\n",
            ),
            ("proc/sys/user/max_user_namespaces", "15000\n"),
            ("proc/sys/kernel/unprivileged_userns_clone", "0\n"),
            ("proc/sys/kernel/osrelease", "3.10.0-1160.el7.x86_64\n"),
            ("proc/filesystems", FILESYSTEMS_NO_OVERLAY),
            (
                "lib/modules/3.10.0-1160.el7.x86_64/modules.dep",
                "kernel/fs/fuse/fuse.ko.xz:\nkernel/fs/overlayfs/overlay.ko.xz:\n",
            ),
            ("sys/devices/system/cpu/possible", "0-3,8-11\n"),
            // AppArmor says Y but securityfs has no apparmor directory: not usable.
            ("sys/module/apparmor/parameters/enabled", "Y\n"),
            (
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ],
        &["sys/kernel/security"],
    );
    let facts = tree.probe().expect("probe");
    assert_eq!(facts.cgroup, CgroupMode::V1);
    assert_eq!(
        facts.cgroup_controllers,
        strings(&[
            "blkio",
            "cpu",
            "cpuacct",
            "cpuset",
            "devices",
            "freezer",
            "hugetlb",
            "memory",
            "net_cls",
            "net_prio",
            "perf_event",
            "pids"
        ])
    );
    assert!(!facts.swap_accounting, "no memory.memsw.* files");
    assert!(!facts.apparmor);
    assert!(!facts.user_namespaces, "unprivileged_userns_clone=0");
    assert!(facts.overlayfs, "installed as a module");
    assert!(!facts.seccomp_actions.contains(&"user_notif".to_string()));
    assert_eq!(facts.cpu_count, 8);
}

#[test]
fn hybrid_systemd_layout_missing_features() {
    let tree = Tree::new(
        &[
            ("proc/self/mountinfo", &fixture("hybrid-systemd.mountinfo")),
            ("proc/filesystems", FILESYSTEMS_NO_OVERLAY),
            ("sys/devices/system/cpu/possible", "0-15\n"),
            ("sys/module/apparmor/parameters/enabled", "Y\n"),
        ],
        &["sys/kernel/security/apparmor"],
    );
    let facts = tree.probe().expect("probe");
    assert_eq!(facts.cgroup, CgroupMode::Hybrid);
    assert!(facts.has_controller("rdma"));
    assert!(
        !facts.has_controller("systemd"),
        "name=systemd is not a controller"
    );
    assert!(!facts.swap_accounting);
    assert!(facts.apparmor);
    assert!(!facts.seccomp, "no actions_avail");
    assert!(facts.seccomp_actions.is_empty());
    assert!(!facts.overlayfs);
    assert_eq!(facts.cpu_count, 16);
}

#[test]
fn falls_back_to_proc_mounts() {
    let tree = Tree::new(
        &[
            ("proc/mounts", &fixture("v1.mounts")),
            ("proc/filesystems", FILESYSTEMS),
            ("sys/devices/system/cpu/possible", "0-3\n"),
            ("sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "1\n"),
        ],
        &[],
    );
    let facts = tree.probe().expect("probe");
    assert_eq!(facts.cgroup, CgroupMode::V1);
    assert_eq!(
        facts.cgroup_controllers,
        strings(&["cpu", "cpuacct", "memory", "pids"])
    );
    assert!(facts.swap_accounting);
}

#[test]
fn errors_name_the_file() {
    let none = Tree::new(&[("sys/devices/system/cpu/possible", "0\n")], &["proc"]);
    let err = none.probe().expect_err("no mount table").to_string();
    assert!(err.contains("mountinfo") && err.contains("mounts"), "{err}");

    let bad_userns = Tree::new(
        &[
            ("proc/self/mountinfo", &fixture("v2.mountinfo")),
            ("proc/sys/user/max_user_namespaces", "lots\n"),
            ("sys/devices/system/cpu/possible", "0\n"),
        ],
        &[],
    );
    let err = bad_userns.probe().expect_err("bad number").to_string();
    assert!(err.contains("max_user_namespaces"), "{err}");

    let bad_cpus = Tree::new(
        &[
            ("proc/self/mountinfo", &fixture("v2.mountinfo")),
            ("sys/devices/system/cpu/possible", "0-x\n"),
        ],
        &[],
    );
    let err = bad_cpus.probe().expect_err("bad cpu list").to_string();
    assert!(err.contains("cpu/possible"), "{err}");

    let no_cpus = Tree::new(&[("proc/self/mountinfo", &fixture("v2.mountinfo"))], &[]);
    let err = no_cpus.probe().expect_err("no cpu list").to_string();
    assert!(err.contains("cpu/possible"), "{err}");
}

#[test]
fn cpu_lists() {
    let cases = [
        ("0", Ok(1)),
        ("0-1\n", Ok(2)),
        ("0-3,8-11", Ok(8)),
        ("0,2,4-5", Ok(4)),
        ("", Err(())),
        ("3-1", Err(())),
        ("a", Err(())),
        ("0-", Err(())),
    ];
    for (text, want) in cases {
        assert_eq!(parse_cpu_list(text).map_err(|_| ()), want, "{text:?}");
    }
}

#[test]
fn mountinfo_lines() {
    let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    let mounts = parse_mountinfo(text).expect("parse");
    assert_eq!(mounts[0].mount_point, Path::new("/mnt/with space"));
    assert_eq!(mounts[0].fstype, "ext3");
    assert_eq!(mounts[0].options, ["rw", "errors=continue"]);
    assert_eq!(mounts[1].fstype, "cgroup2");
    assert!(parse_mountinfo("1 2 3 4 5 6 7\n").is_err(), "no separator");
    assert!(parse_mountinfo("1 - x\n").is_err(), "too few fields");
    assert!(parse_mounts("cgroup /x\n").is_err());
}

proptest::proptest! {
    #[test]
    fn mount_table_parsers_never_panic(text in "\\PC{0,200}") {
        let _ = parse_mountinfo(&text);
        let _ = parse_mounts(&text);
        let _ = parse_cpu_list(&text);
    }

    #[test]
    fn octal_escapes_round_trip(s in "[a-z \\\\\t]{0,20}") {
        let escaped: String = s
            .chars()
            .map(|c| match c {
                ' ' => "\\040".to_string(),
                '\t' => "\\011".to_string(),
                '\\' => "\\134".to_string(),
                c => c.to_string(),
            })
            .collect();
        proptest::prop_assert_eq!(unescape_octal(&escaped), s);
    }
}

#[test]
fn cap_sys_resource_is_read_from_the_effective_set() {
    let cases: &[(&str, Option<u64>)] = &[
        (
            "Name:\tx\nCapEff:\t000001ffffffffff\n",
            Some(0x1ff_ffff_ffff),
        ),
        ("CapEff:\t000001fffeffffff\n", Some(0x1ff_feff_ffff)),
        ("CapPrm:\t0000000000000000\n", None),
        ("CapEff:\tzz\n", None),
    ];
    for (text, want) in cases {
        assert_eq!(cap_effective(text), *want, "{text}");
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("self")).unwrap();
    for (mask, floor) in [("000001ffffffffff", true), ("000001fffeffffff", false)] {
        std::fs::write(t.path().join("self/status"), format!("CapEff:\t{mask}\n")).unwrap();
        assert_eq!(sets_oom_floor(t.path()), floor, "{mask}");
    }
}
