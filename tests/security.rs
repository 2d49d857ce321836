//! The security suite: escape attempts (`security/escape.rs`, image imports reading
//! through the archive's links in `security/import_links.rs`, bind sources in
//! `security/binds.rs`, execs into long-lived sandboxes in `security/exec.rs`, network
//! escapes from an `allowlist` sandbox in `security/network.rs`), resource attacks (`security/resources.rs`), limits that must never
//! be off (`security/limits.rs`), faults (`security/faults.rs`) and swapped runtime
//! binaries (`security/runtime.rs`), all through the real `stockade` binary against
//! private containerds.
//!
//! It has a harness of its own (`harness = false`, libtest-mimic) so that one private
//! containerd and its images serve every case, and so that after the last case the suite
//! runs `stockade gc` and proves nothing of any run is left (containers, tasks, active
//! snapshots, mounts, shims, cgroups, FIFOs, processes). It accepts the usual test
//! arguments (`--test-threads`, name filters, `--list`, `--nocapture`).
//!
//! Needs root, containerd and runc; without them it skips, except under `CI=true` where it
//! fails. Run: `sudo cargo test --test security -- --test-threads=2`.

#[path = "security/binds.rs"]
mod binds;
mod common;
#[path = "security/cp.rs"]
mod cp;
#[path = "security/disk.rs"]
mod disk;
#[path = "security/escape.rs"]
mod escape;
#[path = "security/exec.rs"]
mod exec;
#[path = "security/faults.rs"]
mod faults;
#[path = "security/harness.rs"]
mod harness;
#[path = "security/import_links.rs"]
mod import_links;
#[path = "security/limits.rs"]
mod limits;
mod net_support;
#[path = "security/network.rs"]
mod network;
#[path = "security/resources.rs"]
mod resources;
#[path = "security/runtime.rs"]
mod runtime;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use libtest_mimic::{Arguments, Trial};

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let started = Instant::now();
    // Order matters with few threads: the busybox escapes and the faults run while the
    // python image builds, the python escapes next, and the cases that must have the host
    // to themselves (CPU and timing measurements) last.
    let mut cases: Vec<harness::Case> = escape::cases()
        .into_iter()
        .chain(import_links::cases())
        .chain(resources::cases())
        .chain(limits::cases())
        .chain(faults::cases())
        .chain(binds::cases())
        .chain(exec::cases())
        .chain(cp::cases())
        .chain(runtime::cases())
        .chain(disk::cases())
        .chain(network::cases())
        .collect();
    cases.sort_by_key(|c| (c.exclusive, escape::needs_python(&c.name)));
    if args.list {
        let trials = cases.into_iter().map(|c| Trial::test(c.name, || Ok(())));
        return libtest_mimic::run(&args, trials.collect()).exit_code();
    }
    if !common::require_or_skip(
        "security suite",
        &["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/ctr"],
    ) {
        return ExitCode::SUCCESS;
    }
    escape::hash_runtime_binaries_now();
    let daemon = match harness::Daemon::start() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("security suite: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Build the python image in the background as soon as a selected case needs it.
    let python_build = cases
        .iter()
        .any(|c| escape::needs_python(&c.name) && selected(&args, &c.name))
        .then(|| {
            let d = daemon.clone();
            std::thread::spawn(move || {
                let _ = d.python_ready();
            })
        });

    let trials: Vec<Trial> = cases
        .into_iter()
        .map(|c| {
            let d = Arc::clone(&daemon);
            let (run, exclusive) = (c.run, c.exclusive);
            Trial::test(c.name, move || {
                let _host = harness::host_lock(exclusive);
                run(&d).map_err(Into::into)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);

    // After every case: gc, then nothing of any run may remain. Runs without a JSON
    // result are removed by stockade's detached cleanup helper, which may still be at work:
    // the census waits up to 15 s for it, then gc runs once more.
    let census = daemon.gc().and_then(|()| {
        let deadline = Instant::now() + std::time::Duration::from_secs(15);
        let mut left = daemon.census(None);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(250));
            left = daemon.census(None);
        }
        if !left.is_empty() {
            daemon.gc()?;
            left = daemon.census(None);
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left after all cases and gc: {left:#?}"))
        }
    });
    let runs = daemon.ids().len();
    if let Some(t) = python_build {
        let _ = t.join();
    }
    // The last reference: dropping it stops the daemon and removes its directory.
    drop(daemon);
    eprintln!(
        "security suite: {runs} runs on the shared daemon, {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
    match census {
        Ok(()) => eprintln!("security suite: final census after gc: nothing left"),
        Err(e) => {
            eprintln!("security suite: FINAL CENSUS FAILED: {e}");
            return ExitCode::FAILURE;
        }
    }
    conclusion.exit_code()
}

/// Whether libtest-mimic will run the case called `name` under `args`.
fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |f: &str| {
        if args.exact {
            name == f
        } else {
            name.contains(f)
        }
    };
    if args.skip.iter().any(|s| matches(s)) {
        return false;
    }
    args.filter.as_deref().is_none_or(matches)
}
