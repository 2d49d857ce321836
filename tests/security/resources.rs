//! Resource attacks: each limit is hit on purpose and measured from the host, and after
//! each run nothing of it is left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{
    case, exclusive_case, nonce, processes_with, Case, CaseResult, Daemon, Outcome, Sandbox,
};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case("resources::memory_hog_is_oom_killed", |d| memory_hog(d)),
        exclusive_case("resources::fork_bomb_is_contained", |d| fork_bomb(d)),
        exclusive_case("resources::cpu_quota_half_a_core", |d| cpu_quota(d)),
        case("resources::tmpfs_fill_stops_at_its_size", |d| tmpfs_fill(d)),
        case("resources::output_flood_is_truncated", |d| output_flood(d)),
        exclusive_case("resources::timeout_kills_the_process_tree", |d| {
            timeout_tree(d)
        }),
    ]
}

const MIB: f64 = 1024.0 * 1024.0;

fn no_leftovers(d: &Daemon, o: &Outcome) -> CaseResult {
    let id = o.id().unwrap_or_default();
    let left = d.leftovers_of(id);
    ensure!(left.is_empty(), "run {id} left: {left:?}");
    Ok(())
}

/// `--memory 64M` and a process that touches 256 MiB: killed by the OOM killer, exit 137,
/// `oom_killed` in the result, and the cgroup's peak at the limit.
fn memory_hog(d: &Daemon) -> CaseResult {
    let o = Sandbox::busybox(&["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"])
        .flag("--memory", "64M")
        .flag("--timeout", "60s")
        .run(d)?;
    o.ran()?;
    ensure!(
        o.code() == Some(137),
        "exit {:?}, want 137\n{}",
        o.code(),
        o.describe()
    );
    ensure!(
        o.number("/exit_code") == Some(137.0),
        "result exit_code: {}",
        o.doc
    );
    ensure!(o.flag("oom_killed"), "oom_killed is not set: {}", o.doc);
    ensure!(!o.flag("timed_out"), "timed_out is set: {}", o.doc);
    if let Some(peak) = o.number("/usage/peak_memory_bytes") {
        ensure!(
            peak <= 72.0 * MIB,
            "peak memory {:.1} MiB is above the 64 MiB limit",
            peak / MIB
        );
        ensure!(
            peak >= 32.0 * MIB,
            "peak memory {:.1} MiB: the hog never grew",
            peak / MIB
        );
    }
    no_leftovers(d, &o)
}

/// The cgroup `pids.current` / `pids.max` files of a host process, from its /proc cgroup
/// entry (v1 `pids` hierarchy, or the v2 unified tree).
fn pids_dir_of(pid: i32) -> Option<PathBuf> {
    let root = Path::new(stockade::runner::DEFAULT_CGROUP_ROOT);
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        let dir = if controllers.split(',').any(|c| c == "pids") {
            root.join("pids").join(rel)
        } else if controllers.is_empty() {
            root.join(rel)
        } else {
            continue;
        };
        if dir.join("pids.max").exists() {
            return Some(dir);
        }
    }
    None
}

/// A fork bomb under `--pids 64`: the pids cgroup stops it at 64 tasks (forks fail inside
/// with EAGAIN), the host keeps forking promptly throughout, the timeout ends it, and no
/// process of it survives.
fn fork_bomb(d: &Daemon) -> CaseResult {
    let mark = format!("stkbomb{}", nonce());
    // Every bomb process forks copies of itself until a fork fails (the shell then
    // exits); the first process reaps the dead without forking (it waits on a FIFO), so
    // the bomb keeps churning at the limit.
    let sandbox = Sandbox::busybox(&[
        "sh",
        "-c",
        "mkfifo /tmp/p; exec 3<>/tmp/p; b() { while :; do b & done; }; b & \
         while :; do wait; read -t 1 x <&3; done",
        &mark,
    ])
    .flag("--pids", "64")
    .flag("--timeout", "8s")
    .flag("--max-output", "64K");
    let run = sandbox.spawn(d)?;
    let started = Instant::now();
    let (mut max_tasks, mut max_current, mut pids_max) = (0usize, 0u64, String::new());
    let mut worst_fork = Duration::ZERO;
    let mut forks = 0;
    while started.elapsed() < Duration::from_secs(7) {
        // The bomb's processes: the mark in their command line, in a sandbox's cgroup
        // (stockade's own command line carries the mark too).
        let procs: Vec<i32> = processes_with(&mark)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                    .is_ok_and(|c| c.contains("/stockade/stk-"))
            })
            .collect();
        max_tasks = max_tasks.max(procs.len());
        if let Some(dir) = procs.first().and_then(|p| pids_dir_of(*p)) {
            if let Ok(c) = std::fs::read_to_string(dir.join("pids.current")) {
                max_current = max_current.max(c.trim().parse().unwrap_or(0));
            }
            if let Ok(m) = std::fs::read_to_string(dir.join("pids.max")) {
                pids_max = m.trim().to_string();
            }
        }
        // The host must keep forking promptly while the bomb runs.
        let t = Instant::now();
        let st = std::process::Command::new("/bin/true")
            .status()
            .map_err(|e| format!("host fork failed during the bomb: {e}"))?;
        ensure!(st.success(), "/bin/true failed on the host during the bomb");
        worst_fork = worst_fork.max(t.elapsed());
        forks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let finished = run.wait(Duration::from_secs(60))?;
    let o = Outcome::parse(finished, true, d)?;
    eprintln!(
        "fork bomb: {max_tasks} tasks seen from the host, pids.current peak {max_current}, \
         pids.max {pids_max}, {forks} host forks, slowest {worst_fork:?}"
    );
    ensure!(
        o.code() == Some(124),
        "exit {:?}, want 124 (timeout)\n{}",
        o.code(),
        o.describe()
    );
    ensure!(o.flag("timed_out"), "timed_out not set: {}", o.doc);
    ensure!(
        pids_max == "64",
        "pids.max of the sandbox was `{pids_max}`, want 64"
    );
    ensure!(
        max_current <= 64 && max_tasks <= 64,
        "more than 64 tasks: pids.current {max_current}, processes seen {max_tasks}"
    );
    ensure!(
        max_current >= 60,
        "the bomb never reached the limit (pids.current peaked at {max_current})"
    );
    ensure!(
        o.stderr().contains("can't fork")
            || o.stderr().contains("Resource temporarily unavailable"),
        "no fork failure reported inside: {:.300}",
        o.stderr()
    );
    ensure!(
        worst_fork < Duration::from_secs(1),
        "the host took {worst_fork:?} to fork during the bomb"
    );
    let survivors = processes_with(&mark);
    ensure!(
        survivors.is_empty(),
        "bomb processes survived: {survivors:?}"
    );
    no_leftovers(d, &o)
}

/// The cgroup directory of controller `controller` (v1) or of the unified tree (v2) of a
/// host process.
fn cgroup_dir_of(
    pid: i32,
    controller: &str,
    probe_file_v1: &str,
    probe_file_v2: &str,
) -> Option<PathBuf> {
    let root = Path::new(stockade::runner::DEFAULT_CGROUP_ROOT);
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let rel = path.trim_start_matches('/');
        let (dir, probe) = if controllers.split(',').any(|c| c == controller) {
            (root.join(controllers).join(rel), probe_file_v1)
        } else if controllers.is_empty() {
            (root.join(rel), probe_file_v2)
        } else {
            continue;
        };
        if dir.join(probe).exists() {
            return Some(dir);
        }
    }
    None
}

/// What the host's cgroup says about a sandbox's CPU: the quota in cores and how many
/// periods it was throttled.
#[derive(Debug, Default)]
struct CpuCgroup {
    quota_cores: f64,
    nr_throttled: u64,
}

fn read_cpu_cgroup(dir: &Path) -> CpuCgroup {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let quota_cores = if dir.join("cpu.cfs_quota_us").exists() {
        let q: f64 = read("cpu.cfs_quota_us").trim().parse().unwrap_or(-1.0);
        let p: f64 = read("cpu.cfs_period_us").trim().parse().unwrap_or(1.0);
        q / p
    } else {
        let max = read("cpu.max");
        let mut it = max.split_whitespace();
        let q: f64 = it.next().and_then(|q| q.parse().ok()).unwrap_or(-1.0);
        let p: f64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(1.0);
        q / p
    };
    let nr_throttled = read("cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled ")?.trim().parse().ok())
        .unwrap_or(0);
    CpuCgroup {
        quota_cores,
        nr_throttled,
    }
}

/// Two busy loops for four seconds, measured inside from their own /proc stat (clock
/// ticks of 1/100 s) against /proc/uptime, and from the host in the sandbox's cgroup:
/// under `--cpus 0.5` the quota is 0.5 cores, the cgroup is throttled, and the loops get
/// at most about half a core between them. A control run under `--cpus 2` shows how much
/// the host could give at that moment: when it could give a core or more, the limited run
/// must also have got close to its half core (the limit, not a busy host, held it back).
fn cpu_quota(d: &Daemon) -> CaseResult {
    let script = r#"
spin() { while :; do :; done; }
spin & a=$!
spin & b=$!
read u0 rest < /proc/uptime
sleep 4
read u1 rest < /proc/uptime
ta=$(cut -d' ' -f14,15 /proc/$a/stat)
tb=$(cut -d' ' -f14,15 /proc/$b/stat)
kill $a $b
echo "uptime $u0 $u1"
echo "ticks $ta $tb"
"#;
    let measure = |cpus: &str| -> Result<(f64, CpuCgroup, Outcome), String> {
        let mark = format!("stkspin{}", nonce());
        let run = Sandbox::busybox(&["sh", "-c", script, &mark])
            .flag("--cpus", cpus)
            .flag("--timeout", "60s")
            .spawn(d)?;
        // Three seconds in, the loops are still spinning: read the sandbox's cgroup.
        std::thread::sleep(Duration::from_secs(3));
        let cg = processes_with(&mark)
            .into_iter()
            .find_map(|p| {
                cgroup_dir_of(p, "cpu", "cpu.cfs_quota_us", "cpu.max")
                    .filter(|dir| dir.to_string_lossy().contains("/stockade/"))
            })
            .map(|dir| read_cpu_cgroup(&dir))
            .unwrap_or_default();
        let o = Outcome::parse(run.wait(Duration::from_secs(60))?, true, d)?;
        o.ran()?;
        ensure!(o.code() == Some(0), "spinner run failed\n{}", o.describe());
        let mut wall = 0.0;
        let mut ticks = 0.0;
        for line in o.stdout().lines() {
            let f: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if line.starts_with("uptime") && f.len() == 2 {
                wall = f[1] - f[0];
            } else if line.starts_with("ticks") && f.len() == 4 {
                ticks = f.iter().sum();
            }
        }
        ensure!(
            wall > 3.0,
            "could not read the measurement:\n{}",
            o.describe()
        );
        no_leftovers(d, &o)?;
        Ok((ticks / 100.0 / wall, cg, o))
    };
    let (half, cg, o) = measure("0.5")?;
    let (two, cg_two, _) = measure("2")?;
    let run_ms = o.number("/phases/run_ms").unwrap_or(0.0);
    let cpu_ns = o.number("/usage/cpu_time_ns").unwrap_or(0.0);
    let reported = if run_ms > 0.0 {
        cpu_ns / 1e6 / run_ms
    } else {
        0.0
    };
    eprintln!(
        "cpu: --cpus 0.5 gave {half:.2} cores (stockade reports {reported:.2}; cgroup quota \
         {:.2}, throttled {} periods); control --cpus 2 gave {two:.2} cores (quota {:.2})",
        cg.quota_cores, cg.nr_throttled, cg_two.quota_cores
    );
    ensure!(
        (cg.quota_cores - 0.5).abs() < 0.01,
        "the sandbox's cgroup quota is {:.2} cores, want 0.5",
        cg.quota_cores
    );
    ensure!(
        cg.nr_throttled > 0,
        "the sandbox was never throttled while spinning two loops under a 0.5-core quota"
    );
    ensure!(
        half <= 0.65,
        "under --cpus 0.5 the spinners got {half:.2} cores"
    );
    if two >= 1.0 {
        ensure!(
            half >= 0.3,
            "the host gave the control {two:.2} cores, but under --cpus 0.5 the spinners got \
             only {half:.2}"
        );
    } else {
        eprintln!(
            "cpu: the host was busy (the control got {two:.2} cores): only the upper bound and \
             the throttling are asserted"
        );
    }
    if cpu_ns > 0.0 {
        ensure!(
            reported <= 0.7,
            "stockade's own cpu_time_ns says {reported:.2} cores under --cpus 0.5"
        );
    }
    Ok(())
}

/// Writing 200 MiB into /tmp (a 64 MiB tmpfs) stops with ENOSPC at 64 MiB.
fn tmpfs_fill(d: &Daemon) -> CaseResult {
    let script = "dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>&1; echo \"dd_exit $?\"; \
                  echo \"size $(wc -c < /tmp/fill)\"";
    let o = Sandbox::busybox(&["sh", "-c", script]).run(d)?;
    o.ran()?;
    ensure!(o.code() == Some(0), "{}", o.describe());
    let out = o.stdout();
    ensure!(
        out.contains("No space left on device"),
        "dd did not hit ENOSPC:\n{out}"
    );
    ensure!(out.contains("dd_exit 1"), "dd did not fail:\n{out}");
    let size: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("size ")?.trim().parse().ok())
        .ok_or_else(|| format!("no size reported:\n{out}"))?;
    ensure!(
        (60.0 * MIB..=64.0 * MIB).contains(&size),
        "the file reached {:.1} MiB; the tmpfs is 64 MiB",
        size / MIB
    );
    no_leftovers(d, &o)
}

/// 200 MB of output under `--max-output 1M`: the result keeps 1 MiB and says it truncated,
/// forwarded output stops at 1 MiB too, and stockade's own memory stays near a trivial
/// run's.
fn output_flood(d: &Daemon) -> CaseResult {
    let flood = ["sh", "-c", "yes stkflood | head -c 200000000; echo end >&2"];
    let baseline = Sandbox::busybox(&["true"]).run(d)?;
    baseline.ran()?;
    let base_rss = baseline.process.peak_rss as f64;

    let o = Sandbox::busybox(&flood).flag("--max-output", "1M").run(d)?;
    o.ran()?;
    let kept = o.stdout().len() as f64;
    ensure!(
        o.doc
            .pointer("/truncated/stdout")
            .and_then(serde_json::Value::as_bool)
            == Some(true),
        "truncated.stdout is not set: {:.300}",
        o.doc.to_string()
    );
    ensure!(
        (MIB - 16.0..=MIB).contains(&kept),
        "kept {kept} bytes of stdout, want 1 MiB"
    );
    ensure!(
        o.stdout().starts_with("stkflood\nstkflood\n"),
        "the kept output is not the start of the stream"
    );
    let json_rss = o.process.peak_rss as f64;
    no_leftovers(d, &o)?;

    let f = Sandbox::busybox(&flood)
        .flag("--max-output", "1M")
        .forwarded()
        .spawn(d)?
        .wait(Duration::from_secs(120))?;
    ensure!(
        f.code != Some(125),
        "forwarded flood: stockade failed: {}",
        f.stderr_text()
    );
    let forwarded = f.stdout.len() as f64;
    ensure!(
        forwarded <= MIB + 4096.0,
        "forwarded {forwarded} bytes of stdout, cap 1 MiB"
    );
    ensure!(forwarded >= MIB - 16.0, "forwarded only {forwarded} bytes");
    eprintln!(
        "flood: kept {kept} bytes; stockade peak RSS {:.1} MiB (json), {:.1} MiB (forwarded), \
         {:.1} MiB for `true`",
        json_rss / MIB,
        f.peak_rss as f64 / MIB,
        base_rss / MIB
    );
    for (what, rss) in [("--json", json_rss), ("forwarded", f.peak_rss as f64)] {
        ensure!(
            rss < base_rss + 32.0 * MIB,
            "stockade grew to {:.1} MiB with {what} output (a trivial run: {:.1} MiB)",
            rss / MIB,
            base_rss / MIB
        );
    }
    Ok(())
}

/// The host's uptime in seconds (the same clock the sandbox reads: no time namespace).
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `--timeout 2s` on a shell with a background child, a child in a new session and an
/// orphaned grandchild: all of them are gone, seen from the host, within a second of the
/// deadline, and the run exits 124.
fn timeout_tree(d: &Daemon) -> CaseResult {
    let n = u32::from_str_radix(&nonce()[..4], 16).unwrap_or(0) % 9000 + 30000;
    let sleeps = [n, n + 1, n + 2].map(|s| format!("sleep {s}"));
    let script = format!(
        "{} & setsid {} & ({} &); read up rest < /proc/uptime; echo \"started $up\"; wait",
        sleeps[0], sleeps[1], sleeps[2]
    );
    let run = Sandbox::busybox(&["sh", "-c", &script])
        .flag("--timeout", "2s")
        .spawn(d)?;
    let mut all_seen = false;
    let mut gone_at = None;
    let guard = Instant::now();
    while guard.elapsed() < Duration::from_secs(30) {
        let alive: Vec<usize> = (0..3)
            .filter(|i| !processes_with(&sleeps[*i]).is_empty())
            .collect();
        if alive.len() == 3 {
            all_seen = true;
        }
        if all_seen && alive.is_empty() {
            gone_at = Some(uptime());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = Outcome::parse(run.wait(Duration::from_secs(60))?, true, d)?;
    ensure!(
        all_seen,
        "the three sleeps were never all running\n{}",
        o.describe()
    );
    let Some(gone_at) = gone_at else {
        fail!(
            "the sleeps outlived the timeout by 30 s: {:?}",
            sleeps.map(|s| processes_with(&s))
        )
    };
    let started: f64 = o
        .stdout()
        .lines()
        .find_map(|l| l.strip_prefix("started ")?.trim().parse().ok())
        .ok_or_else(|| format!("no start time:\n{}", o.describe()))?;
    let after_start = gone_at - started;
    eprintln!(
        "timeout: the process tree was gone {after_start:.2}s after it started (deadline 2s)"
    );
    ensure!(
        o.code() == Some(124),
        "exit {:?}, want 124\n{}",
        o.code(),
        o.describe()
    );
    ensure!(o.flag("timed_out"), "timed_out not set: {}", o.doc);
    ensure!(
        after_start <= 3.0,
        "the tree died {after_start:.2}s after start: more than a second past the 2 s deadline"
    );
    ensure!(
        after_start >= 1.8,
        "the tree died {after_start:.2}s after start, before the 2 s deadline"
    );
    no_leftovers(d, &o)
}
