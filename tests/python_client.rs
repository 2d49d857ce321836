//! The Python client (`clients/python`, import name `stockade`) installed into stockade's
//! venv (`$STOCKADE_VENV`, /opt/stockade-venv) and its own tests (pytest) run against a
//! real `stockade serve --http` over a private containerd (root; with `CI=true` nothing
//! skips): on a Unix socket (sandboxes, commands, streams, files, errors, the async API;
//! the package typed under `mypy --strict`), over TLS on a loopback port (the client
//! trusting the server's CA; plain HTTP to that port gets no HTTP answer), and against a
//! server with the code interpreter. `stockade serve` refuses a key that is not the
//! certificate's, an unreadable file, and a network address without TLS, each in one line
//! naming the flag (exit 125).

mod common;
mod http_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use http_support::{Addr, Env, Listen, ALICE, BIN, BOB};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

/// The venv's python with what the client and its tests need (root, containerd and runc
/// too), the client installed from this tree (once per process; no network: its build
/// backend and dependencies are in the venv, as scripts/setup.sh puts them).
fn python() -> Option<PathBuf> {
    let python = common::venv().join("bin/python");
    let shown = python.to_string_lossy().into_owned();
    if !common::require_or_skip(
        "runs the Python client's tests against stockade serve --http",
        &["/usr/bin/containerd", "/usr/sbin/runc", &shown],
    ) {
        return None;
    }
    let probe = "import httpx, pytest, pytest_asyncio, mypy, hatchling";
    let has = Command::new(&python)
        .args(["-c", probe])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        let why = format!(
            "{shown} lacks httpx, pytest, pytest-asyncio, mypy or hatchling (scripts/setup.sh installs them)"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("skipping: {why}");
        return None;
    }
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*installed {
        let out = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-build-isolation"])
            .args(["--no-deps", "--no-index", "--force-reinstall", CLIENT])
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip install {CLIENT}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        *installed = true;
    }
    Some(python)
}

/// Runs pytest on `files` of the client's tests with `env`; every test must pass and none
/// may skip. Nothing is written into the source tree (no cache, no bytecode).
fn pytest(python: &Path, files: &[&str], env: &[(&str, String)]) {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs"])
        .args(files.iter().map(|f| format!("tests/{f}")))
        .current_dir(CLIENT)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("STOCKADE_URL")
        .env_remove("STOCKADE_TOKEN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pytest");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "pytest {files:?} failed:\n{report}");
    let summary = report.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && !summary.contains("skipped"),
        "{summary}"
    );
}

/// The connection the tests read, with Alice's token and Bob's as the other.
fn connection(url: String) -> Vec<(&'static str, String)> {
    vec![
        ("STOCKADE_URL", url),
        ("STOCKADE_TOKEN", ALICE.to_string()),
        ("STOCKADE_TEST_OTHER_TOKEN", BOB.to_string()),
    ]
}

fn unix_url(env: &Env) -> String {
    let Addr::Unix(p) = &env.addr else {
        unreachable!("the server listens on a Unix socket")
    };
    format!("unix://{}", p.display())
}

/// Alice's sandboxes left on the server (the tests remove what they make).
fn left(env: &Env) -> usize {
    let a = env.alice("GET", "/v1/sandboxes", serde_json::Value::Null);
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["sandboxes"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_tests_pass_against_the_server() {
    let Some(python) = python() else { return };
    let mut env = Env::start(false).await;

    // The package and its tests are typed.
    let mypy = Command::new(&python)
        .args(["-m", "mypy", "--strict", "--cache-dir"])
        .arg(env.dir.path().join("mypy-cache"))
        .args(["src/stockade", "tests"])
        .current_dir(CLIENT)
        .output()
        .expect("run mypy");
    assert!(
        mypy.status.success(),
        "mypy --strict: {}",
        String::from_utf8_lossy(&mypy.stdout)
    );

    pytest(
        &python,
        &[
            "test_units.py",
            "test_sandbox.py",
            "test_errors.py",
            "test_async.py",
        ],
        &connection(unix_url(&env)),
    );
    assert_eq!(left(&env), 0, "the client removed every sandbox it made");
    env.stop_and_check().await;
}

/// A self-signed certificate for 127.0.0.1 and its key, made by openssl in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=stockade-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_speaks_https_to_a_tls_server() {
    let Some(python) = python() else { return };
    if !common::require_or_skip("makes a certificate", &["/usr/bin/openssl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let mut env = Env::start_with(Listen::Tls {
        cert: cert.clone(),
        key,
    })
    .await;
    let Addr::Tcp(port) = env.addr else {
        unreachable!("the server listens on TCP")
    };

    // Plain HTTP to the TLS port: no HTTP answer, only the connection's end (after a TLS
    // alert at most), and nothing started.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(http_support::PATIENCE)).unwrap();
    let asked = format!(
        "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let _ = s.write_all(asked.as_bytes());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(env.run_dirs(), Vec::<String>::new(), "nothing started");

    let mut vars = connection(format!("https://127.0.0.1:{port}"));
    vars.push(("STOCKADE_TEST_CA", cert.to_string_lossy().into_owned()));
    pytest(&python, &["test_tls.py"], &vars);
    env.stop_and_check().await;
}

/// `stockade serve` with `args` after `--http ADDR --token-file FILE`: exit 125 and one
/// line on stderr, which is returned.
fn refused(addr: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{ALICE} alice\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--http", addr, "--token-file"])
        .arg(&tokens)
        .args(args)
        .arg("--fifo-root")
        .arg(dir.path().join("fifo"))
        .stdin(Stdio::null())
        .output()
        .expect("run stockade serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(125), "{addr} {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("fifo").exists(), "nothing started");
    stderr
}

#[test]
fn serve_refuses_bad_tls_files_and_clear_text_network_addresses() {
    let cert = format!("{FIXTURES}/cert.pem");
    let key = format!("{FIXTURES}/key.pem");
    let other = format!("{FIXTURES}/other-key.pem");
    let missing = format!("{FIXTURES}/missing.pem");
    let cases: [(&str, Vec<&str>, String); 5] = [
        (
            "0.0.0.0:8443",
            vec![],
            "stockade: --http 0.0.0.0:8443: only loopback addresses are served without TLS"
                .to_string(),
        ),
        (
            "127.0.0.1:0",
            vec!["--tls-cert", &cert, "--tls-key", &other],
            format!(
                "stockade: --tls-key {other}: does not fit the certificate of --tls-cert {cert}"
            ),
        ),
        (
            "127.0.0.1:0",
            vec!["--tls-cert", &missing, "--tls-key", &key],
            format!("stockade: --tls-cert {missing}: "),
        ),
        (
            "127.0.0.1:0",
            vec!["--tls-cert", &cert, "--tls-key", &missing],
            format!("stockade: --tls-key {missing}: "),
        ),
        (
            "127.0.0.1:0",
            vec!["--tls-cert", &key, "--tls-key", &key],
            format!("stockade: --tls-cert {key}: no `BEGIN CERTIFICATE` block"),
        ),
    ];
    for (addr, args, want) in cases {
        let got = refused(addr, &args);
        assert!(got.starts_with(&want), "{addr} {args:?}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_code_keeps_state_through_the_python_client() {
    let Some(python) = python() else { return };
    if !common::require_or_skip(
        "builds the python image for the code interpreter",
        &["/usr/bin/mmdebstrap"],
    ) {
        return;
    }
    let mut env = Env::start(false).await;
    let client = env.c.client("stockade").await;
    stockade::images::build::build(
        &client,
        "python",
        None,
        &stockade::images::build::BuildHost::system(),
        &stockade::images::NoProgress,
    )
    .await
    .unwrap_or_else(|e| panic!("build the python image: {e}"));
    let mut vars = connection(unix_url(&env));
    vars.push(("STOCKADE_TEST_PYTHON_IMAGE", "stockade/python".to_string()));
    pytest(&python, &["test_run_code.py"], &vars);
    assert_eq!(left(&env), 0, "the client removed every sandbox it made");
    env.stop_and_check().await;
}
