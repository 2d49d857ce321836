//! Attempts through `stockade cp` into a long-lived sandbox. What is verified:
//! - one archive on stdin holding a link to a host directory and a file beneath it, a
//!   `../` name, an absolute name and a device node is refused in one line with exit 125;
//!   nothing lands in the host directory, no device node exists in the sandbox, and the
//!   sandbox's own files stay as they were.
//! - a stopped sandbox whose (writable) root holds links to host paths: a copy out
//!   following them, and a copy into them, resolve inside its root (the host file is never
//!   read, nothing lands in the host directory), and no mount is left behind.

use std::process::Command;
use std::time::Duration;

use crate::harness::{case, nonce, run_guarded, stockade_bin, Case, CaseResult, Daemon, NAMESPACE};
use crate::{ensure, fail};

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "cp::a_hostile_archive_on_stdin_is_refused_and_writes_nothing_outside",
            hostile_archive,
        ),
        case(
            "cp::a_stopped_sandboxs_links_to_the_host_resolve_inside_its_root",
            stopped_links,
        ),
    ]
}

const GUARD: Duration = Duration::from_secs(60);

fn stockade(d: &Daemon, args: &[&str]) -> Result<crate::harness::Finished, String> {
    let cmd: Command = d.stockade(args);
    run_guarded(cmd, GUARD)
}

/// A member whose name is written as raw bytes (the `tar` crate will not spell these).
fn member(b: &mut tar::Builder<Vec<u8>>, name: &[u8], kind: tar::EntryType, link: Option<&str>) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(0o4755);
    h.set_size(u64::from(kind == tar::EntryType::Regular));
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    let data: &[u8] = if kind == tar::EntryType::Regular {
        b"x"
    } else {
        b""
    };
    b.append(&h, data).unwrap();
}

fn hostile_archive(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let out = stockade(d, &["create"])?;
    ensure!(out.code == Some(0), "create: {}", out.stderr_text().trim());
    let id = out.stdout_text().trim().to_string();
    d.record(&id);
    let _rm = Removed(d, id.clone());
    let host = tempfile::tempdir().map_err(|e| e.to_string())?;
    let host_s = host.path().to_str().unwrap_or_default().to_string();
    let n = nonce();
    let archives: Vec<(&str, Vec<u8>)> = vec![
        ("link then file", {
            let mut b = tar::Builder::new(Vec::new());
            member(&mut b, n.as_bytes(), tar::EntryType::Symlink, Some(&host_s));
            member(
                &mut b,
                format!("{n}/pwned").as_bytes(),
                tar::EntryType::Regular,
                None,
            );
            b.into_inner().unwrap()
        }),
        ("dot-dot", {
            let mut b = tar::Builder::new(Vec::new());
            member(
                &mut b,
                b"../../../../../../pwned",
                tar::EntryType::Regular,
                None,
            );
            b.into_inner().unwrap()
        }),
        ("absolute", {
            let mut b = tar::Builder::new(Vec::new());
            member(
                &mut b,
                format!("{host_s}/pwned").as_bytes(),
                tar::EntryType::Regular,
                None,
            );
            b.into_inner().unwrap()
        }),
        ("device", {
            let mut b = tar::Builder::new(Vec::new());
            member(&mut b, b"mem", tar::EntryType::Block, None);
            b.into_inner().unwrap()
        }),
    ];
    for (what, archive) in archives {
        let file = host.path().join(format!("{what}.tar").replace(' ', "-"));
        std::fs::write(&file, &archive).map_err(|e| e.to_string())?;
        // The harness gives its commands no stdin: a shell redirects the archive.
        let mut c = Command::new("sh");
        c.args(["-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh"])
            .arg(&file)
            .arg(stockade_bin())
            .args(["cp", "--address"])
            .arg(d.socket())
            .args(["--namespace", NAMESPACE, "-", &format!("{id}:/tmp/")]);
        let out = run_guarded(c, GUARD)?;
        let err = out.stderr_text();
        ensure!(
            out.code == Some(125) && err.lines().count() == 1 && err.contains("refused"),
            "{what}: exit {:?}, stderr {err:?}",
            out.code
        );
    }
    let left: Vec<_> = std::fs::read_dir(host.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".tar"))
        .collect();
    if !left.is_empty() {
        fail!("written into the host directory: {left:?}");
    }
    ensure!(
        !std::path::Path::new("/pwned").exists(),
        "a `..` entry reached the host's /"
    );
    Ok(())
}

fn stopped_links(d: &std::sync::Arc<Daemon>) -> CaseResult {
    let host = tempfile::tempdir().map_err(|e| e.to_string())?;
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host secret\n").map_err(|e| e.to_string())?;
    let out = stockade(d, &["create", "--read-write-root"])?;
    ensure!(out.code == Some(0), "create: {}", out.stderr_text().trim());
    let id = out.stdout_text().trim().to_string();
    d.record(&id);
    let _rm = Removed(d, id.clone());
    let host_s = host.path().to_str().unwrap_or_default().to_string();
    // Links to the host's paths planted in the sandbox's root (links are data: a sandbox
    // running as root could make them itself).
    let links = {
        let mut b = tar::Builder::new(Vec::new());
        for (name, target) in [
            ("hostdir", host_s.clone()),
            ("hostfile", format!("{host_s}/secret")),
            ("climb", format!("../../../..{host_s}")),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, name, &target)
                .map_err(|e| e.to_string())?;
        }
        b.into_inner().map_err(|e| e.to_string())?
    };
    let tar_file = host.path().join("links.tar");
    std::fs::write(&tar_file, &links).map_err(|e| e.to_string())?;
    let mut c = Command::new("sh");
    c.args(["-c", "f=$1; shift; exec \"$@\" < \"$f\"", "sh"])
        .arg(&tar_file)
        .arg(stockade_bin())
        .args(["cp", "--address"])
        .arg(d.socket())
        .args(["--namespace", NAMESPACE, "-", &format!("{id}:/")]);
    let out = run_guarded(c, GUARD)?;
    ensure!(
        out.code == Some(0),
        "planting links: {}",
        out.stderr_text().trim()
    );
    let out = stockade(d, &["stop", "--time", "2s", &id])?;
    ensure!(out.code == Some(0), "stop: {}", out.stderr_text().trim());
    for src in ["/hostfile", "/hostdir/secret", "/climb/secret", "/hostdir/"] {
        let out = stockade(d, &["cp", "-L", &format!("{id}:{src}"), "-"])?;
        ensure!(
            !String::from_utf8_lossy(&out.stdout).contains("host secret"),
            "{src}: the host's file came out of the stopped sandbox"
        );
        ensure!(out.code == Some(125), "{src}: exit {:?}", out.code);
    }
    let file = host.path().join("in.txt");
    std::fs::write(&file, "x\n").map_err(|e| e.to_string())?;
    for dst in ["/hostdir/", "/climb/"] {
        let out = stockade(
            d,
            &[
                "cp",
                file.to_str().unwrap_or_default(),
                &format!("{id}:{dst}"),
            ],
        )?;
        // Resolved inside the root, where the directory does not exist.
        ensure!(out.code == Some(125), "{dst}: exit {:?}", out.code);
    }
    let names: Vec<_> = std::fs::read_dir(host.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(names.len() == 3, "the host directory changed: {names:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    ensure!(
        !mounts.contains(stockade::sandbox::stopped::MOUNT_PREFIX),
        "a stopped root's mount was left"
    );
    Ok(())
}

/// Removes the sandbox whatever the case's outcome.
struct Removed<'a>(&'a Daemon, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = stockade(self.0, &["rm", "-f", &self.1]);
    }
}
