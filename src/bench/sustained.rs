//! Sustained throughput: closed loops of runs, cold or through a refilling pool.

use super::*;

/// Sustained throughput: `concurrency` closed loops issuing runs for `duration`, cold or
/// through a pool of `pool_size` (refilled while the runs go on), counting completed runs
/// over the wall time including the removal of every run.
#[derive(Debug, Clone, Serialize)]
pub struct Sustained {
    /// `cold` (no pool) or `warm` (through the pool).
    pub mode: String,
    /// Closed loops issuing runs at once.
    pub concurrency: usize,
    /// The pool's size; 0 when cold.
    pub pool_size: usize,
    /// Runs that completed successfully.
    pub completed: usize,
    /// Runs that failed.
    pub failures: usize,
    /// Runs that found the pool empty and ran cold (warm mode).
    pub cold_fallbacks: usize,
    /// Wall time from the first run's start to the last run's removal, in seconds.
    pub wall_s: f64,
    /// `completed` over `wall_s`.
    pub runs_per_sec: f64,
    /// Median latency of the completed runs, in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile latency of the completed runs, in milliseconds.
    pub p99_ms: f64,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
}

/// Measures [`Sustained`] throughput of `/bin/true` on `policy`'s image, cold (`pool_size`
/// 0) or warm.
pub async fn sustained(
    client: Client,
    host: HostFacts,
    policy: ValidatedPolicy,
    duration: Duration,
    concurrency: usize,
    pool_size: usize,
    runc_binary: Option<String>,
) -> Result<Sustained, BenchError> {
    let runner = Runner::builder()
        .client(client)
        .host(host)
        .runc_binary(runc_binary)
        .images(Arc::new(crate::runner::StoreImages::default()))
        .build()?;
    let pool = if pool_size > 0 {
        let p = crate::pool::Pool::start(
            runner.clone(),
            policy.clone(),
            crate::pool::PoolConfig {
                size: pool_size,
                ..Default::default()
            },
        )
        .map_err(|e| BenchError::Setup(e.to_string()))?;
        p.wait_ready(pool_size, Duration::from_secs(60)).await;
        Some(p)
    } else {
        None
    };
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (runner, pool, policy) = (runner.clone(), pool.clone(), policy.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            let (mut fails, mut cold, mut first) = (0usize, 0usize, None);
            while Instant::now() < deadline {
                let req = RunRequest::new(policy.clone(), ["/bin/true"]);
                let t = Instant::now();
                let r = match &pool {
                    Some(p) => p.run(req).await,
                    None => runner.run(req).await,
                };
                match r {
                    Ok(r) if r.exit_code == 0 => {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        if pool.is_some() && !r.pooled {
                            cold += 1;
                        }
                    }
                    Ok(r) => {
                        fails += 1;
                        first.get_or_insert(format!("exit {}", r.exit_code));
                    }
                    Err(e) => {
                        fails += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
            }
            (lat, fails, cold, first)
        });
    }
    let (mut lat, mut failures, mut cold, mut first_error) = (Vec::new(), 0, 0, None);
    while let Some(r) = set.join_next().await {
        if let Ok((l, f, c, e)) = r {
            lat.extend(l);
            failures += f;
            cold += c;
            if first_error.is_none() {
                first_error = e;
            }
        }
    }
    // The removals of the measured runs count; the pool's leftover ready sandboxes do not.
    runner.wait_cleanups().await;
    let wall = t0.elapsed().as_secs_f64();
    if let Some(p) = pool {
        p.drain().await;
        runner.wait_cleanups().await;
    }
    let s = summarize(&lat);
    Ok(Sustained {
        mode: if pool_size > 0 { "warm" } else { "cold" }.into(),
        concurrency,
        pool_size,
        completed: lat.len(),
        failures,
        cold_fallbacks: cold,
        wall_s: wall,
        runs_per_sec: lat.len() as f64 / wall,
        p50_ms: s.map(|s| s.p50_ms).unwrap_or(f64::NAN),
        p99_ms: s.map(|s| s.p99_ms).unwrap_or(f64::NAN),
        first_error,
    })
}
