//! The OCI image format as far as stockade needs it: media types, digests, chain ids, and
//! the config and manifest documents (pure: bytes in, bytes out).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index (a list of manifests, one a platform).
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// An OCI layer, uncompressed tar.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// An OCI layer, gzip-compressed tar.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// An OCI layer, zstd-compressed tar.
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// A Docker schema 2 manifest (the same shape as an OCI manifest).
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list (the same shape as an OCI index).
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A Docker image config.
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// A Docker layer, uncompressed tar.
pub const MEDIA_DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// A Docker layer, gzip-compressed tar.
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `sha256:<hex>` of `bytes`; true for a well-formed `sha256:<64 lowercase hex>` digest.
pub use crate::digest::{is_sha256 as is_sha256_digest, sha256 as sha256_digest};

/// The chain ids of a stack of layers, per the OCI image spec: the first is the first diff
/// id; each next is `sha256(parent_chain_id + " " + diff_id)`. The last one names the
/// committed snapshot of the whole image.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256_digest(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A content descriptor: what a manifest, index or config names a blob by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The blob's media type (see the `MEDIA_*` constants).
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: String,
    /// The blob's length in bytes.
    pub size: i64,
    /// Free-form annotations (in an index: the image's name, see the archive readers).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// In an index, the platform the manifest is for; `None` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The descriptor of `bytes` as a blob of `media_type`, without annotations or
    /// platform.
    pub fn new(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: sha256_digest(bytes),
            size: bytes.len() as i64,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// The platform an index entry's manifest runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// The OCI architecture name (`amd64`, `arm64`; see [`host_architecture`]).
    pub architecture: String,
    /// The operating system (`linux`).
    pub os: String,
    /// The CPU variant (`v8` of `arm64`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI, or Docker schema 2, which has the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The schema version: 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The manifest's own media type, when it states it (Docker's always do).
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// The layer blobs, base layer first.
    pub layers: Vec<Descriptor>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The schema version: 2.
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// The index's own media type, when it states it.
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes), each with its platform where known.
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config stockade reads and writes. Unknown fields are kept when
/// reading someone else's config only in the sense that the bytes are stored unchanged;
/// this struct is a view.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigFile {
    /// When the image was made, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The OCI architecture the image is for.
    #[serde(default)]
    pub architecture: String,
    /// The operating system the image is for.
    #[serde(default)]
    pub os: String,
    /// How to run it.
    #[serde(default)]
    pub config: RuntimeConfig,
    /// The diff ids of its layers.
    pub rootfs: RootFs,
    /// One entry per build step, layer or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// The `config` object of an image config: how to run it. Field names are Docker's
/// (`WorkingDir`); every field may be missing, and a list or map may be `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RuntimeConfig {
    /// `USER`: a user name or id, with an optional `:group`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `ENV`: `K=V` entries.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub entrypoint: Vec<String>,
    /// `CMD`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub cmd: Vec<String>,
    /// `WORKDIR`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `LABEL`s.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    /// `EXPOSE`d ports (`8080/tcp`), each mapped to an empty object.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// `STOPSIGNAL`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// `SHELL` (a Docker extension of the OCI config).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub shell: Vec<String>,
}

/// Docker writes `null` for empty lists.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The `rootfs` object of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// The kind of root filesystem: `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The digest of each layer's uncompressed tar, base layer first.
    pub diff_ids: Vec<String>,
}

/// One entry of an image config's `history`: a build step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction or command that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// A free-form comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for an instruction that changed only the config (no layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
}

/// The OCI architecture name of the host.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// True for layer media types containerd's applier unpacks, and whether they are
/// compressed (gzip or zstd).
pub fn layer_compression(media_type: &str) -> Option<bool> {
    match media_type {
        MEDIA_LAYER_TAR | MEDIA_DOCKER_LAYER_TAR => Some(false),
        MEDIA_LAYER_GZIP | MEDIA_DOCKER_LAYER_GZIP | MEDIA_LAYER_ZSTD => Some(true),
        _ => None,
    }
}

/// True when an index entry's platform runs here (linux on the host's architecture); an
/// entry without a platform is taken to.
pub fn runs_here(p: &Option<Platform>) -> bool {
    match p {
        None => true,
        Some(p) => p.os == "linux" && p.architecture == host_architecture(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let d = sha256_digest(b"a");
        assert_eq!(chain_ids(std::slice::from_ref(&d)), vec![d]);
    }

    #[test]
    fn chain_ids_follow_the_image_spec_recurrence() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        let c = sha256_digest(b"c");
        let ids = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let ab = sha256_digest(format!("{a} {b}").as_bytes());
        let abc = sha256_digest(format!("{ab} {c}").as_bytes());
        assert_eq!(ids, vec![a, ab, abc]);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn chain_id_matches_a_known_value() {
        // Two layers whose diff ids are the digests of the empty string and of "x": the
        // value below was computed independently (Python hashlib).
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let x = "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
        assert_eq!(sha256_digest(b""), empty);
        assert_eq!(sha256_digest(b"x"), x);
        let ids = chain_ids(&[empty.to_string(), x.to_string()]);
        assert_eq!(
            ids[1],
            "sha256:c8abc52cce3f8ec84ed9e29c80770946d96e0fc3d148ba971d71e9eaac1c4b14"
        );
    }

    #[test]
    fn digests_are_validated() {
        let cases = [
            (sha256_digest(b"a"), true),
            ("sha256:abc".to_string(), false),
            (format!("sha512:{}", "a".repeat(64)), false),
            (format!("sha256:{}", "A".repeat(64)), false),
            (format!("sha256:{}", "g".repeat(64)), false),
        ];
        for (d, want) in cases {
            assert_eq!(is_sha256_digest(&d), want, "{d}");
        }
    }

    #[test]
    fn runtime_config_uses_dockers_field_names_and_leaves_empty_ones_out() {
        let full = RuntimeConfig {
            user: "1000:1000".into(),
            env: vec!["A=1".into()],
            entrypoint: vec!["/bin/sh".into()],
            cmd: vec!["-c".into()],
            working_dir: "/w".into(),
            labels: [("k".to_string(), "v".to_string())].into(),
            exposed_ports: [("80/tcp".to_string(), serde_json::json!({}))].into(),
            stop_signal: "SIGTERM".into(),
            shell: vec!["/bin/sh".into(), "-c".into()],
        };
        let json = serde_json::to_value(&full).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = [
            "User",
            "Env",
            "Entrypoint",
            "Cmd",
            "WorkingDir",
            "Labels",
            "ExposedPorts",
            "StopSignal",
            "Shell",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(serde_json::from_value::<RuntimeConfig>(json).unwrap(), full);
        let empty = serde_json::to_string(&RuntimeConfig::default()).unwrap();
        assert_eq!(empty, "{}");
        let missing: RuntimeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(missing, RuntimeConfig::default());
    }

    #[test]
    fn docker_configs_with_nulls_parse() {
        let text = r#"{"architecture":"amd64","os":"linux",
            "config":{"Env":null,"Cmd":["sh"],"Entrypoint":null,"WorkingDir":"","User":""},
            "rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#;
        let c: ImageConfigFile = serde_json::from_str(text).unwrap();
        assert!(c.config.env.is_empty());
        assert_eq!(c.config.cmd, vec!["sh"]);
    }
}
