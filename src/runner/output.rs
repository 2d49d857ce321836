//! Copying one output stream of the sandbox (a FIFO) to where it goes, capped: the first
//! `cap` bytes are kept or forwarded, the rest is read and dropped (so the process never
//! blocks on a full pipe) and the stream is marked truncated.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Truncated;

/// Where one stream goes.
pub enum Sink {
    /// Kept in memory and returned in the result.
    Capture,
    /// Forwarded as it arrives (flushed after every chunk), not kept.
    Forward(Box<dyn AsyncWrite + Send + Unpin>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Capture => f.write_str("Capture"),
            Sink::Forward(_) => f.write_str("Forward(..)"),
        }
    }
}

/// What a finished copy saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pumped {
    /// The captured bytes (empty when forwarded).
    pub captured: Vec<u8>,
    /// Every byte the process wrote, kept or not.
    pub total: u64,
    /// More than the cap was written; the rest was dropped.
    pub truncated: bool,
    /// The destination failed (e.g. a closed terminal); the rest was drained and dropped.
    pub sink_error: Option<String>,
}

/// What a run's or an exec's result says of its two output streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reported {
    /// Captured stdout, UTF-8 with invalid bytes replaced.
    pub stdout: String,
    /// Captured stderr, likewise.
    pub stderr: String,
    /// Which streams lost output to the cap.
    pub truncated: Truncated,
    /// Bytes written to stdout, kept or not.
    pub stdout_bytes: u64,
    /// Bytes written to stderr, kept or not.
    pub stderr_bytes: u64,
}

impl Reported {
    /// The report of the copies of stdout (`out`) and stderr (`err`).
    pub(crate) fn of(out: &Pumped, err: &Pumped) -> Reported {
        Reported {
            stdout: String::from_utf8_lossy(&out.captured).into_owned(),
            stderr: String::from_utf8_lossy(&err.captured).into_owned(),
            truncated: Truncated {
                stdout: out.truncated,
                stderr: err.truncated,
            },
            stdout_bytes: out.total,
            stderr_bytes: err.total,
        }
    }
}

/// Copies `src` to `sink` until end of file, keeping at most `cap` bytes. Read errors end
/// the copy as if at end of file (the shim has gone); they are not the command's fault.
pub async fn pump<R: AsyncRead + Unpin>(mut src: R, mut sink: Sink, cap: u64) -> Pumped {
    let mut out = Pumped::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = cap.saturating_sub(out.total);
        let keep = (n as u64).min(room) as usize;
        out.total += n as u64;
        if keep < n {
            out.truncated = true;
        }
        if keep == 0 {
            continue;
        }
        match &mut sink {
            Sink::Capture => out.captured.extend_from_slice(&buf[..keep]),
            Sink::Forward(w) => {
                if out.sink_error.is_none() {
                    let r = async {
                        w.write_all(&buf[..keep]).await?;
                        w.flush().await
                    }
                    .await;
                    if let Err(e) = r {
                        out.sink_error = Some(e.to_string());
                    }
                }
            }
        }
    }
    if let Sink::Forward(w) = &mut sink {
        // Shut down, not only flushed: a filtering writer writes out what it still holds.
        let _ = w.shutdown().await;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    /// A reader that hands out its data in fixed-size pieces, like a pipe.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self
                .chunk
                .min(self.data.len() - self.pos)
                .min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that records what it was given.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<u8>>>);

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A writer whose destination is gone.
    struct Broken;

    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn capture_keeps_exactly_the_cap_and_counts_everything() {
        struct Case {
            len: usize,
            cap: u64,
            chunk: usize,
            kept: usize,
            truncated: bool,
        }
        let cases = [
            Case {
                len: 0,
                cap: 10,
                chunk: 4,
                kept: 0,
                truncated: false,
            },
            Case {
                len: 10,
                cap: 10,
                chunk: 3,
                kept: 10,
                truncated: false,
            },
            Case {
                len: 11,
                cap: 10,
                chunk: 3,
                kept: 10,
                truncated: true,
            },
            Case {
                len: 100_000,
                cap: 1000,
                chunk: 4096,
                kept: 1000,
                truncated: true,
            },
            Case {
                len: 5,
                cap: 0,
                chunk: 5,
                kept: 0,
                truncated: true,
            },
        ];
        for c in cases {
            let d = data(c.len);
            let src = Chunked {
                data: d.clone(),
                pos: 0,
                chunk: c.chunk,
            };
            let got = pump(src, Sink::Capture, c.cap).await;
            assert_eq!(got.captured, d[..c.kept], "len {} cap {}", c.len, c.cap);
            assert_eq!(got.total, c.len as u64);
            assert_eq!(got.truncated, c.truncated, "len {} cap {}", c.len, c.cap);
        }
    }

    #[tokio::test]
    async fn forward_passes_the_capped_prefix_through_and_keeps_nothing() {
        let rec = Recorder::default();
        let d = data(50_000);
        let src = Chunked {
            data: d.clone(),
            pos: 0,
            chunk: 7000,
        };
        let got = pump(src, Sink::Forward(Box::new(rec.clone())), 20_000).await;
        assert!(got.captured.is_empty());
        assert!(got.truncated);
        assert_eq!(got.total, 50_000);
        assert_eq!(*rec.0.lock().unwrap(), d[..20_000]);
    }

    #[tokio::test]
    async fn a_broken_destination_still_drains_the_source() {
        let src = Chunked {
            data: data(10_000),
            pos: 0,
            chunk: 1000,
        };
        let got = pump(src, Sink::Forward(Box::new(Broken)), 1 << 20).await;
        assert_eq!(got.total, 10_000, "the whole stream was read");
        assert!(got.sink_error.is_some());
    }

    #[test]
    fn a_report_replaces_invalid_utf8_and_keeps_each_streams_counts() {
        let out = Pumped {
            captured: b"ok \xff".to_vec(),
            total: 10,
            truncated: true,
            sink_error: None,
        };
        let err = Pumped {
            captured: b"warn".to_vec(),
            total: 4,
            ..Pumped::default()
        };
        let want = Reported {
            stdout: "ok \u{fffd}".into(),
            stderr: "warn".into(),
            truncated: Truncated {
                stdout: true,
                stderr: false,
            },
            stdout_bytes: 10,
            stderr_bytes: 4,
        };
        assert_eq!(Reported::of(&out, &err), want);
    }
}
