//! The layer steps of a Dockerfile build (`RUN`, `COPY`, `ADD`) and the layer cache.

use super::*;

/// A cache entry: the layer a step made.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    layer: Descriptor,
}

impl Builder<'_> {
    pub(super) fn cache_key(&self, state: &State, text: &str, extra: &str) -> String {
        let doc = serde_json::json!({
            "parent": state.chain,
            "config": state.config,
            "args": state.args,
            "step": text,
            "extra": extra,
        });
        crate::digest::sha256_hex(doc.to_string())
    }

    pub(super) fn cache_file(&self, key: &str) -> PathBuf {
        self.req
            .cache_dir
            .join(self.client.namespace())
            .join(format!("{key}.json"))
    }

    /// The cached layer of `key`, when its blob and the snapshot it makes still exist.
    pub(super) async fn cached(
        &self,
        state: &State,
        key: &str,
    ) -> Result<Option<Descriptor>, BuildError> {
        if self.req.no_cache {
            return Ok(None);
        }
        let Ok(bytes) = std::fs::read(self.cache_file(key)) else {
            return Ok(None);
        };
        let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) else {
            return Ok(None);
        };
        if !store::has_blob(self.lc, &entry.layer.digest).await? {
            return Ok(None);
        }
        let chain = next_chain(&state.chain, &entry.layer.digest);
        match store::stat_snapshot(self.lc, &chain).await? {
            Some(i)
                if i.kind == containerd_client::services::v1::snapshots::Kind::Committed as i32 =>
            {
                Ok(Some(entry.layer))
            }
            _ => Ok(None),
        }
    }

    pub(super) fn remember(&self, key: &str, layer: &Descriptor) {
        let path = self.cache_file(key);
        let entry = CacheEntry {
            layer: layer.clone(),
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec(&entry).unwrap_or_default()));
        if let Err(e) = written {
            tracing::warn!("build cache {}: {e}", path.display());
        }
    }

    /// Applies `layer` (an uncompressed layer in the content store) on the current
    /// snapshot, commits it, and makes it the image's next layer.
    pub(super) async fn push_layer(
        &self,
        state: &mut State,
        layer: Descriptor,
    ) -> Result<(), BuildError> {
        let chain = next_chain(&state.chain, &layer.digest);
        let source = LayerSource {
            diff_id: layer.digest.clone(),
            descriptor: layer,
            source: BlobSource::Bytes(Vec::new()),
        };
        store::unpack_layer(self.lc, &source, &source.diff_id, &state.chain, &chain).await?;
        state.chain = chain;
        state.layers.push(source);
        Ok(())
    }

    pub(super) async fn run(
        &self,
        state: &mut State,
        step: &dockerfile::Step,
        c: &Command,
    ) -> Result<bool, BuildError> {
        let line = step.line;
        if state.chain.is_empty() {
            return Err(self.at(line, "RUN on an empty image (FROM scratch has no shell)"));
        }
        let key = self.cache_key(state, &step.text, "");
        if let Some(layer) = self.cached(state, &key).await? {
            self.push_layer(state, layer).await?;
            return Ok(true);
        }
        let argv = self.argv(state, c);
        let (uid, gid) = numeric_user(&state.config.user).map_err(|e| self.at(line, e))?;
        let mut env = state.config.env.clone();
        for (k, v) in &state.args {
            if !env
                .iter()
                .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
            {
                env.push(format!("{k}={v}"));
            }
        }
        let overrides = PolicyOverrides {
            image: Some(state.chain.clone()),
            read_write_root: true,
            network: Some("none".into()),
            env,
            user: Some(match gid {
                Some(g) => format!("{uid}:{g}"),
                None => uid.to_string(),
            }),
            cwd: Some(state.workdir()),
            ..Default::default()
        };
        let policy = Policy::default()
            .validate(None, &overrides, &HostPolicyEnv)
            .map_err(|e| self.at(line, format!("RUN: {e}")))?;
        let made = run_step(
            self.runner,
            self.lc,
            SNAPSHOTTER,
            RunRequest::new(policy, argv),
        )
        .await;
        let made = match made {
            Ok(m) => m,
            Err(StepError::Failed { code, output }) => {
                for l in output.lines() {
                    self.progress.line(l);
                }
                let last = output
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("(no output)")
                    .to_string();
                return Err(BuildError::RunFailed {
                    at: format!("{}:{line}", self.df.file),
                    code,
                    last,
                    output,
                });
            }
            Err(e) => return Err(self.at(line, format!("RUN: {e}"))),
        };
        for l in made.output.lines() {
            self.progress.line(l);
        }
        self.remember(&key, &made.layer);
        self.push_layer(state, made.layer).await?;
        Ok(false)
    }

    pub(super) async fn copy(
        &self,
        state: &mut State,
        step: &dockerfile::Step,
        spec: &CopySpec,
        add: bool,
    ) -> Result<bool, BuildError> {
        let line = step.line;
        let kw = if add { "ADD" } else { "COPY" };
        let ctx_err = |e: ContextError| self.at(line, format!("{kw} {e}"));
        let mut sources = Vec::new();
        for s in &spec.sources {
            let s = self.expand(state, s, line)?;
            if add && (s.contains("://") || s.starts_with("git@")) {
                return Err(self.at(
                    line,
                    format!("ADD {s}: only local files can be added (no URLs)"),
                ));
            }
            sources.push(s);
        }
        let raw_dest = self.expand(state, &spec.dest, line)?;
        let mut dest = absolute(&state.workdir(), &raw_dest);
        if raw_dest.ends_with('/') && !dest.ends_with('/') {
            dest.push('/');
        }
        let owner = match &spec.chown {
            Some(c) => {
                let c = self.expand(state, c, line)?;
                let (u, g) =
                    numeric_user(&c).map_err(|e| self.at(line, format!("{kw} --chown: {e}")))?;
                (u, g.unwrap_or(u))
            }
            None => (0, 0),
        };
        let mut entries = Vec::new();
        let mut plain = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let host = self.req.context.join(s.trim_start_matches('/'));
            if add && !s.contains(['*', '?']) && is_archive(&host) {
                // Checked like any other source before it is opened.
                build_context::collect(
                    &self.req.context,
                    self.ignore,
                    std::slice::from_ref(s),
                    "/x",
                )
                .map_err(ctx_err)?;
                let dir = self.scratch.join(format!("add-{line}-{i}"));
                extract(&host, &dir).map_err(|e| self.at(line, format!("ADD {s}: {e}")))?;
                let mut d = dest.clone();
                if !d.ends_with('/') {
                    d.push('/');
                }
                entries.extend(
                    build_context::collect(&dir, &Ignore::default(), &[".".to_string()], &d)
                        .map_err(ctx_err)?,
                );
            } else {
                plain.push(s.clone());
            }
        }
        if !plain.is_empty() {
            let d = if sources.len() > 1 && !dest.ends_with('/') {
                format!("{dest}/")
            } else {
                dest.clone()
            };
            entries.extend(
                build_context::collect(&self.req.context, self.ignore, &plain, &d)
                    .map_err(ctx_err)?,
            );
        }
        let digest = build_context::digest(&entries).map_err(ctx_err)?;
        let key = self.cache_key(
            state,
            &step.text,
            &format!("{digest} {}:{}", owner.0, owner.1),
        );
        if let Some(layer) = self.cached(state, &key).await? {
            self.push_layer(state, layer).await?;
            return Ok(true);
        }
        let path = self.scratch.join(format!("layer-{line}.tar"));
        let (digest, size) = build_context::write_tar(&entries, owner, &path).map_err(ctx_err)?;
        let layer = Descriptor {
            media_type: MEDIA_LAYER_TAR.to_string(),
            digest,
            size: size as i64,
            annotations: Default::default(),
            platform: None,
        };
        store::write_blob(
            self.lc,
            &layer,
            &BlobSource::File(path.clone()),
            HashMap::new(),
        )
        .await?;
        let _ = std::fs::remove_file(&path);
        self.remember(&key, &layer);
        self.push_layer(state, layer).await?;
        Ok(false)
    }
}

/// A tar archive, plain or gzip-compressed (what `ADD` extracts).
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 262];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar")
}

/// Extracts the archive at `path` into `dir` (entries that would land outside it are
/// refused by the tar reader).
fn extract(path: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = std::io::Read::read(&mut f, &mut magic)?;
    drop(f);
    let f = std::fs::File::open(path)?;
    let reader: Box<dyn std::io::Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_unpack_xattrs(false);
    a.unpack(dir)
}
