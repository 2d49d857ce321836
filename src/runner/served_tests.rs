use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;

use super::*;

fn place(address: &str) -> Place {
    Place {
        address: PathBuf::from(address),
        namespace: "stockade".into(),
        fifo_root: PathBuf::from("/run/stockade/fifo"),
        runc_binary: None,
    }
}

fn order() -> RunOrder {
    RunOrder {
        protocol: PROTOCOL,
        place: place("/run/containerd/containerd.sock"),
        disk_root: PathBuf::from("/var/lib/stockade/disks"),
        cwd: PathBuf::from("/"),
        bind_roots: None,
        policy: Policy::default(),
        policy_file: None,
        overrides: PolicyOverrides::default(),
        command: vec!["true".into()],
        entrypoint: None,
        json: false,
        interactive: false,
        cold: false,
        pool_dir: PathBuf::from("/run/stockade/pool"),
        run_log: None,
        utf8: true,
    }
}

/// A procfs with `self` and pid 42, each with a mount namespace link and a root.
fn fake_proc(theirs_ns: &str, theirs_root: &Path) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (pid, ns, root) in [
        ("self", "mnt:[4026531841]", Path::new("/")),
        ("42", theirs_ns, theirs_root),
    ] {
        std::fs::create_dir_all(t.path().join(pid).join("ns")).unwrap();
        symlink(ns, t.path().join(pid).join("ns/mnt")).unwrap();
        symlink(root, t.path().join(pid).join("root")).unwrap();
    }
    t
}

fn serving(proc_root: &Path) -> Serving {
    Serving {
        place: place("/run/containerd/containerd.sock"),
        disk_root: PathBuf::from("/var/lib/stockade/disks"),
        proc_root: proc_root.to_path_buf(),
    }
}

#[test]
fn a_server_takes_only_what_it_would_run_exactly_as_the_client() {
    let me = rustix::process::geteuid().as_raw();
    let peer = Peer { pid: 42, uid: me };
    let same = fake_proc("mnt:[4026531841]", Path::new("/"));
    let other_ns = fake_proc("mnt:[4026532000]", Path::new("/"));
    let other_root = fake_proc("mnt:[4026531841]", Path::new("/tmp"));
    // (what differs, the procfs, the order, the peer) → refused because (a word of it)
    type Case<'a> = (&'a str, &'a Path, RunOrder, Peer, Option<&'a str>);
    let with = |f: &dyn Fn(&mut RunOrder)| {
        let mut o = order();
        f(&mut o);
        o
    };
    let table: Vec<Case> = vec![
        ("nothing", same.path(), order(), peer, None),
        (
            "protocol",
            same.path(),
            with(&|o| o.protocol = 2),
            peer,
            Some("protocol"),
        ),
        (
            "uid",
            same.path(),
            order(),
            Peer {
                pid: 42,
                uid: me.wrapping_add(1),
            },
            Some("UID"),
        ),
        (
            "pid namespace",
            same.path(),
            order(),
            Peer { pid: 0, uid: me },
            Some("pid namespace"),
        ),
        (
            "mount namespace",
            other_ns.path(),
            order(),
            peer,
            Some("mount namespace"),
        ),
        (
            "root",
            other_root.path(),
            order(),
            peer,
            Some("root directory"),
        ),
        (
            "address",
            same.path(),
            with(&|o| o.place.address = "/run/stockade/containerd/containerd.sock".into()),
            peer,
            Some("containerd"),
        ),
        (
            "namespace",
            same.path(),
            with(&|o| o.place.namespace = "other".into()),
            peer,
            Some("namespace"),
        ),
        (
            "FIFO root",
            same.path(),
            with(&|o| o.place.fifo_root = "/tmp/fifo".into()),
            peer,
            Some("FIFO root"),
        ),
        (
            "runtime",
            same.path(),
            with(&|o| o.place.runc_binary = Some("/usr/bin/crun".into())),
            peer,
            Some("runtime"),
        ),
        (
            "disk root",
            same.path(),
            with(&|o| o.disk_root = "/tmp/disks".into()),
            peer,
            Some("disk root"),
        ),
        (
            "cwd",
            same.path(),
            with(&|o| o.cwd = "relative".into()),
            peer,
            Some("working directory"),
        ),
        (
            "a pid with no procfs entry",
            same.path(),
            order(),
            Peer { pid: 43, uid: me },
            Some("mount namespace"),
        ),
    ];
    for (what, proc_root, o, p, want) in table {
        let got = refusal(&serving(proc_root), &o, p);
        match (want, &got) {
            (None, None) => {}
            (Some(w), Some(g)) => assert!(g.contains(w), "{what}: {g:?} lacks {w:?}"),
            _ => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn an_order_survives_the_wire_and_unknown_fields_are_refused() {
    let mut o = order();
    o.overrides.memory = Some("64Mi".into());
    o.overrides.env = vec!["A=1".into()];
    o.command = vec!["sh".into(), "-c".into(), "echo 'a b'\n".into()];
    let text = serde_json::to_string(&o).unwrap();
    let back: RunOrder = serde_json::from_str(&text).unwrap();
    assert_eq!(back, o);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["privileged"] = true.into();
    assert!(serde_json::from_value::<RunOrder>(v).is_err());
    assert!(is_order(br#"{"op":"run","protocol":1}"#));
    for not in [&br#"{"op":"remove","id":"x"}"#[..], b"{", b"[]", b""] {
        assert!(!is_order(not), "{}", String::from_utf8_lossy(not));
    }
}

/// A server on a real socket in a temporary directory, answering with `serving`; each
/// accepted run goes to `then`.
async fn server<F, Fut>(dir: &Path, serving: Serving, then: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(ServedRun) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::UnixListener::bind(dir.join("1.sock")).unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (line, fds) = read_first(&stream).await.unwrap();
        assert!(is_order(&line));
        if let Some(run) = accept(&serving, stream, &line, fds).await.unwrap() {
            then(run).await;
        }
    })
}

fn this_process_serving(order: &RunOrder) -> Serving {
    Serving {
        place: order.place.clone(),
        disk_root: order.disk_root.clone(),
        proc_root: PathBuf::from("/proc"),
    }
}

fn sockets(dir: &Path) -> Vec<PathBuf> {
    crate::pool::service::sockets(dir)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (r, w)
}

#[tokio::test]
async fn the_server_writes_to_the_client_s_descriptors_and_its_cancel_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let o = order();
    let task = server(dir.path(), this_process_serving(&o), |mut run| async move {
        assert_eq!(run.order.command, vec!["true".to_string()]);
        let mut out = std::fs::File::from(run.stdout);
        std::io::Write::write_all(&mut out, b"to stdout").unwrap();
        drop(out);
        let cancel = Cancel::new();
        let mut rx = cancel.subscribe();
        let fwd = run.control.forward_cancels(cancel.clone());
        let sig = loop {
            if let Some(s) = *rx.borrow_and_update() {
                break s;
            }
            rx.changed().await.unwrap();
        };
        fwd.abort();
        run.control.finish(128 + sig as u8).await.unwrap();
    })
    .await;
    let (in_r, _in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (_err_r, err_w) = pipe();
    let session = offer(
        &sockets(dir.path()),
        &o,
        [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()],
    )
    .await
    .expect("taken");
    assert_eq!(session.server_pid(), std::process::id());
    drop(out_w);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(15).unwrap();
    assert_eq!(session.finish(rx).await.unwrap(), 143);
    let mut got = String::new();
    std::fs::File::from(out_r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "to stdout");
    task.await.unwrap();
}

#[tokio::test]
async fn a_refused_order_leaves_the_client_to_run_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let o = order();
    let mut other = this_process_serving(&o);
    other.place.namespace = "elsewhere".into();
    let task = server(dir.path(), other, |_| async { panic!("refused, not run") }).await;
    let (r, w) = pipe();
    assert!(
        offer(&sockets(dir.path()), &o, [r.as_fd(), w.as_fd(), w.as_fd()])
            .await
            .is_none()
    );
    task.await.unwrap();
    // No server at all: nothing to offer to.
    let empty = tempfile::tempdir().unwrap();
    assert!(offer(
        &sockets(empty.path()),
        &o,
        [r.as_fd(), w.as_fd(), w.as_fd()]
    )
    .await
    .is_none());
}

#[tokio::test]
async fn a_server_that_goes_away_mid_run_is_an_error_not_an_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let o = order();
    let task = server(dir.path(), this_process_serving(&o), |run| async move {
        drop(run);
    })
    .await;
    let (r, w) = pipe();
    let session = offer(&sockets(dir.path()), &o, [r.as_fd(), w.as_fd(), w.as_fd()])
        .await
        .expect("taken");
    task.await.unwrap();
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let e = session.finish(rx).await.unwrap_err();
    assert!(matches!(e, ServedError::ServerGone { .. }), "{e}");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_run_as_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let o = order();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    let task = server(dir.path(), this_process_serving(&o), move |mut run| {
        let tx = seen_tx.lock().unwrap().take();
        async move {
            let cancel = Cancel::new();
            let mut rx = cancel.subscribe();
            let _fwd = run.control.forward_cancels(cancel.clone());
            rx.changed().await.unwrap();
            let _ = tx.unwrap().send(*rx.borrow());
        }
    })
    .await;
    let (r, w) = pipe();
    let session = offer(&sockets(dir.path()), &o, [r.as_fd(), w.as_fd(), w.as_fd()])
        .await
        .expect("taken");
    drop(session);
    assert_eq!(seen_rx.await.unwrap(), Some(HANGUP));
    task.await.unwrap();
}
