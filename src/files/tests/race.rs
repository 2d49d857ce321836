//! A sandbox that swaps a directory for a link to the host while copies run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::fs::RenameFlags;

use super::super::*;
use super::{archive, put_opts, Fixture, M};

/// Copies raced; each either lands inside the root or is refused.
const RUNS: usize = 200;

/// Swaps at most this many times (the racer stops earlier when the copies are done).
const MAX_SWAPS: u64 = 5_000_000;

#[test]
fn swapping_a_directory_for_a_link_to_the_host_never_writes_outside_the_root() {
    let f = Fixture::new();
    let work = f.at("dst/work");
    std::fs::create_dir_all(work.join("a/x")).unwrap();
    std::os::unix::fs::symlink(&f.canary, work.join("b")).unwrap();
    let before = f.canary_listing();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let dir = open_root(&work).unwrap();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) && swaps < MAX_SWAPS {
                rustix::fs::renameat_with(&dir, "a", &dir, "b", RenameFlags::EXCHANGE).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let members = archive(&[
        M::Dir("a/"),
        M::Dir("a/x/"),
        M::File("a/x/f", b"pwned"),
        M::Sym("a/x/l", "/".into()),
        M::Hard("a/x/h", "a/x/f"),
        M::File("a/g", b"pwned"),
    ]);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..RUNS {
        // Into the raced directory's parent, and onto the raced name itself.
        let dst = if i % 2 == 0 {
            "/dst/work"
        } else {
            "/dst/work/a"
        };
        match put(&f.root, dst, members.as_slice(), &put_opts()) {
            Ok(_) => ok += 1,
            Err(_) => refused += 1,
        }
        assert_eq!(f.canary_listing(), before, "run {i}: the canary changed");
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    assert!(swaps > 0);
    assert_eq!(ok + refused, RUNS);
    assert_eq!(
        std::fs::read_to_string(f.canary.join("secret")).unwrap(),
        "host secret\n"
    );
}

#[test]
fn swapping_a_directory_for_a_link_to_the_host_never_archives_host_files() {
    let f = Fixture::new();
    let work = f.at("dst/work");
    std::fs::create_dir_all(work.join("a")).unwrap();
    std::fs::write(work.join("a/secret"), "sandbox file\n").unwrap();
    std::os::unix::fs::symlink(&f.canary, work.join("b")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let dir = open_root(&work).unwrap();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) && swaps < MAX_SWAPS {
                rustix::fs::renameat_with(&dir, "a", &dir, "b", RenameFlags::EXCHANGE).unwrap();
                swaps += 1;
            }
        })
    };
    for (i, src) in [
        "/dst/work",
        "/dst/work/a",
        "/dst/work/a/secret",
        "/dst/work/a/.",
    ]
    .iter()
    .cycle()
    .take(RUNS)
    .enumerate()
    {
        let mut out = Vec::new();
        let follow = GetOptions {
            follow_link: i % 3 == 0,
            ..GetOptions::default()
        };
        if get(&f.root, src, &mut out, &follow).is_ok() {
            let got = super::get::entries(&out);
            assert!(
                got.values().all(|g| g.data != b"host secret\n"),
                "run {i} ({src}): a host file was archived"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
}
