//! The live part of a run: output pumps, stdin, Tasks.Start after Tasks.Wait, the timeout
//! and cancel loop, usage from the cgroup, and the drain of output after the exit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use containerd_client::services::v1::CreateTaskRequest;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::objects::{bound_rootfs, exec_error, path_string};
use super::{ms, Ended, Live};
use crate::containerd::{Containerd, ContainerdError};
use crate::runner::output::{pump, Pumped, Sink};
use crate::runner::{
    fifo, seal, Cancel, Output, Phases, RunError, Runner, Stdin, Usage, DRAIN_GRACE, KILL_GRACE,
};
use crate::spec;

impl Runner {
    /// Everything after the run directory exists, up to the collected results.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_created(
        &self,
        live: &Live<'_>,
        spec_json: Vec<u8>,
        opened: fifo::Opened,
        stdin: Stdin,
        output: Output,
        cancel: Option<Cancel>,
        phases: &mut Phases,
    ) -> Result<(Ended, Pumped, Pumped, Usage), RunError> {
        let Live {
            id,
            policy,
            base,
            args,
            terminal,
            dir,
            sandbox_uid,
            ..
        } = *live;
        let i = &self.inner;
        let c = &i.containerd;

        seal::stage(&i.fifo_root.join(id), &i.proc_root, policy, sandbox_uid)?;
        let (disks, objects, net) = tokio::join!(
            self.make_disks(id, policy, sandbox_uid),
            self.create_objects(id, base, spec_json, HashMap::new()),
            self.make_network(id, policy)
        );
        let (mounts, t_prep, t_cont) = objects?;
        let (disks, t_disk) = disks?;
        phases.network_ms = net?;
        let mounts = bound_rootfs(&disks, mounts)?;
        phases.prepare_snapshot_ms = t_prep;
        phases.create_container_ms = t_cont;
        phases.disk_ms = t_disk;

        let t = Instant::now();
        let task = c
            .create_task(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: path_string(dir.stdin.as_deref()),
                stdout: dir.stdout.to_string_lossy().into_owned(),
                stderr: path_string(dir.stderr.as_deref()),
                terminal,
                ..Default::default()
            })
            .await;
        let pid = task.map_err(|e| exec_error(args, e))?;
        seal::seal(&i.proc_root, pid, policy)?;
        phases.create_task_ms = ms(t.elapsed());

        self.start_and_wait(live, opened, stdin, None, output, cancel, phases)
            .await
    }

    /// From a created task to the collected results: output pumps, stdin (after
    /// `preamble`, when given), Wait, Start, the timeout and cancel loop, usage, drain.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn start_and_wait(
        &self,
        live: &Live<'_>,
        opened: fifo::Opened,
        stdin: Stdin,
        preamble: Option<Vec<u8>>,
        output: Output,
        cancel: Option<Cancel>,
        phases: &mut Phases,
    ) -> Result<(Ended, Pumped, Pumped, Usage), RunError> {
        let Live {
            id,
            args,
            timeout,
            max_output,
            ..
        } = *live;
        let i = &self.inner;
        let c = &i.containerd;
        // The shim has its ends open now: reading sees data, not an early end of file.
        let (out_sink, err_sink) = sinks(output);
        let out_pump = tokio::spawn(pump(opened.stdout, out_sink, max_output));
        let err_pump = opened
            .stderr
            .map(|r| tokio::spawn(pump(r, err_sink, max_output)));
        let stdin_task = opened
            .stdin
            .map(|tx| spawn_stdin(c.clone(), id.to_string(), None, tx, preamble, stdin));

        // Wait before Start, so that the exit cannot be missed.
        let wait_client = c.clone();
        let wait_id = id.to_string();
        let mut wait: JoinHandle<Result<u32, ContainerdError>> =
            tokio::spawn(async move { wait_client.wait_task(&wait_id).await });

        // A pooled task was started when it was prepared: its pid 1 waits for the line.
        let t = Instant::now();
        let started = match live.pooled {
            true => Ok(()),
            false => c.start_task(id).await,
        };
        phases.start_ms = ms(t.elapsed());
        if let Err(e) = started {
            wait.abort();
            out_pump.abort();
            if let Some(p) = &err_pump {
                p.abort();
            }
            return Err(exec_error(args, e));
        }

        let t_run = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut cancel = cancel.as_ref().map(super::super::Cancel::subscribe);
        let mut timed_out = false;
        let mut cancelled_by = None;
        let joined = loop {
            tokio::select! {
                r = &mut wait => break r,
                _ = tokio::time::sleep_until(deadline), if !timed_out && cancelled_by.is_none() => {
                    timed_out = true;
                    self.kill(id).await?;
                }
                sig = next_cancel(&mut cancel), if cancelled_by.is_none() => {
                    cancelled_by = Some(sig);
                    self.kill(id).await?;
                }
            }
        };
        let status = match joined {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(RunError::Lost {
                    id: id.to_string(),
                    message: e.to_string(),
                })
            }
            Err(join) => {
                return Err(RunError::Lost {
                    id: id.to_string(),
                    message: join.to_string(),
                })
            }
        };
        phases.run_ms = ms(t_run.elapsed());

        let t = Instant::now();
        // Usage and OOM are read before the task (and with it the cgroup) is deleted.
        let usage = i.cgroups.usage(&spec::cgroups_path(id));
        if let Some(s) = stdin_task {
            s.abort();
        }
        let drained = tokio::time::timeout(DRAIN_GRACE, async {
            let o = out_pump.await.unwrap_or_default();
            let e = match err_pump {
                Some(p) => p.await.unwrap_or_default(),
                None => Pumped::default(),
            };
            (o, e)
        })
        .await;
        let (pumped_out, pumped_err) = match drained {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!("run {id}: output still open {DRAIN_GRACE:?} after exit");
                (Pumped::default(), Pumped::default())
            }
        };
        phases.collect_ms = ms(t.elapsed());
        Ok((
            Ended {
                status,
                timed_out,
                cancelled_by,
            },
            pumped_out,
            pumped_err,
            usage,
        ))
    }

    /// SIGKILL to every process of the run's task.
    async fn kill(&self, id: &str) -> Result<(), RunError> {
        let sigkill = nix::sys::signal::Signal::SIGKILL as u32;
        let kill = self.inner.containerd.kill_task(id, sigkill, true);
        match tokio::time::timeout(KILL_GRACE, kill).await {
            Err(_) => Err(RunError::Unkillable { id: id.to_string() }),
            // Already gone: the wait reports the exit.
            Ok(Err(e)) if e.is_not_found() => Ok(()),
            Ok(Err(e)) => Err(RunError::Lost {
                id: id.to_string(),
                message: e.to_string(),
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

pub(crate) async fn next_cancel(rx: &mut Option<tokio::sync::watch::Receiver<Option<i32>>>) -> i32 {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if let Some(sig) = *rx.borrow_and_update() {
            return sig;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

pub(crate) fn sinks(output: Output) -> (Sink, Sink) {
    match output {
        Output::Capture => (Sink::Capture, Sink::Capture),
        Output::Inherit => (
            Sink::Forward(Box::new(tokio::io::stdout())),
            Sink::Forward(Box::new(tokio::io::stderr())),
        ),
        Output::Writers { stdout, stderr } => (Sink::Forward(stdout), Sink::Forward(stderr)),
    }
}

/// Writes `stdin` into the pipe `tx` (a FIFO's or a host pipe's write end), then closes it,
/// so the reader sees end of file. Write errors (the reader has gone) end it quietly.
pub(crate) async fn feed(mut tx: tokio::net::unix::pipe::Sender, stdin: Stdin) {
    match stdin {
        Stdin::Null => {}
        Stdin::Bytes(b) => {
            let _ = tx.write_all(&b).await;
        }
        Stdin::Reader(mut r) => {
            let _ = tokio::io::copy(&mut r, &mut tx).await;
        }
        Stdin::Chunks(mut rx) => {
            while let Some(chunk) = rx.recv().await {
                if tx.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Forwards the request's stdin into the FIFO; at its end, closes our end and asks the
/// shim to close the process's stdin (the task's, or exec process `exec_id`'s), so that
/// the command sees end of file.
pub(crate) fn spawn_stdin(
    c: Arc<dyn Containerd>,
    id: String,
    exec_id: Option<String>,
    mut tx: tokio::net::unix::pipe::Sender,
    preamble: Option<Vec<u8>>,
    stdin: Stdin,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Some(p) = preamble {
            if tx.write_all(&p).await.is_err() {
                return;
            }
        }
        feed(tx, stdin).await;
        let _ = match exec_id {
            Some(e) => c.close_process_stdin(&id, &e).await,
            None => c.close_stdin(&id).await,
        };
    })
}
