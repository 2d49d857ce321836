//! `/containers/{id}/exec` and `/exec/{id}/…`: a command in a running container, through
//! [`crate::sandbox::Sandbox::exec`] (the sandbox's confinement, its timeout and output
//! cap), its stdio over an upgraded connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::stream::frame;
use super::wire::{ExecCreateBody, ExecStartBody};
use super::Docker;
use crate::containerd::TaskStatus;
use crate::runner::{Output, Stdin};
use crate::sandbox::ExecRequest;
use crate::serve::http::{self, no_content, ok_json, read_json, Answer, ApiError};

/// One exec instance.
pub struct Exec {
    /// Its id: 32 random hex digits.
    pub id: String,
    /// The container's id.
    pub container: String,
    body: ExecCreateBody,
    user: Option<String>,
    state: Mutex<ExecState>,
    resize: Mutex<Option<mpsc::Sender<(u16, u16)>>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ExecState {
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pid: u32,
}

impl Docker {
    fn exec(&self, id: &str) -> Result<Arc<Exec>, ApiError> {
        self.execs
            .lock()
            .expect("execs lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }
}

/// `POST /containers/{id}/exec`.
pub async fn create(d: &Arc<Docker>, id: &str, req: Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let body: ExecCreateBody = read_json(req.into_body()).await?;
    if body.privileged {
        return Err(ApiError::new(
            403,
            "Privileged: privileged execs are refused: an exec has exactly the sandbox's confinement",
        ));
    }
    if body.cmd.as_ref().is_none_or(Vec::is_empty) {
        return Err(ApiError::bad("Cmd: no command specified"));
    }
    let user = match body.user.as_str() {
        "" => None,
        u => Some(
            u.split(':')
                .map(|p| if p == "root" { "0" } else { p })
                .collect::<Vec<_>>()
                .join(":"),
        ),
    };
    if c.sandbox.state().await? != TaskStatus::Running {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.sandbox.id()
        )));
    }
    // 32 hex digits: random, and not a sandbox id (those carry `stk-`).
    let exec_id = crate::ids::random_hex(16);
    let e = Arc::new(Exec {
        id: exec_id.clone(),
        container: c.sandbox.id().to_string(),
        body,
        user,
        state: Mutex::new(ExecState::default()),
        resize: Mutex::new(None),
    });
    d.execs
        .lock()
        .expect("execs lock")
        .insert(exec_id.clone(), e);
    Ok(http::json(StatusCode::CREATED, &json!({ "Id": exec_id })))
}

/// Writes each piece of one output stream as the connection carries it (framed unless
/// there is a terminal) into a channel a single writer drains.
struct StreamWriter {
    stream: u8,
    tty: bool,
    tx: Option<mpsc::UnboundedSender<Bytes>>,
}

impl tokio::io::AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let bytes = if self.tty {
            buf.to_vec()
        } else {
            frame(self.stream, buf)
        };
        let sent = self.tx.as_mut().map(|tx| tx.send(Bytes::from(bytes)));
        match sent {
            Some(Ok(())) => Poll::Ready(Ok(buf.len())),
            _ => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

/// `POST /exec/{id}/start`: with `Detach`, runs it and answers at once; otherwise 101 and
/// the connection carries its stdin and output until it exits.
pub async fn start(d: &Arc<Docker>, id: &str, mut req: Request<Incoming>) -> Answer {
    let e = d.exec(id)?;
    let upgrade = hyper::upgrade::on(&mut req);
    let start: ExecStartBody = read_json(req.into_body()).await?;
    {
        let mut s = e.state.lock().expect("exec lock");
        if s.started {
            return Err(ApiError::conflict(format!(
                "exec {id} has already been started"
            )));
        }
        s.started = true;
        s.running = true;
    }
    let c = d.find(&e.container)?;
    let tty = e.body.tty || start.tty;
    let size = start
        .console_size
        .as_deref()
        .or(e.body.console_size.as_deref())
        .and_then(|s| match s {
            [h, w] if *h > 0 && *w > 0 => Some((*w as u16, *h as u16)),
            _ => None,
        });
    if start.detach {
        let req = request_owned(&e, Stdin::Null, Output::Capture, tty, size);
        let (e, sb) = (e.clone(), c.sandbox.clone());
        tokio::spawn(async move {
            let code = match sb.exec(req).await {
                Ok(r) => i32::from(r.exit_code),
                Err(err) => i32::from(err.exit_code()),
            };
            finish(&e, code);
        });
        return no_content(StatusCode::OK);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = |stream| StreamWriter {
        stream,
        tty,
        tx: Some(tx.clone()),
    };
    let output = Output::Writers {
        stdout: Box::new(writer(1)),
        stderr: Box::new(writer(2)),
    };
    let attach_stdin = e.body.attach_stdin;
    let (e2, sb) = (e.clone(), c.sandbox.clone());
    let err_tx = tx;
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::info!("exec {}: {err}", e2.id);
                finish(&e2, 126);
                return;
            }
        };
        let (rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let copier = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        });
        let stdin = if attach_stdin {
            Stdin::Reader(Box::new(rd))
        } else {
            Stdin::Null
        };
        let code = match sb.exec(request_owned(&e2, stdin, output, tty, size)).await {
            Ok(r) => i32::from(r.exit_code),
            Err(err) => {
                let line = format!("{err}\n");
                let bytes = if tty {
                    line.into_bytes()
                } else {
                    frame(2, line.as_bytes())
                };
                let _ = err_tx.send(Bytes::from(bytes));
                i32::from(err.exit_code())
            }
        };
        // The status is known before the client sees the stream end and asks for it.
        finish(&e2, code);
        drop(err_tx);
        let _ = copier.await;
    });
    Ok(http::switching(!tty))
}

/// The request of exec `e` (its resize channel taken), with this stdin and output.
fn request_owned(
    e: &Exec,
    stdin: Stdin,
    output: Output,
    tty: bool,
    size: Option<(u16, u16)>,
) -> ExecRequest {
    let (tx, rx) = mpsc::channel(4);
    *e.resize.lock().expect("exec lock") = Some(tx);
    ExecRequest {
        argv: e.body.cmd.clone().unwrap_or_default(),
        env: e.body.env.clone().unwrap_or_default(),
        cwd: Some(e.body.working_dir.clone()).filter(|w| !w.is_empty()),
        user: e.user.clone(),
        stdin,
        output,
        tty,
        console_size: size,
        resize: Some(rx),
        timeout: None,
        max_output: None,
        cancel: None,
    }
}

fn finish(e: &Exec, code: i32) {
    let mut s = e.state.lock().expect("exec lock");
    s.running = false;
    s.exit_code = Some(code);
}

/// `POST /exec/{id}/resize?h=ROWS&w=COLUMNS`.
pub async fn resize(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let e = d.exec(id)?;
    let (w, h) = super::containers::size(req)?;
    let tx = e.resize.lock().expect("exec lock").clone();
    if let Some(tx) = tx {
        let _ = tx.try_send((w, h));
    }
    no_content(StatusCode::OK)
}

/// `GET /exec/{id}/json`.
pub fn inspect(d: &Arc<Docker>, id: &str) -> Answer {
    let e = d.exec(id)?;
    let s = *e.state.lock().expect("exec lock");
    let cmd = e.body.cmd.clone().unwrap_or_default();
    ok_json(&json!({
        "ID": e.id,
        "Running": s.running,
        "ExitCode": s.exit_code.map(Value::from).unwrap_or(Value::Null),
        "ProcessConfig": {
            "tty": e.body.tty,
            "entrypoint": cmd.first(),
            "arguments": cmd.get(1..).unwrap_or(&[]),
            "privileged": false,
            "user": e.body.user,
        },
        "OpenStdin": e.body.attach_stdin,
        "OpenStderr": e.body.attach_stderr,
        "OpenStdout": e.body.attach_stdout,
        "CanRemove": false,
        "ContainerID": e.container,
        "DetachKeys": "",
        "Pid": s.pid,
    }))
}
