//! The benchmark's report for people: a table, and an SVG CDF of one workload.

use super::*;

/// The report as a table for humans.
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "host: kernel {}, {} CPUs, containerd {}, {}, cgroup {}",
        r.host.kernel, r.host.cpus, r.host.containerd, r.host.runc, r.host.cgroup
    );
    if let Some(b) = &r.config.runc_binary {
        let _ = writeln!(
            s,
            "stockade's contenders run under {b}; ctr-run and runc-run under runc"
        );
    }
    let _ = writeln!(
        s,
        "{:<8} {:>4} {:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "workload", "conc", "contender", "n", "min", "p50", "p95", "p99", "runs/s", "cpu", "fail"
    );
    for c in &r.cells {
        let (n, min, p50, p95, p99) = c
            .summary
            .map(|s| (s.n, s.min_ms, s.p50_ms, s.p95_ms, s.p99_ms))
            .unwrap_or((0, f64::NAN, f64::NAN, f64::NAN, f64::NAN));
        let _ = writeln!(
            s,
            "{:<8} {:>4} {:<20} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6}",
            c.workload,
            c.concurrency,
            c.contender.name(),
            n,
            min,
            p50,
            p95,
            p99,
            c.runs_per_sec,
            c.cpu_per_run.map_or(f64::NAN, |x| x.total_ms()),
            c.failures
        );
    }
    for lib in r.cells.iter().filter(|c| {
        matches!(
            c.contender,
            Contender::StockadeLib | Contender::StockadeWarm
        ) && c.concurrency == 1
            && !c.phases.is_empty()
    }) {
        let _ = writeln!(
            s,
            "\n{} phases ({}, concurrency 1), ms:",
            lib.contender.name(),
            lib.workload
        );
        for (k, v) in &lib.phases {
            let _ = writeln!(
                s,
                "  {:<22} p50 {:>7.1}  p95 {:>7.1}  p99 {:>7.1}",
                k, v.p50_ms, v.p95_ms, v.p99_ms
            );
        }
    }
    let _ = writeln!(
        s,
        "\ncpu: CPU ms per run (user + system) of the processes each contender used; by where counted, concurrency 1:"
    );
    for c in r.cells.iter().filter(|c| c.concurrency == 1) {
        if let Some(x) = c.cpu_per_run {
            let _ = writeln!(
                s,
                "  {:<8} {:<20} {:>7.1} = in-process {:>6.1} + children {:>7.1} + daemons {:>6.1}",
                c.workload,
                c.contender.name(),
                x.total_ms(),
                x.self_ms,
                x.children_ms,
                x.daemons_ms
            );
        }
    }
    let _ = writeln!(s, "\nratios of p50, and of CPU per run (same run):");
    for x in &r.ratios {
        let _ = writeln!(
            s,
            "  {:<8} conc {:>2}: {} / {} = {:.2}{}",
            x.workload,
            x.concurrency,
            x.numerator.name(),
            x.denominator.name(),
            x.p50_ratio,
            x.cpu_ratio
                .map(|c| format!(" (cpu {c:.2})"))
                .unwrap_or_default()
        );
    }
    for c in r.cells.iter().filter(|c| c.failures > 0) {
        let _ = writeln!(
            s,
            "failures: {} {} conc {}: {} (first: {})",
            c.workload,
            c.contender.name(),
            c.concurrency,
            c.failures,
            c.first_error.as_deref().unwrap_or("")
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// The CDF plot of every contender at concurrency 1, one plot per workload, stacked.
pub fn render_svg(r: &Report, workload: &str) -> String {
    let levels: Vec<usize> = r.config.concurrency.clone();
    let series: Vec<svg::Series> = r
        .cells
        .iter()
        .filter(|c| c.workload == workload)
        .map(|c| svg::Series {
            name: format!("{} ×{}", c.contender.name(), c.concurrency),
            // One colour per contender, one dash per concurrency level.
            colour: Contender::ALL
                .iter()
                .position(|x| *x == c.contender)
                .unwrap_or(0),
            dash: levels.iter().position(|l| *l == c.concurrency).unwrap_or(0),
            values: c.samples_ms.clone(),
        })
        .collect();
    svg::cdf(
        &format!(
            "start latency, `{workload}` (solid ×1, dashed ×8, dotted ×32) — kernel {}",
            r.host.kernel
        ),
        &series,
    )
}
