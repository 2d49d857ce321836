//! The other container engines as contenders: a dockerd the benchmark starts privately
//! (`docker run --rm`, `docker exec`) and podman (`podman run --rm`), each on the same
//! image, exported from containerd with `ctr images export` and loaded into the engine.
//! Everything lives under the benchmark's work directory and is removed at the end; the
//! dockerd is stopped by its PID.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::external::{check_output, have, timed};
use super::{BenchConfig, BenchError, Contender, Sample, Workload};
use crate::containerd::Client;

/// Runs `cmd` to completion, untimed, for setup; returns its stdout.
pub(super) async fn setup_cmd(cmd: Command, what: &str) -> Result<String, BenchError> {
    let (_, out) = timed(cmd, what).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The name `docker load` / `podman load` printed (`Loaded image: NAME`, `Loaded
/// image(s): A,B`): the first one.
pub(super) fn loaded_name(out: &str) -> Option<String> {
    out.lines()
        .rev()
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.starts_with("Loaded image"))
        })
        .map(|(_, v)| v.split(',').next().unwrap_or_default().trim().to_string())
        .find(|v| !v.is_empty())
}

/// Exports each of `image_refs` (workload image → containerd reference) to a tarball
/// under `dir` that both `docker load` and `podman load` read.
pub(super) async fn export_images(
    address: &Path,
    namespace: &str,
    image_refs: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, BenchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
    let mut out = BTreeMap::new();
    for (i, (image, reference)) in image_refs.iter().enumerate() {
        let file = dir.join(format!("image-{i}.tar"));
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(address)
            .arg("--namespace")
            .arg(namespace)
            .args(["images", "export", "--platform", "linux/amd64"])
            .arg(&file)
            .arg(reference);
        setup_cmd(cmd, "ctr images export").await?;
        out.insert(image.clone(), file);
    }
    Ok(out)
}

/// A dockerd of the benchmark's own, over the benchmark's containerd.
pub(super) struct Docker {
    dir: PathBuf,
    socket: PathBuf,
    pid: Option<u32>,
    /// Taken out by [`Docker::stop`].
    daemon: std::sync::Mutex<Option<Child>>,
    /// Workload image → the name dockerd knows it by.
    images: BTreeMap<String, String>,
    /// Workload image → the long-lived container `docker exec` goes into.
    exec: BTreeMap<String, String>,
}

impl Docker {
    /// Starts dockerd under `dir` (data root, exec root, pidfile, socket) on containerd at
    /// `containerd`, without bridge or iptables, and waits for its socket.
    pub async fn start(dir: &Path, containerd: &Path) -> Result<Docker, BenchError> {
        if !have("dockerd") || !have("docker") {
            return Err(BenchError::Setup(
                "dockerd or docker not found on PATH (Debian: docker.io)".into(),
            ));
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
        let socket = dir.join("docker.sock");
        let config = dir.join("daemon.json");
        std::fs::write(&config, "{}\n")
            .map_err(|e| BenchError::Setup(format!("{}: {e}", config.display())))?;
        let log = std::fs::File::create(dir.join("dockerd.log"))
            .map_err(|e| BenchError::Setup(format!("dockerd.log: {e}")))?;
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--containerd")
            .arg(containerd)
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .args(["--ip-masq=false", "--userland-proxy=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn {
                what: "dockerd".into(),
                message: e.to_string(),
            })?;
        let d = Docker {
            dir: dir.to_path_buf(),
            socket,
            pid: daemon.id(),
            daemon: std::sync::Mutex::new(Some(daemon)),
            images: BTreeMap::new(),
            exec: BTreeMap::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.cli()
                .arg("version")
                .output()
                .await
                .is_ok_and(|o| o.status.success())
            {
                return Ok(d);
            }
            let exited = d
                .daemon
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = exited {
                return Err(BenchError::Setup(format!(
                    "dockerd exited ({st}) before serving; see {}",
                    d.dir.join("dockerd.log").display()
                )));
            }
            if Instant::now() >= deadline {
                d.stop().await;
                return Err(BenchError::Setup(
                    "dockerd did not serve within 60 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemon's PID.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn cli(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.socket.display()));
        c
    }

    /// Loads each exported image and starts one long-lived container per image for exec.
    pub async fn load(
        &mut self,
        tarballs: &BTreeMap<String, PathBuf>,
        with_exec: bool,
    ) -> Result<(), BenchError> {
        for (image, tar) in tarballs {
            let mut cmd = self.cli();
            cmd.arg("load").arg("-i").arg(tar);
            let out = setup_cmd(cmd, "docker load").await?;
            let name = loaded_name(&out).ok_or_else(|| {
                BenchError::Setup(format!("docker load printed no image name: {out:?}"))
            })?;
            if with_exec {
                let mut cmd = self.cli();
                cmd.args(["run", "-d", "--network", "none", &name, "sleep", "86400"]);
                let id = setup_cmd(cmd, "docker run -d").await?.trim().to_string();
                self.exec.insert(image.clone(), id);
            }
            self.images.insert(image.clone(), name);
        }
        Ok(())
    }

    /// `docker run --rm --network none IMAGE ARGS…`.
    pub async fn run(&self, w: &Workload) -> Result<Sample, BenchError> {
        let image = self
            .images
            .get(&w.image)
            .ok_or_else(|| BenchError::Setup(format!("{} not loaded into dockerd", w.image)))?;
        let mut cmd = self.cli();
        cmd.args(["run", "--rm", "--network", "none", image])
            .args(&w.args);
        let (dt, out) = timed(cmd, "docker run").await?;
        check_output(w, &out, "docker run")?;
        Ok(Sample::end_to_end(dt))
    }

    /// `docker exec CONTAINER ARGS…` into the image's long-lived container.
    pub async fn exec(&self, w: &Workload) -> Result<Sample, BenchError> {
        docker_exec(self.cli(), &self.exec, w, "docker exec").await
    }

    /// Removes the exec containers, stops dockerd (SIGTERM to its PID, then SIGKILL after
    /// 30 s) and removes its directory. Returns what could not be done.
    pub async fn stop(&self) -> Vec<String> {
        let mut notes = Vec::new();
        remove_containers(|| self.cli(), &self.exec, "docker exec", &mut notes).await;
        let child = self
            .daemon
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let (Some(pid), Some(mut child)) = (self.pid, child) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                notes.push("dockerd did not stop within 30 s of SIGTERM; killed".into());
                let _ = child.kill().await;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            notes.push(format!("{}: not removed: {e}", self.dir.display()));
        }
        notes
    }
}

/// podman with its own storage under the work directory.
pub(super) struct Podman {
    dir: PathBuf,
    /// Workload image → the name podman knows it by.
    images: BTreeMap<String, String>,
}

impl Podman {
    /// Prepares podman's storage under `dir` and loads the exported images.
    pub async fn start(
        dir: &Path,
        tarballs: &BTreeMap<String, PathBuf>,
    ) -> Result<Podman, BenchError> {
        if !have("podman") {
            return Err(BenchError::Setup("podman not found on PATH".into()));
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
        let mut p = Podman {
            dir: dir.to_path_buf(),
            images: BTreeMap::new(),
        };
        for (image, tar) in tarballs {
            let mut cmd = p.cli();
            cmd.arg("load").arg("-i").arg(tar);
            let out = setup_cmd(cmd, "podman load").await?;
            let name = loaded_name(&out).ok_or_else(|| {
                BenchError::Setup(format!("podman load printed no image name: {out:?}"))
            })?;
            p.images.insert(image.clone(), name);
        }
        Ok(p)
    }

    fn cli(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .args(["--runtime", "runc"]);
        c
    }

    /// `podman run --rm --network none IMAGE ARGS…`.
    pub async fn run(&self, w: &Workload) -> Result<Sample, BenchError> {
        let image = self
            .images
            .get(&w.image)
            .ok_or_else(|| BenchError::Setup(format!("{} not loaded into podman", w.image)))?;
        let mut cmd = self.cli();
        // podman's default limits (open files and processes 1048576 and up) are above
        // what a host that caps them (a container, a login limit) lets even root grant,
        // and runc then refuses to start; these are stockade's default open-files limit
        // and a process limit any host grants.
        cmd.args(["run", "--rm", "--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .arg(image)
            .args(&w.args);
        let (dt, out) = timed(cmd, "podman run").await?;
        check_output(w, &out, "podman run")?;
        Ok(Sample::end_to_end(dt))
    }

    /// Removes podman's storage (`podman system reset`, which also unmounts it) and its
    /// directory. Returns what could not be done.
    pub async fn stop(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut cmd = self.cli();
        cmd.args(["system", "reset", "--force"]);
        if let Err(e) = setup_cmd(cmd, "podman system reset").await {
            notes.push(e.to_string());
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            notes.push(format!("{}: not removed: {e}", self.dir.display()));
        }
        notes
    }
}

/// Starts the private dockerd and podman storage the configuration asks for; a contender
/// whose engine is missing or fails to start is dropped from `config`, with a note saying why.
pub(super) async fn start_all(
    client: &Client,
    image_refs: &BTreeMap<String, crate::images::ImageRef>,
    config: &mut BenchConfig,
    meter: &super::meter::Meter,
    notes: &mut Vec<String>,
    progress: &(dyn Fn(&str) + Sync),
) -> (Option<Docker>, Option<Podman>) {
    let wants = |c: &[Contender], x: Contender| c.contains(&x);
    let want_docker = wants(&config.contenders, Contender::DockerRun)
        || wants(&config.contenders, Contender::DockerExec);
    let want_podman = wants(&config.contenders, Contender::PodmanRun);
    let docker_set = [Contender::DockerRun, Contender::DockerExec];
    if !want_docker && !want_podman {
        return (None, None);
    }
    let refs = image_refs
        .iter()
        .map(|(image, r)| (image.clone(), r.name.clone()))
        .collect();
    progress("exporting the images for the other engines");
    let tarballs = if have("ctr") {
        export_images(
            client.address(),
            client.namespace(),
            &refs,
            &config.work_dir.join("engines"),
        )
        .await
        .map_err(|e| e.to_string())
    } else {
        Err("ctr not found: the image cannot be exported for them".into())
    };
    let tarballs = match tarballs {
        Ok(t) => t,
        Err(why) => {
            skip(config, notes, &docker_set, why.clone());
            skip(config, notes, &[Contender::PodmanRun], why);
            return (None, None);
        }
    };
    let mut docker = None;
    if want_docker {
        progress("starting a private dockerd");
        match Docker::start(&config.work_dir.join("docker"), client.address()).await {
            Ok(mut d) => {
                if let Some(pid) = d.pid() {
                    meter.add_daemon(pid);
                }
                match d
                    .load(
                        &tarballs,
                        config.contenders.contains(&Contender::DockerExec),
                    )
                    .await
                {
                    Ok(()) => docker = Some(d),
                    Err(e) => {
                        notes.extend(d.stop().await);
                        skip(config, notes, &docker_set, e.to_string());
                    }
                }
            }
            Err(e) => skip(config, notes, &docker_set, e.to_string()),
        }
    }
    let mut podman = None;
    if want_podman {
        progress("loading the image into podman");
        match Podman::start(&config.work_dir.join("podman"), &tarballs).await {
            Ok(p) => podman = Some(p),
            Err(e) => skip(config, notes, &[Contender::PodmanRun], e.to_string()),
        }
    }
    let _ = std::fs::remove_dir_all(config.work_dir.join("engines"));
    (docker, podman)
}

/// Drops `which` from the measured contenders, noting why.
fn skip(config: &mut BenchConfig, notes: &mut Vec<String>, which: &[Contender], why: String) {
    for c in which {
        notes.push(format!("{} skipped: {why}", c.name()));
    }
    config.contenders.retain(|c| !which.contains(c));
}

/// `docker exec CONTAINER ARGS…` through `cli` (a docker CLI command aimed at one server)
/// into the long-lived container `containers` holds for `w`'s image, timed end to end;
/// `what` names the contender in errors.
pub(super) async fn docker_exec(
    mut cli: Command,
    containers: &BTreeMap<String, String>,
    w: &Workload,
    what: &str,
) -> Result<Sample, BenchError> {
    let id = containers
        .get(&w.image)
        .ok_or_else(|| BenchError::Setup(format!("{what}: no container for {}", w.image)))?;
    cli.arg("exec").arg(id).args(&w.args);
    let (dt, out) = timed(cli, what).await?;
    check_output(w, &out, what)?;
    Ok(Sample::end_to_end(dt))
}

/// `docker rm -f` of every container in `containers`, each through a fresh `cli()`; what
/// could not be removed is added to `notes`.
pub(super) async fn remove_containers(
    cli: impl Fn() -> Command,
    containers: &BTreeMap<String, String>,
    what: &str,
    notes: &mut Vec<String>,
) {
    for id in containers.values() {
        let mut cmd = cli();
        cmd.args(["rm", "-f", id]);
        if let Err(e) = setup_cmd(cmd, "docker rm").await {
            notes.push(format!("{what} container {id}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::loaded_name;

    #[test]
    fn the_loaded_image_name_is_read_from_either_engine() {
        let cases = [
            ("Loaded image: stockade/busybox:latest\n", Some("stockade/busybox:latest")),
            (
                "Getting image source signatures\nCopying blob 1a2b\nLoaded image(s): localhost/stockade/busybox:latest\n",
                Some("localhost/stockade/busybox:latest"),
            ),
            ("Loaded image(s): a:1,b:2\n", Some("a:1")),
            ("Loaded image ID: sha256:abc\n", Some("sha256:abc")),
            ("nothing here\n", None),
            ("Loaded image: \n", None),
        ];
        for (out, want) in cases {
            assert_eq!(loaded_name(out).as_deref(), want, "{out:?}");
        }
    }
}
