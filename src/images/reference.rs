//! Image references with Docker's normalisation (pure: strings in, strings out).
//!
//! `busybox` is `docker.io/library/busybox:latest`, `user/repo` is
//! `docker.io/user/repo:latest`, `registry:5000/repo:tag` keeps its registry, and
//! `repo@sha256:<64 hex>` names a manifest by digest. The first path component is a
//! registry when it has a `.` or a `:`, is `localhost`, or has an upper-case letter (as
//! Docker decides); `index.docker.io` is `docker.io`. Repository components are lower-case
//! letters and digits joined by `.`, `_`, `__` or runs of `-`; a tag is at most 128 of
//! `[A-Za-z0-9_.-]` not starting with `.` or `-`; a name is at most 255 bytes.
//!
//! The [`Reference::canonical`] form (`docker.io/library/busybox:latest`) is what
//! containerd's image records are called; the [`Reference::familiar`] form
//! (`busybox:latest`) is what people type and what the Docker API shows. Both parse back to
//! the same reference.
//!
//! The repository `docker.io/stockade/` ([`BUILTIN_PREFIX`], familiar `stockade/…`) is
//! reserved for the images stockade builds from its own recipes: no import, pull or tag
//! may write a name there ([`Reference::is_builtin`]), so a user's image never replaces a
//! built-in one.

use thiserror::Error;

/// Docker Hub's registry name in canonical references.
pub const DOCKER_HUB: &str = "docker.io";
/// The repository prefix of single-component Docker Hub names.
pub const OFFICIAL_PREFIX: &str = "library/";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// Canonical names under this prefix are the built-in recipe images.
pub const BUILTIN_PREFIX: &str = "docker.io/stockade/";
/// A name (registry and repository) is at most this many bytes.
pub const NAME_MAX: usize = 255;
/// A tag is at most this many bytes.
pub const TAG_MAX: usize = 128;

/// A reference that is not valid; the message names the reference and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("image reference `{reference}`: {reason}")]
pub struct ReferenceError {
    /// The reference as given, escaped for printing.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses `input` with Docker's rules (see the module docs). A reference with neither
    /// tag nor digest gets the tag `latest`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason: &str| ReferenceError {
            reference: input.escape_debug().to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                if !crate::digest::is_sha256(d) {
                    return Err(bad("the digest must be sha256:<64 lower-case hex digits>"));
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        // A tag follows the last `:` after the last `/` (a `:` before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                if !is_tag(tag) {
                    return Err(bad(&format!(
                        "tag `{}` is not valid (at most {TAG_MAX} of A-Z a-z 0-9 _ . -, not starting with . or -)",
                        tag.escape_debug()
                    )));
                }
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("has no repository name"));
        }
        if name.len() > NAME_MAX {
            return Err(bad(&format!("name is longer than {NAME_MAX} bytes")));
        }
        let (registry, path) = split_registry(name);
        if let Some(r) = registry {
            if !is_registry(r) {
                return Err(bad(&format!(
                    "registry `{}` is not a host name with an optional :port",
                    r.escape_debug()
                )));
            }
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lower-case"));
        }
        if let Some(c) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(bad(&format!(
                "repository component `{}` is not valid (lower-case letters and digits, joined by . _ __ or -)",
                c.escape_debug()
            )));
        }
        let registry = match registry {
            None | Some("index.docker.io") => DOCKER_HUB.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad(&format!(
                "normalised name is longer than {NAME_MAX} bytes"
            )));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag: `latest` when the input had neither tag nor digest, `None` when it had
    /// only a digest.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest after `@` (`sha256:<hex>`), when the input had one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `docker.io/library/busybox:latest`: the name of containerd's image record.
    pub fn canonical(&self) -> String {
        self.render(format!("{}/{}", self.registry, self.repository))
    }

    /// `busybox:latest`, `user/repo:v1`, `localhost:5000/x:1`: the short form Docker shows.
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            let path = &self.repository;
            match path.strip_prefix(OFFICIAL_PREFIX) {
                Some(short) if !short.contains('/') => short.to_string(),
                // `docker.io/a.b/c` without its registry would read as registry `a.b`.
                _ if split_registry(path).0.is_some() => format!("{DOCKER_HUB}/{path}"),
                _ => path.clone(),
            }
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        self.render(name)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(&format!("{}/{}:{tag}", self.registry, self.repository))
    }

    /// True for names under [`BUILTIN_PREFIX`], which only recipe builds may write.
    pub fn is_builtin(&self) -> bool {
        self.canonical().starts_with(BUILTIN_PREFIX)
    }

    fn render(&self, mut name: String) -> String {
        if let Some(t) = &self.tag {
            name.push(':');
            name.push_str(t);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(d);
        }
        name
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// The canonical name of the built-in image of recipe `recipe`.
pub fn builtin_name(recipe: &str) -> String {
    format!("{BUILTIN_PREFIX}{recipe}:{DEFAULT_TAG}")
}

/// Docker's split: the first component is a registry when it looks like a host.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= TAG_MAX
        && t.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A host name (labels of letters, digits and inner `-`, joined by `.`) with an optional
/// decimal port.
fn is_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port_ok && !host.is_empty() && host.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn docker_normalisation_table() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "user/repo",
                "docker.io/user/repo:latest",
                "user/repo:latest",
            ),
            (
                "stockade/busybox",
                "docker.io/stockade/busybox:latest",
                "stockade/busybox:latest",
            ),
            (
                "registry:5000/repo:tag",
                "registry:5000/repo:tag",
                "registry:5000/repo:tag",
            ),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/a/b/c:v1",
                "localhost:5000/a/b/c:v1",
                "localhost:5000/a/b/c:v1",
            ),
            (
                "Example.COM/x",
                "Example.COM/x:latest",
                "Example.COM/x:latest",
            ),
            (
                "ghcr.io/o/r:1.0-rc_1",
                "ghcr.io/o/r:1.0-rc_1",
                "ghcr.io/o/r:1.0-rc_1",
            ),
            (
                "a__b/c-d---e.f",
                "docker.io/a__b/c-d---e.f:latest",
                "a__b/c-d---e.f:latest",
            ),
        ];
        for (input, canonical, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.canonical(), *canonical, "{input}");
            assert_eq!(r.familiar(), *familiar, "{input}");
        }
    }

    #[test]
    fn digests_name_a_manifest_with_or_without_a_tag() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.canonical(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(d.as_str()));
        let r = Reference::parse(&format!("localhost:5000/x:v1@{d}")).unwrap();
        assert_eq!(r.canonical(), format!("localhost:5000/x:v1@{d}"));
        assert_eq!(r.tag(), Some("v1"));
    }

    #[test]
    fn invalid_references_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("Busybox", "lower-case"),
            ("has space", "not valid"),
            ("/abs", "not valid"),
            ("trailing/", "not valid"),
            ("a//b", "not valid"),
            ("semi;colon", "not valid"),
            ("x:", "tag"),
            ("x:-bad", "tag"),
            ("x@sha256:00", "digest"),
            ("x@sha512:00", "digest"),
            (
                "x@sha256:ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
                "digest",
            ),
            ("-x", "not valid"),
            ("x-", "not valid"),
            ("a._b", "not valid"),
            ("a___b", "not valid"),
            ("reg-.io/x", "registry"),
            ("reg.io:port/x", "registry"),
            (":tag", "no repository"),
        ];
        for (input, needle) in cases {
            let e = Reference::parse(input).expect_err(input);
            let msg = e.to_string();
            assert!(msg.contains(needle), "{input}: {msg}");
            assert!(!msg.contains('\n'), "{input}: {msg}");
        }
        let long = format!("{}:t", "a".repeat(256));
        assert!(Reference::parse(&long).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }

    #[test]
    fn builtin_names_are_reserved_and_user_names_are_not() {
        assert!(Reference::parse("stockade/busybox").unwrap().is_builtin());
        assert!(Reference::parse("docker.io/stockade/python:3")
            .unwrap()
            .is_builtin());
        assert_eq!(builtin_name("busybox"), "docker.io/stockade/busybox:latest");
        for user in [
            "busybox",
            "busybox:latest",
            "library/busybox",
            "stockadex/busybox",
            "localhost:5000/stockade/busybox",
            "ghcr.io/stockade/busybox",
        ] {
            assert!(!Reference::parse(user).unwrap().is_builtin(), "{user}");
        }
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,2}"
    }

    fn registry() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("docker.io".to_string())),
            Just(Some("localhost".to_string())),
            "[a-z][a-z0-9-]{0,8}[a-z0-9]\\.[a-z]{2,4}(:[0-9]{1,5})?".prop_map(Some),
            "[a-z]{1,8}:[0-9]{1,5}".prop_map(Some),
        ]
    }

    fn reference_text() -> impl Strategy<Value = String> {
        (
            registry(),
            prop::collection::vec(component(), 1..4),
            prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            prop::option::of("[0-9a-f]{64}"),
        )
            // Without a registry, a first component with a dot would be read as one.
            .prop_filter("implicit registry", |(reg, path, _, _)| {
                reg.is_some() || !path[0].contains('.')
            })
            .prop_map(|(reg, path, tag, digest)| {
                let mut s = match reg {
                    Some(r) => format!("{r}/{}", path.join("/")),
                    None => path.join("/"),
                };
                if let Some(t) = tag {
                    s = format!("{s}:{t}");
                }
                if let Some(d) = digest {
                    s = format!("{s}@sha256:{d}");
                }
                s
            })
    }

    proptest! {
        #[test]
        fn canonical_and_familiar_forms_parse_back_to_the_same_reference(s in reference_text()) {
            let r = Reference::parse(&s).unwrap();
            prop_assert_eq!(&Reference::parse(&r.canonical()).unwrap(), &r);
            prop_assert_eq!(&Reference::parse(&r.familiar()).unwrap(), &r);
            prop_assert_eq!(Reference::parse(&r.canonical()).unwrap().canonical(), r.canonical());
            prop_assert!(r.tag().is_some() || r.digest().is_some());
            prop_assert!(r.canonical().starts_with(r.registry()));
        }

        #[test]
        fn parsing_never_panics_and_errors_are_one_line(s in "\\PC{0,80}") {
            if let Err(e) = Reference::parse(&s) {
                prop_assert!(!e.to_string().contains('\n'));
            }
        }

        #[test]
        fn canonical_names_are_what_containerd_accepts(s in reference_text()) {
            let c = Reference::parse(&s).unwrap().canonical();
            prop_assert!(c.chars().all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c)));
            prop_assert!(c.contains('/'));
        }
    }
}
