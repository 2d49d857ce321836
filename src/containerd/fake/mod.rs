//! A containerd in memory, for tests that need neither root nor a daemon: it records every
//! call in order, answers from a small model of snapshots, containers and tasks (the same
//! refusals containerd makes: a missing parent, an id taken, a running task deleted), lets
//! a test script an answer per RPC (fail with a code, never answer, answer late) and what
//! each started task does (exit with a status after a while, or run until killed), and
//! reports every object still alive.
//!
//! It is compiled into the library, not behind `cfg(test)`: integration tests under `tests/`
//! link the library as an ordinary dependency, where `cfg(test)` is off, and a cargo feature
//! would have to be named by every test command. It adds no dependency, and nothing in the
//! library uses it.
//!
//! Tasks touch the host in two places only, both opt-in and both what the engine expects of
//! a real task: with [`FakeContainerd::proc_root`], a task's pid gets a directory with an
//! `oom_score_adj` file there; and a task holds the write ends of the stdout and stderr
//! FIFOs named in Tasks.Create open from its creation to its exit, as the shim does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_client::services::v1::snapshots::{Info, Kind, PrepareSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateTaskRequest, DiffRequest, ExecProcessRequest,
};
use containerd_client::types::Mount;

use super::api::{Containerd, Rpc, TaskInfo};
use super::{Client, ContainerdError};

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    once: HashMap<Op, VecDeque<Reply>>,
    every: HashMap<Op, Reply>,
    behaviour: Behaviour,
    exec_behaviour: Behaviour,
    snapshots: BTreeMap<String, Info>,
    containers: BTreeMap<String, Container>,
    tasks: BTreeMap<String, Task>,
    /// The rootfs mounts each task was created with, by container id (kept after delete).
    rootfs: BTreeMap<String, Vec<Mount>>,
    next_pid: u32,
}

/// The in-memory containerd. Cheap to clone; clones share the model and the record.
#[derive(Clone, Default)]
pub struct FakeContainerd {
    state: Arc<Mutex<State>>,
    proc_root: Option<PathBuf>,
}

/// The first pid the fake hands out; each task gets the next one.
pub const FIRST_PID: u32 = 4200;

impl FakeContainerd {
    /// An empty containerd: no snapshots, containers or tasks, no scripts; tasks exit 0 at
    /// once ([`Behaviour::default`]); no procfs entries are made.
    pub fn new() -> FakeContainerd {
        FakeContainerd::default()
    }

    /// Makes `<dir>/<pid>/oom_score_adj` for every task created (the engine writes and reads
    /// it back through its procfs root).
    pub fn proc_root(mut self, dir: impl Into<PathBuf>) -> FakeContainerd {
        self.proc_root = Some(dir.into());
        self
    }

    /// Adds a committed snapshot `key` (a base image).
    pub fn add_base(&self, key: &str) {
        let info = Info {
            name: key.to_string(),
            kind: Kind::Committed as i32,
            ..Default::default()
        };
        self.lock().snapshots.insert(key.to_string(), info);
    }

    /// Answers the next call of `op` with `reply` (replies queue in order).
    pub fn script(&self, op: Op, reply: Reply) {
        self.lock().once.entry(op).or_default().push_back(reply);
    }

    /// Answers every call of `op` with `reply` once the queued ones are used.
    pub fn script_every(&self, op: Op, reply: Reply) {
        self.lock().every.insert(op, reply);
    }

    /// What tasks started from now on do.
    pub fn behaviour(&self, b: Behaviour) {
        self.lock().behaviour = b;
    }

    /// What exec processes started from now on do.
    pub fn exec_behaviour(&self, b: Behaviour) {
        self.lock().exec_behaviour = b;
    }

    /// The spec Tasks.Exec carried for exec process `exec_id` of task `id`, while the
    /// process exists.
    pub fn process_spec(&self, id: &str, exec_id: &str) -> Option<prost_types::Any> {
        let s = self.lock();
        s.tasks.get(id)?.execs.get(exec_id)?.spec.clone()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The RPCs called so far, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().calls.iter().map(|c| c.op).collect()
    }

    /// How many times `op` was called.
    pub fn count(&self, op: Op) -> usize {
        self.lock().calls.iter().filter(|c| c.op == op).count()
    }

    /// The rootfs mounts the task of `id` was created with.
    pub fn task_rootfs(&self, id: &str) -> Option<Vec<Mount>> {
        self.lock().rootfs.get(id).cloned()
    }

    /// A live container's record.
    pub fn container(&self, id: &str) -> Option<Container> {
        self.lock().containers.get(id).cloned()
    }

    /// Every object still alive but base snapshots: `process ID/EXEC_ID`, `task ID`,
    /// `container ID`, `snapshot KEY`, sorted by kind and name.
    pub fn leftovers(&self) -> Vec<String> {
        let s = self.lock();
        let execs = s
            .tasks
            .iter()
            .flat_map(|(id, t)| t.execs.keys().map(move |e| format!("process {id}/{e}")));
        let tasks = execs.chain(s.tasks.keys().map(|k| format!("task {k}")));
        let containers = s.containers.keys().map(|k| format!("container {k}"));
        let snapshots = s
            .snapshots
            .values()
            .filter(|i| i.kind != Kind::Committed as i32)
            .map(|i| format!("snapshot {}", i.name));
        tasks.chain(containers).chain(snapshots).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake containerd lock")
    }

    /// Records the call and takes its scripted reply, if any.
    fn enter(&self, op: Op, key: &str) -> Option<Reply> {
        let mut s = self.lock();
        s.calls.push(Call {
            op,
            key: key.to_string(),
        });
        match s.once.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(r) => Some(r),
            None => s.every.get(&op).cloned(),
        }
    }

    /// Records the call, plays its script, then answers with `model` (unless the script
    /// failed it or hangs).
    fn answer<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        name: &'static str,
        key: &str,
        model: impl FnOnce(&FakeContainerd) -> Result<T, ContainerdError> + Send + 'a,
    ) -> Rpc<'a, T> {
        let reply = self.enter(op, key);
        Box::pin(async move {
            match reply {
                Some(Reply::Fail(code, message)) => return Err(status(name, code, &message)),
                Some(Reply::Hang) => std::future::pending::<()>().await,
                Some(Reply::Delay(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            model(self)
        })
    }

    /// Stops the task of `id` with `exit` unless it has stopped already, closing its output;
    /// its exec processes die with it (SIGKILL, as the kernel ends a pid namespace).
    fn stop(&self, id: &str, exit: u32, stdout: &[u8]) {
        let mut s = self.lock();
        let Some(t) = s.tasks.get_mut(id) else { return };
        for e in t.execs.values_mut() {
            e.stop(128 + 9, &[]);
        }
        t.stop(exit, stdout);
    }

    /// Stops exec process `exec_id` of task `id` with `exit`, writing `stdout` first.
    fn stop_exec(&self, id: &str, exec_id: &str, exit: u32, stdout: &[u8]) {
        let mut s = self.lock();
        if let Some(e) = s.tasks.get_mut(id).and_then(|t| t.execs.get_mut(exec_id)) {
            e.stop(exit, stdout);
        }
    }
}

fn status(op: &'static str, code: tonic::Code, message: &str) -> ContainerdError {
    ContainerdError::Rpc {
        op,
        code,
        message: format!("fake containerd: {message}"),
    }
}

/// Whether `labels` pass every `labels."K"==V` filter (other filters pass everything).
fn passes(filters: &[String], labels: &HashMap<String, String>) -> bool {
    filters.iter().all(|f| {
        let Some(rest) = f.strip_prefix("labels.\"") else {
            return true;
        };
        match rest.split_once("\"==") {
            Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
            None => true,
        }
    })
}

/// Opens the write end of the FIFO at `path` without blocking; `None` when there is no
/// such FIFO or no reader.
fn open_writer(path: &str) -> Option<std::fs::File> {
    if path.is_empty() {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .ok()
}

impl Containerd for FakeContainerd {
    fn address(&self) -> &Path {
        Path::new("")
    }

    fn namespace(&self) -> &str {
        "fake"
    }

    fn client(&self) -> Option<&Client> {
        None
    }

    fn prepare_snapshot(&self, req: PrepareSnapshotRequest) -> Rpc<'_, Vec<Mount>> {
        snapshots::prepare(self, req)
    }

    fn stat_snapshot<'a>(&'a self, _snapshotter: &'a str, key: &'a str) -> Rpc<'a, Info> {
        snapshots::stat(self, key)
    }

    fn remove_snapshot<'a>(&'a self, _snapshotter: &'a str, key: &'a str) -> Rpc<'a, ()> {
        snapshots::remove(self, key)
    }

    fn snapshot_mounts<'a>(&'a self, _snapshotter: &'a str, key: &'a str) -> Rpc<'a, Vec<Mount>> {
        snapshots::mounts(self, key)
    }

    fn list_snapshots<'a>(
        &'a self,
        _snapshotter: &'a str,
        filters: Vec<String>,
    ) -> Rpc<'a, Vec<Info>> {
        snapshots::list(self, filters)
    }

    fn create_container(&self, container: Container) -> Rpc<'_, ()> {
        let id = container.id.clone();
        self.answer(Op::CreateContainer, "create container", &id, move |f| {
            let mut s = f.lock();
            if s.containers.contains_key(&container.id) {
                let code = tonic::Code::AlreadyExists;
                return Err(status("create container", code, "id taken"));
            }
            s.containers.insert(container.id.clone(), container);
            Ok(())
        })
    }

    fn delete_container<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        self.answer(
            Op::DeleteContainer,
            "delete container",
            id,
            move |f| match f.lock().containers.remove(id) {
                Some(_) => Ok(()),
                None => Err(status(
                    "delete container",
                    tonic::Code::NotFound,
                    "no such id",
                )),
            },
        )
    }

    fn list_containers(&self, filters: Vec<String>) -> Rpc<'_, Vec<Container>> {
        self.answer(Op::ListContainers, "list containers", "", move |f| {
            let s = f.lock();
            let v = s
                .containers
                .values()
                .filter(|c| passes(&filters, &c.labels));
            Ok(v.cloned().collect())
        })
    }

    fn create_task(&self, req: CreateTaskRequest) -> Rpc<'_, u32> {
        let id = req.container_id.clone();
        self.answer(Op::CreateTask, "create task", &id, move |f| {
            let op = "create task";
            let mut s = f.lock();
            if !s.containers.contains_key(&req.container_id) {
                return Err(status(op, tonic::Code::NotFound, "no such container"));
            }
            if s.tasks.contains_key(&req.container_id) {
                return Err(status(op, tonic::Code::AlreadyExists, "task exists"));
            }
            s.next_pid = s.next_pid.max(FIRST_PID - 1) + 1;
            let pid = s.next_pid;
            if let Some(root) = &f.proc_root {
                let dir = root.join(pid.to_string());
                let made = std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(dir.join("oom_score_adj"), "0"));
                if let Err(e) = made {
                    return Err(status(op, tonic::Code::Internal, &e.to_string()));
                }
            }
            let outputs = [&req.stdout, &req.stderr]
                .into_iter()
                .filter_map(|p| open_writer(p))
                .collect();
            let task = Task::new(outputs, pid);
            s.tasks.insert(req.container_id.clone(), task);
            s.rootfs.insert(req.container_id.clone(), req.rootfs);
            Ok(pid)
        })
    }

    fn start_task<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        self.answer(Op::StartTask, "start task", id, move |f| {
            let op = "start task";
            let behaviour = {
                let mut s = f.lock();
                let behaviour = s.behaviour.clone();
                let Some(t) = s.tasks.get_mut(id) else {
                    return Err(status(op, tonic::Code::NotFound, "no such task"));
                };
                if t.state != TaskState::Created {
                    let code = tonic::Code::FailedPrecondition;
                    return Err(status(op, code, "task is not in created state"));
                }
                t.state = TaskState::Running;
                behaviour
            };
            if let Behaviour::Exits {
                status,
                after,
                stdout,
            } = behaviour
            {
                let (fake, id) = (f.clone(), id.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    fake.stop(&id, status, &stdout);
                });
            }
            Ok(())
        })
    }

    fn wait_task<'a>(&'a self, id: &'a str) -> Rpc<'a, u32> {
        let model = self.answer(Op::WaitTask, "wait task", id, move |f| {
            let s = f.lock();
            match s.tasks.get(id) {
                Some(t) => Ok(t.exit.subscribe()),
                None => Err(status("wait task", tonic::Code::NotFound, "no such task")),
            }
        });
        Box::pin(async move {
            let mut rx = model.await?;
            let exited = rx.wait_for(Option::is_some).await;
            match exited.map(|s| *s) {
                Ok(Some(code)) => Ok(code),
                _ => Err(status("wait task", tonic::Code::NotFound, "task deleted")),
            }
        })
    }

    fn kill_task<'a>(&'a self, id: &'a str, signal: u32, _all: bool) -> Rpc<'a, ()> {
        self.answer(Op::KillTask, "kill task", id, move |f| {
            let state = f.lock().tasks.get(id).map(|t| t.state);
            match state {
                None | Some(TaskState::Stopped) => {
                    let code = tonic::Code::NotFound;
                    Err(status("kill task", code, "process already finished"))
                }
                Some(_) => {
                    f.stop(id, 128 + signal, &[]);
                    Ok(())
                }
            }
        })
    }

    fn delete_task<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        self.answer(Op::DeleteTask, "delete task", id, move |f| {
            let mut s = f.lock();
            match s.tasks.get(id).map(|t| t.state) {
                None => Err(status("delete task", tonic::Code::NotFound, "no such task")),
                Some(TaskState::Running) => {
                    let code = tonic::Code::FailedPrecondition;
                    Err(status(
                        "delete task",
                        code,
                        "cannot delete a running process",
                    ))
                }
                Some(_) => {
                    // containerd deletes a task's exec processes with it.
                    s.tasks.remove(id);
                    Ok(())
                }
            }
        })
    }

    fn close_stdin<'a>(&'a self, id: &'a str) -> Rpc<'a, ()> {
        self.answer(Op::CloseStdin, "close task stdin", id, move |f| {
            match f.lock().tasks.contains_key(id) {
                true => Ok(()),
                false => Err(status("close task stdin", tonic::Code::NotFound, "no task")),
            }
        })
    }

    fn list_tasks(&self) -> Rpc<'_, Vec<String>> {
        self.answer(Op::ListTasks, "list tasks", "", move |f| {
            Ok(f.lock().tasks.keys().cloned().collect())
        })
    }

    fn get_container<'a>(&'a self, id: &'a str) -> Rpc<'a, Container> {
        exec::get_container(self, id)
    }

    fn get_task<'a>(&'a self, id: &'a str) -> Rpc<'a, TaskInfo> {
        exec::get_task(self, id)
    }

    fn exec_process(&self, req: ExecProcessRequest) -> Rpc<'_, ()> {
        exec::exec_process(self, req)
    }

    fn start_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, u32> {
        exec::start_process(self, id, exec_id)
    }

    fn wait_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, u32> {
        exec::wait_process(self, id, exec_id)
    }

    fn kill_process<'a>(&'a self, id: &'a str, exec_id: &'a str, signal: u32) -> Rpc<'a, ()> {
        exec::kill_process(self, id, exec_id, signal)
    }

    fn delete_process<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, ()> {
        exec::delete_process(self, id, exec_id)
    }

    fn resize_pty<'a>(
        &'a self,
        id: &'a str,
        exec_id: &'a str,
        _width: u32,
        _height: u32,
    ) -> Rpc<'a, ()> {
        exec::resize_pty(self, id, exec_id, _width, _height)
    }

    fn close_process_stdin<'a>(&'a self, id: &'a str, exec_id: &'a str) -> Rpc<'a, ()> {
        exec::close_process_stdin(self, id, exec_id)
    }

    /// Answers with a layer whose digest is that of the two sides' mount options (the same
    /// mounts, the same layer); writes no content.
    fn diff(&self, req: DiffRequest) -> Rpc<'_, containerd_client::types::Descriptor> {
        let key = req.r#ref.clone();
        self.answer(Op::Diff, "diff", &key, move |_| {
            let sides: Vec<String> = req
                .left
                .iter()
                .chain(&req.right)
                .flat_map(|m| m.options.iter().cloned())
                .collect();
            let digest = crate::images::oci::sha256_digest(sides.join("\n").as_bytes());
            let media_type = if req.media_type.is_empty() {
                crate::images::oci::MEDIA_LAYER_GZIP.to_string()
            } else {
                req.media_type
            };
            Ok(containerd_client::types::Descriptor {
                media_type,
                digest,
                size: 1,
                annotations: HashMap::new(),
            })
        })
    }
}

mod exec;
mod rig;
mod script;
mod snapshots;
mod task;

pub use script::{Behaviour, Call, Op, Reply};
use task::{Task, TaskState};

#[cfg(test)]
mod tests;
