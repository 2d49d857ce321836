//! The one reader of `/proc`: `/proc/<pid>/stat` lines for the liveness and parentage checks
//! of the daemon, the runner's crash reclaim and the pool, and the benchmark's CPU
//! accounting; `/proc/<pid>/cmdline` and the list of processes for the daemon's checks and
//! its shim scan; the resident size in `/proc/<pid>/status` for the pool's memory cap. The
//! proc root is a parameter ([`DEFAULT_PROC_ROOT`] on a normal host).

use std::path::Path;

/// The fields of a `/proc/<pid>/stat` line stockade uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (field 3): `R`, `S`, `D`, `Z`, …
    pub state: char,
    /// Parent pid (field 4).
    pub ppid: Option<u32>,
    /// Start time in clock ticks after boot (field 22): tells a process from a later one
    /// that reuses its pid.
    pub start_time: Option<u64>,
    /// Process group (field 5).
    pub pgrp: Option<i32>,
    /// CPU time in clock ticks (`USER_HZ`, 100 a second): user and system time of the
    /// process and of the children it waited for (fields 14 to 17 added up).
    pub cpu_ticks: Option<u64>,
}

impl ProcStat {
    /// Parses one stat line. The command name is in parentheses and may hold any character
    /// (spaces and `)` included), so the fields are read after the last `)`.
    pub fn parse(line: &str) -> Option<ProcStat> {
        let f: Vec<&str> = line[line.rfind(')')? + 1..].split_whitespace().collect();
        // `f[0]` is field 3.
        let field = |n: usize| f.get(n - 3).copied();
        let state = field(3)?.chars().next()?;
        let ticks: Option<Vec<u64>> = (14..=17)
            .map(|n| field(n).and_then(|s| s.parse().ok()))
            .collect();
        Some(ProcStat {
            state,
            ppid: field(4).and_then(|p| p.parse().ok()),
            start_time: field(22).and_then(|s| s.parse().ok()),
            pgrp: field(5).and_then(|p| p.parse().ok()),
            cpu_ticks: ticks.map(|t| t.iter().sum()),
        })
    }

    /// Reads and parses `<proc_root>/<pid>/stat`.
    pub fn read(proc_root: &Path, pid: u32) -> Option<ProcStat> {
        let line = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
        ProcStat::parse(&line)
    }

    /// Whether the process has exited (a zombie `Z`, or dead `X`/`x`), though its parent
    /// may not have reaped it yet.
    pub fn has_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Where the kernel's process filesystem is mounted on a normal host.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// `<proc_root>/<pid>/cmdline` split at its NULs: the process's argv, lossily decoded;
/// empty when the process is gone (or is a kernel thread).
pub fn cmdline(proc_root: &Path, pid: u32) -> Vec<String> {
    std::fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map(|b| split_cmdline(&b))
        .unwrap_or_default()
}

/// A cmdline's bytes split at NULs, empty arguments dropped.
fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Every process id listed in `proc_root` now (its numeric entries); empty when it cannot
/// be read.
pub fn pids(proc_root: &Path) -> Vec<u32> {
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Resident memory of process `pid` in bytes: the `VmRSS` line of
/// `<proc_root>/<pid>/status`. `None` when the process is gone or has no such line (a
/// kernel thread, a zombie).
pub fn rss_bytes(proc_root: &Path, pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    parse_rss(&status)
}

/// The `VmRSS` of a `/proc/<pid>/status` text (in kB there), in bytes.
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_after_the_last_parenthesis() {
        // (line, state, ppid, start time)
        let mut full = vec!["42".to_string(), "(sh x) Z)".into(), "S".into(), "7".into()];
        full.extend((5..=21).map(|i| i.to_string()));
        full.push("777".into());
        full.extend((23..=52).map(|i| i.to_string()));
        let full = full.join(" ");
        type Fields = Option<(char, Option<u32>, Option<u64>)>;
        let table: &[(&str, Fields)] = &[
            (&full, Some(('S', Some(7), Some(777)))),
            ("42 (a) b Z) S 7 42 42 0 -1", Some(('S', Some(7), None))),
            ("12 (a) Z (b)) R 1 12 12 0 -1", Some(('R', Some(1), None))),
            ("11 (stockade) Z", Some(('Z', None, None))),
            ("garbage", None),
            ("1 (x)", None),
        ];
        for &(line, want) in table {
            let got = ProcStat::parse(line).map(|s| (s.state, s.ppid, s.start_time));
            assert_eq!(got, want, "{line}");
        }
        // Each field holds its own number: group 5, CPU 14 + 15 + 16 + 17.
        let s = ProcStat::parse(&full).unwrap();
        assert_eq!((s.pgrp, s.cpu_ticks), (Some(5), Some(62)));
        let short = ProcStat::parse("42 (a) S 7 42 42 0 -1 0 0 0 0 0 3 4 5").unwrap();
        assert_eq!(
            (short.pgrp, short.cpu_ticks),
            (Some(42), None),
            "cstime missing"
        );
    }

    #[test]
    fn zombies_and_dead_processes_have_exited() {
        for (state, exited) in [
            ('R', false),
            ('S', false),
            ('D', false),
            ('Z', true),
            ('X', true),
            ('x', true),
        ] {
            let s = ProcStat {
                state,
                ppid: None,
                start_time: None,
                pgrp: None,
                cpu_ticks: None,
            };
            assert_eq!(s.has_exited(), exited, "{state}");
        }
    }

    #[test]
    fn cmdline_splits_at_nuls() {
        let table: &[(&[u8], &[&str])] = &[
            (
                b"/usr/bin/containerd\0--config\0/x y/config.toml\0",
                &["/usr/bin/containerd", "--config", "/x y/config.toml"],
            ),
            (b"sh\0\0-c\0", &["sh", "-c"]),
            (b"no-trailing-nul", &["no-trailing-nul"]),
            (b"", &[]),
            (b"bad\xff\0", &["bad\u{fffd}"]),
        ];
        for &(bytes, want) in table {
            assert_eq!(split_cmdline(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn pids_are_the_numeric_entries() {
        let t = tempfile::tempdir().unwrap();
        for name in ["1", "42", "self", "sys", "7x"] {
            std::fs::create_dir(t.path().join(name)).unwrap();
        }
        let mut got = pids(t.path());
        got.sort_unstable();
        assert_eq!(got, [1, 42]);
        assert!(pids(&t.path().join("missing")).is_empty());
    }

    #[test]
    fn reads_this_process() {
        let root = Path::new(DEFAULT_PROC_ROOT);
        assert!(pids(root).contains(&std::process::id()));
        assert!(!cmdline(root, std::process::id()).is_empty());
        let s = ProcStat::read(root, std::process::id()).expect("own stat");
        assert!(!s.has_exited());
        assert!(s.ppid.is_some() && s.start_time.is_some(), "{s:?}");
        assert_eq!(ProcStat::read(Path::new("/nonexistent"), 1), None);
    }

    #[test]
    fn the_resident_size_is_the_vmrss_line_in_bytes() {
        let table: &[(&str, Option<u64>)] = &[
            (
                "Name:\tsh\nVmPeak:\t  9000 kB\nVmRSS:\t  1532 kB\n",
                Some(1532 * 1024),
            ),
            ("VmRSS:\t0 kB", Some(0)),
            ("Name:\tkthreadd\nState:\tS (sleeping)\n", None),
            ("VmRSS:\tmany kB", None),
            ("VmRSS:", None),
        ];
        for &(text, want) in table {
            assert_eq!(parse_rss(text), want, "{text:?}");
        }
        assert!(rss_bytes(Path::new("/proc"), std::process::id()).is_some_and(|b| b > 0));
        assert_eq!(rss_bytes(Path::new("/nonexistent"), 1), None);
    }
}
