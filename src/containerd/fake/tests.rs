//! The fake's own model: the refusals, the scripts, the task lifecycle.

use std::time::Duration;

use super::*;

fn container(id: &str) -> Container {
    Container {
        id: id.to_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_model_refuses_what_containerd_refuses() {
    let f = FakeContainerd::new();
    let prep = |key: &str, parent: &str| PrepareSnapshotRequest {
        key: key.into(),
        parent: parent.into(),
        ..Default::default()
    };
    let code = |r: Result<(), ContainerdError>| r.err().and_then(|e| e.code());
    assert_eq!(
        code(f.prepare_snapshot(prep("a", "base")).await.map(drop)),
        Some(tonic::Code::NotFound),
        "no parent"
    );
    f.add_base("base");
    f.prepare_snapshot(prep("a", "base")).await.unwrap();
    assert_eq!(
        code(f.prepare_snapshot(prep("a", "base")).await.map(drop)),
        Some(tonic::Code::AlreadyExists)
    );
    let task = CreateTaskRequest {
        container_id: "a".into(),
        ..Default::default()
    };
    assert_eq!(
        code(f.create_task(task.clone()).await.map(drop)),
        Some(tonic::Code::NotFound),
        "no container"
    );
    f.create_container(container("a")).await.unwrap();
    assert_eq!(
        code(f.create_container(container("a")).await),
        Some(tonic::Code::AlreadyExists)
    );
    assert_eq!(f.create_task(task).await.unwrap(), FIRST_PID);
    f.behaviour(Behaviour::RunsUntilKilled);
    f.start_task("a").await.unwrap();
    assert_eq!(
        code(f.delete_task("a").await),
        Some(tonic::Code::FailedPrecondition),
        "running"
    );
    f.kill_task("a", 9, true).await.unwrap();
    assert_eq!(f.wait_task("a").await.unwrap(), 137);
    assert_eq!(
        code(f.kill_task("a", 9, true).await),
        Some(tonic::Code::NotFound),
        "already finished"
    );
    assert_eq!(f.leftovers(), ["task a", "container a", "snapshot a"]);
    f.delete_task("a").await.unwrap();
    f.delete_container("a").await.unwrap();
    f.remove_snapshot("overlayfs", "a").await.unwrap();
    assert!(f.leftovers().is_empty());
}

#[tokio::test]
async fn scripts_answer_in_order_then_the_model_does() {
    let f = FakeContainerd::new();
    f.script(Op::ListTasks, Reply::fail(tonic::Code::Unavailable));
    f.script(Op::ListTasks, Reply::Delay(Duration::from_millis(20)));
    let e = f.list_tasks().await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable));
    assert!(e.to_string().starts_with("containerd list tasks: "), "{e}");
    let t = std::time::Instant::now();
    assert!(f.list_tasks().await.unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(20));
    f.script_every(Op::ListTasks, Reply::Hang);
    let hung = tokio::time::timeout(Duration::from_millis(20), f.list_tasks()).await;
    assert!(hung.is_err(), "never answers");
    assert_eq!(f.ops(), [Op::ListTasks; 3]);
}

#[tokio::test]
async fn a_task_exits_as_scripted_and_wait_sees_it() {
    let f = FakeContainerd::new();
    f.add_base("base");
    f.create_container(container("a")).await.unwrap();
    let task = CreateTaskRequest {
        container_id: "a".into(),
        ..Default::default()
    };
    f.create_task(task).await.unwrap();
    f.behaviour(Behaviour::Exits {
        status: 3,
        after: Duration::from_millis(30),
        stdout: Vec::new(),
    });
    let waiter = f.clone();
    let wait = tokio::spawn(async move { waiter.wait_task("a").await });
    let t = std::time::Instant::now();
    f.start_task("a").await.unwrap();
    assert_eq!(wait.await.unwrap().unwrap(), 3);
    assert!(t.elapsed() >= Duration::from_millis(30));
}

#[test]
fn label_filters_select_and_other_filters_pass() {
    let l = HashMap::from([("stockade.managed".to_string(), "true".to_string())]);
    assert!(passes(&[r#"labels."stockade.managed"==true"#.into()], &l));
    assert!(!passes(&[r#"labels."stockade.pool"==true"#.into()], &l));
    assert!(passes(&["id==x".into()], &l));
    assert!(passes(&[], &HashMap::new()));
}
