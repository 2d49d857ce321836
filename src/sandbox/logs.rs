//! The output of a sandbox's main command ([`super::main_process`]), kept in its run
//! directory ([`LOG_FILE`]) while it runs and after it exits, until the sandbox is removed.
//!
//! The file is a sequence of records, each a 16-byte header (the stream, 1 for stdout or 2
//! for stderr; three zero bytes; the payload's length, u32 little-endian; the time it was
//! read, nanoseconds since the Unix epoch, u64 little-endian) and the payload as read from
//! the FIFO. Bytes are kept exactly, whatever they are; a reader turns them into lines or
//! frames as its client wants. At most a cap of each stream is kept (the policy's
//! `max_output`): the rest is read, so the command never blocks on a full pipe, and dropped.
//!
//! [`spawn`] copies the FIFOs into the file and returns a [`LogFeed`], through which any
//! number of readers follow the file as it grows ([`LogFeed::follow`]): every reader reads
//! the file itself, so none can fall behind and lose output.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};

/// The log file in the run directory.
pub const LOG_FILE: &str = "main.log";
/// Bytes of a record's header.
pub const HEADER_LEN: usize = 16;
/// The most bytes one record carries (one read from a FIFO).
const CHUNK: usize = 32 * 1024;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The command's stdout (with a terminal, both streams).
    Stdout = 1,
    /// The command's stderr.
    Stderr = 2,
}

/// One read from the main command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The stream it came from.
    pub stream: Stream,
    /// When it was read, nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// The bytes read.
    pub data: Vec<u8>,
}

/// The bytes of `r` in the log file.
pub fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + r.data.len());
    out.extend_from_slice(&[r.stream as u8, 0, 0, 0]);
    out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
    out.extend_from_slice(&r.unix_nanos.to_le_bytes());
    out.extend_from_slice(&r.data);
    out
}

/// The whole records at the start of `buf` and the bytes they take; a record cut short at
/// the end (still being written) is left for later. Decoding stops at a header naming no
/// stream (a damaged file): what came before it is returned.
pub fn decode(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= HEADER_LEN {
        let h = &buf[at..at + HEADER_LEN];
        let stream = match h[0] {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            _ => break,
        };
        let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
        let unix_nanos = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        if buf.len() - at - HEADER_LEN < len {
            break;
        }
        let start = at + HEADER_LEN;
        out.push(Record {
            stream,
            unix_nanos,
            data: buf[start..start + len].to_vec(),
        });
        at = start + len;
    }
    (out, at)
}

/// Every whole record of the log file at `path` (of a sandbox whose output nobody follows
/// any more, say) and the bytes they take.
pub fn read_all(path: &Path) -> std::io::Result<(Vec<Record>, u64)> {
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let (records, used) = decode(&buf);
    Ok((records, used as u64))
}

/// How far the log file has been written, and whether the output has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of whole records in the file.
    pub len: u64,
    /// Both streams reached end of file: nothing more will be written.
    pub done: bool,
}

/// A log file being written, and where it has got to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogFeed {
    path: PathBuf,
    progress: watch::Receiver<Progress>,
}

impl LogFeed {
    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How far it has been written.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until the output has ended (both streams closed by the sandbox's side).
    pub async fn ended(&self) {
        let mut rx = self.progress.clone();
        let _ = rx.wait_for(|p| p.done).await;
    }

    /// The records from byte offset `from` on (0: all of them; [`Progress::len`]: only
    /// what comes next), as they are written, until the output ends. Dropping the
    /// receiver stops the reader.
    pub fn follow(&self, from: u64) -> mpsc::Receiver<Record> {
        let (tx, rx) = mpsc::channel(64);
        let mut progress = self.progress.clone();
        let path = self.path.clone();
        tokio::spawn(async move {
            let mut offset = from;
            loop {
                let p = *progress.borrow_and_update();
                if p.len > offset {
                    let (records, used) = match read_range(&path, offset, p.len) {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::warn!("{}: {e}", path.display());
                            return;
                        }
                    };
                    offset += used;
                    for r in records {
                        if tx.send(r).await.is_err() {
                            return;
                        }
                    }
                    if used == 0 {
                        return;
                    }
                    continue;
                }
                if p.done || progress.changed().await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// The whole records between byte offsets `from` and `to` of the file at `path`.
fn read_range(path: &Path, from: u64, to: u64) -> std::io::Result<(Vec<Record>, u64)> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::with_capacity((to - from) as usize);
    f.take(to - from).read_to_end(&mut buf)?;
    let (records, used) = decode(&buf);
    Ok((records, used as u64))
}

/// Starts copying `stdout` and `stderr` (none with a terminal) into `<run_dir>/`[`LOG_FILE`]
/// (mode 0600), keeping at most `cap` bytes of each stream. Must run inside a Tokio
/// runtime.
pub fn spawn(
    run_dir: &Path,
    stdout: pipe::Receiver,
    stderr: Option<pipe::Receiver>,
    cap: u64,
) -> std::io::Result<LogFeed> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = run_dir.join(LOG_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    let len = file.metadata()?.len();
    let (tx, rx) = watch::channel(Progress { len, done: false });
    let writer = Arc::new(Writer {
        file: Mutex::new(file),
        progress: tx,
    });
    let (w1, w2) = (writer.clone(), writer.clone());
    tokio::spawn(async move {
        let out = copy(stdout, Stream::Stdout, cap, w1);
        let err = async move {
            if let Some(r) = stderr {
                copy(r, Stream::Stderr, cap, w2).await;
            }
        };
        tokio::join!(out, err);
        writer.progress.send_modify(|p| p.done = true);
    });
    Ok(LogFeed { path, progress: rx })
}

struct Writer {
    file: Mutex<std::fs::File>,
    progress: watch::Sender<Progress>,
}

impl Writer {
    fn append(&self, r: &Record) {
        let bytes = encode(r);
        let mut f = self.file.lock().expect("log file lock");
        match f.write_all(&bytes) {
            Ok(()) => self.progress.send_modify(|p| p.len += bytes.len() as u64),
            Err(e) => tracing::warn!("{LOG_FILE}: {e}"),
        }
    }
}

/// Copies one FIFO into the log until its end, keeping at most `cap` bytes.
async fn copy(mut r: pipe::Receiver, stream: Stream, cap: u64, w: Arc<Writer>) {
    let mut buf = vec![0u8; CHUNK];
    let mut kept = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let keep = (n as u64).min(cap.saturating_sub(kept)) as usize;
        if keep == 0 {
            continue;
        }
        kept += keep as u64;
        w.append(&Record {
            stream,
            unix_nanos: now_nanos(),
            data: buf[..keep].to_vec(),
        });
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_record_waits() {
        let a = Record {
            stream: Stream::Stdout,
            unix_nanos: 1,
            data: b"hi\n".to_vec(),
        };
        let b = Record {
            stream: Stream::Stderr,
            unix_nanos: u64::MAX,
            data: vec![0, 255, b'\n'],
        };
        let mut bytes = encode(&a);
        bytes.extend(encode(&b));
        assert_eq!(decode(&bytes), (vec![a.clone(), b.clone()], bytes.len()));
        // The second record cut short: only the first comes back.
        let cut = &bytes[..bytes.len() - 1];
        assert_eq!(decode(cut), (vec![a.clone()], HEADER_LEN + 3));
        // A damaged header ends decoding.
        let mut bad = encode(&a);
        bad.extend([9u8; HEADER_LEN]);
        assert_eq!(decode(&bad).0, vec![a]);
    }

    #[tokio::test]
    async fn output_is_kept_capped_and_followed_by_every_reader() {
        let t = tempfile::tempdir().unwrap();
        let (out_path, err_path) = (t.path().join("o"), t.path().join("e"));
        for p in [&out_path, &err_path] {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let out = pipe::OpenOptions::new().open_receiver(&out_path).unwrap();
        let err = pipe::OpenOptions::new().open_receiver(&err_path).unwrap();
        let feed = spawn(t.path(), out, Some(err), 5).unwrap();
        let early = feed.follow(0);
        let mut w_out = pipe::OpenOptions::new().open_sender(&out_path).unwrap();
        let mut w_err = pipe::OpenOptions::new().open_sender(&err_path).unwrap();
        use tokio::io::AsyncWriteExt;
        w_out.write_all(b"abc").await.unwrap();
        w_err.write_all(b"E").await.unwrap();
        w_out.write_all(b"defgh").await.unwrap();
        drop((w_out, w_err));
        feed.ended().await;
        let collect = |mut rx: mpsc::Receiver<Record>| async move {
            let mut out = (Vec::new(), Vec::new());
            while let Some(r) = rx.recv().await {
                match r.stream {
                    Stream::Stdout => out.0.extend(r.data),
                    Stream::Stderr => out.1.extend(r.data),
                }
            }
            out
        };
        // The cap keeps 5 bytes of stdout; the rest was read and dropped.
        let want = (b"abcde".to_vec(), b"E".to_vec());
        assert_eq!(collect(early).await, want);
        assert_eq!(collect(feed.follow(0)).await, want, "a late reader");
        let (records, len) = read_all(feed.path()).unwrap();
        assert_eq!(len, feed.progress().len);
        assert_eq!(records.iter().map(|r| r.data.len()).sum::<usize>(), 6);
        assert!(
            feed.follow(len).recv().await.is_none(),
            "nothing after the end"
        );
    }
}
