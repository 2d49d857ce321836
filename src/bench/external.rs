//! The contenders that are separate programs: `stockade run` (the CLI, as a user calls it),
//! `ctr run --rm` and bare `runc run`. Each run is timed from spawn to exit, as a caller
//! experiences it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{BenchError, Sample, Workload};

/// Runs `cmd` to completion; returns the wall time and its stdout.
pub(super) async fn timed(mut cmd: Command, what: &str) -> Result<(Duration, Vec<u8>), BenchError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let t0 = Instant::now();
    let out = cmd.output().await.map_err(|e| BenchError::Spawn {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    let dt = t0.elapsed();
    if !out.status.success() {
        return Err(BenchError::Failed {
            what: what.to_string(),
            status: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
                .to_string(),
        });
    }
    Ok((dt, out.stdout))
}

/// `stockade run` through the binary.
pub(super) struct StockadeCli {
    pub binary: PathBuf,
    pub address: PathBuf,
    pub namespace: String,
    /// Extra flags (e.g. `--cold`).
    pub flags: Vec<String>,
}

impl StockadeCli {
    pub async fn run(&self, w: &Workload) -> Result<Sample, BenchError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run")
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("--image")
            .arg(&w.image)
            .arg("--no-run-log")
            .args(&self.flags)
            .arg("--")
            .args(&w.args);
        let (dt, out) = timed(cmd, "stockade run").await?;
        check_output(w, &out, "stockade run")?;
        Ok(Sample::end_to_end(dt))
    }
}

/// `ctr run --rm IMAGE ID CMD…` against the same containerd, namespace and image.
pub(super) struct Ctr {
    pub address: PathBuf,
    pub namespace: String,
    /// Workload image name → the reference containerd's image store knows it by.
    pub image_refs: BTreeMap<String, String>,
}

impl Ctr {
    pub async fn run(&self, w: &Workload, id: &str) -> Result<Sample, BenchError> {
        let image_ref = self
            .image_refs
            .get(&w.image)
            .ok_or_else(|| BenchError::Setup(format!("no image reference for {}", w.image)))?;
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace)
            .arg("run")
            .arg("--rm")
            .arg(image_ref)
            .arg(id)
            .args(&w.args);
        let (dt, out) = timed(cmd, "ctr run").await?;
        check_output(w, &out, "ctr run")?;
        Ok(Sample::end_to_end(dt))
    }
}

/// Bare `runc run` on a prepared bundle: the floor any runc-based runtime stands on.
pub(super) struct Runc {
    /// runc's state directory (`--root`), private to the benchmark.
    pub root: PathBuf,
    /// One bundle per workload (its config.json carries the command).
    pub bundles: Vec<(String, PathBuf)>,
}

impl Runc {
    pub async fn run(&self, w: &Workload, id: &str) -> Result<Sample, BenchError> {
        let bundle = self
            .bundles
            .iter()
            .find(|(name, _)| *name == w.name)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| BenchError::Setup(format!("no runc bundle for {}", w.name)))?;
        let mut cmd = Command::new("runc");
        cmd.arg("--root")
            .arg(&self.root)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(id);
        let (dt, out) = timed(cmd, "runc run").await?;
        check_output(w, &out, "runc run")?;
        Ok(Sample::end_to_end(dt))
    }
}

/// Every contender must really have run the command: its output is checked.
pub(super) fn check_output(w: &Workload, out: &[u8], what: &str) -> Result<(), BenchError> {
    match &w.expect_stdout {
        Some(want) if String::from_utf8_lossy(out).trim() != want.as_str() => {
            Err(BenchError::Failed {
                what: what.to_string(),
                status: Some(0),
                stderr: format!(
                    "expected output {want:?}, got {:?}",
                    String::from_utf8_lossy(out).trim()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// `true` when `program` can be found on `PATH` (or is a path that exists).
pub(super) fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
