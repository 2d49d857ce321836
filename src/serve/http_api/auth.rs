//! Bearer tokens: read from `--token-file` (one `TOKEN [NAME]` a line; `#` comments and
//! blank lines skipped), which must not be readable or writable by its group or by
//! others. A request's token is compared with every known one in constant time (SHA-256
//! of both, compared with `subtle`), so neither the position of the first differing byte
//! nor the token's length shows in the answer's timing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The shortest token accepted: 16 bytes, so that no token is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the token file was refused. Each renders as one line naming the file.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("--token-file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its group or others may read or write it.
    #[error("--token-file {}: mode {mode:04o} lets its group or others read or write it; chmod 600 it", path.display())]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is malformed.
    #[error("--token-file {}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// It holds no token.
    #[error("--token-file {}: holds no token; with no token nobody could use the server", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The known tokens, each kept only as its SHA-256, with its name.
#[derive(Clone)]
pub struct Tokens {
    known: Vec<([u8; 32], String)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.known.iter().map(|(_, n)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Reads the token file at `path`, refusing one its group or others can read or write.
    pub fn read(path: &Path) -> Result<Tokens, AuthError> {
        let err = |source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(err)?;
        Tokens::parse(&text, path)
    }

    /// Parses the file's text (`path` names it in errors). Pure.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, AuthError> {
        let mut known: Vec<([u8; 32], String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| AuthError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let mut words = line.split_whitespace();
            let token = words.next().unwrap_or_default();
            let name = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(bad("expected `TOKEN [NAME]`".into()));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token is shorter than {MIN_TOKEN_LEN} characters"
                )));
            }
            let name = name.unwrap_or_else(|| format!("line-{}", i + 1));
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(bad(format!(
                    "name `{name}`: only letters, digits, `-`, `_` and `.`"
                )));
            }
            let digest = digest(token);
            if known.iter().any(|(d, n)| *d == digest || *n == name) {
                return Err(bad(format!("token or name `{name}` given twice")));
            }
            known.push((digest, name));
        }
        if known.is_empty() {
            return Err(AuthError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { known })
    }

    /// The name of the token `presented`, if it is a known one. Every known token is
    /// compared, in constant time each, whichever matches.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let d = digest(presented);
        let mut found: Option<&str> = None;
        for (known, name) in &self.known {
            if bool::from(known.ct_eq(&d)) {
                found = Some(name);
            }
        }
        found
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Never: a token file holds at least one token.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("# comment\n\n{A} alice\n{B}\n"), Path::new("t")).unwrap()
    }

    #[test]
    fn a_known_token_is_named_and_anything_else_is_not() {
        let t = tokens();
        assert_eq!(t.check(A), Some("alice"));
        assert_eq!(t.check(B), Some("line-4"));
        for wrong in [
            "",
            "a",
            &A[..A.len() - 1],
            &format!("{A}a"),
            "AAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(t.check(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn tokens_are_compared_by_digest_in_constant_time() {
        // The comparison is of fixed-size digests through `subtle`: a prefix of a token
        // (which an early-exit comparison of the tokens themselves would reward) matches
        // no more than an unrelated string does, and is never accepted.
        let t = tokens();
        assert_eq!(digest(A).len(), digest("x").len());
        assert_eq!(t.check(&A[..10]), None);
        assert!(bool::from(digest(A).ct_eq(&digest(A))));
        assert!(!bool::from(digest(A).ct_eq(&digest(B))));
        // The tokens themselves are not kept.
        assert!(!format!("{t:?}").contains(A));
    }

    #[test]
    fn malformed_token_files_are_refused_naming_the_line() {
        for (text, want) in [
            ("short\n", "t:1: the token is shorter than 16"),
            (&*format!("{A} x y\n"), "t:1: expected `TOKEN [NAME]`"),
            (&*format!("{A} bad/name\n"), "t:1: name `bad/name`"),
            (&*format!("{A} x\n{A} y\n"), "t:2: token or name"),
            (&*format!("{A} x\n{B} x\n"), "t:2: token or name `x`"),
            ("# only a comment\n", "t: holds no token"),
        ] {
            let e = Tokens::parse(text, Path::new("t")).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, format!("{A}\n")).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Tokens::read(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Tokens::read(&p).unwrap().len(), 1);
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
