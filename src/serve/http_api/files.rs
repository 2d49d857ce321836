//! Files in a sandbox, every one through the library's put and get
//! ([`Sandbox::put`], [`Sandbox::get`]: paths resolved beneath the sandbox's root, never
//! following a link out of it, hostile archives refused, everything written owned by the
//! sandbox's user). `?path=` names the file, absolute in the sandbox.
//!
//! - `PUT files` writes the body as the file (its directory must exist); `GET files`
//!   answers its bytes; `DELETE files` removes it (a directory with what it holds);
//!   `files/list`, `files/stat`; `POST files/mkdir` makes one directory. A read follows
//!   a symbolic link (resolved inside the sandbox's root); stat, list, remove and archive
//!   do not.
//! - `PUT archive` extracts a tar body at a directory; `GET archive` answers a directory
//!   (or file) as tar.

use std::collections::HashMap;
use std::io::Read;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::HttpError;
use super::wire::{FileEntry, FileList, Written};
use super::{param, read_body, Answer, Caller, HttpApi};
use crate::sandbox::{ExecRequest, Sandbox};
use crate::serve::http::{channel_body, json, query, status_only, streamed, ChannelWriter};

/// The sandbox path of `?path=`: absolute, no NUL.
fn path(q: &HashMap<String, String>) -> Result<String, HttpError> {
    check_path(param(q, "path")?)
}

/// The caller's sandbox `id` and the request's `?path=`, in that order of checking (an
/// unknown sandbox is 404 whatever the path).
async fn target(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Result<(Sandbox, String), HttpError> {
    let sb = api.owned(caller, id).await?;
    Ok((sb, path(&query(req))?))
}

/// `p` if it is a sandbox path: absolute, no NUL.
pub(crate) fn check_path(p: String) -> Result<String, HttpError> {
    if !p.starts_with('/') || p.contains('\0') {
        return Err(
            HttpError::invalid(format!("path: `{p}` is not an absolute path")).field("path"),
        );
    }
    Ok(p)
}

/// (parent, last component) of `p`; refuses `/`, `.` and `..` as the last.
fn split(p: &str) -> Result<(String, String), HttpError> {
    let trimmed = p.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() || name == "." || name == ".." {
        return Err(HttpError::invalid(format!("path: `{p}` does not name a file")).field("path"));
    }
    Ok((
        if parent.is_empty() {
            "/".into()
        } else {
            parent.into()
        },
        name.into(),
    ))
}

/// A one-entry tar archive: `name` as a file holding `data`, or as a directory.
fn one_entry(name: &str, data: Option<&[u8]>) -> Result<Vec<u8>, HttpError> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let internal = |e: std::io::Error| HttpError::internal(format!("building the archive: {e}"));
    match data {
        Some(d) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(d.len() as u64);
            b.append_data(&mut h, name, d).map_err(internal)?;
        }
        None => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, format!("{name}/"), std::io::empty())
                .map_err(internal)?;
        }
    }
    b.into_inner().map_err(internal)
}

async fn put(sb: &Sandbox, dst: &str, archive: Vec<u8>) -> Result<Written, HttpError> {
    let s = sb.put(dst, std::io::Cursor::new(archive)).await?;
    Ok(Written {
        path: dst.to_string(),
        entries: s.entries,
        bytes: s.bytes,
    })
}

/// `PUT /v1/sandboxes/{id}/files?path=`: the body becomes the file.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path of the file in the sandbox")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Written", body = Written),
        (status = 400, description = "The path is malformed or escapes", body = super::error::ErrorBody),
        (status = 404, description = "No such sandbox, or the directory does not exist", body = super::error::ErrorBody),
        (status = 413, description = "The body is larger than the server's limit", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn write(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, &req).await?;
    split(&p)?;
    let body = read_body(req, api.max_body).await?;
    Ok(json(StatusCode::CREATED, &write_file(&sb, p, &body).await?))
}

/// Writes `data` as the file at `p` (absolute; its directory must exist).
pub(crate) async fn write_file(sb: &Sandbox, p: String, data: &[u8]) -> Result<Written, HttpError> {
    put_entry(sb, p, Some(data)).await
}

/// Makes the file (holding `data`) or, with `None`, the directory at `p` (absolute; its
/// parent must exist).
async fn put_entry(sb: &Sandbox, p: String, data: Option<&[u8]>) -> Result<Written, HttpError> {
    let p = check_path(p)?;
    let (parent, name) = split(&p)?;
    let mut w = put(sb, &parent, one_entry(&name, data)?).await?;
    w.path = p;
    Ok(w)
}

/// Nothing when something is at `p` (a link not followed); 404 otherwise.
async fn exists(sb: &Sandbox, p: &str) -> Result<(), HttpError> {
    with_headers(sb, p.to_string(), false, |a| {
        a.entries().ok()?.next().map(|_| ())
    })
    .await
}

/// Runs `get` of `src` on a task, its tar stream readable from the returned pipe end.
fn get_pipe(
    sb: &Sandbox,
    src: String,
    follow_link: bool,
) -> Result<
    (
        std::fs::File,
        tokio::task::JoinHandle<Result<(), HttpError>>,
    ),
    HttpError,
> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| HttpError::internal(format!("pipe: {e}")))?;
    let sb = sb.clone();
    let task = tokio::spawn(async move {
        sb.get(&src, std::fs::File::from(w), follow_link)
            .await
            .map(|_| ())
            .map_err(HttpError::from)
    });
    Ok((std::fs::File::from(r), task))
}

fn entry_of<R: Read>(e: &tar::Entry<R>) -> FileEntry {
    let h = e.header();
    let path = e
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => "file",
        tar::EntryType::Directory => "dir",
        tar::EntryType::Symlink => "symlink",
        _ => "other",
    };
    FileEntry {
        name,
        kind: kind.into(),
        size: if kind == "file" {
            h.size().unwrap_or(0)
        } else {
            0
        },
        mode: h.mode().unwrap_or(0) & 0o7777,
        mtime: h.mtime().unwrap_or(0),
        link_target: e
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().into_owned()),
    }
}

/// Reads the headers of `src`'s tar stream with `f`, on a blocking thread; when the
/// stream holds nothing, the get's own error.
async fn with_headers<T: Send + 'static>(
    sb: &Sandbox,
    src: String,
    follow_link: bool,
    f: impl FnOnce(&mut tar::Archive<std::fs::File>) -> Option<T> + Send + 'static,
) -> Result<T, HttpError> {
    let (r, task) = get_pipe(sb, src, follow_link)?;
    let parsed = tokio::task::spawn_blocking(move || f(&mut tar::Archive::new(r)))
        .await
        .map_err(|e| HttpError::internal(format!("reading the archive: {e}")))?;
    let got = task
        .await
        .map_err(|e| HttpError::internal(format!("reading the archive: {e}")))?;
    match (parsed, got) {
        (Some(t), _) => Ok(t),
        (None, Err(e)) => Err(e),
        (None, Ok(())) => Err(HttpError::internal("the sandbox's archive was empty")),
    }
}

/// `GET /v1/sandboxes/{id}/files/stat?path=`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path in the sandbox")),
    responses(
        (status = 200, description = "What is there", body = FileEntry),
        (status = 404, description = "No such sandbox or path", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn stat(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, req).await?;
    let entry = with_headers(&sb, p, false, |a| {
        let mut entries = a.entries().ok()?;
        let e = entries.next()?.ok()?;
        Some(entry_of(&e))
    })
    .await?;
    Ok(json(StatusCode::OK, &entry))
}

/// `GET /v1/sandboxes/{id}/files/list?path=`: a directory's entries.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path of a directory in the sandbox")),
    responses(
        (status = 200, description = "Its entries", body = FileList),
        (status = 404, description = "No such sandbox or directory", body = super::error::ErrorBody),
        (status = 409, description = "Not a directory", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn list(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, req).await?;
    let entries = list_dir(&sb, &p).await?;
    Ok(json(StatusCode::OK, &FileList { path: p, entries }))
}

/// The entries of directory `p` (absolute), by name.
pub(crate) async fn list_dir(sb: &Sandbox, p: &str) -> Result<Vec<FileEntry>, HttpError> {
    let p = check_path(p.to_string())?;
    let src = format!("{}/.", p.trim_end_matches('/'));
    let mut entries = with_headers(sb, src, false, |a| {
        let mut out = Vec::new();
        for e in a.entries().ok()? {
            let e = e.ok()?;
            let raw = e.path().ok()?.to_string_lossy().into_owned();
            let rel = raw.strip_prefix("./").unwrap_or(&raw).trim_end_matches('/');
            if rel.is_empty() || rel == "." || rel.contains('/') {
                continue;
            }
            out.push(entry_of(&e));
        }
        Some(out)
    })
    .await?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The bytes of the regular file at `p` (absolute; a link is followed inside the
/// sandbox), refused past `max` bytes.
pub(crate) async fn read_file(sb: &Sandbox, p: &str, max: u64) -> Result<Vec<u8>, HttpError> {
    let p = check_path(p.to_string())?;
    let shown = p.clone();
    let got = with_headers(sb, p, true, move |a| {
        let mut e = a.entries().ok()?.next()?.ok()?;
        let size = e.header().size().unwrap_or(0);
        if e.header().entry_type() != tar::EntryType::Regular {
            return Some(Err(HttpError::conflict(format!(
                "path: `{shown}` is not a regular file"
            ))
            .field("path")));
        }
        if size > max {
            let mut too_large = HttpError::too_large(max).field("path");
            too_large.message =
                format!("path: `{shown}` holds {size} bytes, more than the {max} read here");
            return Some(Err(too_large));
        }
        let mut data = Vec::with_capacity(size as usize);
        Some(
            e.read_to_end(&mut data)
                .map(|_| data)
                .map_err(|err| HttpError::internal(format!("reading `{shown}`: {err}"))),
        )
    })
    .await?;
    got
}

/// `GET /v1/sandboxes/{id}/files?path=`: the file's bytes.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path of a file in the sandbox")),
    responses(
        (status = 200, description = "Its bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such sandbox or file", body = super::error::ErrorBody),
        (status = 409, description = "Not a regular file", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn read(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, req).await?;
    // What is there decides the answer (404, 409) before its head goes out.
    let kind = with_headers(&sb, p.clone(), true, |a| {
        let e = a.entries().ok()?.next()?.ok()?;
        Some(e.header().entry_type())
    })
    .await?;
    if kind != tar::EntryType::Regular {
        return Err(HttpError::conflict(format!(
            "path: `{p}` is not a regular file (a directory is read with GET archive)"
        ))
        .field("path"));
    }
    let (tx, body) = channel_body();
    let (r, task) = get_pipe(&sb, p.clone(), true)?;
    tokio::task::spawn_blocking(move || {
        let mut a = tar::Archive::new(r);
        let Some(Ok(mut e)) = a.entries().ok().and_then(|mut it| it.next()) else {
            return;
        };
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = e.read(&mut buf) {
            if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        if let Ok(Err(e)) = task.await {
            tracing::info!("reading {p}: {}", e.message);
        }
    });
    Ok(streamed("application/octet-stream", body))
}

/// `DELETE /v1/sandboxes/{id}/files?path=`: removes it (a directory with its contents),
/// by `rm -rf` run in the sandbox under its confinement.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path in the sandbox")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such sandbox or path", body = super::error::ErrorBody),
        (status = 409, description = "It could not be removed", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn remove(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, req).await?;
    split(&p)?;
    exists(&sb, &p).await?;
    let mut r = ExecRequest::new(["rm", "-rf", "--", p.as_str()]);
    r.timeout = Some(std::time::Duration::from_secs(60));
    let out = sb.exec(r).await?;
    if out.exit_code != 0 {
        return Err(HttpError::conflict(format!(
            "path: `{p}` could not be removed: {}",
            out.stderr.trim()
        ))
        .field("path"));
    }
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// `POST /v1/sandboxes/{id}/files/mkdir?path=`: one directory (its parent must exist).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path of the new directory")),
    responses(
        (status = 201, description = "Made", body = Written),
        (status = 404, description = "No such sandbox or parent directory", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn mkdir(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, req).await?;
    Ok(json(StatusCode::CREATED, &put_entry(&sb, p, None).await?))
}

/// `PUT /v1/sandboxes/{id}/archive?path=`: extracts the tar body at the directory.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/archive", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path of a directory in the sandbox")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A tar stream"),
    responses(
        (status = 201, description = "Extracted", body = Written),
        (status = 400, description = "The archive is refused (an entry escapes, a device…)", body = super::error::ErrorBody),
        (status = 404, description = "No such sandbox or directory", body = super::error::ErrorBody),
        (status = 413, description = "The body is larger than the server's limit", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn put_archive(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, &req).await?;
    let body = read_body(req, api.max_body).await?;
    Ok(json(
        StatusCode::CREATED,
        &put(&sb, &p, body.to_vec()).await?,
    ))
}

/// `GET /v1/sandboxes/{id}/archive?path=`: the file or directory as tar.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/archive", tag = "files",
    params(("id" = String, Path, description = "The sandbox's id or name"),
           ("path" = String, Query, description = "Absolute path in the sandbox")),
    responses(
        (status = 200, description = "A tar stream", content_type = "application/x-tar", body = Vec<u8>),
        (status = 404, description = "No such sandbox or path", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get_archive(
    api: &HttpApi,
    caller: &Caller,
    id: &str,
    req: &Request<Incoming>,
) -> Answer {
    let (sb, p) = target(api, caller, id, req).await?;
    // 404 before the answer's head goes out.
    exists(&sb, &p).await?;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        if let Err(e) = sb.get(&p, ChannelWriter(tx), false).await {
            tracing::info!("archive of {p}: {e}");
        }
    });
    Ok(streamed("application/x-tar", body))
}
