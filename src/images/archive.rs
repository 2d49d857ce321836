//! `stockade image import FILE`: an OCI image layout tarball or a `docker save` tarball
//! (either gzip-compressed or not) into containerd, through the same pipeline as `build`.
//!
//! The archive is unpacked into a scratch directory (the tar reader refuses entries that
//! would land outside it), then every blob is read only if it is a regular file and its
//! digest is checked before anything is sent to containerd, so a truncated or tampered
//! archive fails with the file and digest named.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::oci::{
    self, layer_compression, Descriptor, ImageConfigFile, Index, Manifest, MEDIA_CONFIG,
    MEDIA_DOCKER_LIST, MEDIA_DOCKER_MANIFEST, MEDIA_INDEX, MEDIA_MANIFEST,
};
use super::store::{store_image, BlobSource, LayerSource, PreparedImage};
use super::{normalize_name, ImageError, ImageRef, Progress};
use crate::containerd::Client;

/// Annotation containerd (and `ctr export`) put on index entries: the full image name.
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for the reference name (a full name or only a tag).
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image found in an archive, checked and ready to store.
#[derive(Clone, Debug)]
pub struct FoundImage {
    /// Names from the archive (normalised); empty when it names none.
    pub names: Vec<String>,
    pub image: PreparedImage,
}

/// Imports every image in the archive at `path`. `name` replaces the archive's own names
/// (then the archive must hold exactly one image). Scratch space is made under `scratch`.
pub async fn import(
    client: &Client,
    path: &Path,
    name: Option<&str>,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Vec<ImageRef>, ImageError> {
    let name = name.map(normalize_name).transpose()?;
    let dir = tempfile::Builder::new()
        .prefix("stockade-import-")
        .tempdir_in(scratch)
        .map_err(|source| ImageError::Io {
            path: scratch.to_path_buf(),
            source,
        })?;
    progress.stage(&format!("reading {}", path.display()));
    let (archive, out) = (path.to_path_buf(), dir.path().to_path_buf());
    let found = tokio::task::spawn_blocking(move || {
        unpack_archive(&archive, &out)?;
        read_layout(&archive, &out)
    })
    .await
    .map_err(|e| ImageError::Invalid {
        what: path.display().to_string(),
        reason: e.to_string(),
    })??;
    if name.is_some() && found.len() != 1 {
        return Err(ImageError::Archive {
            path: path.to_path_buf(),
            reason: format!("holds {} images; --name needs exactly one", found.len()),
        });
    }
    let mut refs = Vec::new();
    for f in found {
        let names = match &name {
            Some(n) => vec![n.clone()],
            None if f.names.is_empty() => {
                return Err(ImageError::Archive {
                    path: path.to_path_buf(),
                    reason: format!(
                        "image {} has no name in the archive; give one with --name",
                        f.image.manifest_descriptor.digest
                    ),
                })
            }
            None => f.names.clone(),
        };
        for n in names {
            refs.push(store_image(client, &n, &f.image, progress).await?);
        }
    }
    Ok(refs)
}

/// Unpacks the (possibly gzip-compressed) tar at `path` into `out`.
pub fn unpack_archive(path: &Path, out: &Path) -> Result<(), ImageError> {
    let bad = |reason: String| ImageError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let mut f = File::open(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| bad(e.to_string()))?;
    let f = File::open(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(false);
    archive.set_overwrite(true);
    archive.unpack(out).map_err(|e| {
        bad(format!(
            "not a readable tar archive (truncated or corrupt): {}",
            root_cause(&e)
        ))
    })
}

/// The innermost cause of an error, on one line and at most 120 characters (the tar
/// reader's outer messages repeat scratch paths that mean nothing to the user).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let s = cur.to_string().replace('\n', " ");
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Reads the images of an unpacked archive: an OCI layout (`index.json`) or a docker-save
/// (`manifest.json`).
pub fn read_layout(archive: &Path, dir: &Path) -> Result<Vec<FoundImage>, ImageError> {
    if dir.join("index.json").is_file() {
        read_oci_layout(archive, dir)
    } else if dir.join("manifest.json").is_file() {
        read_docker_save(archive, dir)
    } else {
        Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: "neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)".into(),
        })
    }
}

/// A regular file under `dir` (never a symlink or anything outside).
fn regular_file(archive: &Path, dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    let bad = |reason: String| ImageError::Archive {
        path: archive.to_path_buf(),
        reason,
    };
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(bad(format!("{rel}: path leaves the archive")));
    }
    let p = dir.join(rel);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_file() => Ok(p),
        Ok(_) => Err(bad(format!("{rel}: not a regular file"))),
        Err(_) => Err(bad(format!("{rel}: missing"))),
    }
}

fn read_small(archive: &Path, path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::Archive {
        path: archive.to_path_buf(),
        reason: format!("{}: {e}", path.display()),
    })
}

/// sha256 digest and length of a file.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), len))
}

fn blob_path(archive: &Path, dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    if !oci::is_sha256_digest(digest) {
        return Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: format!("`{digest}` is not a sha256 digest"),
        });
    }
    regular_file(archive, dir, &format!("blobs/sha256/{}", &digest[7..]))
}

/// A blob's bytes, checked against its descriptor.
fn read_blob(archive: &Path, dir: &Path, d: &Descriptor) -> Result<Vec<u8>, ImageError> {
    let bytes = read_small(archive, &blob_path(archive, dir, &d.digest)?)?;
    let actual = oci::sha256_digest(&bytes);
    if actual != d.digest || bytes.len() as i64 != d.size {
        return Err(ImageError::DigestMismatch {
            what: format!("{}: blob {}", archive.display(), d.digest),
            expected: format!("{} ({} bytes)", d.digest, d.size),
            actual: format!("{actual} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// Checks a layer file against its digest and size.
fn check_layer_file(
    archive: &Path,
    path: &Path,
    digest: &str,
    size: Option<i64>,
) -> Result<(String, u64), ImageError> {
    let (actual, len) = hash_file(path).map_err(|e| ImageError::Archive {
        path: archive.to_path_buf(),
        reason: format!("{}: {e}", path.display()),
    })?;
    if actual != digest || size.is_some_and(|s| s as u64 != len) {
        return Err(ImageError::DigestMismatch {
            what: format!("{}: layer {}", archive.display(), digest),
            expected: digest.to_string(),
            actual: format!("{actual} ({len} bytes)"),
        });
    }
    Ok((actual, len))
}

fn parse<T: serde::de::DeserializeOwned>(
    archive: &Path,
    what: &str,
    bytes: &[u8],
) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Archive {
        path: archive.to_path_buf(),
        reason: format!("{what}: {e}"),
    })
}

/// True when a platform is runnable here (linux on the host's architecture).
fn platform_matches(p: &Option<oci::Platform>) -> bool {
    match p {
        None => true,
        Some(p) => p.os == "linux" && p.architecture == oci::host_architecture(),
    }
}

fn read_oci_layout(archive: &Path, dir: &Path) -> Result<Vec<FoundImage>, ImageError> {
    let index: Index = parse(
        archive,
        "index.json",
        &read_small(archive, &regular_file(archive, dir, "index.json")?)?,
    )?;
    let mut found = Vec::new();
    for entry in &index.manifests {
        let names = entry_names(entry);
        let manifest_desc = select_manifest(archive, dir, entry, 0)?;
        let Some(manifest_desc) = manifest_desc else {
            continue;
        };
        let manifest_bytes = read_blob(archive, dir, &manifest_desc)?;
        let manifest: Manifest = parse(
            archive,
            &format!("manifest {}", manifest_desc.digest),
            &manifest_bytes,
        )?;
        let config = read_blob(archive, dir, &manifest.config)?;
        let config_file: ImageConfigFile = parse(
            archive,
            &format!("config {}", manifest.config.digest),
            &config,
        )?;
        check_layer_count(archive, &manifest, &config_file)?;
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers.iter().zip(&config_file.rootfs.diff_ids) {
            if layer_compression(&l.media_type).is_none() {
                return Err(ImageError::Archive {
                    path: archive.to_path_buf(),
                    reason: format!(
                        "layer {}: unsupported media type {}",
                        l.digest, l.media_type
                    ),
                });
            }
            let path = blob_path(archive, dir, &l.digest)?;
            check_layer_file(archive, &path, &l.digest, Some(l.size))?;
            layers.push(LayerSource {
                descriptor: Descriptor {
                    platform: None,
                    ..l.clone()
                },
                diff_id: diff_id.clone(),
                source: BlobSource::File(path),
            });
        }
        found.push(FoundImage {
            names,
            image: PreparedImage {
                manifest: manifest_bytes,
                manifest_descriptor: Descriptor {
                    media_type: manifest_desc.media_type.clone(),
                    digest: manifest_desc.digest.clone(),
                    size: manifest_desc.size,
                    annotations: Default::default(),
                    platform: None,
                },
                config_descriptor: Descriptor {
                    platform: None,
                    ..manifest.config.clone()
                },
                config,
                config_file,
                layers,
            },
        });
    }
    if found.is_empty() {
        return Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: format!(
                "no image for linux/{} in index.json",
                oci::host_architecture()
            ),
        });
    }
    Ok(found)
}

/// The names an index entry gives its image, normalised; a bare tag is no name.
fn entry_names(entry: &Descriptor) -> Vec<String> {
    let candidates = [
        entry.annotations.get(ANNOTATION_CONTAINERD_NAME),
        entry
            .annotations
            .get(ANNOTATION_REF_NAME)
            .filter(|r| r.contains(':') || r.contains('/')),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|n| normalize_name(n).ok())
        .take(1)
        .collect()
}

/// The image manifest an index entry leads to on this platform: the entry itself, or the
/// matching manifest of a nested index. `None` when no platform matches.
fn select_manifest(
    archive: &Path,
    dir: &Path,
    entry: &Descriptor,
    depth: u32,
) -> Result<Option<Descriptor>, ImageError> {
    match entry.media_type.as_str() {
        MEDIA_MANIFEST | MEDIA_DOCKER_MANIFEST => Ok(Some(entry.clone())),
        MEDIA_INDEX | MEDIA_DOCKER_LIST if depth < 4 => {
            let index: Index = parse(
                archive,
                &format!("index {}", entry.digest),
                &read_blob(archive, dir, entry)?,
            )?;
            for m in index
                .manifests
                .iter()
                .filter(|m| platform_matches(&m.platform))
            {
                if let Some(d) = select_manifest(archive, dir, m, depth + 1)? {
                    return Ok(Some(d));
                }
            }
            Ok(None)
        }
        other => Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: format!(
                "index entry {}: unsupported media type {other}",
                entry.digest
            ),
        }),
    }
}

fn check_layer_count(
    archive: &Path,
    manifest: &Manifest,
    config: &ImageConfigFile,
) -> Result<(), ImageError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() || manifest.layers.is_empty() {
        return Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: format!(
                "manifest lists {} layers but the config has {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    Ok(())
}

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn read_docker_save(archive: &Path, dir: &Path) -> Result<Vec<FoundImage>, ImageError> {
    let entries: Vec<DockerSaveEntry> = parse(
        archive,
        "manifest.json",
        &read_small(archive, &regular_file(archive, dir, "manifest.json")?)?,
    )?;
    let mut found = Vec::new();
    for e in entries {
        let config = read_small(archive, &regular_file(archive, dir, &e.config)?)?;
        let config_file: ImageConfigFile = parse(archive, &e.config, &config)?;
        if config_file.rootfs.diff_ids.len() != e.layers.len() || e.layers.is_empty() {
            return Err(ImageError::Archive {
                path: archive.to_path_buf(),
                reason: format!(
                    "{}: {} layers but the config has {} diff ids",
                    e.config,
                    e.layers.len(),
                    config_file.rootfs.diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (rel, diff_id) in e.layers.iter().zip(&config_file.rootfs.diff_ids) {
            let path = regular_file(archive, dir, rel)?;
            let (digest, size) = hash_file(&path).map_err(|err| ImageError::Archive {
                path: archive.to_path_buf(),
                reason: format!("{rel}: {err}"),
            })?;
            let gzip = is_gzip(&path);
            // An uncompressed layer is its own diff: check it now rather than after unpacking.
            if !gzip && &digest != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("{}: layer {rel}", archive.display()),
                    expected: diff_id.clone(),
                    actual: digest,
                });
            }
            layers.push(LayerSource {
                descriptor: super::layer::layer_descriptor(gzip, digest, size),
                diff_id: diff_id.clone(),
                source: BlobSource::File(path),
            });
        }
        let config_descriptor = Descriptor::new(MEDIA_CONFIG, &config);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_string()),
            config: config_descriptor.clone(),
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| normalize_name(t).ok())
            .collect();
        found.push(FoundImage {
            names,
            image: PreparedImage {
                manifest_descriptor: Descriptor::new(MEDIA_MANIFEST, &manifest_bytes),
                manifest: manifest_bytes,
                config_descriptor,
                config,
                config_file,
                layers,
            },
        });
    }
    if found.is_empty() {
        return Err(ImageError::Archive {
            path: archive.to_path_buf(),
            reason: "manifest.json lists no images".into(),
        });
    }
    Ok(found)
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// Writes an image as an OCI image layout tarball: `oci-layout`, `index.json` (naming the
/// image with both the containerd and OCI annotations) and `blobs/sha256/*`. Used by tests
/// and by anyone moving a built image to another host.
pub fn write_oci_layout(out: &Path, name: &str, image: &PreparedImage) -> Result<(), ImageError> {
    let io = |source| ImageError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut b = tar::Builder::new(std::io::BufWriter::new(File::create(out).map_err(io)?));
    let mut add = |path: &str, data: &mut dyn Read, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    add("oci-layout", &mut &layout[..], layout.len() as u64).map_err(io)?;
    let mut entry = image.manifest_descriptor.clone();
    entry
        .annotations
        .insert(ANNOTATION_CONTAINERD_NAME.to_string(), name.to_string());
    entry.annotations.insert(
        ANNOTATION_REF_NAME.to_string(),
        name.rsplit(':').next().unwrap_or("latest").to_string(),
    );
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.to_string()),
        manifests: vec![entry],
    };
    let index = serde_json::to_vec(&index).unwrap_or_default();
    add("index.json", &mut &index[..], index.len() as u64).map_err(io)?;
    let blob = |d: &Descriptor| format!("blobs/sha256/{}", &d.digest[7..]);
    add(
        &blob(&image.manifest_descriptor),
        &mut &image.manifest[..],
        image.manifest.len() as u64,
    )
    .map_err(io)?;
    add(
        &blob(&image.config_descriptor),
        &mut &image.config[..],
        image.config.len() as u64,
    )
    .map_err(io)?;
    for l in &image.layers {
        match &l.source {
            BlobSource::Bytes(bytes) => {
                add(&blob(&l.descriptor), &mut &bytes[..], bytes.len() as u64).map_err(io)?
            }
            BlobSource::File(p) => {
                let mut f = File::open(p).map_err(|source| ImageError::Io {
                    path: p.clone(),
                    source,
                })?;
                add(&blob(&l.descriptor), &mut f, l.descriptor.size as u64).map_err(io)?
            }
        }
    }
    b.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io)?;
    Ok(())
}

/// Reads the image `name` back out of containerd's content store (manifest, config and
/// layers, all in memory) so it can be written with [`write_oci_layout`].
pub async fn export(client: &Client, name: &str) -> Result<PreparedImage, ImageError> {
    let full = normalize_name(name)?;
    let image = client
        .images()
        .get(
            client.request(containerd_client::services::v1::GetImageRequest { name: full.clone() }),
        )
        .await
        .map_err(crate::containerd::ContainerdError::rpc("images.get"))?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| ImageError::Invalid {
            what: format!("image `{full}`"),
            reason: "record has no target".into(),
        })?;
    let manifest = super::store::read_blob(client, &image.digest).await?;
    let parsed: Manifest = serde_json::from_slice(&manifest).map_err(|e| ImageError::Invalid {
        what: format!("manifest {}", image.digest),
        reason: e.to_string(),
    })?;
    let config = super::store::read_blob(client, &parsed.config.digest).await?;
    let config_file: ImageConfigFile =
        serde_json::from_slice(&config).map_err(|e| ImageError::Invalid {
            what: format!("config {}", parsed.config.digest),
            reason: e.to_string(),
        })?;
    let mut layers = Vec::new();
    for (l, diff_id) in parsed.layers.iter().zip(&config_file.rootfs.diff_ids) {
        layers.push(LayerSource {
            descriptor: l.clone(),
            diff_id: diff_id.clone(),
            source: BlobSource::Bytes(super::store::read_blob(client, &l.digest).await?),
        });
    }
    Ok(PreparedImage {
        manifest_descriptor: Descriptor {
            media_type: image.media_type,
            digest: image.digest,
            size: image.size,
            annotations: Default::default(),
            platform: None,
        },
        manifest,
        config_descriptor: parsed.config.clone(),
        config,
        config_file,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_image(dir: &Path) -> PreparedImage {
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), b"sandbox\n").unwrap();
        let layer = super::super::layer::write_layer(&root, &dir.join("layer.tar"), false).unwrap();
        let recipe = super::super::build::recipe("busybox")
            .unwrap()
            .parse()
            .unwrap();
        let (config, config_descriptor, config_file, manifest, manifest_descriptor) =
            super::super::build::image_documents(
                &recipe,
                "busybox",
                &layer.descriptor,
                &layer.diff_id,
            );
        PreparedImage {
            manifest,
            manifest_descriptor,
            config,
            config_descriptor,
            config_file,
            layers: vec![LayerSource {
                descriptor: layer.descriptor,
                diff_id: layer.diff_id,
                source: BlobSource::File(layer.path),
            }],
        }
    }

    #[test]
    fn an_oci_layout_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let image = tiny_image(d.path());
        let tarball = d.path().join("image.tar");
        write_oci_layout(&tarball, "stockade/tiny:1", &image).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        unpack_archive(&tarball, &out).unwrap();
        let found = read_layout(&tarball, &out).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].names, vec!["stockade/tiny:1"]);
        assert_eq!(
            found[0].image.manifest_descriptor,
            image.manifest_descriptor
        );
        assert_eq!(found[0].image.config, image.config);
        assert_eq!(found[0].image.layers[0].diff_id, image.layers[0].diff_id);
    }

    #[test]
    fn a_tampered_blob_is_named() {
        let d = tempfile::tempdir().unwrap();
        let image = tiny_image(d.path());
        let tarball = d.path().join("image.tar");
        write_oci_layout(&tarball, "stockade/tiny:1", &image).unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        unpack_archive(&tarball, &out).unwrap();
        let layer = out.join(format!(
            "blobs/sha256/{}",
            &image.layers[0].descriptor.digest[7..]
        ));
        let mut bytes = std::fs::read(&layer).unwrap();
        bytes[600] ^= 1;
        std::fs::write(&layer, bytes).unwrap();
        let err = read_layout(&tarball, &out).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&image.layers[0].descriptor.digest));
    }

    #[test]
    fn blobs_must_be_regular_files_inside_the_archive() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("blobs/sha256/link")).unwrap();
        let a = Path::new("x.tar");
        assert!(regular_file(a, d.path(), "blobs/sha256/link").is_err());
        assert!(regular_file(a, d.path(), "../etc/passwd").is_err());
        assert!(regular_file(a, d.path(), "/etc/passwd").is_err());
        assert!(blob_path(a, d.path(), "sha256:../../x").is_err());
    }

    #[test]
    fn neither_layout_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let err = read_layout(Path::new("x.tar"), d.path()).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("x.tar: neither an OCI image layout"));
    }

    #[test]
    fn entry_names_prefer_the_full_name_and_ignore_bare_tags() {
        let mut d = Descriptor::new(MEDIA_MANIFEST, b"m");
        assert!(entry_names(&d).is_empty());
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), "latest".into());
        assert!(entry_names(&d).is_empty());
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), "busybox:1".into());
        assert_eq!(entry_names(&d), vec!["stockade/busybox:1"]);
        d.annotations.insert(
            ANNOTATION_CONTAINERD_NAME.into(),
            "docker.io/library/busybox:1".into(),
        );
        assert_eq!(entry_names(&d), vec!["docker.io/library/busybox:1"]);
    }
}
