//! Rendering, name checks, and the load cache with a recording fake parser.

use std::cell::RefCell;

use super::*;

#[test]
fn profile_names() {
    let cases = [
        ("stockade-default", true),
        ("stockade-default-loopback", true),
        ("my_profile.v2", true),
        ("0day", true),
        ("", false),
        ("-leading-dash", false),
        (".hidden", false),
        ("has space", false),
        ("quote\"d", false),
        ("brace{x}", false),
        ("semi;colon", false),
        ("new\nline", false),
        ("comma,", false),
        ("slash/path", false),
    ];
    for (name, ok) in cases {
        assert_eq!(Params::new(name, NetworkMode::None).is_ok(), ok, "{name:?}");
    }
    assert!(Params::new(&"a".repeat(128), NetworkMode::None).is_ok());
    assert!(Params::new(&"a".repeat(129), NetworkMode::None).is_err());
}

#[test]
fn defaults_have_one_name_per_network_mode() {
    assert_eq!(
        Params::default_for(NetworkMode::None).name(),
        "stockade-default"
    );
    assert_eq!(
        Params::default_for(NetworkMode::Loopback).name(),
        "stockade-default-loopback"
    );
}

/// The rules of a rendered profile; `audit` only logs a refusal, so it is left out.
fn rules(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.strip_prefix("audit ").unwrap_or(l))
        .collect()
}

#[test]
fn network_none_allows_only_unix_sockets() {
    let text = render(&Params::default_for(NetworkMode::None));
    let r = rules(&text);
    for want in [
        "network unix,",
        "deny network inet,",
        "deny network inet6,",
        "deny network raw,",
        "deny network packet,",
        "deny network netlink,",
        "deny network alg,",
    ] {
        assert!(r.contains(&want), "missing {want}");
    }
    let allowed_net: Vec<&&str> = r.iter().filter(|l| l.starts_with("network ")).collect();
    assert_eq!(allowed_net, [&"network unix,"]);
}

#[test]
fn network_loopback_allows_tcp_udp_but_not_raw() {
    let text = render(&Params::default_for(NetworkMode::Loopback));
    let r = rules(&text);
    for want in [
        "network inet stream,",
        "network inet6 dgram,",
        "deny network raw,",
        "deny network packet,",
        "deny network alg,",
    ] {
        assert!(r.contains(&want), "missing {want}");
    }
    assert!(!r.contains(&"deny network inet,"));
    assert!(!r
        .iter()
        .any(|l| l.starts_with("network raw") || l.starts_with("network packet")));
}

#[test]
fn render_substitutes_everything() {
    let p = Params::new("sandbox-7", NetworkMode::Loopback).expect("name");
    let text = render(&p);
    assert!(!text.contains("{{"), "unrendered placeholder:\n{text}");
    assert!(!text.contains("#:"), "template notes must not be rendered");
    assert!(text.contains("profile sandbox-7 flags=(attach_disconnected,mediate_deleted) {"));
    assert!(text.contains("signal (send, receive) peer=sandbox-7,"));
    assert!(text.contains("ptrace (trace, tracedby, read, readby) peer=sandbox-7,"));
    assert!(text.contains("# Rendered as sandbox-7, network mode loopback."));
    assert!(
        !text.contains("stockade-default"),
        "the name is a parameter"
    );
}

#[test]
fn template_blocks() {
    let t = "a {{name}}\n{{if network=none}}\nn {{network}}\n{{end}}\n{{if network=loopback}}\nl\n{{end}}\n#: note\nz\n";
    let none = render_template(t, &Params::new("x", NetworkMode::None).expect("name"));
    assert_eq!(none, "a x\nn none\nz\n");
    let lo = render_template(t, &Params::new("x", NetworkMode::Loopback).expect("name"));
    assert_eq!(lo, "a x\nl\nz\n");
}

/// Every rule sits in a block of rules headed by a comment saying why.
#[test]
fn every_rule_has_a_comment() {
    for network in [NetworkMode::None, NetworkMode::Loopback] {
        let text = render(&Params::default_for(network));
        let mut prev = "";
        for line in text.lines().map(str::trim) {
            let is_rule = !line.is_empty() && !line.starts_with('#') && line != "}";
            let prev_is_rule = !prev.is_empty() && !prev.starts_with('#');
            if is_rule {
                assert!(
                    prev.starts_with('#') || prev_is_rule,
                    "rule without a comment above it: {line:?}"
                );
            }
            prev = line;
        }
    }
}

/// Docker's default profile (moby's `apparmor-docker-default.golden`) is the floor: each of
/// its denials has an equal or broader denial here, and what it allows that the sandbox
/// does not need is denied.
#[test]
fn at_least_as_strict_as_dockers_default() {
    for network in [NetworkMode::None, NetworkMode::Loopback] {
        let text = render(&Params::default_for(network));
        let r = rules(&text);
        let has = |rule: &str| r.contains(&rule);
        // (Docker's rule, ours that covers it)
        let floor = [
            ("deny network alg,", "deny network alg,"),
            ("deny @{PROC}/* w,", "deny @{PROC}/* w,"),
            (
                "deny @{PROC}/{[^1-9/],…}/** w,",
                "deny @{PROC}/[^0-9]*/** w,",
            ),
            ("deny @{PROC}/sys/[^k]** w,", "deny @{PROC}/sys/** wklx,"),
            (
                "deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,",
                "deny @{PROC}/sys/** wklx,",
            ),
            (
                "deny @{PROC}/sysrq-trigger rwklx,",
                "deny @{PROC}/sysrq-trigger rwklx,",
            ),
            ("deny @{PROC}/kcore rwklx,", "deny @{PROC}/kcore rwklx,"),
            ("deny mount,", "deny mount,"),
            ("deny /sys/[^f]*/** wklx,", "deny @{SYS}/** wklx,"),
            ("deny /sys/fs/cg[^r]*/** wklx,", "deny @{SYS}/** wklx,"),
            (
                "deny /sys/firmware/** rwklx,",
                "deny @{SYS}/firmware/** rwklx,",
            ),
            (
                "deny /sys/devices/virtual/powercap/** rwklx,",
                "deny @{SYS}/devices/virtual/powercap/** rwklx,",
            ),
            (
                "deny /sys/kernel/security/** rwklx,",
                "deny @{SYS}/kernel/security/** rwklx,",
            ),
            // Docker allows these; the sandbox does not.
            ("umount,", "deny umount,"),
            ("capability,", "deny capability sys_admin,"),
            (
                "(pivot_root allowed implicitly by file rules)",
                "deny pivot_root,",
            ),
            ("(no attr rule)", "deny @{PROC}/*/attr/** rwklx,"),
        ];
        for (docker, ours) in floor {
            assert!(
                has(ours),
                "{network:?}: Docker has {docker}; we need {ours}"
            );
        }
        assert!(!has("capability,"), "no blanket capability rule");
        assert!(!has("umount,"));
        assert_eq!(r.iter().filter(|l| l.starts_with("signal")).count(), 3);
        assert!(
            r.iter()
                .filter(|l| l.starts_with("ptrace"))
                .all(|l| l.ends_with("peer=stockade-default,")
                    || l.ends_with("peer=stockade-default-loopback,")),
            "ptrace only within the profile"
        );
    }
}

/// How the fake parser answers a call.
type Answer = fn(&[&str], &str) -> io::Result<Result<(), String>>;

/// A fake parser: answers from a closure and records every call.
struct FakeParser {
    answer: Answer,
    calls: RefCell<Vec<(Vec<String>, String)>>,
}

impl FakeParser {
    fn new(answer: Answer) -> FakeParser {
        FakeParser {
            answer,
            calls: RefCell::new(Vec::new()),
        }
    }
    fn accepting() -> FakeParser {
        FakeParser::new(|_, _| Ok(Ok(())))
    }
    fn args(&self) -> Vec<Vec<String>> {
        self.calls.borrow().iter().map(|(a, _)| a.clone()).collect()
    }
}

impl Parser for FakeParser {
    fn run(&self, args: &[&str], stdin: &str) -> io::Result<Result<(), String>> {
        self.calls.borrow_mut().push((
            args.iter().map(std::string::ToString::to_string).collect(),
            stdin.to_string(),
        ));
        (self.answer)(args, stdin)
    }
    fn describe(&self) -> String {
        "fake-parser".into()
    }
}

#[test]
fn check_passes_the_text_and_reports_one_line() {
    let ok = FakeParser::accepting();
    check(&ok, "profile x {}\n").expect("accepted");
    assert_eq!(ok.args(), [["-Q", "-K"]]);
    assert_eq!(ok.calls.borrow()[0].1, "profile x {}\n");

    let no = FakeParser::new(|_, _| {
        Ok(Err("Cache read/write disabled: interface file missing. (Kernel needs AppArmor 2.4 compatibility patch.)\nAppArmor parser error at line 2: syntax error\n".into()))
    });
    let err = check(&no, "profile x {\n bogus,\n}\n")
        .expect_err("rejected")
        .to_string();
    assert_eq!(
        err,
        "apparmor_parser rejected profile x: AppArmor parser error at line 2: syntax error"
    );

    let gone = FakeParser::new(|_, _| Err(io::Error::new(io::ErrorKind::NotFound, "not found")));
    let err = check(&gone, "").expect_err("no parser").to_string();
    assert!(err.starts_with("fake-parser: cannot run"), "{err}");
}

struct LoadFixture {
    dir: tempfile::TempDir,
    ctx: LoadContext,
}

fn load_fixture(apparmor: bool) -> LoadFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = LoadContext {
        kernel_has_apparmor: apparmor,
        profiles_file: dir.path().join("profiles"),
        state_dir: dir.path().join("state"),
    };
    LoadFixture { dir, ctx }
}

impl LoadFixture {
    /// What the kernel lists after a successful load.
    fn kernel_lists(&self, names: &[&str]) {
        let text: String = names.iter().map(|n| format!("{n} (enforce)\n")).collect();
        std::fs::write(&self.ctx.profiles_file, text).expect("write profiles");
    }
}

#[test]
fn ensure_loaded_refuses_without_kernel_apparmor() {
    let f = load_fixture(false);
    let p = FakeParser::accepting();
    let err = ensure_loaded(
        &p,
        &f.ctx,
        "stockade-default",
        "profile stockade-default {}\n",
    )
    .expect_err("no apparmor");
    assert!(
        err.to_string().starts_with("the kernel has no AppArmor"),
        "{err}"
    );
    assert!(p.args().is_empty(), "the parser must not run");
}

#[test]
fn ensure_loaded_runs_the_parser_only_when_needed() {
    let f = load_fixture(true);
    let p = FakeParser::accepting();
    let name = "stockade-default";
    let v1 = render(&Params::default_for(NetworkMode::None));

    // First run: not listed by the kernel, loads and records the hash.
    assert_eq!(
        ensure_loaded(&p, &f.ctx, name, &v1).expect("load"),
        Loaded::Loaded
    );
    assert_eq!(p.args(), [["-r"]]);
    assert_eq!(p.calls.borrow()[0].1, v1);
    let hash_file = f.ctx.state_dir.join("stockade-default.sha256");
    assert_eq!(
        std::fs::read_to_string(&hash_file).expect("hash").trim(),
        content_hash(&v1)
    );

    // The kernel lists it, same text: nothing runs.
    f.kernel_lists(&["docker-default", name]);
    assert_eq!(
        ensure_loaded(&p, &f.ctx, name, &v1).expect("cached"),
        Loaded::AlreadyLoaded
    );
    assert_eq!(p.args().len(), 1);

    // Different text under the same name: replaced.
    let v2 = format!("{v1}# changed\n");
    assert_eq!(
        ensure_loaded(&p, &f.ctx, name, &v2).expect("reload"),
        Loaded::Loaded
    );
    assert_eq!(p.args().len(), 2);

    // A name the kernel does not list (e.g. after a reboot) loads again even if the hash
    // file matches.
    f.kernel_lists(&["stockade-default-loopback"]);
    assert_eq!(
        ensure_loaded(&p, &f.ctx, name, &v2).expect("after reboot"),
        Loaded::Loaded
    );
    assert_eq!(p.args().len(), 3);

    // A listed name with a prefix of ours is not ours.
    f.kernel_lists(&["stockade-default-loopback", "stockade-defaultx"]);
    assert_eq!(
        ensure_loaded(&p, &f.ctx, name, &v2).expect("prefix"),
        Loaded::Loaded
    );
    drop(f.dir);
}

#[test]
fn ensure_loaded_keeps_no_hash_when_the_parser_refuses() {
    let f = load_fixture(true);
    let p = FakeParser::new(|_, _| Ok(Err("AppArmor parser error: bad\n".into())));
    let err = ensure_loaded(&p, &f.ctx, "x", "profile x {\n").expect_err("rejected");
    assert_eq!(
        err.to_string(),
        "apparmor_parser rejected profile x: AppArmor parser error: bad"
    );
    assert!(!f.ctx.state_dir.join("x.sha256").exists());
}

#[test]
fn content_hash_is_sha256() {
    assert_eq!(
        content_hash(""),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn ensure_default_loaded_names_the_profile_per_network_mode() {
    let f = load_fixture(true);
    let p = FakeParser::accepting();
    let (name, loaded) = ensure_default_loaded(&p, &f.ctx, NetworkMode::Loopback).expect("load");
    assert_eq!(
        (name.as_str(), loaded),
        ("stockade-default-loopback", Loaded::Loaded)
    );
    assert!(p.calls.borrow()[0]
        .1
        .contains("profile stockade-default-loopback flags="));
    f.kernel_lists(&["stockade-default-loopback"]);
    let (_, again) = ensure_default_loaded(&p, &f.ctx, NetworkMode::Loopback).expect("again");
    assert_eq!(again, Loaded::AlreadyLoaded);
    // The other mode is a different profile: loading it leaves this one alone.
    let (other, _) = ensure_default_loaded(&p, &f.ctx, NetworkMode::None).expect("none");
    assert_eq!(other, "stockade-default");
    assert_eq!(p.args().len(), 2);
}
