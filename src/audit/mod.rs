//! `stockade audit`: what a container is allowed to do, judged against a catalog of rules
//! with stable ids (see [`RULES`] and `docs/audit-rules.md`).
//!
//! Pure: [`audit`] takes an [`oci_spec::runtime::Spec`], [`audit_json`] the JSON text of any
//! runtime's spec, and both return a [`Report`]. Missing fields count as absent (no
//! `linux.seccomp` means no seccomp), never as a runtime's defaults. Rendering
//! ([`render`]), spec-to-spec comparison ([`diff`]) and the live containerd source
//! ([`live`]) sit beside it.

mod catalog;
mod checks;
pub mod diff;
pub mod k8s;
pub mod live;
pub mod locate;
mod model;
pub mod render;
mod syscalls;

use serde::Serialize;
use thiserror::Error;

pub use catalog::{markdown as rules_markdown, rule, Rule, Severity, RULES};

/// One thing the spec allows that a rule reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule's id, e.g. `STK-CAP-001`.
    pub rule: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's title.
    pub title: &'static str,
    /// What the finding is about (a capability, namespace type, mount destination, sysctl,
    /// …), stable across specs; empty when it concerns the spec as a whole.
    pub subject: String,
    /// What exactly, in this spec.
    pub message: String,
    /// RFC 6901 JSON pointer to the field at fault (or to where a missing field belongs).
    pub pointer: String,
}

/// The findings for one spec, most severe first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
}

impl Report {
    fn new(mut findings: Vec<Finding>) -> Report {
        findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.rule.cmp(b.rule))
                .then_with(|| pointer_order(&a.pointer, &b.pointer))
        });
        Report { findings }
    }

    /// How many findings have each severity, most severe first (as [`Severity::ALL`]).
    pub fn counts(&self) -> [(Severity, usize); 5] {
        Severity::ALL.map(|s| (s, self.findings.iter().filter(|f| f.severity == s).count()))
    }

    /// The most severe finding's severity.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Findings at `threshold` or above.
    pub fn at_or_above(&self, threshold: Severity) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(move |f| f.severity >= threshold)
    }

    /// Whether some finding has this rule id.
    pub fn has(&self, rule: &str) -> bool {
        self.findings.iter().any(|f| f.rule == rule)
    }
}

/// Compares JSON pointers token by token, array indexes as numbers (`/2` before `/11`).
fn pointer_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |p: &str| -> Vec<(u64, String)> {
        p.split('/')
            .map(|t| match t.parse::<u64>() {
                Ok(n) => (n, String::new()),
                Err(_) => (u64::MAX, t.to_string()),
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

/// Why a spec could not be audited.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The text is not JSON; the parser's message.
    #[error("not valid JSON: {0}")]
    Json(String),
    /// The JSON is not an OCI runtime spec; the deserializer's message.
    #[error("not an OCI runtime spec: {0}")]
    NotASpec(String),
}

/// A spec read for auditing: the lenient view the checks use.
#[derive(Debug, Clone)]
pub struct ParsedSpec {
    view: model::SpecView,
}

/// Reads the JSON text of a runtime spec. Fields this audit does not read are ignored;
/// those it reads must have the types the runtime spec gives them.
pub fn parse(text: &str) -> Result<ParsedSpec, AuditError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.is_empty() {
        return Err(AuditError::NotASpec("the input is empty".into()));
    }
    // Check the top level first: serde would read a JSON array positionally into a struct.
    let top: serde_json::Value =
        serde_json::from_str(trimmed).map_err(|e| AuditError::Json(e.to_string()))?;
    let Some(obj) = top.as_object() else {
        return Err(AuditError::NotASpec(
            "the top level is not a JSON object".into(),
        ));
    };
    if !obj
        .get("ociVersion")
        .is_some_and(serde_json::Value::is_string)
    {
        return Err(AuditError::NotASpec(
            "no `ociVersion` string at the top level".into(),
        ));
    }
    // From the text again (not the Value) so that type errors carry line and column.
    let view: model::SpecView =
        serde_json::from_str(trimmed).map_err(|e| AuditError::NotASpec(e.to_string()))?;
    Ok(ParsedSpec { view })
}

impl ParsedSpec {
    /// Reads an oci-spec [`Spec`](oci_spec::runtime::Spec) through its JSON form.
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> ParsedSpec {
        let value = serde_json::to_value(spec).expect("an oci-spec Spec always serializes");
        // The view's field types are supersets of oci-spec's (u64 for u32, strings for
        // enums), so a serialized Spec always reads.
        let view = serde_json::from_value(value).expect("a serialized Spec fits the audit view");
        ParsedSpec { view }
    }

    /// Runs every rule.
    pub fn audit(&self) -> Report {
        Report::new(checks::run(&self.view))
    }
}

/// Audits a typed spec (what `stockade spec` builds).
pub fn audit(spec: &oci_spec::runtime::Spec) -> Report {
    ParsedSpec::from_spec(spec).audit()
}

/// Audits the JSON text of any runtime's spec.
pub fn audit_json(text: &str) -> Result<Report, AuditError> {
    Ok(parse(text)?.audit())
}

#[cfg(test)]
mod tests;
