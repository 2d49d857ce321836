//! `stockade image import` reading through links of the outer archive: an archive that
//! links `blobs` to a root-only directory must not import the private image kept there,
//! and one that links `x` to `/` must not tell whether a host file exists.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;

use crate::ensure;
use crate::harness::{case, run_guarded, Case, CaseResult, Daemon, Finished};

const GUARD: Duration = Duration::from_secs(120);

/// The cases of this file.
pub fn cases() -> Vec<Case> {
    vec![
        case("escape::image_import_blobs_linked_to_a_private_dir", |d| {
            blobs_linked_to_a_private_dir(d)
        }),
        case("escape::image_import_probe_through_a_root_link", |d| {
            probe_through_a_root_link(d)
        }),
    ]
}

/// One entry of an outer archive.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn tar_of(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match e {
            Entry::File(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data)
            }
            Entry::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target)
            }
        }
        .map_err(|e| e.to_string())?;
    }
    b.into_inner().map_err(|e| e.to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn import(d: &Daemon, archive: &Path) -> Result<Finished, String> {
    let out = run_guarded(
        d.stockade(&["image", "import", archive.to_str().unwrap()]),
        GUARD,
    )?;
    eprintln!(
        "image import {}: exit {:?}: {}",
        archive.display(),
        out.code,
        out.stderr_text().trim()
    );
    Ok(out)
}

fn image_names(d: &Daemon) -> Result<String, String> {
    let out = run_guarded(d.stockade(&["image", "ls"]), GUARD)?;
    ensure!(
        out.code == Some(0),
        "image ls failed: {}",
        out.stderr_text()
    );
    Ok(out.stdout_text())
}

/// (a) A valid image sits in a root-only directory (its blobs named by digest, as a
/// registry's or another user's store would keep them). An OCI archive holding only
/// `oci-layout`, an `index.json` naming that image's manifest, and `blobs` linked to the
/// directory must be refused, and no image of that name may exist afterwards.
fn blobs_linked_to_a_private_dir(d: &Arc<Daemon>) -> CaseResult {
    let private = tempfile::Builder::new()
        .prefix("stk-sec-private-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let layer = tar_of(&[Entry::File("private-marker", b"private image content\n")])?;
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))]},
        "config": {"Cmd": ["/private-marker"]}
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(config.as_bytes())),
                   "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{}", sha256_hex(&layer)),
                    "size": layer.len()}]
    })
    .to_string();
    let store = private.path().join("sha256");
    std::fs::create_dir(&store).map_err(|e| e.to_string())?;
    for blob in [&layer[..], config.as_bytes(), manifest.as_bytes()] {
        std::fs::write(store.join(sha256_hex(blob)), blob).map_err(|e| e.to_string())?;
    }
    let name = "stk-sec/stolen:1";
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(manifest.as_bytes())),
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name}
        }]
    })
    .to_string();
    let work = tempfile::Builder::new()
        .prefix("stk-sec-import-links-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let archive = work.path().join("blobs-linked.tar");
    let target = private.path().to_str().unwrap();
    std::fs::write(
        &archive,
        tar_of(&[
            Entry::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            Entry::File("index.json", index.as_bytes()),
            Entry::Symlink("blobs", target),
        ])?,
    )
    .map_err(|e| e.to_string())?;

    let out = import(d, &archive)?;
    let listed = image_names(d)?;
    if listed.contains("stk-sec/stolen") {
        let _ = run_guarded(d.stockade(&["image", "rm", name]), GUARD);
    }
    ensure!(
        out.code == Some(125),
        "THE PRIVATE IMAGE WAS IMPORTED through `blobs -> {target}`: exit {:?}: {}",
        out.code,
        out.stdout_text().trim()
    );
    let err = out.stderr_text();
    ensure!(
        err.trim().lines().count() == 1 && err.contains("entry `blobs`"),
        "the refusal must be one line naming the entry `blobs`, got: {err}"
    );
    ensure!(
        !listed.contains("stk-sec/stolen"),
        "an image named from the archive exists after the refused import:\n{listed}"
    );
    Ok(())
}

/// (b) A docker-save archive links `x` to `/` and names `x/<host path>` as its config and
/// layer. The import must answer the same (exit code and message) whether that host file
/// exists or not: the same archive is imported with the file present, then absent.
fn probe_through_a_root_link(d: &Arc<Daemon>) -> CaseResult {
    let hidden = tempfile::Builder::new()
        .prefix("stk-sec-probed-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    std::fs::set_permissions(hidden.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let probed = hidden.path().join("probed-file");
    let via_link = format!("x{}", probed.display());
    let manifest = serde_json::json!([{
        "Config": via_link, "RepoTags": ["stk-sec/probe:1"], "Layers": [via_link]
    }])
    .to_string();
    let work = tempfile::Builder::new()
        .prefix("stk-sec-import-links-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let archive = work.path().join("root-link.tar");
    std::fs::write(
        &archive,
        tar_of(&[
            Entry::File("manifest.json", manifest.as_bytes()),
            Entry::Symlink("x", "/"),
        ])?,
    )
    .map_err(|e| e.to_string())?;

    std::fs::write(&probed, br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#)
        .map_err(|e| e.to_string())?;
    let present = import(d, &archive)?;
    std::fs::remove_file(&probed).map_err(|e| e.to_string())?;
    let absent = import(d, &archive)?;

    let answer = |o: &Finished| (o.code, o.stderr_text().trim().to_string());
    ensure!(
        answer(&present) == answer(&absent),
        "THE IMPORT TELLS WHETHER A HOST FILE EXISTS:\n  present: {:?}\n  absent:  {:?}",
        answer(&present),
        answer(&absent)
    );
    ensure!(
        present.code == Some(125) && present.stderr_text().trim().lines().count() == 1,
        "the import must be refused with exit 125 and one line, got {:?}: {}",
        present.code,
        present.stderr_text()
    );
    Ok(())
}
