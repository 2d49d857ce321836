//! Images through `stockade serve` with the real `docker` CLI, over a private containerd
//! and a private `docker-registry` on 127.0.0.1: save, load (OCI layout and `docker save`
//! tarballs), tag, rmi (refused for an image a container uses, and for the built-in
//! `stockade/` names), pull; then events, system df, container prune and the restart
//! refusal. Nothing is left behind.

mod common;
mod docker_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use docker_support::{ready, Env};
use stockade::images::{self, store, NoProgress};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A `docker-registry` of the test's own (plain HTTP, no auth), stopped by PID when
/// dropped.
struct Registry {
    _dir: tempfile::TempDir,
    child: Child,
    host: String,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        // Liveness guard only.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            _dir: dir,
            child,
            host,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `docker save`-shaped tarball of `image` named `tag`, with `extra_env` added to its
/// config (so it is an image of its own, with its own id).
fn write_docker_save(out: &Path, image: &store::PreparedImage, tag: &str, extra_env: &str) {
    let mut config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    config["config"]["Env"]
        .as_array_mut()
        .unwrap()
        .push(extra_env.into());
    let config = serde_json::to_vec(&config).unwrap();
    common::write_docker_save(out, &config, image, tag, <[u8]>::to_vec);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_save_load_tag_rmi_pull_events_df_and_prune() {
    let Some(cli) = ready() else { return };
    if !common::require_or_skip("pulls through stockade serve", &[REGISTRY]) {
        return;
    }
    let registry = Registry::start();
    let mut env = Env::start_args(cli, None, &["--plain-http", &registry.host]).await;
    let dir = env.dir.path().to_path_buf();
    let t0 = now_secs();

    // save, then load the OCI layout back under the name it carries.
    let saved = dir.join("busybox.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "busybox"]);
    assert!(std::fs::metadata(&saved).unwrap().len() > 0);
    let o = env.ok(&["rmi", "busybox"]);
    assert!(o.contains("Untagged: busybox:latest"), "{o}");
    let o = env.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert!(o.contains("Loaded image: busybox:latest"), "{o}");
    let o = env.ok(&["run", "--rm", "busybox", "echo", "back"]);
    assert_eq!(o, "back\n");

    // tag; the built-in names are neither written nor removed.
    env.ok(&["tag", "busybox", "mine:1"]);
    let names = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(names.lines().any(|l| l == "mine:1"), "{names}");
    let o = env.docker(&["tag", "busybox", "stockade/evil"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("reserved for stockade's built-in images"),
        "{}",
        o.stderr
    );
    let o = env.docker(&["rmi", "stockade/busybox"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr
            .contains("stockade/busybox:latest: a built-in image"),
        "{}",
        o.stderr
    );
    env.ok(&["rmi", "mine:1"]);

    // A docker-save tarball of an image of its own; not removed while a container uses it.
    let client = env.c.client("stockade").await;
    let exported = images::archive::export(&client, "stockade/busybox")
        .await
        .unwrap();
    let solo = dir.join("solo.tar");
    write_docker_save(&solo, &exported, "solo:1", "SOLO=1");
    let o = env.ok(&["load", "-i", solo.to_str().unwrap()]);
    assert!(o.contains("Loaded image: solo:1"), "{o}");
    assert_eq!(
        env.ok(&["run", "--rm", "solo:1", "sh", "-c", "echo $SOLO"]),
        "1\n"
    );
    env.ok(&["run", "-d", "--name", "holder", "solo:1", "sleep", "300"]);
    let o = env.docker(&["rmi", "solo:1"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("is using its referenced image"),
        "{}",
        o.stderr
    );
    env.ok(&["rm", "-f", "holder"]);
    let o = env.ok(&["rmi", "solo:1"]);
    assert!(
        o.contains("Untagged: solo:1") && o.contains("Deleted: sha256:"),
        "{o}"
    );

    // pull from the registry (pushed there by the library, then removed here).
    let pushed = format!("{}/pushed:1", registry.host);
    images::tag(&client, "stockade/busybox", &pushed)
        .await
        .unwrap();
    let opts = images::registry::RegistryOptions {
        plain_http: vec![registry.host.clone()],
        ..Default::default()
    };
    images::registry::push(&client, &pushed, &opts, &NoProgress)
        .await
        .unwrap();
    images::remove(&client, &pushed).await.unwrap();
    let o = env.ok(&["pull", &pushed]);
    assert!(
        o.contains(&format!("Downloaded newer image for {pushed}")),
        "{o}"
    );
    assert_eq!(
        env.ok(&["run", "--rm", &pushed, "echo", "pulled"]),
        "pulled\n"
    );
    let o = env.docker(&["pull", &format!("{}/missing:1", registry.host)]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("not found"), "{}", o.stderr);
    env.ok(&["rmi", &pushed]);

    // events: a container's life, filtered by type and container.
    env.ok(&["run", "--rm", "--name", "evjob", "busybox", "true"]);
    let o = env.ok(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        &(now_secs() + 1).to_string(),
        "--filter",
        "type=container",
        "--filter",
        "container=evjob",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert_eq!(
        o.lines().collect::<Vec<_>>(),
        [
            "container create evjob",
            "container start evjob",
            "container die evjob",
            "container destroy evjob"
        ]
    );
    let o = env.docker(&[
        "events",
        "--filter",
        "label=x",
        "--until",
        &now_secs().to_string(),
    ]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("filters: `label` is not supported"),
        "{}",
        o.stderr
    );

    // Followed live: `docker events` with no bounds prints each event as it happens.
    let mut follower = Command::new(&env.cli)
        .args([
            "events",
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}}",
        ])
        .env("DOCKER_HOST", format!("unix://{}", env.socket().display()))
        .env("DOCKER_CONFIG", dir.join("docker-config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut live = std::io::BufReader::new(follower.stdout.take().unwrap());
    // Until the follower is subscribed, a run may go unseen: run until one is seen
    // (bounded), then stop the follower by PID.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut l = String::new();
        let _ = std::io::BufRead::read_line(&mut live, &mut l);
        let _ = tx.send(l);
    });
    let mut seen = None;
    for _ in 0..20 {
        env.ok(&["run", "--rm", "--name", "live", "busybox", "true"]);
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            seen = Some(l);
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert_eq!(seen.as_deref(), Some("live\n"));

    // system df; container prune; restart refused.
    let o = env.ok(&["system", "df"]);
    assert!(o.contains("Images") && o.contains("Containers"), "{o}");
    env.ok(&["create", "--name", "never-started", "busybox", "true"]);
    env.ok(&["run", "--name", "exited", "busybox", "true"]);
    env.ok(&["run", "-d", "--name", "running", "busybox", "sleep", "300"]);
    let o = env.docker(&["restart", "running"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("not supported by stockade serve"),
        "{}",
        o.stderr
    );
    let o = env.ok(&["container", "prune", "-f"]);
    assert_eq!(
        o.lines().filter(|l| l.starts_with("stk-")).count(),
        2,
        "{o}"
    );
    let left = env.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(left.trim(), "running");
    env.ok(&["rm", "-f", "running"]);

    env.assert_no_leftovers().await;
    env.stop();
}
