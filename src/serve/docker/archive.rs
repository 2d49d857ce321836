//! `HEAD`, `GET` and `PUT /containers/{id}/archive?path=…`: what `docker cp` and docker-py's
//! `get_archive`/`put_archive` call, over [`Sandbox::stat`], [`Sandbox::get`] and
//! [`Sandbox::put_as`], on created, running and stopped containers alike.
//!
//! [`Sandbox::stat`]: crate::sandbox::Sandbox::stat
//! [`Sandbox::get`]: crate::sandbox::Sandbox::get
//! [`Sandbox::put_as`]: crate::sandbox::Sandbox::put_as
//!
//! - `HEAD` answers the path's metadata in the `X-Docker-Container-Path-Stat` header
//!   (base64 of `{"name","size","mode","mtime","linkTarget"}`, `mode` in Go's
//!   `os.FileMode` bits, as Docker writes it); `GET` sends the same header and the path as
//!   a tar stream (its last component not followed: the CLI follows a link itself with
//!   `-L`, through `linkTarget`).
//! - `PUT` extracts the body (a tar stream) into `path`, which must be an existing
//!   directory (400 otherwise, 404 when missing); `copyUIDGID=1` keeps the archive's owners
//!   ([`PutMode::KeepOwners`]), otherwise the sandbox's user owns what is written. A path on
//!   the read-only root or in a read-only bind is 403. `noOverwriteDirNonDir` is accepted
//!   and always in force: stockade never replaces a directory by a non-directory or the
//!   reverse. A hostile archive (`..`, absolute names, links to write through, devices) is
//!   refused with 400 and the entry named.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{Container, Docker};
use crate::files::{FilesError, PathStat};
use crate::sandbox::{PutMode, SandboxError};
use crate::serve::http::{self, Answer, ApiError, ChannelWriter};

/// The header carrying a path's metadata.
pub const PATH_STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Go's `os.FileMode` bits of an `st_mode`. Pure.
pub fn go_file_mode(st_mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = st_mode & 0o777;
    m |= match st_mode & 0o170000 {
        0o040000 => DIR,
        0o120000 => SYMLINK,
        0o060000 => DEVICE,
        0o020000 => DEVICE | CHAR_DEVICE,
        0o010000 => NAMED_PIPE,
        0o140000 => SOCKET,
        _ => 0,
    };
    for (bit, go) in [(0o4000, SETUID), (0o2000, SETGID), (0o1000, STICKY)] {
        if st_mode & bit != 0 {
            m |= go;
        }
    }
    m
}

/// The header's value for `st`. Pure.
pub fn stat_header(st: &PathStat) -> String {
    let (secs, nanos) = st.mtime;
    let ms = (secs.max(0) as u64) * 1000 + u64::from(nanos / 1_000_000);
    let json = serde_json::json!({
        "name": st.name,
        "size": st.size,
        "mode": go_file_mode(st.mode),
        "mtime": crate::runner::journal::rfc3339_millis(ms),
        "linkTarget": st.link_target,
    });
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

/// The `path` query parameter, required.
fn path_of(q: &HashMap<String, String>) -> Result<String, ApiError> {
    match q.get("path") {
        Some(p) if !p.is_empty() => Ok(p.clone()),
        _ => Err(ApiError::bad("path: a path in the container is required")),
    }
}

/// A library error as Docker answers it: a missing path in Docker's words.
fn answer(e: SandboxError, path: &str, id: &str) -> ApiError {
    match &e {
        SandboxError::Files {
            source: FilesError::NotFound { .. },
            ..
        } => ApiError::not_found(format!("Could not find the file {path} in container {id}")),
        _ => e.into(),
    }
}

/// The container `id`, the request's `?path=` and what is there (its last component not
/// followed).
async fn stat_of(
    d: &Docker,
    id: &str,
    req: &Request<Incoming>,
) -> Result<(Arc<Container>, String, PathStat), ApiError> {
    let path = path_of(&http::query(req))?;
    let c = d.find(id)?;
    let st = c
        .sandbox
        .stat(&path)
        .await
        .map_err(|e| answer(e, &path, id))?;
    Ok((c, path, st))
}

/// `HEAD /containers/{id}/archive`.
pub async fn head(d: &Docker, id: &str, req: &Request<Incoming>) -> Answer {
    let (_, _, st) = stat_of(d, id, req).await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(PATH_STAT_HEADER, stat_header(&st))
        .body(http::empty())
        .expect("a valid response"))
}

/// `GET /containers/{id}/archive`.
pub async fn get(d: &Docker, id: &str, req: &Request<Incoming>) -> Answer {
    let (c, path, st) = stat_of(d, id, req).await?;
    let (tx, body) = http::channel_body();
    let sandbox = c.sandbox.clone();
    tokio::spawn(async move {
        let out = std::io::BufWriter::with_capacity(64 << 10, ChannelWriter(tx));
        if let Err(e) = sandbox.get(&path, out, false).await {
            // The head went out: the stream ends short, which the client reports.
            tracing::info!("archive of {path} in {}: {e}", sandbox.id());
        }
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/x-tar")
        .header(PATH_STAT_HEADER, stat_header(&st))
        .body(body)
        .expect("a valid response"))
}

/// Reads a request body from a blocking thread.
struct BodyReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// `PUT /containers/{id}/archive`.
pub async fn put(d: &Docker, id: &str, req: Request<Incoming>) -> Answer {
    let q = http::query(&req);
    let path = path_of(&q)?;
    let mode = match http::flag(&q, "copyUIDGID") {
        true => PutMode::KeepOwners,
        false => PutMode::SandboxUser,
    };
    let c = d.find(id)?;
    let st = c
        .sandbox
        .stat(&format!("{}/", path.trim_end_matches('/')))
        .await
        .map_err(|e| match e {
            SandboxError::Files {
                source: FilesError::Conflict { .. },
                ..
            } => ApiError::bad(format!("{path}: extraction point is not a directory")),
            e => answer(e, &path, id),
        })?;
    debug_assert!(st.is_dir());
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut body = req.into_body();
    let feed = tokio::spawn(async move {
        use http_body_util::BodyExt;
        // After a refusal the rest of the body is read and dropped, so that the client,
        // still sending, gets the answer rather than a broken connection.
        let mut tx = Some(tx);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let (Ok(data), Some(sender)) = (frame.into_data(), &tx) {
                if sender.send(data).await.is_err() {
                    tx = None;
                }
            }
        }
    });
    let reader = BodyReader {
        rx,
        cur: Bytes::new(),
    };
    let dst = format!("{}/", path.trim_end_matches('/'));
    let put = c.sandbox.put_as(&dst, reader, mode).await;
    drop(feed);
    put.map_err(|e| answer(e, &path, id))?;
    http::no_content(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_go_file_modes() {
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
        assert_eq!(go_file_mode(0o041777), (1 << 31) | (1 << 20) | 0o777);
        assert_eq!(go_file_mode(0o020666), (1 << 26) | (1 << 21) | 0o666);
        assert_eq!(go_file_mode(0o010600), (1 << 25) | 0o600);
    }

    #[test]
    fn the_stat_header_is_base64_json_as_docker_writes_it() {
        let st = PathStat {
            name: "out.txt".into(),
            size: 3,
            mode: 0o100640,
            mtime: (1_700_000_000, 250_000_000),
            link_target: String::new(),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(stat_header(&st))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v["name"], "out.txt");
        assert_eq!(v["size"], 3);
        assert_eq!(v["mode"], 0o640);
        assert_eq!(v["mtime"], "2023-11-14T22:13:20.250Z");
        assert_eq!(v["linkTarget"], "");
    }
}
