//! The real `docker` CLI against `stockade serve` on a private socket, over a private
//! containerd (root; the docker client binary; with `CI=true` nothing skips): version,
//! info, images, run (attached, with stdin, detached), logs, wait, exec, ps, kill, rm, the
//! refusals with their messages, confinement equal to `stockade run`'s with the same
//! policy, and nothing left behind after each test.

mod common;
mod docker_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use docker_support::{ready, serve_command, Env, BIN};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_version_info_images_and_attached_runs() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, None).await;

    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(env.socket()).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(
        (m.mode() & 0o777, m.uid(), m.gid()),
        (0o660, 0, 0),
        "root's, 0660"
    );
    let v = env.ok(&[
        "version",
        "--format",
        "{{.Server.Version}} {{.Server.APIVersion}}",
    ]);
    assert!(
        v.starts_with("stockade-") && v.trim().ends_with(" 1.47"),
        "{v}"
    );
    let info = env.ok(&[
        "info",
        "--format",
        "{{.OperatingSystem}} {{.LoggingDriver}}",
    ]);
    assert_eq!(info.trim(), "stockade json-file");
    let images = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("stockade/busybox:latest ")),
        "{images}"
    );

    // Attached, output and exit code (zero and not).
    let o = env.docker(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{}", o.stderr);
    let o = env.docker(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(o.stdout, "out\n");
    assert!(o.stderr.contains("err\n"), "{}", o.stderr);
    // With stdin, closed when the client's input ends.
    let o = env.docker_in(
        &["run", "--rm", "-i", "busybox", "cat"],
        Some(b"one\ntwo\n"),
    );
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "one\ntwo\n"),
        "{}",
        o.stderr
    );
    // What one `docker run --rm IMAGE true` takes through the server, reported (not
    // asserted: machines are noisy).
    let mut took: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            env.ok(&["run", "--rm", "busybox", "true"]);
            t.elapsed()
        })
        .collect();
    took.sort();
    eprintln!(
        "docker run --rm busybox true through stockade serve: median {:?} of 5",
        took[2]
    );
    // With a terminal of its own: one stream, raw.
    let o = env.docker(&["run", "--rm", "-t", "busybox", "tty"]);
    assert_eq!((o.code, o.stdout.trim()), (0, "/dev/pts/0"), "{}", o.stderr);
    // A command that does not exist: 127, said on stderr.
    let o = env.docker(&["run", "--rm", "busybox", "no-such-command"]);
    assert_eq!(o.code, 127, "{}{}", o.stdout, o.stderr);

    env.assert_no_leftovers().await;
    env.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_containers_logs_wait_exec_ps_kill_and_rm() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, None).await;

    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        "job",
        "busybox",
        "sh",
        "-c",
        "echo started; echo bye >&2; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo got; exit 4",
    ]);
    let id = id.trim().to_string();
    assert!(id.starts_with("stk-"), "{id}");
    let ps = env.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.lines().any(|l| l.starts_with("job Up")), "{ps}");

    // exec, with and without stdin; its exit code is the command's.
    let o = env.docker_in(
        &["exec", "-i", "job", "sh", "-c", "cat; exit 5"],
        Some(b"piped\n"),
    );
    assert_eq!((o.code, o.stdout.as_str()), (5, "piped\n"), "{}", o.stderr);
    let o = env.docker(&["exec", "job", "id", "-u"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let uid: u32 = o.stdout.trim().parse().unwrap();
    assert_ne!(uid, 0, "not root: a UID of the sandbox's own");

    env.ok(&["exec", "job", "touch", "/tmp/go"]);
    let w = env.ok(&["wait", "job"]);
    assert_eq!(w.trim(), "4");
    let logs = env.docker(&["logs", "job"]);
    assert_eq!(logs.stdout, "started\ngot\n");
    assert_eq!(logs.stderr, "bye\n");
    let tail = env.ok(&["logs", "--tail", "1", "job"]);
    assert_eq!(tail, "got\n");
    let inspect = env.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}} {{.HostConfig.LogConfig.Type}}",
        "job",
    ]);
    assert_eq!(inspect.trim(), "exited 4 json-file");
    let ps = env.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.lines().any(|l| l.starts_with("job Exited (4)")), "{ps}");
    assert!(env.ok(&["ps", "--format", "{{.Names}}"]).trim().is_empty());
    env.ok(&["rm", "job"]);

    // logs -f follows a running container to its end; kill ends it with 137.
    let id2 = env.ok(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo $i; sleep 0.2; done",
    ]);
    let id2 = id2.trim();
    let f = env.ok(&["logs", "-f", id2]);
    assert_eq!(lines(&f), ["1", "2", "3"]);
    assert_eq!(env.ok(&["wait", id2]).trim(), "0");
    env.ok(&["rm", id2]);
    let id3 = env.ok(&["run", "-d", "busybox", "sleep", "1000"]);
    let id3 = id3.trim();
    env.ok(&["kill", id3]);
    assert_eq!(env.ok(&["wait", id3]).trim(), "137");
    let o = env.docker(&["kill", id3]);
    assert_ne!(o.code, 0, "killing an exited container is refused");
    assert!(o.stderr.contains("is not running"), "{}", o.stderr);
    env.ok(&["rm", id3]);

    // stop: SIGTERM reaches the command through the init.
    let id5 = env.ok(&["run", "-d", "busybox", "sleep", "1000"]);
    env.ok(&["stop", "-t", "30", id5.trim()]);
    assert_eq!(env.ok(&["wait", id5.trim()]).trim(), "143");
    env.ok(&["rm", id5.trim()]);

    // rm -f of a running one.
    let id4 = env.ok(&["run", "-d", "busybox", "sleep", "1000"]);
    let o = env.docker(&["rm", id4.trim()]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("cannot remove a running container"),
        "{}",
        o.stderr
    );
    env.ok(&["rm", "-f", id4.trim()]);
    assert!(env.ok(&["ps", "-a", "-q"]).trim().is_empty());

    env.assert_no_leftovers().await;
    env.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_docker_errors_naming_the_field_and_exit_125() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, None).await;
    // (flags, what the message must contain)
    let cases: &[(&[&str], &str)] = &[
        (
            &["--privileged"],
            "HostConfig.Privileged: privileged containers are refused",
        ),
        (&["--pid", "host"], "HostConfig.PidMode: `host`"),
        (&["--ipc", "host"], "HostConfig.IpcMode: `host`"),
        (&["--uts", "host"], "HostConfig.UTSMode: `host`"),
        (&["--userns", "host"], "HostConfig.UsernsMode: `host`"),
        (&["--network", "host"], "HostConfig.NetworkMode: `host`"),
        (
            &["--cap-add", "SYS_ADMIN"],
            "HostConfig.CapAdd: CAP_SYS_ADMIN is not one stockade grants",
        ),
        (&["--device", "/dev/null:/dev/x"], "HostConfig.Devices"),
        (
            &["--security-opt", "seccomp=unconfined"],
            "HostConfig.SecurityOpt: seccomp=unconfined is refused",
        ),
        (
            &["--security-opt", "apparmor=unconfined"],
            "HostConfig.SecurityOpt: apparmor=unconfined is refused",
        ),
        (
            &["-v", "/:/host"],
            "HostConfig.Binds: binding the host's root filesystem",
        ),
        (
            &["-v", "/var/run/docker.sock:/var/run/docker.sock"],
            "HostConfig.Binds: `/var/run/docker.sock`",
        ),
        (
            &["-v", "/home:/h"],
            "HostConfig.Binds: `/home` is not beneath a root",
        ),
        (
            &["--tmpfs", "/proc/x"],
            "HostConfig.Tmpfs: destination `/proc/x` is reserved",
        ),
        (&["-v", "relative:/data"], "HostConfig.Binds"),
        (
            &["--memory", "4g"],
            "HostConfig.Memory: 4294967296 bytes is above this server's ceiling",
        ),
        (
            &["--pids-limit", "-1"],
            "HostConfig.PidsLimit: -1: an unlimited pids limit is refused",
        ),
        (&["--sysctl", "net.ipv4.ip_forward=1"], "HostConfig.Sysctls"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend(["busybox", "true"]);
        let o = env.docker(&args);
        assert_eq!(o.code, 125, "{flags:?}: {}{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains(want),
            "{flags:?}: want {want:?} in {:?}",
            o.stderr
        );
    }
    // Not in the store: the client pulls it through the server, which fails (no such
    // image, or no registry to reach) with one line.
    let o = env.docker(&["run", "--rm", "no-such-image", "true"]);
    assert_eq!(o.code, 125, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("Unable to find image 'no-such-image:latest' locally")
            && o.stderr.contains("docker.io"),
        "{}",
        o.stderr
    );
    env.assert_no_leftovers().await;
    env.stop();
}

/// `Key:\tVALUE` lines of /proc/self/status that say what confines a process.
fn confinement(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| {
            [
                "CapInh",
                "CapPrm",
                "CapEff",
                "CapBnd",
                "CapAmb",
                "NoNewPrivs",
                "Seccomp",
            ]
            .iter()
            .any(|k| l.starts_with(&format!("{k}:")))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_confined_exactly_as_stockade_run_with_the_same_policy() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, Some("[limits]\nmemory = \"256Mi\"\npids = 64\n")).await;
    let probe = "cat /proc/self/status; echo uid=$(id -u):$(id -g); cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; echo";
    let docker = env.ok(&[
        "run",
        "--rm",
        "--user",
        "1000:1000",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        probe,
    ]);
    let run = Command::new(BIN)
        .args(["run", "--address"])
        .arg(env.c.address())
        .args(["--fifo-root"])
        .arg(env.fifo())
        .args(["--policy"])
        .arg(env.dir.path().join("policy.toml"))
        .args([
            "--user",
            "1000:1000",
            "--no-audit-log",
            "--",
            "sh",
            "-c",
            probe,
        ])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run = String::from_utf8_lossy(&run.stdout).into_owned();
    let (d, r) = (confinement(&docker), confinement(&run));
    assert_eq!(d.len(), 7, "{docker}");
    assert_eq!(
        d, r,
        "capabilities, NoNewPrivs and seccomp as stockade run's"
    );
    assert!(
        d.contains(&"CapEff:\t0000000000000000".to_string()),
        "{d:?}"
    );
    assert!(d.contains(&"NoNewPrivs:\t1".to_string()) && d.contains(&"Seccomp:\t2".to_string()));
    let uid = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("uid="))
            .map(str::to_string)
    };
    assert_eq!(uid(&docker), Some("uid=1000:1000".to_string()));
    assert_eq!(uid(&docker), uid(&run));
    // The server policy's pids limit, in the sandbox's own cgroup.
    assert!(docker.lines().any(|l| l == "64"), "{docker}");
    env.assert_no_leftovers().await;
    env.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_is_refused_and_a_crashed_servers_containers_are_reclaimed() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, None).await;
    let id = env.ok(&["run", "-d", "busybox", "sleep", "1000"]);
    let id = id.trim().to_string();

    // The socket is in use: a second server says so in one line and exits 125.
    let second = serve_command(&env.c, env.dir.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(125), "{err}");
    assert!(
        err.contains("another server answers on this socket"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // The server dies without cleaning up: its socket and its container stay...
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(env.server.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.server.wait().unwrap();
    assert!(env.socket().exists());
    assert!(env.fifo().join(&id).exists());
    // ...until the next server replaces the stale socket and removes what it left.
    env.server = serve_command(&env.c, env.dir.path()).spawn().unwrap();
    env.wait_answer();
    assert!(env.ok(&["ps", "-a", "-q"]).trim().is_empty());
    env.assert_no_leftovers().await;
    env.stop();
}

/// The line an agent framework runs today against Docker, verbatim: a workspace bind, a
/// read-only root with an executable sized /tmp, a user, limits, no network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_frameworks_docker_run_line_works_verbatim() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, None).await;
    let ws = env.dir.path().join("binds/ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(1000), Some(1000)).unwrap();
    let vol = format!("{}:/workspace", ws.display());
    let script = "id -u; echo $K; pwd; echo made > out.txt; \
                  cp /bin/busybox /tmp/true && /tmp/true && echo tmp-exec; \
                  touch /etc/x 2>/dev/null || echo ro-root; \
                  grep -q ' /tmp tmpfs .*size=102400k' /proc/mounts && echo tmp-100m";
    let o = env.docker(&[
        "run",
        "--rm",
        "-i",
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        "/tmp:exec,size=100m",
        "--network",
        "none",
        "--memory",
        "512m",
        "--cpus",
        "1.0",
        "--pids-limit",
        "100",
        "-v",
        &vol,
        "-e",
        "K=V",
        "-w",
        "/workspace",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        (o.code, lines(&o.stdout)),
        (
            0,
            vec!["1000", "V", "/workspace", "tmp-exec", "ro-root", "tmp-100m"]
        ),
        "{}",
        o.stderr
    );
    use std::os::unix::fs::MetadataExt;
    let out = ws.join("out.txt");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "made\n");
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), 1000);
    env.assert_no_leftovers().await;
    env.stop();
}

/// `docker cp` both ways with a running and with a stopped container: the root filesystem
/// (writable, as Docker's default), a workspace bind and a read-only bind; a read-only
/// destination refused, a missing path named, a hostile tar on stdin refused with nothing
/// written outside; no leftover (the stopped root's mounts included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_cp_both_ways_with_a_running_and_a_stopped_container() {
    let Some(cli) = ready() else { return };
    let mut env = Env::start(cli, None).await;
    let binds = env.dir.path().join("binds");
    let (ws, ro) = (binds.join("ws"), binds.join("ro"));
    for d in [&ws, &ro] {
        std::fs::create_dir_all(d).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(ro.join("seed"), "seed\n").unwrap();
    let host = tempfile::tempdir().unwrap();
    let h = |p: &str| host.path().join(p).to_string_lossy().into_owned();
    std::fs::write(h("in.txt"), "in\n").unwrap();
    std::fs::create_dir_all(h("tree/sub")).unwrap();
    std::fs::write(h("tree/sub/f"), "deep\n").unwrap();
    std::fs::create_dir_all(h("out")).unwrap();
    std::fs::create_dir_all(h("out2")).unwrap();

    let (wsv, rov) = (
        format!("{}:/workspace", ws.display()),
        format!("{}:/ro:ro", ro.display()),
    );
    env.ok(&[
        "run", "-d", "--name", "cpc", "-v", &wsv, "-v", &rov, "busybox", "sleep", "1000",
    ]);
    env.ok(&["exec", "cpc", "sh", "-c", "echo made > /workspace/made.txt"]);

    // Running: in to the root and to the workspace, out again.
    env.ok(&["cp", &h("in.txt"), "cpc:/in.txt"]);
    env.ok(&["cp", &h("tree"), "cpc:/workspace/"]);
    let seen = env.ok(&[
        "exec",
        "cpc",
        "sh",
        "-c",
        "cat /in.txt /workspace/tree/sub/f; [ $(stat -c %u /in.txt) = $(id -u) ] && echo owned",
    ]);
    assert_eq!(lines(&seen), ["in", "deep", "owned"]);
    env.ok(&["cp", "cpc:/in.txt", &h("out")]);
    env.ok(&["cp", "cpc:/etc/passwd", &h("out")]);
    env.ok(&["cp", "cpc:/workspace/tree", &h("out")]);
    assert_eq!(std::fs::read_to_string(h("out/in.txt")).unwrap(), "in\n");
    assert!(std::fs::read_to_string(h("out/passwd"))
        .unwrap()
        .starts_with("root:"));
    assert_eq!(
        std::fs::read_to_string(h("out/tree/sub/f")).unwrap(),
        "deep\n"
    );
    // Refusals: a read-only bind (403), a missing path (404), a hostile tar (400).
    let o = env.docker(&["cp", &h("in.txt"), "cpc:/ro/"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("read-only"), "{}", o.stderr);
    let o = env.docker(&["cp", "cpc:/nope", &h("out")]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("Could not find the file /nope"),
        "{}",
        o.stderr
    );
    let hostile = {
        let mut b = tar::Builder::new(Vec::new());
        let mut hd = tar::Header::new_gnu();
        hd.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        hd.set_size(2);
        hd.set_mode(0o644);
        hd.set_entry_type(tar::EntryType::Regular);
        hd.set_cksum();
        b.append(&hd, &b"x\n"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let o = env.docker_in(&["cp", "-", "cpc:/workspace"], Some(&hostile));
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("`..`"), "{}", o.stderr);
    assert!(!binds.join("escape").exists() && !ws.join("escape").exists());

    // Stopped: the root filesystem and the binds are still there, both ways.
    env.ok(&["kill", "cpc"]);
    assert_eq!(env.ok(&["wait", "cpc"]).trim(), "137");
    env.ok(&["cp", "cpc:/in.txt", &h("out2")]);
    env.ok(&["cp", "cpc:/workspace/made.txt", &h("out2")]);
    env.ok(&["cp", "cpc:/ro/seed", &h("out2")]);
    assert_eq!(std::fs::read_to_string(h("out2/in.txt")).unwrap(), "in\n");
    assert_eq!(
        std::fs::read_to_string(h("out2/made.txt")).unwrap(),
        "made\n"
    );
    assert_eq!(std::fs::read_to_string(h("out2/seed")).unwrap(), "seed\n");
    std::fs::write(h("late.txt"), "late\n").unwrap();
    env.ok(&["cp", &h("late.txt"), "cpc:/late.txt"]);
    env.ok(&["cp", &h("late.txt"), "cpc:/workspace/"]);
    assert_eq!(
        std::fs::read_to_string(ws.join("late.txt")).unwrap(),
        "late\n"
    );
    env.ok(&["cp", "cpc:/late.txt", &h("out2")]);
    assert_eq!(
        std::fs::read_to_string(h("out2/late.txt")).unwrap(),
        "late\n"
    );
    let o = env.docker(&["cp", &h("in.txt"), "cpc:/ro/"]);
    assert!(
        o.code != 0 && o.stderr.contains("read-only"),
        "{}",
        o.stderr
    );
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        1,
        "nothing written into the read-only bind"
    );
    env.ok(&["rm", "cpc"]);
    env.assert_no_leftovers().await;
    env.stop();
}
