use super::*;

#[test]
fn a_pooled_sandbox_waits_only_while_its_pid_1_lives_unchanged() {
    let t = tempfile::tempdir().unwrap();
    let proc_ = |pid: u32, state: char, start: u64| {
        let d = t.path().join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        // 52 fields, as the kernel writes them; comm with a space and a parenthesis.
        let mut fields = vec![pid.to_string(), "(sh x)".into(), state.to_string()];
        fields.extend((4..=21).map(|i| i.to_string()));
        fields.push(start.to_string());
        fields.extend((23..=52).map(|i| i.to_string()));
        std::fs::write(d.join("stat"), fields.join(" ") + "\n").unwrap();
    };
    proc_(10, 'S', 777);
    proc_(11, 'Z', 777);
    let read = ProcStat::read(t.path(), 10).unwrap();
    assert_eq!((read.state, read.start_time), ('S', Some(777)));
    let p = |pid: u32, pid_start: Option<u64>| Prepared {
        id: "stk-00".into(),
        image: BaseImage {
            name: "busybox".into(),
            digest: None,
            snapshot: "s".into(),
        },
        policy_hash: "h".into(),
        fifos: fifo::RunDir {
            stdin: None,
            stdout: t.path().join("f/o"),
            stderr: None,
        },
        pid,
        pid_start,
        created_unix_ms: 0,
        opened: None,
    };
    // (pid, recorded start) → waiting?
    for (pid, start, want) in [
        (10, Some(777), true),
        (10, None, true),
        (10, Some(778), false), // the pid now names another process
        (11, Some(777), false), // died, not yet reaped
        (12, Some(777), false), // gone
    ] {
        assert_eq!(p(pid, start).is_waiting(t.path()), want, "{pid} {start:?}");
    }
}

#[test]
fn the_runtime_binary_travels_as_runc_options_field_6() {
    let any = builder::runc_options("crun");
    assert_eq!(any.type_url, "containerd.runc.v1.Options");
    // field 6, length-delimited (6 << 3 | 2 = 0x32), 4 bytes, "crun"
    assert_eq!(any.value, b"\x32\x04crun");
}

#[test]
fn ids_are_prefixed_valid_and_distinct() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
    assert_eq!(ids.len(), 1000);
    for id in &ids {
        assert!(id.starts_with(ID_PREFIX));
        assert_eq!(id.len(), ID_PREFIX.len() + 16);
        assert!(id[ID_PREFIX.len()..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}

#[test]
fn errors_map_to_125_126_127() {
    let nf = RunError::CommandNotFound {
        command: "nope".into(),
        detail: String::new(),
    };
    assert_eq!(nf.exit_code(), 127);
    assert_eq!(nf.to_string(), "nope: command not found");
    let ne = RunError::CommandNotExecutable {
        command: "/etc/passwd".into(),
        detail: String::new(),
    };
    assert_eq!(ne.exit_code(), 126);
    assert_eq!(RunError::Config("x".into()).exit_code(), 125);
}
