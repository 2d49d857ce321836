//! `stockade run` and `stockade create` honour an image's ENTRYPOINT, CMD, ENV, WORKDIR
//! and USER (`images::config_merge`), against a real (private) containerd through the
//! binary: an image built from a Dockerfile run with no command, with one, with
//! `--entrypoint`, `--user`, `-w` and `-e`; a long-lived sandbox's execs under the image's
//! environment, directory and user; an image that says `USER 0` not made root; no command
//! anywhere refused with exit 125 and one line; the built-in image's `pwd` unchanged.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stockade");
const NS: &str = "stockade-imgcfg-test";

/// Exit code, stdout, stderr.
type Out = (i32, String, String);

struct Env<'a> {
    socket: &'a Path,
    dir: &'a Path,
}

impl Env<'_> {
    /// `stockade SUB --namespace NS --address … [--fifo-root …] ARGS…`
    fn stockade(&self, sub: &[&str], fifo: bool, args: &[&str]) -> Out {
        let mut c = Command::new(BIN);
        c.args(sub)
            .args(["--namespace", NS, "--address"])
            .arg(self.socket);
        if fifo {
            c.arg("--fifo-root").arg(self.dir.join("fifo"));
        }
        let out = c
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run stockade");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `stockade run --image IMAGE FLAGS… [-- CMD…]`.
    fn run(&self, image: &str, flags: &[&str], cmd: Option<&[&str]>) -> Out {
        let mut args = vec!["--no-run-log", "--cleanup", "inline", "--image", image];
        args.extend(flags);
        if let Some(cmd) = cmd {
            args.push("--");
            args.extend(cmd);
        }
        self.stockade(&["run"], true, &args)
    }

    /// `stockade image build -f DOCKERFILE -t TAG CONTEXT`, which must succeed.
    fn build(&self, tag: &str, dockerfile: &str) {
        let ctx = self.dir.join(format!("ctx-{tag}"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        let df = ctx.join("Dockerfile");
        let cache = self.dir.join("cache");
        let (code, _, err) = self.stockade(
            &["image", "build"],
            false,
            &[
                "--cache-dir",
                cache.to_str().unwrap(),
                "-f",
                df.to_str().unwrap(),
                "-t",
                tag,
                ctx.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "build {tag}: {err}");
    }
}

const APP: &str = r#"FROM stockade/busybox
ENV APP_HOME=/app MODE="two words"
COPY hello.txt /app/
WORKDIR /app
USER 1000:1000
ENTRYPOINT ["/bin/echo", "entry"]
CMD ["default-arg"]
"#;

/// What the process sees: uid, gid, cwd and two variables.
const PROBE: &str = "id -u; id -g; pwd; echo \"$APP_HOME|$MODE|$HOME\"";

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_create_honour_the_image_config() {
    if !common::require_root_or_skip("image config runs need containerd") {
        return;
    }
    let c = common::PrivateContainerd::start().await;
    let client = c.client(NS).await;
    common::busybox_image(&client).await;
    let dir = tempfile::Builder::new()
        .prefix("stk-imgcfg-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let env = Env {
        socket: c.address(),
        dir: dir.path(),
    };
    env.build("app:1", APP);

    // No command: ENTRYPOINT then CMD.
    let (code, out, err) = env.run("app:1", &[], None);
    assert_eq!((code, out.as_str()), (0, "entry default-arg\n"), "{err}");
    // A command replaces CMD and keeps ENTRYPOINT.
    let (code, out, err) = env.run("app:1", &[], Some(&["x", "y"]));
    assert_eq!((code, out.as_str()), (0, "entry x y\n"), "{err}");
    // --entrypoint replaces ENTRYPOINT and drops CMD.
    let (code, out, err) = env.run("app:1", &["--entrypoint", "/bin/pwd"], None);
    assert_eq!((code, out.as_str()), (0, "/app\n"), "{err}");
    // --entrypoint "": only the command; it sees the image's user, directory and ENV.
    let (code, out, err) = env.run("app:1", &["--entrypoint", ""], Some(&["sh", "-c", PROBE]));
    assert_eq!(
        (code, lines(&out)),
        (0, vec!["1000", "1000", "/app", "/app|two words|/tmp"]),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    // Flags win: --user, -w, -e.
    let (code, out, err) = env.run(
        "app:1",
        &[
            "--entrypoint",
            "",
            "--user",
            "2000:2001",
            "-w",
            "/tmp",
            "-e",
            "MODE=flag",
        ],
        Some(&["sh", "-c", PROBE]),
    );
    assert_eq!(
        (code, lines(&out)),
        (0, vec!["2000", "2001", "/tmp", "/app|flag|/tmp"]),
        "{err}"
    );

    // A long-lived sandbox: every exec runs under the image's ENV, WORKDIR and USER.
    let (code, id, err) = env.stockade(&["create"], true, &["--image", "app:1"]);
    assert_eq!(code, 0, "create: {err}");
    let id = id.trim().to_string();
    let (code, out, err) = env.stockade(&["exec"], true, &[&id, "--", "sh", "-c", PROBE]);
    assert_eq!(
        (code, lines(&out)),
        (0, vec!["1000", "1000", "/app", "/app|two words|/tmp"]),
        "{err}"
    );
    let (code, _, err) = env.stockade(&["rm", "-f"], true, &[&id]);
    assert_eq!(code, 0, "rm: {err}");

    // The attack: an image that says USER 0 does not get root; a warning says so.
    env.build(
        "rooty:1",
        "FROM stockade/busybox\nUSER 0\nCMD [\"id\", \"-u\"]\n",
    );
    let (code, out, err) = env.run("rooty:1", &[], None);
    assert_eq!(code, 0, "{err}");
    assert_ne!(out.trim(), "0", "an image's USER 0 made the sandbox root");
    assert!(
        err.contains("stockade: warning: image `rooty:1`: USER `0` not granted"),
        "{err}"
    );
    // Asked for explicitly, root is the caller's choice, as without an image config.
    let (code, out, err) = env.run("rooty:1", &["--user", "0"], None);
    assert_eq!((code, out.as_str()), (0, "0\n"), "{err}");

    // No command anywhere: 125 and one line.
    let (code, out, err) = env.run("app:1", &["--entrypoint", ""], None);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            125,
            "",
            "stockade: no command: give one after -- or use an image with CMD/ENTRYPOINT\n"
        )
    );

    // The built-in image: its WORKDIR /workspace defers to the policy default, its CMD is
    // the shell, and the user is stockade's default sandbox user (not 0).
    let (code, out, err) = env.run("stockade/busybox", &[], Some(&["pwd"]));
    assert_eq!((code, out.as_str()), (0, "/tmp\n"), "{err}");
    let (code, out, err) = env.run("stockade/busybox", &["-i"], None);
    assert_eq!(
        (code, out.as_str()),
        (0, ""),
        "the shell read an empty stdin: {err}"
    );

    let (code, out, err) = env.stockade(&["ls"], true, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&id), "{out}");
}
