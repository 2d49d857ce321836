//! What a containerd holds, read through its own API: containers, tasks, snapshots, and
//! the wait for a run's task to be running.

use std::time::{Duration, Instant};

use containerd_client::services::v1::snapshots::{Info, ListSnapshotsRequest};
use containerd_client::services::v1::{ListContainersRequest, ListTasksRequest};
use containerd_client::types::v1::Process;
use stockade::containerd::Client;

/// containerd's task status for a running task.
pub const RUNNING: i32 = 2;

/// The ids of every container in `client`'s namespace.
pub async fn containers(client: &Client) -> Vec<String> {
    client
        .containers()
        .list(client.request(ListContainersRequest { filters: vec![] }))
        .await
        .expect("list containers")
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Every task in `client`'s namespace.
pub async fn tasks(client: &Client) -> Vec<Process> {
    client
        .tasks()
        .list(client.request(ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .expect("list tasks")
        .into_inner()
        .tasks
}

/// Every snapshot `snapshotter` holds in `client`'s namespace.
pub async fn snapshots(client: &Client, snapshotter: &str) -> Vec<Info> {
    let mut stream = client
        .snapshots()
        .list(client.request(ListSnapshotsRequest {
            snapshotter: snapshotter.into(),
            filters: vec![],
        }))
        .await
        .expect("list snapshots")
        .into_inner();
    let mut all = Vec::new();
    while let Some(m) = stream.message().await.expect("list snapshots") {
        all.extend(m.info);
    }
    all
}

/// The id of a running stockade task (`stk-*`), when there is one.
pub async fn running_task(client: &Client) -> Option<String> {
    tasks(client)
        .await
        .into_iter()
        .find(|t| t.id.starts_with("stk-") && t.status == RUNNING)
        .map(|t| t.id)
}

/// Waits until a stockade task runs and returns its id; panics after `within` (a
/// liveness bound, not a speed claim).
pub async fn wait_for_running_task(client: &Client, within: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some(id) = running_task(client).await {
            return id;
        }
        assert!(start.elapsed() < within, "no task started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
