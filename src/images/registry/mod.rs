//! Pulling images from, and pushing them to, OCI Distribution registries, over the
//! `oci-client` crate (token and basic auth, HTTPS through rustls).
//!
//! A pull ([`pull`]) reads the manifest (choosing, from an index, the one for linux on the
//! host's architecture), the config and the layers, checks every digest, streams the layers
//! into containerd's content store a few at a time and resumably ([`super::store::write_stream`]),
//! then stores and unpacks the image through the same path an import takes
//! ([`super::store::store_image`]). A push ([`push`]) reads an image back out of the content
//! store and uploads what the registry lacks, then the manifest.
//!
//! HTTPS is the default. `plain_http` and `insecure` (accept any certificate) each hold
//! registry names, and apply only when they name the registry the reference is on.

mod credentials;
mod pull;
mod push;

use std::path::PathBuf;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use thiserror::Error;

pub use credentials::{from_docker_config, Credentials};
pub use pull::pull;
pub use push::push;

use super::reference::Reference;

/// Layers downloaded (or uploaded) at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 3;

/// Errors talking to a registry. Each is one line naming the reference or registry.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The registry has no such repository, tag or manifest, or none for this host's
    /// platform.
    #[error("{reference}: not found in the registry ({detail})")]
    NotFound {
        /// The reference asked for.
        reference: String,
        /// What is missing, as the registry (or the platform check) says.
        detail: String,
    },
    /// The registry refused the credentials (or the lack of them).
    #[error("{registry}: authentication failed ({hint})")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// Where to check the credentials (the flags, the Docker config).
        hint: String,
    },
    /// No connection: refused, timed out, or no TLS where HTTPS was expected.
    #[error("{registry}: unreachable: {reason}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The innermost cause, and a hint where one helps (`--plain-http`).
        reason: String,
    },
    /// Bytes the registry served do not have the digest they were asked for by.
    #[error(
        "{what}: the registry's bytes do not match the digest: expected {expected}, got {actual}"
    )]
    Tampered {
        /// The manifest or blob.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The registry answered something stockade cannot use (a malformed or oversized
    /// document, an unsupported media type, an error not about access or a missing name),
    /// or the reference is one the registry client cannot parse.
    #[error("{what}: {reason}")]
    Protocol {
        /// The reference, manifest or layer concerned.
        what: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// `--plain-http` or `--insecure` names a registry other than the reference's.
    #[error("{flag}: `{value}` is not the registry of {reference} ({registry}); it applies only to the registry it names")]
    FlagForOtherRegistry {
        /// The flag (`--plain-http`, `--insecure`).
        flag: &'static str,
        /// The registry the flag named.
        value: String,
        /// The reference pulled or pushed, familiar form.
        reference: String,
        /// The reference's registry.
        registry: String,
    },
    /// The Docker client config could not be read or parsed.
    #[error("{path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A layer's download stopped part-way; what arrived stays for the next attempt.
    #[error("{what}: download interrupted after {written} of {size} bytes ({reason}); run the same pull again to resume")]
    Interrupted {
        /// The layer.
        what: String,
        /// Bytes in the content store so far.
        written: u64,
        /// The layer's size in bytes.
        size: i64,
        /// Why the download stopped.
        reason: String,
    },
}

/// How to reach a registry and who to be there.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries to talk to over plain HTTP (default: none; HTTPS everywhere).
    pub plain_http: Vec<String>,
    /// Registries whose TLS certificate is not checked (default: none).
    pub insecure: Vec<String>,
    /// Credentials given on the command line; they win over the Docker config.
    pub credentials: Option<Credentials>,
    /// The Docker client config to read credentials from (default:
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; a missing file
    /// means no credentials).
    pub docker_config: Option<PathBuf>,
    /// Layers transferred at once (default [`DEFAULT_CONCURRENCY`]; 0 means the default).
    pub concurrency: usize,
}

impl RegistryOptions {
    /// The Docker config file to read: the one given, or the Docker client's default.
    pub fn docker_config_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.docker_config {
            return Some(p.clone());
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    fn concurrency(&self) -> usize {
        if self.concurrency == 0 {
            DEFAULT_CONCURRENCY
        } else {
            self.concurrency
        }
    }

    /// Checks that `plain_http` and `insecure` name only the registry of `r`.
    fn check_flags(&self, r: &Reference) -> Result<(), RegistryError> {
        for (flag, list) in [
            ("--plain-http", &self.plain_http),
            ("--insecure", &self.insecure),
        ] {
            if let Some(other) = list.iter().find(|v| v.as_str() != r.registry()) {
                return Err(RegistryError::FlagForOtherRegistry {
                    flag,
                    value: other.clone(),
                    reference: r.familiar(),
                    registry: r.registry().to_string(),
                });
            }
        }
        Ok(())
    }

    /// The auth to use for the registry of `r`.
    fn auth(&self, r: &Reference) -> Result<RegistryAuth, RegistryError> {
        if let Some(c) = &self.credentials {
            return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
        }
        let Some(path) = self.docker_config_path() else {
            return Ok(RegistryAuth::Anonymous);
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryAuth::Anonymous)
            }
            Err(e) => {
                return Err(RegistryError::Config {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        match from_docker_config(&text, r.registry()) {
            Ok(Some(c)) => Ok(RegistryAuth::Basic(c.username, c.password)),
            Ok(None) => Ok(RegistryAuth::Anonymous),
            Err(reason) => Err(RegistryError::Config { path, reason }),
        }
    }

    /// A registry client for the registry of `r`.
    fn client(&self, r: &Reference) -> Result<oci_client::Client, RegistryError> {
        self.check_flags(r)?;
        let registry = r.registry().to_string();
        let protocol = if self.plain_http.contains(&registry) {
            // `docker.io` is reached as `index.docker.io`; name both.
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            accept_invalid_certificates: self.insecure.contains(&registry),
            // Index entries are chosen by this module, not by the client.
            platform_resolver: None,
            max_concurrent_download: self.concurrency(),
            max_concurrent_upload: self.concurrency(),
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        Ok(oci_client::Client::new(config))
    }
}

/// The `oci-client` reference for `r` (its canonical name).
fn oci_reference(r: &Reference) -> Result<oci_client::Reference, RegistryError> {
    let text = r.canonical();
    text.parse().map_err(|e| RegistryError::Protocol {
        what: text.clone(),
        reason: format!("the registry client cannot parse it: {e}"),
    })
}

/// The innermost cause of an error, on one line.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string().replace('\n', " ")
}

/// What a registry client error means for the user, naming `what` (a reference or blob).
fn classify(r: &Reference, what: &str, e: OciDistributionError) -> RegistryError {
    let registry = r.registry().to_string();
    let unauthorized = || RegistryError::Unauthorized {
        registry: registry.clone(),
        hint: "check --username/--password-stdin, or the registry's entry in ~/.docker/config.json"
            .into(),
    };
    let not_found = |detail: String| RegistryError::NotFound {
        reference: what.to_string(),
        detail,
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        OciDistributionError::ServerError { code: 404, .. } => not_found("404".into()),
        OciDistributionError::ImageManifestNotFoundError(m) => not_found(m),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let first = envelope.errors.first();
            match first.map(|e| &e.code) {
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => unauthorized(),
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound,
                ) => not_found(
                    first
                        .map(|e| e.message.clone())
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| codes.join(", ")),
                ),
                _ => RegistryError::Protocol {
                    what: what.to_string(),
                    reason: format!(
                        "registry refused: {}",
                        first.map(|e| e.message.clone()).unwrap_or_default()
                    ),
                },
            }
        }
        OciDistributionError::DigestError(d) => RegistryError::Tampered {
            what: what.to_string(),
            expected: "the digest it was asked for".into(),
            actual: d.to_string(),
        },
        OciDistributionError::RequestError(req) => {
            let reason = root_cause(&req);
            if reason.contains("InvalidContentType") {
                RegistryError::Unreachable {
                    registry: registry.clone(),
                    reason: format!(
                        "no TLS there ({reason}); if it serves plain HTTP, say --plain-http {registry}"
                    ),
                }
            } else if req.is_connect() || req.is_timeout() {
                RegistryError::Unreachable { registry, reason }
            } else {
                RegistryError::Protocol {
                    what: what.to_string(),
                    reason: root_cause(&req),
                }
            }
        }
        other => RegistryError::Protocol {
            what: what.to_string(),
            reason: root_cause(&other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    #[test]
    fn weakening_flags_apply_only_to_the_registry_they_name() {
        let o = RegistryOptions {
            plain_http: vec!["localhost:5000".into()],
            ..Default::default()
        };
        assert!(o.check_flags(&r("localhost:5000/x")).is_ok());
        let e = o.check_flags(&r("ghcr.io/x")).unwrap_err().to_string();
        assert_eq!(
            e,
            "--plain-http: `localhost:5000` is not the registry of ghcr.io/x:latest (ghcr.io); it applies only to the registry it names"
        );
        let o = RegistryOptions {
            insecure: vec!["docker.io".into()],
            ..Default::default()
        };
        assert!(o.check_flags(&r("busybox")).is_ok());
        assert!(o.check_flags(&r("localhost:5000/busybox")).is_err());
    }

    #[test]
    fn credentials_come_from_the_flag_then_the_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"localhost:5000":{"username":"cfg","password":"p"}}}"#,
        )
        .unwrap();
        let mut o = RegistryOptions {
            docker_config: Some(path.clone()),
            ..Default::default()
        };
        let basic = |a: RegistryAuth| match a {
            RegistryAuth::Basic(u, _) => Some(u),
            _ => None,
        };
        assert_eq!(
            basic(o.auth(&r("localhost:5000/x")).unwrap()).as_deref(),
            Some("cfg")
        );
        assert_eq!(basic(o.auth(&r("ghcr.io/x")).unwrap()), None);
        o.credentials = Some(Credentials {
            username: "flag".into(),
            password: "q".into(),
        });
        assert_eq!(
            basic(o.auth(&r("localhost:5000/x")).unwrap()).as_deref(),
            Some("flag")
        );
        o.credentials = None;
        o.docker_config = Some(dir.path().join("absent.json"));
        assert_eq!(basic(o.auth(&r("localhost:5000/x")).unwrap()), None);
        std::fs::write(&path, "{").unwrap();
        o.docker_config = Some(path.clone());
        let e = o.auth(&r("localhost:5000/x")).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: not a Docker config", path.display())),
            "{e}"
        );
    }
}
