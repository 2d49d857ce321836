//! Words of an instruction's arguments, as Docker reads them (pure): splitting on unquoted
//! white space, quote removal, the escape character, and variable substitution (`$V`,
//! `${V}`, `${V:-word}`, `${V-word}`, `${V:+word}`, `${V+word}`, `${V:?message}`,
//! `${V?message}`). Single quotes keep everything literal; double quotes keep white space
//! but substitute.

/// The value of a variable, `None` when it is not set.
pub trait Vars {
    /// `name`'s value.
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Splits `s` on white space outside quotes and not escaped; quotes and escapes stay in the
/// words (for [`expand`] to remove). An unterminated quote is an error.
pub fn split(s: &str, escape: char) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                word.push(c);
                if c == q {
                    quote = None;
                } else if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
            }
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                in_word = true;
                word.push(c);
                if c == '\'' || c == '"' {
                    quote = Some(c);
                } else if c == escape {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// `word` with quotes removed, escapes applied and variables substituted from `vars`.
/// `names` collects the variable names it referred to.
pub fn expand(
    word: &str,
    vars: &dyn Vars,
    escape: char,
    names: &mut Vec<String>,
) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => {
                quote = None;
                i += 1;
            }
            (Some('\''), _) => {
                out.push(c);
                i += 1;
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                i += 1;
            }
            (_, e) if e == escape => {
                match chars.get(i + 1) {
                    // Inside double quotes only a quote, `$` or the escape itself is escaped.
                    Some(&n) if quote.is_none() || n == '"' || n == '$' || n == escape => {
                        out.push(n);
                    }
                    Some(&n) => {
                        out.push(e);
                        out.push(n);
                    }
                    None => out.push(e),
                }
                i += 2;
            }
            (_, '$') => {
                let (value, next) = variable(&chars, i, vars, escape, names)?;
                out.push_str(&value);
                i = next;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The substitution starting at `chars[start] == '$'`: its value and the index after it.
fn variable(
    chars: &[char],
    start: usize,
    vars: &dyn Vars,
    escape: char,
    names: &mut Vec<String>,
) -> Result<(String, usize), String> {
    let mut i = start + 1;
    match chars.get(i) {
        Some(&c) if is_name_start(c) => {
            let from = i;
            while chars.get(i).is_some_and(|c| is_name(*c)) {
                i += 1;
            }
            let name: String = chars[from..i].iter().collect();
            let value = vars.get(&name).unwrap_or_default();
            names.push(name);
            Ok((value, i))
        }
        Some('{') => {
            i += 1;
            let from = i;
            while chars.get(i).is_some_and(|c| is_name(*c)) {
                i += 1;
            }
            let name: String = chars[from..i].iter().collect();
            if name.is_empty() || !name.starts_with(is_name_start) {
                return Err("bad substitution: `${` must be followed by a variable name".into());
            }
            // The modifier, then the word up to the matching brace.
            let mut op = String::new();
            if chars.get(i) == Some(&':') {
                op.push(':');
                i += 1;
            }
            match chars.get(i) {
                Some('}') if op.is_empty() => {
                    let value = vars.get(&name).unwrap_or_default();
                    names.push(name);
                    return Ok((value, i + 1));
                }
                Some(&m @ ('-' | '+' | '?')) => {
                    op.push(m);
                    i += 1;
                }
                _ => {
                    return Err(format!(
                        "bad substitution in `${{{name}`: only ${{V}}, ${{V:-word}}, ${{V:+word}} and ${{V:?message}} (each also without the colon) are supported"
                    ))
                }
            }
            let word_from = i;
            let mut depth = 1;
            while i < chars.len() {
                match chars[i] {
                    c if c == escape => i += 1,
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if depth != 0 {
                return Err(format!("missing `}}` after `${{{name}`"));
            }
            let raw: String = chars[word_from..i].iter().collect();
            let word = expand(&raw, vars, escape, names)?;
            let value = vars.get(&name);
            names.push(name.clone());
            let set = match op.as_str() {
                ":-" | ":+" | ":?" => value.as_deref().is_some_and(|v| !v.is_empty()),
                _ => value.is_some(),
            };
            let out = match (op.trim_start_matches(':'), set) {
                ("-" | "?", true) => value.unwrap_or_default(),
                ("-", false) => word,
                ("+", true) => word,
                ("+", false) => String::new(),
                _ => {
                    let why = if word.is_empty() {
                        "is not set".to_string()
                    } else {
                        word
                    };
                    return Err(format!("{name}: {why}"));
                }
            };
            Ok((out, i + 1))
        }
        // A `$` before anything else is itself.
        _ => Ok(("$".to_string(), start + 1)),
    }
}

/// The JSON (exec) form of an argument list: `["a", "b"]`; `None` when `s` is not one
/// (Docker then reads the arguments in shell form).
pub fn json_array(s: &str) -> Option<Vec<String>> {
    let t = s.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}
