//! `/_ping`, `/version`, `/info`, `/images/json`, `/images/{name}/json`, `/system/df`.

use std::sync::Arc;

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{docker_time, Docker, API_VERSION, MIN_API_VERSION};
use crate::containerd::TaskStatus;
use crate::serve::http::{self, ok_json, Answer, ApiError, Body};

/// What `/version` and `/info` call the server.
pub const SERVER_VERSION: &str = concat!("stockade-", env!("CARGO_PKG_VERSION"));

/// `GET|HEAD /_ping`: `OK`, with the API version the client negotiates down to.
pub fn ping(method: &Method) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("API-Version", API_VERSION)
        .header("Docker-Experimental", "false")
        .header("OSType", "linux")
        .header("Cache-Control", "no-cache, no-store, must-revalidate")
        .header("Pragma", "no-cache")
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(if method == Method::HEAD {
            http::empty()
        } else {
            http::full("OK")
        })
        .expect("a valid response")
}

fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), String::new()),
    }
}

/// Docker's name for the machine's architecture.
fn goarch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub fn version() -> Answer {
    let (kernel, machine) = uname();
    ok_json(&json!({
        "Platform": {"Name": "stockade"},
        "Components": [{
            "Name": "Engine",
            "Version": SERVER_VERSION,
            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux", "Arch": goarch(&machine), "KernelVersion": kernel},
        }],
        "Version": SERVER_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": goarch(&machine),
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

/// `GET /info`.
pub async fn info(d: &Arc<Docker>) -> Answer {
    let (kernel, machine) = uname();
    let all = d.all();
    let mut running = 0;
    for c in &all {
        if c.sandbox.state().await.ok() == Some(TaskStatus::Running) {
            running += 1;
        }
    }
    let images = match d.sandboxes.runner().containerd().client() {
        Some(client) => crate::images::list(client)
            .await
            .map(|v| v.len())
            .unwrap_or(0),
        None => 0,
    };
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ceiling = &d.server.ceiling;
    ok_json(&json!({
        "ID": "",
        "Containers": all.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": all.len() - running,
        "Images": images,
        "Driver": crate::runner::DEFAULT_SNAPSHOTTER,
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": ["none"], "Authorization": Value::Null, "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": false,
        "CPUSet": false,
        "PidsLimit": true,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": docker_time(Some(crate::runner::session::now_ms())),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if d.sandboxes.runner().cgroups().is_v2() { "2" } else { "1" },
        "NEventsListener": 0,
        "KernelVersion": kernel,
        "OperatingSystem": "stockade",
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": machine,
        "IndexServerAddress": "",
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "NCPU": std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(1),
        "MemTotal": 0,
        "DockerRootDir": "/var/lib/stockade",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": SERVER_VERSION,
        "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": Value::Null},
        "LiveRestoreEnabled": false,
        "Isolation": "",
        "InitBinary": "stockade-init",
        "SecurityOptions": ["name=seccomp,profile=stockade", "name=no-new-privileges"],
        "Warnings": [format!(
            "stockade serve: every container is a stockade sandbox (at most {} bytes of memory, {} CPUs, {} pids; no capabilities beyond stockade's allowlist; seccomp; no-new-privileges)",
            ceiling.limits.memory,
            f64::from(ceiling.limits.cpu_millis) / 1000.0,
            ceiling.limits.pids
        )],
    }))
}

/// The image store's client; 500 when the server has none.
pub(super) fn store(d: &Docker) -> Result<&crate::containerd::Client, ApiError> {
    d.sandboxes
        .runner()
        .containerd()
        .client()
        .ok_or_else(|| ApiError::internal("this server has no image store"))
}

/// `YYYY-MM-DDTHH:MM:SSZ` → unix seconds (0 when it is not that).
fn unix_secs(rfc3339: &str) -> i64 {
    let digits = |a: usize, b: usize| rfc3339.get(a..b).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(m), Some(d), Some(hh), Some(mm), Some(ss)) = (
        digits(0, 4),
        digits(5, 7),
        digits(8, 10),
        digits(11, 13),
        digits(14, 16),
        digits(17, 19),
    ) else {
        return 0;
    };
    // Days from civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

/// `GET /images/json`: the images of stockade's store, each with its manifest digest as
/// its id.
pub async fn images(d: &Arc<Docker>) -> Answer {
    ok_json(&image_summaries(d).await?)
}

/// The images as `GET /images/json` lists them, each with the number of the server's
/// containers made from it.
async fn image_summaries(d: &Arc<Docker>) -> Result<Vec<Value>, ApiError> {
    let client = store(d)?;
    let containers = d.all();
    let list = crate::images::list(client)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // One entry per image (manifest digest) with all its names, as Docker lists them.
    let mut out: Vec<Value> = Vec::new();
    for i in &list {
        if out.iter().any(|o| o["Id"] == i.digest.as_str()) {
            continue;
        }
        let same: Vec<&crate::images::ImageSummary> =
            list.iter().filter(|o| o.digest == i.digest).collect();
        out.push(json!({
            "Id": i.digest,
            "ParentId": "",
            "RepoTags": same.iter().map(|o| o.reference.clone()).collect::<Vec<_>>(),
            "RepoDigests": same.iter().map(|o| repo_digest(&o.reference, &o.digest)).collect::<Vec<_>>(),
            "Created": unix_secs(&i.created),
            "Size": i.size,
            "SharedSize": -1,
            "Labels": {},
            "Containers": containers.iter().filter(|c| c.image_id == i.digest).count(),
        }));
    }
    Ok(out)
}

/// `busybox@sha256:…` for `busybox:latest`.
fn repo_digest(familiar: &str, digest: &str) -> String {
    let repo = match familiar.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => familiar,
    };
    format!("{repo}@{digest}")
}

/// The image `key` names: a name, or an id (`sha256:HEX…` or a hex prefix of one image's
/// manifest digest).
async fn find_image(
    client: &crate::containerd::Client,
    key: &str,
) -> Result<crate::images::ImageRef, ApiError> {
    use crate::images::ImageError;
    let not_found = || ApiError::not_found(format!("No such image: {key}"));
    match crate::images::resolve(client, key).await {
        Ok(i) => return Ok(i),
        Err(ImageError::NotFound { .. } | ImageError::BadName(_)) => {}
        Err(e) => return Err(ApiError::internal(e.to_string())),
    }
    let hex = super::images::id_prefix(key).ok_or_else(not_found)?;
    let list = crate::images::list(client)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let hits: Vec<_> = list
        .iter()
        .filter(|i| i.digest.get(7..).is_some_and(|h| h.starts_with(hex)))
        .collect();
    match hits.as_slice() {
        [] => Err(not_found()),
        [first, rest @ ..] if rest.iter().all(|r| r.digest == first.digest) => {
            crate::images::resolve(client, &first.name)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))
        }
        _ => Err(ApiError::not_found(format!(
            "No such image: {key} (the prefix names more than one image)"
        ))),
    }
}

/// `GET /system/df`: the images with their sizes, the containers (whose writable layers
/// stockade does not measure: 0), no volumes and no build cache.
pub async fn df(d: &Arc<Docker>) -> Answer {
    let images = image_summaries(d).await?;
    let layers: u64 = images.iter().filter_map(|i| i["Size"].as_u64()).sum();
    let containers: Vec<Value> = super::containers::summaries(d, true)
        .await
        .into_iter()
        .map(|mut c| {
            c["SizeRw"] = json!(0);
            c["SizeRootFs"] = json!(0);
            c
        })
        .collect();
    ok_json(&json!({
        "LayersSize": layers,
        "Images": images,
        "Containers": containers,
        "Volumes": [],
        "BuildCache": [],
    }))
}

/// `GET /images/{name}/json`.
pub async fn image(d: &Arc<Docker>, name: &str) -> Answer {
    let client = store(d)?;
    let i = find_image(client, name).await?;
    let names: Vec<String> = crate::images::list(client)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .filter(|o| o.digest == i.manifest_digest)
        .map(|o| o.reference)
        .collect();
    let (_, machine) = uname();
    let none = |v: &Vec<String>| if v.is_empty() { Value::Null } else { json!(v) };
    ok_json(&json!({
        "Id": i.manifest_digest,
        "RepoDigests": names.iter().map(|n| repo_digest(n, &i.manifest_digest)).collect::<Vec<_>>(),
        "RepoTags": names,
        "Parent": "",
        "Comment": "",
        "Created": "",
        "Config": {
            "Env": i.config.env,
            "Entrypoint": none(&i.config.entrypoint),
            "Cmd": none(&i.config.cmd),
            "WorkingDir": i.config.working_dir,
            "User": i.config.user,
            "Labels": Value::Null,
        },
        "Architecture": goarch(&machine),
        "Os": "linux",
        "Size": 0,
        "GraphDriver": {"Name": crate::runner::DEFAULT_SNAPSHOTTER, "Data": Value::Null},
        "RootFS": {"Type": "layers", "Layers": [i.chain_id]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_times_become_unix_seconds() {
        assert_eq!(super::unix_secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(super::unix_secs("2000-03-01T00:00:01Z"), 951_868_801);
        assert_eq!(super::unix_secs("garbage"), 0);
    }

    #[test]
    fn repo_digests_drop_the_tag_but_not_a_registry_port() {
        assert_eq!(
            super::repo_digest("busybox:latest", "sha256:ab"),
            "busybox@sha256:ab"
        );
        assert_eq!(
            super::repo_digest("localhost:5000/x:1", "sha256:ab"),
            "localhost:5000/x@sha256:ab"
        );
        assert_eq!(
            super::repo_digest("localhost:5000/x", "sha256:ab"),
            "localhost:5000/x@sha256:ab"
        );
    }
}
