//! The fake upstream network of the network tests (`mod net_support;`): a network
//! namespace joined to the host by a veth (198.18.0.1 on the host, 198.18.0.2 inside),
//! a TCP server answering on 198.18.0.2:8080, 198.18.0.2:8081 and 169.254.169.254:80 (on
//! the upstream's loopback, so a metadata request that got through would be answered), and
//! a routing rule that sends only sandbox-sourced traffic there. It also has 198.18.0.3-5
//! (HTTP on 8080 and 8081 of .4 and .5, for names to point at) and a fake DNS server on
//! 198.18.0.2 and 198.18.0.3 answering what the test sets ([`Upstream::set_answers`]). No packet goes anywhere
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

/// A fake DNS server on UDP and TCP port 53 of every address given after the answers
/// file. The file (JSON, re-read on every query) maps a lowercase name to
/// `{"a": [addresses], "ttl": seconds}`; other names get NXDOMAIN, other types of a known
/// name an empty answer.
const DNS: &str = r#"
import json, socket, socketserver, struct, sys, threading
answers = sys.argv[1]
def reply(q):
    tid = q[:2]
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += 1 + q[i]
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    question = q[12:i + 5]
    rec = json.load(open(answers)).get(".".join(labels))
    body = b""
    n = 0
    if rec is not None and qtype == 1:
        for a in rec["a"]:
            body += struct.pack(">HHHIH", 0xC00C, 1, 1, rec["ttl"], 4) + socket.inet_aton(a)
            n += 1
    flags = 0x8180 | (0 if rec is not None else 3)
    return tid + struct.pack(">HHHHH", flags, 1, n, 0, 0) + question + body
class U(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(reply(data), self.client_address)
class T(socketserver.StreamRequestHandler):
    def handle(self):
        n = struct.unpack(">H", self.rfile.read(2))[0]
        r = reply(self.rfile.read(n))
        self.wfile.write(struct.pack(">H", len(r)) + r)
socketserver.ThreadingUDPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.allow_reuse_address = True
for a in sys.argv[2:]:
    for cls, h in ((socketserver.ThreadingUDPServer, U), (socketserver.ThreadingTCPServer, T)):
        s = cls((a, 53), h)
        threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The host's address on the upstream link.
pub const HOST_SIDE: &str = "198.18.0.1";
/// The upstream's address; its fake DNS server listens here too.
pub const UPSTREAM: &str = "198.18.0.2";
/// Further upstream addresses: a second DNS server on the first, HTTP servers on
/// both (8080 and 8081) for names to point at.
pub const UPSTREAM_EXTRA: [&str; 3] = ["198.18.0.3", "198.18.0.4", "198.18.0.5"];

/// Held by a test while it uses the upstream: one upstream per process at a time.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    dns: Option<Child>,
    answers: tempfile::NamedTempFile,
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
            dns: None,
            answers: tempfile::NamedTempFile::new().unwrap(),
        };
        up.set_answers(&[]);
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
            "addr add 198.18.0.3/24 dev eth0",
            "addr add 198.18.0.4/24 dev eth0",
            "addr add 198.18.0.5/24 dev eth0",
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
            .args(["198.18.0.4:8080", "198.18.0.4:8081"])
            .args(["198.18.0.5:8080", "198.18.0.5:8081"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the upstream server");
        ready(&mut up.server);
        let answers = up.answers.path().to_string_lossy().into_owned();
        let mut dns = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "/usr/bin/python3",
                "-c",
                DNS,
                &answers,
            ])
            .args(["198.18.0.2", "198.18.0.3"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the upstream DNS server");
        ready(&mut dns);
        up.dns = Some(dns);
        up
    }

    /// What the fake DNS servers answer from now on: `(name, addresses, ttl seconds)`.
    pub fn set_answers(&self, answers: &[(&str, &[&str], u32)]) {
        let map: serde_json::Map<String, serde_json::Value> = answers
            .iter()
            .map(|(name, a, ttl)| (name.to_string(), serde_json::json!({"a": a, "ttl": ttl})))
            .collect();
        let tmp = self.answers.path().with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&map).unwrap()).unwrap();
        std::fs::rename(&tmp, self.answers.path()).unwrap();
    }
}

/// Waits for the `ready` line of a server started with a piped stdout. The whole line: a
/// write after the pipe closed would kill the server (EPIPE).
fn ready(server: &mut Child) {
    let mut line = [0u8; 6];
    server
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut line)
        .expect("the server says ready");
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(dns) = self.dns.as_mut() {
            let _ = dns.kill();
            let _ = dns.wait();
        }
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
