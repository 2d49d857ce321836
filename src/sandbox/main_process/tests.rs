use std::time::Duration;

use super::*;
use crate::containerd::fake::{Behaviour, FakeContainerd, Op};
use crate::policy::{HostPolicyEnv, Policy, PolicyOverrides};
use crate::sandbox::logs::{self, Stream};
use crate::sandbox::ErrorKind;

struct Rig {
    fake: FakeContainerd,
    sandboxes: Sandboxes,
    dir: tempfile::TempDir,
}

fn rig(behaviour: Behaviour) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = dir.path().join("proc");
    std::fs::create_dir(&proc_root).unwrap();
    let fake = FakeContainerd::new().proc_root(&proc_root);
    fake.add_base(crate::policy::DEFAULT_IMAGE);
    fake.behaviour(behaviour);
    let runner = fake
        .runner_builder(dir.path(), &proc_root)
        .build()
        .expect("runner");
    let sandboxes = Sandboxes::new(runner).installed_init(dir.path().join("init/stockade-init"));
    Rig {
        fake,
        sandboxes,
        dir,
    }
}

fn request() -> CreateRequest {
    let policy = Policy::default()
        .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
        .unwrap();
    CreateRequest::new(policy)
}

fn spec_args(fake: &FakeContainerd, id: &str) -> Vec<String> {
    let c = fake.container(id).expect("container");
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&c.spec.unwrap().value).unwrap();
    spec.process().as_ref().unwrap().args().clone().unwrap()
}

#[tokio::test]
async fn the_main_command_runs_under_the_init_once_with_its_output_and_exit_kept() {
    let r = rig(Behaviour::Exits {
        status: 3,
        after: Duration::from_millis(20),
        stdout: b"hi\n".to_vec(),
    });
    let main = MainProcess::new(["echo", "hi"]);
    let (sb, io) = r.sandboxes.create_main(request(), main).await.unwrap();
    assert_eq!(
        spec_args(&r.fake, sb.id()),
        ["/.stockade/init", "--", "echo", "hi"],
        "pid 1 is the init running the command"
    );
    assert_eq!(r.fake.count(Op::StartTask), 0, "created, not started");
    assert_eq!(sb.state().await.unwrap(), TaskStatus::Created);
    assert!(io.stdin.is_none() && io.stderr.is_some());
    let before = sb.main_state().unwrap();
    assert_eq!(before.argv, ["echo", "hi"]);
    assert_eq!((before.started_unix_ms, before.exit_code), (None, None));

    let feed = logs::spawn(&sb.run_dir(), io.stdout, io.stderr, 1 << 20).unwrap();
    sb.start().await.unwrap();
    let done = sb.wait_main().await.unwrap();
    assert_eq!(done.exit_code, Some(3));
    assert!(done.started_unix_ms.is_some() && done.finished_unix_ms.is_some());
    assert_eq!(
        sb.main_state().unwrap(),
        done,
        "recorded for any later reader"
    );
    feed.ended().await;
    let (records, _) = logs::read_all(feed.path()).unwrap();
    let out: Vec<u8> = records
        .iter()
        .filter(|r| r.stream == Stream::Stdout)
        .flat_map(|r| r.data.clone())
        .collect();
    assert_eq!(out, b"hi\n");

    // Runs once: a second start is a conflict, in one line.
    let again = sb.start().await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    assert!(again.to_string().contains("runs once"), "{again}");

    let run_dir = sb.run_dir();
    sb.remove(false).await.unwrap();
    assert!(r.fake.leftovers().is_empty(), "{:?}", r.fake.leftovers());
    assert!(!run_dir.exists());
}

#[tokio::test]
async fn a_killed_main_command_reports_128_plus_the_signal_and_an_empty_one_is_refused() {
    let r = rig(Behaviour::RunsUntilKilled);
    let mut main = MainProcess::new(["sleep", "100"]);
    main.stdin = true;
    main.tty = true;
    let (sb, io) = r.sandboxes.create_main(request(), main).await.unwrap();
    assert!(
        io.stdin.is_some() && io.stderr.is_none(),
        "a terminal merges the output"
    );
    sb.start().await.unwrap();
    assert_eq!(sb.state().await.unwrap(), TaskStatus::Running);
    sb.kill(9).await.unwrap();
    assert_eq!(sb.wait_main().await.unwrap().exit_code, Some(137));
    sb.remove(false).await.unwrap();

    let err = r
        .sandboxes
        .create_main(request(), MainProcess::new(Vec::<String>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(r.fake.leftovers().is_empty(), "{:?}", r.fake.leftovers());
    assert!(std::fs::read_dir(r.dir.path().join("fifo"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("stk-")));
}
