//! The containerd seam: the RPCs a run makes (snapshots, containers, tasks), behind one
//! narrow trait. [`Client`] implements it over gRPC; [`super::fake::FakeContainerd`]
//! implements it in memory, recording every call, for tests that need no root and no
//! containerd.
//!
//! Requests and answers are containerd's own prost types where the engine builds or reads
//! them field by field (a [`Container`], a [`CreateTaskRequest`], snapshot [`Info`]), and
//! plain values where one field is all that matters (a task's pid, an exit status). Every
//! error is a [`ContainerdError`] naming the operation, exactly as the engine reported it
//! before the seam existed.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use containerd_client::services::v1::snapshots::{
    Info, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::{
    CloseIoRequest, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteProcessRequest, DeleteTaskRequest, DiffRequest, ExecProcessRequest, GetContainerRequest,
    GetRequest, KillRequest, ListContainersRequest, ListTasksRequest, ResizePtyRequest,
    StartRequest, WaitRequest,
};
use containerd_client::types::v1::Status;
use containerd_client::types::Mount;

use super::{Client, ContainerdError};

/// A boxed, sendable future: what the seam's methods (and image sources) return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The answer of one RPC.
pub type Rpc<'a, T> = BoxFuture<'a, Result<T, ContainerdError>>;

/// The RPCs of a run, in one containerd namespace. Object-safe: a runner holds an
/// `Arc<dyn Containerd>`.
pub trait Containerd: Send + Sync {
    /// The socket of the containerd answering (what a helper process connects to); empty
    /// for a fake.
    fn address(&self) -> &Path;

    /// The namespace every request is made in.
    fn namespace(&self) -> &str;

    /// The gRPC connection behind this seam, for what the seam does not carry (the image
    /// store's records and content); `None` for a fake.
    fn client(&self) -> Option<&Client>;

    /// Snapshots.Prepare: an active snapshot `key` on `parent`; its mounts.
    fn prepare_snapshot(&self, req: PrepareSnapshotRequest) -> Rpc<'_, Vec<Mount>>;

    /// Snapshots.Stat of `key`.
    fn stat_snapshot<'a>(&'a self, snapshotter: &'a str, key: &'a str) -> Rpc<'a, Info>;

    /// Snapshots.Remove of `key`.
    fn remove_snapshot<'a>(&'a self, snapshotter: &'a str, key: &'a str) -> Rpc<'a, ()>;

    /// Snapshots.Mounts of the active snapshot `key`: the mounts that make its filesystem
    /// (what Prepare answered), for reaching a stopped sandbox's root.
    fn snapshot_mounts<'a>(&'a self, snapshotter: &'a str, key: &'a str) -> Rpc<'a, Vec<Mount>>;

    /// Snapshots.List with containerd `filters` (all of them streamed in, in order).
    fn list_snapshots<'a>(
        &'a self,
        snapshotter: &'a str,
        filters: Vec<String>,
    ) -> Rpc<'a, Vec<Info>>;

    /// Containers.Create.
    fn create_container(&self, container: Container) -> Rpc<'_, ()>;

    /// Containers.Delete of `id`.
    fn delete_container<'a>(&'a self, id: &'a str) -> Rpc<'a, ()>;

    /// Containers.List with containerd `filters`.
    fn list_containers(&self, filters: Vec<String>) -> Rpc<'_, Vec<Container>>;

    /// Tasks.Create; the pid of the task's init process.
    fn create_task(&self, req: CreateTaskRequest) -> Rpc<'_, u32>;

    /// Tasks.Start of the task of container `id`.
    fn start_task<'a>(&'a self, id: &'a str) -> Rpc<'a, ()>;

    /// Tasks.Wait: answers when the task of `id` has exited, with its exit status.
    fn wait_task<'a>(&'a self, id: &'a str) -> Rpc<'a, u32>;

    /// Tasks.Kill: `signal` to the task's init process, or with `all` to every process in
    /// it.
    fn kill_task<'a>(&'a self, id: &'a str, signal: u32, all: bool) -> Rpc<'a, ()>;

    /// Tasks.Delete of the (exited) task of `id`.
    fn delete_task<'a>(&'a self, id: &'a str) -> Rpc<'a, ()>;

    /// Tasks.CloseIO: closes the task's stdin, so that it reads end of file.
    fn close_stdin<'a>(&'a self, id: &'a str) -> Rpc<'a, ()>;

    /// Tasks.List: the container ids of every task in the namespace.
    fn list_tasks(&self) -> Rpc<'_, Vec<String>>;

    /// Containers.Get of `id`: its record (labels, spec).
    fn get_container<'a>(&'a self, id: &'a str) -> Rpc<'a, Container>;

    /// Tasks.Get of the task of container `id`: its init process's pid and status.
    fn get_task<'a>(&'a self, id: &'a str) -> Rpc<'a, TaskInfo>;

    /// Tasks.Exec: adds process `exec_id` (its spec in `req.spec`, a runtime-spec
    /// `Process`) to the running task of `req.container_id`; it starts with
    /// [`Containerd::start_process`].
    fn exec_process(&self, req: ExecProcessRequest) -> Rpc<'_, ()>;

    /// Tasks.Start of exec process `exec_id` of task `id`; its host pid.
    fn start_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, u32>;

    /// Tasks.Wait of exec process `exec_id`: answers when it has exited, with its status.
    fn wait_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, u32>;

    /// Tasks.Kill of exec process `exec_id` alone (not the processes it started).
    fn kill_process<'a>(&'a self, id: &'a str, exec_id: &'a str, signal: u32) -> Rpc<'a, ()>;

    /// Tasks.DeleteProcess of the (exited) exec process `exec_id`.
    fn delete_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, ()>;

    /// Tasks.ResizePty of exec process `exec_id`'s terminal.
    fn resize_pty<'a>(
        &'a self,
        id: &'a str,
        exec_id: &'a str,
        width: u32,
        height: u32,
    ) -> Rpc<'a, ()>;

    /// Tasks.CloseIO of exec process `exec_id`'s stdin, so that it reads end of file.
    fn close_process_stdin<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, ()>;

    /// Diff.Diff: the changes from `req.left`'s mounts to `req.right`'s, written as a layer
    /// blob into the content store (of `req.media_type`, with `req.labels`); its
    /// descriptor (for an uncompressed media type its digest is the layer's diff id).
    fn diff(&self, req: DiffRequest) -> Rpc<'_, containerd_client::types::Descriptor>;
}

/// What Tasks.Get says of a task's init process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    /// Host pid of the task's init process (0 once it is gone).
    pub pid: u32,
    /// Its status.
    pub status: TaskStatus,
}

/// A task's (or process's) status, as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Created, not started.
    Created,
    /// Running (paused and pausing count as running: the processes exist).
    Running,
    /// Exited.
    Stopped,
    /// containerd did not say.
    Unknown,
}

impl TaskStatus {
    fn from_proto(status: i32) -> TaskStatus {
        match Status::try_from(status) {
            Ok(Status::Created) => TaskStatus::Created,
            Ok(Status::Running | Status::Paused | Status::Pausing) => TaskStatus::Running,
            Ok(Status::Stopped) => TaskStatus::Stopped,
            _ => TaskStatus::Unknown,
        }
    }
}

impl Containerd for Client {
    fn address(&self) -> &Path {
        Client::address(self)
    }

    fn namespace(&self) -> &str {
        Client::namespace(self)
    }

    fn client(&self) -> Option<&Client> {
        Some(self)
    }

    fn prepare_snapshot(&self, req: PrepareSnapshotRequest) -> Rpc<'_, Vec<Mount>> {
        Box::pin(async move {
            let r = self.snapshots().prepare(self.request(req)).await;
            r.map(|r| r.into_inner().mounts)
                .map_err(ContainerdError::rpc("prepare snapshot"))
        })
    }

    fn stat_snapshot<'a>(&'a self, snapshotter: &'a str, key: &'a str) -> Rpc<'a, Info> {
        Box::pin(async move {
            let req = StatSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            };
            let r = self.snapshots().stat(self.request(req)).await;
            r.map(|r| r.into_inner().info.unwrap_or_default())
                .map_err(ContainerdError::rpc("stat snapshot"))
        })
    }

    fn remove_snapshot<'a>(&'a self, snapshotter: &'a str, key: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            };
            let r = self.snapshots().remove(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("remove snapshot"))
        })
    }

    fn snapshot_mounts<'a>(&'a self, snapshotter: &'a str, key: &'a str) -> Rpc<'a, Vec<Mount>> {
        Box::pin(async move {
            let req = MountsRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            };
            let r = self.snapshots().mounts(self.request(req)).await;
            r.map(|r| r.into_inner().mounts)
                .map_err(ContainerdError::rpc("snapshot mounts"))
        })
    }

    fn list_snapshots<'a>(
        &'a self,
        snapshotter: &'a str,
        filters: Vec<String>,
    ) -> Rpc<'a, Vec<Info>> {
        Box::pin(async move {
            let op = ContainerdError::rpc("list snapshots");
            let req = ListSnapshotsRequest {
                snapshotter: snapshotter.to_string(),
                filters,
            };
            let mut stream = self
                .snapshots()
                .list(self.request(req))
                .await
                .map_err(&op)?
                .into_inner();
            let mut out = Vec::new();
            while let Some(msg) = stream.message().await.map_err(&op)? {
                out.extend(msg.info);
            }
            Ok(out)
        })
    }

    fn create_container(&self, container: Container) -> Rpc<'_, ()> {
        Box::pin(async move {
            let req = CreateContainerRequest {
                container: Some(container),
            };
            let r = self.containers().create(self.request(req)).await;
            r.map(drop)
                .map_err(ContainerdError::rpc("create container"))
        })
    }

    fn delete_container<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = DeleteContainerRequest { id: id.to_string() };
            let r = self.containers().delete(self.request(req)).await;
            r.map(drop)
                .map_err(ContainerdError::rpc("delete container"))
        })
    }

    fn list_containers(&self, filters: Vec<String>) -> Rpc<'_, Vec<Container>> {
        Box::pin(async move {
            let req = ListContainersRequest { filters };
            let r = self.containers().list(self.request(req)).await;
            r.map(|r| r.into_inner().containers)
                .map_err(ContainerdError::rpc("list containers"))
        })
    }

    fn create_task(&self, req: CreateTaskRequest) -> Rpc<'_, u32> {
        Box::pin(async move {
            let r = self.tasks().create(self.request(req)).await;
            r.map(|r| r.into_inner().pid)
                .map_err(ContainerdError::rpc("create task"))
        })
    }

    fn start_task<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            };
            let r = self.tasks().start(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("start task"))
        })
    }

    fn wait_task<'a>(&'a self, id: &'a str) -> Rpc<'a, u32> {
        Box::pin(async move {
            let req = WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            };
            let r = self.tasks().wait(self.request(req)).await;
            r.map(|r| r.into_inner().exit_status)
                .map_err(ContainerdError::rpc("wait task"))
        })
    }

    fn kill_task<'a>(&'a self, id: &'a str, signal: u32, all: bool) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            };
            let r = self.tasks().kill(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("kill task"))
        })
    }

    fn delete_task<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = DeleteTaskRequest {
                container_id: id.to_string(),
            };
            let r = self.tasks().delete(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("delete task"))
        })
    }

    fn close_stdin<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = CloseIoRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                stdin: true,
            };
            let r = self.tasks().close_io(self.request(req)).await;
            r.map(drop)
                .map_err(ContainerdError::rpc("close task stdin"))
        })
    }

    fn list_tasks(&self) -> Rpc<'_, Vec<String>> {
        Box::pin(async move {
            let req = ListTasksRequest {
                filter: String::new(),
            };
            let r = self.tasks().list(self.request(req)).await;
            r.map(|r| r.into_inner().tasks.into_iter().map(|t| t.id).collect())
                .map_err(ContainerdError::rpc("list tasks"))
        })
    }

    fn get_container<'a>(&'a self, id: &'a str) -> Rpc<'a, Container> {
        Box::pin(async move {
            let req = GetContainerRequest { id: id.to_string() };
            let r = self.containers().get(self.request(req)).await;
            r.map(|r| r.into_inner().container.unwrap_or_default())
                .map_err(ContainerdError::rpc("get container"))
        })
    }

    fn get_task<'a>(&'a self, id: &'a str) -> Rpc<'a, TaskInfo> {
        Box::pin(async move {
            let req = GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            };
            let r = self.tasks().get(self.request(req)).await;
            r.map(|r| {
                let p = r.into_inner().process.unwrap_or_default();
                TaskInfo {
                    pid: p.pid,
                    status: TaskStatus::from_proto(p.status),
                }
            })
            .map_err(ContainerdError::rpc("get task"))
        })
    }

    fn exec_process(&self, req: ExecProcessRequest) -> Rpc<'_, ()> {
        Box::pin(async move {
            let r = self.tasks().exec(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("exec process"))
        })
    }

    fn start_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, u32> {
        Box::pin(async move {
            let req = StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            };
            let r = self.tasks().start(self.request(req)).await;
            r.map(|r| r.into_inner().pid)
                .map_err(ContainerdError::rpc("start process"))
        })
    }

    fn wait_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, u32> {
        Box::pin(async move {
            let req = WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            };
            let r = self.tasks().wait(self.request(req)).await;
            r.map(|r| r.into_inner().exit_status)
                .map_err(ContainerdError::rpc("wait process"))
        })
    }

    fn kill_process<'a>(&'a self, id: &'a str, exec_id: &'a str, signal: u32) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal,
                all: false,
            };
            let r = self.tasks().kill(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("kill process"))
        })
    }

    fn delete_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            };
            let r = self.tasks().delete_process(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("delete process"))
        })
    }

    fn resize_pty<'a>(
        &'a self,
        id: &'a str,
        exec_id: &'a str,
        width: u32,
        height: u32,
    ) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            };
            let r = self.tasks().resize_pty(self.request(req)).await;
            r.map(drop).map_err(ContainerdError::rpc("resize pty"))
        })
    }

    fn close_process_stdin<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, ()> {
        Box::pin(async move {
            let req = CloseIoRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                stdin: true,
            };
            let r = self.tasks().close_io(self.request(req)).await;
            r.map(drop)
                .map_err(ContainerdError::rpc("close process stdin"))
        })
    }

    fn diff(&self, req: DiffRequest) -> Rpc<'_, containerd_client::types::Descriptor> {
        Box::pin(async move {
            let r = self.diff().diff(self.request(req)).await;
            r.map(|r| r.into_inner().diff.unwrap_or_default())
                .map_err(ContainerdError::rpc("diff"))
        })
    }
}
