//! `stockade image build NAME`: a base image from a recipe in `rootfs/` (a TOML file saying
//! what to run and how the image runs, plus a shell script that fills the root filesystem
//! from Debian packages). The recipes are compiled into the binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use super::layer::{write_layer, LayerBlob};
use super::oci::{
    self, Descriptor, History, ImageConfigFile, Manifest, RootFs, RuntimeConfig, MEDIA_CONFIG,
    MEDIA_MANIFEST,
};
use super::reference::{builtin_name, Reference};
use super::store::{store_image, BlobSource, LayerSource, PreparedImage};
use super::{ImageError, ImageRef, Progress};
use crate::containerd::Client;

/// A recipe as compiled in: its name, TOML and script.
#[derive(Clone, Copy, Debug)]
pub struct Recipe {
    /// The recipe's name (`busybox`), also the built-in image's (`stockade/busybox`).
    pub name: &'static str,
    /// The text of `rootfs/<name>.toml` ([`RecipeFile`]).
    pub toml: &'static str,
    /// The text of `rootfs/<name>.sh`, run with the root filesystem directory as `$1`.
    pub script: &'static str,
}

/// The recipes in `rootfs/`.
pub const RECIPES: &[Recipe] = &[
    Recipe {
        name: "busybox",
        toml: include_str!("../../rootfs/busybox.toml"),
        script: include_str!("../../rootfs/busybox.sh"),
    },
    Recipe {
        name: "python",
        toml: include_str!("../../rootfs/python.toml"),
        script: include_str!("../../rootfs/python.sh"),
    },
    Recipe {
        name: "node",
        toml: include_str!("../../rootfs/node.toml"),
        script: include_str!("../../rootfs/node.sh"),
    },
];

/// The recipe called `name`.
pub fn recipe(name: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name)
}

/// A recipe's TOML file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    /// One line for `image ls` and history.
    pub description: String,
    /// The script's file name in `rootfs/` (for the record; the text is compiled in).
    pub script: String,
    /// Layer compression: `none` (default: containerd applies it fastest) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// The image's runtime defaults.
    #[serde(default)]
    pub config: super::ImageConfig,
}

/// How a recipe's layer is stored (`compression` in its TOML).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain tar (the default).
    #[default]
    None,
    /// A gzip-compressed tar.
    Gzip,
}

impl Recipe {
    /// The recipe's TOML, parsed; [`ImageError::Recipe`] names the file when it does not
    /// parse.
    pub fn parse(&self) -> Result<RecipeFile, ImageError> {
        toml::from_str(self.toml).map_err(|e| ImageError::Recipe {
            name: self.name.to_string(),
            reason: format!("rootfs/{}.toml: {}", self.name, e.message()),
        })
    }
}

/// What a build needs from the host; [`BuildHost::system`] gives this host's.
#[derive(Clone, Debug)]
pub struct BuildHost {
    /// Where the scratch directory (root filesystem, layer) is made.
    pub scratch: PathBuf,
    /// apt's source lists, read to find the Debian mirror and suite.
    pub apt_sources: Vec<PathBuf>,
    /// `/etc/os-release`, for the suite when apt's sources do not say.
    pub os_release: PathBuf,
    /// The busybox the busybox recipe copies.
    pub busybox: PathBuf,
    /// `/proc/self/mountinfo`, to make sure nothing is mounted in scratch before removing it.
    pub mountinfo: PathBuf,
}

impl BuildHost {
    /// scratch `$TMPDIR` (else /var/tmp), `/etc/apt/sources.list` and
    /// `/etc/apt/sources.list.d/*.{list,sources}`, `/etc/os-release`, `/bin/busybox`.
    pub fn system() -> BuildHost {
        let mut apt_sources = vec![PathBuf::from("/etc/apt/sources.list")];
        if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
            let mut more: Vec<PathBuf> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
                .collect();
            more.sort();
            apt_sources.extend(more);
        }
        BuildHost {
            scratch: std::env::var_os("TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp")),
            apt_sources,
            os_release: PathBuf::from("/etc/os-release"),
            busybox: PathBuf::from("/bin/busybox"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }

    /// The Debian mirror and suite apt uses on this host.
    pub fn debian_source(&self) -> (String, String) {
        let texts: Vec<String> = self
            .apt_sources
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect();
        let os_release = std::fs::read_to_string(&self.os_release).unwrap_or_default();
        let fallback_suite = os_release
            .lines()
            .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
            .map(|s| s.trim_matches('"').to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "bookworm".to_string());
        texts
            .iter()
            .find_map(|t| debian_mirror(t))
            .unwrap_or_else(|| ("http://deb.debian.org/debian".to_string(), fallback_suite))
    }
}

/// The first main Debian archive (not security, updates or backports) in an apt sources
/// file, one-line (`deb URI SUITE COMPONENTS`) or deb822 (`URIs:` / `Suites:`) format.
pub fn debian_mirror(text: &str) -> Option<(String, String)> {
    let main_suite = |s: &str| !s.contains('-') && !s.contains('/');
    // One-line format.
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            if main_suite(suite) {
                return Some((uri.to_string(), suite.to_string()));
            }
        }
    }
    // deb822: paragraphs separated by blank lines.
    for para in text.split("\n\n") {
        let field = |name: &str| {
            para.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
        };
        let types = field("Types").unwrap_or_default();
        if !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        if field("Enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if let (Some(uri), Some(suite)) = (
            uris.split_whitespace().next(),
            suites.split_whitespace().find(|s| main_suite(s)),
        ) {
            return Some((uri.to_string(), suite.to_string()));
        }
    }
    None
}

/// The image of a recipe's one layer, ready to store: the layer blob as written, and a
/// config and manifest that are deterministic (fixed `created`).
pub fn prepared_image(recipe: &RecipeFile, recipe_name: &str, layer: &LayerBlob) -> PreparedImage {
    let epoch = "1970-01-01T00:00:00Z".to_string();
    let config_file = ImageConfigFile {
        created: Some(epoch.clone()),
        architecture: oci::host_architecture().to_string(),
        os: "linux".to_string(),
        config: RuntimeConfig {
            user: recipe.config.user.clone(),
            env: recipe.config.env.clone(),
            entrypoint: recipe.config.entrypoint.clone(),
            cmd: recipe.config.cmd.clone(),
            working_dir: recipe.config.working_dir.clone(),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: Some(epoch),
            created_by: Some(format!(
                "stockade image build {recipe_name} (rootfs/{})",
                recipe.script
            )),
            comment: Some(recipe.description.clone()),
            empty_layer: None,
        }],
    };
    let config = serde_json::to_vec(&config_file).unwrap_or_default();
    let config_descriptor = Descriptor::new(MEDIA_CONFIG, &config);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.to_string()),
        config: config_descriptor.clone(),
        layers: vec![layer.descriptor.clone()],
        annotations: Default::default(),
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    PreparedImage {
        manifest_descriptor: Descriptor::new(MEDIA_MANIFEST, &manifest),
        manifest,
        config_descriptor,
        config,
        config_file,
        layers: vec![LayerSource {
            descriptor: layer.descriptor.clone(),
            diff_id: layer.diff_id.clone(),
            source: BlobSource::File(layer.path.clone()),
        }],
    }
}

/// What a build did, for the command's summary.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The image stored.
    pub image: ImageRef,
    /// Bytes of the layer blob as stored (compressed when the recipe says `gzip`).
    pub layer_size: u64,
    /// Bytes of the layer's uncompressed tar.
    pub uncompressed_size: u64,
    /// Entries in the layer.
    pub entries: u64,
    /// Seconds the recipe's script took to fill the root filesystem.
    pub seconds_rootfs: f64,
    /// Seconds taken to write the layer.
    pub seconds_layer: f64,
    /// Seconds taken to store the image in containerd and unpack it.
    pub seconds_store: f64,
}

/// Builds the recipe `recipe_name` and stores it as `image_name` (default: the built-in
/// name `stockade/<recipe>`, i.e. `docker.io/stockade/<recipe>:latest`). The scratch directory is removed whatever happens; when the recipe
/// fails its log is kept at `<scratch>/stockade-build-<recipe>.log`.
pub async fn build(
    client: &Client,
    recipe_name: &str,
    image_name: Option<&str>,
    host: &BuildHost,
    progress: &dyn Progress,
) -> Result<BuildReport, ImageError> {
    let recipe = recipe(recipe_name).ok_or_else(|| ImageError::UnknownRecipe {
        name: recipe_name.to_string(),
        known: RECIPES
            .iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let parsed = recipe.parse()?;
    let name = match image_name {
        None => builtin_name(recipe.name),
        Some(n) => {
            let r = Reference::parse(n)?;
            // A built-in name belongs to its own recipe.
            if r.is_builtin() && r.repository() != format!("stockade/{}", recipe.name) {
                return Err(ImageError::Reserved {
                    name: r.familiar(),
                    hint: format!("the recipe {} builds stockade/{}", recipe.name, recipe.name),
                });
            }
            r.canonical()
        }
    };
    std::fs::create_dir_all(&host.scratch).map_err(|source| ImageError::Io {
        path: host.scratch.clone(),
        source,
    })?;
    let scratch = tempfile::Builder::new()
        .prefix("stockade-build-")
        .tempdir_in(&host.scratch)
        .map_err(|source| ImageError::Io {
            path: host.scratch.clone(),
            source,
        })?;
    let result = build_in(
        client,
        recipe,
        &parsed,
        &name,
        host,
        scratch.path(),
        progress,
    )
    .await;
    // A recipe that left something mounted in scratch must not make us delete through it.
    if let Ok(points) = crate::containerd::daemon::unmount_under(&host.mountinfo, scratch.path()) {
        if !points.is_empty() {
            tracing::warn!(
                "unmounted {} leftover mounts under {}",
                points.len(),
                scratch.path().display()
            );
        }
    }
    result
}

async fn build_in(
    client: &Client,
    recipe: &Recipe,
    parsed: &RecipeFile,
    name: &str,
    host: &BuildHost,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<BuildReport, ImageError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    let rootfs = scratch.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(io(&rootfs))?;
    let script = scratch.join(&parsed.script);
    std::fs::write(&script, recipe.script).map_err(io(&script))?;
    let log = scratch.join("build.log");
    let log_file = std::fs::File::create(&log).map_err(io(&log))?;
    let log_err = log_file.try_clone().map_err(io(&log))?;
    let (mirror, suite) = host.debian_source();

    progress.stage(&format!(
        "running rootfs/{} ({})",
        parsed.script, parsed.description
    ));
    let t0 = Instant::now();
    let status = tokio::process::Command::new("/bin/sh")
        .arg(&script)
        .arg(&rootfs)
        .env("STOCKADE_BUSYBOX", &host.busybox)
        .env("STOCKADE_MIRROR", &mirror)
        .env("STOCKADE_SUITE", &suite)
        .stdin(std::process::Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .status()
        .await
        .map_err(io(Path::new("/bin/sh")))?;
    let seconds_rootfs = t0.elapsed().as_secs_f64();
    if !status.success() {
        let kept = host
            .scratch
            .join(format!("stockade-build-{}.log", recipe.name));
        let _ = std::fs::copy(&log, &kept);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no output)");
        return Err(ImageError::Recipe {
            name: recipe.name.to_string(),
            reason: format!(
                "rootfs/{} failed ({status}): {last} (log: {})",
                parsed.script,
                kept.display()
            ),
        });
    }

    progress.stage("writing the layer");
    let t1 = Instant::now();
    let gzip = parsed.compression == Compression::Gzip;
    let layer_path = scratch.join("layer.tar");
    let (rootfs2, layer_path2) = (rootfs.clone(), layer_path.clone());
    let layer = tokio::task::spawn_blocking(move || write_layer(&rootfs2, &layer_path2, gzip))
        .await
        .map_err(|e| ImageError::Invalid {
            what: "layer writer".into(),
            reason: e.to_string(),
        })??;
    let seconds_layer = t1.elapsed().as_secs_f64();

    let prepared = prepared_image(parsed, recipe.name, &layer);
    let t2 = Instant::now();
    let image = store_image(client, name, &prepared, progress).await?;
    Ok(BuildReport {
        image,
        layer_size: layer.descriptor.size as u64,
        uncompressed_size: layer.uncompressed_size,
        entries: layer.entries,
        seconds_rootfs,
        seconds_layer,
        seconds_store: t2.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recipe_parses_and_names_its_script() {
        for r in RECIPES {
            let f = r.parse().unwrap();
            assert_eq!(f.script, format!("{}.sh", r.name));
            assert!(!f.config.cmd.is_empty(), "{}", r.name);
            assert!(f.config.env.iter().any(|e| e.starts_with("PATH=")));
            assert!(r.script.starts_with("#!/bin/sh"));
        }
    }

    #[test]
    fn mirror_from_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        let one_line = "# comment\ndeb-src http://x/debian bookworm main\ndeb [arch=amd64 signed-by=/k] http://mirror.example/debian bookworm main\ndeb http://security/ bookworm-security main\n";
        let only_security = "deb http://security/ bookworm-security main\n";
        let disabled = "Types: deb\nEnabled: no\nURIs: http://x/\nSuites: sid\n";
        let cases = [
            (deb822, Some(("http://deb.debian.org/debian", "bookworm"))),
            (one_line, Some(("http://mirror.example/debian", "bookworm"))),
            (only_security, None),
            (disabled, None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = debian_mirror(text);
            assert_eq!(
                got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn prepared_images_are_deterministic_and_consistent() {
        let f = recipe("busybox").unwrap().parse().unwrap();
        let descriptor = Descriptor::new(oci::MEDIA_LAYER_TAR, b"layer");
        let layer = LayerBlob {
            path: PathBuf::from("layer.tar"),
            diff_id: descriptor.digest.clone(),
            descriptor,
            uncompressed_size: 5,
            entries: 0,
        };
        let a = prepared_image(&f, "busybox", &layer);
        let b = prepared_image(&f, "busybox", &layer);
        assert_eq!(a.config, b.config);
        assert_eq!(a.manifest_descriptor, b.manifest_descriptor);
        assert_eq!(
            a.manifest_descriptor,
            Descriptor::new(MEDIA_MANIFEST, &a.manifest)
        );
        assert_eq!(
            a.config_descriptor,
            Descriptor::new(MEDIA_CONFIG, &a.config)
        );
        let m: Manifest = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m.config, a.config_descriptor);
        assert_eq!(m.layers, vec![layer.descriptor.clone()]);
        assert_eq!(a.config_file.rootfs.diff_ids, vec![layer.diff_id.clone()]);
        assert_eq!(a.config_file.config.cmd, vec!["/bin/sh"]);
        assert_eq!(a.layers.len(), 1);
        assert_eq!(a.layers[0].descriptor, layer.descriptor);
        assert!(matches!(&a.layers[0].source, BlobSource::File(p) if *p == layer.path));
    }
}
