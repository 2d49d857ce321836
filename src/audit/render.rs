//! Output: a table for people (colour optional), JSON for programs, SARIF 2.1.0 for code
//! scanning tools. All three take the same [`Target`]s and write to a `String`.

use std::fmt::Write;

use serde_json::{json, Value};

use super::catalog::{Severity, RULES};
use super::locate::locate;
use super::Report;

/// One audited spec and where it came from.
#[derive(Debug, Clone)]
pub struct Target {
    /// As shown to people: a path, `-` for stdin, `containerd://NS/ID`.
    pub source: String,
    /// The spec's JSON text, when a finding's line can be computed from it.
    pub text: Option<String>,
    /// The findings for the spec.
    pub report: Report,
}

impl Target {
    /// Line and column of `pointer` in this target's text.
    pub fn line_of(&self, pointer: &str) -> Option<(usize, usize)> {
        self.text.as_deref().and_then(|t| locate(t, pointer))
    }
}

fn colour(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "\x1b[1;31m",
        Severity::High => "\x1b[31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
        Severity::Info => "\x1b[2m",
    }
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";

/// A one-line summary like `3 findings (1 critical, 2 medium)`.
pub fn summary(report: &Report) -> String {
    let n = report.findings.len();
    if n == 0 {
        return "no findings".to_string();
    }
    let parts: Vec<String> = report
        .counts()
        .iter()
        .filter(|(_, c)| *c > 0)
        .map(|(s, c)| format!("{c} {s}"))
        .collect();
    format!(
        "{n} finding{} ({})",
        if n == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

/// The table: per target a summary line, then one row per finding with its location
/// beneath. `colour` adds ANSI colours (for a terminal).
pub fn text(targets: &[Target], colour_on: bool) -> String {
    let mut s = String::new();
    for (n, t) in targets.iter().enumerate() {
        if n > 0 {
            s.push('\n');
        }
        let _ = writeln!(s, "{}: {}", t.source, summary(&t.report));
        if t.report.findings.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  {:<8}  {:<12}  FINDING", "SEVERITY", "RULE");
        for f in &t.report.findings {
            let sev = format!("{:<8}", f.severity.as_str());
            let sev = if colour_on {
                format!("{}{sev}{RESET}", colour(f.severity))
            } else {
                sev
            };
            let _ = writeln!(s, "  {sev}  {:<12}  {}: {}", f.rule, f.title, f.message);
            let at = match t.line_of(&f.pointer) {
                Some((line, _)) => format!("at {} (line {line})", f.pointer),
                None => format!("at {}", f.pointer),
            };
            if colour_on {
                let _ = writeln!(s, "  {:<8}  {:<12}  {DIM}{at}{RESET}", "", "");
            } else {
                let _ = writeln!(s, "  {:<8}  {:<12}  {at}", "", "");
            }
        }
    }
    s
}

/// JSON: `{"tool": {...}, "targets": [{"source", "summary", "findings": [...]}]}`.
pub fn json(targets: &[Target]) -> Value {
    let targets: Vec<Value> = targets
        .iter()
        .map(|t| {
            let mut summary = serde_json::Map::new();
            for (sev, c) in t.report.counts() {
                summary.insert(sev.as_str().to_string(), json!(c));
            }
            summary.insert("total".into(), json!(t.report.findings.len()));
            let findings: Vec<Value> = t
                .report
                .findings
                .iter()
                .map(|f| {
                    let mut v = serde_json::to_value(f).expect("a finding serializes");
                    if let Some((line, column)) = t.line_of(&f.pointer) {
                        v["line"] = json!(line);
                        v["column"] = json!(column);
                    }
                    v
                })
                .collect();
            json!({ "source": t.source, "summary": summary, "findings": findings })
        })
        .collect();
    json!({
        "tool": { "name": "stockade", "version": env!("CARGO_PKG_VERSION") },
        "targets": targets,
    })
}

fn sarif_level(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// The numeric `security-severity` code-scanning tools sort by (CVSS-like bands).
fn security_severity(sev: Severity) -> &'static str {
    match sev {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

/// A URI reference for a source: `-` becomes `stdin`; reserved and non-ASCII bytes of paths
/// are percent-encoded.
pub fn source_uri(source: &str) -> String {
    if source == "-" {
        return "stdin".to_string();
    }
    if source.starts_with("containerd://") {
        return source.to_string();
    }
    let mut s = String::new();
    for b in source.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// SARIF 2.1.0: one run; the whole catalog as the driver's rules; one result per finding,
/// located by file (line and column where known) and by JSON pointer as a logical location.
pub fn sarif(targets: &[Target]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            let mut tags = vec!["security".to_string()];
            tags.extend(r.cis.iter().map(|c| format!("CIS-Docker-{c}")));
            tags.extend(r.pss.iter().map(|p| format!("PSS {p}")));
            json!({
                "id": r.id,
                "name": r.title,
                "shortDescription": { "text": r.title },
                "fullDescription": { "text": r.rationale },
                "help": {
                    "text": format!("{} Remediation: {}", r.rationale, r.remediation),
                    "markdown": format!("{}\n\n**Remediation:** {}", r.rationale, r.remediation),
                },
                "defaultConfiguration": { "level": sarif_level(r.severity) },
                "properties": {
                    "severity": r.severity.as_str(),
                    "security-severity": security_severity(r.severity),
                    "cis-docker-benchmark": r.cis,
                    "pod-security-standards": r.pss,
                    "tags": tags,
                },
            })
        })
        .collect();
    let artifacts: Vec<Value> = targets
        .iter()
        .map(|t| json!({ "location": { "uri": source_uri(&t.source) } }))
        .collect();
    let mut results = Vec::new();
    for (ai, t) in targets.iter().enumerate() {
        for f in &t.report.findings {
            let index = RULES.iter().position(|r| r.id == f.rule).unwrap_or(0);
            let mut physical = json!({
                "artifactLocation": { "uri": source_uri(&t.source), "index": ai },
            });
            if let Some((line, column)) = t.line_of(&f.pointer) {
                physical["region"] = json!({ "startLine": line, "startColumn": column });
            }
            results.push(json!({
                "ruleId": f.rule,
                "ruleIndex": index,
                "level": sarif_level(f.severity),
                "message": { "text": format!("{}: {}", f.title, f.message) },
                "locations": [{
                    "physicalLocation": physical,
                    "logicalLocations": [{
                        "fullyQualifiedName": f.pointer,
                        "kind": "member",
                    }],
                }],
                "properties": { "severity": f.severity.as_str(), "jsonPointer": f.pointer },
            }));
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "stockade",
                    "semanticVersion": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "artifacts": artifacts,
            "results": results,
            "columnKind": "unicodeCodePoints",
        }]
    })
}
