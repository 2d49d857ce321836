//! The native HTTP API (`stockade serve --http`) over a private containerd (root; with
//! `CI=true` nothing skips), driven by plain HTTP/1.1 on its Unix socket: no token or a
//! wrong one is 401 with nothing started; a sandbox is created, execs stream NDJSON,
//! files are written and read back, state is kept between requests, and it is deleted;
//! policies and quotas are refused naming the field; oversize bodies are 413; a path
//! leading out of the sandbox reads nothing of the host; every answer has a request id;
//! the metrics parse; and nothing is left behind after the server stops. A token's pool
//! fills, serves its runs and drains to nothing; other tokens neither see nor drain it; a
//! fill past a quota or the server's policy is refused with nothing started.

mod common;
mod http_support;

use std::process::{Command, Stdio};

use common::require_or_skip;
use http_support::{Addr, Env, ALICE, BOB};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_end_to_end() {
    if !require_or_skip(
        "drives stockade serve --http over a private containerd",
        &["/usr/bin/containerd", "/usr/sbin/runc"],
    ) {
        return;
    }
    let mut env = Env::start(false).await;

    // Unauthenticated: health and the OpenAPI document, each with a request id.
    let h = env.call("GET", "/v1/health", None, b"");
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    let rid = h.header("x-request-id").expect("a request id").to_string();
    assert!(rid.starts_with("req-"), "{rid}");
    let doc = env.call("GET", "/openapi.json", None, b"");
    assert_eq!(doc.status, 200);
    assert!(doc.json()["openapi"].as_str().unwrap().starts_with("3.1"));
    let again = env.call("GET", "/v1/health", None, b"");
    assert_ne!(
        again.header("x-request-id"),
        Some(rid.as_str()),
        "ids differ"
    );

    // No token, a wrong one, another scheme: 401, and nothing is started.
    let create = serde_json::json!({}).to_string();
    for token in [
        None,
        Some("wrong-token-0123456789abcdef"),
        Some(&ALICE[..20]),
    ] {
        let a = env.call("POST", "/v1/sandboxes", token, create.as_bytes());
        assert_eq!(a.status, 401, "{token:?}: {}", a.text());
        assert_eq!(a.json()["error"]["code"], "unauthorized");
        assert!(a.header("x-request-id").is_some());
        let r = env.call("POST", "/v1/run", token, br#"{"argv":["true"]}"#);
        assert_eq!(r.status, 401);
    }
    assert_eq!(env.run_dirs(), Vec::<String>::new(), "nothing started");
    let v = env.alice("GET", "/v1/version", serde_json::Value::Null);
    assert_eq!((v.status, v.json()["api"].as_str()), (200, Some("v1")));

    // Requests refused naming the field.
    let refusals = [
        (
            serde_json::json!({"policy": {"limits": {"memory": "1Gi"}}}),
            403,
            "policy.limits.memory",
        ),
        (
            serde_json::json!({"policy": {"limits": {"memory": "lots"}}}),
            400,
            "policy.limits.memory",
        ),
        (
            serde_json::json!({"policy": {"filesystem": {"workspace": "/etc"}}}),
            403,
            "policy.filesystem.workspace",
        ),
        (serde_json::json!({"lifetime": "soon"}), 400, "lifetime"),
        (serde_json::json!({"colour": "red"}), 400, "colour"),
    ];
    for (body, status, field) in refusals {
        let a = env.alice("POST", "/v1/sandboxes", body.clone());
        assert_eq!(a.status, status, "{body}: {}", a.text());
        assert_eq!(a.error_field().as_deref(), Some(field), "{body}");
    }
    assert_eq!(env.run_dirs(), Vec::<String>::new(), "nothing started");

    // Create; a second one past the memory quota is refused naming the field.
    let a = env.alice("POST", "/v1/sandboxes", serde_json::json!({"name": "one"}));
    assert_eq!(a.status, 201, "{}", a.text());
    let id = a.json()["id"].as_str().unwrap().to_string();
    let q = env.alice(
        "POST",
        "/v1/sandboxes",
        serde_json::json!({"policy": {"limits": {"memory": "256Mi"}}}),
    );
    assert_eq!(q.status, 429, "{}", q.text());
    assert_eq!(q.error_field().as_deref(), Some("policy.limits.memory"));
    // Another token neither sees nor drives it.
    let b = env.call("GET", &format!("/v1/sandboxes/{id}"), Some(BOB), b"");
    assert_eq!(b.status, 404);
    let l = env.call("GET", "/v1/sandboxes", Some(BOB), b"");
    assert_eq!(l.json()["sandboxes"].as_array().unwrap().len(), 0);
    let l = env.alice("GET", "/v1/sandboxes", serde_json::Value::Null);
    assert_eq!(l.json()["sandboxes"][0]["id"], id.as_str());

    // A streamed exec: chunks, then one exit record.
    let s = env.alice(
        "POST",
        &format!("/v1/sandboxes/{id}/exec/stream"),
        serde_json::json!({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    );
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(s.header("content-type"), Some("application/x-ndjson"));
    let records: Vec<serde_json::Value> = s
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let joined = |kind: &str| -> String {
        records
            .iter()
            .filter(|r| r["type"] == kind)
            .map(|r| r["data"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        (joined("stdout"), joined("stderr")),
        ("out\n".into(), "err\n".into())
    );
    let last = records.last().unwrap();
    assert_eq!(last["type"], "exit", "{records:?}");
    assert_eq!(
        (last["exit_code"].as_u64(), last["timed_out"].as_bool()),
        (Some(3), Some(false))
    );
    assert_eq!(last["oom_killed"], false);

    // State is kept between requests; files written are read back, by API and by exec.
    let exec = |argv: serde_json::Value| {
        let a = env.alice(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            serde_json::json!({"argv": argv}),
        );
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    };
    exec(serde_json::json!(["sh", "-c", "echo 41 > /tmp/x"]));
    assert_eq!(exec(serde_json::json!(["cat", "/tmp/x"]))["stdout"], "41\n");
    let w = env.call(
        "PUT",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/hello.txt"),
        Some(ALICE),
        b"hi there\n",
    );
    assert_eq!(w.status, 201, "{}", w.text());
    let r = env.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/hello.txt"),
        Some(ALICE),
        b"",
    );
    assert_eq!((r.status, r.text()), (200, "hi there\n".to_string()));
    assert_eq!(
        exec(serde_json::json!(["cat", "/tmp/hello.txt"]))["stdout"],
        "hi there\n"
    );
    let st = env.alice(
        "GET",
        &format!("/v1/sandboxes/{id}/files/stat?path=/tmp/hello.txt"),
        serde_json::Value::Null,
    );
    assert_eq!(
        (st.json()["kind"].as_str(), st.json()["size"].as_u64()),
        (Some("file"), Some(9))
    );
    let m = env.alice(
        "POST",
        &format!("/v1/sandboxes/{id}/files/mkdir?path=/tmp/d"),
        serde_json::Value::Null,
    );
    assert_eq!(m.status, 201, "{}", m.text());
    let ls = env.alice(
        "GET",
        &format!("/v1/sandboxes/{id}/files/list?path=/tmp"),
        serde_json::Value::Null,
    );
    let names: Vec<String> = ls.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["d", "hello.txt", "x"], "{}", ls.text());
    let tar = env.call(
        "GET",
        &format!("/v1/sandboxes/{id}/archive?path=/tmp/d"),
        Some(ALICE),
        b"",
    );
    assert_eq!(tar.status, 200);
    let mut archive = tar::Archive::new(&tar.body[..]);
    let first = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        first
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/'),
        "d"
    );
    let del = env.alice(
        "DELETE",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/hello.txt"),
        serde_json::Value::Null,
    );
    assert_eq!(del.status, 204, "{}", del.text());
    let gone = env.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/hello.txt"),
        Some(ALICE),
        b"",
    );
    assert_eq!(gone.status, 404, "{}", gone.text());

    // A path leading out of the sandbox reads nothing of the host's: a host file of the
    // test's, named by a symbolic link made in the sandbox and by `..`, is not found.
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, "host secret").unwrap();
    let host_path = secret.to_string_lossy().into_owned();
    exec(serde_json::json!(["ln", "-s", host_path, "/tmp/esc"]));
    exec(serde_json::json!([
        "ln",
        "-s",
        "../../../../../..",
        "/tmp/up"
    ]));
    for p in [
        "/tmp/esc".to_string(),
        format!("/tmp/up{host_path}"),
        format!("/tmp/../../../..{host_path}"),
    ] {
        let a = env.call(
            "GET",
            &format!("/v1/sandboxes/{id}/files?path={p}"),
            Some(ALICE),
            b"",
        );
        // Not there (404), or not a directory inside the sandbox after an earlier write
        // here (409): never the host's file.
        assert!(matches!(a.status, 404 | 409), "{p}: {}", a.text());
        assert!(!a.text().contains("host secret"), "{p}");
        // Written, if at all, inside the sandbox (a link is replaced, not followed).
        env.call(
            "PUT",
            &format!("/v1/sandboxes/{id}/files?path={p}"),
            Some(ALICE),
            b"x",
        );
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
    let rel = env.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files?path=tmp/x"),
        Some(ALICE),
        b"",
    );
    assert_eq!(
        (rel.status, rel.error_field().as_deref()),
        (400, Some("path"))
    );

    // Bodies past the limit are 413.
    let big = vec![b'x'; 2 << 20];
    let a = env.call(
        "PUT",
        &format!("/v1/sandboxes/{id}/files?path=/tmp/big"),
        Some(ALICE),
        &big,
    );
    assert_eq!(a.status, 413, "{}", a.text());

    // A one-shot run answers `stockade run --json`'s document.
    let run = env.alice(
        "POST",
        "/v1/run",
        serde_json::json!({"argv": ["echo", "hi"], "policy": {"limits": {"memory": "64Mi"}}}),
    );
    assert_eq!(run.status, 200, "{}", run.text());
    assert_eq!(
        (
            run.json()["exit_code"].as_u64(),
            run.json()["stdout"].as_str()
        ),
        (Some(0), Some("hi\n"))
    );

    // Metrics parse as Prometheus text.
    let m = env.alice("GET", "/v1/metrics", serde_json::Value::Null);
    assert_eq!(m.status, 200);
    let text = m.text();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    assert!(
        text.contains("stockade_sandbox_starts_total{kind=\"sandbox\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("stockade_runs_total{result=\"ok\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("stockade_sandboxes_alive 1\n"), "{text}");

    // Extend, delete; a second sandbox is left for the server to remove when it stops.
    let x = env.alice(
        "POST",
        &format!("/v1/sandboxes/{id}/extend"),
        serde_json::json!({"by": "10m"}),
    );
    assert_eq!(x.status, 200, "{}", x.text());
    assert!(x.json()["expires_unix_ms"].as_u64().is_some());
    let d = env.alice(
        "DELETE",
        &format!("/v1/sandboxes/{id}"),
        serde_json::Value::Null,
    );
    assert_eq!(d.status, 204);
    let g = env.alice(
        "GET",
        &format!("/v1/sandboxes/{id}"),
        serde_json::Value::Null,
    );
    assert_eq!(g.status, 404);
    let left = env.alice("POST", "/v1/sandboxes", serde_json::json!({}));
    assert_eq!(left.status, 201, "{}", left.text());
    env.stop_and_check().await;
}

/// The containers left in the server's namespace.
async fn containers(env: &Env) -> Vec<String> {
    use stockade::containerd::Containerd;
    let client = env.c.client("stockade").await;
    let mut ids: Vec<String> = client
        .list_containers(vec![])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

/// Polls `what` until `done` holds of it (a liveness bound, never a speed claim).
async fn until<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    mut what: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = std::time::Instant::now();
    loop {
        let v = what().await;
        if done(&v) || start.elapsed() > http_support::PATIENCE {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_fill_serve_runs_and_drain_to_nothing() {
    if !require_or_skip(
        "drives pools of stockade serve --http over a private containerd",
        &["/usr/bin/containerd", "/usr/sbin/runc"],
    ) {
        return;
    }
    let mut env = Env::start(false).await;

    // Refused with nothing started: a policy wider than the server's (403), more members
    // than the token's two sandboxes, more memory than its 400Mi (429).
    let refusals = [
        (
            serde_json::json!({"size": 1, "policy": {"limits": {"memory": "1Gi"}}}),
            403,
            "policy.limits.memory",
        ),
        (serde_json::json!({"size": 3}), 429, "size"),
        (serde_json::json!({"size": 2}), 429, "policy.limits.memory"),
        (serde_json::json!({"size": 0}), 400, "size"),
        (
            serde_json::json!({"size": 1, "colour": "red"}),
            400,
            "colour",
        ),
    ];
    for (body, status, field) in refusals {
        let a = env.alice("POST", "/v1/pools", body.clone());
        assert_eq!(a.status, status, "{body}: {}", a.text());
        assert_eq!(a.error_field().as_deref(), Some(field), "{body}");
    }
    assert_eq!(env.run_dirs(), Vec::<String>::new(), "nothing started");
    assert_eq!(containers(&env).await, Vec::<String>::new());
    let l = env.alice("GET", "/v1/pools", serde_json::Value::Null);
    assert_eq!(l.json()["pools"], serde_json::json!([]));

    // Fill one; it shows its ready member.
    let small = serde_json::json!({"limits": {"memory": "64Mi"}});
    let f = env.alice(
        "POST",
        "/v1/pools",
        serde_json::json!({"size": 1, "policy": small}),
    );
    assert_eq!(f.status, 201, "{}", f.text());
    let id = f.json()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("pool-"), "{id}");
    assert_eq!(f.json()["size"], 1);
    let again = env.alice(
        "POST",
        "/v1/pools",
        serde_json::json!({"size": 1, "policy": small}),
    );
    assert_eq!(
        (again.status, again.error_field().as_deref()),
        (409, Some("policy"))
    );
    let path = format!("/v1/pools/{id}");
    let st = until(
        || async { env.alice("GET", &path, serde_json::Value::Null).json() },
        |v| v["ready"] == 1,
    )
    .await;
    assert_eq!(st["ready"], 1, "{st}");
    assert_eq!(st["image"], f.json()["image"]);
    let l = env.alice("GET", "/v1/pools", serde_json::Value::Null);
    assert_eq!(l.json()["pools"][0]["id"], id.as_str());

    // Another token neither sees nor drains it.
    for (method, p) in [("GET", path.as_str()), ("DELETE", path.as_str())] {
        let b = env.call(method, p, Some(BOB), b"");
        assert_eq!((b.status, b.error_field().as_deref()), (404, Some("id")));
    }
    let b = env.call("GET", "/v1/pools", Some(BOB), b"");
    assert_eq!(b.json()["pools"], serde_json::json!([]));
    let b = env.call(
        "POST",
        "/v1/run",
        Some(BOB),
        serde_json::json!({"argv": ["true"], "policy": small})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["pooled"], false, "bob's run never takes alice's");

    // The member counts toward the quota: with it and a sandbox, a third is refused.
    let sb = env.alice(
        "POST",
        "/v1/sandboxes",
        serde_json::json!({"policy": small}),
    );
    assert_eq!(sb.status, 201, "{}", sb.text());
    let third = env.alice(
        "POST",
        "/v1/sandboxes",
        serde_json::json!({"policy": small}),
    );
    assert_eq!(third.status, 429, "{}", third.text());
    let sid = sb.json()["id"].as_str().unwrap().to_string();
    let d = env.alice(
        "DELETE",
        &format!("/v1/sandboxes/{sid}"),
        serde_json::Value::Null,
    );
    assert_eq!(d.status, 204);

    // A run under its policy takes the ready member; under another, it runs cold.
    let run = env.alice(
        "POST",
        "/v1/run",
        serde_json::json!({"argv": ["echo", "warm"], "policy": small}),
    );
    assert_eq!(run.status, 200, "{}", run.text());
    assert_eq!(
        (
            run.json()["pooled"].as_bool(),
            run.json()["stdout"].as_str()
        ),
        (Some(true), Some("warm\n"))
    );
    let cold = env.alice("POST", "/v1/run", serde_json::json!({"argv": ["true"]}));
    assert_eq!(cold.status, 200, "{}", cold.text());
    assert_eq!(cold.json()["pooled"], false);
    let st = env.alice("GET", &path, serde_json::Value::Null).json();
    assert_eq!(st["taken"], 1, "{st}");

    // Drained: every member removed, and nothing of the pool's or the runs' is left.
    let d = env.alice("DELETE", &path, serde_json::Value::Null);
    assert_eq!(d.status, 200, "{}", d.text());
    assert_eq!(d.json()["id"], id.as_str());
    let g = env.alice("GET", &path, serde_json::Value::Null);
    assert_eq!(g.status, 404);
    let left = until(|| containers(&env), Vec::is_empty).await;
    assert_eq!(left, Vec::<String>::new(), "the census after the drain");
    let dirs = until(|| async { env.run_dirs() }, Vec::is_empty).await;
    assert_eq!(dirs, Vec::<String>::new());
    // The quota is given back: two members fit again.
    let f = env.alice(
        "POST",
        "/v1/pools",
        serde_json::json!({"size": 2, "policy": small}),
    );
    assert_eq!(f.status, 201, "{}", f.text());

    // A pool still filled when the server stops is drained by it.
    env.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_pool_is_reclaimed_by_the_next() {
    if !require_or_skip(
        "kills stockade serve --http over a private containerd",
        &["/usr/bin/containerd", "/usr/sbin/runc"],
    ) {
        return;
    }
    let mut env = Env::start(false).await;
    let small = serde_json::json!({"size": 2, "policy": {"limits": {"memory": "64Mi"}}});
    let f = env.alice("POST", "/v1/pools", small.clone());
    assert_eq!(f.status, 201, "{}", f.text());
    let path = format!("/v1/pools/{}", f.json()["id"].as_str().unwrap());
    let st = until(
        || async { env.alice("GET", &path, serde_json::Value::Null).json() },
        |v| v["ready"] == 2,
    )
    .await;
    assert_eq!(st["ready"], 2, "{st}");
    assert_eq!(containers(&env).await.len(), 2);
    env.kill_and_restart();
    // The new server removed what the dead one's pool held, before answering.
    assert_eq!(containers(&env).await, Vec::<String>::new());
    assert_eq!(env.run_dirs(), Vec::<String>::new());
    let g = env.alice("GET", &path, serde_json::Value::Null);
    assert_eq!(g.status, 404);
    // And the token's quota is whole in the new server: a pool of two fits.
    let f = env.alice("POST", "/v1/pools", small);
    assert_eq!(f.status, 201, "{}", f.text());
    env.stop_and_check().await;
}

/// schemathesis (`$STOCKADE_VENV`, /opt/stockade-venv by default) fuzzes the running
/// server from its own OpenAPI document: no answer may be a 5xx or differ from the
/// document's schema. Bounded in examples and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_or_schema_mismatch() {
    let venv = common::venv();
    let st = venv.join("bin/st");
    let st_text = st.to_string_lossy().into_owned();
    if !require_or_skip(
        "fuzzes stockade serve --http with schemathesis (scripts/setup.sh installs it)",
        &["/usr/bin/containerd", "/usr/sbin/runc", &st_text],
    ) {
        return;
    }
    let mut env = Env::start(true).await;
    let Addr::Tcp(port) = env.addr else {
        unreachable!()
    };
    let out = Command::new(&st)
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/openapi.json"))
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "15", "--max-time", "60", "--seed", "1"])
        .args(["--request-timeout", "60", "--workers", "1"])
        .args(["--header", &format!("Authorization: Bearer {ALICE}")])
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache and reports go to the test's directory, not the source tree.
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis failed:\n{report}");
    env.stop_and_check().await;
}
