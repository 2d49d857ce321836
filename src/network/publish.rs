//! Published ports: `-p [127.0.0.1:]HOSTPORT:PORT[/tcp]` forwards a port of the host's
//! loopback into the sandbox by a userspace TCP proxy, which listens on `127.0.0.1:HOSTPORT`
//! (`0`: a free port, chosen when it binds) and connects to the sandbox's address:PORT over
//! its veth. No DNAT to 127/8 and no `route_localnet`: the host's loopback stays the
//! host's. Only 127.0.0.1 is a host address one may name.
//!
//! The proxy runs in the process that owns the sandbox's lifetime (the CLI for a one-shot
//! run, the keeper of a session, the server for what it runs), as tasks that stop when its
//! [`Proxy`] is dropped, when [`stop`] is called for the run directory (from
//! [`super::release_with`]), or, in any process, within [`WATCH`] of the run's network
//! record going. The nftables table lets the host open connections to exactly the
//! published ports of a sandbox's address and nothing else ([`super::nft::render`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NetworkError, NetworkMode};

/// How often a proxy checks that its sandbox's network record still exists.
pub const WATCH: Duration = Duration::from_millis(500);

/// One `-p` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port on 127.0.0.1; `0` picks a free one.
    pub host_port: u16,
    /// Port inside the sandbox.
    pub port: u16,
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.0.0.1:{}:{}/tcp", self.host_port, self.port)
    }
}

/// Parses `[127.0.0.1:]HOSTPORT:PORT[/tcp]`; the error is the message for one line.
pub fn parse(entry: &str) -> Result<PortSpec, String> {
    let body = match entry.rsplit_once('/') {
        Some((b, "tcp")) => b,
        Some((_, proto)) => {
            return Err(format!("`{entry}`: only tcp is published (not `{proto}`)"))
        }
        None => entry,
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (host, host_port, port) = match parts.as_slice() {
        [h, p] => (None, *h, *p),
        [a, h, p] => (Some(*a), *h, *p),
        _ => return Err(format!("`{entry}` is not [127.0.0.1:]HOSTPORT:PORT[/tcp]")),
    };
    if let Some(a) = host {
        if a != "127.0.0.1" && a != "localhost" {
            return Err(format!(
                "`{entry}`: ports are published on 127.0.0.1 only, not on `{a}`"
            ));
        }
    }
    let number = |s: &str, what: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("`{entry}`: `{s}` is not a {what} (0–65535)"))
    };
    let host_port = number(host_port, "host port")?;
    let port = number(port, "port")?;
    if port == 0 {
        return Err(format!("`{entry}`: the sandbox's port cannot be 0"));
    }
    Ok(PortSpec { host_port, port })
}

/// Parses every `network.publish` entry for `mode`: only modes with an interface the host
/// can reach publish ports.
pub fn parse_all(mode: NetworkMode, entries: &[String]) -> Result<Vec<PortSpec>, String> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    if !super::needs_netns(mode) {
        return Err(format!(
            "publishing a port needs a network mode with an interface (egress, allowlist or a group); \
             the mode is {}",
            mode.as_str()
        ));
    }
    let mut out: Vec<PortSpec> = Vec::new();
    for e in entries {
        let p = parse(e)?;
        if p.host_port != 0 && out.iter().any(|o| o.host_port == p.host_port) {
            return Err(format!(
                "`{e}`: host port {} is published twice",
                p.host_port
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// A published port as bound: the host port it listens on (chosen when `0` was asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Published {
    /// The port listening on 127.0.0.1.
    pub host_port: u16,
    /// The sandbox's port it forwards to.
    pub port: u16,
}

impl std::fmt::Display for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "127.0.0.1:{}->{}/tcp", self.host_port, self.port)
    }
}

/// The running listeners of one sandbox; dropping it stops them.
#[derive(Debug)]
pub struct Proxy {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What is listening.
    pub published: Vec<Published>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds every port of `specs` on 127.0.0.1 and forwards each connection to
/// `target:PORT`. Must run inside a tokio runtime. A port that cannot be bound fails the
/// whole (the ports bound so far are closed).
pub fn start(specs: &[PortSpec], target: Ipv4Addr) -> Result<Proxy, NetworkError> {
    let mut proxy = Proxy {
        tasks: Vec::new(),
        published: Vec::new(),
    };
    for s in specs {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, s.host_port);
        let bound = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| NetworkError::Command {
                what: format!("publishing {s}"),
                message: e.to_string(),
            })?;
        let host_port = bound.local_addr().map(|a| a.port()).unwrap_or(s.host_port);
        proxy.published.push(Published {
            host_port,
            port: s.port,
        });
        let to = SocketAddrV4::new(target, s.port);
        proxy.tasks.push(tokio::spawn(serve(bound, to)));
    }
    Ok(proxy)
}

async fn serve(listener: tokio::net::TcpListener, to: SocketAddrV4) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            // A sandbox that does not answer closes the client's connection.
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// Proxies of this process, by run directory.
static RUNNING: Mutex<Option<HashMap<PathBuf, Proxy>>> = Mutex::new(None);

/// Starts the proxy of the sandbox whose network record is in `run_dir` (its published
/// ports and address), records the bound ports and this process's id in the record, opens
/// them in the table, and keeps the proxy until [`stop`] or the record goes. Nothing
/// published: nothing to do.
pub fn start_recorded(
    host: &dyn super::host::NetHost,
    run_dir: &Path,
    specs: &[PortSpec],
) -> Result<Vec<Published>, NetworkError> {
    keep_for(host, run_dir, specs, Duration::ZERO)
}

/// Takes over the proxy of the sandbox in `run_dir` from the process that started it (a
/// session's creator, which stops its own before it exits): binds the recorded host
/// ports, trying for up to `patience` while the previous owner lets go, and records this
/// process as the proxy's. Nothing published, or this process runs it already: nothing
/// to do.
pub fn adopt(
    host: &dyn super::host::NetHost,
    run_dir: &Path,
    patience: Duration,
) -> Result<Vec<Published>, NetworkError> {
    if running(run_dir) {
        return Ok(Vec::new());
    }
    let Some(record) = super::read_record(run_dir)? else {
        return Ok(Vec::new());
    };
    let specs: Vec<PortSpec> = record
        .published
        .iter()
        .map(|p| PortSpec {
            host_port: p.host_port,
            port: p.port,
        })
        .collect();
    keep_for(host, run_dir, &specs, patience)
}

fn keep_for(
    host: &dyn super::host::NetHost,
    run_dir: &Path,
    specs: &[PortSpec],
    patience: Duration,
) -> Result<Vec<Published>, NetworkError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let Some(mut record) = super::read_record(run_dir)? else {
        return Ok(Vec::new());
    };
    let t = std::time::Instant::now();
    let mut proxy = loop {
        match start(specs, record.sandbox_addr) {
            Ok(p) => break p,
            Err(_) if t.elapsed() < patience => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e),
        }
    };
    let published = proxy.published.clone();
    record.published = published.clone();
    record.proxy_pid = Some(std::process::id());
    super::write_record(run_dir, &record)?;
    super::apply_table(host, &record.claims, &record.range)?;
    let slot = record.slot;
    let dir = run_dir.to_path_buf();
    proxy.tasks.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(WATCH).await;
            let still = super::read_record(&dir)
                .ok()
                .flatten()
                .is_some_and(|r| r.slot == slot);
            if !still {
                stop(&dir);
                return;
            }
        }
    }));
    RUNNING
        .lock()
        .expect("proxies lock")
        .get_or_insert_with(HashMap::new)
        .insert(run_dir.to_path_buf(), proxy);
    Ok(published)
}

/// Stops this process's proxy of the sandbox in `run_dir`, if it runs one.
pub fn stop(run_dir: &Path) {
    let gone = RUNNING
        .lock()
        .expect("proxies lock")
        .as_mut()
        .and_then(|m| m.remove(run_dir));
    drop(gone);
}

/// Whether this process runs a proxy for the sandbox in `run_dir`.
pub fn running(run_dir: &Path) -> bool {
    RUNNING
        .lock()
        .expect("proxies lock")
        .as_ref()
        .is_some_and(|m| m.contains_key(run_dir))
}

/// The published ports of the sandbox in `run_dir` once a proxy has bound them (and, with
/// `not_by`, once a process other than that one runs it), looking every 20 ms for at most
/// `limit`; empty when none appeared in time.
pub async fn wait_published(
    run_dir: &Path,
    not_by: Option<u32>,
    limit: Duration,
) -> Vec<Published> {
    let t = std::time::Instant::now();
    loop {
        if let Ok(Some(r)) = super::read_record(run_dir) {
            if !r.published.is_empty() && (not_by.is_none() || r.proxy_pid != not_by) {
                return r.published;
            }
        }
        if t.elapsed() >= limit {
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_every_other_host_address_is_refused() {
        let ok = [
            ("8080:80", (8080, 80)),
            ("127.0.0.1:8080:80", (8080, 80)),
            ("0:80/tcp", (0, 80)),
            ("localhost:1:65535", (1, 65535)),
        ];
        for (e, (h, p)) in ok {
            assert_eq!(
                parse(e),
                Ok(PortSpec {
                    host_port: h,
                    port: p
                }),
                "{e}"
            );
        }
        let bad = [
            ("0.0.0.0:8080:80", "127.0.0.1 only"),
            ("192.168.1.2:8080:80", "127.0.0.1 only"),
            ("[::1]:8080:80", "not [127.0.0.1:]"),
            ("8080:80/udp", "only tcp"),
            ("80", "not [127.0.0.1:]"),
            ("8080:0", "cannot be 0"),
            ("x:80", "not a host port"),
            ("1:70000", "not a port"),
        ];
        for (e, want) in bad {
            let got = parse(e).unwrap_err();
            assert!(got.contains(want), "{e}: {got}");
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn only_modes_with_an_interface_publish() {
        let one = vec!["8080:80".to_string()];
        for m in [NetworkMode::None, NetworkMode::Loopback] {
            let e = parse_all(m, &one).unwrap_err();
            assert!(e.contains(&format!("the mode is {}", m.as_str())), "{e}");
        }
        for m in [NetworkMode::Egress, NetworkMode::Group] {
            assert_eq!(parse_all(m, &one).unwrap().len(), 1);
        }
        let twice = vec!["8080:80".to_string(), "8080:81".to_string()];
        assert!(parse_all(NetworkMode::Egress, &twice)
            .unwrap_err()
            .contains("twice"));
        assert_eq!(parse_all(NetworkMode::None, &[]), Ok(vec![]));
    }

    #[tokio::test]
    async fn the_proxy_forwards_loopback_connections_and_stops_when_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // The "sandbox": an echo server on 127.0.0.1 (the target address stands in for the
        // sandbox's).
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        let echo = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let proxy = start(&[PortSpec { host_port: 0, port }], Ipv4Addr::LOCALHOST).unwrap();
        let host_port = proxy.published[0].host_port;
        assert_ne!(host_port, 0, "a free port was chosen");
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
            .await
            .unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        echo.await.unwrap();
        drop(proxy);
        // The listener is closed once its task is aborted: binding the port succeeds.
        let mut rebound = false;
        for _ in 0..100 {
            if std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok() {
                rebound = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(rebound, "the proxy's listener outlived it");
    }
}
