use proptest::prelude::*;

use super::words::{expand, split};
use super::*;

fn parse_ok(text: &str) -> Dockerfile {
    parse("Dockerfile", text).unwrap()
}

fn parse_err(text: &str) -> String {
    parse("Dockerfile", text).unwrap_err().to_string()
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

fn ex(word: &str, env: &[(&str, &str)]) -> Result<String, String> {
    expand(word, &vars(env), '\\', &mut Vec::new())
}

#[test]
fn every_supported_instruction_parses() {
    let d = parse_ok(
        "# syntax=docker/dockerfile:1\n\
         ARG BASE=stockade/busybox\n\
         FROM ${BASE}\n\
         # a comment\n\
         ARG GREETING=hi\n\
         ENV A=1 B=\"two words\"\n\
         ENV LEGACY value with spaces\n\
         LABEL org.example.k=v other=\"x y\"\n\
         WORKDIR /app\n\
         COPY --chown=1000:1000 a.txt b/ /app/\n\
         ADD files.tar /opt/\n\
         RUN echo $GREETING \\\n    && touch /x\n\
         RUN [\"/bin/sh\", \"-c\", \"true\"]\n\
         USER 1000:1000\n\
         EXPOSE 8080 53/udp\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         STOPSIGNAL SIGTERM\n\
         ENTRYPOINT [\"/bin/echo\"]\n\
         CMD hello\n",
    );
    assert_eq!(d.from, "${BASE}");
    assert_eq!(d.from_line, 3);
    assert_eq!(
        d.global_args,
        vec![("BASE".to_string(), Some("stockade/busybox".to_string()))]
    );
    let kinds: Vec<(usize, &Instruction)> =
        d.steps.iter().map(|s| (s.line, &s.instruction)).collect();
    assert_eq!(kinds[0].0, 5);
    assert!(matches!(kinds[1].1, Instruction::Env(e) if e.len() == 2));
    assert_eq!(
        kinds[2].1,
        &Instruction::Env(vec![("LEGACY".into(), "value with spaces".into())])
    );
    assert_eq!(
        kinds[5].1,
        &Instruction::Copy(CopySpec {
            sources: vec!["a.txt".into(), "b/".into()],
            dest: "/app/".into(),
            chown: Some("1000:1000".into()),
        })
    );
    assert_eq!(kinds[7].0, 12);
    assert_eq!(
        kinds[7].1,
        &Instruction::Run(Command::Shell("echo $GREETING     && touch /x".into()))
    );
    assert_eq!(
        kinds[8].1,
        &Instruction::Run(Command::Exec(vec![
            "/bin/sh".into(),
            "-c".into(),
            "true".into()
        ]))
    );
    assert_eq!(
        kinds.last().unwrap().1,
        &Instruction::Cmd(Command::Shell("hello".into()))
    );
    assert_eq!(d.steps.len(), 15);
}

#[test]
fn refusals_name_the_file_and_line() {
    let cases = [
        (
            "FROM a\nVOLUME /data\n",
            "Dockerfile:2: VOLUME is not supported",
        ),
        (
            "FROM a\n\nHEALTHCHECK CMD true\n",
            "Dockerfile:3: HEALTHCHECK",
        ),
        ("FROM a\nONBUILD RUN x\n", "Dockerfile:2: ONBUILD"),
        ("FROM a\nFROM b\n", "Dockerfile:2: a second FROM"),
        ("FROM a AS build\n", "Dockerfile:1: FROM … AS name"),
        ("FROM a\nCOPY --from=b /x /y\n", "Dockerfile:2: COPY --from"),
        (
            "FROM a\nRUN <<EOF\necho\nEOF\n",
            "Dockerfile:2: RUN with a heredoc",
        ),
        (
            "FROM a\nRUN --mount=type=cache,target=/c true\n",
            "Dockerfile:2: RUN --mount",
        ),
        (
            "FROM a\nFROBNICATE\n",
            "Dockerfile:2: unknown instruction FROBNICATE",
        ),
        (
            "FROM a\nRUN --frob true\n",
            "Dockerfile:2: RUN --frob: flag not supported",
        ),
        ("RUN true\n", "Dockerfile:1: RUN before FROM"),
        ("# escape=x\nFROM a\n", "Dockerfile:1: escape directive"),
        (
            "# syntax=example.com/frontend\nFROM a\n",
            "Dockerfile:1: syntax directive",
        ),
        ("", "Dockerfile:1: no FROM"),
        (
            "FROM a\nSHELL /bin/bash\n",
            "Dockerfile:2: SHELL takes a JSON array",
        ),
        (
            "FROM a\nENV A=\"unterminated\n",
            "Dockerfile:2: unterminated \" quote",
        ),
        ("FROM a\nARG 1X\n", "Dockerfile:2: ARG `1X`"),
    ];
    for (text, want) in cases {
        let got = parse_err(text);
        assert!(got.starts_with(want), "{text:?}: {got}");
        assert!(!got.contains('\n'), "{got}");
    }
}

#[test]
fn escape_directive_switches_continuation_and_comments_sit_between_lines() {
    let d = parse_ok("# escape=`\nFROM a\nRUN echo C:\\dir `\n# note\n  more\n");
    assert_eq!(d.directives.escape, '`');
    assert_eq!(
        d.steps[0].instruction,
        Instruction::Run(Command::Shell("echo C:\\dir   more".into()))
    );
    // A directive after the first instruction is a comment.
    let d = parse_ok("FROM a\n# escape=`\nRUN x \\\n y\n");
    assert_eq!(d.directives.escape, '\\');
    assert_eq!(d.steps[0].text, "RUN x  y");
}

#[test]
fn substitution_follows_docker() {
    let env = [("V", "val"), ("EMPTY", "")];
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("$V", Ok("val")),
        ("${V}", Ok("val")),
        ("pre${V}post", Ok("prevalpost")),
        ("${UNSET:-dflt}", Ok("dflt")),
        ("${EMPTY:-dflt}", Ok("dflt")),
        ("${EMPTY-dflt}", Ok("")),
        ("${V:+alt}", Ok("alt")),
        ("${UNSET:+alt}", Ok("")),
        ("${EMPTY+alt}", Ok("alt")),
        ("${UNSET:-${V}}", Ok("val")),
        ("'$V'", Ok("$V")),
        ("\"$V x\"", Ok("val x")),
        ("\\$V", Ok("$V")),
        ("$1", Ok("$1")),
        ("a\\ b", Ok("a b")),
        ("${UNSET:?must be set}", Err("UNSET: must be set")),
        ("${V", Err("bad substitution")),
        ("${V%%x}", Err("bad substitution")),
        ("'open", Err("unterminated")),
    ];
    for (word, want) in cases {
        let got = ex(word, &env);
        match want {
            Ok(w) => assert_eq!(got.as_deref(), Ok(*w), "{word}"),
            Err(w) => assert!(
                got.as_ref().is_err_and(|e| e.contains(w)),
                "{word}: {got:?}"
            ),
        }
    }
}

#[test]
fn a_lone_double_dash_ends_the_flags() {
    let d = parse_ok("FROM a\nRUN -- --version\n");
    assert_eq!(
        d.steps[0].instruction,
        Instruction::Run(Command::Shell("--version".into()))
    );
}

#[test]
fn split_keeps_quoted_white_space_in_one_word() {
    assert_eq!(
        split("a \"b c\" 'd e' f\\ g", '\\').unwrap(),
        vec!["a", "\"b c\"", "'d e'", "f\\ g"]
    );
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = parse("Dockerfile", &text);
    }

    #[test]
    fn instructions_split_over_lines_parse_the_same(
        words in proptest::collection::vec("[a-z0-9/._][a-z0-9/._-]{0,7}", 1..6),
        cut in 0usize..6,
    ) {
        let one = format!("FROM a\nRUN {}\n", words.join(" "));
        let at = cut.min(words.len());
        let split = format!(
            "FROM a\nRUN {} \\\n# comment\n {}\n",
            words[..at].join(" "),
            words[at..].join(" ")
        );
        let cmd = |d: Dockerfile| match &d.steps[0].instruction {
            Instruction::Run(Command::Shell(s)) => s.split_whitespace().map(String::from).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(cmd(parse_ok(&one)), cmd(parse_ok(&split)));
    }

    #[test]
    fn exec_form_round_trips(argv in proptest::collection::vec("\\PC{0,12}", 1..5)) {
        let json = serde_json::to_string(&argv).unwrap();
        let d = parse_ok(&format!("FROM a\nCMD {json}\n"));
        prop_assert_eq!(&d.steps[0].instruction, &Instruction::Cmd(Command::Exec(argv)));
    }

    #[test]
    fn plain_words_expand_to_themselves(w in "[A-Za-z0-9/._:-]{0,20}") {
        prop_assert_eq!(ex(&w, &[]).unwrap(), w);
    }

    #[test]
    fn a_set_variable_substitutes_in_every_form(v in "[a-z0-9]{1,10}") {
        let env = [("X", v.as_str())];
        prop_assert_eq!(ex("$X", &env).unwrap(), v.clone());
        prop_assert_eq!(ex("${X}", &env).unwrap(), v.clone());
        prop_assert_eq!(ex("${X:-other}", &env).unwrap(), v.clone());
        prop_assert_eq!(ex("${X:+other}", &env).unwrap(), "other");
        prop_assert_eq!(ex("'${X}'", &env).unwrap(), "${X}");
    }
}
