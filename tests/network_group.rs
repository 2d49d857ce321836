//! Group networks and published ports against a real containerd, beside the fake upstream
//! of `net_support` (198.18.0.2, and 169.254.169.254 on its loopback): members of one
//! group reach each other by name and nothing else (not the host, the upstream, metadata
//! or another group's members); a published port answers on the host's loopback and
//! nowhere else; everything goes with the sandboxes; `network rm` waits for the members;
//! `gc` reclaims what a crash left.

mod common;
mod net_support;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use stockade::network::{host::IpRoute, NetConfig, NetRecord};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::runner::{Runner, StoreImages};
use stockade::sandbox::{CreateRequest, ExecRequest, Sandbox, Sandboxes};

use common::cli::CliHost;
use common::{busybox_image, require_or_skip, PrivateContainerd};
use net_support::{probe, Upstream, HOST_SIDE, UPSTREAM};

const NEEDS: &[&str] = &[
    "/usr/bin/containerd",
    "/usr/sbin/runc",
    "/usr/sbin/nft",
    "/usr/sbin/ip",
    "/usr/bin/nsenter",
    "/usr/bin/python3",
];

fn member_policy(group: &str, publish: &[&str]) -> ValidatedPolicy {
    let o = PolicyOverrides {
        network: Some(group.into()),
        publish: publish.iter().map(ToString::to_string).collect(),
        timeout: Some("120s".into()),
        ..Default::default()
    };
    Policy::default()
        .validate(None, &o, &HostPolicyEnv)
        .expect("valid policy")
}

async fn sh(sb: &Sandbox, script: &str) -> String {
    let r = sb
        .exec(ExecRequest::new(["sh", "-c", script]))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    format!("{}{}", r.stdout, r.stderr)
}

/// Serves `text` on `port` (busybox httpd, in the background).
fn serve(text: &str, port: u16) -> String {
    format!(
        "mkdir -p /tmp/w{port} && echo {text} > /tmp/w{port}/index.html && \
         httpd -p {port} -h /tmp/w{port}"
    )
}

/// A shell line printing `HOST:PORT ok BODY` or `HOST:PORT no`. A name is looked up in
/// `/etc/hosts` as a libc resolver does (the image's static busybox has no resolver that
/// works without NSS modules), and one that is not there is `no`; an address is used as
/// it is.
fn fetch(target: &str) -> String {
    let (host, port) = target.rsplit_once(':').unwrap();
    format!(
        "a=$(awk -v n={host} '{{for(i=2;i<=NF;i++) if($i==n) print $1}}' /etc/hosts); \
         case {host} in *[a-z]*) ;; *) a={host};; esac; \
         if [ -n \"$a\" ] && b=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $a {port} 2>/dev/null | tail -n 1) \
         && [ -n \"$b\" ]; then echo \"{target} ok $b\"; else echo \"{target} no\"; fi"
    )
}

fn record(sb: &Sandbox, fifo: &Path) -> NetRecord {
    stockade::network::read_record(&fifo.join(sb.id()))
        .unwrap()
        .expect("a network record")
}

/// What of these sandboxes' networks is still on the host.
fn leftovers(cfg: &NetConfig, records: &[(String, NetRecord)]) -> Vec<String> {
    let table = Command::new("nft")
        .args(["list", "table", "inet", "stockade"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let mut out = Vec::new();
    for (id, r) in records {
        if Path::new("/sys/class/net").join(&r.veth).exists() {
            out.push(format!("link {}", r.veth));
        }
        if cfg.netns_path(id).exists() {
            out.push(format!("netns {id}"));
        }
        if let Ok(target) = std::fs::read_link(cfg.claims.join(r.slot.to_string())) {
            if target.ends_with(id) {
                out.push(format!("claim {}", r.slot));
            }
        }
        let addr = r.sandbox_addr.to_string();
        let mentioned = table
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .any(|t| t == addr);
        if table.contains(&format!("\"{}\"", r.veth)) || mentioned {
            out.push(format!("rule for {} ({})", r.veth, r.sandbox_addr));
        }
        for p in &r.published {
            if TcpListener::bind((Ipv4Addr::LOCALHOST, p.host_port)).is_err() {
                out.push(format!("listener 127.0.0.1:{}", p.host_port));
            }
        }
    }
    out
}

/// Removes the named groups when dropped, so a failed assertion leaves none behind (their
/// members' networks go with the run directories and the private containerd).
struct Groups(Vec<String>);

impl Drop for Groups {
    fn drop(&mut self) {
        let cfg = NetConfig::default();
        for g in &self.0 {
            let _ = std::fs::remove_dir_all(stockade::network::group::dir(&cfg.groups, g));
        }
    }
}

/// Whether a TCP connection to `addr:port` from the host succeeds within 2 s.
fn connects(addr: Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2)).is_ok()
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s =
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(5))
            .expect("connect to the published port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_reach_each_other_by_name_and_nothing_else() {
    if !require_or_skip("makes network namespaces, veths and nftables rules", NEEDS) {
        return;
    }
    let up = Upstream::start();
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let runner = Runner::builder()
        .client(client.clone())
        .host(stockade::host::probe(&stockade::host::HostPaths::system()).expect("probe"))
        .images(Arc::new(StoreImages::default()))
        .fifo_root(&fifo)
        .uid_claims(dir.path().join("uids"))
        .build()
        .expect("runner");
    let sandboxes = Sandboxes::new(runner);
    let cfg = NetConfig::default();
    let pid = std::process::id();
    let (ga, gb) = (format!("t{pid}a"), format!("t{pid}b"));
    let _groups = Groups(vec![ga.clone(), gb.clone()]);
    stockade::network::create_group(&cfg, &ga).unwrap();
    stockade::network::create_group(&cfg, &gb).unwrap();

    // Sixteen sessions at once, eight in each group, each serving its name on port 9000;
    // a0 also publishes it on a free loopback port, and serves 9001 unpublished.
    let mut tasks = tokio::task::JoinSet::new();
    for (g, prefix) in [(&ga, "a"), (&gb, "b")] {
        for n in 0..8 {
            let (sandboxes, g) = (sandboxes.clone(), g.clone());
            let name = format!("{prefix}{n}-{pid}");
            let publish: &[&str] = if name.starts_with("a0-") {
                &["0:9000"]
            } else {
                &[]
            };
            let policy = member_policy(&g, publish);
            tasks.spawn(async move {
                let mut req = CreateRequest::new(policy);
                req.name = Some(name.clone());
                let sb = sandboxes.create(req).await.expect("create");
                let out = sh(
                    &sb,
                    &format!("{} && {}", serve(&name, 9000), serve("hidden", 9001)),
                )
                .await;
                (name, sb, out)
            });
        }
    }
    let mut members: Vec<(String, Sandbox)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (name, sb, out) = r.unwrap();
        assert_eq!(out, "", "{name} serves");
        members.push((name, sb));
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let by = |n: &str| {
        &members
            .iter()
            .find(|(name, _)| name.starts_with(&format!("{n}-")))
            .unwrap()
            .1
    };
    let mut records: Vec<(String, NetRecord)> = members
        .iter()
        .map(|(_, sb)| (sb.id().to_string(), record(sb, &fifo)))
        .collect();
    let b0_addr = record(by("b0"), &fifo).sandbox_addr;

    // Every member reaches a peer of its own group by name, and not a member of the other
    // group by address.
    let mut checks = tokio::task::JoinSet::new();
    for (i, (name, sb)) in members.iter().enumerate() {
        let group = &name[..1];
        let peer = format!("{group}{}-{pid}", (i + 1) % 8);
        let other = if group == "a" {
            b0_addr.to_string()
        } else {
            record(by("a0"), &fifo).sandbox_addr.to_string()
        };
        let script = format!(
            "{}; {}",
            fetch(&format!("{peer}:9000")),
            fetch(&format!("{other}:9000"))
        );
        let (name, sb, peer) = (name.clone(), sb.clone(), peer.clone());
        checks.spawn(async move {
            let out = sh(&sb, &script).await;
            assert_eq!(
                out,
                format!("{peer}:9000 ok {peer}\n{other}:9000 no\n"),
                "{name}"
            );
        });
    }
    while let Some(r) = checks.join_next().await {
        r.unwrap();
    }

    // Nothing else: not the host (its gateway, its address on the upstream link, a
    // listener on all its addresses), not the upstream, not metadata.
    let host = TcpListener::bind("0.0.0.0:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let script = format!(
        "gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); \
         for a in $gw {HOST_SIDE}; do if nc -w 2 $a {port} </dev/null; then echo $a reached; \
         else echo $a refused; fi; done; {}; {}; {}",
        probe(UPSTREAM, 8080),
        probe("169.254.169.254", 80),
        fetch(&format!("{HOST_SIDE}:{port}")),
    );
    let out = sh(by("a1"), &script).await;
    assert_eq!(out.matches("refused").count(), 2, "{out}");
    assert!(out.contains(&format!("{UPSTREAM}:8080 no")), "{out}");
    assert!(out.contains("169.254.169.254:80 no"), "{out}");
    assert!(
        host.accept().is_err(),
        "the host listener accepted a connection"
    );

    // A member that joins later is known by name to the earlier ones.
    let mut req = CreateRequest::new(member_policy(&ga, &[]));
    req.name = Some(format!("late-{pid}"));
    let late = sandboxes.create(req).await.unwrap();
    assert_eq!(sh(&late, &serve("late", 9000)).await, "");
    records.push((late.id().to_string(), record(&late, &fifo)));
    let out = sh(by("a0"), &fetch(&format!("late-{pid}:9000"))).await;
    assert_eq!(out, format!("late-{pid}:9000 ok late\n"));
    let out = sh(by("b0"), &fetch(&format!("late-{pid}:9000"))).await;
    assert_eq!(
        out,
        format!("late-{pid}:9000 no\n"),
        "another group's name does not resolve"
    );

    // The published port answers on 127.0.0.1 only; the host reaches the sandbox's
    // address on that port only (9001 is served but not published).
    let a0 = record(by("a0"), &fifo);
    assert_eq!(a0.published.len(), 1);
    let hp = a0.published[0].host_port;
    assert_eq!(a0.published[0].port, 9000);
    assert!(http_get(hp).contains(&format!("a0-{pid}")));
    assert!(
        !connects(HOST_SIDE.parse().unwrap(), hp),
        "published on another address"
    );
    assert!(connects(a0.sandbox_addr, 9000));
    assert!(
        !connects(a0.sandbox_addr, 9001),
        "an unpublished port was reachable"
    );
    let info = by("a0").inspect().await.unwrap();
    assert_eq!(info.network.unwrap().published, a0.published);

    // A group with members cannot go.
    let e = stockade::network::remove_group(&cfg, &ga)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has active endpoints"), "{e}");

    // Teardown: every member removed, nothing of theirs left; then the groups go.
    late.remove(true).await.unwrap();
    for (_, sb) in members {
        sb.remove(true).await.unwrap();
    }
    assert_eq!(leftovers(&cfg, &records), Vec::<String>::new());
    for g in [&ga, &gb] {
        let hosts = stockade::network::group::hosts_path(&cfg.groups, g);
        assert_eq!(
            std::fs::read_to_string(&hosts).unwrap(),
            "127.0.0.1\tlocalhost\n"
        );
        stockade::network::remove_group(&cfg, g).unwrap();
        assert!(!hosts.exists());
    }
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_s_published_port_is_served_by_its_keeper_until_it_is_removed() {
    if !require_or_skip("runs the stockade CLI with networks", NEEDS) {
        return;
    }
    let h = CliHost::start().await;
    let fifo = h.fifo();
    // (exit code, stdout, stderr); `network` takes no --address or --fifo-root.
    let stockade = |args: &[&str]| {
        let mut cmd = if args[0] == "network" {
            common::cli::stockade(&args[..1])
        } else {
            h.command(args[0])
        };
        let out = common::cli::output(cmd.args(&args[1..]), b"");
        let stdout = out.text();
        (out.code, stdout, out.stderr)
    };
    let g = format!("t{}k", std::process::id());
    let name = format!("web-{}", std::process::id());
    let _groups = Groups(vec![g.clone()]);
    assert_eq!(stockade(&["network", "create", &g]).0, 0);
    let (code, out, err) = stockade(&[
        "create",
        "--network",
        &g,
        "-p",
        "127.0.0.1:0:9000",
        "--name",
        &name,
    ]);
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    let line = err
        .lines()
        .find(|l| l.starts_with("stockade: published 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no published line: {err}"));
    let hp: u16 = line["stockade: published 127.0.0.1:".len()..]
        .split("->")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(line.ends_with("->9000/tcp"), "{line}");
    let rec = stockade::network::read_record(&fifo.join(&id))
        .unwrap()
        .unwrap();
    let keeper = rec.proxy_pid.expect("the proxy's process");
    assert!(Path::new(&format!("/proc/{keeper}")).exists());

    let (code, _, err) = stockade(&["exec", &name, "--", "sh", "-c", &serve("from-keeper", 9000)]);
    assert_eq!(code, 0, "{err}");
    assert!(http_get(hp).contains("from-keeper"));
    let (_, ls, _) = stockade(&["ls"]);
    assert!(ls.contains(&format!("127.0.0.1:{hp}->9000/tcp")), "{ls}");
    let (code, _, err) = stockade(&["network", "rm", &g]);
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("has active endpoints"), "{err}");
    let (_, ls, _) = stockade(&["network", "ls"]);
    assert!(ls.contains(&g) && ls.contains(&name), "{ls}");

    let (code, _, err) = stockade(&["rm", "-f", &name]);
    assert_eq!(code, 0, "{err}");
    // The keeper sees its session gone and exits, its listener with it.
    let mut gone = false;
    for _ in 0..100 {
        let zombie_or_gone = std::fs::read_to_string(format!("/proc/{keeper}/stat"))
            .map_or(true, |s| s.contains(") Z "));
        if zombie_or_gone && TcpListener::bind((Ipv4Addr::LOCALHOST, hp)).is_ok() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the keeper or its listener outlived the session");
    let cfg = NetConfig::default();
    assert_eq!(leftovers(&cfg, &[(id, rec)]), Vec::<String>::new());
    assert_eq!(stockade(&["network", "rm", &g]).0, 0);
}

#[test]
fn gc_reclaims_a_crashed_member_s_network_and_its_name() {
    if !require_or_skip("makes network namespaces, veths and nftables rules", NEEDS) {
        return;
    }
    let cfg = NetConfig::default();
    let host = IpRoute::default();
    let g = format!("t{}c", std::process::id());
    let _groups = Groups(vec![g.clone()]);
    stockade::network::create_group(&cfg, &g).unwrap();
    let fifo = tempfile::tempdir().unwrap();
    let id = format!("stk-crash{}", std::process::id());
    let run_dir = fifo.path().join(&id);
    std::fs::create_dir(&run_dir).unwrap();
    let rules = stockade::network::NetworkRules {
        group: Some(g.clone()),
        ..Default::default()
    };
    let a = stockade::network::setup(
        &host,
        &cfg,
        &id,
        &run_dir,
        stockade::network::NetworkMode::Group,
        &rules,
    )
    .unwrap();
    let rec = stockade::network::read_record(&run_dir).unwrap().unwrap();
    let hosts = stockade::network::group::hosts_path(&cfg.groups, &g);
    assert!(std::fs::read_to_string(&hosts).unwrap().contains(&id));
    assert!(!leftovers(&cfg, &[(id.clone(), rec.clone())]).is_empty());
    assert!(stockade::network::groups(&cfg)
        .iter()
        .any(|x| x.name == g && x.members.iter().any(|m| m.address == a.address)));

    // The crash: the run directory goes, nothing is released.
    std::fs::remove_dir_all(&run_dir).unwrap();
    let done = stockade::network::reconcile_with(&host, &cfg, fifo.path(), Duration::ZERO).unwrap();
    assert!(done.claims.contains(&rec.slot), "{done:?}");
    assert!(done.links.contains(&rec.veth), "{done:?}");
    assert_eq!(leftovers(&cfg, &[(id.clone(), rec)]), Vec::<String>::new());
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1\tlocalhost\n"
    );
    // The group itself stays until it is removed.
    assert!(stockade::network::groups(&cfg).iter().any(|x| x.name == g));
    stockade::network::remove_group(&cfg, &g).unwrap();
}
