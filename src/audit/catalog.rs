//! The rule catalog: every rule `stockade audit` knows, as data. Ids are stable: a rule may
//! be reworded or re-graded, never renumbered, and a retired id is never reused.
//! `docs/audit-rules.md` is generated from this table (`stockade audit --list-rules
//! --format markdown`), and a test keeps the two equal.
//!
//! The rules themselves are in `catalog/rules.rs`; this file holds their shape, the lookup
//! and the Markdown rendering.
//!
//! References name items of the CIS Docker Benchmark v1.2.0 (section 5, "Container
//! Runtime", and 4.1 for the container user), and controls of the Kubernetes Pod Security Standards (PSS) at the level that
//! forbids what the rule reports.

mod rules;

use serde::Serialize;

pub use rules::RULES;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a weakness by itself.
    Info,
    /// Hardening a stricter standard asks for.
    Low,
    /// A protection missing that usually matters.
    Medium,
    /// Gives a process in the container a real path to the host or to other containers.
    High,
    /// Equivalent to, or one step from, root on the host.
    Critical,
}

impl Severity {
    /// All severities, most severe first.
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];

    /// The lowercase name used on the command line and in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown severity `{s}` (expected critical, high, medium, low or info)")
            })
    }
}

/// One rule of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable id, `STK-<AREA>-<NNN>`.
    pub id: &'static str,
    /// How much the finding matters.
    pub severity: Severity,
    /// One line, what is wrong.
    pub title: &'static str,
    /// Why it matters.
    pub rationale: &'static str,
    /// What to change in the spec (or the policy that produced it).
    pub remediation: &'static str,
    /// CIS Docker Benchmark v1.2.0 items (section 5; 4.1 for the container user).
    pub cis: &'static [&'static str],
    /// Kubernetes Pod Security Standards controls, as `level: control`.
    pub pss: &'static [&'static str],
}

/// The rule with this id.
///
/// # Panics
/// When `id` is not in the catalog: checks only name ids from [`RULES`], and a test runs
/// every check.
pub fn rule(id: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("audit rule {id} is not in the catalog"))
}

/// The catalog as Markdown: what `docs/audit-rules.md` holds.
pub fn markdown() -> String {
    use std::fmt::Write;
    let mut s = String::new();
    s.push_str("# `stockade audit` rules\n\n");
    s.push_str(
        "Generated from `src/audit/catalog.rs` by `stockade audit --list-rules --format \
         markdown`; a test keeps this file current. Ids are stable.\n\n",
    );
    s.push_str(
        "CIS: CIS Docker Benchmark v1.2.0 (section 5, Container Runtime; 4.1 for the container \
         user). PSS: Kubernetes Pod Security Standards (`level: control`).\n\n",
    );
    s.push_str("| id | severity | title | CIS | PSS |\n|---|---|---|---|---|\n");
    for r in RULES {
        let _ = writeln!(
            s,
            "| [{id}](#{anchor}) | {sev} | {title} | {cis} | {pss} |",
            id = r.id,
            anchor = r.id.to_lowercase(),
            sev = r.severity,
            title = r.title,
            cis = join_or_dash(r.cis),
            pss = join_or_dash(r.pss),
        );
    }
    for r in RULES {
        let _ = write!(
            s,
            "\n## {id}\n\n**{title}** — severity **{sev}**\n\n{rationale}\n\n\
             *Remediation:* {remediation}\n\n*CIS:* {cis} · *PSS:* {pss}\n",
            id = r.id,
            title = r.title,
            sev = r.severity,
            rationale = r.rationale,
            remediation = r.remediation,
            cis = join_or_dash(r.cis),
            pss = join_or_dash(r.pss),
        );
    }
    s
}

fn join_or_dash(items: &[&str]) -> String {
    if items.is_empty() {
        "—".to_string()
    } else {
        items.join(", ")
    }
}
