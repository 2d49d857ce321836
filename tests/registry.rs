//! Pull and push against a real OCI registry (Debian's `docker-registry`, started by each
//! test on 127.0.0.1 with a generated config: basic auth from a bcrypt htpasswd file, plain
//! HTTP or TLS with a self-signed certificate) and a real private containerd. Push a
//! stockade image, remove it, pull it back, run it; a tampered blob, a missing tag, a wrong
//! password and an unreachable registry each end in exit 125 and one line.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_image, require_or_skip, PrivateContainerd};
use stockade::images::oci::{self, Descriptor};
use stockade::images::store;
use stockade::images::{self, NoProgress};

const BIN: &str = env!("CARGO_BIN_EXE_stockade");
const REGISTRY: &str = "/usr/bin/docker-registry";
const USER: &str = "tester";
const PASSWORD: &str = "correct horse";

/// A `docker-registry` of the test's own, stopped by PID when dropped.
struct Registry {
    dir: tempfile::TempDir,
    child: Child,
    /// `127.0.0.1:PORT`
    host: String,
    tls: bool,
}

/// A bcrypt hash of `password` (the registry's htpasswd accepts only bcrypt), made with
/// Python's `crypt` over the system's libcrypt, so no extra package is needed.
fn bcrypt(password: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .expect("python3");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2"), "no bcrypt from crypt(3): {hash:?}");
    hash
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    fn start(tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("htpasswd"), format!("{USER}:{}\n", bcrypt(PASSWORD))).unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let tls_section = if tls {
            let st = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem"))
                .stderr(Stdio::null())
                .status()
                .expect("openssl");
            assert!(st.success());
            format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("cert.pem").display(),
                d.join("key.pem").display()
            )
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{tls_section}auth:\n  htpasswd:\n    realm: stockade-test\n    path: {htpasswd}\n",
            data = d.join("data").display(),
            htpasswd = d.join("htpasswd").display(),
        );
        std::fs::write(d.join("config.yml"), config).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(std::fs::File::create(d.join("registry.log")).unwrap())
            .stderr(std::fs::File::create(d.join("registry.err")).unwrap())
            .spawn()
            .expect("start docker-registry");
        // Liveness guard only: wait until it accepts connections (at most 30 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            dir,
            child,
            host,
            tls,
        }
    }

    /// The flags that reach this registry: plain HTTP or its self-signed certificate.
    fn reach(&self) -> Vec<String> {
        let flag = if self.tls {
            "--insecure"
        } else {
            "--plain-http"
        };
        vec![flag.to_string(), self.host.clone()]
    }

    /// The file holding the blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// `stockade ARGS --address SOCKET --namespace NS [-- CMD]`, `password` on stdin.
fn stockade(d: &PrivateContainerd, ns: &str, args: &[&str], password: Option<&str>) -> Output {
    let (args, cmd_args) = match args.iter().position(|a| *a == "--") {
        Some(i) => (&args[..i], &args[i..]),
        None => (args, &[][..]),
    };
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--address")
        .arg(d.address())
        .arg("--namespace")
        .arg(ns)
        .args(cmd_args)
        .env("DOCKER_CONFIG", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = password {
        writeln!(stdin, "{p}").unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// A pull or push with the registry's reach flags and credentials.
fn transfer(
    d: &PrivateContainerd,
    ns: &str,
    r: &Registry,
    verb: &str,
    reference: &str,
    password: &str,
) -> Output {
    let reach = r.reach();
    let mut args = vec![
        "image",
        verb,
        reference,
        "--username",
        USER,
        "--password-stdin",
    ];
    args.extend(reach.iter().map(String::as_str));
    stockade(d, ns, &args, Some(password))
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit 125 and exactly one error line on stderr, the last, containing `needle` (progress
/// lines of layers that did arrive may come before it).
fn refused(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("stockade:")).collect();
    assert_eq!(errors.len(), 1, "not one error line: {err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "{err}");
    assert!(errors[0].contains(needle), "{needle:?} not in: {err}");
    assert!(
        err.lines()
            .all(|l| l.starts_with("stockade:") || l.contains(": layer ")),
        "{err}"
    );
}

/// A layer holding one file `/<name>` with `content`, zstd-compressed (by the `zstd`
/// tool) when `zstd`, else gzip: (blob, diff id).
fn layer(name: &str, content: &[u8], zstd: bool) -> (Vec<u8>, String) {
    let tar = common::layered::tar_of(&[(name, content)]);
    let diff_id = oci::sha256_digest(&tar);
    if !zstd {
        return (common::layered::gzip(&tar), diff_id);
    }
    let mut child = Command::new("zstd")
        .args(["-q", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    (out.stdout, diff_id)
}

/// The built-in busybox plus `extra` layers, each adding `/layer<i>.txt` (`size` bytes of
/// incompressible data each; `/layer1.txt` in a zstd layer, the others gzip), stored as
/// `name`.
async fn multi_layer_image(
    client: &stockade::containerd::Client,
    name: &str,
    extra: usize,
    size: usize,
) -> images::ImageRef {
    let base = images::archive::export(client, "stockade/busybox")
        .await
        .unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut layers = Vec::new();
    for i in 0..extra {
        let data: Vec<u8> = (0..size)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        // The second extra layer is zstd-compressed, the others gzip.
        let zstd = i == 1;
        let (blob, diff_id) = layer(&format!("layer{i}.txt"), &data, zstd);
        let media_type = if zstd {
            oci::MEDIA_LAYER_ZSTD
        } else {
            oci::MEDIA_LAYER_GZIP
        };
        layers.push((blob, diff_id, media_type));
    }
    let prepared = common::layered::with_layers(&base, layers);
    let canonical = images::normalize_name(name).unwrap();
    store::store_image(client, &canonical, &prepared, &NoProgress)
        .await
        .unwrap()
}

fn needs() -> bool {
    require_or_skip(
        "registry pull and push",
        &[
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            REGISTRY,
            "/usr/bin/python3",
        ],
    )
}

fn run_in(d: &PrivateContainerd, ns: &str, image: &str, cmd: &[&str]) -> Output {
    let fifo = tempfile::tempdir().unwrap();
    let mut args = vec!["run", "--no-audit-log", "--image", image];
    let fifo_root = fifo.path().join("fifo");
    let fifo_root = fifo_root.to_str().unwrap().to_string();
    args.extend(["--fifo-root", &fifo_root, "--"]);
    args.extend(cmd);
    stockade(d, ns, &args, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_remove_pull_run_over_plain_http_with_basic_auth() {
    if !needs() {
        return;
    }
    let d = PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    busybox_image(&client).await;
    let reg = Registry::start(false);
    let name = format!("{}/multi:1", reg.host);
    let layers = 6;
    let local = multi_layer_image(&client, &name, layers - 1, 4 << 20).await;

    let out = transfer(&d, "stockade", &reg, "push", &name, PASSWORD);
    let pushed = ok(&out);
    assert!(
        pushed.starts_with(&format!("{name} {}", local.manifest_digest)),
        "{pushed}"
    );
    assert!(
        pushed.contains(&format!("({} blobs sent, 0 already there", layers + 1)),
        "{pushed}"
    );
    // A second push sends nothing new.
    let again = ok(&transfer(&d, "stockade", &reg, "push", &name, PASSWORD));
    assert!(
        again.contains(&format!("(0 blobs sent, {} already there", layers + 1)),
        "{again}"
    );

    ok(&stockade(&d, "stockade", &["image", "rm", &name], None));
    assert!(images::resolve(&client, &name).await.is_err());

    // Pulled into a namespace that has none of its blobs: every layer is downloaded but
    // busybox's, which containerd holds for the built-in image (in another namespace).
    let t = Instant::now();
    let out = transfer(&d, "fresh", &reg, "pull", &name, PASSWORD);
    let secs = t.elapsed().as_secs_f64();
    let pulled = ok(&out);
    eprintln!(
        "pull of {layers} layers (busybox 2 MiB + {} x 4 MiB random, gzip) from 127.0.0.1: {secs:.2}s",
        layers - 1
    );
    assert!(
        pulled.starts_with(&format!(
            "{name} {} chain {}",
            local.manifest_digest, local.chain_id
        )),
        "{pulled}"
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        progress
            .lines()
            .filter(|l| l.contains(": downloaded in"))
            .count(),
        layers - 1,
        "one progress line per layer: {progress}"
    );
    let fresh = client.in_namespace("fresh");
    let got = images::resolve(&fresh, &name).await.unwrap();
    assert_eq!(got.manifest_digest, local.manifest_digest);
    assert_eq!(got.chain_id, local.chain_id);
    let run = run_in(
        &d,
        "fresh",
        &name,
        &[
            "sh",
            "-c",
            "wc -c /layer0.txt /layer1.txt /layer4.txt; echo ran",
        ],
    );
    let text = ok(&run);
    assert!(text.contains("4194304 /layer0.txt"), "{text}");
    assert!(
        text.contains("4194304 /layer1.txt"),
        "{text} (the zstd layer)"
    );
    assert!(text.contains("4194304 /layer4.txt"), "{text}");
    assert!(text.ends_with("ran\n"), "{text}");

    // Pulling what is there downloads nothing and changes nothing.
    let out = transfer(&d, "fresh", &reg, "pull", &name, PASSWORD);
    ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        progress.matches("already in the content store").count(),
        layers,
        "{progress}"
    );

    // Errors: one line and 125 each.
    refused(
        &transfer(&d, "errors", &reg, "pull", &name, "wrong password"),
        "authentication failed",
    );
    refused(
        &transfer(
            &d,
            "errors",
            &reg,
            "pull",
            &format!("{}/multi:nope", reg.host),
            PASSWORD,
        ),
        "not found in the registry",
    );
    refused(
        &stockade(&d, "errors", &["image", "pull", &name], None),
        "no TLS there",
    );
    let closed = format!("127.0.0.1:{}", free_port());
    refused(
        &stockade(
            &d,
            "errors",
            &[
                "image",
                "pull",
                &format!("{closed}/x:1"),
                "--plain-http",
                &closed,
            ],
            None,
        ),
        "unreachable",
    );
    refused(
        &stockade(
            &d,
            "errors",
            &["image", "pull", &name, "--plain-http", "ghcr.io"],
            None,
        ),
        "--plain-http: `ghcr.io` is not the registry of",
    );
    refused(
        &stockade(&d, "errors", &["image", "pull", "stockade/busybox"], None),
        "is reserved for stockade's built-in images",
    );
}

/// A layer whose bytes in the registry do not match its digest is refused with nothing
/// recorded; with the right bytes back the same pull succeeds; a download cut half-way is
/// continued from where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blobs_are_refused_and_interrupted_downloads_resume() {
    if !needs() {
        return;
    }
    let d = PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    busybox_image(&client).await;
    let reg = Registry::start(false);
    let name = format!("{}/victim:1", reg.host);
    let local = multi_layer_image(&client, &name, 3, 1 << 20).await;
    let victim = images::archive::export(&client, &name)
        .await
        .unwrap()
        .layers[2]
        .descriptor
        .digest
        .clone();
    ok(&transfer(&d, "stockade", &reg, "push", &name, PASSWORD));
    // Removed (and collected): containerd holds none of its own layers any more, so
    // every pull below downloads them.
    ok(&stockade(&d, "stockade", &["image", "rm", &name], None));

    // A blob changed in the registry's storage is refused, and nothing is recorded.

    let file = reg.blob_file(&victim);
    let good = std::fs::read(&file).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    refused(
        &transfer(&d, "tampered", &reg, "pull", &name, PASSWORD),
        "do not match the digest",
    );
    assert!(images::list(&client.in_namespace("tampered"))
        .await
        .unwrap()
        .is_empty());
    std::fs::write(&file, &good).unwrap();

    // An interrupted download is resumed: half a layer written, then the source fails.
    let ns = client.in_namespace("resume");
    let desc = Descriptor::new(oci::MEDIA_LAYER_GZIP, &good);
    let ingest = store::new_download_ref(&desc.digest);
    let half = good.len() / 2;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::copy_from_slice(&good[..half])),
        Err(std::io::Error::other("connection cut")),
    ];
    let source = futures_util::StreamExt::boxed(futures_util::stream::iter(chunks));
    let cut = store::write_stream(
        &ns,
        &desc,
        &ingest,
        |_| async { Ok(source) },
        Default::default(),
        &|_| {},
    )
    .await;
    assert!(
        matches!(cut, Err(store::StreamError::Source { written, .. }) if written == half as u64),
        "{cut:?}"
    );
    assert_eq!(
        store::ingest_offset(&ns, &ingest).await.unwrap(),
        half as u64
    );
    let out = transfer(&d, "resume", &reg, "pull", &name, PASSWORD);
    ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains(&format!("resumed at byte {half}")),
        "{progress}"
    );
    let got = images::resolve(&ns, &name).await.unwrap();
    assert_eq!(got.chain_id, local.chain_id);
    // With the right bytes back, the pull that was refused succeeds.
    ok(&transfer(&d, "tampered", &reg, "pull", &name, PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate_needs_insecure_for_that_registry() {
    if !needs() || !require_or_skip("a self-signed certificate", &["/usr/bin/openssl"]) {
        return;
    }
    let d = PrivateContainerd::start().await;
    let client = d.client("stockade").await;
    busybox_image(&client).await;
    let reg = Registry::start(true);
    let name = format!("{}/box:tls", reg.host);
    ok(&stockade(
        &d,
        "stockade",
        &["image", "tag", "stockade/busybox", &name],
        None,
    ));
    let pushed = ok(&transfer(&d, "stockade", &reg, "push", &name, PASSWORD));
    assert!(pushed.starts_with(&name), "{pushed}");
    // HTTPS by default: the self-signed certificate is refused without --insecure.
    let out = stockade(
        &d,
        "tls",
        &[
            "image",
            "pull",
            &name,
            "--username",
            USER,
            "--password-stdin",
        ],
        Some(PASSWORD),
    );
    refused(&out, &reg.host);
    let pulled = ok(&transfer(&d, "tls", &reg, "pull", &name, PASSWORD));
    assert!(pulled.starts_with(&name), "{pulled}");
    let text = ok(&run_in(&d, "tls", &name, &["echo", "over tls"]));
    assert_eq!(text, "over tls\n");
}
