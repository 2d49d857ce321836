use oci_spec::runtime::{Process, ProcessBuilder, UserBuilder};

use super::*;

fn base() -> Process {
    ProcessBuilder::default()
        .args(vec!["/.stockade/init".to_string()])
        .env(vec!["PATH=/usr/bin:/bin".to_string()])
        .cwd("/")
        .user(
            UserBuilder::default()
                .uid(1000u32)
                .gid(1000u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn spec(argv: &[&str], user: Option<&str>) -> Process {
    let argv: Vec<String> = argv.iter().map(ToString::to_string).collect();
    super::super::exec::process_spec(&base(), &argv, &["A=1".into()], Some("/tmp"), user, None)
        .unwrap()
}

#[test]
fn route_takes_the_fast_path_only_without_a_terminal_as_the_sandboxs_user() {
    let b = base();
    // (what, terminal, user, STOCKADE_EXEC_PATH, the way)
    type Case<'a> = (&'a str, bool, Option<&'a str>, Option<&'a str>, Route);
    let cases: [Case; 7] = [
        ("plain", false, None, None, Route::Fast),
        ("auto", false, None, Some("auto"), Route::Fast),
        ("empty value", false, None, Some(""), Route::Fast),
        (
            "forced runtime",
            false,
            None,
            Some("runtime"),
            Route::Runtime,
        ),
        ("terminal", true, None, None, Route::Runtime),
        ("other user", false, Some("1001"), None, Route::Runtime),
        // Naming the sandbox's own user still drops its additional groups: the runtime.
        (
            "own user named",
            false,
            Some("1000:1000"),
            None,
            Route::Fast,
        ),
    ];
    for (name, tty, user, forced, want) in cases {
        let p = spec(&["true"], user);
        assert_eq!(route(tty, &p, &b, forced).unwrap(), want, "{name}");
    }
}

#[test]
fn route_refuses_an_unknown_path_naming_the_variable() {
    let b = base();
    let e = route(false, &spec(&["true"], None), &b, Some("fast")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "STOCKADE_EXEC_PATH: `fast`: expected `auto` or `runtime`"
    );
}

#[test]
fn encode_writes_counted_nul_terminated_fields() {
    let got = encode(&spec(&["sh", "-c", "echo hi"], None)).unwrap();
    let want = b"stockade-exec/1\x003\0sh\0-c\0echo hi\x002\0PATH=/usr/bin:/bin\0A=1\0/tmp\0";
    assert_eq!(got, want.to_vec());
}

#[test]
fn encode_refuses_a_nul_in_a_field_and_an_oversized_request() {
    assert_eq!(encode(&spec(&["a\0b"], None)), None);
    let big = "x".repeat(MAX_REQUEST);
    assert_eq!(encode(&spec(&["echo", &big], None)), None);
}

#[test]
fn answers_parse_and_garbage_does_not() {
    let cases: [(&[u8], Option<Answer>); 8] = [
        (b"S\x07\0\0\0", Some(Answer::Started(7))),
        (b"X\0\x03\0\0", Some(Answer::Exited(0x300))),
        (
            b"E\x7fno such file",
            Some(Answer::Failed(127, "no such file".into())),
        ),
        (b"Rtoo many", Some(Answer::Refused("too many".into()))),
        (b"S\x07\0\0", None),
        (b"X", None),
        (b"", None),
        (b"Q1234", None),
    ];
    for (msg, want) in cases {
        assert_eq!(answer(msg), want, "{msg:?}");
    }
}

#[test]
fn wait_statuses_map_as_containerd_reports_them() {
    let cases = [
        (0, 0),
        (3 << 8, 3),
        (127 << 8, 127),
        (9, 137),
        (15, 143),
        (0x80 | 11, 139),
    ];
    for (ws, want) in cases {
        assert_eq!(status_of(ws), want, "{ws:#x}");
    }
}
