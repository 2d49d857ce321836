//! Finds where a JSON pointer lands in the text of a JSON document, for SARIF regions and
//! for editors. A small scanner over the bytes: the document has already been parsed, so it
//! is valid JSON and the scanner only has to skip values, never to judge them.

/// Line and column (both from 1; the column counts characters) of the value `pointer`
/// names in `text`, or of its deepest existing ancestor when the pointer names something
/// absent (a finding about a missing field points at the object that should hold it).
/// `None` only when `text` does not start with a JSON value.
pub fn locate(text: &str, pointer: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut pos = skip_ws(b, 0);
    if pos >= b.len() {
        return None;
    }
    let tokens = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"));
    for token in tokens {
        match find_child(b, pos, &token) {
            Some(child) => pos = child,
            None => break,
        }
    }
    Some(line_col(text, pos))
}

/// Byte offset of the member `token` of the object or array starting at `pos`.
fn find_child(b: &[u8], pos: usize, token: &str) -> Option<usize> {
    match b.get(pos)? {
        b'{' => {
            let mut i = skip_ws(b, pos + 1);
            loop {
                if b.get(i)? != &b'"' {
                    return None; // `}`: not found
                }
                let end = skip_string(b, i)?;
                let raw = &b[i + 1..end - 1];
                // Most keys have no escapes: compare the bytes; decode only the others.
                let matches = if raw.contains(&b'\\') {
                    serde_json::from_slice::<String>(&b[i..end]).ok()? == token
                } else {
                    raw == token.as_bytes()
                };
                i = skip_ws(b, end);
                if b.get(i)? != &b':' {
                    return None;
                }
                let value = skip_ws(b, i + 1);
                if matches {
                    return Some(value);
                }
                i = skip_ws(b, skip_value(b, value)?);
                if b.get(i)? != &b',' {
                    return None;
                }
                i = skip_ws(b, i + 1);
            }
        }
        b'[' => {
            let index: usize = token.parse().ok()?;
            let mut i = skip_ws(b, pos + 1);
            if b.get(i)? == &b']' {
                return None;
            }
            for _ in 0..index {
                i = skip_ws(b, skip_value(b, i)?);
                if b.get(i)? != &b',' {
                    return None;
                }
                i = skip_ws(b, i + 1);
            }
            Some(i)
        }
        _ => None,
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Offset just past the string starting at `i` (which is `"`).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Offset just past the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, col)
}
