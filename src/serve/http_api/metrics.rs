//! The server's metrics in Prometheus' text format (version 0.0.4): requests by status,
//! one-shot runs by outcome, sandbox starts by kind (`sandbox`, `run_cold`, `run_pooled`),
//! execs, code interpreter cells by result, failures by operation, latency histograms of
//! creates, runs, execs and cells, and the sandboxes alive.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and histograms, keyed by metric name and label set.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

/// `(name, help, type)` of every metric rendered, in order.
const FAMILIES: [(&str, &str, &str); 8] = [
    (
        "stockade_http_requests_total",
        "HTTP requests answered, by status code.",
        "counter",
    ),
    (
        "stockade_runs_total",
        "One-shot runs finished, by result (ok: stockade ran the command, whatever its exit code).",
        "counter",
    ),
    (
        "stockade_sandbox_starts_total",
        "Sandboxes started, by kind (sandbox, run_cold, run_pooled).",
        "counter",
    ),
    (
        "stockade_execs_total",
        "Execs finished in sandboxes.",
        "counter",
    ),
    (
        "stockade_code_runs_total",
        "Cells run by the code interpreter, by result (ok, error: it raised, timeout: interrupted, restarted: its interpreter was replaced, failed: no answer).",
        "counter",
    ),
    (
        "stockade_failures_total",
        "Operations that failed in stockade or containerd (not refused requests), by operation.",
        "counter",
    ),
    (
        "stockade_latency_seconds",
        "Time to answer, by operation (create, run, exec, code).",
        "histogram",
    ),
    (
        "stockade_sandboxes_alive",
        "Sandboxes this server holds.",
        "gauge",
    ),
];

impl Metrics {
    /// Adds one to counter `name` with `labels` (`key="value"` pairs, comma-separated).
    pub fn inc(&self, name: &'static str, labels: &str) {
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry((name, labels.to_string()))
            .or_default() += 1;
    }

    /// Records `d` in histogram `name` with `labels`.
    pub fn observe(&self, name: &'static str, labels: &str, d: Duration) {
        let secs = d.as_secs_f64();
        let mut all = self.histograms.lock().expect("metrics lock");
        let h = all.entry((name, labels.to_string())).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The text exposition, with the gauge of sandboxes alive set to `alive`.
    pub fn render(&self, alive: usize) -> String {
        let counters = self.counters.lock().expect("metrics lock").clone();
        let histograms = self.histograms.lock().expect("metrics lock").clone();
        let mut out = String::new();
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        for (name, help, kind) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match kind {
                "counter" => {
                    for ((n, l), v) in &counters {
                        if *n == name {
                            let _ = writeln!(out, "{name}{} {v}", braces(l));
                        }
                    }
                }
                "histogram" => {
                    for ((n, l), h) in &histograms {
                        if *n != name {
                            continue;
                        }
                        let sep = if l.is_empty() { "" } else { "," };
                        for (i, b) in BUCKETS.iter().enumerate() {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{{{l}{sep}le=\"{b}\"}} {}",
                                h.counts[i]
                            );
                        }
                        let _ = writeln!(out, "{name}_bucket{{{l}{sep}le=\"+Inf\"}} {}", h.count);
                        let _ = writeln!(out, "{name}_sum{} {}", braces(l), h.sum);
                        let _ = writeln!(out, "{name}_count{} {}", braces(l), h.count);
                    }
                }
                _ => {
                    let _ = writeln!(out, "{name} {alive}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_help_type_and_cumulative_buckets() {
        let m = Metrics::default();
        m.inc("stockade_sandbox_starts_total", "kind=\"sandbox\"");
        m.inc("stockade_sandbox_starts_total", "kind=\"sandbox\"");
        m.observe(
            "stockade_latency_seconds",
            "op=\"create\"",
            Duration::from_millis(300),
        );
        let text = m.render(3);
        assert!(text.contains("# TYPE stockade_sandbox_starts_total counter\n"));
        assert!(text.contains("stockade_sandbox_starts_total{kind=\"sandbox\"} 2\n"));
        assert!(text.contains("stockade_latency_seconds_bucket{op=\"create\",le=\"0.25\"} 0\n"));
        assert!(text.contains("stockade_latency_seconds_bucket{op=\"create\",le=\"0.5\"} 1\n"));
        assert!(text.contains("stockade_latency_seconds_bucket{op=\"create\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("stockade_latency_seconds_count{op=\"create\"} 1\n"));
        assert!(text.contains("stockade_sandboxes_alive 3\n"));
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.split(' ').count() == 2,
                "{line}"
            );
        }
    }
}
