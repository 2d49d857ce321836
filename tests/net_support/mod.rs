//! The fake upstream network of the network tests (`mod net_support;`): a network
//! namespace joined to the host by a veth (198.18.0.1 on the host, 198.18.0.2 inside),
//! a TCP server answering on 198.18.0.2:8080, 198.18.0.2:8081 and 169.254.169.254:80 (on
//! the upstream's loopback, so a metadata request that got through would be answered), and
//! a routing rule that sends only sandbox-sourced traffic there. No packet goes anywhere
//! the test did not create.
//!
//! Names, routing-rule priorities and the routing table are derived from the test
//! process's PID, so two test binaries (cargo runs them one after another) never share
//! one even when an earlier one was killed before its cleanup. One upstream per process
//! at a time: its addresses are fixed.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, Command, Stdio};

use stockade::network::{NetConfig, DEFAULT_RANGE, VETH_PREFIX};

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

/// The host's address on the upstream link.
pub const HOST_SIDE: &str = "198.18.0.1";
/// The upstream's address.
pub const UPSTREAM: &str = "198.18.0.2";

/// Runs a command and returns its output; panics only when it cannot be started.
pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The fake upstream; dropping it stops the server by PID and removes the namespace, the
/// veth, the rules and the routing table.
pub struct Upstream {
    /// The namespace's name (`ip netns`), `stkt-up-<pid>`.
    pub ns: String,
    veth: String,
    rule_local: String,
    rule_up: String,
    table: String,
    server: Child,
}

impl Upstream {
    /// Makes the upstream and starts its server; returns once the server listens.
    pub fn start() -> Upstream {
        let pid = std::process::id();
        let ns = format!("stkt-up-{pid}");
        let veth = format!("tup{}", pid % 100_000);
        // Two priorities and a table per process, away from the main (32766) and default
        // (32767) rules and from the reserved tables (253-255).
        let slot = pid % 4000;
        let rule_local = (10_000 + 2 * slot).to_string();
        let rule_up = (10_001 + 2 * slot).to_string();
        let table = (20_000 + slot).to_string();
        let range = DEFAULT_RANGE.to_string();
        must(&["ip", "netns", "add", &ns]);
        // From here on, dropping it removes whatever was made.
        let mut up = Upstream {
            ns: ns.clone(),
            veth: veth.clone(),
            rule_local: rule_local.clone(),
            rule_up: rule_up.clone(),
            table: table.clone(),
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
            "ip",
            "rule",
            "add",
            "pref",
            &rule_local,
            "from",
            &range,
            "to",
            &range,
            "lookup",
            "main",
        ]);
        must(&[
            "ip", "rule", "add", "pref", &rule_up, "from", &range, "lookup", &table,
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
            &table,
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
        for pref in [&self.rule_local, &self.rule_up] {
            let _ = sh(&["ip", "rule", "del", "pref", pref]);
        }
        let _ = sh(&["ip", "route", "flush", "table", &self.table]);
        let _ = sh(&["ip", "link", "del", &self.veth]);
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// A shell line that asks `addr port` for `/` and prints `addr:port ok` or `addr:port no`.
pub fn probe(addr: &str, port: u16) -> String {
    format!(
        "if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {addr} {port} | grep -q upstream; \
         then echo {addr}:{port} ok; else echo {addr}:{port} no; fi"
    )
}

/// What sandbox networks left on the host: `stkv*` links, namespace files and claims
/// under `cfg`, and stockade's nftables table.
pub fn leftovers(cfg: &NetConfig) -> Vec<String> {
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
