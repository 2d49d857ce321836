//! `egress` against a real containerd, with a fake upstream made by the test: a network
//! namespace joined to the host by a veth (198.18.0.1 on the host, 198.18.0.2 inside), a
//! TCP server answering on 198.18.0.2:8080, 198.18.0.2:8081 and 169.254.169.254:80 (on the
//! upstream's loopback, so a metadata request that got through would be answered), and a
//! routing rule that sends only sandbox-sourced traffic there. No packet goes anywhere
//! the test did not create.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use stockade::network::{NetConfig, DEFAULT_RANGE, VETH_PREFIX};
use stockade::policy::{HostPolicyEnv, Policy, PolicyOverrides, ValidatedPolicy};
use stockade::runner::{CleanupMode, RunRequest, RunResult, Runner, StoreImages};

use common::{busybox_image, require_or_skip, PrivateContainerd};

const SERVER: &str = r#"
import socketserver, sys, threading
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        a, p = self.server.server_address
        self.wfile.write(b"HTTP/1.0 200 OK\r\n\r\nupstream %s:%d\n" % (a.encode(), p))
socketserver.ThreadingTCPServer.allow_reuse_address = True
for spec in sys.argv[1:]:
    a, p = spec.rsplit(":", 1)
    s = socketserver.ThreadingTCPServer((a, int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Routing-rule priorities and table the test adds (and removes).
const RULE_LOCAL: &str = "10990";
const RULE_UP: &str = "10991";
const TABLE: &str = "10999";

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The fake upstream; dropping it stops the server by PID and removes the namespace, the
/// veth, the rules and the routing table.
struct Upstream {
    ns: String,
    veth: String,
    server: Child,
}

impl Upstream {
    fn start() -> Upstream {
        let ns = format!("stkt-up-{}", std::process::id());
        let veth = format!("tup{}", std::process::id() % 100_000);
        let range = DEFAULT_RANGE.to_string();
        must(&["ip", "netns", "add", &ns]);
        // From here on, dropping it removes whatever was made.
        let mut up = Upstream {
            ns: ns.clone(),
            veth: veth.clone(),
            server: Command::new("true").spawn().unwrap(),
        };
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "addr", "add", "198.18.0.1/24", "dev", &veth]);
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1").unwrap();
        // Replies from the upstream to a sandbox arrive here and are forwarded: forwarding
        // on this interface only (the test's own).
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{veth}/forwarding"), "1").unwrap();
        must(&["ip", "link", "set", &veth, "up"]);
        for cmd in [
            "link set lo up",
            "addr add 198.18.0.2/24 dev eth0",
            "addr add 169.254.169.254/32 dev lo",
            "link set eth0 up",
            "route add default via 198.18.0.1",
        ] {
            let mut a = vec!["ip", "-n", &ns];
            a.extend(cmd.split(' '));
            must(&a);
        }
        // Only traffic from sandbox addresses to elsewhere goes to the upstream.
        must(&[
            "ip", "rule", "add", "pref", RULE_LOCAL, "from", &range, "to", &range, "lookup", "main",
        ]);
        must(&[
            "ip", "rule", "add", "pref", RULE_UP, "from", &range, "lookup", TABLE,
        ]);
        must(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "198.18.0.2",
            "dev",
            &veth,
            "table",
            TABLE,
        ]);
        let _ = up.server.wait();
        up.server = Command::new("ip")
            .args(["netns", "exec", &ns, "/usr/bin/python3", "-c", SERVER])
            .args(["198.18.0.2:8080", "198.18.0.2:8081", "169.254.169.254:80"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the upstream server");
        // The whole line: a write after the pipe closed would kill the server (EPIPE).
        let mut ready = [0u8; 6];
        up.server
            .stdout
            .take()
            .unwrap()
            .read_exact(&mut ready)
            .expect("the server says ready");
        up
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for pref in [RULE_LOCAL, RULE_UP] {
            let _ = sh(&["ip", "rule", "del", "pref", pref]);
        }
        let _ = sh(&["ip", "route", "flush", "table", TABLE]);
        let _ = sh(&["ip", "link", "del", &self.veth]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
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

/// A shell line that asks `addr port` for `/` and prints `addr:port ok` or `addr:port no`.
fn probe(addr: &str, port: u16) -> String {
    format!(
        "if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port} | grep -q upstream; \
         then echo {addr}:{port} ok; else echo {addr}:{port} no; fi"
    )
}

fn leftovers(cfg: &NetConfig) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/class/net").unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(VETH_PREFIX) {
            out.push(format!("link {n}"));
        }
    }
    for dir in [&cfg.netns_root, &cfg.claims] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !n.starts_with('.') {
                    out.push(format!("{}", e.path().display()));
                }
            }
        }
    }
    // With the last networked sandbox gone, stockade's table goes too.
    let table = sh(&["nft", "list", "table", "inet", "stockade"]);
    if table.status.success() {
        out.push(format!(
            "table inet stockade: {}",
            String::from_utf8_lossy(&table.stdout)
        ));
    }
    out
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
    let up = Upstream::start();
    let c = PrivateContainerd::start().await;
    let client = c.client("stockade").await;
    busybox_image(&client).await;
    let fifo = tempfile::tempdir().unwrap();
    let runner = Runner::builder()
        .client(client.clone())
        .host(stockade::host::probe(&stockade::host::HostPaths::system()).expect("probe"))
        .images(Arc::new(StoreImages))
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
