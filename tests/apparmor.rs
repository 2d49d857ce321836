//! The rendered AppArmor profile: golden files, acceptance by the real `apparmor_parser`,
//! and the `stockade apparmor` commands.
//!
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files after an intended template change.

use std::path::{Path, PathBuf};
use std::process::Command;

use stockade::apparmor::{self, Params, SystemParser};
use stockade::policy::NetworkMode;

const MODES: [(NetworkMode, &str); 3] = [
    (NetworkMode::None, "none"),
    (NetworkMode::Loopback, "loopback"),
    (NetworkMode::Egress, "egress"),
];

fn golden_path(mode: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("apparmor/golden/stockade-default.{mode}.golden"))
}

fn stockade(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .output()
        .expect("run stockade")
}

/// The parser, or `None` (with the reason printed) where it is not installed. On CI it
/// must be there.
fn parser() -> Option<SystemParser> {
    let p = SystemParser::find();
    let found = Command::new(&p.path).arg("--version").output().is_ok();
    if found {
        return Some(p);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CI=true but apparmor_parser ({}) cannot be run",
            p.path.display()
        );
    }
    eprintln!(
        "skipping: apparmor_parser ({}) is not installed",
        p.path.display()
    );
    None
}

#[test]
fn rendered_profiles_match_golden_files() {
    for (mode, word) in MODES {
        let text = apparmor::render(&Params::default_for(mode));
        let path = golden_path(word);
        if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &text).expect("write golden");
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
        assert_eq!(
            text,
            want,
            "{} differs from the rendered profile",
            path.display()
        );
    }
}

#[test]
fn apparmor_parser_accepts_both_network_modes() {
    let Some(parser) = parser() else { return };
    for (mode, word) in MODES {
        let text = apparmor::render(&Params::default_for(mode));
        apparmor::check(&parser, &text).unwrap_or_else(|e| panic!("network {word}: {e}"));
        let custom = apparmor::render(&Params::new("ci-sandbox.1", mode).expect("name"));
        apparmor::check(&parser, &custom).unwrap_or_else(|e| panic!("custom name, {word}: {e}"));
    }
}

/// The check is a real compile: a broken rule or an unknown capability is refused, with the
/// parser's reason on one line.
#[test]
fn apparmor_parser_rejects_broken_profiles() {
    let Some(parser) = parser() else { return };
    let good = apparmor::render(&Params::default_for(NetworkMode::None));
    let cases = [
        (
            "unknown capability",
            good.replace("deny capability bpf,", "deny capability frobnicate,"),
        ),
        (
            "bad file mode",
            good.replace("deny @{PROC}/kcore rwklx,", "deny @{PROC}/kcore rwkbq,"),
        ),
        (
            "unclosed profile",
            good.trim_end().trim_end_matches('}').to_string(),
        ),
    ];
    for (what, text) in cases {
        assert_ne!(text, good, "{what}: the mutation must change the text");
        let err = apparmor::check(&parser, &text).expect_err(what).to_string();
        assert!(
            err.starts_with("apparmor_parser rejected profile stockade-default: "),
            "{what}: {err}"
        );
        assert!(!err.contains('\n'), "{what}: one line: {err}");
        assert!(!err.contains("Cache read/write"), "{what}: {err}");
    }
}

#[test]
fn cli_render_prints_the_golden_profile() {
    for (_, word) in MODES {
        let out = stockade(&["apparmor", "render", "--network", word]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = std::fs::read_to_string(golden_path(word)).expect("golden");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
    let out = stockade(&[
        "apparmor",
        "render",
        "--name",
        "mine",
        "--network",
        "loopback",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("profile mine flags="));

    let out = stockade(&["apparmor", "render", "--network", "host"]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--network \"host\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = stockade(&["apparmor", "render", "--name", "bad name"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));
}

#[test]
fn cli_check_exit_codes() {
    if parser().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(
        &good,
        apparmor::render(&Params::default_for(NetworkMode::Loopback)),
    )
    .expect("write");
    std::fs::write(&bad, "profile broken {\n  frobnicate everything,\n}\n").expect("write");

    let out = stockade(&["apparmor", "check", good.to_str().expect("utf8")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = stockade(&["apparmor", "check", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected profile broken"), "{err}");

    let missing = dir.path().join("missing");
    let out = stockade(&["apparmor", "check", missing.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing: cannot read"));
}

/// On a kernel without AppArmor, `load` says so and changes nothing.
#[test]
fn cli_load_refuses_without_kernel_apparmor() {
    let facts = stockade::host::probe(&stockade::host::HostPaths::system()).expect("probe");
    if facts.apparmor {
        eprintln!("skipping: this kernel has AppArmor; loading is covered where it is absent");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = stockade(&[
        "apparmor",
        "load",
        "--state-dir",
        state.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot load stockade-default: the kernel has no AppArmor"),
        "{err}"
    );
    assert!(!state.exists(), "nothing recorded");
}
