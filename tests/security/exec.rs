//! Attempts through `stockade exec` into a long-lived sandbox: asking for root, and what an
//! exec'd process holds and reaches. What is verified:
//! - `-u 0` (and GID 0) is refused in a sandbox whose user is not 0, with one line and
//!   exit 125, before anything runs; another non-zero UID is granted as asked.
//! - an exec'd process has no capability in any set, NoNewPrivs 1, seccomp mode 2 (filter)
//!   and the UID of the sandbox's pid 1 (the init). (No setuid binary is tried: image
//!   layers carry no setuid bits and the writable mounts are nosuid; NoNewPrivs is what
//!   would void one.)
//! - it cannot kill the init with SIGKILL (a pid namespace's init is immune to signals sent
//!   from inside it that it has no handler for). It may signal processes of its own sandbox
//!   (its own UID), by design: SIGTERM to the init stops its own sandbox, nothing else.
//! - it sees no process but its own sandbox's: another sandbox's processes (another UID,
//!   another pid namespace) are neither listed nor signalable.

use std::process::Command;
use std::time::Duration;

use crate::harness::{
    case, nonce, run_guarded, stockade_bin, Case, CaseResult, Daemon, Finished, NAMESPACE,
};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case("exec::user_0_is_refused_with_one_line", user_zero),
        case(
            "exec::an_exec_holds_no_capability_has_no_new_privs_seccomp_and_pid_1_s_uid",
            confinement,
        ),
        case(
            "exec::an_exec_cannot_sigkill_the_init_nor_see_another_sandbox",
            signals,
        ),
    ]
}

const GUARD: Duration = Duration::from_secs(60);

fn stockade(d: &Daemon, args: &[&str]) -> Result<Finished, String> {
    let cmd: Command = d.stockade(args);
    run_guarded(cmd, GUARD)
}

/// `stockade create ARGS`; the id, recorded for the leftover census.
fn create(d: &Daemon, args: &[&str]) -> Result<String, String> {
    let mut a = vec!["create"];
    a.extend_from_slice(args);
    let out = stockade(d, &a)?;
    ensure!(
        out.code == Some(0),
        "create exited {:?}: {}",
        out.code,
        out.stderr_text().trim()
    );
    let id = out.stdout_text().trim().to_string();
    d.record(&id);
    Ok(id)
}

/// `stockade exec FLAGS --address … --namespace … ID -- CMD` (the daemon's flags must come
/// before `--`).
fn exec(d: &Daemon, flags: &[&str], id: &str, cmd: &[&str]) -> Result<Finished, String> {
    let mut c = Command::new(stockade_bin());
    c.arg("exec")
        .args(flags)
        .arg("--address")
        .arg(d.socket())
        .arg("--namespace")
        .arg(NAMESPACE)
        .arg(id)
        .arg("--")
        .args(cmd);
    run_guarded(c, GUARD)
}

/// Removes the sandbox whatever the case's outcome.
struct Removed<'a>(&'a Daemon, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = stockade(self.0, &["rm", "-f", &self.1]);
    }
}

fn user_zero(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let id = create(d, &[])?;
    let _rm = Removed(d, id.clone());
    let marker = format!("/tmp/{}", nonce());
    for user in ["0", "0:0", "1000:0"] {
        let out = exec(d, &["-u", user], &id, &["touch", &marker])?;
        let err = out.stderr_text();
        ensure!(
            out.code == Some(125) && err.lines().count() == 1 && err.contains("refused"),
            "-u {user}: exit {:?}, stderr {err:?}",
            out.code
        );
    }
    let check = exec(d, &[], &id, &["test", "-e", &marker])?;
    ensure!(check.code == Some(1), "a refused exec ran: {marker} exists");
    let other = exec(d, &["-u", "1000:1000"], &id, &["id", "-u"])?;
    ensure!(
        other.code == Some(0) && other.stdout_text().trim() == "1000",
        "-u 1000:1000: exit {:?}, {}",
        other.code,
        other.stdout_text()
    );
    Ok(())
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn confinement(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let id = create(d, &[])?;
    let _rm = Removed(d, id.clone());
    let me = exec(d, &[], &id, &["cat", "/proc/self/status"])?;
    let init = exec(d, &[], &id, &["cat", "/proc/1/status"])?;
    ensure!(
        me.code == Some(0) && init.code == Some(0),
        "reading status failed"
    );
    let (me, init) = (me.stdout_text(), init.stdout_text());
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        ensure!(
            field(&me, cap) == Some("0000000000000000"),
            "{cap} of an exec: {:?}",
            field(&me, cap)
        );
    }
    ensure!(
        field(&me, "NoNewPrivs") == Some("1"),
        "NoNewPrivs: {:?}",
        field(&me, "NoNewPrivs")
    );
    ensure!(
        field(&me, "Seccomp") == Some("2"),
        "Seccomp: {:?}",
        field(&me, "Seccomp")
    );
    let (uid, init_uid) = (field(&me, "Uid"), field(&init, "Uid"));
    ensure!(
        uid.is_some() && uid == init_uid,
        "Uid {uid:?} vs pid 1's {init_uid:?}"
    );
    ensure!(
        !uid.unwrap_or("0").starts_with("0\t"),
        "an exec runs as root: {uid:?}"
    );
    Ok(())
}

fn signals(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let a = create(d, &[])?;
    let _rm_a = Removed(d, a.clone());
    let b = create(d, &[])?;
    let _rm_b = Removed(d, b.clone());
    // B's background process runs a script named by a nonce, so its command line is known.
    let tag = nonce();
    let started = exec(
        d,
        &[],
        &b,
        &[
            "sh",
            "-c",
            &format!("printf 'sleep 600\\n' > /tmp/{tag}; sh /tmp/{tag} >/dev/null 2>&1 & echo $!"),
        ],
    )?;
    ensure!(
        started.code == Some(0),
        "starting B's process: {}",
        started.stderr_text()
    );
    // From A: pid 1 survives SIGKILL, and B's process is nowhere.
    let kill = exec(
        d,
        &[],
        &a,
        &["sh", "-c", "kill -KILL 1; sleep 1; kill -0 1 && echo alive"],
    )?;
    ensure!(
        kill.stdout_text().contains("alive"),
        "the init did not survive SIGKILL from an exec: {} {}",
        kill.stdout_text(),
        kill.stderr_text()
    );
    let seen = exec(
        d,
        &[],
        &a,
        &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"],
    )?;
    ensure!(
        !seen.stdout_text().contains(&tag),
        "sandbox A sees sandbox B's process: {}",
        seen.stdout_text()
    );
    let still = exec(
        d,
        &[],
        &b,
        &["sh", "-c", &format!("grep -l {tag} /proc/[0-9]*/cmdline")],
    )?;
    ensure!(
        still.code == Some(0),
        "B's process is gone: {}",
        still.stderr_text()
    );
    let inspect = stockade(d, &["inspect", &a])?;
    match serde_json::from_slice::<serde_json::Value>(&inspect.stdout) {
        Ok(v) if v["state"] == "running" => Ok(()),
        Ok(v) => fail!("sandbox A after SIGKILL to its init: {}", v["state"]),
        Err(e) => fail!("inspect: {e}: {}", inspect.stderr_text()),
    }
}
