//! The one reader of `/proc/<pid>/stat` lines, for the liveness and parentage checks of
//! the daemon, the runner's crash reclaim and the pool, and the benchmark's CPU accounting. `/proc` is a parameter where the
//! caller has one.

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
    fn reads_this_process() {
        let s = ProcStat::read(Path::new("/proc"), std::process::id()).expect("own stat");
        assert!(!s.has_exited());
        assert!(s.ppid.is_some() && s.start_time.is_some(), "{s:?}");
        assert_eq!(ProcStat::read(Path::new("/nonexistent"), 1), None);
    }
}
