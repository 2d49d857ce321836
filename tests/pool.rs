//! Warm pools against a real containerd: a pooled run has exactly a cold run's isolation
//! (same spec but for the id, same credentials, seccomp, namespaces and cgroup limits seen
//! live), a pooled sandbox is never used twice, 32 concurrent runs through a pool all
//! succeed, and after a drain nothing is left.

mod common;
mod run_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::GetContainerRequest;
use stockade::containerd::Client;
use stockade::host::{self, HostFacts, HostPaths};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::pool::{Pool, PoolConfig, LABEL_POOL};
use stockade::runner::{
    new_id, CgroupFs, CleanupMode, RunRequest, RunResult, Runner, StoreImages, DEFAULT_CGROUP_ROOT,
};
use stockade::spec::{self, SpecRequest};

use common::{busybox_image, require_root_or_skip, PrivateContainerd};
use run_support::assert_no_leftovers;

/// How long a pool may take to make its sandboxes: a liveness bound, not a speed claim
/// (an emulated guest on a busy host takes tens of seconds per sandbox).
const READY_PATIENCE: Duration = Duration::from_secs(180);

fn policy(o: PolicyOverrides) -> ValidatedPolicy {
    Policy::default()
        .validate(None, &o, &HostPolicyEnv)
        .expect("valid policy")
}

/// A pool of `size` sandboxes of `p`, started on `runner`, once every one of them is ready.
async fn ready_pool(runner: &Runner, p: &ValidatedPolicy, size: usize) -> Pool {
    let pool = Pool::start(
        runner.clone(),
        p.clone(),
        PoolConfig {
            size,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(pool.wait_ready(size, READY_PATIENCE).await, size);
    pool
}

/// Asserts that nothing a run or pool made is left in `c` or under `fifo_root` (10 s to settle).
async fn nothing_left(client: &Client, c: &PrivateContainerd, fifo_root: &Path) {
    assert_no_leftovers(
        client,
        c.address(),
        fifo_root,
        None,
        Duration::from_secs(10),
    )
    .await;
}

async fn runner(c: &PrivateContainerd, fifo_root: &Path) -> (Client, Runner, HostFacts) {
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let host = host::probe(&HostPaths::system()).expect("probe host");
    let runner = Runner::builder()
        .client(client.clone())
        .host(host.clone())
        .images(Arc::new(StoreImages::default()))
        .fifo_root(fifo_root)
        .cleanup(CleanupMode::Inline)
        .build()
        .expect("runner");
    (client, runner, host)
}

/// What the sandbox's process sees of its own confinement.
const PROBE: &str =
    "grep -E '^(Uid|Gid|Groups|NoNewPrivs|Cap(Inh|Prm|Eff|Bnd|Amb)|Seccomp|Seccomp_filters):' \
     /proc/self/status; echo nofile=$(ulimit -n); echo cwd=$(pwd); hostname; \
     for n in cgroup ipc mnt net pid uts user; do echo $n=$(readlink /proc/self/ns/$n); done; \
     echo self=$$; echo pid1=$(tr '\\0' ' ' < /proc/1/cmdline); tr '\\0' '\\n' < /proc/1/environ | sort; \
     sleep 1";

/// Namespaces the sandbox shares with this (host) process, from the probe's output.
fn shared_namespaces(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let (n, link) = l.split_once('=')?;
            let host = std::fs::read_link(format!("/proc/self/ns/{n}")).ok()?;
            (host.to_string_lossy() == link).then(|| n.to_string())
        })
        .collect()
}

/// The probe's output without the namespace inode numbers (which differ per sandbox).
/// `uid` (the sandbox's own UID) reads as `UID`, so two sandboxes compare equal.
fn confinement(out: &str, uid: u32) -> Vec<String> {
    out.lines()
        .filter(|l| {
            !["cgroup=", "ipc=", "mnt=", "net=", "pid=", "uts=", "user="]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| l.replace(&uid.to_string(), "UID"))
        .collect()
}

/// The cgroup limits of run `id`, read from the host while it runs.
async fn limits_while_running(id: &str) -> BTreeMap<String, String> {
    let cg = CgroupFs::new(DEFAULT_CGROUP_ROOT);
    let files = [
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.max",
        "memory.swap.max",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.max",
        "pids.max",
    ];
    for _ in 0..200 {
        let mut out = BTreeMap::new();
        for dir in cg.dirs(&spec::cgroups_path(id)) {
            for f in files {
                if let Ok(v) = std::fs::read_to_string(dir.join(f)) {
                    out.insert(f.to_string(), v.trim().to_string());
                }
            }
        }
        // runc creates the cgroup, then writes the limits: wait for them, then read again.
        if out.get("pids.max").is_some_and(|v| v != "max") {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut again = BTreeMap::new();
            for dir in cg.dirs(&spec::cgroups_path(id)) {
                for f in files {
                    if let Ok(v) = std::fs::read_to_string(dir.join(f)) {
                        again.insert(f.to_string(), v.trim().to_string());
                    }
                }
            }
            return again;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no cgroup limits appeared for {id}");
}

/// The spec containerd holds for container `id` (read before the run is removed).
async fn stored_spec(client: &Client, id: &str) -> serde_json::Value {
    let c = client
        .containers()
        .get(client.request(GetContainerRequest { id: id.into() }))
        .await
        .expect("get container")
        .into_inner()
        .container
        .expect("container");
    serde_json::from_slice(&c.spec.expect("spec").value).expect("spec JSON")
}

/// The spec a run with `id` gets, its process running as `uid` (the sandbox's own).
fn expected_spec(
    p: &ValidatedPolicy,
    host: &HostFacts,
    id: &str,
    uid: u32,
    args: &[String],
) -> spec::BuiltSpec {
    let mut built = spec::build(
        p,
        host,
        &SpecRequest {
            id,
            args,
            terminal: false,
        },
    )
    .expect("spec");
    spec::run_as_uid(&mut built.spec, uid);
    built
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_run_is_confined_exactly_like_a_cold_run() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let (client, runner, host) = runner(&c, fifo.path()).await;
    let p = policy(PolicyOverrides {
        memory: Some("96M".into()),
        cpus: Some("0.5".into()),
        pids: Some("48".into()),
        ..Default::default()
    });
    let args: Vec<String> = ["sh", "-c", PROBE].map(String::from).to_vec();
    let pool = ready_pool(&runner, &p, 1).await;

    // The pooled sandbox: its container and task exist ahead of the run, labelled as
    // pooled, pid 1 the trampoline waiting for its command.
    let sandbox = pool.take().expect("a ready sandbox");
    let trampoline = serde_json::json!(["/bin/sh", "-c", stockade::runner::TRAMPOLINE]);
    let before = stored_spec(&client, &sandbox.id).await;
    assert_eq!(before["process"]["args"], trampoline);
    assert!(Path::new(&format!("/proc/{}", sandbox.pid)).exists());
    let labels = client
        .containers()
        .get(client.request(GetContainerRequest {
            id: sandbox.id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .container
        .unwrap()
        .labels;
    assert_eq!(labels.get(LABEL_POOL), Some(&p.hash()));

    let warm_id = sandbox.id.clone();
    let warm = {
        let r = runner.clone();
        let req = RunRequest::new(p.clone(), args.clone());
        tokio::spawn(async move { r.run_prepared(sandbox, req).await })
    };
    let warm_limits = limits_while_running(&warm_id).await;
    let warm_spec = stored_spec(&client, &warm_id).await;
    let warm: RunResult = warm.await.unwrap().expect("pooled run");

    let cold_id = new_id();
    let cold = {
        let r = runner.clone();
        let req = RunRequest::new(p.clone(), args.clone()).id(cold_id.clone());
        tokio::spawn(async move { r.run(req).await })
    };
    let cold_limits = limits_while_running(&cold_id).await;
    let cold_spec = stored_spec(&client, &cold_id).await;
    let cold: RunResult = cold.await.unwrap().expect("cold run");

    assert!(warm.pooled && !cold.pooled);
    assert_eq!(
        (warm.exit_code, cold.exit_code),
        (0, 0),
        "{warm:?} {cold:?}"
    );

    // 1. The spec that ran is the one a cold run with that id gets, byte for byte in its
    //    canonical form, and it differs from the cold run's only by the id.
    // Each ran as a UID of its own, not the policy's.
    assert!(warm.uid != p.user.uid && cold.uid != p.user.uid && warm.uid != cold.uid);
    let warm_built = expected_spec(&p, &host, &warm_id, warm.uid, &args);
    let cold_built = expected_spec(&p, &host, &cold_id, cold.uid, &args);
    assert_eq!(warm.spec_digest, spec::digest(&warm_built.spec));
    assert_eq!(cold.spec_digest, spec::digest(&cold_built.spec));
    let canon = |v: serde_json::Value| {
        let s: stockade::oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        spec::canonical_json(&s)
    };
    // The container holds the trampoline's args; with the command's args in their place it
    // is exactly the spec built for the command.
    let mut warm_spec = warm_spec;
    assert_eq!(warm_spec["process"]["args"], trampoline);
    warm_spec["process"]["args"] = serde_json::json!(args);
    assert_eq!(canon(warm_spec), spec::canonical_json(&warm_built.spec));
    assert_eq!(canon(cold_spec), spec::canonical_json(&cold_built.spec));
    let rename = serde_json::to_string(&spec::canonical_json(&warm_built.spec))
        .unwrap()
        .replace(&warm_id, &cold_id)
        .replace(&format!(":{}}}", warm.uid), &format!(":{}}}", cold.uid));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&rename).unwrap(),
        spec::canonical_json(&cold_built.spec),
        "the pooled spec differs from the cold one by more than the id and the uid"
    );

    // 2. What the process sees: credentials, capabilities, no_new_privs, seccomp, rlimits,
    //    cwd, hostname; it is pid 1 in both.
    assert_eq!(
        confinement(&warm.stdout, warm.uid),
        confinement(&cold.stdout, cold.uid)
    );
    assert!(warm
        .stdout
        .contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}", warm.uid)));
    for want in [
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "Seccomp:\t2",
        "self=1",
    ] {
        assert!(
            warm.stdout.contains(want),
            "{want} missing:\n{}",
            warm.stdout
        );
    }

    // 3. The same namespaces are the host's (only user, which the default policy keeps).
    assert_eq!(
        shared_namespaces(&warm.stdout),
        shared_namespaces(&cold.stdout)
    );
    assert!(!shared_namespaces(&warm.stdout).contains(&"net".to_string()));

    // 4. The same cgroup limits, read live from the host.
    assert_eq!(warm_limits, cold_limits);
    assert!(
        warm_limits
            .values()
            .any(|v| v == &(96u64 << 20).to_string()),
        "{warm_limits:?}"
    );

    pool.drain().await;
    nothing_left(&client, &c, fifo.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_sandbox_is_never_reused_and_nothing_leaks() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let (client, runner, _) = runner(&c, fifo.path()).await;
    // A writable root, so that a run could leave something for the next one to find.
    let p = policy(PolicyOverrides {
        read_write_root: true,
        user: Some("0:0".into()),
        ..Default::default()
    });
    let pool = Pool::start(
        runner.clone(),
        p.clone(),
        PoolConfig {
            size: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ids = Vec::new();
    for round in 0..3 {
        assert_eq!(pool.wait_ready(2, READY_PATIENCE).await, 2);
        let r = pool
            .run(RunRequest::new(
                p.clone(),
                [
                    "sh",
                    "-c",
                    "test ! -e /left-behind && echo fresh; echo x > /left-behind",
                ],
            ))
            .await
            .unwrap();
        assert!(r.pooled, "round {round} ran cold");
        assert_eq!(r.exit_code, 0, "round {round}: {r:?}");
        assert_eq!(r.stdout, "fresh\n", "round {round} found a used sandbox");
        assert!(!ids.contains(&r.id), "sandbox {} handed out twice", r.id);
        ids.push(r.id);
    }
    assert_eq!(pool.wait_ready(2, READY_PATIENCE).await, 2);
    let st = pool.status();
    assert_eq!(st.taken, 3);
    assert_eq!(st.ready, 2);
    assert_eq!(st.idle_ages_ms.len(), 2);

    // 32 at once through a pool of 8: 8 warm, the rest cold, all succeed.
    let pool8 = ready_pool(&runner, &p, 8).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (pool, p) = (pool8.clone(), p.clone());
        set.spawn(async move {
            pool.run(RunRequest::new(p, ["echo".to_string(), i.to_string()]))
                .await
        });
    }
    let mut pooled = 0;
    let mut seen = std::collections::HashSet::new();
    while let Some(r) = set.join_next().await {
        let r = r.unwrap().expect("concurrent run");
        assert_eq!(r.exit_code, 0);
        assert!(seen.insert(r.stdout.clone()), "output {} twice", r.stdout);
        pooled += usize::from(r.pooled);
    }
    assert_eq!(seen.len(), 32);
    assert!(pooled >= 8, "only {pooled} of 32 runs were pooled");

    assert_eq!(pool.drain().await, 2);
    pool8.drain().await;
    assert_eq!(pool.drain().await, 0, "drain is idempotent");
    assert!(pool.take().is_none(), "a drained pool hands out nothing");
    runner.wait_cleanups().await;
    assert_no_leftovers(
        &client,
        c.address(),
        fifo.path(),
        None,
        Duration::from_secs(20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_reaches_the_pooled_sandbox_verbatim() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let (client, runner, _) = runner(&c, fifo.path()).await;
    let p = policy(PolicyOverrides::default());
    let pool = Pool::start(
        runner.clone(),
        p.clone(),
        PoolConfig {
            size: 1,
            ..Default::default()
        },
    )
    .unwrap();
    struct Case {
        args: &'static [&'static str],
        stdin: Option<&'static [u8]>,
        exit: u8,
        stdout: &'static str,
    }
    let cases = [
        Case {
            args: &[
                "printf", "%s|", "a b", "it's", "x\ny", "$HOME", "*", "", "\\n", "`id`",
            ],
            stdin: None,
            exit: 0,
            stdout: "a b|it's|x\ny|$HOME|*||\\n|`id`|",
        },
        // The rest of stdin after the command line is the command's.
        Case {
            args: &["sh", "-c", "cat; echo :$#"],
            stdin: Some(b"line 1\nline 2"),
            exit: 0,
            stdout: "line 1\nline 2:0\n",
        },
        Case {
            args: &["cat"],
            stdin: None,
            exit: 0,
            stdout: "",
        },
        Case {
            args: &["no-such-command"],
            stdin: None,
            exit: 127,
            stdout: "",
        },
        Case {
            args: &["sh", "-c", "exit 7"],
            stdin: None,
            exit: 7,
            stdout: "",
        },
    ];
    for case in &cases {
        // A guard, not a claim: refills take seconds under emulation (the VM lane).
        assert_eq!(
            pool.wait_ready(1, READY_PATIENCE).await,
            1,
            "no sandbox ready before {:?}: {:?}",
            case.args,
            pool.status()
        );
        let mut req = RunRequest::new(p.clone(), case.args.iter().copied());
        if let Some(b) = case.stdin {
            req = req.stdin(stockade::runner::Stdin::Bytes(b.to_vec()));
        }
        let r = pool.run(req).await.unwrap();
        assert!(r.pooled);
        assert_eq!(
            (r.exit_code, r.stdout.as_str()),
            (case.exit, case.stdout),
            "{:?}: {r:?}",
            case.args
        );
    }
    pool.drain().await;
    nothing_left(&client, &c, fifo.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_policy_runs_cold_and_idle_sandboxes_expire() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let (client, runner, _) = runner(&c, fifo.path()).await;
    let p = policy(PolicyOverrides::default());
    let pool = Pool::start(
        runner.clone(),
        p.clone(),
        PoolConfig {
            size: 1,
            idle_expiry: Duration::from_millis(1500),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(pool.wait_ready(1, READY_PATIENCE).await, 1);
    let other = policy(PolicyOverrides {
        memory: Some("64M".into()),
        ..Default::default()
    });
    assert!(!pool.matches(&other));
    let r = pool.run(RunRequest::new(other, ["true"])).await.unwrap();
    assert!(!r.pooled, "another policy must not get this pool's sandbox");
    // Not `ready == 1`: on a slow host (the VM lane) the cold run outlasts the expiry.
    assert_eq!(pool.status().taken, 0);

    // Nobody takes: the sandbox expires and the pool stays empty.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = pool.status();
    assert_eq!((st.ready, st.expired), (0, 1), "{st:?}");
    assert!(st.idle);
    runner.wait_cleanups().await;
    nothing_left(&client, &c, fifo.path()).await;
    pool.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_whose_pid_1_died_while_waiting_is_never_handed_out() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let (client, runner, _) = runner(&c, fifo.path()).await;
    let pool = ready_pool(&runner, &policy(PolicyOverrides::default()), 1).await;

    // Someone outside kills the waiting trampoline.
    let tasks = client
        .tasks()
        .list(client.request(containerd_client::services::v1::ListTasksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let pid = nix::unistd::Pid::from_raw(tasks[0].pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let start = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{pid} survived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The run must not inherit the trampoline's death (exit 137): it runs cold.
    let r = pool
        .run(RunRequest::new(
            policy(PolicyOverrides::default()),
            ["echo", "alive"],
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.pooled),
        (0, "alive\n", false),
        "{r:?}"
    );
    let st = pool.status();
    assert_eq!(st.failures, 1, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("died while waiting")),
        "{st:?}"
    );
    // The refill replaces it with a live one, which the next run takes.
    assert_eq!(pool.wait_ready(1, READY_PATIENCE).await, 1);
    let r = pool
        .run(RunRequest::new(
            policy(PolicyOverrides::default()),
            ["echo", "warm"],
        ))
        .await
        .unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.pooled),
        (0, "warm\n", true),
        "{r:?}"
    );
    pool.drain().await;
    runner.wait_cleanups().await;
    nothing_left(&client, &c, fifo.path()).await;
}

/// The mark the image `stockade/marked` holds in `/mark`, as one run of `policy` reads it.
async fn mark_seen(pool: &Pool, policy: &ValidatedPolicy, client: &Client) -> (String, bool) {
    let base = stockade::images::resolve(client, &policy.image)
        .await
        .expect("resolve the marked image");
    let r = pool
        .run(RunRequest::new(policy.clone(), ["cat", "/mark"]).image((&base).into()))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    (r.stdout, r.pooled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_rebuilt_under_the_pool_is_never_served_from_the_old_snapshot() {
    if !require_root_or_skip("runs sandboxes through containerd") {
        return;
    }
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let (client, runner, _) = runner(&c, fifo.path()).await;
    let name = "stockade/marked";
    common::layered::busybox_plus(&client, name, &[("mark", b"one")]).await;
    let p = policy(PolicyOverrides {
        image: Some(name.into()),
        ..Default::default()
    });
    let pool = ready_pool(&runner, &p, 1).await;
    assert_eq!(mark_seen(&pool, &p, &client).await, ("one".into(), true));
    assert_eq!(pool.wait_ready(1, READY_PATIENCE).await, 1);

    // The name now points at another image: the ready sandbox holds the old one.
    common::layered::busybox_plus(&client, name, &[("mark", b"two")]).await;
    assert_eq!(
        mark_seen(&pool, &p, &client).await,
        ("two".into(), false),
        "the sandbox made from the old image must not be served"
    );
    let st = pool.status();
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains(name) && e.contains("removed")),
        "{st:?}"
    );
    // The refill makes sandboxes of the image the name points at now.
    assert_eq!(pool.wait_ready(1, READY_PATIENCE).await, 1);
    assert_eq!(mark_seen(&pool, &p, &client).await, ("two".into(), true));

    // A long-lived runner asked by name (no image handed over) sees the new image too.
    common::layered::busybox_plus(&client, name, &[("mark", b"three")]).await;
    let r = runner
        .run(RunRequest::new(p.clone(), ["cat", "/mark"]))
        .await
        .unwrap();
    assert_eq!(r.stdout, "three");

    pool.drain().await;
    runner.wait_cleanups().await;
    nothing_left(&client, &c, fifo.path()).await;
}
