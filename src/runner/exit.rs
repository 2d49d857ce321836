//! Exit codes, as `docker run` has them (README, Command line): the command's own code; 124 when the
//! timeout killed it; 128+N when signal N ended it (137 for SIGKILL, OOM included); 125 when
//! stockade itself failed; 126 when the command cannot be executed; 127 when it is not found.
//! Pure: the mapping from what containerd reported to the code the user sees.

/// The command ran past its timeout and was killed.
pub const EXIT_TIMEOUT: u8 = 124;
/// stockade itself failed (bad input, containerd unreachable, image missing, …).
pub const EXIT_STOCKADE_FAILED: u8 = 125;
/// The command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: u8 = 126;
/// The command was not found.
pub const EXIT_NOT_FOUND: u8 = 127;
/// SIGKILL as an exit code (128 + 9): what an OOM kill looks like.
pub const EXIT_KILLED: u8 = 137;

/// Why runc could not exec the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    /// No such file, or not in `$PATH`: exit 127.
    NotFound,
    /// Found, but not executable (mode, noexec mount, a directory): exit 126.
    NotExecutable,
}

impl ExecFailure {
    /// The exit code stockade reports for it: 127 or 126.
    pub fn exit_code(self) -> u8 {
        match self {
            ExecFailure::NotFound => EXIT_NOT_FOUND,
            ExecFailure::NotExecutable => EXIT_NOT_EXECUTABLE,
        }
    }
}

/// Recognises runc's "cannot exec the command" errors in the text containerd returns from
/// Tasks.Create or Tasks.Start. runc phrases them `exec: "CMD": <reason>` (1.1:
/// `unable to start container process: exec: "x": executable file not found in $PATH`;
/// older: `starting container process caused: exec: "x": …`). Other failures (mounts,
/// cgroups, seccomp) never carry the `exec: "` prefix, so they are not mistaken for a
/// missing command even when they say "no such file or directory".
pub fn classify_exec_error(message: &str) -> Option<ExecFailure> {
    let at = message.find("exec: \"")?;
    let rest = &message[at..];
    if rest.contains("executable file not found") || rest.contains("no such file or directory") {
        Some(ExecFailure::NotFound)
    } else if rest.contains("permission denied")
        || rest.contains("is a directory")
        || rest.contains("exec format error")
    {
        Some(ExecFailure::NotExecutable)
    } else {
        None
    }
}

/// What happened to a process that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The exit status containerd reported (signals folded in as 128+N by the shim).
    pub status: u32,
    /// stockade killed it because it ran past its timeout.
    pub timed_out: bool,
    /// The kernel's OOM killer killed a process in its cgroup.
    pub oom_killed: bool,
    /// stockade killed it because stockade itself received this signal.
    pub cancelled_by: Option<i32>,
}

/// The exit code the user sees for `o`. Precedence: a cancellation (128+N of the signal
/// stockade received) over a timeout (124) over an OOM kill (137) over the status.
pub fn exit_code(o: &Outcome) -> u8 {
    if let Some(sig) = o.cancelled_by {
        return 128u8.saturating_add(sig.clamp(0, 127) as u8);
    }
    if o.timed_out {
        return EXIT_TIMEOUT;
    }
    if o.oom_killed {
        return EXIT_KILLED;
    }
    // Exit statuses are 0–255; anything else (containerd's 255 for "unknown") is kept modulo
    // 256 the way a shell would see it.
    (o.status & 0xff) as u8
}

/// The signal that ended the process, when its status says it was one (128+N, N in 1..=64).
/// A program can also `exit(137)` by itself; containerd does not tell the two apart, and
/// neither can this.
pub fn signal_of(status: u32) -> Option<i32> {
    if (129..=128 + 64).contains(&status) {
        Some(status as i32 - 128)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_exec_errors_map_to_126_and_127() {
        struct Case {
            name: &'static str,
            message: &'static str,
            want: Option<ExecFailure>,
        }
        let cases = [
            Case {
                name: "not in PATH (runc 1.1)",
                message: "failed to create shim task: OCI runtime create failed: runc create \
                          failed: unable to start container process: exec: \"nope\": \
                          executable file not found in $PATH: unknown",
                want: Some(ExecFailure::NotFound),
            },
            Case {
                name: "absolute path missing",
                message: "OCI runtime create failed: unable to start container process: exec: \
                          \"/bin/nope\": stat /bin/nope: no such file or directory: unknown",
                want: Some(ExecFailure::NotFound),
            },
            Case {
                name: "older runc phrasing",
                message: "OCI runtime start failed: starting container process caused: exec: \
                          \"x\": executable file not found in $PATH",
                want: Some(ExecFailure::NotFound),
            },
            Case {
                name: "not executable",
                message: "OCI runtime create failed: unable to start container process: exec: \
                          \"/etc/passwd\": permission denied: unknown",
                want: Some(ExecFailure::NotExecutable),
            },
            Case {
                name: "a directory",
                message: "unable to start container process: exec: \"/tmp\": is a directory",
                want: Some(ExecFailure::NotExecutable),
            },
            Case {
                name: "mount failure mentioning a missing file is not a missing command",
                message: "OCI runtime create failed: runc create failed: unable to start \
                          container process: error during container init: error mounting \
                          \"/gone\" to rootfs at \"/workspace\": stat /gone: no such file or \
                          directory: unknown",
                want: None,
            },
            Case {
                name: "cgroup permission error is stockade's failure",
                message: "runc create failed: unable to apply cgroup configuration: mkdir \
                          /sys/fs/cgroup/x: permission denied",
                want: None,
            },
            Case {
                name: "empty",
                message: "",
                want: None,
            },
        ];
        for c in cases {
            assert_eq!(classify_exec_error(c.message), c.want, "{}", c.name);
        }
        assert_eq!(ExecFailure::NotFound.exit_code(), 127);
        assert_eq!(ExecFailure::NotExecutable.exit_code(), 126);
    }

    #[test]
    fn outcomes_map_to_docker_exit_codes() {
        struct Case {
            name: &'static str,
            outcome: Outcome,
            want: u8,
        }
        let o = Outcome::default;
        let cases = [
            Case {
                name: "success",
                outcome: o(),
                want: 0,
            },
            Case {
                name: "own code",
                outcome: Outcome { status: 42, ..o() },
                want: 42,
            },
            Case {
                name: "signal folded by the shim",
                outcome: Outcome { status: 143, ..o() },
                want: 143,
            },
            Case {
                name: "timeout wins over the SIGKILL status",
                outcome: Outcome {
                    status: 137,
                    timed_out: true,
                    ..o()
                },
                want: 124,
            },
            Case {
                name: "OOM kill",
                outcome: Outcome {
                    status: 137,
                    oom_killed: true,
                    ..o()
                },
                want: 137,
            },
            Case {
                name: "OOM in a child, parent exits 1: still reported as OOM",
                outcome: Outcome {
                    status: 1,
                    oom_killed: true,
                    ..o()
                },
                want: 137,
            },
            Case {
                name: "Ctrl-C to stockade",
                outcome: Outcome {
                    status: 137,
                    cancelled_by: Some(2),
                    ..o()
                },
                want: 130,
            },
            Case {
                name: "SIGTERM to stockade, even past the timeout",
                outcome: Outcome {
                    status: 137,
                    timed_out: true,
                    cancelled_by: Some(15),
                    ..o()
                },
                want: 143,
            },
            Case {
                name: "out-of-range status wraps like a shell",
                outcome: Outcome { status: 256, ..o() },
                want: 0,
            },
        ];
        for c in cases {
            assert_eq!(exit_code(&c.outcome), c.want, "{}", c.name);
        }
    }

    #[test]
    fn signals_are_read_from_128_plus_n() {
        for (status, want) in [
            (0, None),
            (1, None),
            (128, None),
            (129, Some(1)),
            (137, Some(9)),
            (143, Some(15)),
            (192, Some(64)),
            (193, None),
            (255, None),
        ] {
            assert_eq!(signal_of(status), want, "status {status}");
        }
    }
}
