//! Config rendering, pidfiles, argv recognition and the mount and shim scanners.

use super::*;

fn argv(s: &str) -> Vec<String> {
    s.split(' ').map(str::to_string).collect()
}

#[test]
fn system_paths_are_the_documented_ones() {
    let p = DaemonPaths::system();
    assert_eq!(p.root, Path::new("/var/lib/stockade/containerd"));
    assert_eq!(p.state, Path::new("/run/stockade/containerd"));
    assert_eq!(
        p.socket,
        Path::new("/run/stockade/containerd/containerd.sock")
    );
    assert_eq!(p.log, Path::new("/var/log/stockade/containerd.log"));
}

#[test]
fn config_is_valid_toml_with_everything_under_our_roots() {
    let p = DaemonPaths::under(Path::new("/tmp/stk-x"));
    let v: toml::Value = toml::from_str(&render_config(&p)).unwrap();
    assert_eq!(v["version"].as_integer(), Some(2));
    assert_eq!(v["root"].as_str(), Some("/tmp/stk-x/root"));
    assert_eq!(v["state"].as_str(), Some("/tmp/stk-x/state"));
    assert_eq!(
        v["grpc"]["address"].as_str(),
        Some("/tmp/stk-x/state/containerd.sock")
    );
    assert_eq!(
        v["ttrpc"]["address"].as_str(),
        Some("/tmp/stk-x/state/containerd.sock.ttrpc")
    );
    let disabled: Vec<&str> = v["disabled_plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(disabled.contains(&"io.containerd.grpc.v1.cri"));
    assert!(!disabled.iter().any(|d| d.contains("overlayfs")));
    assert_eq!(
        v["plugins"]["io.containerd.internal.v1.opt"]["path"].as_str(),
        Some("/tmp/stk-x/root/opt")
    );
}

#[test]
fn a_cri_config_enables_the_plugin_with_everything_under_our_state() {
    let mut p = DaemonPaths::under(Path::new("/tmp/stk-x"));
    p.cri = Some(CriConfig::new("stockade.invalid/pause:cri", &p.state));
    let v: toml::Value = toml::from_str(&render_config(&p)).unwrap();
    let disabled = v["disabled_plugins"].as_array().unwrap();
    assert!(!disabled.iter().any(|d| d.as_str() == Some(cri::PLUGIN)));
    let c = &v["plugins"][cri::PLUGIN];
    assert_eq!(
        c["sandbox_image"].as_str(),
        Some("stockade.invalid/pause:cri")
    );
    assert_eq!(c["netns_mounts_under_state_dir"].as_bool(), Some(true));
    assert_eq!(c["stream_server_address"].as_str(), Some("127.0.0.1"));
    assert_eq!(c["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
    assert_eq!(
        c["cni"]["conf_dir"].as_str(),
        Some("/tmp/stk-x/state/cni/net.d")
    );
    let runc = &c["containerd"]["runtimes"]["runc"];
    assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(
        runc["options"]["Root"].as_str(),
        Some("/tmp/stk-x/state/runc")
    );
    // The opt plugin's table is still there: the CRI section is appended, not spliced in.
    assert_eq!(
        v["plugins"]["io.containerd.internal.v1.opt"]["path"].as_str(),
        Some("/tmp/stk-x/root/opt")
    );
}

#[test]
fn only_a_containerd_with_our_config_is_ours() {
    let p = DaemonPaths::under(Path::new("/tmp/stk-x"));
    let cases = [
        (
            "/usr/bin/containerd --config /tmp/stk-x/state/config.toml",
            true,
        ),
        ("containerd -c /tmp/stk-x/state/config.toml", true),
        (
            "/usr/bin/containerd --config=/tmp/stk-x/state/config.toml",
            true,
        ),
        (
            "/usr/bin/containerd --config /etc/containerd/config.toml",
            false,
        ),
        ("/usr/bin/containerd", false),
        ("/bin/sleep --config /tmp/stk-x/state/config.toml", false),
        ("", false),
    ];
    for (cmd, want) in cases {
        let a: Vec<String> = argv(cmd).into_iter().filter(|s| !s.is_empty()).collect();
        assert_eq!(is_our_daemon(&a, &p), want, "{cmd}");
    }
}

#[test]
fn mounts_under_root_deepest_first_with_escapes() {
    let info = "\
22 1 8:1 / / rw - ext4 /dev/vda rw
90 22 0:50 / /tmp/stk-a/root/snap/1/fs rw - overlay overlay rw
91 22 0:51 / /tmp/stk-a/root/snap/1/fs/proc rw - proc proc rw
92 22 0:52 / /tmp/stk-ab/other rw - tmpfs tmpfs rw
93 22 0:53 / /tmp/stk-a/root/with\\040space rw - tmpfs tmpfs rw
";
    assert_eq!(
        mounts_under(info, Path::new("/tmp/stk-a/root")),
        vec![
            PathBuf::from("/tmp/stk-a/root/snap/1/fs/proc"),
            PathBuf::from("/tmp/stk-a/root/snap/1/fs"),
            PathBuf::from("/tmp/stk-a/root/with space"),
        ]
    );
}

#[test]
fn shims_are_matched_by_their_daemon_address() {
    let sock = Path::new("/tmp/stk-a/state/containerd.sock");
    let mine = argv("/usr/bin/containerd-shim-runc-v2 -namespace stockade -id c1 -address /tmp/stk-a/state/containerd.sock");
    assert_eq!(
        shim_of(&mine, sock),
        Some((Some("c1".to_string()), Some("stockade".to_string())))
    );
    let other = argv("/usr/bin/containerd-shim-runc-v2 -namespace stockade -id c1 -address /run/containerd/containerd.sock");
    assert_eq!(shim_of(&other, sock), None);
    let not_shim = argv("/bin/sh -address /tmp/stk-a/state/containerd.sock");
    assert_eq!(shim_of(&not_shim, sock), None);
}

#[test]
fn errors_are_one_line_and_name_the_address() {
    let e = DaemonError::BinaryMissing {
        address: "/run/containerd/containerd.sock".into(),
        binary: "/usr/bin/containerd".into(),
    };
    assert_eq!(
        e.to_string(),
        "containerd not reachable at /run/containerd/containerd.sock and /usr/bin/containerd not found"
    );
    let e = DaemonError::Unreachable {
        address: "/x.sock".into(),
        reason: "no such socket".into(),
    };
    assert!(!e.to_string().contains('\n'));
    assert!(e.to_string().contains("/x.sock"));
}
