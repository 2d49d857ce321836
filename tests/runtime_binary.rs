//! `--runc-binary crun`: the runc shim drives crun instead of runc, and the sandbox is the
//! same one. The claim is checked where it matters to a user, from inside: credentials,
//! capabilities, no_new_privs, seccomp, the read-only root, the hostname, namespaces
//! distinct from the host's, and the cgroup limits, printed by one probe under runc and under
//! crun, must read the same; and crun must really be what ran (its state directory holds
//! crun's `status` file where runc keeps `state.json`).
//!
//! crun 1.8 refuses a hybrid cgroup layout whose cgroup v2 hierarchy holds controllers
//! (this host kind has `hugetlb` there); on such a host the test binds each of those
//! controllers to a v1 hierarchy under `/sys/fs/cgroup/<name>` for its duration, and
//! unbinds them again afterwards (see `V1Binding`). A pure v2 host needs nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{busybox_image, require_or_skip, PrivateContainerd};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const RUNC_STATE: &str = "/run/containerd/runc/stockade";

/// What the probe prints: one fact per line, nothing that differs between two runs.
const PROBE: &str = r#"
grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status
hostname
touch /probe 2>/dev/null && echo root-writable || echo root-read-only
for ns in pid net ipc uts mnt; do
  [ "$(readlink /proc/self/ns/$ns)" = "$(eval echo \"\$HOST_NS_$ns\")" ] && echo "$ns shared" || echo "$ns own"
done
for f in memory/memory.limit_in_bytes pids/pids.max cpu/cpu.cfs_quota_us memory.max pids.max cpu.max; do
  [ -r /sys/fs/cgroup/$f ] && echo "$f $(cat /sys/fs/cgroup/$f)"
done
ulimit -n
"#;

/// Controllers moved from cgroup v2 to v1 hierarchies for the test, moved back on drop.
struct V1Binding {
    mounted: Vec<PathBuf>,
}

impl V1Binding {
    /// On a hybrid host whose v2 hierarchy lists controllers, mounts each at
    /// `/sys/fs/cgroup/<name>` (which must not exist yet).
    fn for_crun() -> V1Binding {
        let mut mounted = Vec::new();
        let unified = Path::new(CGROUP_ROOT).join("unified/cgroup.controllers");
        let listed = std::fs::read_to_string(&unified).unwrap_or_default();
        for name in listed.split_whitespace() {
            let dir = Path::new(CGROUP_ROOT).join(name);
            assert!(
                !dir.exists(),
                "{} exists but {name} is still in cgroup v2",
                dir.display()
            );
            std::fs::create_dir(&dir).expect("mkdir under /sys/fs/cgroup");
            let ok = mount_v1(name, &dir);
            assert!(ok, "cannot bind {name} to a v1 hierarchy");
            mounted.push(dir);
        }
        V1Binding { mounted }
    }
}

impl Drop for V1Binding {
    fn drop(&mut self) {
        for dir in &self.mounted {
            // Empty child cgroups (the runtimes leave their parent `stockade` group), then
            // unmount. The kernel frees the hierarchy, and gives the controller back to
            // cgroup v2, once nothing holds it: retry a mount/unmount cycle until it has.
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let start = Instant::now();
            loop {
                remove_children(dir);
                let _ = Command::new("umount").arg(dir).status();
                std::thread::sleep(Duration::from_millis(200));
                let back = std::fs::read_to_string(
                    Path::new(CGROUP_ROOT).join("unified/cgroup.controllers"),
                )
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == name);
                if back || start.elapsed() > Duration::from_secs(20) {
                    let _ = std::fs::remove_dir(dir);
                    if !back {
                        eprintln!("warning: {name} did not return to cgroup v2");
                    }
                    break;
                }
                mount_v1(&name, dir);
            }
        }
    }
}

/// Mounts a cgroup v1 hierarchy of controller `name` at `dir`; whether that worked.
fn mount_v1(name: &str, dir: &Path) -> bool {
    Command::new("mount")
        .args(["-t", "cgroup", "-o", name, "cgroup"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

fn remove_children(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_children(&e.path());
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

fn run_probe(address: &Path, fifo: &Path, runc_binary: Option<&str>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stockade"));
    // Removed before it returns, so that its runtime state is gone too.
    c.args([
        "run",
        "--cold",
        "--json",
        "--no-run-log",
        "--cleanup",
        "inline",
    ])
    .arg("--address")
    .arg(address)
    .arg("--fifo-root")
    .arg(fifo)
    .env_remove("STOCKADE_RUNC_BINARY");
    if let Some(b) = runc_binary {
        c.args(["--runc-binary", b]);
    }
    // The host's namespaces, for the comparison inside.
    for ns in ["pid", "net", "ipc", "uts", "mnt"] {
        let link = std::fs::read_link(format!("/proc/self/ns/{ns}")).expect("own namespace");
        c.args(["-e", &format!("HOST_NS_{ns}={}", link.display())]);
    }
    let out = c
        .args(["--", "/bin/sh", "-c", PROBE])
        .output()
        .expect("spawn stockade");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run JSON");
    assert_eq!(v["exit_code"], 0, "{v}");
    v["stdout"].as_str().unwrap().to_string()
}

/// The sandbox's UID from the probe's `Uid:` line (real, effective, saved and filesystem
/// all equal, not 0 and not 65534), and the output with that UID written as `UID`.
fn own_uid(out: &str) -> (u32, String) {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap_or_else(|| panic!("no Uid line in:\n{out}"));
    let ids: Vec<u32> = line
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(ids.len() == 4 && ids.iter().all(|i| *i == ids[0]), "{line}");
    assert!(ids[0] != 0 && ids[0] != 65534, "{line}");
    (ids[0], out.replace(&ids[0].to_string(), "UID"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crun_runs_the_same_sandbox_as_runc() {
    if !require_or_skip(
        "runs sandboxes under runc and crun",
        &["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/crun"],
    ) {
        return;
    }
    let _binding = V1Binding::for_crun();
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let t = tempfile::tempdir().unwrap();
    let fifo = t.path().join("fifo");

    let under_runc = run_probe(c.address(), &fifo, None);
    let under_crun = run_probe(c.address(), &fifo, Some("crun"));
    // Each sandbox runs as a UID of its own: four equal IDs, neither root nor 65534.
    let (runc_uid, under_runc) = own_uid(&under_runc);
    let (crun_uid, under_crun) = own_uid(&under_crun);
    assert_ne!(runc_uid, crun_uid, "two sandboxes, two UIDs");
    for want in [
        "Uid:\tUID\tUID\tUID\tUID",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "root-read-only",
        "pid own",
        "net own",
        "ipc own",
        "uts own",
        "mnt own",
    ] {
        assert!(
            under_runc.contains(want),
            "runc: no `{want}` in:\n{under_runc}"
        );
    }
    assert_eq!(
        under_crun, under_runc,
        "the sandbox differs between crun and runc"
    );

    // crun is what ran: while a run sleeps, its (new) state directory is crun's.
    let state_dirs = || -> Vec<PathBuf> {
        std::fs::read_dir(RUNC_STATE)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let before = state_dirs();
    let mut sleeper = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args([
            "run",
            "--cold",
            "--no-run-log",
            "--runc-binary",
            "crun",
            "--address",
        ])
        .arg(c.address())
        .arg("--fifo-root")
        .arg(&fifo)
        .args(["--", "/bin/sleep", "3"])
        .spawn()
        .expect("spawn stockade");
    let start = Instant::now();
    let mut seen = None;
    while seen.is_none() && start.elapsed() < Duration::from_secs(10) {
        seen = state_dirs().into_iter().find(|p| {
            !before.contains(p) && (p.join("status").exists() || p.join("state.json").exists())
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = seen.expect("no runtime state directory appeared");
    assert!(
        state.join("status").exists() && !state.join("state.json").exists(),
        "{} is not crun's",
        state.display()
    );
    assert!(sleeper.wait().unwrap().success());
}
