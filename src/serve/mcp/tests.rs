use serde_json::{json, Value};

use super::*;
use crate::containerd::fake::FakeContainerd;
use crate::policy::{HostPolicyEnv, Policy, PolicyOverrides};

/// A server over the fake containerd with `policy_toml` as its policy.
fn server(dir: &std::path::Path, policy_toml: &str, max: usize) -> Arc<McpServer> {
    let proc_root = dir.join("proc");
    std::fs::create_dir_all(&proc_root).unwrap();
    let policy: Policy = toml::from_str(policy_toml).unwrap();
    let ceiling = policy
        .clone()
        .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
        .unwrap();
    let fake = FakeContainerd::new().proc_root(&proc_root);
    fake.add_base(&ceiling.image);
    let runner = fake.runner_builder(dir, &proc_root).build().unwrap();
    let sandboxes = Sandboxes::new(runner).installed_init(dir.join("init/stockade-init"));
    let server = ServerPolicy {
        policy,
        ceiling,
        allow_bind: Vec::new(),
    };
    Arc::new(McpServer::new(sandboxes, server, max))
}

/// The answers to `lines`, sent as one stdin, in the order they came.
async fn exchange(s: Arc<McpServer>, lines: &[Value]) -> Vec<Value> {
    let mut input = String::new();
    for l in lines {
        input.push_str(&l.to_string());
        input.push('\n');
    }
    let (w, mut r) = tokio::io::duplex(1 << 20);
    s.serve(input.as_bytes(), w, std::future::pending())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut r, &mut out)
        .await
        .unwrap();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn req(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn init() -> Value {
    req(
        0,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    )
}

fn by_id(answers: &[Value], id: u64) -> &Value {
    answers
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("no answer {id} in {answers:?}"))
}

#[test]
fn initialize_answers_the_clients_revision_or_the_newest() {
    for (asked, want) in [
        (json!("2025-06-18"), "2025-06-18"),
        (json!("2024-11-05"), "2024-11-05"),
        (json!("2026-07-28"), "2025-11-25"),
        (Value::Null, "2025-11-25"),
    ] {
        let r = initialize_result(&json!({ "protocolVersion": asked }));
        assert_eq!(r["protocolVersion"], want, "{asked}");
        assert!(r["capabilities"]["tools"].is_object());
        assert_eq!(r["serverInfo"]["name"], "stockade");
    }
}

#[test]
fn tools_list_shows_every_tool_of_the_table_with_its_schema() {
    let r = tools_list();
    let tools = r["tools"].as_array().unwrap();
    assert_eq!(tools.len(), tools::TOOLS.len());
    for (t, listed) in tools::TOOLS.iter().zip(tools) {
        assert_eq!(listed["name"], t.name);
        assert_eq!(listed["inputSchema"], (t.input_schema)());
    }
}

#[test]
fn a_malformed_tools_call_is_a_protocol_error_naming_the_param() {
    let cases = [
        (json!({}), "params.name: required"),
        (json!({"name": 3}), "params.name: required"),
        (json!({"name": "nope"}), "params.name: no tool `nope`"),
        (
            json!({"name": "exec", "arguments": [1]}),
            "params.arguments: must be an object",
        ),
    ];
    for (p, want) in cases {
        let e = call_params(&p).err().unwrap();
        assert!(e.starts_with(want), "{p}: {e}");
    }
    let (t, a) = call_params(&json!({"name": "list_sandboxes"})).unwrap();
    assert_eq!((t.name, a), ("list_sandboxes", Value::Null));
}

#[tokio::test]
async fn lines_past_the_limit_are_skipped_and_the_next_one_read() {
    let mut input = vec![b'x'; MAX_MESSAGE + 10];
    input.extend_from_slice(b"\n{\"a\":1}\nlast");
    let mut r = &input[..];
    let mut buf = Vec::new();
    assert!(matches!(
        read_line(&mut r, &mut buf).await.unwrap(),
        Some(Line::TooLong)
    ));
    assert!(
        matches!(read_line(&mut r, &mut buf).await.unwrap(), Some(Line::Text(t)) if t == "{\"a\":1}")
    );
    assert!(
        matches!(read_line(&mut r, &mut buf).await.unwrap(), Some(Line::Text(t)) if t == "last")
    );
    assert!(read_line(&mut r, &mut buf).await.unwrap().is_none());
}

#[tokio::test]
async fn the_protocol_over_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), "[limits]\nmemory = \"256Mi\"\n", 4);
    let answers = exchange(
        s,
        &[
            req(1, "tools/list", json!({})),
            init(),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            req(2, "server/discover", json!({})),
            req(3, "ping", json!({})),
            req(4, "tools/list", json!({})),
            req(5, "tools/call", json!({"name": "nope", "arguments": {}})),
            json!("not an object"),
        ],
    )
    .await;
    // The notification gets no answer; everything else one each.
    assert_eq!(answers.len(), 7, "{answers:?}");
    assert_eq!(
        by_id(&answers, 1)["error"]["code"],
        jsonrpc::INVALID_REQUEST
    );
    assert_eq!(
        by_id(&answers, 0)["result"]["protocolVersion"],
        "2025-06-18"
    );
    assert_eq!(
        by_id(&answers, 2)["error"]["code"],
        jsonrpc::METHOD_NOT_FOUND
    );
    assert_eq!(by_id(&answers, 3)["result"], json!({}));
    assert_eq!(
        by_id(&answers, 4)["result"]["tools"]
            .as_array()
            .unwrap()
            .len(),
        tools::TOOLS.len()
    );
    assert_eq!(by_id(&answers, 5)["error"]["code"], jsonrpc::INVALID_PARAMS);
    assert!(answers
        .iter()
        .any(|a| a["id"].is_null() && a["error"]["code"] == jsonrpc::INVALID_REQUEST));
}

/// Calls refused before anything is made: each a tool error (`isError`) of one line
/// naming what is at fault.
#[tokio::test]
async fn calls_asking_more_than_the_policy_grants_are_tool_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        dir.path(),
        "[limits]\nmemory = \"256Mi\"\ntimeout = \"1m\"\n",
        4,
    );
    let calls = [
        (
            json!({"name": "run_command", "arguments": {"command": "x", "policy": {"limits": {"memory": "1Gi"}}}}),
            "policy.limits.memory:",
        ),
        (
            json!({"name": "run_command", "arguments": {"command": "x", "timeout": "2m"}}),
            "timeout:",
        ),
        (
            json!({"name": "run_command", "arguments": {"command": "x", "policy": {"limits": {"timeout": "2m"}}}}),
            "policy.limits.timeout:",
        ),
        (
            json!({"name": "create_sandbox", "arguments": {"policy": {"network": {"mode": "egress"}}}}),
            "policy.network.mode:",
        ),
        (
            json!({"name": "create_sandbox", "arguments": {"policy": {"filesystem": {"workspace": "/etc"}}}}),
            "policy.filesystem.workspace:",
        ),
        (
            json!({"name": "create_sandbox", "arguments": {"policy": {"security": {"cap_add": ["SYS_ADMIN"]}}}}),
            "policy.security.cap_add:",
        ),
        (
            json!({"name": "create_sandbox", "arguments": {"lifetime": "forever"}}),
            "lifetime:",
        ),
        (
            json!({"name": "exec", "arguments": {"sandbox": "stk-nope", "command": "x"}}),
            "sandbox: no sandbox `stk-nope`",
        ),
        (
            json!({"name": "write_file", "arguments": {"sandbox": "a", "path": "/f", "content": "!", "encoding": "base64"}}),
            "content: not base64",
        ),
        (
            json!({"name": "run_command", "arguments": {"command": "x", "bogus": true}}),
            "bogus:",
        ),
    ];
    let mut lines = vec![init()];
    for (i, (c, _)) in calls.iter().enumerate() {
        lines.push(req(i as u64 + 1, "tools/call", c.clone()));
    }
    let answers = exchange(s, &lines).await;
    for (i, (c, want)) in calls.iter().enumerate() {
        let r = &by_id(&answers, i as u64 + 1)["result"];
        assert_eq!(r["isError"], true, "{c}: {r}");
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with(want), "{c}: {text}");
        assert!(!text.contains('\n'));
    }
}

#[tokio::test]
async fn a_server_at_its_limit_refuses_more_sandboxes_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), "", 0);
    let answers = exchange(
        s,
        &[
            init(),
            req(
                1,
                "tools/call",
                json!({"name": "run_command", "arguments": {"command": "true"}}),
            ),
            req(
                2,
                "tools/call",
                json!({"name": "create_sandbox", "arguments": {}}),
            ),
        ],
    )
    .await;
    for id in [1, 2] {
        let r = &by_id(&answers, id)["result"];
        assert_eq!(r["isError"], true);
        assert!(
            r["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("--max-sandboxes"),
            "{r}"
        );
    }
}
