//! `sha256:<hex>` digests (content, spec, policy and binary identities): the one place they
//! are made from bytes or a hasher, checked for form, and shortened for display.

use sha2::{Digest, Sha256};

/// The algorithm prefix of every digest stockade makes.
pub const SHA256_PREFIX: &str = "sha256:";

/// `sha256:<64 lowercase hex digits>` of `bytes`.
pub fn sha256(bytes: impl AsRef<[u8]>) -> String {
    finish(Sha256::new_with_prefix(bytes))
}

/// `sha256:<64 lowercase hex digits>` of what `hasher` was fed.
pub fn finish(hasher: Sha256) -> String {
    format!("{SHA256_PREFIX}{:x}", hasher.finalize())
}

/// The 64 lowercase hex digits of the SHA-256 of `bytes`, without the prefix (file names,
/// cache keys).
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// True for a well-formed `sha256:<64 lowercase hex digits>`.
pub fn is_sha256(d: &str) -> bool {
    d.strip_prefix(SHA256_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The hex digits of `d` without its `sha256:` prefix (all of `d` when it has none).
pub fn hex_part(d: &str) -> &str {
    d.strip_prefix(SHA256_PREFIX).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_prefixed_lowercase_hex_of_sha256() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256(b""), empty);
        let mut h = Sha256::new();
        h.update(b"");
        assert_eq!(finish(h), empty);
        assert_eq!(sha256_hex(b""), hex_part(empty));
        assert!(is_sha256(empty));
        assert_eq!(hex_part("abc"), "abc");
    }

    #[test]
    fn only_the_canonical_form_is_a_digest() {
        let refused = [
            String::from("sha256:abc"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "g".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            "a".repeat(64),
        ];
        for d in &refused {
            assert!(!is_sha256(d), "{d}");
        }
    }
}
