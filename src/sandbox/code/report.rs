//! What comes back from the sandbox for one cell, judged as hostile input (pure): one JSON
//! document of a fixed shape (unknown fields refused), every text within the sandbox's
//! output cap, the counts and flags consistent; and the [`CodeOutcome`] made of it.

use serde::Deserialize;

use super::{CodeError, CodeOutcome};

/// The longest exception name accepted.
pub const MAX_ERROR_NAME: usize = 256;

/// The name of the error reported when the interpreter was killed after a timeout.
pub const KILLED: &str = "InterpreterKilled";
/// The name of the error reported when the interpreter exited during the cell.
pub const EXITED: &str = "InterpreterExited";

/// The cell client's report: `interpreter.py`'s `cell()` writes exactly this.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    /// It started an interpreter before the cell (none answered).
    started: bool,
    /// The cell outlived its timeout and the grace after SIGINT: the interpreter was
    /// killed and a new one started.
    killed: bool,
    /// The cell outlived its timeout (SIGINT was sent).
    timed_out: bool,
    /// The cell's number in its interpreter, once the interpreter acknowledged it.
    #[serde(deserialize_with = "required")]
    execution_count: Option<u64>,
    /// The interpreter's answer; none when it died or was killed first.
    #[serde(deserialize_with = "required")]
    reply: Option<Reply>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    stdout: String,
    stderr: String,
    #[serde(deserialize_with = "required")]
    result: Option<String>,
    #[serde(deserialize_with = "required")]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireError {
    name: String,
    value: String,
    traceback: String,
}

/// An `Option` field that must be present (null or not): serde's default takes a missing
/// one for null.
fn required<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// What the interpreter's run told about itself, besides the cell's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Starts {
    /// Interpreters this call started (0, 1, or 2 when it started one and replaced it).
    pub started: u64,
}

/// The outcome of the report `text` (the cell client's stdout), given the sandbox's output
/// cap `max_output`, the `grace` after SIGINT it waited, and whether an interpreter was
/// ever started in this sandbox before (`had_one`). Refuses (with the reason) anything
/// not of the report's shape: unknown or missing fields, a text over `max_output` bytes, an
/// exception name that is empty, over [`MAX_ERROR_NAME`] bytes or not one line, a count
/// of 0, an answer without a count, or an answer from an interpreter said to be killed.
pub fn parse(
    text: &str,
    max_output: u64,
    grace: std::time::Duration,
    had_one: bool,
) -> Result<(CodeOutcome, Starts), String> {
    let r: Report = serde_json::from_str(text.trim_end_matches('\n'))
        .map_err(|e| format!("not a report: {e}"))?;
    if r.execution_count == Some(0) {
        return Err("execution_count 0".into());
    }
    let started = u64::from(r.started) + u64::from(r.killed);
    let starts = Starts { started };
    // A fresh interpreter replaced one that had run cells: their globals are gone.
    let replaced = r.started && had_one;
    let Some(reply) = r.reply else {
        let error = if r.killed {
            CodeError {
                name: KILLED.into(),
                value: format!(
                    "the cell did not stop within {} s of its KeyboardInterrupt: its interpreter was killed and a new one started; earlier globals are lost",
                    grace.as_secs_f64()
                ),
                traceback: String::new(),
            }
        } else {
            CodeError {
                name: EXITED.into(),
                value: "the interpreter ended the cell without an answer (it exited, or the cell closed its connection); after an exit the next cell starts a new one, without earlier globals".into(),
                traceback: String::new(),
            }
        };
        return Ok((
            CodeOutcome {
                stdout: String::new(),
                stderr: String::new(),
                result: None,
                error: Some(error),
                execution_count: r.execution_count.unwrap_or(0),
                timed_out: r.timed_out || r.killed,
                restarted: r.killed || replaced,
            },
            starts,
        ));
    };
    if r.killed {
        return Err("an answer from an interpreter it says was killed".into());
    }
    let Some(execution_count) = r.execution_count else {
        return Err("an answer without execution_count".into());
    };
    let within = |field: &str, s: &str| {
        if s.len() as u64 > max_output {
            Err(format!(
                "{field}: {} bytes, above the sandbox's cap of {max_output}",
                s.len()
            ))
        } else {
            Ok(())
        }
    };
    within("stdout", &reply.stdout)?;
    within("stderr", &reply.stderr)?;
    if let Some(v) = &reply.result {
        within("result", v)?;
    }
    if let Some(e) = &reply.error {
        if e.name.is_empty() || e.name.len() > MAX_ERROR_NAME || e.name.contains(['\n', '\r']) {
            return Err(format!(
                "error.name: empty, over {MAX_ERROR_NAME} bytes or not one line"
            ));
        }
        within("error.value", &e.value)?;
        within("error.traceback", &e.traceback)?;
    }
    Ok((
        CodeOutcome {
            stdout: reply.stdout,
            stderr: reply.stderr,
            result: reply.result,
            error: reply.error.map(|e| CodeError {
                name: e.name,
                value: e.value,
                traceback: e.traceback,
            }),
            execution_count,
            timed_out: r.timed_out,
            restarted: replaced,
        },
        starts,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const GRACE: Duration = Duration::from_secs(2);

    fn report(reply: serde_json::Value, extra: serde_json::Value) -> String {
        let mut v = serde_json::json!({
            "started": false, "killed": false, "timed_out": false,
            "execution_count": 3, "reply": reply,
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    }

    fn ok_reply() -> serde_json::Value {
        serde_json::json!({"stdout": "hi\n", "stderr": "", "result": "42", "error": null})
    }

    #[test]
    fn an_answer_becomes_the_outcome() {
        let text = report(ok_reply(), serde_json::json!({})) + "\n";
        let (o, s) = parse(&text, 100, GRACE, true).unwrap();
        assert_eq!(
            (o.stdout.as_str(), o.result.as_deref(), o.execution_count),
            ("hi\n", Some("42"), 3)
        );
        assert!(!o.timed_out && !o.restarted && o.error.is_none());
        assert_eq!(s.started, 0);
    }

    #[test]
    fn an_exception_comes_with_name_value_and_traceback() {
        let reply = serde_json::json!({"stdout": "", "stderr": "", "result": null,
            "error": {"name": "ZeroDivisionError", "value": "division by zero",
                      "traceback": "Traceback (most recent call last):\n..."}});
        let (o, _) = parse(&report(reply, serde_json::json!({})), 100, GRACE, true).unwrap();
        let e = o.error.unwrap();
        assert_eq!(
            (e.name.as_str(), e.value.as_str()),
            ("ZeroDivisionError", "division by zero")
        );
        assert!(e.traceback.starts_with("Traceback"));
    }

    /// Whether a cell says `restarted`: only when a fresh interpreter replaced one that had
    /// run cells (a start before the cell after an earlier one, or a kill after it).
    #[test]
    fn restarted_is_said_only_when_globals_were_lost() {
        let cases = [
            // (started, killed, had_one, reply?, restarted, starts)
            (false, false, true, true, false, 0),
            (true, false, false, true, false, 1),
            (true, false, true, true, true, 1),
            (false, true, true, false, true, 1),
            (true, true, false, false, true, 2),
            (false, false, true, false, false, 0),
        ];
        for (started, killed, had_one, with_reply, restarted, n) in cases {
            let reply = if with_reply {
                ok_reply()
            } else {
                serde_json::Value::Null
            };
            let text = report(
                reply,
                serde_json::json!({"started": started, "killed": killed, "timed_out": killed}),
            );
            let (o, s) = parse(&text, 100, GRACE, had_one).unwrap();
            let case = (started, killed, had_one, with_reply);
            assert_eq!(o.restarted, restarted, "{case:?}");
            assert_eq!(s.started, n, "{case:?}");
            if !with_reply {
                let name = o.error.unwrap().name;
                assert_eq!(name, if killed { KILLED } else { EXITED }, "{case:?}");
                assert_eq!(o.timed_out, killed, "{case:?}");
            }
        }
    }

    /// Every way a hostile sandbox might shape its report is refused, naming what is wrong.
    #[test]
    fn hostile_reports_are_refused() {
        let big = "x".repeat(101);
        let err = |name: &str| {
            serde_json::json!({"stdout": "", "stderr": "", "result": null,
                "error": {"name": name, "value": "", "traceback": ""}})
        };
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("not JSON", "Traceback (most recent call last):".into()),
            (
                "two documents",
                report(ok_reply(), serde_json::json!({})).repeat(2),
            ),
            (
                "unknown field",
                report(ok_reply(), serde_json::json!({"trusted": true})),
            ),
            (
                "unknown reply field",
                report(
                    serde_json::json!({"stdout": "", "stderr": "", "result": null, "error": null, "exit": 0}),
                    serde_json::json!({}),
                ),
            ),
            (
                "missing field",
                r#"{"started":false,"killed":false,"timed_out":false,"reply":null}"#.into(),
            ),
            (
                "missing reply field",
                report(
                    serde_json::json!({"stdout": "", "stderr": "", "error": null}),
                    serde_json::json!({}),
                ),
            ),
            (
                "wrong type",
                report(ok_reply(), serde_json::json!({"execution_count": "3"})),
            ),
            (
                "negative count",
                report(ok_reply(), serde_json::json!({"execution_count": -1})),
            ),
            (
                "count 0",
                report(ok_reply(), serde_json::json!({"execution_count": 0})),
            ),
            (
                "no count",
                report(ok_reply(), serde_json::json!({"execution_count": null})),
            ),
            (
                "killed yet answering",
                report(ok_reply(), serde_json::json!({"killed": true})),
            ),
            (
                "stdout over the cap",
                report(
                    serde_json::json!({"stdout": big, "stderr": "", "result": null, "error": null}),
                    serde_json::json!({}),
                ),
            ),
            (
                "result over the cap",
                report(
                    serde_json::json!({"stdout": "", "stderr": "", "result": big, "error": null}),
                    serde_json::json!({}),
                ),
            ),
            (
                "traceback over the cap",
                report(
                    serde_json::json!({"stdout": "", "stderr": "", "result": null,
                        "error": {"name": "E", "value": "", "traceback": big}}),
                    serde_json::json!({}),
                ),
            ),
            ("empty name", report(err(""), serde_json::json!({}))),
            (
                "two-line name",
                report(err("E\nForged"), serde_json::json!({})),
            ),
            (
                "long name",
                report(err(&"E".repeat(MAX_ERROR_NAME + 1)), serde_json::json!({})),
            ),
        ];
        for (what, text) in cases {
            assert!(
                parse(&text, 100, GRACE, true).is_err(),
                "{what}: accepted {text}"
            );
        }
    }

    #[test]
    fn texts_at_the_cap_are_taken() {
        let at = "é".repeat(50);
        let reply = serde_json::json!({"stdout": at, "stderr": at, "result": at, "error": null});
        let (o, _) = parse(&report(reply, serde_json::json!({})), 100, GRACE, true).unwrap();
        assert_eq!(o.stdout.len(), 100);
    }
}
