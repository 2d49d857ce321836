//! Support shared by the integration tests (`mod common;`): the root/CI gate, a private
//! containerd per test under a short tempdir, the busybox base image in it, golden files,
//! the tests' Python venv; the CLI as a user runs it ([`cli`]), what a containerd holds
//! ([`census`]), and the fake host policies are validated against ([`policy_env`]).
#![allow(dead_code)]

pub mod census;
pub mod cli;
pub mod layered;
pub mod policy_env;

use std::path::{Path, PathBuf};
use std::time::Duration;

use stockade::containerd::daemon::{self, DaemonPaths};
use stockade::containerd::Client;

/// True when the test can run. When the host lacks what it needs (not root, or a binary in
/// `needs` missing) it prints `skipping: <reason>` and returns false, except on CI
/// (`CI=true`), where nothing may skip: there it panics instead.
pub fn require_root_or_skip(reason: &str) -> bool {
    require_or_skip(reason, &["/usr/bin/containerd", "/usr/sbin/runc"])
}

/// The Python venv with the tests' PyPI packages (`scripts/setup.sh` makes it):
/// `$STOCKADE_VENV`, by default /opt/stockade-venv.
pub fn venv() -> PathBuf {
    std::env::var_os("STOCKADE_VENV")
        .map_or_else(|| PathBuf::from("/opt/stockade-venv"), PathBuf::from)
}

/// Like [`require_root_or_skip`], with an explicit list of binaries the test needs.
pub fn require_or_skip(reason: &str, needs: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    for bin in needs {
        if !Path::new(bin).exists() {
            missing.push(bin.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    skip(&format!("{reason}: needs {}", missing.join(", ")))
}

/// Skips the test, printing `skipping: <why>`, and returns false; on CI (`CI=true`),
/// where nothing may skip, panics instead.
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true forbids skipping: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// The venv's python when the test can run: root, containerd and runc (as
/// [`require_root_or_skip`]), and a python in [`venv`] that imports `module`
/// (`scripts/setup.sh` installs it). Otherwise `None`, having skipped saying why.
pub fn venv_python(reason: &str, module: &str) -> Option<PathBuf> {
    if !require_root_or_skip(reason) {
        return None;
    }
    let venv = venv();
    let python = venv.join("bin/python");
    let has = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if has {
        return Some(python);
    }
    skip(&format!(
        "no Python `{module}` package in {} (scripts/setup.sh installs it)",
        venv.display()
    ));
    None
}

/// `got` must equal the golden file at `path` (`what` names what `got` is, for the
/// message); with `UPDATE_GOLDEN` set, the file is written from `got` instead.
pub fn assert_golden(path: &Path, got: &str, what: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("a golden file's directory"))
            .expect("create the golden directory");
        std::fs::write(path, got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {} (run with UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert!(
        got == want,
        "{} differs from {what}; review the change and rerun with UPDATE_GOLDEN=1",
        path.display()
    );
}

/// A containerd of the test's own (root, state, socket under `/tmp/stk-XXXXXX`). Dropping
/// it kills its shims (and their containers) by PID, stops the daemon by PID, unmounts
/// whatever is left mounted under its base and removes the base.
pub struct PrivateContainerd {
    base: tempfile::TempDir,
    paths: DaemonPaths,
    pid: i32,
}

impl PrivateContainerd {
    /// Starts the daemon and waits until it answers.
    pub async fn start() -> PrivateContainerd {
        PrivateContainerd::start_with(|_, _| {}).await
    }

    /// Like [`PrivateContainerd::start`], after `configure` has adjusted the daemon's paths
    /// and settings (it gets them and the tempdir everything lives under).
    pub async fn start_with(configure: impl FnOnce(&mut DaemonPaths, &Path)) -> PrivateContainerd {
        // Short on purpose: Unix socket paths must stay under 108 bytes.
        let base = tempfile::Builder::new()
            .prefix("stk-")
            .tempdir_in("/tmp")
            .expect("create /tmp/stk-* tempdir");
        let mut paths = DaemonPaths::under(base.path());
        configure(&mut paths, base.path());
        let pid = daemon::ensure_running(&paths)
            .await
            .unwrap_or_else(|e| panic!("start private containerd: {e}"));
        PrivateContainerd { base, paths, pid }
    }

    /// The socket to connect to.
    pub fn address(&self) -> &Path {
        &self.paths.socket
    }

    /// The daemon's paths (root, state, log, ...).
    pub fn paths(&self) -> &DaemonPaths {
        &self.paths
    }

    /// The daemon's PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The tempdir everything lives under.
    pub fn base(&self) -> &Path {
        self.base.path()
    }

    /// A client of this daemon in `namespace`.
    pub async fn client(&self, namespace: &str) -> Client {
        Client::connect(self.address(), namespace)
            .await
            .unwrap_or_else(|e| panic!("connect to private containerd: {e}"))
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        // Shims outlive containerd; end only those serving this daemon, by PID.
        let shims = daemon::kill_shims(&self.paths.proc_root, &self.paths.socket);
        // The runc v2 shim keeps runc state under /run/containerd/runc/<namespace>/<id>.
        for shim in &shims {
            if let (Some(ns), Some(id)) = (&shim.namespace, &shim.id) {
                let dir = PathBuf::from("/run/containerd/runc").join(ns).join(id);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        if let Err(e) = daemon::stop(&self.paths, Duration::from_secs(5)) {
            eprintln!("stopping private containerd {}: {e}", self.pid);
        }
        let _ = daemon::unmount_under(Path::new("/proc/self/mountinfo"), self.base.path());
        // TempDir's own drop removes the directory.
    }
}

/// The busybox base image in `client`'s containerd and namespace: resolved when it is
/// there, built from `rootfs/busybox.*` first when it is not (so once per containerd).
pub async fn busybox_image(client: &Client) -> stockade::images::ImageRef {
    use stockade::images::{self, build, ImageError, NoProgress};
    match images::resolve(client, "stockade/busybox").await {
        Ok(r) => r,
        Err(ImageError::NotFound { .. } | ImageError::NotUnpacked { .. }) => {
            build::build(
                client,
                "busybox",
                None,
                &build::BuildHost::system(),
                &NoProgress,
            )
            .await
            .unwrap_or_else(|e| panic!("build busybox: {e}"))
            .image
        }
        Err(e) => panic!("resolve busybox: {e}"),
    }
}

/// Sends SIGTERM to a server this test started (by its pid) and waits, for at most
/// `patience` (a liveness guard, not a speed claim), until it exits; it must exit 0.
pub fn terminate_server(server: &mut std::process::Child, patience: Duration) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            assert!(status.success(), "stockade serve exited {status}");
            return;
        }
        assert!(start.elapsed() < patience, "stockade serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes a `docker save` archive of `image` to `out`, as `docker save IMAGE` lays one
/// out: `config` (which may differ from the image's own) under its sha256 name, each of
/// the image's layers (read into memory) passed through `layer` as `layerN/layer.tar`, and
/// a `manifest.json` naming `tag`.
pub fn write_docker_save(
    out: &Path,
    config: &[u8],
    image: &stockade::images::store::PreparedImage,
    tag: &str,
    layer: impl Fn(&[u8]) -> Vec<u8>,
) {
    use std::io::Write;
    use stockade::images::{oci, store::BlobSource};
    let mut b = tar::Builder::new(std::fs::File::create(out).expect("create the archive"));
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data)
            .expect("append to the archive");
    };
    let config_name = format!("{}.json", &oci::sha256_digest(config)[7..]);
    add(&config_name, config);
    let mut layers = Vec::new();
    for (i, l) in image.layers.iter().enumerate() {
        let BlobSource::Bytes(bytes) = &l.source else {
            panic!("export reads into memory")
        };
        let path = format!("layer{i}/layer.tar");
        add(&path, &layer(bytes));
        layers.push(path);
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layers,
    }]);
    add("manifest.json", manifest.to_string().as_bytes());
    b.into_inner()
        .expect("finish the archive")
        .flush()
        .expect("flush the archive");
}

/// For a harness's `Drop`: when the server this test started (`server`) still runs, kills
/// it (SIGKILL, by its pid), waits for it, and unmounts whatever it left mounted under
/// `dir` (a test that failed midway leaves the killed server's sandboxes: their containerd
/// objects go with the private containerd, their mounts, such as a writable root's
/// volume, here).
pub fn kill_server(server: &mut std::process::Child, dir: &Path) {
    if server.try_wait().ok().flatten().is_none() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = server.wait();
        let _ = daemon::unmount_under(Path::new("/proc/self/mountinfo"), dir);
    }
}
