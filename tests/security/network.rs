//! Network escapes from an `allowlist` sandbox, against the fake upstream of
//! `net_support` (198.18.0.2, with 169.254.169.254 on its loopback so that a metadata
//! request that got through would be answered, and a fake DNS server on .2 and .3): cloud
//! metadata, the host's addresses, DNS rebinding, DNS to another server, raw sockets and
//! IPv6. Each attempt prints one line, and the case holds only if every line says it
//! failed while the allowed entry still works.

use std::net::TcpListener;

use crate::harness::{exclusive_case, CaseResult, Daemon, Sandbox};
use crate::net_support::{probe, Upstream, ONE_AT_A_TIME};
use crate::{ensure, fail};

pub fn cases() -> Vec<crate::harness::Case> {
    // Alone on the host: the upstream routes every sandbox address's traffic.
    vec![exclusive_case(
        "network::allowlist_escapes_are_refused",
        |d| allowlist_escapes(d),
    )]
}

const POLICY: &str = r#"
[network]
mode = "allowlist"
allow = ["198.18.0.2:8080", "api.test:8081", "rebind.test", "private.test"]
dns_upstream = ["198.18.0.2"]
"#;

fn allowlist_escapes(d: &Daemon) -> CaseResult {
    for bin in [
        "/usr/sbin/nft",
        "/usr/sbin/ip",
        "/usr/bin/nsenter",
        "/usr/bin/python3",
    ] {
        if !std::path::Path::new(bin).exists() {
            fail!("needs {bin}");
        }
    }
    let _one = ONE_AT_A_TIME.blocking_lock();
    let up = Upstream::start();
    up.set_answers(&[
        ("api.test", &["198.18.0.4"], 60),
        ("rebind.test", &["169.254.169.254"], 60),
        ("private.test", &["198.18.0.5", "10.1.2.3"], 60),
    ]);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let policy = dir.path().join("allowlist.toml");
    std::fs::write(&policy, POLICY).map_err(|e| e.to_string())?;
    // A listener on every address of the host: the sandbox tries its gateway and the
    // host's address on the upstream link.
    let host = TcpListener::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    host.set_nonblocking(true).map_err(|e| e.to_string())?;
    let port = host.local_addr().map_err(|e| e.to_string())?.port();
    let attempt = |name: &str, cmd: &str| {
        format!("if {cmd} >/dev/null 2>&1; then echo {name} escaped; else echo {name} held; fi")
    };
    let script = [
        probe("198.18.0.2", 8080),
        probe("169.254.169.254", 80),
        attempt(
            "gateway",
            &format!(
                "nc -w 2 $(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p') {port} </dev/null"
            ),
        ),
        attempt("host-uplink", &format!("nc -w 2 198.18.0.1 {port} </dev/null")),
        attempt("rebind-lookup", "nslookup -type=a rebind.test"),
        probe("rebind.test", 80),
        attempt("private-lookup", "nslookup -type=a private.test"),
        probe("198.18.0.5", 8081),
        attempt("other-dns", "timeout 5 nslookup -type=a api.test 198.18.0.3"),
        attempt("upstream-dns", "timeout 5 nslookup -type=a api.test 198.18.0.2"),
        attempt("unlisted-name", "nslookup -type=a other.test"),
        attempt("raw-socket", "ping -c 1 -W 2 198.18.0.2"),
        attempt("ipv6", "nc -w 2 ::1 80 </dev/null"),
    ]
    .join("; ");
    let out = Sandbox::busybox(&["sh", "-c", &script])
        .flag("--policy", policy.as_os_str())
        .run(d)?;
    out.ran()?;
    let want = [
        "198.18.0.2:8080 ok",
        "169.254.169.254:80 no",
        "gateway held",
        "host-uplink held",
        "rebind-lookup held",
        "rebind.test:80 no",
        "private-lookup held",
        "198.18.0.5:8081 no",
        "other-dns held",
        "upstream-dns held",
        "unlisted-name held",
        "raw-socket held",
        "ipv6 held",
    ];
    let got: Vec<&str> = out.stdout().lines().collect();
    ensure!(
        got == want,
        "got {got:?}, want {want:?}; stderr: {:.600}",
        out.stderr()
    );
    ensure!(
        host.accept().is_err(),
        "the host listener accepted a connection"
    );
    drop(up);
    Ok(())
}
