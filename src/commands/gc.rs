//! `stockade gc`: remove what crashed or interrupted runs left behind (tasks, containers,
//! snapshots, cgroups, FIFO directories). Runs whose owning stockade process is alive are
//! left alone unless `--all` is given, and so are sessions (`stockade create`) within
//! their deadlines whose init lives, whoever owns them.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use stockade::containerd::daemon::{connect_or_start, DaemonPaths};
use stockade::containerd::DEFAULT_NAMESPACE;
use stockade::policy::parse_duration;
use stockade::runner::{
    reconcile, write_owner, CgroupFs, CleanupTarget, ReconcileOptions, DEFAULT_CGROUP_ROOT,
    DEFAULT_FIFO_ROOT, DEFAULT_SNAPSHOTTER,
};

#[derive(Debug, Args)]
pub struct GcArgs {
    /// containerd socket [default: $CONTAINERD_ADDRESS, else
    /// /run/containerd/containerd.sock, else stockade's private containerd].
    #[arg(long, value_name = "SOCK")]
    pub address: Option<PathBuf>,
    /// containerd namespace to clean.
    #[arg(long, value_name = "NS", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Runs whose owner is unknown are removed only when older than this.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub min_age: String,
    /// Also remove runs whose stockade process is still alive (kills them).
    #[arg(long)]
    pub all: bool,
    /// Only this run (repeatable).
    #[arg(long = "run", value_name = "ID")]
    pub runs: Vec<String>,
    /// Become the owner of the named runs first (used by `stockade run` to hand off the
    /// removal of a finished run).
    #[arg(long, requires = "runs", hide = true)]
    pub take_over: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
    /// Parent of the per-run FIFO directories.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_FIFO_ROOT, hide = true)]
    pub fifo_root: PathBuf,
    /// cgroup mount point.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CGROUP_ROOT, hide = true)]
    pub cgroup_root: PathBuf,
    /// Where sandbox disk images are made.
    #[arg(long, value_name = "DIR", default_value = stockade::disk::DEFAULT_DISK_ROOT, hide = true)]
    pub disk_root: PathBuf,
    /// Where sandbox UIDs are claimed.
    #[arg(long, value_name = "DIR", default_value = stockade::runner::uids::DEFAULT_UID_CLAIMS, hide = true)]
    pub uid_claims: PathBuf,
}

pub async fn run(args: GcArgs) -> Result<u8> {
    let min_age = parse_duration(&args.min_age).map_err(|e| anyhow::anyhow!("--min-age: {e}"))?;
    if args.take_over {
        for id in &args.runs {
            let dir = args.fifo_root.join(id);
            if dir.is_dir() {
                let _ = write_owner(&dir, std::process::id());
            }
        }
    }
    let client = connect_or_start(
        args.address.as_deref(),
        &args.namespace,
        &DaemonPaths::system(),
    )
    .await?;
    let target = CleanupTarget {
        containerd: std::sync::Arc::new(client),
        snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
        fifo_root: args.fifo_root.clone(),
        cgroups: CgroupFs::new(&args.cgroup_root),
        uid_claims: args.uid_claims.clone(),
        network: stockade::network::NetConfig::default(),
    };
    let opts = ReconcileOptions {
        min_age,
        // A named run is removed whoever owns it; `--take-over` made us its owner.
        include_live: args.all || !args.runs.is_empty(),
        only: (!args.runs.is_empty()).then(|| args.runs.clone()),
        ..ReconcileOptions::default()
    };
    let done = if args.take_over {
        // The hand-off path: remove exactly these runs, without listing everything.
        let mut r = stockade::runner::Reconciled::default();
        for id in &args.runs {
            match stockade::runner::remove_run(&target, id, true).await {
                Ok(()) => r.removed.push(id.clone()),
                Err(e) => r.failed.push((id.clone(), e.to_string())),
            }
        }
        r
    } else {
        let mut r = reconcile(&target, &opts).await?;
        // Disk images whose run directory is gone (a run's own are released with it).
        if opts.only.is_none() {
            match stockade::disk::reclaim_orphans(&args.disk_root, &args.fifo_root) {
                Ok(images) => r.removed_images = images,
                Err(e) => r
                    .failed
                    .push((args.disk_root.display().to_string(), e.to_string())),
            }
        }
        r
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        for id in &done.removed {
            println!("removed {id}");
        }
        for image in &done.removed_images {
            println!("removed {}", image.display());
        }
        for id in &done.kept {
            println!("kept {id} (its stockade process is alive, or it is younger than --min-age)");
        }
        for (id, why) in &done.failed {
            eprintln!("stockade: gc: {id}: {why}");
        }
    }
    Ok(u8::from(!done.failed.is_empty()))
}
