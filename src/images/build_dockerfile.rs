//! `stockade image build -f Dockerfile -t NAME CONTEXT`: a Dockerfile ([`super::dockerfile`])
//! built step by step on containerd snapshots.
//!
//! `FROM` starts from a local image (pulled through [`super::registry`] when it is not
//! there) or from `scratch`. Each `RUN` runs in a one-shot sandbox on the current snapshot
//! ([`super::build_step`]) and each `COPY`/`ADD` becomes a layer tarball of context files
//! ([`super::build_context`]); the layer is applied on the parent and committed as the next
//! snapshot, named by its chain id. The other instructions change only the image config
//! (`ENV`, `ARG`, `WORKDIR`, `USER`, `LABEL`, `EXPOSE`, `CMD`, `ENTRYPOINT`, `SHELL`,
//! `STOPSIGNAL`). The image is stored as `image import` stores one ([`store_image`]).
//!
//! `RUN` runs as the image's `USER` (numeric `UID[:GID]`; none means `0`, as in Docker)
//! with no capabilities, the default seccomp filter, `noNewPrivileges`, network `none` and
//! stockade's default limits; its root filesystem is writable, nothing else of the host is
//! mounted. It sees the config's `ENV` and the build arguments in scope, in `WORKDIR`.
//!
//! The layer cache: a `RUN`, `COPY` or `ADD` is skipped when the same step ran before on
//! the same parent snapshot, with the same config and build arguments (and, for `COPY` and
//! `ADD`, the same source files after `.dockerignore`), and its layer and snapshot are still
//! in containerd. Entries are small JSON files under [`DEFAULT_CACHE_DIR`]`/<namespace>`;
//! an entry whose layer or snapshot containerd has since collected is a miss.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::build_context::{self, ContextError, Ignore};
use super::build_step::{run_step, StepError};
use super::dockerfile::{self, Command, CopySpec, DockerfileError, Instruction};
use super::oci::{
    self, chain_ids, Descriptor, History, ImageConfigFile, Manifest, RootFs, RuntimeConfig,
    MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
};
use super::registry::RegistryOptions;
use super::store::{self, store_image, BlobSource, LayerSource, Lease, PreparedImage};
use super::{ImageError, ImageRef, Progress, SNAPSHOTTER};
use crate::containerd::Client;
use crate::policy::{HostPolicyEnv, Policy, PolicyOverrides};
use crate::runner::{RunRequest, Runner};

/// Where the layer cache's entries live by default (one directory per namespace).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/stockade/build-cache";

mod layers;

/// The shell of `RUN`, `CMD` and `ENTRYPOINT` in shell form when no `SHELL` says otherwise.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// A Dockerfile build.
#[derive(Debug, Clone)]
pub struct DockerfileBuild {
    /// The Dockerfile (named in errors as given).
    pub dockerfile: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// The image name (`-t`); not in the built-in repository.
    pub name: String,
    /// `--build-arg K=V`, in order.
    pub build_args: Vec<(String, String)>,
    /// Run every step, consulting no cache (entries are still written).
    pub no_cache: bool,
    /// The cache directory (default [`DEFAULT_CACHE_DIR`]).
    pub cache_dir: PathBuf,
    /// Where layer tarballs are written while building.
    pub scratch: PathBuf,
    /// How to pull a `FROM` image that is not here.
    pub registry: RegistryOptions,
}

/// Why a build failed. Each renders as one line.
#[derive(Debug, Error)]
pub enum BuildError {
    /// A Dockerfile line (also: a step refused or failing at that line).
    #[error(transparent)]
    Line(#[from] DockerfileError),
    /// A `RUN` exited non-zero; its output was reported through the progress.
    #[error("{at}: RUN exited with {code}: {last}")]
    RunFailed {
        /// `FILE:LINE`.
        at: String,
        /// Its exit code.
        code: u8,
        /// The last line it wrote.
        last: String,
        /// Everything it wrote.
        output: String,
    },
    /// Reading the Dockerfile.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Storing the image, or a containerd call outside any one step.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// What one instruction did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Its line.
    pub line: usize,
    /// It as written.
    pub text: String,
    /// For a layer step: whether the cache had it.
    pub cached: Option<bool>,
    /// Seconds it took.
    pub seconds: f64,
}

/// What a build made.
#[derive(Debug, Clone, Serialize)]
pub struct DockerfileReport {
    /// The stored image.
    pub image: ImageRef,
    /// Every instruction after `FROM`, in order.
    pub steps: Vec<StepReport>,
}

/// The image being built.
struct State {
    config: RuntimeConfig,
    /// Declared `ARG`s in scope and their values.
    args: Vec<(String, String)>,
    layers: Vec<LayerSource>,
    history: Vec<History>,
    /// Chain id of the current snapshot (empty for `scratch` with no layer yet).
    chain: String,
    /// `CMD` was set by this Dockerfile (so a later `ENTRYPOINT` keeps it).
    cmd_set: bool,
}

impl State {
    fn var(&self, name: &str) -> Option<String> {
        let env = self.config.env.iter().rev().find_map(|e| {
            let (k, v) = e.split_once('=')?;
            (k == name).then(|| v.to_string())
        });
        env.or_else(|| {
            self.args
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.config
            .env
            .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        self.config.env.push(format!("{key}={value}"));
    }

    fn workdir(&self) -> String {
        if self.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            self.config.working_dir.clone()
        }
    }
}

/// Builds `req` and stores the image; `runner` runs the `RUN` steps (it must resolve
/// images as snapshot keys, [`crate::runner::SnapshotImages`], and leave cleanup to its
/// caller, [`crate::runner::CleanupMode::Caller`]). Everything a step makes is removed on
/// every path; the build's intermediate snapshots and blobs are held by a lease until the
/// image record holds them.
pub async fn build_dockerfile(
    client: &Client,
    runner: &Runner,
    req: &DockerfileBuild,
    progress: &dyn Progress,
) -> Result<DockerfileReport, BuildError> {
    let file = req.dockerfile.display().to_string();
    let text = std::fs::read_to_string(&req.dockerfile).map_err(|source| BuildError::Io {
        path: req.dockerfile.clone(),
        source,
    })?;
    let df = dockerfile::parse(&file, &text)?;
    let name = super::user_image_name(&req.name, "choose another name with -t")?;
    let ignore = Ignore::read(&req.context)
        .map_err(|e| DockerfileError::at(&file, df.from_line, e.to_string()))?;
    std::fs::create_dir_all(&req.scratch).map_err(|source| BuildError::Io {
        path: req.scratch.clone(),
        source,
    })?;
    let scratch = tempfile::Builder::new()
        .prefix("stockade-build-")
        .tempdir_in(&req.scratch)
        .map_err(|source| BuildError::Io {
            path: req.scratch.clone(),
            source,
        })?;
    let lease = Lease::create(client).await?;
    let lc = client.with_lease(Some(lease.id().to_string()));
    let built = Builder {
        client,
        lc: &lc,
        runner,
        req,
        df: &df,
        ignore: &ignore,
        scratch: scratch.path(),
        progress,
    }
    .build(&name)
    .await;
    // Once the image record exists it holds everything; on failure, what the steps
    // committed stays for the cache until containerd collects it.
    if let Err(e) = lease.delete().await {
        tracing::warn!("deleting the build's lease: {e}");
    }
    built
}

struct Builder<'a> {
    client: &'a Client,
    lc: &'a Client,
    runner: &'a Runner,
    req: &'a DockerfileBuild,
    df: &'a dockerfile::Dockerfile,
    ignore: &'a Ignore,
    scratch: &'a Path,
    progress: &'a dyn Progress,
}

/// Numeric `UID[:GID]` of a `USER` or `--chown` (empty and `root` are `0`).
fn numeric_user(s: &str) -> Result<(u32, Option<u32>), String> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let id = |p: &str| match p {
        "" | "root" => Some(0),
        n => n.parse::<u32>().ok().filter(|n| *n != u32::MAX),
    };
    let uid = id(u)
        .ok_or_else(|| format!("user `{s}`: only numeric UID[:GID] (or root) is supported"))?;
    let gid =
        match g {
            Some(g) => Some(id(g).ok_or_else(|| {
                format!("user `{s}`: only numeric UID[:GID] (or root) is supported")
            })?),
            None => None,
        };
    Ok((uid, gid))
}

impl Builder<'_> {
    fn at(&self, line: usize, reason: impl std::fmt::Display) -> BuildError {
        DockerfileError::at(&self.df.file, line, reason.to_string()).into()
    }

    fn expand(&self, state: &State, word: &str, line: usize) -> Result<String, BuildError> {
        let vars = |n: &str| state.var(n);
        dockerfile::words::expand(word, &vars, self.df.directives.escape, &mut Vec::new())
            .map_err(|e| self.at(line, e))
    }

    fn build_arg(&self, name: &str) -> Option<String> {
        self.req
            .build_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    async fn build(&self, name: &str) -> Result<DockerfileReport, BuildError> {
        let mut state = self.from().await?;
        let mut steps = Vec::new();
        for step in &self.df.steps {
            let t = Instant::now();
            self.progress.line(&format!("#{} {}", step.line, step.text));
            let cached = self.step(&mut state, step).await?;
            if cached == Some(true) {
                self.progress.line(&format!("#{} CACHED", step.line));
            }
            state.history.push(History {
                created: Some(EPOCH.to_string()),
                created_by: Some(step.text.clone()),
                comment: Some("stockade image build".to_string()),
                empty_layer: cached.is_none().then_some(true),
            });
            steps.push(StepReport {
                line: step.line,
                text: step.text.clone(),
                cached,
                seconds: t.elapsed().as_secs_f64(),
            });
        }
        for (k, _) in &self.req.build_args {
            let declared = self.df.global_args.iter().any(|(n, _)| n == k)
                || state.args.iter().any(|(n, _)| n == k);
            if !declared {
                self.progress.line(&format!(
                    "warning: --build-arg {k}: no ARG {k} in the Dockerfile"
                ));
            }
        }
        if state.layers.is_empty() {
            return Err(self.at(
                self.df.from_line,
                "the image has no layers (FROM scratch needs a COPY or ADD)",
            ));
        }
        let image = self.store(name, state).await?;
        Ok(DockerfileReport { image, steps })
    }

    /// The state `FROM` starts with.
    async fn from(&self) -> Result<State, BuildError> {
        let line = self.df.from_line;
        let globals: Vec<(String, String)> = self
            .df
            .global_args
            .iter()
            .filter_map(|(k, d)| Some((k.clone(), self.build_arg(k).or_else(|| d.clone())?)))
            .collect();
        let mut state = State {
            config: RuntimeConfig::default(),
            args: globals,
            layers: Vec::new(),
            history: Vec::new(),
            chain: String::new(),
            cmd_set: false,
        };
        let image = self.expand(&state, &self.df.from, line)?;
        state.args.clear();
        if image == "scratch" {
            return Ok(state);
        }
        let found = match super::resolve(self.client, &image).await {
            Ok(r) => r,
            Err(ImageError::NotFound { .. }) => {
                self.progress.line(&format!("#{line} pulling {image}"));
                super::registry::pull(self.client, &image, &self.req.registry, self.progress)
                    .await
                    .map_err(|e| self.at(line, format!("FROM {image}: {e}")))?
            }
            Err(e) => return Err(self.at(line, format!("FROM {image}: {e}"))),
        };
        let bad = |e: String| self.at(line, format!("FROM {image}: {e}"));
        let bytes = store::read_blob(self.client, &found.manifest_digest).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let bytes = store::read_blob(self.client, &manifest.config.digest).await?;
        let file: ImageConfigFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if file.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(bad("its config and manifest disagree on the layers".into()));
        }
        state.layers = manifest
            .layers
            .iter()
            .zip(&file.rootfs.diff_ids)
            .map(|(d, id)| LayerSource {
                descriptor: d.clone(),
                diff_id: id.clone(),
                source: BlobSource::Bytes(Vec::new()),
            })
            .collect();
        state.chain = found.chain_id;
        state.config = file.config;
        state.history = file.history;
        Ok(state)
    }

    /// Applies one instruction; for a layer step, whether the cache had it.
    async fn step(
        &self,
        state: &mut State,
        step: &dockerfile::Step,
    ) -> Result<Option<bool>, BuildError> {
        let line = step.line;
        match &step.instruction {
            Instruction::From(_) => return Err(self.at(line, "a second FROM")),
            Instruction::Env(pairs) => {
                // Every pair sees the environment from before the instruction.
                let mut set = Vec::new();
                for (k, v) in pairs {
                    set.push((self.expand(state, k, line)?, self.expand(state, v, line)?));
                }
                for (k, v) in set {
                    state.set_env(&k, &v);
                }
            }
            Instruction::Arg(decls) => {
                for (k, default) in decls {
                    let global = self
                        .df
                        .global_args
                        .iter()
                        .find(|(n, _)| n == k)
                        .and_then(|(_, d)| d.clone());
                    let value = match self.build_arg(k) {
                        Some(v) => Some(v),
                        None => match default {
                            Some(d) => Some(self.expand(state, d, line)?),
                            None => global,
                        },
                    };
                    state.args.retain(|(n, _)| n != k);
                    if let Some(v) = value {
                        state.args.push((k.clone(), v));
                    }
                }
            }
            Instruction::Workdir(w) => {
                let w = self.expand(state, w, line)?;
                state.config.working_dir = absolute(&state.workdir(), &w);
            }
            Instruction::User(u) => {
                let u = self.expand(state, u, line)?;
                numeric_user(&u).map_err(|e| self.at(line, format!("USER: {e}")))?;
                state.config.user = u;
            }
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    let (k, v) = (self.expand(state, k, line)?, self.expand(state, v, line)?);
                    state.config.labels.insert(k, v);
                }
            }
            Instruction::Expose(ports) => {
                for p in ports {
                    let p = self.expand(state, p, line)?;
                    let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(self.at(line, format!("EXPOSE `{p}`: not PORT[/tcp|udp|sctp]")));
                    }
                    state
                        .config
                        .exposed_ports
                        .insert(format!("{num}/{proto}"), serde_json::json!({}));
                }
            }
            Instruction::Cmd(c) => {
                state.config.cmd = self.argv(state, c);
                state.cmd_set = true;
            }
            Instruction::Entrypoint(c) => {
                state.config.entrypoint = self.argv(state, c);
                // As Docker: an ENTRYPOINT drops a CMD inherited from the base image.
                if !state.cmd_set {
                    state.config.cmd.clear();
                }
            }
            Instruction::Shell(s) => state.config.shell = s.clone(),
            Instruction::StopSignal(s) => state.config.stop_signal = self.expand(state, s, line)?,
            Instruction::Run(c) => return self.run(state, step, c).await.map(Some),
            Instruction::Copy(spec) => return self.copy(state, step, spec, false).await.map(Some),
            Instruction::Add(spec) => return self.copy(state, step, spec, true).await.map(Some),
        }
        Ok(None)
    }

    fn argv(&self, state: &State, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v: Vec<String> = if state.config.shell.is_empty() {
                    DEFAULT_SHELL.iter().map(ToString::to_string).collect()
                } else {
                    state.config.shell.clone()
                };
                v.push(s.clone());
                v
            }
        }
    }

    async fn store(&self, name: &str, state: State) -> Result<ImageRef, BuildError> {
        let diff_ids: Vec<String> = state.layers.iter().map(|l| l.diff_id.clone()).collect();
        let config_file = ImageConfigFile {
            created: Some(EPOCH.to_string()),
            architecture: oci::host_architecture().to_string(),
            os: "linux".to_string(),
            config: state.config,
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids,
            },
            history: state.history,
        };
        let config = serde_json::to_vec(&config_file).unwrap_or_default();
        let config_descriptor = Descriptor::new(MEDIA_CONFIG, &config);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.to_string()),
            config: config_descriptor.clone(),
            layers: state.layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations: Default::default(),
        };
        let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
        let prepared = PreparedImage {
            manifest_descriptor: Descriptor::new(MEDIA_MANIFEST, &manifest),
            manifest,
            config,
            config_descriptor,
            config_file,
            layers: state.layers,
        };
        Ok(store_image(self.client, name, &prepared, self.progress).await?)
    }
}

/// Fixed creation time of built images and their history: an unchanged rebuild gives the
/// same manifest digest.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// The chain id of `diff_id` on `parent` (empty: the first layer).
fn next_chain(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        diff_id.to_string()
    } else {
        chain_ids(&[parent.to_string(), diff_id.to_string()])
            .pop()
            .unwrap_or_default()
    }
}

/// `path` made absolute against `base` and cleaned.
fn absolute(base: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let comps: Vec<String> = build_context::clean(&joined)
        .into_iter()
        .filter(|c| c != "..")
        .collect();
    format!("/{}", comps.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numeric_or_root() {
        assert_eq!(numeric_user(""), Ok((0, None)));
        assert_eq!(numeric_user("root"), Ok((0, None)));
        assert_eq!(numeric_user("1000:100"), Ok((1000, Some(100))));
        assert!(numeric_user("app").unwrap_err().contains("only numeric"));
        assert!(numeric_user("4294967295").is_err());
    }

    #[test]
    fn paths_are_made_absolute_against_the_workdir() {
        assert_eq!(absolute("/", "app"), "/app");
        assert_eq!(absolute("/app", "sub/../x"), "/app/x");
        assert_eq!(absolute("/app", "/abs"), "/abs");
        assert_eq!(absolute("/", "../../etc"), "/etc");
    }

    #[test]
    fn chains_follow_the_image_spec() {
        let a = oci::sha256_digest(b"a");
        let b = oci::sha256_digest(b"b");
        assert_eq!(next_chain("", &a), a);
        assert_eq!(next_chain(&a, &b), chain_ids(&[a.clone(), b.clone()])[1]);
    }
}
