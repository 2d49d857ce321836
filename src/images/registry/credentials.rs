//! Registry credentials from a Docker client config (`~/.docker/config.json`): the
//! `auths` map, keyed by registry host (`localhost:5000`, `https://ghcr.io`, and
//! `https://index.docker.io/v1/` for Docker Hub), each entry an `auth` of
//! base64(`user:password`) or separate `username` and `password`. Credential helpers
//! (`credsStore`, `credHelpers`) are not run: a registry that only they know is pulled
//! anonymously unless `--username` is given. Pure: text in, credentials out.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token (hidden from `Debug`).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

/// The parts of a Docker client config read here; the rest belongs to the Docker client.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The host a config key names: `https://index.docker.io/v1/` → `docker.io`,
/// `https://localhost:5000/v2/` → `localhost:5000`.
fn key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_string(),
    }
}

/// The credentials `config` (the text of a config.json) holds for `registry` (as a
/// reference names it: `docker.io`, `localhost:5000`). `Ok(None)` when it has none; an
/// error (one line, the reason) when the file or the entry is malformed.
pub fn from_docker_config(config: &str, registry: &str) -> Result<Option<Credentials>, String> {
    let parsed: DockerConfig =
        serde_json::from_str(config).map_err(|e| format!("not a Docker config: {e}"))?;
    let Some((key, entry)) = parsed.auths.iter().find(|(k, _)| key_host(k) == registry) else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{key}.auth: not base64: {e}"))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| format!("auths.{key}.auth: not UTF-8 once decoded"))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| format!("auths.{key}.auth: not `user:password` once decoded"))?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn entries_are_found_by_registry_host() {
        let config = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "localhost:5000": {{"auth": "{}"}},
                "https://ghcr.io": {{"username": "u", "password": "p"}},
                "quay.io": {{}}
            }}, "credsStore": "desktop", "psFormat": "x"}}"#,
            b64("hub:secret"),
            b64("me:pa:ss")
        );
        let get = |r| from_docker_config(&config, r).unwrap();
        assert_eq!(get("docker.io").unwrap().username, "hub");
        let local = get("localhost:5000").unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("me", "pa:ss")
        );
        assert_eq!(get("ghcr.io").unwrap().password, "p");
        assert_eq!(get("quay.io"), None);
        assert_eq!(get("localhost:5001"), None);
    }

    #[test]
    fn malformed_entries_say_which() {
        let bad = r#"{"auths": {"r.io": {"auth": "!!!"}}}"#;
        let e = from_docker_config(bad, "r.io").unwrap_err();
        assert!(e.starts_with("auths.r.io.auth: not base64"), "{e}");
        let no_colon = format!(r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#, b64("x"));
        assert!(from_docker_config(&no_colon, "r.io")
            .unwrap_err()
            .contains("user:password"));
        assert!(from_docker_config("[", "r.io")
            .unwrap_err()
            .starts_with("not a Docker config"));
        assert_eq!(from_docker_config("{}", "r.io").unwrap(), None);
    }

    #[test]
    fn passwords_are_not_printed() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
