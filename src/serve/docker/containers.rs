//! `/containers/…`: create, list, inspect, start, wait, kill, stop, restart, resize,
//! remove.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::create::{map_create, Refusal};
use super::wire::CreateBody;
use super::{docker_time, Container, Docker};
use crate::containerd::TaskStatus;
use crate::runner::session::now_ms;
use crate::sandbox::{logs, CreateRequest};
use crate::serve::http::{self, channel_body, flag, no_content, ok_json, query, Answer, ApiError};

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError::new(r.status, r.message)
    }
}

/// `POST /containers/create?name=NAME`.
pub async fn create(d: &Arc<Docker>, req: Request<Incoming>) -> Answer {
    let q = query(&req);
    let raw: Value = http::read_json(req.into_body()).await?;
    let body: CreateBody = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::bad(format!("request body: {e}")))?;
    let image = resolve_image(d, &body.image).await?;
    let mapped = map_create(&body, image.as_ref().map(|i| &i.config), &d.server)?;
    let policy = {
        let m = mapped.clone();
        tokio::task::spawn_blocking(move || m.validate(&crate::policy::HostPolicyEnv))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??
    };
    let name = q
        .get("name")
        .filter(|n| !n.is_empty())
        .map(|n| n.trim_start_matches('/').to_string());
    let mut creq = CreateRequest::new(policy.clone());
    creq.name = name.clone();
    creq.labels = mapped.labels.clone();
    let (sandbox, io) = d.sandboxes.create_main(creq, mapped.main.clone()).await?;
    let feed = match logs::spawn(
        &sandbox.run_dir(),
        io.stdout,
        io.stderr,
        policy.limits.max_output,
    ) {
        Ok(f) => f,
        Err(e) => {
            let _ = sandbox.clone().remove(true).await;
            return Err(ApiError::internal(format!("log file: {e}")));
        }
    };
    let mut config = raw.clone();
    if let Some(c) = config.as_object_mut() {
        c.remove("HostConfig");
        c.remove("NetworkingConfig");
        c.insert("Cmd".into(), json!(mapped.main.argv));
        c.insert("Entrypoint".into(), Value::Null);
        c.insert("Env".into(), json!(policy.env));
        c.insert("WorkingDir".into(), json!(policy.cwd));
        c.insert(
            "User".into(),
            json!(format!("{}:{}", policy.user.uid, policy.user.gid)),
        );
        c.insert("Labels".into(), json!(mapped.labels));
        c.insert("Image".into(), json!(body.image));
        c.insert("Hostname".into(), json!(policy.hostname));
    }
    let mut host_config = raw.get("HostConfig").cloned().unwrap_or_else(|| json!({}));
    if let Some(h) = host_config.as_object_mut() {
        h.insert(
            "LogConfig".into(),
            json!({"Type": "json-file", "Config": {}}),
        );
        h.insert(
            "NetworkMode".into(),
            json!(format!("{:?}", policy.network).to_lowercase()),
        );
        h.insert("Memory".into(), json!(policy.limits.memory));
        h.insert(
            "NanoCpus".into(),
            json!(u64::from(policy.limits.cpu_millis) * 1_000_000),
        );
        h.insert("PidsLimit".into(), json!(policy.limits.pids));
        h.insert("ReadonlyRootfs".into(), json!(policy.read_only_root));
        h.insert("Privileged".into(), json!(false));
    }
    let id = sandbox.id().to_string();
    let c = Arc::new(Container {
        sandbox,
        name,
        image: body.image.clone(),
        image_id: image.map(|i| i.manifest_digest).unwrap_or_default(),
        created_unix_ms: now_ms(),
        config,
        host_config,
        argv: mapped.main.argv.clone(),
        tty: mapped.main.tty,
        open_stdin: mapped.main.stdin,
        stdin_once: mapped.stdin_once,
        auto_remove: mapped.auto_remove,
        feed,
        stdin: tokio::sync::Mutex::new(io.stdin),
        exited: watch::channel(None).0,
        removed: watch::channel(false).0,
    });
    d.container_event(&c, "create", &[]);
    d.insert(c);
    let warnings: Vec<String> = policy
        .warnings
        .iter()
        .chain(&mapped.warnings)
        .cloned()
        .collect();
    Ok(http::json(
        StatusCode::CREATED,
        &json!({ "Id": id, "Warnings": warnings }),
    ))
}

/// The image from stockade's store, or 404 in Docker's words; `None` where the runner has
/// no image store (a fake containerd).
async fn resolve_image(
    d: &Docker,
    name: &str,
) -> Result<Option<crate::images::ImageRef>, ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad("Image: required"));
    }
    let Some(client) = d.sandboxes.runner().containerd().client() else {
        return Ok(None);
    };
    match crate::images::resolve(client, name).await {
        Ok(i) => Ok(Some(i)),
        Err(crate::images::ImageError::NotFound { hint, .. }) => Err(ApiError::not_found(format!(
            "No such image: {name} ({hint})"
        ))),
        Err(crate::images::ImageError::BadName(n)) => Err(ApiError::bad(format!(
            "Image: `{n}` is not a valid image name"
        ))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// `created`, `running`, `exited` or `dead`, and the Docker state object.
async fn state(c: &Container) -> (String, Value) {
    let status = c.sandbox.state().await.unwrap_or(TaskStatus::Unknown);
    let main = c.sandbox.main_state().unwrap_or_default();
    let word = match status {
        TaskStatus::Created => "created",
        TaskStatus::Running => "running",
        TaskStatus::Stopped => "exited",
        TaskStatus::Unknown => "dead",
    };
    let running = status == TaskStatus::Running;
    let exit_code = main.exit_code.or(*c.exited.borrow()).unwrap_or(0);
    let v = json!({
        "Status": word,
        "Running": running,
        "Paused": false,
        "Restarting": false,
        "OOMKilled": main.oom_killed,
        "Dead": word == "dead",
        "Pid": if running { c.sandbox.task_pid() } else { 0 },
        "ExitCode": exit_code,
        "Error": "",
        "StartedAt": docker_time(main.started_unix_ms),
        "FinishedAt": docker_time(main.finished_unix_ms),
    });
    (word.to_string(), v)
}

fn display_name(c: &Container) -> String {
    format!("/{}", c.name.as_deref().unwrap_or(c.sandbox.id()))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(d: &Arc<Docker>, id: &str) -> Answer {
    let c = d.find(id)?;
    let (_, st) = state(&c).await;
    ok_json(&json!({
        "Id": c.sandbox.id(),
        "Created": docker_time(Some(c.created_unix_ms)),
        "Path": c.argv.first(),
        "Args": c.argv.get(1..).unwrap_or(&[]),
        "State": st,
        "Image": c.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": c.feed.path(),
        "Name": display_name(&c),
        "RestartCount": 0,
        "Driver": crate::runner::DEFAULT_SNAPSHOTTER,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": Value::Null,
        "HostConfig": c.host_config,
        "GraphDriver": {"Name": crate::runner::DEFAULT_SNAPSHOTTER, "Data": Value::Null},
        "Mounts": [],
        "Config": c.config,
        "NetworkSettings": {"Networks": {}, "Ports": {}},
    }))
}

/// `GET /containers/json?all=1`.
pub async fn list(d: &Arc<Docker>, req: &Request<Incoming>) -> Answer {
    let q = query(req);
    ok_json(&summaries(d, flag(&q, "all")).await)
}

/// The containers as `GET /containers/json` lists them (only running ones unless `all`).
pub async fn summaries(d: &Arc<Docker>, all: bool) -> Vec<Value> {
    let now = now_ms();
    let mut out = Vec::new();
    for c in d.all() {
        let (word, st) = state(&c).await;
        if !all && word != "running" {
            continue;
        }
        let main = c.sandbox.main_state().unwrap_or_default();
        let ago = |t: Option<u64>| human_duration(now.saturating_sub(t.unwrap_or(now)));
        let status = match word.as_str() {
            "running" => format!("Up {}", ago(main.started_unix_ms)),
            "exited" => format!(
                "Exited ({}) {} ago",
                st["ExitCode"],
                ago(main.finished_unix_ms)
            ),
            "created" => "Created".to_string(),
            _ => "Dead".to_string(),
        };
        out.push(json!({
            "Id": c.sandbox.id(),
            "Names": [display_name(&c)],
            "Image": c.image,
            "ImageID": c.image_id,
            "Command": c.argv.join(" "),
            "Created": c.created_unix_ms / 1000,
            "Ports": [],
            "Labels": c.config.get("Labels").cloned().unwrap_or(Value::Null),
            "State": word,
            "Status": status,
            "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode").cloned().unwrap_or(Value::Null)},
            "NetworkSettings": {"Networks": {}},
            "Mounts": [],
        }));
    }
    out
}

/// "3 seconds", "2 minutes", "5 hours", "4 days", as `docker ps` shows ages.
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".to_string(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".to_string(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// `POST /containers/{id}/start`: starts the main command, and a task that waits for its
/// exit (and removes an `AutoRemove` container then).
pub async fn start(d: &Arc<Docker>, id: &str) -> Answer {
    let c = d.find(id)?;
    match c.sandbox.state().await? {
        TaskStatus::Created => {}
        TaskStatus::Running => return no_content(StatusCode::NOT_MODIFIED),
        _ => {
            return Err(ApiError::bad(format!(
                "container {}: starting an exited container again is not supported yet (its command runs once)",
                c.sandbox.id()
            )))
        }
    }
    c.sandbox.start().await?;
    d.container_event(&c, "start", &[]);
    let (d, c) = (d.clone(), c.clone());
    tokio::spawn(async move {
        let code = match c.sandbox.wait_main().await {
            Ok(s) => s.exit_code.unwrap_or(-1),
            Err(e) => {
                tracing::warn!("waiting for {}: {e}", c.sandbox.id());
                -1
            }
        };
        // The output first: whoever follows it sees all of it before the exit is told.
        let _ = tokio::time::timeout(crate::runner::DRAIN_GRACE, c.feed.ended()).await;
        c.exited.send_replace(Some(code));
        d.container_event(&c, "die", &[("exitCode", code.to_string())]);
        if c.auto_remove {
            if let Err(e) = d.remove(&c, true).await {
                tracing::warn!("removing {}: {}", c.sandbox.id(), e.message);
            }
        }
    });
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`: the head at once,
/// `{"StatusCode": N}` when the condition holds.
pub fn wait(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let q = query(req);
    let condition = q.get("condition").map(String::as_str).unwrap_or("");
    if !["", "not-running", "next-exit", "removed"].contains(&condition) {
        return Err(ApiError::bad(format!(
            "condition: `{condition}` is not one of not-running, next-exit, removed"
        )));
    }
    let condition = condition.to_string();
    let mut exited = c.exited.subscribe();
    let mut removed = c.removed.subscribe();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let code = match condition.as_str() {
            "removed" => {
                let _ = removed.wait_for(|r| *r).await;
                *exited.borrow()
            }
            "next-exit" => exited.wait_for(Option::is_some).await.ok().and_then(|e| *e),
            _ => {
                let not_running =
                    matches!(c.sandbox.state().await, Ok(TaskStatus::Created) | Err(_));
                if not_running {
                    *exited.borrow()
                } else {
                    exited.wait_for(Option::is_some).await.ok().and_then(|e| *e)
                }
            }
        }
        .unwrap_or(0);
        let body = json!({"StatusCode": code, "Error": Value::Null});
        let _ = tx.send(Bytes::from(format!("{body}\n"))).await;
    });
    Ok(http::streamed("application/json", body))
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`); SIGKILL when none.
pub fn signal_number(s: &str) -> Result<i32, ApiError> {
    if s.is_empty() {
        return Ok(9);
    }
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| ApiError::bad(format!("signal: `{s}` is not a signal")))
}

/// `POST /containers/{id}/kill?signal=SIG`.
pub async fn kill(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let sig = signal_number(query(req).get("signal").map(String::as_str).unwrap_or(""))?;
    if c.sandbox.state().await? != TaskStatus::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.sandbox.id()
        )));
    }
    c.sandbox.kill(sig).await?;
    d.container_event(&c, "kill", &[("signal", sig.to_string())]);
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/stop?t=SECONDS` (default 10).
pub async fn stop(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let q = query(req);
    let t = match q.get("t").filter(|t| !t.is_empty()) {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| ApiError::bad(format!("t: `{t}` is not a number of seconds")))?,
        None => 10,
    };
    if c.sandbox.state().await? != TaskStatus::Running {
        return no_content(StatusCode::NOT_MODIFIED);
    }
    c.sandbox.stop(Duration::from_secs(t.max(0) as u64)).await?;
    no_content(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/restart`: refused with 501, without touching the container. A
/// stockade container's main command is its sandbox's task and runs once; starting it
/// again would make another sandbox under the same id.
pub async fn restart(d: &Arc<Docker>, id: &str) -> Answer {
    let c = d.find(id)?;
    Err(ApiError::new(
        501,
        format!(
            "restart {}: not supported by stockade serve (a container's command runs once); remove it and run a new one",
            c.sandbox.id()
        ),
    ))
}

/// `POST /containers/{id}/resize?h=ROWS&w=COLUMNS`.
pub async fn resize(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let (w, h) = size(req)?;
    if c.tty && c.sandbox.state().await? == TaskStatus::Running {
        c.sandbox.resize_main(w, h).await?;
    }
    no_content(StatusCode::OK)
}

/// `w` and `h` of a resize request.
pub fn size(req: &Request<Incoming>) -> Result<(u16, u16), ApiError> {
    let q = query(req);
    let get = |k: &str| -> Result<u16, ApiError> {
        q.get(k)
            .map(|v| v.parse::<u16>())
            .unwrap_or(Ok(0))
            .map_err(|_| ApiError::bad(format!("{k}: not a size")))
    };
    Ok((get("w")?, get("h")?))
}

/// `DELETE /containers/{id}?force=1`.
pub async fn remove(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let q = query(req);
    if flag(&q, "link") {
        return Err(ApiError::bad("link: links are not supported"));
    }
    d.remove(&c, flag(&q, "force")).await?;
    no_content(StatusCode::NO_CONTENT)
}
