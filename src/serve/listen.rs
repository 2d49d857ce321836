//! Listening addresses and the accept loop the servers share: a Unix socket or a TCP
//! address (any address with TLS, loopback only without), each connection (after its TLS
//! handshake, when there is TLS) served by hyper on a task of its own until the shutdown
//! future resolves.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use super::http::Body;
use super::ServeError;

/// Where a server listens, as `--http` gives it: `unix:PATH`, or `IP:PORT` (on loopback,
/// `127.0.0.1:PORT` or `[::1]:PORT`, unless the server has TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A TCP address (on loopback unless the server has TLS).
    Tcp(SocketAddr),
}

impl Address {
    /// Parses `text`. Without `tls`, any TCP address but loopback is refused: a token
    /// sent over the network in clear text is a token given away.
    pub fn parse(text: &str, tls: bool) -> Result<Address, ServeError> {
        let refuse = |reason: &str| ServeError::Address {
            addr: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.starts_with('/') {
                return Err(refuse(
                    "the socket path must be absolute (unix:/run/x.sock)",
                ));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| refuse("expected unix:PATH, IP:PORT or [IPv6]:PORT"))?;
        if !tls && !addr.ip().is_loopback() {
            return Err(refuse(
                "only loopback addresses are served without TLS (give --tls-cert and --tls-key): a bearer token must not cross the network in clear text",
            ));
        }
        Ok(Address::Tcp(addr))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A bound listener.
pub enum Listener {
    /// On a Unix socket, removed when the server stops.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
    },
    /// On TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `addr`: a Unix socket as [`super::bind`] makes one (mode
    /// [`super::SOCKET_MODE`], `group` when named), or a TCP listener. Must run inside a
    /// Tokio runtime.
    pub async fn bind(addr: &Address, group: Option<u32>) -> Result<Listener, ServeError> {
        match addr {
            Address::Unix(path) => Ok(Listener::Unix {
                listener: super::bind(path, group)?,
                path: path.clone(),
            }),
            Address::Tcp(a) => TcpListener::bind(a)
                .await
                .map(Listener::Tcp)
                .map_err(|source| ServeError::Tcp { addr: *a, source }),
        }
    }

    /// The address actually bound (a TCP port 0 becomes the port the kernel chose).
    pub fn local(&self) -> Address {
        match self {
            Listener::Unix { path, .. } => Address::Unix(path.clone()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => Address::Tcp(a),
                Err(_) => Address::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            },
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Listener::Unix { path, .. } => Some(path),
            Listener::Tcp(_) => None,
        }
    }
}

/// Serves each connection accepted on `listener` with `handler` until `shutdown`
/// resolves; then stops accepting and removes a Unix socket. Connections still open keep
/// their tasks until they end. With `tls`, each connection is served only after its TLS
/// handshake succeeded (on the connection's own task); one that fails it (plain HTTP, an
/// untrusting client) is closed.
pub async fn accept_loop<H, F>(
    listener: Listener,
    tls: Option<TlsAcceptor>,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::pin!(shutdown);
    let shown = listener.local().to_string();
    loop {
        let io = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept(&listener) => match accepted {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!("{shown}: accept: {e}");
                    continue;
                }
            },
        };
        let h = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let io = match tls {
                None => io,
                Some(acceptor) => match acceptor.accept(io).await {
                    Ok(s) => Box::new(s) as Box<dyn Stream>,
                    Err(e) => {
                        tracing::debug!("TLS handshake: {e}");
                        return;
                    }
                },
            };
            let io = TokioIo::new(io);
            let svc = hyper::service::service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(h(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
    if let Some(path) = listener.path() {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("{}: {e}", path.display());
        }
    }
}

/// Any kind of accepted stream: Unix, TCP, TLS over either.
type Io = Box<dyn Stream>;

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

async fn accept(l: &Listener) -> std::io::Result<Io> {
    Ok(match l {
        Listener::Unix { listener, .. } => Box::new(listener.accept().await?.0),
        Listener::Tcp(t) => {
            let (s, _) = t.accept().await?;
            s.set_nodelay(true)?;
            Box::new(s)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Address;

    #[test]
    fn without_tls_only_unix_sockets_and_loopback_are_accepted() {
        let ok = [
            ("unix:/run/s.sock", Address::Unix("/run/s.sock".into())),
            ("unix:///run/s.sock", Address::Unix("/run/s.sock".into())),
            (
                "127.0.0.1:8080",
                Address::Tcp("127.0.0.1:8080".parse().unwrap()),
            ),
            ("[::1]:9", Address::Tcp("[::1]:9".parse().unwrap())),
        ];
        for (text, want) in ok {
            assert_eq!(Address::parse(text, false).unwrap(), want, "{text}");
        }
        for text in [
            "0.0.0.0:80",
            "192.168.1.2:80",
            "[::]:80",
            "unix:rel.sock",
            "localhost:80",
            "",
        ] {
            let e = Address::parse(text, false).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--http {text}:")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn with_tls_any_address_is_accepted_and_malformed_ones_are_not() {
        for text in ["0.0.0.0:8443", "192.168.1.2:80", "[::]:443", "127.0.0.1:1"] {
            assert_eq!(
                Address::parse(text, true).unwrap(),
                Address::Tcp(text.parse().unwrap()),
                "{text}"
            );
        }
        for text in ["unix:rel.sock", "localhost:80", "0.0.0.0", ""] {
            let e = Address::parse(text, true).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--http {text}:")), "{e}");
        }
    }

    #[test]
    fn the_refusal_of_a_clear_text_network_address_says_how_to_serve_it() {
        let e = Address::parse("0.0.0.0:80", false).unwrap_err().to_string();
        assert!(e.contains("--tls-cert and --tls-key"), "{e}");
    }
}
