//! Disk-fill attacks: a sandbox writing far more than its `--disk` limit, to its writable
//! root, to a managed workspace, or as a flood of empty files, stops with ENOSPC or EDQUOT
//! inside, the host loses at most the limit, and the sandbox keeps working.

use std::path::Path;

use crate::harness::{case, exclusive_case, CaseResult, Daemon, Outcome, Sandbox};
use crate::{ensure, fail};

pub fn cases() -> Vec<crate::harness::Case> {
    vec![
        // Alone on the host: they measure its free space.
        exclusive_case("disk::root_fill_stops_at_the_limit", |d| {
            fill(d, &["--read-write-root", "--user", "0"], "/fill")
        }),
        exclusive_case("disk::workspace_fill_stops_at_the_limit", |d| {
            fill(d, &["--workspace-size", "256M"], "/workspace/fill")
        }),
        case("disk::inode_flood_stops_at_the_limit", |d| inode_flood(d)),
    ]
}

const MIB: u64 = 1 << 20;
/// What the host may lose beyond the limit: the image's own metadata is inside the limit,
/// so only other writers on the host (the test's own builds) add to it.
const SLACK: u64 = 128 * MIB;

/// Bytes free for unprivileged users on the filesystem of `path`.
fn free_bytes(path: &Path) -> Result<u64, String> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs: {e}"))?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Writes 1 GiB in 64 files of 16 MiB into `prefix`N under `--disk 256M`; the first
/// failure must be ENOSPC or EDQUOT, the total at most 256 MiB, and the sandbox must still
/// run a command afterwards. Host free space is sampled while the run lasts (the sandbox
/// holds what it wrote for two seconds) and compared with before.
fn fill(d: &Daemon, flags: &[&str], prefix: &str) -> CaseResult {
    let script = format!(
        "i=0; while [ $i -lt 64 ]; do \
           dd if=/dev/zero of={prefix}$i bs=1M count=16 2>/tmp/err || {{ cat /tmp/err; break; }}; \
           i=$((i+1)); done; \
         echo \"written $(cat {prefix}* | wc -c)\"; sleep 2; echo alive"
    );
    let disk_root = Path::new(stockade::disk::DEFAULT_DISK_ROOT);
    std::fs::create_dir_all(disk_root).map_err(|e| e.to_string())?;
    let before = free_bytes(disk_root)?;
    let mut sb = Sandbox::busybox(&["sh", "-c", &script]).flag("--disk", "256M");
    let mut it = flags.iter().peekable();
    while let Some(f) = it.next() {
        sb = match it.peek() {
            Some(v) if !v.starts_with("--") => sb.flag(f, *it.next().expect("peeked")),
            _ => sb.flag_bare(f),
        };
    }
    let mut child = sb.spawn(d)?;
    let mut during = before;
    let mut allocated = 0;
    let started = std::time::Instant::now();
    let finished = loop {
        during = during.min(free_bytes(disk_root)?);
        allocated = allocated.max(images_allocated(disk_root, child.pid()));
        match child.child.try_wait() {
            Ok(Some(_)) => break child.wait(crate::harness::RUN_GUARD)?,
            Ok(None) if started.elapsed() > crate::harness::RUN_GUARD => {
                break child.wait(std::time::Duration::ZERO)?
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => fail!("wait: {e}"),
        }
    };
    let o = Outcome::parse(finished, true, d)?;
    o.ran()?;
    let out = o.stdout();
    ensure!(
        out.contains("No space left on device") || out.contains("Disk quota exceeded"),
        "the writes did not stop with ENOSPC/EDQUOT:\n{}",
        o.describe()
    );
    let written: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("written ")?.trim().parse().ok())
        .ok_or_else(|| format!("no total reported:\n{}", o.describe()))?;
    ensure!(
        (128 * MIB..=256 * MIB).contains(&written),
        "wrote {} MiB under a 256 MiB limit",
        written / MIB
    );
    ensure!(
        out.contains("alive"),
        "the sandbox did not run on:\n{}",
        o.describe()
    );
    let lost = before.saturating_sub(during);
    eprintln!(
        "{flags:?}: wrote {} MiB; the run's images took {} MiB of the host's disk at most; \
         host free space fell by {} MiB at most (other writers included)",
        written / MIB,
        allocated / MIB,
        lost / MIB
    );
    ensure!(
        allocated > 0 && allocated <= 256 * MIB + 4 * MIB,
        "the run's images took {} MiB of host disk under a 256 MiB limit",
        allocated / MIB
    );
    ensure!(
        lost <= 256 * MIB + SLACK,
        "the host lost {} MiB of free space to a 256 MiB limit",
        lost / MIB
    );
    gone(d, &o)
}

/// Bytes of host disk taken by the images of the run whose `stockade run` is `pid` (found
/// by the owner file in its run directory).
fn images_allocated(disk_root: &Path, pid: i32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(runs) = std::fs::read_dir(stockade::runner::DEFAULT_FIFO_ROOT) else {
        return 0;
    };
    let mut total = 0;
    for r in runs.flatten() {
        let owner = std::fs::read_to_string(r.path().join("owner")).unwrap_or_default();
        if owner.trim() != pid.to_string() {
            continue;
        }
        let id = r.file_name().to_string_lossy().into_owned();
        for kind in ["root", "workspace"] {
            if let Ok(m) = std::fs::metadata(disk_root.join(format!("{id}-{kind}.img"))) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// 100,000 empty files under `--disk 256M`: the inode bound stops them with ENOSPC long
/// before, and the sandbox still runs.
fn inode_flood(d: &Daemon) -> CaseResult {
    // `true`, not `:`: a failed redirection of a special builtin ends the shell.
    let script = "mkdir /d; i=0; while [ $i -lt 100000 ]; do { true > /d/f$i; } 2>/dev/null \
                  || break; i=$((i+1)); done; echo \"created $i\"; touch /d/last 2>&1; echo alive";
    let o = Sandbox::busybox(&["sh", "-c", script])
        .flag("--disk", "256M")
        .flag_bare("--read-write-root")
        .user("0")
        .run(d)?;
    o.ran()?;
    let out = o.stdout();
    let created: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("created ")?.trim().parse().ok())
        .ok_or_else(|| format!("no count reported:\n{}", o.describe()))?;
    ensure!(
        created < 100_000,
        "all 100,000 files were created:\n{}",
        o.describe()
    );
    ensure!(
        out.contains("No space left on device") || out.contains("Disk quota exceeded"),
        "the flood did not stop with ENOSPC/EDQUOT:\n{}",
        o.describe()
    );
    ensure!(out.contains("alive"), "{}", o.describe());
    gone(d, &o)
}

/// Nothing of the run left once it is removed: no image, no loop device on it, no mount.
fn gone(d: &Daemon, o: &Outcome) -> CaseResult {
    let Some(id) = o.id() else {
        fail!("no run id: {}", o.describe())
    };
    for _ in 0..100 {
        let images: Vec<_> = ["root", "workspace"]
            .iter()
            .map(|k| Path::new(stockade::disk::DEFAULT_DISK_ROOT).join(format!("{id}-{k}.img")))
            .filter(|p| p.exists())
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(id))
            .count();
        let left = d.leftovers_of(id);
        if images.is_empty() && mounts == 0 && left.is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    fail!("run {id} left images, mounts or objects behind")
}
