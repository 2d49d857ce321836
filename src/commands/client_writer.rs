//! Writing to a served client's stdout or stderr without ever leaving a server thread
//! blocked on it: a client killed while its output is a full pipe that something else
//! still holds open (and never reads) must not pin a thread and the pipe in the server.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use stockade::runner::Cancel;
use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

/// The most one write asks of the descriptor once it reports room: `PIPE_BUF`, which a pipe
/// reporting room takes whole (unless another writer filled it in between).
const CHUNK: usize = 4096;

/// The most one blocking task takes from the caller's buffer (written [`CHUNK`] at a time).
const TASK_BYTES: usize = 64 * 1024;

/// How often a write waiting for room looks again whether the run was cancelled.
const RECHECK: Duration = Duration::from_millis(100);

/// An [`AsyncWrite`] to one of a served client's descriptors. Up to [`TASK_BYTES`] at a time
/// are written on a blocking thread that waits for room (`poll`, [`RECHECK`] at a time)
/// and writes at most [`CHUNK`] bytes whenever there is some, so output keeps the pace of
/// the client's reader as a standalone run's does; once the run is cancelled (the client
/// asked, or its connection went), a write that finds no room fails with `BrokenPipe`
/// instead of waiting, and the thread and the descriptor are let go.
pub(crate) struct ClientWriter {
    fd: Arc<OwnedFd>,
    cancelled: Cancel,
    pending: Option<JoinHandle<io::Result<()>>>,
}

impl ClientWriter {
    pub(crate) fn new(fd: OwnedFd, cancelled: Cancel) -> ClientWriter {
        ClientWriter {
            fd: Arc::new(fd),
            cancelled,
            pending: None,
        }
    }

    /// Waits for the write in flight, if any.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(handle) = self.pending.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let done = std::task::ready!(Pin::new(handle).poll(cx));
        self.pending = None;
        Poll::Ready(done.unwrap_or_else(|e| Err(io::Error::other(e))))
    }
}

impl AsyncWrite for ClientWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let chunk = buf[..buf.len().min(TASK_BYTES)].to_vec();
        let n = chunk.len();
        let (fd, cancelled) = (this.fd.clone(), this.cancelled.clone());
        this.pending = Some(tokio::task::spawn_blocking(move || {
            write_when_room(&fd, &chunk, &|| cancelled.reason().is_some())
        }));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_pending(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_pending(cx)
    }
}

/// Writes all of `bytes` to `fd`, at most [`CHUNK`] at a time and only once `fd` reports
/// room; gives up with `BrokenPipe` when there is none and `give_up()` says so, or when
/// the reader is gone. Another writer filling a pipe between the `poll` and the write makes
/// that one write wait until the pipe's reader reads or closes it.
fn write_when_room(fd: &OwnedFd, bytes: &[u8], give_up: &dyn Fn() -> bool) -> io::Result<()> {
    let mut done = 0;
    let wait = Timespec::try_from(RECHECK).expect("a short duration");
    while done < bytes.len() {
        let mut fds = [PollFd::new(fd, PollFlags::OUT)];
        let ready = poll(&mut fds, Some(&wait)).map_err(io::Error::from)?;
        let revents = fds[0].revents();
        if ready == 0 || !revents.contains(PollFlags::OUT) {
            if revents.intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if give_up() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the run was cancelled and the client's output takes nothing",
                ));
            }
            continue;
        }
        let end = bytes.len().min(done + CHUNK);
        match rustix::io::write(fd.as_fd(), &bytes[done..end]) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pipe whose write end is full (the read end is returned, unread).
    fn full_pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let flags = rustix::fs::fcntl_getfl(&w).unwrap();
        rustix::fs::fcntl_setfl(&w, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
        while rustix::io::write(&w, &[0u8; 4096]).is_ok() {}
        rustix::fs::fcntl_setfl(&w, flags).unwrap();
        (r, w)
    }

    #[tokio::test]
    async fn output_arrives_whole_and_in_order() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = tokio::fs::File::from_std(std::fs::File::from(r));
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut writer = ClientWriter::new(w, Cancel::new());
        writer.write_all(&data).await.unwrap();
        writer.shutdown().await.unwrap();
        drop(writer);
        assert_eq!(read.await.unwrap(), data);
    }

    #[tokio::test]
    async fn a_full_pipe_holds_the_writer_until_the_run_is_cancelled_then_lets_go() {
        let (r, w) = full_pipe();
        let cancel = Cancel::new();
        let mut writer = ClientWriter::new(w, cancel.clone());
        writer.write_all(b"more").await.unwrap();
        // Nothing reads: the write waits (backpressure, as a standalone run's would)...
        let waited = tokio::time::timeout(Duration::from_millis(300), writer.flush()).await;
        assert!(waited.is_err(), "a full pipe took the bytes");
        // ...until the run is cancelled: then it fails instead of waiting for good.
        cancel.cancel(1);
        let err = tokio::time::timeout(Duration::from_secs(10), writer.flush())
            .await
            .expect("the write still waits after the cancel")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        // The descriptor is the writer's alone again: dropping it closes the pipe.
        assert_eq!(Arc::strong_count(&writer.fd), 1);
        drop(writer);
        drop(r);
    }

    #[tokio::test]
    async fn a_cancelled_run_still_writes_where_there_is_room() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let cancel = Cancel::new();
        cancel.cancel(15);
        let mut writer = ClientWriter::new(w, cancel);
        writer.write_all(b"last words").await.unwrap();
        writer.shutdown().await.unwrap();
        drop(writer);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
        assert_eq!(got, "last words");
    }

    #[tokio::test]
    async fn a_reader_gone_is_a_broken_pipe() {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let mut writer = ClientWriter::new(w, Cancel::new());
        writer.write_all(b"to nobody").await.unwrap();
        let err = writer.flush().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
