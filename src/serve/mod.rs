//! API servers over the library's front door: the Docker Engine API on a Unix socket
//! ([`docker`]), so that code written for Docker runs its containers as stockade sandboxes
//! with only `DOCKER_HOST` changed; stockade's own HTTP API ([`http_api`], behind a bearer
//! token, on a Unix socket or TCP with [`tls`]); and the MCP server ([`mcp`], JSON-RPC on
//! stdio or HTTP).
//!
//! Whoever can open a Unix socket can start sandboxes (within the server's policy): it is
//! made mode 0660, owned by root and by the group given (root's otherwise). HTTP/1.1 with
//! upgrades (attach and exec streams) is served by hyper, one task per connection
//! ([`listen`]).

pub mod docker;
pub mod http;
pub mod http_api;
pub mod listen;
pub mod mcp;
mod owned;
pub mod tls;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio::net::UnixListener;

use docker::Docker;

/// Where the Docker API socket is made unless told otherwise.
pub const DEFAULT_DOCKER_SOCKET: &str = "/run/stockade/docker.sock";
/// The socket's mode: read and write for its owner (root) and its group.
pub const SOCKET_MODE: u32 = 0o660;

/// Why the server could not start. Each renders as one line naming the socket.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The socket (or its directory) could not be made, given its mode or its group, or a
    /// stale one could not be removed.
    #[error("{}: {source}", path.display())]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What the system call said.
        source: std::io::Error,
    },
    /// A server already answers on the socket.
    #[error("{}: another server answers on this socket", path.display())]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path; it is left alone.
    #[error("{}: exists and is not a socket", path.display())]
    NotSocket {
        /// The path that is not a socket.
        path: PathBuf,
    },
    /// `--http ADDR` is malformed or not served.
    #[error("--http {addr}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it is refused, one line.
        reason: String,
    },
    /// The TCP address could not be bound.
    #[error("--http {addr}: {source}")]
    Tcp {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
        /// What `bind` said.
        source: std::io::Error,
    },
}

/// Makes the listening socket at `path`: a stale socket (nobody answers on it) is removed
/// first, its directory is made when missing, and the socket is created mode
/// [`SOCKET_MODE`] (through the umask, so it is never more open, not even for a moment)
/// and given `group` when one is named. Must run inside a Tokio runtime.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(ServeError::NotSocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(err)?;
    }
    let mask = nix::sys::stat::Mode::from_bits_truncate(0o777 & !SOCKET_MODE);
    let old = nix::sys::stat::umask(mask);
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(err)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(err)?;
    }
    Ok(listener)
}

/// Serves `docker` on `listener` until `shutdown` resolves; then stops accepting, removes
/// every container the server made and removes the socket at `path`.
pub async fn serve(
    docker: Arc<Docker>,
    listener: UnixListener,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let listener = listen::Listener::Unix {
        listener,
        path: path.to_path_buf(),
    };
    let d = docker.clone();
    let handler = move |req| d.clone().route(req);
    listen::accept_loop(listener, None, handler, shutdown).await;
    docker.remove_all().await;
    docker.sandboxes.runner().wait_cleanups().await;
}
