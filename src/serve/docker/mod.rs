//! The Docker Engine API (versions [`MIN_API_VERSION`] to [`API_VERSION`]), over the
//! library's front door: every container is a [`Sandbox`] with a main command
//! ([`crate::sandbox::main_process`]), made from a policy that [`create::map_create`] derives
//! from the request and the server's policy. Handlers parse, call the library and answer
//! in Docker's JSON; routes are taken with and without the `/vX.Y` prefix.
//!
//! Containers belong to the server process: it follows their output into their log files
//! ([`crate::sandbox::logs`]), waits for their exit, removes the ones made with
//! `AutoRemove`, and removes every one of them when it stops.

pub mod archive;
pub mod containers;
pub mod create;
pub mod events;
pub mod exec;
pub mod images;
pub mod prune;
pub mod stream;
pub mod system;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::http::{ApiError, Body};
use super::owned;
use crate::sandbox::logs::LogFeed;
use crate::sandbox::{Sandbox, Sandboxes};
use create::ServerPolicy;

/// The newest API version served (what `/_ping` answers in `API-Version`).
pub const API_VERSION: &str = "1.47";
/// The oldest API version served.
pub const MIN_API_VERSION: &str = "1.41";

/// The server's state: the front door, its policy, and the containers and execs it made.
pub struct Docker {
    /// The library's front door every container is made through.
    pub sandboxes: Sandboxes,
    /// The server's policy and what it lets a request ask for.
    pub server: ServerPolicy,
    /// How images are pulled and loaded.
    pub images: images::ImageOptions,
    /// What happened, for `GET /events`.
    pub events: events::Events,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    execs: Mutex<HashMap<String, Arc<exec::Exec>>>,
}

/// One container: its sandbox, what it was created with, and where its life has got to.
pub struct Container {
    /// The sandbox that runs it; its id is the container's id.
    pub sandbox: Sandbox,
    /// The name given at create (`?name=`, without Docker's leading `/`), if any.
    pub name: Option<String>,
    /// The image as the request named it.
    pub image: String,
    /// `sha256:…` of the image's manifest.
    pub image_id: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// `Config` as inspect shows it (the command, environment, working directory and user
    /// as merged with the image's).
    pub config: serde_json::Value,
    /// `HostConfig` as the request gave it, with the log driver stockade uses.
    pub host_config: serde_json::Value,
    /// The main command, the entrypoint first.
    pub argv: Vec<String>,
    /// Whether it runs on a terminal (`Tty`).
    pub tty: bool,
    /// Whether its stdin is open for attached clients (`OpenStdin`).
    pub open_stdin: bool,
    /// Whether its stdin is closed when the first attached client's input ends (`StdinOnce`).
    pub stdin_once: bool,
    /// Whether it is removed once it exits (`HostConfig.AutoRemove`).
    pub auto_remove: bool,
    /// Its output as written to its log file, for logs and attach.
    pub feed: LogFeed,
    /// Write end of the main command's stdin, until it is closed.
    pub stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    /// The exit code, once it has exited.
    pub exited: watch::Sender<Option<i32>>,
    /// Set once it has been removed.
    pub removed: watch::Sender<bool>,
}

impl Docker {
    /// A server over `sandboxes` with the policy `server`, default image options and no
    /// containers yet.
    pub fn new(sandboxes: Sandboxes, server: ServerPolicy) -> Docker {
        Docker {
            sandboxes,
            server,
            images: images::ImageOptions::default(),
            events: events::Events::default(),
            containers: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
        }
    }

    /// The same server with these image options.
    pub fn with_images(mut self, images: images::ImageOptions) -> Docker {
        self.images = images;
        self
    }

    /// Records a container event (its name and image as attributes, and `extra`).
    pub fn container_event(&self, c: &Container, action: &str, extra: &[(&str, String)]) {
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("image".to_string(), c.image.clone());
        attrs.insert(
            "name".to_string(),
            c.name.clone().unwrap_or_else(|| c.sandbox.id().to_string()),
        );
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.events.emit("container", action, c.sandbox.id(), attrs);
    }

    /// The container with this id, name (`/` before it or not) or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Arc<Container>, ApiError> {
        let key = key.strip_prefix('/').unwrap_or(key);
        let all = self.containers.lock().expect("containers lock");
        if let Some(c) = all.get(key) {
            return Ok(c.clone());
        }
        if let Some(c) = all.values().find(|c| c.name.as_deref() == Some(key)) {
            return Ok(c.clone());
        }
        let prefixed: Vec<_> = all
            .values()
            .filter(|c| {
                !key.is_empty()
                    && (c.sandbox.id().starts_with(key)
                        || c.sandbox.id()[crate::runner::ID_PREFIX.len()..].starts_with(key))
            })
            .collect();
        match prefixed.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ApiError::not_found(format!("No such container: {key}"))),
            _ => Err(ApiError::not_found(format!(
                "No such container: {key} (the prefix names more than one)"
            ))),
        }
    }

    /// Every container, newest first.
    pub fn all(&self) -> Vec<Arc<Container>> {
        let mut v: Vec<_> = self
            .containers
            .lock()
            .expect("containers lock")
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.created_unix_ms));
        v
    }

    fn insert(&self, c: Arc<Container>) {
        self.containers
            .lock()
            .expect("containers lock")
            .insert(c.sandbox.id().to_string(), c);
    }

    /// Removes container `c` (killing it with `force`) and forgets it and its execs.
    pub async fn remove(&self, c: &Arc<Container>, force: bool) -> Result<(), ApiError> {
        if !force && c.sandbox.state().await? == crate::containerd::TaskStatus::Running {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                c.sandbox.id()
            )));
        }
        match c.sandbox.clone().remove(true).await {
            Ok(()) | Err(crate::sandbox::SandboxError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let id = c.sandbox.id().to_string();
        self.containers.lock().expect("containers lock").remove(&id);
        self.execs
            .lock()
            .expect("execs lock")
            .retain(|_, e| e.container != id);
        // A container removed before its exit was seen was killed.
        c.exited.send_if_modified(|e| {
            if e.is_none() {
                *e = Some(137);
                true
            } else {
                false
            }
        });
        c.removed.send_replace(true);
        self.container_event(c, "destroy", &[]);
        Ok(())
    }

    /// Removes every container (the server is stopping).
    pub async fn remove_all(&self) {
        for c in self.all() {
            if let Err(e) = self.remove(&c, true).await {
                tracing::warn!("removing {}: {}", c.sandbox.id(), e.message);
            }
        }
    }

    /// Removes the containers an earlier server left behind (sandboxes with a main command
    /// whose owner is no longer alive): their output was followed, and their exit waited
    /// for, by that server alone. Returns their ids.
    pub async fn reclaim_leftovers(&self) -> Vec<String> {
        let proc_root = self.sandboxes.runner().proc_root();
        owned::remove_leftovers(&self.sandboxes, |_, sb| {
            sb.main_state().is_some() && !owned::owner_alive(sb, proc_root)
        })
        .await
    }

    /// Answers one request.
    pub async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let (version, rest) = split_version(&path);
        if let Some(v) = version {
            if let Err(e) = check_version(v) {
                return e.response();
            }
        }
        let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let method = req.method().clone();
        let answer = match (&method, segs.as_slice()) {
            (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(&method)),
            (&Method::GET, ["version"]) => system::version(),
            (&Method::GET, ["info"]) => system::info(&self).await,
            (&Method::GET, ["images", "json"]) => system::images(&self).await,
            (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
                system::image(&self, &name.join("/")).await
            }
            (&Method::POST, ["images", "create"]) => images::pull(&self, &req).await,
            (&Method::POST, ["images", "load"]) => images::load(&self, req).await,
            (&Method::GET, ["images", "get"]) => images::save(&self, None, &req).await,
            (&Method::POST, ["images", "prune"]) => images::prune(),
            (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
                images::save(&self, Some(&name.join("/")), &req).await
            }
            (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
                images::tag(&self, &name.join("/"), &req).await
            }
            (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
                images::remove(&self, &name.join("/"), &req).await
            }
            (&Method::GET, ["events"]) => events::events(&self.events, &req),
            (&Method::GET, ["system", "df"]) => system::df(&self).await,
            (&Method::POST, ["containers", "prune"]) => prune::containers(&self, &req).await,
            (&Method::POST, ["containers", "create"]) => containers::create(&self, req).await,
            (&Method::GET, ["containers", "json"]) => containers::list(&self, &req).await,
            (&Method::GET, ["containers", id, "json"]) => containers::inspect(&self, id).await,
            (&Method::POST, ["containers", id, "start"]) => containers::start(&self, id).await,
            (&Method::POST, ["containers", id, "wait"]) => containers::wait(&self, id, &req),
            (&Method::POST, ["containers", id, "kill"]) => containers::kill(&self, id, &req).await,
            (&Method::POST, ["containers", id, "stop"]) => containers::stop(&self, id, &req).await,
            (&Method::POST, ["containers", id, "restart"]) => containers::restart(&self, id).await,
            (&Method::POST, ["containers", id, "resize"]) => {
                containers::resize(&self, id, &req).await
            }
            (&Method::DELETE, ["containers", id]) => containers::remove(&self, id, &req).await,
            (&Method::POST, ["containers", id, "attach"]) => stream::attach(&self, id, req),
            (&Method::GET, ["containers", id, "logs"]) => stream::logs(&self, id, &req),
            (&Method::HEAD, ["containers", id, "archive"]) => archive::head(&self, id, &req).await,
            (&Method::GET, ["containers", id, "archive"]) => archive::get(&self, id, &req).await,
            (&Method::PUT, ["containers", id, "archive"]) => archive::put(&self, id, req).await,
            (&Method::POST, ["containers", id, "exec"]) => exec::create(&self, id, req).await,
            (&Method::POST, ["exec", id, "start"]) => exec::start(&self, id, req).await,
            (&Method::POST, ["exec", id, "resize"]) => exec::resize(&self, id, &req).await,
            (&Method::GET, ["exec", id, "json"]) => exec::inspect(&self, id),
            _ => Err(ApiError::not_found(format!(
                "{method} {rest}: not supported by stockade serve"
            ))),
        };
        match answer {
            Ok(r) => r,
            Err(e) => {
                tracing::info!("{method} {path}: {} {}", e.status.as_u16(), e.message);
                e.response()
            }
        }
    }
}

/// `/v1.47/containers/json` → (`Some("1.47")`, `/containers/json`).
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return (Some(v), &rest[end..]);
        }
    }
    (None, path)
}

fn version_key(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A requested API version must lie between [`MIN_API_VERSION`] and [`API_VERSION`].
pub fn check_version(v: &str) -> Result<(), ApiError> {
    let Some(k) = version_key(v) else {
        return Err(ApiError::bad(format!("API version {v}: not a version")));
    };
    let max = version_key(API_VERSION).expect("a version");
    let min = version_key(MIN_API_VERSION).expect("a version");
    if k > max {
        return Err(ApiError::bad(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if k < min {
        return Err(ApiError::bad(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok(())
}

/// Unix milliseconds → RFC 3339 with nanoseconds, as Docker writes times; the zero time
/// for none.
pub fn docker_time(unix_ms: Option<u64>) -> String {
    match unix_ms {
        Some(ms) => crate::runner::journal::rfc3339_millis(ms).replace('Z', "000000Z"),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_taken_with_and_without_the_prefix_and_checked() {
        assert_eq!(
            split_version("/v1.47/containers/json"),
            (Some("1.47"), "/containers/json")
        );
        assert_eq!(split_version("/_ping"), (None, "/_ping"));
        assert_eq!(split_version("/version"), (None, "/version"));
        for (v, ok) in [
            ("1.41", true),
            ("1.47", true),
            ("1.44", true),
            ("1.48", false),
            ("1.40", false),
            ("2.0", false),
            ("x", false),
        ] {
            assert_eq!(check_version(v).is_ok(), ok, "{v}");
        }
        assert_eq!(check_version("1.50").unwrap_err().status.as_u16(), 400);
    }

    #[test]
    fn times_are_written_as_docker_writes_them() {
        assert_eq!(docker_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(docker_time(Some(1_500)), "1970-01-01T00:00:01.500000000Z");
    }
}
