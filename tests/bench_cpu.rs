//! The benchmark's CPU accounting against real processes: what daemonizes below it is
//! adopted, reaped and counted. A test binary of its own, because it makes the whole test
//! process a child subreaper and reaps what it adopts.

use std::process::Command;
use std::time::Duration;

use stockade::bench::cpu::Cpu;
use stockade::bench::meter::Meter;

/// A process that daemonizes below the benchmark (leaves its process group, its parent
/// exits) is reparented to it, reaped when it exits, and its CPU counted: here a
/// detached `awk` that runs a fixed number of loop rounds (work, not time), far more than
/// the 100 ms of CPU asserted on any machine this runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonized_cpu_burner_is_adopted_and_counted() {
    let meter = Meter::start();
    assert!(meter.subreaper, "prctl(PR_SET_CHILD_SUBREAPER) works here");
    let baseline = meter.adopted_alive();
    let before = meter.read();
    let status = Command::new("sh")
        .arg("-c")
        .arg("setsid awk 'BEGIN { x = 0; for (i = 0; i < 30000000; i++) x += i % 7; exit (x < 0) }' </dev/null >/dev/null 2>&1 &")
        .status()
        .expect("sh runs");
    assert!(status.success());
    // The shell has exited, but its child leaves this process's group only when it runs
    // setsid, which can come later on a busy machine: until then it does not count as
    // adopted. Wait (bounded) until it is seen adopted, or was already reaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while meter.adopted_alive() <= baseline
        && meter.read().children_ms - before.children_ms < 100.0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The burner now runs as an adopted child until it is done.
    meter.wait_adopted(baseline, Duration::from_secs(600)).await;
    assert_eq!(
        meter.adopted_alive(),
        baseline,
        "the burner exited and was reaped"
    );
    let spent = Cpu::between(&before, &meter.read(), false);
    meter.stop();
    assert_eq!(spent.self_ms, 0.0, "own time is not charged unless asked");
    assert!(
        spent.children_ms >= 100.0,
        "the adopted burner's CPU is counted: {spent:?}"
    );
}
