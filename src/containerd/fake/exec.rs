//! The fake's exec processes (Tasks.Exec and the RPCs that name an exec id) and the two
//! lookups a live sandbox needs (Containers.Get, Tasks.Get). An exec process is modelled
//! as a task of its own inside its container's task: created, started (then doing what
//! [`FakeContainerd::exec_behaviour`] says), stopped, deleted; it dies with its task.

use containerd_client::services::v1::{Container, ExecProcessRequest};

use super::{open_writer, status, Behaviour, FakeContainerd, Op, Task, TaskState, FIRST_PID};
use crate::containerd::api::{Rpc, TaskInfo, TaskStatus};

pub(super) fn get_container<'a>(fake: &'a FakeContainerd, id: &'a str) -> Rpc<'a, Container> {
    fake.answer(Op::GetContainer, "get container", id, move |f| {
        f.lock()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| status("get container", tonic::Code::NotFound, "no such id"))
    })
}

pub(super) fn get_task<'a>(fake: &'a FakeContainerd, id: &'a str) -> Rpc<'a, TaskInfo> {
    fake.answer(Op::GetTask, "get task", id, move |f| {
        let s = f.lock();
        let Some(t) = s.tasks.get(id) else {
            return Err(status("get task", tonic::Code::NotFound, "no such task"));
        };
        Ok(TaskInfo {
            pid: t.pid,
            status: match t.state {
                TaskState::Created => TaskStatus::Created,
                TaskState::Running => TaskStatus::Running,
                TaskState::Stopped => TaskStatus::Stopped,
            },
        })
    })
}

pub(super) fn exec_process(fake: &FakeContainerd, req: ExecProcessRequest) -> Rpc<'_, ()> {
    let key = format!("{}/{}", req.container_id, req.exec_id);
    fake.answer(Op::ExecProcess, "exec process", &key, move |f| {
        let op = "exec process";
        let mut s = f.lock();
        s.next_pid = s.next_pid.max(FIRST_PID - 1) + 1;
        let pid = s.next_pid;
        let Some(t) = s.tasks.get_mut(&req.container_id) else {
            return Err(status(op, tonic::Code::NotFound, "no such task"));
        };
        if t.state != TaskState::Running {
            let code = tonic::Code::FailedPrecondition;
            return Err(status(op, code, "task is not running"));
        }
        if t.execs.contains_key(&req.exec_id) {
            let code = tonic::Code::AlreadyExists;
            return Err(status(op, code, "id already in use"));
        }
        let outputs = [&req.stdout, &req.stderr]
            .into_iter()
            .filter_map(|p| open_writer(p))
            .collect();
        let mut e = Task::new(outputs, pid);
        e.spec = req.spec;
        t.execs.insert(req.exec_id, e);
        Ok(())
    })
}

pub(super) fn start_process<'a>(
    fake: &'a FakeContainerd,
    id: &'a str,
    exec_id: &'a str,
) -> Rpc<'a, u32> {
    let key = format!("{id}/{exec_id}");
    fake.answer(Op::StartProcess, "start process", &key, move |f| {
        let op = "start process";
        let (behaviour, pid) = {
            let mut s = f.lock();
            let behaviour = s.exec_behaviour.clone();
            let e = s.tasks.get_mut(id).and_then(|t| t.execs.get_mut(exec_id));
            let Some(e) = e else {
                return Err(status(op, tonic::Code::NotFound, "no such process"));
            };
            if e.state != TaskState::Created {
                let code = tonic::Code::FailedPrecondition;
                return Err(status(op, code, "process already started"));
            }
            e.state = TaskState::Running;
            (behaviour, e.pid)
        };
        if let Behaviour::Exits {
            status,
            after,
            stdout,
        } = behaviour
        {
            let (fake, id, exec_id) = (f.clone(), id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                fake.stop_exec(&id, &exec_id, status, &stdout);
            });
        }
        Ok(pid)
    })
}

pub(super) fn wait_process<'a>(
    fake: &'a FakeContainerd,
    id: &'a str,
    exec_id: &'a str,
) -> Rpc<'a, u32> {
    let key = format!("{id}/{exec_id}");
    let model = fake.answer(Op::WaitProcess, "wait process", &key, move |f| {
        let s = f.lock();
        match s.tasks.get(id).and_then(|t| t.execs.get(exec_id)) {
            Some(e) => Ok(e.exit.subscribe()),
            None => Err(status(
                "wait process",
                tonic::Code::NotFound,
                "no such process",
            )),
        }
    });
    Box::pin(async move {
        let mut rx = model.await?;
        let exited = rx.wait_for(Option::is_some).await;
        match exited.map(|s| *s) {
            Ok(Some(code)) => Ok(code),
            _ => Err(status(
                "wait process",
                tonic::Code::NotFound,
                "process deleted",
            )),
        }
    })
}

pub(super) fn kill_process<'a>(
    fake: &'a FakeContainerd,
    id: &'a str,
    exec_id: &'a str,
    signal: u32,
) -> Rpc<'a, ()> {
    let key = format!("{id}/{exec_id}");
    fake.answer(Op::KillProcess, "kill process", &key, move |f| {
        let mut s = f.lock();
        match s.tasks.get_mut(id).and_then(|t| t.execs.get_mut(exec_id)) {
            Some(e) if e.state == TaskState::Running => {
                e.stop(128 + signal, &[]);
                Ok(())
            }
            _ => {
                let code = tonic::Code::NotFound;
                Err(status("kill process", code, "process already finished"))
            }
        }
    })
}

pub(super) fn delete_process<'a>(
    fake: &'a FakeContainerd,
    id: &'a str,
    exec_id: &'a str,
) -> Rpc<'a, ()> {
    let key = format!("{id}/{exec_id}");
    fake.answer(Op::DeleteProcess, "delete process", &key, move |f| {
        let op = "delete process";
        let mut s = f.lock();
        let Some(t) = s.tasks.get_mut(id) else {
            return Err(status(op, tonic::Code::NotFound, "no such task"));
        };
        match t.execs.get(exec_id).map(|e| e.state) {
            None => Err(status(op, tonic::Code::NotFound, "no such process")),
            Some(TaskState::Running) => {
                let code = tonic::Code::FailedPrecondition;
                Err(status(op, code, "cannot delete a running process"))
            }
            Some(_) => {
                t.execs.remove(exec_id);
                Ok(())
            }
        }
    })
}

pub(super) fn resize_pty<'a>(
    fake: &'a FakeContainerd,
    id: &'a str,
    exec_id: &'a str,
    _width: u32,
    _height: u32,
) -> Rpc<'a, ()> {
    let key = format!("{id}/{exec_id}");
    fake.answer(Op::ResizePty, "resize pty", &key, move |f| {
        let s = f.lock();
        match s.tasks.get(id).and_then(|t| t.execs.get(exec_id)) {
            Some(_) => Ok(()),
            None => Err(status(
                "resize pty",
                tonic::Code::NotFound,
                "no such process",
            )),
        }
    })
}

pub(super) fn close_process_stdin<'a>(
    fake: &'a FakeContainerd,
    id: &'a str,
    exec_id: &'a str,
) -> Rpc<'a, ()> {
    let key = format!("{id}/{exec_id}");
    fake.answer(
        Op::CloseProcessStdin,
        "close process stdin",
        &key,
        move |f| {
            let s = f.lock();
            match s.tasks.get(id).and_then(|t| t.execs.get(exec_id)) {
                Some(_) => Ok(()),
                None => Err(status(
                    "close process stdin",
                    tonic::Code::NotFound,
                    "no such process",
                )),
            }
        },
    )
}
