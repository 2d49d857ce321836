//! From a Dockerfile's text to its logical lines (pure): parser directives read from the
//! top, comment lines dropped, lines ending in the escape character joined with the next.

use super::DockerfileError;

/// The directives a Dockerfile may open with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# escape=` (`\` by default, or `` ` ``).
    pub escape: char,
    /// `# syntax=`, when given (only Docker's own `docker/dockerfile` frontend is accepted).
    pub syntax: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
        }
    }
}

/// One logical line: an instruction with its continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// The 1-based line number where it starts.
    pub line: usize,
    /// Its text, continuations joined (the escape character and newline removed).
    pub text: String,
}

/// The directives and logical lines of `text`; `file` names the Dockerfile in errors.
pub fn logical_lines(
    file: &str,
    text: &str,
) -> Result<(Directives, Vec<LogicalLine>), DockerfileError> {
    let mut directives = Directives::default();
    let physical: Vec<&str> = text.lines().collect();
    let mut i = 0;
    // Directives: `# key=value` lines at the very top, before any blank line, comment or
    // instruction.
    while i < physical.len() {
        let Some((key, value)) = directive(physical[i]) else {
            break;
        };
        let line = i + 1;
        match key.as_str() {
            "escape" => {
                directives.escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    v => {
                        return Err(DockerfileError::at(
                            file,
                            line,
                            format!("escape directive `{v}`: must be \\ or `"),
                        ))
                    }
                }
            }
            "syntax" => {
                let frontend = value.split([':', '@']).next().unwrap_or_default();
                if !matches!(
                    frontend,
                    "docker/dockerfile" | "docker.io/docker/dockerfile"
                ) {
                    return Err(DockerfileError::at(
                        file,
                        line,
                        format!("syntax directive `{value}`: only Docker's own docker/dockerfile syntax is understood"),
                    ));
                }
                directives.syntax = Some(value);
            }
            // Docker ignores a directive it does not know; it is then a comment.
            _ => break,
        }
        i += 1;
    }

    let escape = directives.escape;
    let mut out = Vec::new();
    let mut current: Option<LogicalLine> = None;
    for (n, raw) in physical.iter().enumerate().skip(i) {
        let line = n + 1;
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            // A comment, also between continuation lines.
            continue;
        }
        if current.is_none() && trimmed.trim_end().is_empty() {
            continue;
        }
        let body = raw.trim_end();
        // As Docker: any line ending in the escape character continues.
        let (piece, continues) = match body.strip_suffix(escape) {
            Some(rest) => (rest, true),
            None => (body, false),
        };
        let cur = current.get_or_insert_with(|| LogicalLine {
            line,
            text: String::new(),
        });
        cur.text.push_str(piece);
        if !continues {
            if let Some(done) = current.take() {
                if !done.text.trim().is_empty() {
                    out.push(done);
                }
            }
        }
    }
    if let Some(done) = current.take() {
        if !done.text.trim().is_empty() {
            out.push(done);
        }
    }
    Ok((directives, out))
}

/// `# key=value` with a lower-case word key, as a parser directive.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?.trim_start();
    let (key, value) = rest.split_once('=')?;
    let key = key.trim().to_ascii_lowercase();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((key, value.trim().to_string()))
}
