//! What every security case shares: the private containerd and its images, running
//! `stockade run` with a hard wall-clock guard, the probe protocol of the attack scripts,
//! snapshots of host state taken before and after an attack, and the leftover census.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use stockade::containerd::daemon;

use crate::common::PrivateContainerd;

/// The containerd namespace every case runs in.
pub const NAMESPACE: &str = "stockade-security";
/// The word every attack writes where it would leave a trace (mount sources, file names,
/// hostnames, key descriptions, sysctl values), so the host can be searched for it.
pub const ATTACK_MARK: &str = "stkattack";
/// The most any single `stockade run` may take before the case fails as hung.
pub const RUN_GUARD: Duration = Duration::from_secs(120);

/// A case's outcome: `Err` holds every failed claim, one per line.
pub type CaseResult = Result<(), String>;

/// Fails the case with a formatted message.
#[macro_export]
macro_rules! fail {
    ($($t:tt)*) => { return Err(format!($($t)*)) };
}

/// Fails the case unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => {{
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($t)*));
        }
    }};
}

/// What a case runs, given the shared daemon.
pub type CaseFn = Box<dyn Fn(&Arc<Daemon>) -> CaseResult + Send + Sync + 'static>;

/// One case of the suite: a name and what it runs against the shared daemon.
pub struct Case {
    pub name: String,
    pub run: CaseFn,
    /// Measures time or CPU: runs alone (see [`host_lock`]).
    pub exclusive: bool,
}

/// A case called `name`, sharing the host with the other cases.
pub fn case(
    name: impl Into<String>,
    run: impl Fn(&Arc<Daemon>) -> CaseResult + Send + Sync + 'static,
) -> Case {
    Case {
        name: name.into(),
        run: Box::new(run),
        exclusive: false,
    }
}

/// A case that measures CPU or timing, so runs with nothing else on the host.
pub fn exclusive_case(
    name: impl Into<String>,
    run: impl Fn(&Arc<Daemon>) -> CaseResult + Send + Sync + 'static,
) -> Case {
    Case {
        exclusive: true,
        ..case(name, run)
    }
}

/// Cases (and the python image build) hold it shared; exclusive cases hold it alone.
static HOST: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Holds the host for the duration of a case: alone when `exclusive`.
pub struct HostGuard {
    _shared: Option<std::sync::RwLockReadGuard<'static, ()>>,
    _alone: Option<std::sync::RwLockWriteGuard<'static, ()>>,
}

pub fn host_lock(exclusive: bool) -> HostGuard {
    if exclusive {
        HostGuard {
            _shared: None,
            _alone: Some(
                HOST.write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
        }
    } else {
        HostGuard {
            _shared: Some(
                HOST.read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
            _alone: None,
        }
    }
}

/// The path of the stockade binary under test.
pub fn stockade_bin() -> &'static str {
    env!("CARGO_BIN_EXE_stockade")
}

/// One containerd with its images, and the host-side material the attacks aim at.
pub struct Daemon {
    pub containerd: PrivateContainerd,
    pub runtime: tokio::runtime::Runtime,
    /// Ids of every run made against this daemon (for the leftover census).
    ids: Mutex<BTreeSet<String>>,
    python: OnceLock<Result<(), String>>,
}

impl Daemon {
    /// Starts a private containerd and builds the busybox image in it.
    pub fn start() -> Result<Arc<Daemon>, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let containerd = runtime.block_on(PrivateContainerd::start());
        let d = Arc::new(Daemon {
            containerd,
            runtime,
            ids: Mutex::new(BTreeSet::new()),
            python: OnceLock::new(),
        });
        d.build_image("busybox")?;
        Ok(d)
    }

    pub fn socket(&self) -> &Path {
        self.containerd.address()
    }

    pub fn base(&self) -> &Path {
        self.containerd.base()
    }

    /// `stockade SUBCOMMAND... --address SOCK --namespace NS`.
    pub fn stockade(&self, subcommand: &[&str]) -> Command {
        let mut c = Command::new(stockade_bin());
        // Bind sources: the cases' temporary directories and the attack fixtures.
        let fixtures_parent = fixtures()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        c.env(
            "STOCKADE_BIND_ROOTS",
            format!(
                "{}:{}",
                std::env::temp_dir().display(),
                fixtures_parent.display()
            ),
        );
        c.args(subcommand)
            .arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(NAMESPACE);
        c
    }

    /// `stockade image build NAME` into this daemon.
    pub fn build_image(&self, name: &str) -> Result<(), String> {
        let started = Instant::now();
        let out = run_guarded(
            self.stockade(&["image", "build", name]),
            Duration::from_secs(600),
        )?;
        if out.code != Some(0) {
            fail!(
                "stockade image build {name} exited {:?}: {}",
                out.code,
                out.stderr_text().trim()
            );
        }
        eprintln!(
            "security: built image {name} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The python image, built the first time any case asks (others wait for it).
    pub fn python_ready(&self) -> CaseResult {
        self.python
            .get_or_init(|| {
                let _shared = host_lock(false);
                self.build_image("python")
            })
            .clone()
    }

    /// Records a run id for the leftover census.
    pub fn record(&self, id: &str) {
        self.ids.lock().unwrap().insert(id.to_string());
    }

    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().iter().cloned().collect()
    }

    /// `stockade gc` against this daemon; must exit 0.
    /// `stockade gc` on this daemon, once the detached removal helpers of its finished runs
    /// (`stockade gc --run ID --take-over`) have exited, which they must within a minute:
    /// `stockade gc` leaves a run alone while its helper lives.
    pub fn gc(&self) -> CaseResult {
        let helpers = format!("--take-over --address {}", self.socket().display());
        let waiting = Instant::now();
        while !processes_with(&helpers).is_empty() {
            ensure!(
                waiting.elapsed() < Duration::from_secs(60),
                "removal helpers still running after 60 s: {:?}",
                processes_with(&helpers)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = run_guarded(self.stockade(&["gc"]), Duration::from_secs(120))?;
        ensure!(
            out.code == Some(0),
            "stockade gc exited {:?}: {}",
            out.code,
            out.stderr_text().trim()
        );
        Ok(())
    }

    /// `ctr` against this daemon and namespace; its stdout.
    pub fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args);
        let out = run_guarded(c, Duration::from_secs(30))?;
        ensure!(
            out.code == Some(0),
            "ctr {args:?} exited {:?}: {}",
            out.code,
            out.stderr_text().trim()
        );
        Ok(out.stdout_text())
    }

    /// Everything of run `id` that is still there (empty when nothing is). Waits up to 15 s
    /// (a loaded host) for objects that go away asynchronously (the hand-off cleanup, a shim).
    pub fn leftovers_of(&self, id: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let found = self.census(Some(id));
            if found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every stockade object this daemon or its runs left: containers, tasks, active
    /// snapshots, mounts, shims, cgroups, FIFO directories and processes. With `id`, only
    /// those of that run; without, everything of the daemon and of every recorded run.
    pub fn census(&self, id: Option<&str>) -> Vec<String> {
        let mut found = Vec::new();
        let matches = |s: &str| id.is_none_or(|id| s.contains(id));
        match self.ctr(&["containers", "ls", "-q"]) {
            Ok(t) => found.extend(
                t.lines()
                    .filter(|l| !l.is_empty() && matches(l))
                    .map(|l| format!("container {l}")),
            ),
            Err(e) => found.push(e),
        }
        match self.ctr(&["tasks", "ls", "-q"]) {
            Ok(t) => found.extend(
                t.lines()
                    .filter(|l| !l.is_empty() && matches(l))
                    .map(|l| format!("task {l}")),
            ),
            Err(e) => found.push(e),
        }
        match self.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]) {
            // KEY PARENT KIND; committed snapshots are the cached images.
            Ok(t) => found.extend(
                t.lines()
                    .skip(1)
                    .filter(|l| l.split_whitespace().last() == Some("Active") && matches(l))
                    .map(|l| {
                        format!(
                            "active snapshot {}",
                            l.split_whitespace().next().unwrap_or("")
                        )
                    }),
            ),
            Err(e) => found.push(e),
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in daemon::mounts_under(&mountinfo, self.base()) {
            if matches(&m.to_string_lossy()) {
                found.push(format!("mount {}", m.display()));
            }
        }
        if let Some(id) = id {
            for line in mountinfo.lines().filter(|l| l.contains(id)) {
                found.push(format!("mount {line}"));
            }
        }
        for shim in daemon::shims_for(
            Path::new(stockade::procfs::DEFAULT_PROC_ROOT),
            self.socket(),
        ) {
            if shim.id.as_deref().is_none_or(&matches) {
                found.push(format!("shim pid {} for {:?}", shim.pid, shim.id));
            }
        }
        let ids: Vec<String> = match id {
            Some(id) => vec![id.to_string()],
            None => self.ids(),
        };
        for id in &ids {
            found.extend(run_traces(id));
        }
        found
    }
}

/// Host traces of run `id` outside containerd: its cgroups, its FIFO directory and any
/// process still in its cgroup.
pub fn run_traces(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for dir in cgroup_dirs_of(id) {
        found.push(format!("cgroup {}", dir.display()));
    }
    let fifo = Path::new(stockade::runner::DEFAULT_FIFO_ROOT).join(id);
    if fifo.exists() {
        found.push(format!("fifo dir {}", fifo.display()));
    }
    for kind in ["root", "workspace"] {
        let image = Path::new(stockade::disk::DEFAULT_DISK_ROOT).join(format!("{id}-{kind}.img"));
        if image.exists() {
            found.push(format!("disk image {}", image.display()));
        }
    }
    let needle = format!("/stockade/{id}");
    for pid in host_pids() {
        if let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if cg.contains(&needle) {
                found.push(format!("process {pid} ({})", comm(pid)));
            }
        }
    }
    found
}

/// Every cgroup directory named for run `id`, in any hierarchy.
pub fn cgroup_dirs_of(id: &str) -> Vec<PathBuf> {
    let root = Path::new(stockade::runner::DEFAULT_CGROUP_ROOT);
    let mut found = Vec::new();
    let mut hierarchies = vec![root.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(root) {
        hierarchies.extend(rd.flatten().map(|e| e.path()));
    }
    for h in hierarchies {
        let p = h.join("stockade").join(id);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

/// The PIDs of the host's processes.
pub fn host_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Host processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    host_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A random token for names that must not collide between cases or runs.
pub fn nonce() -> String {
    stockade::ids::random_hex(6)
}

// --- running processes -------------------------------------------------------------------

/// A finished process: exit code, output and the peak resident memory seen.
#[derive(Debug)]
pub struct Finished {
    /// None when a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Highest `VmHWM` read from /proc while it ran, in bytes.
    pub peak_rss: u64,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A process started by a case, killed (by its PID) if the case lets go of it.
pub struct Spawned {
    pub child: Child,
    started: Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
    peak_rss: u64,
}

/// Starts `cmd` with piped output read on threads of their own.
pub fn spawn(mut cmd: Command) -> Result<Spawned, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    Ok(Spawned {
        child,
        started: Instant::now(),
        out: Some(std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        })),
        err: Some(std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        })),
        peak_rss: 0,
    })
}

impl Spawned {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits at most `guard`; past it the process is killed and the case fails.
    pub fn wait(mut self, guard: Duration) -> Result<Finished, String> {
        loop {
            if let Some(hwm) = vm_hwm(self.pid()) {
                self.peak_rss = self.peak_rss.max(hwm);
            }
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    let stdout = self.out.take().unwrap().join().unwrap_or_default();
                    let stderr = self.err.take().unwrap().join().unwrap_or_default();
                    return Ok(Finished {
                        code: status.code(),
                        stdout,
                        stderr,
                        peak_rss: self.peak_rss,
                    });
                }
                Ok(None) if self.started.elapsed() > guard => {
                    let pid = self.pid();
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    fail!("process {pid} still running after {guard:?}; killed");
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => fail!("wait: {e}"),
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmHWM` of a process, in bytes.
fn vm_hwm(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `cmd` to completion within `guard`.
pub fn run_guarded(cmd: Command, guard: Duration) -> Result<Finished, String> {
    spawn(cmd)?.wait(guard)
}

// --- stockade run ------------------------------------------------------------------------

/// One `stockade run`: flags, environment and the command. `--json` is always passed, so
/// the result document is parsed from stockade's stdout.
#[derive(Clone, Debug)]
pub struct Sandbox {
    flags: Vec<OsString>,
    command: Vec<String>,
    json: bool,
    guard: Duration,
}

impl Sandbox {
    /// A run of the busybox image.
    pub fn busybox<S: AsRef<str>>(command: &[S]) -> Sandbox {
        Sandbox::image("stockade/busybox", command)
    }

    /// A run of the python image.
    pub fn python<S: AsRef<str>>(command: &[S]) -> Sandbox {
        Sandbox::image("stockade/python", command)
    }

    pub fn image<S: AsRef<str>>(image: &str, command: &[S]) -> Sandbox {
        Sandbox {
            flags: vec!["--image".into(), image.into()],
            command: command.iter().map(|s| s.as_ref().to_string()).collect(),
            json: true,
            guard: RUN_GUARD,
        }
    }

    /// The attack script `attacks.sh` (busybox) for `classes`, the fixtures as /input.
    pub fn busybox_attack(classes: &[&str]) -> Sandbox {
        let mut cmd = vec!["sh", "/input/attacks.sh"];
        cmd.extend_from_slice(classes);
        Sandbox::busybox(&cmd).input(&fixtures())
    }

    /// The attack script `attacks.py` (python) for `classes`, the fixtures as /input.
    pub fn python_attack(classes: &[&str]) -> Sandbox {
        let mut cmd = vec!["python3", "-B", "/input/attacks.py"];
        cmd.extend_from_slice(classes);
        Sandbox::python(&cmd).input(&fixtures())
    }

    /// Any flag with a value (`--memory`, `64M`).
    pub fn flag(mut self, name: &str, value: impl Into<OsString>) -> Sandbox {
        self.flags.push(name.into());
        self.flags.push(value.into());
        self
    }

    /// A flag without a value (`--read-write-root`).
    pub fn flag_bare(mut self, name: &str) -> Sandbox {
        self.flags.push(name.into());
        self
    }

    pub fn env(self, key: &str, value: impl std::fmt::Display) -> Sandbox {
        self.flag("--env", format!("{key}={value}"))
    }

    pub fn workspace(self, dir: &Path) -> Sandbox {
        self.flag("--workspace", dir)
    }

    pub fn input(self, dir: &Path) -> Sandbox {
        self.flag("--input", dir)
    }

    pub fn user(self, user: &str) -> Sandbox {
        self.flag("--user", user)
    }

    pub fn network(self, mode: &str) -> Sandbox {
        self.flag("--network", mode)
    }

    /// Without `--json`: stdout and stderr are the command's, forwarded.
    pub fn forwarded(mut self) -> Sandbox {
        self.json = false;
        self
    }

    /// The process, not yet started.
    pub fn command(&self, d: &Daemon) -> Command {
        let mut c = d.stockade(&["run"]);
        c.args(&self.flags);
        if self.json {
            c.arg("--json");
        }
        c.arg("--").args(&self.command);
        c
    }

    /// Starts the run without waiting for it.
    pub fn spawn(&self, d: &Daemon) -> Result<Spawned, String> {
        spawn(self.command(d))
    }

    /// Runs to completion and parses the result. The run's id is recorded with the daemon.
    pub fn run(&self, d: &Daemon) -> Result<Outcome, String> {
        let finished = self.spawn(d)?.wait(self.guard)?;
        Outcome::parse(finished, self.json, d)
    }
}

/// A finished `stockade run`.
#[derive(Debug)]
pub struct Outcome {
    pub process: Finished,
    /// The `--json` result document (Null without `--json` or when stockade failed).
    pub doc: Value,
}

impl Outcome {
    /// Parses a finished run (with `--json` when `json`) and records its id with `d`.
    pub fn parse(process: Finished, json: bool, d: &Daemon) -> Result<Outcome, String> {
        let mut doc = Value::Null;
        if json {
            if let Ok(v) = serde_json::from_slice::<Value>(&process.stdout) {
                doc = v;
            } else if process.code != Some(125) {
                fail!(
                    "stockade run exited {:?} without a JSON result; stdout: {:.400}; stderr: {:.400}",
                    process.code,
                    process.stdout_text(),
                    process.stderr_text()
                );
            }
        }
        let o = Outcome { process, doc };
        if let Some(id) = o.id() {
            d.record(id);
        }
        Ok(o)
    }

    pub fn id(&self) -> Option<&str> {
        self.doc.get("id").and_then(Value::as_str)
    }
    /// stockade's own exit status.
    pub fn code(&self) -> Option<i32> {
        self.process.code
    }
    /// The command's captured stdout (from the result document).
    pub fn stdout(&self) -> &str {
        self.doc
            .get("stdout")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    pub fn stderr(&self) -> &str {
        self.doc
            .get("stderr")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
    pub fn flag(&self, key: &str) -> bool {
        self.doc.get(key).and_then(Value::as_bool).unwrap_or(false)
    }
    /// A number anywhere in the document, by JSON pointer (`/usage/cpu_time_ns`).
    pub fn number(&self, pointer: &str) -> Option<f64> {
        self.doc.pointer(pointer).and_then(Value::as_f64)
    }

    /// Fails unless stockade itself worked (exit code other than 125) and the run has an id.
    pub fn ran(&self) -> CaseResult {
        ensure!(
            self.code() != Some(125) && self.id().is_some(),
            "stockade failed (exit {:?}): {}",
            self.code(),
            self.process.stderr_text().trim()
        );
        Ok(())
    }

    /// A compact description for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}, stdout:\n{}\nstderr:\n{}\nstockade stderr: {}",
            self.code(),
            self.stdout(),
            self.stderr(),
            self.process.stderr_text().trim()
        )
    }
}

/// The directory of the attack scripts, mounted as /input.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/security")
}

// --- the probe protocol ------------------------------------------------------------------

/// What a probe must report.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    /// Exactly one of these words (errno names, observations).
    Is(&'static [&'static str]),
    /// `FAIL: <message>` with one of these in the message (busybox applets).
    Fails(&'static [&'static str]),
    /// Any result starting with `FAIL` (the applet's wording varies).
    AnyFailure,
    /// A value checked by a predicate; the string says what it must be.
    Holds(fn(&str) -> bool, &'static str),
}

impl Want {
    fn accepts(&self, got: &str) -> bool {
        match self {
            Want::Is(words) => words.contains(&got),
            Want::Fails(msgs) => got.starts_with("FAIL") && msgs.iter().any(|m| got.contains(m)),
            Want::AnyFailure => got.starts_with("FAIL"),
            Want::Holds(f, _) => f(got),
        }
    }

    fn describe(&self) -> String {
        match self {
            Want::Is(w) => format!("one of {w:?}"),
            Want::Fails(m) => format!("FAIL with one of {m:?}"),
            Want::AnyFailure => "FAIL".into(),
            Want::Holds(_, what) => (*what).into(),
        }
    }
}

/// Parses `NAME RESULT` lines; the script's last line must be `done` (so a crash halfway
/// cannot pass for fewer probes).
pub fn probes(stdout: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    let mut done = false;
    for line in stdout.lines() {
        if line == "done" {
            done = true;
            continue;
        }
        let (name, result) = line.split_once(' ').unwrap_or((line, ""));
        map.insert(name.to_string(), result.to_string());
    }
    ensure!(
        done,
        "the attack script did not finish; it printed:\n{stdout}"
    );
    Ok(map)
}

/// Checks every probe in `table` against what the script reported, and that the script
/// reported no probe the table does not know.
pub fn check_probes(got: &BTreeMap<String, String>, table: &[(&str, Want)]) -> CaseResult {
    let mut bad = String::new();
    for (name, want) in table {
        match got.get(*name) {
            None => writeln!(bad, "  {name}: not reported (want {})", want.describe()).unwrap(),
            Some(r) if !want.accepts(r) => {
                writeln!(bad, "  {name}: got `{r}`, want {}", want.describe()).unwrap();
            }
            Some(_) => {}
        }
    }
    for name in got.keys() {
        if !table.iter().any(|(n, _)| n == name) {
            writeln!(bad, "  {name}: reported but not in the test's table").unwrap();
        }
    }
    ensure!(
        bad.is_empty(),
        "probes that did not fail as required:\n{bad}"
    );
    Ok(())
}

// --- host state --------------------------------------------------------------------------

/// Host-side targets the attacks are told about: a secret file, a TCP listener on the
/// host's loopback, an abstract Unix socket, and a PID of a host process.
pub struct Targets {
    pub dir: tempfile::TempDir,
    pub secret: PathBuf,
    pub secret_text: String,
    pub tcp: std::net::TcpListener,
    pub abstract_name: String,
    pub unix: std::os::unix::net::UnixListener,
}

impl Targets {
    pub fn new() -> Result<Targets, String> {
        use std::os::linux::net::SocketAddrExt;
        let dir = tempfile::Builder::new()
            .prefix("stk-sec-host-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("tempdir: {e}"))?;
        let secret = dir.path().join("secret");
        let secret_text = format!("host-secret-{}", nonce());
        std::fs::write(&secret, &secret_text).map_err(|e| format!("write secret: {e}"))?;
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
        let abstract_name = format!("stk-sec-{}", nonce());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .map_err(|e| e.to_string())?;
        let unix = std::os::unix::net::UnixListener::bind_addr(&addr)
            .map_err(|e| format!("bind abstract socket: {e}"))?;
        unix.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Targets {
            dir,
            secret,
            secret_text,
            tcp,
            abstract_name,
            unix,
        })
    }

    pub fn port(&self) -> u16 {
        self.tcp.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Gives a sandbox the targets' coordinates.
    pub fn aim(&self, s: Sandbox, d: &Daemon) -> Sandbox {
        s.env("HOST_PID", d.containerd.pid())
            .env("HOST_SECRET", self.secret.display())
            .env("HOST_PORT", self.port())
            .env("HOST_ABSTRACT", &self.abstract_name)
            .env(
                "HOST_SOCKETS",
                format!("{}:/run/containerd/containerd.sock", d.socket().display()),
            )
    }

    /// Connections the host listeners accepted (there must be none).
    pub fn accepted(&self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok((_, peer)) = self.tcp.accept() {
            v.push(format!("tcp connection from {peer}"));
        }
        while let Ok((_, peer)) = self.unix.accept() {
            v.push(format!("abstract unix connection from {peer:?}"));
        }
        v
    }
}

/// The host facts an escape would change. Captured before and after each attack; any
/// difference fails the case.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState {
    values: BTreeMap<String, String>,
    /// The wall clock minus a monotonic clock (see [`clock_offset`]).
    clock_offset: f64,
}

/// Files whose content is host-global state an escape could change.
const HOST_FILES: &[&str] = &[
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/domainname",
    "/proc/sys/kernel/core_pattern",
    "/proc/sys/kernel/modprobe",
    "/proc/sys/kernel/random/boot_id",
    "/proc/sys/kernel/sysrq",
    "/proc/swaps",
    "/proc/modules",
    "/sys/kernel/uevent_helper",
    "/sys/kernel/mm/transparent_hugepage/enabled",
];

/// Host paths an attack writing `stkattack` to a path of its own root would hit, were that
/// root the host's.
const HOST_MARK_PATHS: &[&str] = &[
    "/stkattack",
    "/etc/stkattack",
    "/bin/stkattack",
    "/usr/bin/stkattack",
    "/tmp/stkattack",
    "/tmp/sda",
    "/tmp/mem",
    "/tmp/m",
];

impl HostState {
    pub fn capture(t: &Targets) -> HostState {
        let mut values = BTreeMap::new();
        for f in HOST_FILES {
            if let Ok(v) = std::fs::read_to_string(f) {
                values.insert((*f).to_string(), v);
            }
        }
        // cgroup v1 release agents (CVE-2022-0492).
        if let Ok(rd) = std::fs::read_dir(stockade::runner::DEFAULT_CGROUP_ROOT) {
            for e in rd.flatten() {
                let p = e.path().join("release_agent");
                if let Ok(v) = std::fs::read_to_string(&p) {
                    values.insert(p.display().to_string(), v);
                }
            }
        }
        // Keys of the sandbox user's UID (65534 maps to itself: no user namespace).
        let key_users = std::fs::read_to_string("/proc/key-users").unwrap_or_default();
        values.insert(
            "key-users 65534".into(),
            key_users
                .lines()
                .find(|l| l.trim_start().starts_with("65534:"))
                .unwrap_or("none")
                .to_string(),
        );
        let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
        values.insert(
            "keys named stkattack".into(),
            keys.lines()
                .filter(|l| l.contains(ATTACK_MARK))
                .count()
                .to_string(),
        );
        for mi in ["/proc/self/mountinfo", "/proc/1/mountinfo"] {
            let text = std::fs::read_to_string(mi).unwrap_or_default();
            let marked: Vec<&str> = text.lines().filter(|l| l.contains(ATTACK_MARK)).collect();
            values.insert(format!("{mi} lines with stkattack"), marked.join("\n"));
        }
        let mut present = Vec::new();
        for p in HOST_MARK_PATHS {
            if Path::new(p).symlink_metadata().is_ok() {
                present.push(*p);
            }
        }
        values.insert("attack paths present".into(), present.join(","));
        let secret_meta = std::fs::metadata(&t.secret)
            .map(|m| format!("{} {} {}", m.len(), m.mtime(), m.mtime_nsec()))
            .unwrap_or_else(|e| e.to_string());
        values.insert(
            "secret".into(),
            format!(
                "{} {}",
                std::fs::read_to_string(&t.secret).unwrap_or_default(),
                secret_meta
            ),
        );
        let listing: Vec<String> = std::fs::read_dir(t.dir.path())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        values.insert("host target dir".into(), listing.join(","));
        HostState {
            values,
            clock_offset: clock_offset(),
        }
    }

    /// What changed from `self` to `after`.
    pub fn changes(&self, after: &HostState) -> Vec<String> {
        let mut v = Vec::new();
        for (k, before) in &self.values {
            let now = after.values.get(k).map(String::as_str).unwrap_or("<gone>");
            if before != now {
                v.push(format!("{k}: `{}` became `{}`", before.trim(), now.trim()));
            }
        }
        if (after.clock_offset - self.clock_offset).abs() > 2.0 {
            v.push(format!(
                "the host clock jumped by {:.1}s",
                after.clock_offset - self.clock_offset
            ));
        }
        v
    }
}

/// The wall clock minus a monotonic clock, in seconds: constant unless the wall clock is
/// set.
fn clock_offset() -> f64 {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    let anchor = *ANCHOR.get_or_init(Instant::now);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    wall - anchor.elapsed().as_secs_f64()
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    match std::fs::read(path) {
        Ok(bytes) => format!("{:x}", sha2::Sha256::digest(&bytes)),
        Err(e) => format!("unreadable: {e}"),
    }
}

// --- privilege probe ---------------------------------------------------------------------

/// A static executable of a few instructions: `setuid(0); exit(geteuid() & 0xff)`. Its exit
/// status is 0 exactly when it ran with (or gained) effective UID 0, 254 when it stayed
/// UID 65534. Busybox and interpreters drop set-user-ID privileges themselves, so they
/// cannot show whether the kernel granted them; this can.
pub fn euid_probe_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    let (machine, code): (u16, Vec<u8>) = match std::env::consts::ARCH {
        "x86_64" => (
            0x3e,
            [
                &[0xbf, 0, 0, 0, 0][..], // mov edi, 0
                &[0xb8, 105, 0, 0, 0],   // mov eax, SYS_setuid
                &[0x0f, 0x05],           // syscall
                &[0xb8, 107, 0, 0, 0],   // mov eax, SYS_geteuid
                &[0x0f, 0x05],           // syscall
                &[0x89, 0xc7],           // mov edi, eax
                &[0xb8, 60, 0, 0, 0],    // mov eax, SYS_exit
                &[0x0f, 0x05],           // syscall
            ]
            .concat(),
        ),
        "aarch64" => (
            0xb7,
            [
                0xd280_0000u32, // mov x0, #0
                0xd280_1248,    // mov x8, #146 (setuid)
                0xd400_0001,    // svc #0
                0xd280_15e8,    // mov x8, #175 (geteuid)
                0xd400_0001,    // svc #0
                0xd280_0ba8,    // mov x8, #93 (exit)
                0xd400_0001,    // svc #0
            ]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect(),
        ),
        other => panic!("no privilege probe for {other}"),
    };
    let total = 64 + 56 + code.len() as u64;
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&machine.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&(BASE + 120).to_le_bytes()); // entry
    f.extend_from_slice(&64u64.to_le_bytes()); // phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    f.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // phnum
    f.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // R+X
    f.extend_from_slice(&0u64.to_le_bytes()); // offset
    f.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // paddr
    f.extend_from_slice(&total.to_le_bytes()); // filesz
    f.extend_from_slice(&total.to_le_bytes()); // memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    f.extend_from_slice(&code);
    f
}
