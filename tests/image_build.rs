//! `stockade image build -f Dockerfile -t NAME CONTEXT` against a real (private)
//! containerd, through the binary: every supported instruction, the result run and read
//! back; an unchanged rebuild served from the cache (proven by a random marker a RUN wrote);
//! a failing RUN, a COPY out of the context and an unsupported instruction each refused
//! with exit 125 and their line; and nothing left behind (containers, active snapshots,
//! leases) after success or failure. One containerd for the whole binary.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};
use containerd_client::services::v1::{ListContainersRequest, ListRequest as ListLeasesRequest};
use stockade::containerd::Client;
use stockade::images::{self, oci, store};
use tokio_stream::StreamExt;

const BIN: &str = env!("CARGO_BIN_EXE_stockade");
const NS: &str = "stockade-build-test";

struct Env<'a> {
    socket: &'a Path,
    cache: &'a Path,
    fifo: &'a Path,
}

fn build(env: &Env, dockerfile: &Path, context: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["image", "build", "--namespace", NS, "--address"])
        .arg(env.socket)
        .arg("--cache-dir")
        .arg(env.cache)
        .arg("-f")
        .arg(dockerfile)
        .args(extra)
        .arg(context)
        .stdin(Stdio::null())
        .output()
        .expect("run stockade image build")
}

fn run(env: &Env, image: &str, cmd: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "run",
            "--namespace",
            NS,
            "--no-run-log",
            "--cleanup",
            "inline",
        ])
        .arg("--address")
        .arg(env.socket)
        .arg("--fifo-root")
        .arg(env.fifo)
        // The built image's ENTRYPOINT would prefix the command; these runs read files.
        .args(["--entrypoint", "", "--image", image, "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run stockade run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a build or run may not leave behind: containers, active snapshots, leases.
async fn leftovers(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    let containers = client
        .containers()
        .list(client.request(ListContainersRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    out.extend(
        containers
            .into_iter()
            .map(|c| format!("container {}", c.id)),
    );
    let mut s = client
        .snapshots()
        .list(client.request(ListSnapshotsRequest {
            snapshotter: images::SNAPSHOTTER.to_string(),
            filters: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = s.next().await {
        for i in m.unwrap().info {
            if i.kind != Kind::Committed as i32 {
                out.push(format!("snapshot {}", i.name));
            }
        }
    }
    let leases = client
        .leases()
        .list(client.request(ListLeasesRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner()
        .leases;
    out.extend(leases.into_iter().map(|l| format!("lease {}", l.id)));
    out
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A gzip tarball holding `a/inside.txt`.
fn tarball(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(7);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "a/inside.txt", &b"inside\n"[..])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

const DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=stockade/busybox
FROM ${BASE}
ARG GREETING=hello
ENV APP_HOME=/app \
    MODE="two words"
LABEL org.example.name=demo version=1
WORKDIR ${APP_HOME}
COPY --chown=1000:1000 hello.txt ./
COPY dir/ sub/
ADD files.tar.gz /opt/
COPY . /ctx/
RUN echo "$GREETING from $MODE" > greeting && \
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > marker && \
    id -u > run-uid && pwd > run-pwd
USER 1000:1000
EXPOSE 8080 53/udp
SHELL ["/bin/sh", "-c"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/echo", "entry"]
CMD ["default-arg"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockerfile_builds_run_cache_and_refuse_with_their_line() {
    if !common::require_root_or_skip("Dockerfile builds need containerd") {
        return;
    }
    let c = common::PrivateContainerd::start().await;
    let client = c.client(NS).await;
    common::busybox_image(&client).await;
    let dir = tempfile::Builder::new()
        .prefix("stk-build-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (cache, fifo, ctx) = (
        dir.path().join("cache"),
        dir.path().join("fifo"),
        dir.path().join("ctx"),
    );
    let env = Env {
        socket: c.address(),
        cache: &cache,
        fifo: &fifo,
    };
    write(&ctx, "hello.txt", "hello file\n");
    write(&ctx, "dir/inner.txt", "inner\n");
    write(&ctx, "secret.txt", "do not copy\n");
    write(&ctx, ".dockerignore", "secret.txt\n");
    tarball(&ctx.join("files.tar.gz"));
    write(&ctx, "Dockerfile", DOCKERFILE);
    let df = ctx.join("Dockerfile");

    // The first build runs every step.
    let out = build(
        &env,
        &df,
        &ctx,
        &["-t", "demo:1", "--build-arg", "GREETING=hi"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("5 layer steps, 0 cached"), "{summary}");
    assert_eq!(leftovers(&client).await, Vec::<String>::new());

    // Files, owners, .dockerignore, the extracted archive, what RUN saw.
    let out = run(
        &env,
        "demo:1",
        &[
            "sh",
            "-c",
            "cat /app/hello.txt /app/sub/inner.txt /opt/a/inside.txt /app/greeting /app/run-uid /app/run-pwd; \
             stat -c %u:%g /app/hello.txt; test -e /ctx/secret.txt && echo LEAKED; cat /ctx/hello.txt",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello file\ninner\ninside\nhi from two words\n0\n/app\n1000:1000\nhello file\n"
    );

    // The image config: env, user, workdir, entrypoint, cmd, labels, ports, signal.
    let image = images::resolve(&client, "demo:1").await.unwrap();
    assert!(image.config.env.contains(&"APP_HOME=/app".to_string()));
    assert!(image.config.env.contains(&"MODE=two words".to_string()));
    assert_eq!(image.config.working_dir, "/app");
    assert_eq!(image.config.user, "1000:1000");
    assert_eq!(image.config.entrypoint, vec!["/bin/echo", "entry"]);
    assert_eq!(image.config.cmd, vec!["default-arg"]);
    let manifest: oci::Manifest = serde_json::from_slice(
        &store::read_blob(&client, &image.manifest_digest)
            .await
            .unwrap(),
    )
    .unwrap();
    let config: oci::ImageConfigFile = serde_json::from_slice(
        &store::read_blob(&client, &manifest.config.digest)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config.config.labels["org.example.name"], "demo");
    assert_eq!(config.config.labels["version"], "1");
    assert!(config.config.exposed_ports.contains_key("8080/tcp"));
    assert!(config.config.exposed_ports.contains_key("53/udp"));
    assert_eq!(config.config.stop_signal, "SIGTERM");
    // The base's layer plus one per COPY, ADD and RUN.
    assert_eq!(manifest.layers.len(), 6);
    let marker = |image: &str| {
        let out = run(&env, image, &["cat", "/app/marker"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let first = marker("demo:1");
    assert_eq!(first.len(), 32, "{first}");

    // An unchanged rebuild: every layer step cached, the RUN did not run again (its random
    // marker is the same), the same manifest.
    let t = Instant::now();
    let out = build(
        &env,
        &df,
        &ctx,
        &["-t", "demo:2", "--build-arg", "GREETING=hi"],
    );
    let rebuild = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("5 layer steps, 5 cached"),
        "{}",
        text(&out.stdout)
    );
    eprintln!(
        "cached rebuild: {:.3}s (stockade image build, wall)",
        rebuild.as_secs_f64()
    );
    assert_eq!(marker("demo:2"), first);
    let again = images::resolve(&client, "demo:2").await.unwrap();
    assert_eq!(again.manifest_digest, image.manifest_digest);
    // A changed source file re-runs its COPY and every step after it.
    write(&ctx, "dir/inner.txt", "changed\n");
    let out = build(
        &env,
        &df,
        &ctx,
        &["-t", "demo:3", "--build-arg", "GREETING=hi"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("5 layer steps, 1 cached"),
        "{}",
        text(&out.stdout)
    );
    assert_ne!(marker("demo:3"), first);

    // Failures: exit 125, one line naming the Dockerfile and line; nothing left behind.
    std::fs::write(dir.path().join("secret-outside"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("link-out")).unwrap();
    let cases = [
        (
            "FROM stockade/busybox\nRUN echo step-output-$((1+1)) && exit 3\n",
            ":2: RUN exited with 3: step-output-2",
        ),
        (
            "FROM stockade/busybox\nCOPY ../secret-outside /x\n",
            ":2: COPY ../secret-outside: outside the build context",
        ),
        (
            "FROM stockade/busybox\n\nCOPY link-out /x\n",
            ":3: COPY link-out: outside the build context",
        ),
        (
            "FROM stockade/busybox\nVOLUME /data\n",
            ":2: VOLUME is not supported",
        ),
        (
            "FROM stockade/busybox\nADD https://example.com/x /x\n",
            ":2: ADD https://example.com/x: only local files",
        ),
    ];
    for (i, (dockerfile, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("Dockerfile.{i}"));
        std::fs::write(&path, dockerfile).unwrap();
        let out = build(&env, &path, &ctx, &["-t", "bad"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{dockerfile}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("stockade: {}{want}", path.display())),
            "{dockerfile}: {stderr}"
        );
        assert_eq!(
            leftovers(&client).await,
            Vec::<String>::new(),
            "{dockerfile}"
        );
    }
    // The failing RUN's output was shown.
    let out = build(&env, &dir.path().join("Dockerfile.0"), &ctx, &["-t", "bad"]);
    assert!(
        text(&out.stderr).contains("step-output-2\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(images::resolve(&client, "bad").await.is_err());
}
