use serde_json::json;

use super::*;

/// Whether `args` reads as `tool`'s arguments.
fn reads(tool: &str, v: Value) -> bool {
    match tool {
        "run_command" => args::<RunCommand>(v).is_ok(),
        "create_sandbox" => args::<CreateSandbox>(v).is_ok(),
        "exec" => args::<Exec>(v).is_ok(),
        "write_file" => args::<WriteFile>(v).is_ok(),
        "read_file" => args::<ReadFile>(v).is_ok(),
        "list_files" => args::<ListFiles>(v).is_ok(),
        "list_sandboxes" => args::<NoArgs>(v).is_ok(),
        "kill_sandbox" => args::<SandboxIn>(v).is_ok(),
        "run_python" => args::<RunPython>(v).is_ok(),
        other => panic!("no argument type for tool {other}"),
    }
}

#[test]
fn every_schema_is_a_closed_object_schema_naming_its_required_properties() {
    let mut names = std::collections::BTreeSet::new();
    for t in TOOLS {
        assert!(names.insert(t.name), "{} listed twice", t.name);
        let s = (t.input_schema)();
        assert!(
            jsonschema::meta::is_valid(&s),
            "{}: not a JSON Schema",
            t.name
        );
        assert_eq!(s["type"], "object", "{}", t.name);
        assert_eq!(s["additionalProperties"], false, "{}", t.name);
        for r in s["required"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            assert!(s["properties"].get(r).is_some(), "{}: {r}", t.name);
        }
        for (p, v) in s["properties"].as_object().unwrap() {
            assert!(
                v["description"].is_string(),
                "{}.{p}: no description",
                t.name
            );
        }
        assert!(!t.description.is_empty() && !t.description.contains('\n'));
        assert!(find(t.name).is_some_and(|f| f.name == t.name));
    }
    assert!(find("no_such_tool").is_none());
}

/// The declared schema and the argument types accept and refuse the same arguments.
#[test]
fn the_schemas_and_the_argument_types_agree() {
    let cases: &[(&str, Value, bool)] = &[
        ("run_command", json!({"command": "echo hi"}), true),
        (
            "run_command",
            json!({"argv": ["echo", "hi"], "timeout": "5s", "stdin": "x"}),
            true,
        ),
        (
            "run_command",
            json!({"command": "x", "policy": {"limits": {"memory": "64Mi"}}}),
            true,
        ),
        ("run_command", json!({"command": "x", "bogus": 1}), false),
        ("run_command", json!({"command": 5}), false),
        ("run_command", json!({"argv": "echo hi"}), false),
        ("run_command", json!({"command": "x", "timeout": 30}), false),
        (
            "run_command",
            json!({"command": "x", "policy": "strict"}),
            false,
        ),
        ("create_sandbox", json!({}), true),
        (
            "create_sandbox",
            json!({"name": "a", "lifetime": "1h", "idle_timeout": "5m"}),
            true,
        ),
        ("create_sandbox", json!({"image": "busybox"}), false),
        (
            "exec",
            json!({"sandbox": "a", "command": "ls", "cwd": "/", "env": ["A=1"]}),
            true,
        ),
        ("exec", json!({"command": "ls"}), false),
        ("exec", json!({"sandbox": "a", "env": "A=1"}), false),
        (
            "write_file",
            json!({"sandbox": "a", "path": "/f", "content": ""}),
            true,
        ),
        (
            "write_file",
            json!({"sandbox": "a", "path": "/f", "content": "aGk=", "encoding": "base64"}),
            true,
        ),
        (
            "write_file",
            json!({"sandbox": "a", "path": "/f", "content": "", "encoding": "hex"}),
            false,
        ),
        ("write_file", json!({"sandbox": "a", "path": "/f"}), false),
        (
            "read_file",
            json!({"sandbox": "a", "path": "/f", "encoding": "utf8"}),
            true,
        ),
        ("read_file", json!({"sandbox": "a"}), false),
        ("list_files", json!({"sandbox": "a", "path": "/"}), true),
        (
            "list_files",
            json!({"sandbox": "a", "path": "/", "encoding": "utf8"}),
            false,
        ),
        ("list_sandboxes", json!({}), true),
        ("list_sandboxes", json!({"all": true}), false),
        ("kill_sandbox", json!({"sandbox": "a"}), true),
        ("kill_sandbox", json!({"sandbox": ["a"]}), false),
        ("run_python", json!({"sandbox": "a", "code": "x = 1"}), true),
        (
            "run_python",
            json!({"sandbox": "a", "code": "1", "timeout": "5s"}),
            true,
        ),
        ("run_python", json!({"sandbox": "a"}), false),
        (
            "run_python",
            json!({"sandbox": "a", "code": "1", "language": "python"}),
            false,
        ),
    ];
    for (tool, v, want) in cases {
        let schema = (find(tool).unwrap().input_schema)();
        let by_schema = jsonschema::is_valid(&schema, v);
        assert_eq!(by_schema, *want, "schema of {tool} on {v}");
        assert_eq!(reads(tool, v.clone()), *want, "arguments of {tool} on {v}");
    }
    for t in TOOLS {
        assert!(
            cases.iter().any(|(n, _, ok)| *n == t.name && *ok)
                && cases.iter().any(|(n, _, ok)| *n == t.name && !*ok),
            "{}: no case accepted and refused",
            t.name
        );
    }
}

#[test]
fn an_argument_error_names_the_argument() {
    let cases = [
        (
            json!({"command": "x", "bogus": 1}),
            "bogus: unknown field `bogus`",
        ),
        (json!({"command": 5}), "arguments: invalid type"),
    ];
    for (v, want) in cases {
        let e = args::<RunCommand>(v).unwrap_err();
        assert!(e.0.starts_with(want), "{e}");
    }
    let e = args::<Exec>(json!({})).unwrap_err();
    assert!(e.0.starts_with("sandbox: missing field"), "{e}");
    // No arguments at all reads as `{}`.
    assert!(args::<NoArgs>(Value::Null).is_ok());
}

#[test]
fn a_command_is_a_shell_line_or_an_argv_never_both() {
    let s = |v: &str| Some(v.to_string());
    let v = |a: &[&str]| Some(a.iter().map(ToString::to_string).collect::<Vec<_>>());
    assert_eq!(
        command_of(s("echo hi"), None).unwrap(),
        ["/bin/sh", "-c", "echo hi"]
    );
    assert_eq!(command_of(None, v(&["ls", "-l"])).unwrap(), ["ls", "-l"]);
    let refused = [
        (s("x"), v(&["x"]), "command: give either"),
        (None, None, "command: required"),
        (s("  "), None, "command: empty"),
        (None, v(&[]), "argv: required"),
        (None, v(&[""]), "argv: required"),
        (None, v(&["a\0b"]), "argv: contains a NUL"),
    ];
    for (c, a, want) in refused {
        let e = command_of(c.clone(), a.clone()).unwrap_err();
        assert!(e.0.starts_with(want), "{c:?} {a:?}: {e}");
    }
}

fn obj(v: Value) -> Option<serde_json::Map<String, Value>> {
    v.as_object().cloned()
}

#[test]
fn a_timeout_becomes_the_policys_and_is_not_given_twice() {
    assert_eq!(policy_of(None, None).unwrap(), None);
    let p = policy_of(None, Some("30s")).unwrap().unwrap();
    assert_eq!(p.limits.timeout.as_deref(), Some("30s"));
    let p = policy_of(obj(json!({"limits": {"memory": "64Mi"}})), Some("30s"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.limits.memory.as_deref(), p.limits.timeout.as_deref()),
        (Some("64Mi"), Some("30s"))
    );
    let twice = policy_of(obj(json!({"limits": {"timeout": "5s"}})), Some("30s")).unwrap_err();
    assert!(twice.0.starts_with("timeout: given twice"), "{twice}");
    let bad = policy_of(None, Some("soon")).unwrap_err();
    assert!(bad.0.starts_with("timeout: `soon`"), "{bad}");
    let unknown = policy_of(obj(json!({"limits": {"memry": "1Gi"}})), None).unwrap_err();
    assert!(
        unknown.0.starts_with("policy: unknown field `memry`"),
        "{unknown}"
    );
}

#[test]
fn an_http_error_becomes_one_line_led_by_its_field() {
    let e =
        HttpError::forbidden("policy.limits.memory: 1 GiB is above").field("policy.limits.memory");
    assert_eq!(ToolError::from(e).0, "policy.limits.memory: 1 GiB is above");
    let e = HttpError::not_found("no such file").field("path");
    assert_eq!(ToolError::from(e).0, "path: no such file");
    let e = HttpError::internal("containerd is gone");
    assert_eq!(ToolError::from(e).0, "containerd is gone");
    assert_eq!(ToolError("a\nb".into()).to_string(), "a b");
}

#[test]
fn results_become_text_and_structured_content_and_failures_an_error_result() {
    let out = CommandOutput {
        exit_code: 0,
        stdout: "hi\n".into(),
        stderr: String::new(),
        timed_out: false,
        signal: None,
        truncated: Truncated::default(),
    };
    let v = serde_json::to_value(&out).unwrap();
    let r = success(&v);
    assert_eq!(r["isError"], false);
    assert_eq!(r["structuredContent"]["stdout"], "hi\n");
    assert_eq!(r["content"][0]["type"], "text");
    let text: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, v, "the text is the structured result");
    for key in [
        "exit_code",
        "stdout",
        "stderr",
        "timed_out",
        "signal",
        "truncated",
    ] {
        assert!(v.get(key).is_some(), "{key}");
    }
    let f = failure(&ToolError::field(
        "sandbox",
        "no sandbox `x`\nof this server's",
    ));
    assert_eq!(f["isError"], true);
    assert_eq!(
        f["content"][0]["text"],
        "sandbox: no sandbox `x` of this server's"
    );
    assert!(f.get("structuredContent").is_none());
}
