//! A sandbox's control sequences do not reach the user's terminal: `stockade run` under a
//! real pseudo-terminal (opened by a small python3 driver) shows `ESC ]0;title BEL` and
//! `ESC [2J` as `^[]0;title^G^[[2J`, on stdout and on stderr, while a pipe beside it gets
//! the bytes as they are, and `-t` (the sandbox's own terminal) passes them through.

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{CliHost, BIN};
use common::require_or_skip;

/// Runs argv[3:] with the stream argv[1] names (`stdout` or `stderr`) on a new pty and the
/// other on a pipe, and prints what each received, in hex, one per line: pty, then pipe.
const DRIVER: &str = r#"
import os, pty, subprocess, sys, threading
which, cmd = sys.argv[1], sys.argv[2:]
m, s = pty.openpty()
streams = {"stdout": s, "stderr": subprocess.PIPE} if which == "stdout" else {"stdout": subprocess.PIPE, "stderr": s}
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **streams)
os.close(s)
pipe = p.stderr if which == "stdout" else p.stdout
piped = []
t = threading.Thread(target=lambda: piped.append(pipe.read()))
t.start()
tty = b""
while True:
    try:
        d = os.read(m, 4096)
    except OSError:
        break
    if not d:
        break
    tty += d
t.join()
p.wait()
print(tty.hex())
print(piped[0].hex())
"#;

/// What the pty and the pipe received.
struct Seen {
    tty: Vec<u8>,
    pipe: Vec<u8>,
}

fn run_on_pty(address: &Path, fifo: &Path, which: &str, flags: &[&str], script: &str) -> Seen {
    let out = Command::new("python3")
        .args(["-c", DRIVER, which, BIN, "run", "--cold", "--no-run-log"])
        .arg("--address")
        .arg(address)
        .arg("--fifo-root")
        .arg(fifo)
        .args(flags)
        .args(["--", "sh", "-c", script])
        .env("LANG", "C.UTF-8")
        .env_remove("LC_ALL")
        .env_remove("LC_CTYPE")
        .output()
        .expect("python3 drives the pty");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let mut next = || {
        let h = lines.next().expect("two lines");
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
    };
    Seen {
        tty: next(),
        pipe: next(),
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_no_escape_sequence_and_a_pipe_gets_every_byte() {
    if !require_or_skip(
        "drives stockade run from a pty",
        &["/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/python3"],
    ) {
        return;
    }
    let h = CliHost::start().await;
    let fifo = h.fifo();
    let attack = r"printf '\033]0;pwned\007\033[2J\302\233' ; printf '\033[31mred\n' >&2";

    // stdout on the terminal, stderr on a pipe.
    let s = run_on_pty(h.address(), &fifo, "stdout", &[], attack);
    assert!(
        !s.tty.contains(&0x1b),
        "ESC reached the terminal: {}",
        show(&s.tty)
    );
    assert!(
        !s.tty.contains(&0x07),
        "BEL reached the terminal: {}",
        show(&s.tty)
    );
    assert_eq!(show(&s.tty), show(b"^[]0;pwned^G^[[2JM-^["));
    assert_eq!(
        s.pipe, b"\x1b[31mred\n",
        "the pipe got other bytes than sent"
    );

    // stderr on the terminal, stdout on a pipe.
    let s = run_on_pty(h.address(), &fifo, "stderr", &[], attack);
    assert_eq!(
        show(&s.tty),
        show(b"^[[31mred\r\n"),
        "the terminal's line discipline adds \\r"
    );
    assert_eq!(s.pipe, b"\x1b]0;pwned\x07\x1b[2J\xc2\x9b");

    // `-t`: the sandbox's own terminal, its sequences passed through as asked.
    let s = run_on_pty(h.address(), &fifo, "stdout", &["-t"], attack);
    let title = b"\x1b]0;pwned\x07";
    assert!(
        s.tty.windows(title.len()).any(|w| w == title),
        "with -t the title sequence should pass: {}",
        show(&s.tty)
    );
}
