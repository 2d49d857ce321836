//! The forwarder's sockets: UDP and TCP on the veth's host side, port 53, queries from the
//! sandbox's own address only, the upstream asked over UDP from a fresh socket per query.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::decide::{self, Step};
use crate::network::allow::AllowEntry;
use crate::network::{host, NetworkError, RECORD_FILE};

/// How long one upstream resolver is waited for.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client has to send its query.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the forwarder looks whether its sandbox's record is still there.
const RECORD_POLL: Duration = Duration::from_secs(1);

struct Ctx {
    entries: Vec<AllowEntry>,
    upstream: Vec<SocketAddrV4>,
    sandbox: Ipv4Addr,
    veth: String,
    claims: PathBuf,
    run_dir: PathBuf,
}

fn socket(kind: socket2::Type, addr: SocketAddrV4) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, kind, None)?;
    s.set_reuse_address(true)?;
    // A session's keeper binds while the process that created the sandbox still may.
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s)
}

/// Starts the forwarder of the sandbox whose network record is in `run_dir`, on the
/// current Tokio runtime, and records this process as its host. `false`: the sandbox has
/// no forwarder. A forwarder this process already runs for it is replaced.
pub fn start(run_dir: &Path) -> Result<bool, NetworkError> {
    let Some(mut record) = super::super::read_record(run_dir)? else {
        return Ok(false);
    };
    let Some(dns) = record.dns.clone() else {
        return Ok(false);
    };
    let listen = SocketAddrV4::new(dns.listen, 53);
    let io = |what: &str| {
        let what = format!("DNS forwarder: {what} {listen}");
        move |e: std::io::Error| NetworkError::Command {
            what,
            message: e.to_string(),
        }
    };
    let udp = socket(socket2::Type::DGRAM, listen).map_err(io("binding UDP"))?;
    let udp = UdpSocket::from_std(udp.into()).map_err(io("UDP"))?;
    let tcp = socket(socket2::Type::STREAM, listen).map_err(io("binding TCP"))?;
    tcp.listen(64).map_err(io("listening on TCP"))?;
    let tcp = TcpListener::from_std(tcp.into()).map_err(io("TCP"))?;
    let upstream = if dns.upstream.is_empty() {
        super::nameservers(&std::fs::read_to_string(super::HOST_RESOLV_CONF).unwrap_or_default())
    } else {
        dns.upstream.clone()
    };
    let ctx = Arc::new(Ctx {
        entries: record.entries.clone(),
        upstream,
        sandbox: record.sandbox_addr,
        veth: record.veth.clone(),
        claims: record.claims.clone(),
        run_dir: run_dir.to_path_buf(),
    });
    if let Some(d) = record.dns.as_mut() {
        d.pid = Some(std::process::id());
    }
    super::super::write_record(run_dir, &record)?;
    let task = tokio::spawn(serve(ctx, udp, tcp));
    super::register(run_dir, task.abort_handle());
    Ok(true)
}

async fn serve(ctx: Arc<Ctx>, udp: UdpSocket, tcp: TcpListener) {
    let udp = Arc::new(udp);
    let mut tick = tokio::time::interval(RECORD_POLL);
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { continue };
                if peer.ip() != ctx.sandbox {
                    continue;
                }
                let (ctx, udp, query) = (ctx.clone(), udp.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(reply) = resolve(&ctx, &query).await {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                });
            }
            r = tcp.accept() => {
                let Ok((stream, peer)) = r else { continue };
                if peer.ip() != ctx.sandbox {
                    continue;
                }
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(TCP_TIMEOUT * 4, serve_tcp(&ctx, stream)).await;
                });
            }
            _ = tick.tick() => {
                if !ctx.run_dir.join(RECORD_FILE).exists() {
                    break;
                }
            }
        }
    }
}

/// Length-prefixed queries on one connection until the client closes it.
async fn serve_tcp(ctx: &Ctx, mut s: TcpStream) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_TIMEOUT, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_TIMEOUT, s.read_exact(&mut query))
            .await
            .map_err(std::io::Error::other)??;
        let Some(reply) = resolve(ctx, &query).await else {
            return Ok(());
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        s.write_all(&n.to_be_bytes()).await?;
        s.write_all(&reply).await?;
    }
}

/// The reply to one query (wire format), after admitting what it resolved.
async fn resolve(ctx: &Ctx, query: &[u8]) -> Option<Vec<u8>> {
    let (parsed, matching) = match decide::on_query(&ctx.entries, query)? {
        Step::Reply(m) => return m.to_vec().ok(),
        Step::Forward { query, entries } => (query, entries),
    };
    let answer = ask_upstream(&ctx.upstream, query).await;
    let (mut reply, admit) = match answer {
        Some(a) => decide::on_answer(&ctx.entries, &parsed, &matching, &a),
        None => {
            let failed = decide::on_answer(&ctx.entries, &parsed, &matching, &[]);
            (failed.0, Vec::new())
        }
    };
    if !admit.is_empty() {
        let (claims, run_dir, veth) = (ctx.claims.clone(), ctx.run_dir.clone(), ctx.veth.clone());
        let done = tokio::task::spawn_blocking(move || {
            super::admit(&host::IpRoute::default(), &claims, &run_dir, &veth, &admit)
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            if let Ok(Err(e)) = done {
                tracing::warn!("DNS forwarder: {e}");
            }
            reply = decide::on_answer(&ctx.entries, &parsed, &matching, &[]).0;
        }
    }
    reply.to_vec().ok()
}

/// The first answer of the resolvers, asked in turn.
async fn ask_upstream(upstream: &[SocketAddrV4], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstream {
        let Ok(s) = UdpSocket::bind("0.0.0.0:0").await else {
            continue;
        };
        if s.connect(up).await.is_err() || s.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(UPSTREAM_TIMEOUT, s.recv(&mut buf)).await {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}
