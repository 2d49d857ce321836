//! The `stockade` binary as a user runs it: the command, its captured outcome, the one-line
//! error check, and a private containerd with the busybox image to point it at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use stockade::containerd::Client;

use super::{busybox_image, PrivateContainerd};

/// The `stockade` binary this test build made.
pub const BIN: &str = env!("CARGO_BIN_EXE_stockade");

/// `stockade ARGS…`, to add more to.
pub fn stockade(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    c
}

/// What a finished command gave: its exit code (-1 when a signal ended it), stdout as
/// bytes, stderr as text.
#[derive(Debug)]
pub struct Out {
    /// The exit code, or -1 when a signal ended the process.
    pub code: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (lossy UTF-8).
    pub stderr: String,
}

impl Out {
    /// Stdout as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` to its end with `stdin` fed to it (fed from a thread, so a command that
/// writes before it reads cannot deadlock), capturing stdout and stderr.
pub fn output(cmd: &mut Command, stdin: &[u8]) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stockade");
    let mut si = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let feed = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for stockade");
    feed.join().expect("stdin feeder");
    out.into()
}

/// One stockade error line: exit 125, stderr exactly one line starting `stockade: ` that
/// contains `contains`.
pub fn assert_one_line_125(what: &str, out: &Out, contains: &str) {
    let err = &out.stderr;
    assert_eq!(out.code, 125, "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err:?}");
    assert!(err.starts_with("stockade: "), "{what}: {err}");
    assert!(err.contains(contains), "{what}: {err}");
}

/// A private containerd with the busybox image, a client of it in the `stockade`
/// namespace, and a tempdir whose `fifo` directory holds the run directories: what a test
/// points the CLI at.
pub struct CliHost {
    /// The test's own containerd (stopped, and its leftovers removed, on drop).
    pub containerd: PrivateContainerd,
    /// A client of it in the `stockade` namespace.
    pub client: Client,
    /// Scratch space; the run directories live in its `fifo`.
    pub dir: tempfile::TempDir,
}

impl CliHost {
    /// Starts the containerd and puts the busybox image in it.
    pub async fn start() -> CliHost {
        let containerd = PrivateContainerd::start().await;
        let client = containerd.client("stockade").await;
        busybox_image(&client).await;
        CliHost {
            containerd,
            client,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The containerd's socket.
    pub fn address(&self) -> &Path {
        self.containerd.address()
    }

    /// The parent of the run directories (`--fifo-root`).
    pub fn fifo(&self) -> PathBuf {
        self.dir.path().join("fifo")
    }

    /// `stockade SUB --address … --fifo-root …`, to add arguments to.
    pub fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg(sub)
            .arg("--address")
            .arg(self.address())
            .arg("--fifo-root")
            .arg(self.fifo());
        c
    }

    /// `stockade SUB --address … --fifo-root … ARGS…` run to its end, `stdin` fed to it.
    pub fn stockade(&self, sub: &str, args: &[&str], stdin: &[u8]) -> Out {
        output(self.command(sub).args(args), stdin)
    }
}
