//! The real Python Docker SDK (`docker` from PyPI, in stockade's venv) against
//! `stockade serve` on a private socket over a private containerd: the call sequence agent
//! frameworks use (`containers.create` with tmpfs, volumes, dropped capabilities,
//! no-new-privileges, pids and ulimits; `start`; a `reload` loop until `exited`; `logs`;
//! `remove(force=True)`), `containers.run` attached and detached, `exec_run`,
//! `images.list`, `images.load`, `ping` and `version`, each step checked by the script
//! (tests/fixtures/docker_py/sdk.py), and nothing left behind.

mod common;
mod docker_support;

use std::path::PathBuf;
use std::process::Command;

use docker_support::{docker_cli, Env};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/docker_py/sdk.py"
);

/// The venv's python when it has the `docker` package (root, containerd and runc too).
fn python() -> Option<PathBuf> {
    common::venv_python("drives stockade serve with the Python Docker SDK", "docker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdks_call_sequences_run_unchanged() {
    let Some(python) = python() else { return };
    let mut env = Env::start(docker_cli().unwrap_or_default(), None).await;
    let ws = env.dir.path().join("binds/ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(1000), Some(1000)).unwrap();
    // An archive to load: the built-in busybox under another name.
    let client = env.c.client("stockade").await;
    let image = stockade::images::archive::export(&client, "stockade/busybox")
        .await
        .unwrap();
    let archive = env.dir.path().join("pyloaded.tar");
    stockade::images::archive::write_oci_layout(&archive, "docker.io/library/pyloaded:1", &image)
        .unwrap();

    let out = Command::new(&python)
        .arg(SCRIPT)
        .env("DOCKER_HOST", format!("unix://{}", env.socket().display()))
        .env("WS", &ws)
        .env("ARCHIVE", &archive)
        .output()
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let steps: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        steps,
        [
            "ok ping",
            "ok version",
            "ok get_archive-stopped",
            "ok create-start-reload-logs-remove",
            "ok run-attached",
            "ok run-detached",
            "ok exec_run",
            "ok images",
            "ok nothing-left",
        ],
        "{stderr}"
    );
    env.assert_no_leftovers().await;
    env.stop();
}
