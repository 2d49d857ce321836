//! Container output on the wire: attach (an upgraded connection, stdin in, output out) and
//! logs (a streamed body). Without a terminal each piece of output is framed with Docker's
//! 8-byte header (the stream: 1 stdout, 2 stderr; three zero bytes; the length, u32
//! big-endian); with one, the bytes go as they are.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Container, Docker};
use crate::sandbox::logs::{self, Record, Stream};
use crate::serve::http::{self, channel_body, flag, query, Answer, ApiError};

/// One frame of a multiplexed stream.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// `data` of `stream` as the connection carries it.
fn wire(tty: bool, stream: Stream, data: &[u8]) -> Vec<u8> {
    if tty {
        data.to_vec()
    } else {
        frame(stream as u8, data)
    }
}

/// Which streams a client asked for.
#[derive(Clone, Copy)]
struct Wanted {
    stdout: bool,
    stderr: bool,
}

impl Wanted {
    fn of(q: &HashMap<String, String>) -> Wanted {
        Wanted {
            stdout: flag(q, "stdout"),
            stderr: flag(q, "stderr"),
        }
    }
    fn takes(&self, s: Stream) -> bool {
        match s {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        }
    }
}

/// `POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1[&logs=1]`: 101, then
/// the connection carries the output (from now on; with `logs`, from the start) until it
/// ends, and the client's bytes to the command's stdin; when the client closes its side
/// and the container was made with `StdinOnce`, the command's stdin is closed.
pub fn attach(d: &Arc<Docker>, id: &str, mut req: Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let q = query(&req);
    let want = Wanted::of(&q);
    let stdin = flag(&q, "stdin") && c.open_stdin;
    let from = if flag(&q, "logs") {
        0
    } else {
        c.feed.progress().len
    };
    // Following starts now, before the answer: nothing written meanwhile is missed.
    let mut output = flag(&q, "stream").then(|| c.feed.follow(from));
    let replay = (!flag(&q, "stream") && flag(&q, "logs")).then(|| c.feed.path().to_path_buf());
    let upgrade = hyper::upgrade::on(&mut req);
    let tty = c.tty;
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::info!("attach {}: {e}", c.sandbox.id());
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let input = stdin.then(|| {
            let c = c.clone();
            tokio::spawn(async move { forward_stdin(&c, &mut rd).await })
        });
        if let Some(path) = replay {
            if let Ok((records, _)) = logs::read_all(&path) {
                for r in records.iter().filter(|r| want.takes(r.stream)) {
                    if wr.write_all(&wire(c.tty, r.stream, &r.data)).await.is_err() {
                        break;
                    }
                }
            }
        }
        if let Some(rx) = output.as_mut() {
            while let Some(r) = rx.recv().await {
                if !want.takes(r.stream) {
                    continue;
                }
                if wr.write_all(&wire(c.tty, r.stream, &r.data)).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
        if let Some(i) = input {
            i.abort();
        }
    });
    Ok(http::switching(!tty))
}

/// Copies the client's bytes into the command's stdin until the client closes its side;
/// then, with `StdinOnce`, closes the command's stdin.
async fn forward_stdin<R: tokio::io::AsyncRead + Unpin>(c: &Container, rd: &mut R) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut guard = c.stdin.lock().await;
        let Some(tx) = guard.as_mut() else { return };
        if tx.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    if c.stdin_once {
        drop(c.stdin.lock().await.take());
        if let Err(e) = c.sandbox.close_main_stdin().await {
            tracing::info!("closing stdin of {}: {e}", c.sandbox.id());
        }
    }
}

/// `GET /containers/{id}/logs?stdout=1&stderr=1[&follow=1][&tail=N][&timestamps=1]
/// [&since=T][&until=T]`.
pub fn logs(d: &Arc<Docker>, id: &str, req: &Request<Incoming>) -> Answer {
    let c = d.find(id)?;
    let q = query(req);
    let want = Wanted::of(&q);
    if !want.stdout && !want.stderr {
        return Err(ApiError::bad(
            "you must choose at least one stream (stdout=1 or stderr=1)",
        ));
    }
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("" | "all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad(format!("tail: `{n}` is not a number")))?,
        ),
    };
    let since = time_param(&q, "since")?;
    let until = time_param(&q, "until")?;
    let opts = LogOptions {
        want,
        tail,
        since,
        until,
        timestamps: flag(&q, "timestamps"),
        tty: c.tty,
    };
    let (records, len) =
        logs::read_all(c.feed.path()).map_err(|e| ApiError::internal(format!("log file: {e}")))?;
    let mut follow = flag(&q, "follow").then(|| c.feed.follow(len));
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for chunk in render(&records, &opts) {
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        if let Some(rx) = follow.as_mut() {
            let opts = LogOptions { tail: None, ..opts };
            while let Some(r) = rx.recv().await {
                for chunk in render(std::slice::from_ref(&r), &opts) {
                    if tx.send(Bytes::from(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(http::streamed(http::content_type(!c.tty), body))
}

/// A time in a query: unix seconds, with a fraction or not; as nanoseconds.
fn time_param(q: &HashMap<String, String>, key: &str) -> Result<Option<u64>, ApiError> {
    match q.get(key).map(String::as_str) {
        None | Some("" | "0") => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s >= 0.0)
            .map(|s| Some((s * 1e9) as u64))
            .ok_or_else(|| ApiError::bad(format!("{key}: `{v}` is not a unix time"))),
    }
}

/// How logs are rendered.
#[derive(Clone, Copy)]
struct LogOptions {
    want: Wanted,
    tail: Option<usize>,
    since: Option<u64>,
    until: Option<u64>,
    timestamps: bool,
    tty: bool,
}

/// The records as the client gets them: split into lines (a line's pieces stay where the
/// reads split them), filtered by stream and time, the last `tail` lines, each with its
/// time in front when asked, framed unless there is a terminal. Pure.
fn render(records: &[Record], o: &LogOptions) -> Vec<Vec<u8>> {
    let mut lines: Vec<(Stream, u64, &[u8])> = Vec::new();
    for r in records {
        if !o.want.takes(r.stream)
            || o.since.is_some_and(|s| r.unix_nanos < s)
            || o.until.is_some_and(|u| r.unix_nanos > u)
        {
            continue;
        }
        for piece in r.data.split_inclusive(|b| *b == b'\n') {
            lines.push((r.stream, r.unix_nanos, piece));
        }
    }
    if let Some(n) = o.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
        .into_iter()
        .map(|(stream, nanos, data)| {
            let mut payload = Vec::new();
            if o.timestamps {
                payload.extend(timestamp(nanos).into_bytes());
                payload.push(b' ');
            }
            payload.extend_from_slice(data);
            wire(o.tty, stream, &payload)
        })
        .collect()
}

/// RFC 3339 with nanoseconds.
fn timestamp(nanos: u64) -> String {
    let base = crate::runner::journal::rfc3339_millis(nanos / 1_000_000);
    format!("{}{:06}Z", base.trim_end_matches('Z'), nanos % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(stream: Stream, secs: u64, data: &[u8]) -> Record {
        Record {
            stream,
            unix_nanos: secs * 1_000_000_000,
            data: data.to_vec(),
        }
    }

    fn opts() -> LogOptions {
        LogOptions {
            want: Wanted {
                stdout: true,
                stderr: true,
            },
            tail: None,
            since: None,
            until: None,
            timestamps: false,
            tty: false,
        }
    }

    #[test]
    fn frames_carry_the_stream_and_a_big_endian_length() {
        assert_eq!(frame(1, b"hi\n"), b"\x01\0\0\0\0\0\0\x03hi\n");
        assert_eq!(frame(2, &[]), b"\x02\0\0\0\0\0\0\0");
        assert_eq!(frame(1, &[0u8; 300])[4..8], [0, 0, 1, 44]);
    }

    #[test]
    fn logs_are_filtered_tailed_and_stamped_as_asked() {
        let records = [
            rec(Stream::Stdout, 10, b"a\nb\n"),
            rec(Stream::Stderr, 20, b"err\n"),
            rec(Stream::Stdout, 30, b"c\n"),
        ];
        let all = render(&records, &opts());
        assert_eq!(all.len(), 4);
        assert_eq!(all[2], frame(2, b"err\n"));
        let tty = render(
            &records,
            &LogOptions {
                tty: true,
                ..opts()
            },
        );
        assert_eq!(tty.concat(), b"a\nb\nerr\nc\n");
        let tail = render(
            &records,
            &LogOptions {
                tail: Some(2),
                tty: true,
                ..opts()
            },
        );
        assert_eq!(tail.concat(), b"err\nc\n");
        let out_only = LogOptions {
            want: Wanted {
                stdout: true,
                stderr: false,
            },
            tty: true,
            ..opts()
        };
        assert_eq!(render(&records, &out_only).concat(), b"a\nb\nc\n");
        let window = LogOptions {
            since: Some(15_000_000_000),
            until: Some(25_000_000_000),
            tty: true,
            ..opts()
        };
        assert_eq!(render(&records, &window).concat(), b"err\n");
        let stamped = render(
            &records[2..],
            &LogOptions {
                timestamps: true,
                tty: true,
                ..opts()
            },
        );
        assert_eq!(stamped.concat(), b"1970-01-01T00:00:30.000000000Z c\n");
        assert_eq!(
            render(
                &records,
                &LogOptions {
                    tail: Some(0),
                    ..opts()
                }
            )
            .len(),
            0
        );
    }
}
