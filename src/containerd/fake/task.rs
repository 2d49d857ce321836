//! A task (or an exec process) in the fake's model: its state, exit, held output FIFOs
//! and exec processes.

use std::collections::BTreeMap;

use tokio::sync::watch;

/// The state of a task in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskState {
    Created,
    Running,
    Stopped,
}

pub(super) struct Task {
    pub(super) state: TaskState,
    /// The exit status, once stopped.
    pub(super) exit: watch::Sender<Option<u32>>,
    /// The write ends of the output FIFOs, held as the shim holds them.
    pub(super) outputs: Vec<std::fs::File>,
    /// Its exec processes, by exec id (a task's init is not among them).
    pub(super) execs: BTreeMap<String, Task>,
    /// The exec process's spec as Tasks.Exec carried it (`None` for a task).
    pub(super) spec: Option<prost_types::Any>,
    pub(super) pid: u32,
}

impl Task {
    pub(super) fn new(outputs: Vec<std::fs::File>, pid: u32) -> Task {
        Task {
            state: TaskState::Created,
            exit: watch::channel(None).0,
            outputs,
            execs: BTreeMap::new(),
            spec: None,
            pid,
        }
    }

    /// Stops it with `exit` unless it has stopped already, writing `stdout` and closing its
    /// output.
    pub(super) fn stop(&mut self, exit: u32, stdout: &[u8]) {
        if self.state == TaskState::Stopped {
            return;
        }
        if let Some(out) = self.outputs.first_mut() {
            use std::io::Write;
            let _ = out.write_all(stdout);
        }
        self.outputs.clear();
        self.state = TaskState::Stopped;
        self.exit.send_replace(Some(exit));
    }
}
