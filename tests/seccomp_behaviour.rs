//! The built-in filters, loaded into a real process by libseccomp, refuse what they claim
//! to refuse and let interpreters run.
//!
//! Each probe runs in a child process: this test binary re-executed with `--ignored` on the
//! `probe_child` test and an environment variable naming the profile. The child loads the
//! filter on its own thread (libseccomp sets `no_new_privs` first) and then either attempts
//! the syscalls and prints one `name=result` line each, or execs an interpreter.
//!
//! Why root: the control run (no filter) must show a different outcome than the filtered
//! run, and `mount` only fails with something other than EPERM when the caller holds
//! CAP_SYS_ADMIN. Without root the tests skip saying so; with CI=true they fail instead.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::errno::Errno;
use stockade::policy::NetworkMode;
use stockade::seccomp::{builtin_profile, compile, Profile, TargetArch};
use stockade::spec::seccomp_for_network;

const ENV_PROFILE: &str = "STOCKADE_SECCOMP_PROBE_PROFILE";
const ENV_EXEC: &str = "STOCKADE_SECCOMP_PROBE_EXEC";
/// A path that does not exist: an unfiltered root `mount` on it fails with ENOENT.
const MISSING: &str = "/nonexistent-stockade-seccomp-probe";

/// Returns false (after printing why) when the host cannot run these tests; panics instead
/// under CI=true.
fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let native = TargetArch::native().is_some();
    if root && native {
        return true;
    }
    let why = if !root {
        "needs root: the unfiltered control run must hold CAP_SYS_ADMIN"
    } else {
        "this host is neither x86_64 nor aarch64"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run on CI: {why}");
    }
    eprintln!("skipping: {why}");
    false
}

fn filter_for(profile: &str) -> stockade::oci_spec::runtime::LinuxSeccomp {
    let oci = Profile::parse(builtin_profile(profile).expect("built-in profile"))
        .unwrap()
        .to_oci()
        .unwrap();
    // What `run` uses with the default network mode.
    seccomp_for_network(&oci, NetworkMode::None).unwrap()
}

fn outcome<T>(r: nix::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// The body of the child process. Not a test on its own: it only runs when a test below
/// starts this binary with the environment naming a profile.
#[test]
#[ignore = "runs only as the child process of the seccomp behaviour tests"]
fn probe_child() {
    let profile =
        std::env::var(ENV_PROFILE).expect("started by a behaviour test with a profile name");
    if profile != "unconfined" {
        let arch = TargetArch::native().unwrap();
        compile(&filter_for(&profile), arch)
            .unwrap()
            .load()
            .expect("loading the filter");
    }
    if let Ok(cmd) = std::env::var(ENV_EXEC) {
        let argv: Vec<String> = serde_json::from_str(&cmd).unwrap();
        let err = Command::new(&argv[0]).args(&argv[1..]).exec();
        panic!("exec {}: {err}", argv[0]);
    }
    let pid = nix::unistd::getpid();
    println!("getpid={}", if pid.as_raw() > 0 { "ok" } else { "bad" });
    println!(
        "unshare={}",
        outcome(nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER))
    );
    println!(
        "mount={}",
        outcome(nix::mount::mount(
            Some("none"),
            MISSING,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ))
    );
    println!("chroot={}", outcome(nix::unistd::chroot(MISSING)));
    // socket(AF_INET) and socket(AF_UNIX), through std.
    let io = |r: std::io::Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("{:?}", Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    };
    println!(
        "socket_inet={}",
        io(std::net::UdpSocket::bind("127.0.0.1:0").map(drop))
    );
    println!(
        "socket_unix={}",
        io(std::os::unix::net::UnixDatagram::unbound().map(drop))
    );
    // A thread: glibc tries clone3 first and must fall back to clone on ENOSYS.
    let t = std::thread::spawn(|| 7).join();
    println!(
        "thread={}",
        if matches!(t, Ok(7)) { "ok" } else { "failed" }
    );
}

fn child(profile: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "probe_child",
        "--ignored",
        "--nocapture",
        "-q",
        "--test-threads=1",
    ])
    .env(ENV_PROFILE, profile)
    .env_remove(ENV_EXEC);
    c
}

fn probe(profile: &str) -> BTreeMap<String, String> {
    let out = child(profile).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe under {profile} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn default_and_strict_refuse_namespaces_mounts_and_ip_sockets_with_eperm() {
    if !can_run() {
        return;
    }
    let control = probe("unconfined");
    // Without a filter the same calls get past seccomp: EINVAL (user namespaces need a
    // single-threaded caller), ENOENT (the mount point is missing), a socket.
    assert_eq!(control["getpid"], "ok");
    assert_ne!(control["unshare"], format!("{:?}", Errno::EPERM));
    assert_eq!(control["mount"], format!("{:?}", Errno::ENOENT));
    assert_eq!(control["chroot"], format!("{:?}", Errno::ENOENT));
    assert_eq!(control["socket_inet"], "ok");
    for profile in ["default", "strict"] {
        let p = probe(profile);
        let eperm = format!("{:?}", Errno::EPERM);
        assert_eq!(p["getpid"], "ok", "{profile}");
        assert_eq!(p["unshare"], eperm, "{profile}");
        assert_eq!(p["mount"], eperm, "{profile}");
        assert_eq!(p["chroot"], eperm, "{profile}");
        assert_eq!(p["socket_inet"], eperm, "{profile}: network none");
        assert_eq!(p["socket_unix"], "ok", "{profile}");
        assert_eq!(p["thread"], "ok", "{profile}");
    }
}

/// The real interpreter behind PATH shims (pyenv, nvm).
fn real_executable(cmd: &str, probe: &[&str]) -> Option<PathBuf> {
    let out = Command::new(cmd).args(probe).output().ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.is_absolute()).then_some(p)
}

fn run_under(profile: &str, argv: &[String]) -> std::process::Output {
    child(profile)
        .env(ENV_EXEC, serde_json::to_string(argv).unwrap())
        .output()
        .unwrap()
}

#[test]
fn interpreters_run_under_strict_and_clone3_gets_enosys() {
    if !can_run() {
        return;
    }
    let mut checked = 0;
    let python = real_executable("python3", &["-c", "import sys; print(sys.executable)"]);
    let node = real_executable("node", &["-e", "console.log(process.execPath)"]);
    let busybox = real_executable("sh", &["-c", "command -v busybox"]);
    let py_script = "import ctypes, os, subprocess, threading, json, tempfile\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
r = libc.syscall(435, None, 0)\n\
t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
out = subprocess.run(['/bin/echo', 'child'], capture_output=True, text=True).stdout.strip()\n\
with tempfile.TemporaryFile() as f: f.write(b'x')\n\
print(json.dumps({'clone3': [r, ctypes.get_errno()], 'child': out, 'pid': os.getpid() > 0}))";
    let cases: Vec<(&str, Option<Vec<String>>, &str)> = vec![
        (
            "python3",
            python.map(|p| vec![p.display().to_string(), "-c".into(), py_script.into()]),
            r#"{"clone3": [-1, 38], "child": "child", "pid": true}"#,
        ),
        (
            "node",
            node.map(|p| {
                vec![
                    p.display().to_string(),
                    "-e".into(),
                    "const cp = require('child_process'); const fs = require('fs'); \
                     fs.writeFileSync('/dev/null', 'x'); \
                     console.log(cp.execFileSync('/bin/echo', ['child']).toString().trim(), \
                     require('os').cpus().length > 0)"
                        .into(),
                ]
            }),
            "child true",
        ),
        (
            "busybox sh",
            busybox.map(|p| {
                vec![
                    p.display().to_string(),
                    "sh".into(),
                    "-c".into(),
                    "x=$(echo hi | tr a-z A-Z); ls / >/dev/null && echo \"$x\" $((6*7))".into(),
                ]
            }),
            "HI 42",
        ),
    ];
    for (name, argv, want) in cases {
        let Some(argv) = argv else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{name} is not installed");
            }
            eprintln!("skipping {name}: not installed");
            continue;
        };
        for profile in ["strict", "default"] {
            let out = run_under(profile, &argv);
            let stdout = String::from_utf8_lossy(&out.stdout);
            // The test harness announces the probe before the exec; the program's own
            // output is the last line.
            let last = stdout.lines().last().unwrap_or("").trim();
            assert!(
                out.status.success() && last == want,
                "{name} under {profile}: {:?}\nstdout: {stdout}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no interpreter was available");
}
