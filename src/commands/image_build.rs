//! `stockade image build -f DOCKERFILE -t NAME [--build-arg K=V]... [--no-cache] CONTEXT`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use stockade::images::build_dockerfile::{build_dockerfile, DockerfileBuild};
use stockade::images::{build, registry::RegistryOptions};
use stockade::runner::{CleanupMode, Runner, SnapshotImages};

use super::image::{familiar, report_replaced, BuildArgs, Spinner};

/// True when `a` asks for a Dockerfile build: `-f`, or a context directory that is not a
/// recipe's name.
pub fn is_dockerfile_build(a: &BuildArgs) -> bool {
    a.file.is_some() || (build::recipe(&a.target).is_none() && Path::new(&a.target).is_dir())
}

pub async fn run(a: BuildArgs) -> Result<u8> {
    let context = Path::new(&a.target).to_path_buf();
    if !context.is_dir() {
        bail!("{}: the build context must be a directory", a.target);
    }
    let dockerfile = a.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    let Some(name) = a.tag.clone() else {
        bail!("-t NAME: a Dockerfile build needs the name of the image it makes");
    };
    let mut build_args = Vec::new();
    for kv in &a.build_args {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => build_args.push((k.to_string(), v.to_string())),
            _ => bail!("--build-arg `{kv}`: expected K=V"),
        }
    }
    let host = super::doctor::host_facts_for_spec()?;
    let client = a.containerd.connect().await?;
    let runner = Runner::builder()
        .client(client.clone())
        .host(host)
        .images(Arc::new(SnapshotImages))
        .cleanup(CleanupMode::Caller)
        .build()?;
    let req = DockerfileBuild {
        dockerfile,
        context,
        name,
        build_args,
        no_cache: a.no_cache,
        cache_dir: a.cache_dir.clone(),
        scratch: build::BuildHost::system().scratch,
        registry: RegistryOptions {
            plain_http: a.plain_http.clone(),
            ..Default::default()
        },
    };
    let spinner = Spinner::new();
    let t = Instant::now();
    let report = build_dockerfile(&client, &runner, &req, &spinner).await;
    spinner.finish();
    let report = report?;
    report_replaced(&report.image);
    let layers = report.steps.iter().filter(|s| s.cached.is_some()).count();
    let cached = report
        .steps
        .iter()
        .filter(|s| s.cached == Some(true))
        .count();
    println!(
        "{} {} chain {} ({} steps, {layers} layer steps, {cached} cached; {:.2}s)",
        familiar(&report.image.name),
        report.image.manifest_digest,
        report.image.chain_id,
        report.steps.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(0)
}
