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

/// A long-lived owner (a server, a pool service) hands every ended run to `remove_later`:
/// finished removals are reaped as the next one starts, so the set of background tasks
/// stays at the few still running instead of keeping one entry per run until drain.
#[tokio::test]
async fn finished_background_removals_are_not_kept_until_drain() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    std::fs::create_dir_all(&proc_root).unwrap();
    let fake = crate::containerd::fake::FakeContainerd::new();
    let runner = fake
        .runner_builder(dir.path(), &proc_root)
        .build()
        .expect("runner");
    const RUNS: usize = 50;
    for i in 0..RUNS {
        let id = format!("{ID_PREFIX}{i:016x}");
        let run_dir = dir.path().join("fifo").join(&id);
        std::fs::create_dir_all(&run_dir).unwrap();
        runner.remove_later(&id).await;
        // Liveness guard only: the removal ends by deleting the run directory.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while run_dir.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "{id} was never removed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let kept = runner.inner.pending.lock().await.len();
    assert!(
        kept <= 3,
        "{kept} background tasks kept after {RUNS} removals"
    );
    runner.wait_cleanups().await;
    assert_eq!(runner.inner.pending.lock().await.len(), 0);
}
