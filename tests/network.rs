//! `egress` against a real containerd, with the fake upstream of `net_support` made by the
//! test (198.18.0.2 behind a veth, servers on 8080, 8081 and 169.254.169.254:80, only
//! sandbox-sourced traffic routed there). No packet goes anywhere the test did not create.

mod common;
mod net_support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use stockade::network::NetConfig;
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::runner::{CleanupMode, RunRequest, RunResult, Runner, StoreImages};

use common::{busybox_image, require_or_skip, PrivateContainerd};
use net_support::{leftovers, probe, Upstream};

fn allowlist(allow: &[&str]) -> ValidatedPolicy {
    let mut p = Policy::default();
    p.network.dns_upstream = Some(vec![net_support::UPSTREAM.to_string()]);
    let o = PolicyOverrides {
        network: Some("allowlist".into()),
        allow: allow.iter().map(std::string::ToString::to_string).collect(),
        timeout: Some("90s".into()),
        ..Default::default()
    };
    p.validate(None, &o, &HostPolicyEnv).expect("valid policy")
}

fn egress(allow: &[&str]) -> ValidatedPolicy {
    let o = PolicyOverrides {
        network: Some("egress".into()),
        allow: allow.iter().map(std::string::ToString::to_string).collect(),
        timeout: Some("60s".into()),
        ..Default::default()
    };
    Policy::default()
        .validate(None, &o, &HostPolicyEnv)
        .expect("valid policy")
}

async fn run(runner: &Runner, policy: ValidatedPolicy, script: &str) -> RunResult {
    let args = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    runner
        .run(RunRequest::new(policy, args))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_reaches_the_upstream_and_nothing_it_must_not() {
    if !require_or_skip(
        "makes network namespaces, veths and nftables rules",
        &[
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            "/usr/sbin/nft",
            "/usr/sbin/ip",
            "/usr/bin/nsenter",
            "/usr/bin/python3",
        ],
    ) {
        return;
    }
    let _one = net_support::ONE_AT_A_TIME.lock().await;
    let up = Upstream::start();
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let fifo = tempfile::tempdir().unwrap();
    let runner = Runner::builder()
        .client(client.clone())
        .host(stockade::host::probe(&stockade::host::HostPaths::system()).expect("probe"))
        .images(Arc::new(StoreImages::default()))
        .fifo_root(fifo.path())
        .cleanup(CleanupMode::Inline)
        .build()
        .expect("runner");
    let cfg = NetConfig::default();

    // The upstream answers on both ports.
    let r = run(
        &runner,
        egress(&[]),
        &format!(
            "{}; {}",
            probe("198.18.0.2", 8080),
            probe("198.18.0.2", 8081)
        ),
    )
    .await;
    assert_eq!(
        r.stdout, "198.18.0.2:8080 ok\n198.18.0.2:8081 ok\n",
        "{r:?}"
    );
    assert!(r.phases.network_ms.is_some());

    // Metadata: dropped; the same request with the range named explicitly is answered, so
    // the drop is the rule's doing and not a missing route.
    let r = run(&runner, egress(&[]), &probe("169.254.169.254", 80)).await;
    assert_eq!(r.stdout, "169.254.169.254:80 no\n", "{r:?}");
    let r = run(
        &runner,
        egress(&["169.254.169.254"]),
        &probe("169.254.169.254", 80),
    )
    .await;
    assert_eq!(r.stdout, "169.254.169.254:80 ok\n", "{r:?}");

    // The host: a listener on all its addresses; the sandbox tries its gateway (the veth's
    // host side) and the host's address on the upstream link.
    let host = TcpListener::bind("0.0.0.0:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let script = format!(
        "gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); \
         for a in $gw 198.18.0.1; do if nc -w 2 $a {port} </dev/null; then echo $a reached; \
         else echo $a refused; fi; done"
    );
    let r = run(&runner, egress(&[]), &script).await;
    assert_eq!(r.stdout.matches("refused").count(), 2, "{r:?}");
    assert!(
        host.accept().is_err(),
        "the host listener accepted a connection"
    );

    // Another sandbox: B listens; A, started while B runs, cannot connect to B's address.
    let b_id = "stk-net-listener".to_string();
    let mut req = RunRequest::new(
        egress(&[]),
        ["sh", "-c", "nc -l -p 9000 -w 20; echo b-done"],
    );
    req.id = Some(b_id.clone());
    let b = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run(req).await })
    };
    let record = fifo.path().join(&b_id).join("network.json");
    let mut b_addr = None;
    for _ in 0..600 {
        if let Ok(Some(r)) = stockade::network::read_record(&fifo.path().join(&b_id)) {
            b_addr = Some(r.sandbox_addr);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let b_addr = b_addr.unwrap_or_else(|| panic!("{} never appeared", record.display()));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let r = run(
        &runner,
        egress(&["10.0.0.0/8"]),
        &format!("if echo hi | nc -w 3 {b_addr} 9000; then echo reached; else echo refused; fi"),
    )
    .await;
    assert_eq!(r.stdout, "refused\n", "even with 10/8 named, {r:?}");
    let _ = b.await;

    // IPv6 and raw sockets: refused by seccomp (EPERM), and the namespace has no IPv6.
    let r = run(
        &runner,
        egress(&[]),
        "cat /proc/sys/net/ipv6/conf/all/disable_ipv6; ip -6 addr | grep -c inet6; \
         nc -w 2 ::1 80 </dev/null; ping -c 1 -W 2 198.18.0.2; echo end",
    )
    .await;
    assert!(r.stdout.starts_with("1\n0\n"), "{r:?}");
    assert!(!r.stdout.contains("bytes from"), "{r:?}");
    assert!(
        r.stderr.matches("ermission denied").count() + r.stderr.matches("not permitted").count()
            >= 2,
        "{r:?}"
    );

    // Sixteen at once, each reaching the upstream.
    let runs = (0..16).map(|_| {
        let runner = runner.clone();
        tokio::spawn(async move { run(&runner, egress(&[]), &probe("198.18.0.2", 8080)).await })
    });
    let mut addrs = Vec::new();
    for h in runs {
        let r = h.await.unwrap();
        assert_eq!(r.stdout, "198.18.0.2:8080 ok\n", "{r:?}");
        addrs.push(r.id);
    }
    assert_eq!(addrs.len(), 16);

    // Teardown left nothing: no veth, namespace file, claim or sandbox rule.
    runner.wait_cleanups().await;
    assert_eq!(leftovers(&cfg), Vec::<String>::new());
    drop(up);
    assert!(!Path::new("/run/netns")
        .join(format!("stkt-up-{}", std::process::id()))
        .exists());
}

async fn runner_for(c: &PrivateContainerd, fifo: &Path) -> Runner {
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    Runner::builder()
        .client(client.clone())
        .host(stockade::host::probe(&stockade::host::HostPaths::system()).expect("probe"))
        .images(Arc::new(StoreImages::default()))
        .fifo_root(fifo)
        .cleanup(CleanupMode::Inline)
        .build()
        .expect("runner")
}

/// The lines of `r.stdout`, for comparing one claim at a time.
fn lines(r: &RunResult) -> Vec<&str> {
    r.stdout.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_passes_exactly_its_entries_and_resolves_only_its_names() {
    if !require_or_skip(
        "makes network namespaces, veths and nftables rules",
        &[
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            "/usr/sbin/nft",
            "/usr/sbin/ip",
            "/usr/bin/nsenter",
            "/usr/bin/python3",
        ],
    ) {
        return;
    }
    let _one = net_support::ONE_AT_A_TIME.lock().await;
    let up = Upstream::start();
    up.set_answers(&[
        ("api.test", &["198.18.0.4"], 60),
        ("short.test", &["198.18.0.5"], 2),
        ("other.test", &["198.18.0.2"], 60),
        ("rebind.test", &["169.254.169.254"], 60),
        ("private.test", &["198.18.0.5", "10.1.2.3"], 60),
    ]);
    let c = PrivateContainerd::start().await;
    let fifo = tempfile::tempdir().unwrap();
    let runner = runner_for(&c, fifo.path()).await;
    let cfg = NetConfig::default();
    let entries = [
        "198.18.0.2:8080",
        "api.test:8081",
        "short.test:8081",
        "rebind.test",
        "private.test",
    ];

    // The listed address:port, not its other port; the name's address only once the name
    // was resolved, and only on the name's port.
    let script = [
        probe("198.18.0.2", 8080),
        probe("198.18.0.2", 8081),
        probe("198.18.0.4", 8081),
        probe("api.test", 8081),
        probe("198.18.0.4", 8081),
        probe("198.18.0.4", 8080),
        probe("198.18.0.5", 8081),
    ]
    .join("; ");
    let r = run(&runner, allowlist(&entries), &script).await;
    assert_eq!(
        lines(&r),
        [
            "198.18.0.2:8080 ok",
            "198.18.0.2:8081 no",
            "198.18.0.4:8081 no",
            "api.test:8081 ok",
            "198.18.0.4:8081 ok",
            "198.18.0.4:8080 no",
            "198.18.0.5:8081 no",
        ],
        "{r:?}"
    );

    // DNS: only through the forwarder, only allowlisted names, no AAAA, no answer that
    // points into a denied range (and nothing admitted for it).
    let script = "cat /etc/resolv.conf; \
        nslookup -type=a api.test >/dev/null 2>&1 && echo api resolved || echo api refused; \
        nslookup -type=a other.test >/dev/null 2>&1 && echo other resolved || echo other refused; \
        nslookup -type=aaaa api.test 2>&1 | grep -c '::' ; \
        for s in 198.18.0.2 198.18.0.3; do \
          timeout 5 nslookup -type=a api.test $s >/dev/null 2>&1 && echo $s answered || echo $s silent; done; \
        nslookup -type=a rebind.test >/dev/null 2>&1 && echo rebind resolved || echo rebind refused; \
        nslookup -type=a private.test >/dev/null 2>&1 && echo private resolved || echo private refused";
    let script = format!(
        "{script}; {}; {}; {}",
        probe("169.254.169.254", 80),
        probe("rebind.test", 80),
        probe("198.18.0.5", 8081)
    );
    let r = run(&runner, allowlist(&entries), &script).await;
    let gw = r.stdout.lines().next().unwrap_or_default().to_string();
    assert!(gw.starts_with("nameserver 10.199."), "{r:?}");
    assert_eq!(
        lines(&r)[1..],
        [
            "api resolved",
            "other refused",
            "0",
            "198.18.0.2 silent",
            "198.18.0.3 silent",
            "rebind refused",
            "private refused",
            "169.254.169.254:80 no",
            "rebind.test:80 no",
            "198.18.0.5:8081 no",
        ],
        "{r:?}"
    );

    // The admission lasts the record's TTL: after it, the address is refused until the
    // name is resolved again.
    let script = format!(
        "nslookup -type=a short.test >/dev/null 2>&1; sleep 5; {}; {}",
        probe("198.18.0.5", 8081),
        probe("short.test", 8081)
    );
    let r = run(&runner, allowlist(&entries), &script).await;
    assert_eq!(
        lines(&r),
        ["198.18.0.5:8081 no", "short.test:8081 ok"],
        "{r:?}"
    );

    // A live admission survives the table being rebuilt for another sandbox.
    let a_id = "stk-net-allow-a".to_string();
    let script = format!(
        "{}; sleep 15; {}",
        probe("api.test", 8081),
        probe("198.18.0.4", 8081)
    );
    let mut req = RunRequest::new(allowlist(&entries), ["sh", "-c", script.as_str()]);
    req.id = Some(a_id.clone());
    let a = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run(req).await })
    };
    let admitted = fifo.path().join(&a_id).join("dns-admitted.json");
    for _ in 0..600 {
        if admitted.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(admitted.exists(), "{} never appeared", admitted.display());
    let r = run(&runner, egress(&[]), &probe("198.18.0.2", 8080)).await;
    assert_eq!(r.stdout, "198.18.0.2:8080 ok\n", "{r:?}");
    let r = a.await.unwrap().unwrap();
    assert_eq!(
        lines(&r),
        ["api.test:8081 ok", "198.18.0.4:8081 ok"],
        "{r:?}"
    );

    // IPv6 and raw sockets: refused by seccomp.
    let r = run(
        &runner,
        allowlist(&entries),
        "nc -w 2 ::1 80 </dev/null; ping -c 1 -W 2 198.18.0.2; echo end",
    )
    .await;
    assert!(!r.stdout.contains("bytes from"), "{r:?}");
    assert!(
        r.stderr.matches("ermission denied").count() + r.stderr.matches("not permitted").count()
            >= 2,
        "{r:?}"
    );

    // Teardown left nothing: no veth, namespace file, claim, rule or set element, and
    // nothing listens on port 53 any more.
    runner.wait_cleanups().await;
    assert_eq!(leftovers(&cfg), Vec::<String>::new());
    let listening = net_support::sh(&["ss", "-Hlnup", "sport", "= :53"]);
    let ours: Vec<&str> = std::str::from_utf8(&listening.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("10.199."))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    drop(up);
}
