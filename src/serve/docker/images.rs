//! `/images/…` that change the store: load, save, tag, remove, pull (`images/create`) and
//! prune, each through the library's image functions ([`crate::images`],
//! [`crate::images::archive`], [`crate::images::registry`]).
//!
//! Names under `stockade/` are the built-in recipes' images: no load, pull or tag may
//! write them (the library refuses), and the API never removes them (`stockade image rm`
//! does). An image a container was made from is not removed unless `force` is given.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Docker;
use crate::images::registry::{Credentials, RegistryOptions};
use crate::images::{self, ImageError, Progress, Reference};
use crate::serve::http::{self, channel_body, flag, query, Answer, ApiError};

/// The largest image archive `POST /images/load` takes.
pub const MAX_LOAD: u64 = 16 << 30;

/// How the server reaches registries and where it unpacks archives.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Registries to pull from over plain HTTP or without checking TLS, and the Docker
    /// config whose credentials are used when a client sends none (default: none, so
    /// such a pull is anonymous; the server's own `~/.docker/config.json` is never read).
    pub registry: RegistryOptions,
    /// Where archives are unpacked (default `$TMPDIR`, else `/var/tmp`).
    pub scratch: PathBuf,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            registry: RegistryOptions::default(),
            scratch: std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp")),
        }
    }
}

/// An image error in Docker's terms, naming `name`.
pub fn image_error(e: ImageError, name: &str) -> ApiError {
    match e {
        ImageError::NotFound { .. } => ApiError::not_found(format!("No such image: {name}")),
        ImageError::Reserved { .. } => ApiError::new(403, e.to_string()),
        ImageError::BadName(_) | ImageError::Archive { .. } | ImageError::ArchiveEntry { .. } => {
            ApiError::bad(e.to_string())
        }
        ImageError::Registry(ref r) => match r {
            images::registry::RegistryError::NotFound { .. } => ApiError::not_found(e.to_string()),
            images::registry::RegistryError::Unauthorized { .. } => {
                ApiError::new(401, e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        },
        _ => ApiError::internal(e.to_string()),
    }
}

/// `busybox:latest` for `docker.io/library/busybox:latest`.
fn familiar(canonical: &str) -> String {
    Reference::parse(canonical)
        .map(|r| r.familiar())
        .unwrap_or_else(|_| canonical.to_string())
}

fn attrs(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("name".to_string(), name.to_string())])
}

/// One line of a JSON message stream.
fn line(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

/// The error line that ends a JSON message stream.
fn error_line(message: &str) -> Bytes {
    let message = message.replace('\n', " ");
    line(&json!({"errorDetail": {"message": message}, "error": message}))
}

/// Progress as `{"status": …}` lines (dropped, never waited for, when the client reads
/// slowly: they are only progress).
struct StatusLines {
    tx: mpsc::Sender<Bytes>,
    quiet: bool,
}

impl Progress for StatusLines {
    fn stage(&self, message: &str) {
        if !self.quiet {
            let _ = self.tx.try_send(line(&json!({ "status": message })));
        }
    }
}

/// A new directory (named `prefix…`) under the server's scratch directory, removed when
/// dropped; 500 when the server has no image store.
fn scratch_dir(d: &Docker, prefix: &str) -> Result<tempfile::TempDir, ApiError> {
    super::system::store(d)?;
    let scratch = &d.images.scratch;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch)
        .map_err(|e| ApiError::internal(format!("{}: {e}", scratch.display())))
}

fn streaming(body: crate::serve::http::Body) -> Answer {
    Ok(http::streamed("application/json", body))
}

/// `POST /images/load?quiet=0|1`: a `docker save` or OCI layout tarball (gzip or not) in
/// the body; the images it names are stored under those names. Answers a JSON message
/// stream: progress (unless quiet), `Loaded image: NAME` for each, or the error.
pub async fn load(d: &Arc<Docker>, req: Request<Incoming>) -> Answer {
    let quiet = flag(&query(&req), "quiet");
    let dir = scratch_dir(d, "stockade-load-")?;
    let path = dir.path().join("image.tar");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let mut body = req.into_body();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad(format!("request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            if len > MAX_LOAD {
                return Err(ApiError::new(
                    413,
                    format!("request body: an image archive is at most {MAX_LOAD} bytes"),
                ));
            }
            file.write_all(&data)
                .await
                .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    drop(file);
    let (tx, body) = channel_body();
    let d = d.clone();
    tokio::spawn(async move {
        let progress = StatusLines {
            tx: tx.clone(),
            quiet,
        };
        let Ok(client) = super::system::store(&d) else {
            return;
        };
        let result = images::archive::import(client, &path, None, dir.path(), &progress).await;
        drop(dir);
        match result {
            Ok(refs) => {
                for r in refs {
                    let name = familiar(&r.name);
                    if let Some(old) = &r.replaced {
                        let msg = format!("The image {name} already exists, renaming the old one with ID {old} to empty string\n");
                        let _ = tx.send(line(&json!({ "stream": msg }))).await;
                    }
                    d.events
                        .emit("image", "load", &r.manifest_digest, attrs(&name));
                    let msg = format!("Loaded image: {name}\n");
                    let _ = tx.send(line(&json!({ "stream": msg }))).await;
                }
            }
            Err(e) => {
                let _ = tx.send(error_line(&e.to_string())).await;
            }
        }
    });
    streaming(body)
}

/// Every value of `key` in the query string (`names=a&names=b`).
fn query_all(req: &Request<Incoming>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| crate::serve::http::decode(k) == key)
        .map(|(_, v)| crate::serve::http::decode(v))
        .collect()
}

/// `GET /images/{name}/get` and `GET /images/get?names=NAME`: one image as an OCI image
/// layout tarball (which `docker load` and `stockade image import` read back).
pub async fn save(d: &Arc<Docker>, name: Option<&str>, req: &Request<Incoming>) -> Answer {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => query_all(req, "names"),
    };
    let [name] = names.as_slice() else {
        return Err(ApiError::bad(format!(
            "names: saving {} images at once is not supported (one at a time)",
            names.len()
        )));
    };
    let client = super::system::store(d)?;
    let canonical = images::normalize_name(name).map_err(|e| image_error(e, name))?;
    let image = images::archive::export(client, name)
        .await
        .map_err(|e| image_error(e, name))?;
    let scratch = &d.images.scratch;
    let dir = tempfile::Builder::new()
        .prefix("stockade-save-")
        .tempdir_in(scratch)
        .map_err(|e| ApiError::internal(format!("{}: {e}", scratch.display())))?;
    let path = dir.path().join("image.tar");
    let p = path.clone();
    tokio::task::spawn_blocking(move || images::archive::write_oci_layout(&p, &canonical, &image))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| image_error(e, name))?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let _dir = dir;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(http::streamed("application/x-tar", body))
}

/// `POST /images/{name}/tag?repo=REPO&tag=TAG`.
pub async fn tag(d: &Arc<Docker>, name: &str, req: &Request<Incoming>) -> Answer {
    let q = query(req);
    let repo = q.get("repo").cloned().unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::bad("repo: required"));
    }
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    let client = super::system::store(d)?;
    let r = images::tag(client, name, &target)
        .await
        .map_err(|e| image_error(e, name))?;
    d.events.emit(
        "image",
        "tag",
        &r.manifest_digest,
        attrs(&familiar(&r.name)),
    );
    crate::serve::http::no_content(StatusCode::CREATED)
}

/// Whether `key` reads as an image id (`sha256:HEX…` or a bare hex prefix).
pub(super) fn id_prefix(key: &str) -> Option<&str> {
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    (!hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(hex)
}

/// `DELETE /images/{name}?force=1`: removes the name (or, given an id, every name of that
/// image). Refused: a built-in `stockade/` image; an image a container was made from when
/// no other name keeps it, unless `force`; an id with several names, unless `force`.
pub async fn remove(d: &Arc<Docker>, key: &str, req: &Request<Incoming>) -> Answer {
    let force = flag(&query(req), "force");
    let client = super::system::store(d)?;
    let all = images::list(client)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let by_name = images::normalize_name(key)
        .ok()
        .and_then(|n| all.iter().find(|i| i.name == n));
    let targets: Vec<&images::ImageSummary> = match (by_name, id_prefix(key)) {
        (Some(i), _) => vec![i],
        (None, Some(hex)) => all
            .iter()
            .filter(|i| i.digest.get(7..).is_some_and(|h| h.starts_with(hex)))
            .collect(),
        (None, None) => vec![],
    };
    let Some(first) = targets.first() else {
        return Err(ApiError::not_found(format!("No such image: {key}")));
    };
    if targets.iter().any(|t| t.digest != first.digest) {
        return Err(ApiError::bad(format!(
            "{key}: the id prefix names more than one image"
        )));
    }
    if let Some(b) = targets
        .iter()
        .find(|t| Reference::parse(&t.name).is_ok_and(|r| r.is_builtin()))
    {
        return Err(ApiError::new(
            403,
            format!(
                "{}: a built-in image (made by `stockade image build`) is not removed through the Docker API; remove it with `stockade image rm`",
                b.reference
            ),
        ));
    }
    if by_name.is_none() && targets.len() > 1 && !force {
        return Err(ApiError::conflict(format!(
            "conflict: unable to delete {key} (must be forced) - image is referenced in multiple repositories"
        )));
    }
    let digest = first.digest.clone();
    let names_left = all
        .iter()
        .filter(|i| i.digest == digest && !targets.iter().any(|t| t.name == i.name))
        .count();
    if names_left == 0 && !force {
        if let Some(c) = d.all().into_iter().find(|c| c.image_id == digest) {
            return Err(ApiError::conflict(format!(
                "conflict: unable to remove repository reference \"{key}\" (must force) - container {} is using its referenced image {digest}",
                c.sandbox.id()
            )));
        }
    }
    let mut out = Vec::new();
    for t in &targets {
        images::remove(client, &t.name)
            .await
            .map_err(|e| image_error(e, key))?;
        d.events
            .emit("image", "untag", &digest, attrs(&t.reference));
        out.push(json!({ "Untagged": t.reference }));
    }
    if names_left == 0 {
        d.events
            .emit("image", "delete", &digest, attrs(&first.reference));
        out.push(json!({ "Deleted": digest }));
    }
    crate::serve::http::ok_json(&out)
}

/// The credentials a client sent in `X-Registry-Auth` (base64url JSON with `username` and
/// `password`); none when it sent none or an empty object.
pub fn registry_auth(header: Option<&str>) -> Result<Option<Credentials>, ApiError> {
    let Some(text) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| ApiError::bad("X-Registry-Auth: not base64"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("X-Registry-Auth: {e}")))?;
    let get = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (username, password) = (get("username"), get("password"));
    if username.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials { username, password }))
}

/// `POST /images/create?fromImage=NAME&tag=TAG` (pull): the library's pull with the
/// server's registry options for that registry and the client's credentials, answered as
/// a JSON message stream. Importing a root filesystem (`fromSrc`) is refused.
pub async fn pull(d: &Arc<Docker>, req: &Request<Incoming>) -> Answer {
    let q = query(req);
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad(
            "fromSrc: importing a root filesystem is not supported (use POST /images/load)",
        ));
    }
    let image = q.get("fromImage").cloned().unwrap_or_default();
    if image.is_empty() {
        return Err(ApiError::bad("fromImage: required"));
    }
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image,
    };
    let parsed =
        Reference::parse(&reference).map_err(|e| ApiError::bad(format!("fromImage: {e}")))?;
    let registry = parsed.registry().to_string();
    let header = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|h| h.to_str().ok());
    let credentials = registry_auth(header)?;
    let dir = scratch_dir(d, "stockade-pull-")?;
    let base = &d.images.registry;
    let opts = RegistryOptions {
        plain_http: base
            .plain_http
            .iter()
            .filter(|r| **r == registry)
            .cloned()
            .collect(),
        insecure: base
            .insecure
            .iter()
            .filter(|r| **r == registry)
            .cloned()
            .collect(),
        credentials,
        // Without a config of the server's, a file that does not exist: no credentials
        // but the client's (never those of whoever runs the server).
        docker_config: Some(
            base.docker_config
                .clone()
                .unwrap_or_else(|| dir.path().join("config.json")),
        ),
        concurrency: base.concurrency,
    };
    let (tx, body) = channel_body();
    let d = d.clone();
    tokio::spawn(async move {
        let _dir = dir;
        let what = parsed.familiar();
        let _ = tx
            .send(line(&json!({"status": format!("Pulling from {what}")})))
            .await;
        let progress = StatusLines {
            tx: tx.clone(),
            quiet: false,
        };
        let Ok(client) = super::system::store(&d) else {
            return;
        };
        match images::registry::pull(client, &reference, &opts, &progress).await {
            Ok(r) => {
                let name = familiar(&r.name);
                d.events
                    .emit("image", "pull", &r.manifest_digest, attrs(&name));
                for status in [
                    format!("Digest: {}", r.manifest_digest),
                    format!("Status: Downloaded newer image for {name}"),
                ] {
                    let _ = tx.send(line(&json!({ "status": status }))).await;
                }
            }
            Err(e) => {
                let _ = tx.send(error_line(&e.to_string())).await;
            }
        }
    });
    streaming(body)
}

/// `POST /images/prune`: nothing is dangling in stockade's store (every image record has a
/// name, and containerd's collector drops unnamed content), so nothing is removed.
pub fn prune() -> Answer {
    crate::serve::http::ok_json(&json!({"ImagesDeleted": Value::Null, "SpaceReclaimed": 0}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_prefixes_with_or_without_the_algorithm() {
        assert_eq!(id_prefix("sha256:ab12"), Some("ab12"));
        assert_eq!(id_prefix("ab12"), Some("ab12"));
        assert_eq!(id_prefix("busybox"), None);
        assert_eq!(id_prefix("sha256:"), None);
    }

    #[test]
    fn registry_auth_is_base64_json_and_empty_means_none() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE.encode(s);
        assert_eq!(registry_auth(None).unwrap(), None);
        assert_eq!(registry_auth(Some(&enc("{}"))).unwrap(), None);
        let c = registry_auth(Some(&enc(
            r#"{"username":"u","password":"p","serveraddress":"r"}"#,
        )))
        .unwrap()
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        let e = registry_auth(Some("!!")).unwrap_err();
        assert_eq!(e.message, "X-Registry-Auth: not base64");
    }

    #[test]
    fn reserved_names_are_forbidden_and_missing_ones_not_found() {
        let e = images::user_image_name("stockade/busybox", "h").unwrap_err();
        assert_eq!(image_error(e, "stockade/busybox").status.as_u16(), 403);
        let nf = ImageError::NotFound {
            name: "x".into(),
            namespace: "n".into(),
            hint: "h".into(),
        };
        assert_eq!(image_error(nf, "x").message, "No such image: x");
    }
}
