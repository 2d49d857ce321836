//! TLS for the HTTP API (`--tls-cert FILE --tls-key FILE`): the certificate chain and its
//! private key read from PEM files and checked to belong together before the server
//! starts, served by rustls (aws-lc-rs) over whatever the listener accepts. No client
//! certificates: callers authenticate with their bearer token, which TLS keeps secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up. Each renders as one line naming the flag and its file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// A file holds no PEM item of the kind the flag needs, or a malformed one.
    #[error("{flag} {}: {reason}", path.display())]
    Pem {
        /// `--tls-cert` or `--tls-key`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair: most often a key that is not the certificate's.
    #[error("--tls-key {}: does not fit the certificate of --tls-cert {}: {reason}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

/// The certificate chain in `pem` (leaf first), or why there is none.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no `BEGIN CERTIFICATE` block".to_string());
    }
    Ok(chain)
}

/// The private key in `pem` (PKCS#8, PKCS#1 or SEC1), or why there is none.
fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no `BEGIN PRIVATE KEY` (or RSA/EC) block".to_string()
        }
        e => format!("not a PEM private key: {e}"),
    })
}

/// The server's TLS configuration from PEM texts: `cert_pem` the chain, `key_pem` its
/// key; the files' paths only name them in errors. HTTP/1.1 only (ALPN `http/1.1`).
pub fn config_from_pem(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert_pem).map_err(|reason| TlsError::Pem {
        flag: "--tls-cert",
        path: cert.to_path_buf(),
        reason,
    })?;
    let secret = private_key(key_pem).map_err(|reason| TlsError::Pem {
        flag: "--tls-key",
        path: key.to_path_buf(),
        reason,
    })?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(mismatch)?
        .with_no_client_auth()
        .with_single_cert(chain, secret)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads `--tls-cert` and `--tls-key` and makes the acceptor the listener hands each
/// connection to; every error names the flag and the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    config_from_pem(cert, &cert_pem, key, &key_pem).map(TlsAcceptor::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed P-256 certificate for `localhost` and its key, and a second key that
    /// is not the certificate's (made once with `openssl req -x509 -newkey ec ...`).
    const CERT: &str = include_str!("../../tests/fixtures/tls/cert.pem");
    const KEY: &str = include_str!("../../tests/fixtures/tls/key.pem");
    const OTHER_KEY: &str = include_str!("../../tests/fixtures/tls/other-key.pem");

    fn load(cert: &str, key: &str) -> Result<Arc<ServerConfig>, TlsError> {
        config_from_pem(
            Path::new("/c.pem"),
            cert.as_bytes(),
            Path::new("/k.pem"),
            key.as_bytes(),
        )
    }

    #[test]
    fn a_certificate_and_its_key_make_a_configuration() {
        let c = load(CERT, KEY).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn each_refusal_is_one_line_naming_the_flag_and_file() {
        let cases = [
            (
                "a key that is not the certificate's",
                CERT,
                OTHER_KEY,
                "--tls-key /k.pem: does not fit the certificate of --tls-cert /c.pem",
            ),
            (
                "the key given as the certificate",
                KEY,
                KEY,
                "--tls-cert /c.pem: no `BEGIN CERTIFICATE` block",
            ),
            (
                "the certificate given as the key",
                CERT,
                CERT,
                "--tls-key /k.pem: no `BEGIN PRIVATE KEY`",
            ),
            (
                "an empty certificate file",
                "",
                KEY,
                "--tls-cert /c.pem: no `BEGIN CERTIFICATE` block",
            ),
            (
                "a truncated certificate",
                &CERT[..CERT.len() / 2],
                KEY,
                "--tls-cert /c.pem: ",
            ),
        ];
        for (name, cert, key, want) in cases {
            let e = load(cert, key).unwrap_err().to_string();
            assert!(e.starts_with(want), "{name}: {e}");
            assert!(!e.contains('\n'), "{name}: {e}");
        }
    }

    #[test]
    fn an_unreadable_file_names_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, CERT).unwrap();
        let missing = dir.path().join("nope.pem");
        let Err(e) = acceptor(&cert, &missing) else {
            panic!("a missing key file is refused")
        };
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("--tls-key {}: ", missing.display())),
            "{e}"
        );
        let Err(e) = acceptor(&missing, &cert) else {
            panic!("a missing certificate file is refused")
        };
        assert!(e.to_string().starts_with("--tls-cert "), "{e}");
    }
}
