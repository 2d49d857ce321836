//! One rule for a one-shot run: take a prepared sandbox from the pool service serving this
//! image and policy, or start cold. The CLI's `run`, the servers and the benchmark call
//! [`Runner::run_pooled_or_cold`] (or [`Runner::take_pooled`] when they drive the prepared
//! sandbox themselves; [`Runner::run_in_pool_or_cold`] when they hold the pool in their own
//! process, as the HTTP API does); none of them decides on its own.
//!
//! A run is eligible for a pool unless the caller asks for a cold start, the run has a
//! terminal (a prepared sandbox has no pty), or its command's first word holds `=` (the
//! trampoline that runs a prepared sandbox's command could take it for an assignment).
//! A pool that is not serving, or fails to answer, costs a warning and the run is cold.

use std::path::PathBuf;

use super::{Prepared, RunError, RunRequest, RunResult, Runner};
use crate::pool::{service, Pool};

/// Where pools are asked, and whether at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChoice {
    /// Never take a pooled sandbox. Default false.
    pub cold: bool,
    /// The directory of the pool services' sockets. Default
    /// [`crate::pool::DEFAULT_SOCKET_DIR`].
    pub socket_dir: PathBuf,
}

impl Default for PoolChoice {
    fn default() -> Self {
        PoolChoice {
            cold: false,
            socket_dir: PathBuf::from(crate::pool::DEFAULT_SOCKET_DIR),
        }
    }
}

/// A finished one-shot run and the pool service it came from, if any (its removal is
/// handed back there, see [`service::hand_back`]).
#[derive(Debug)]
pub struct Ran {
    /// The run's result.
    pub result: RunResult,
    /// The socket of the pool service that gave the sandbox; `None` for a cold run.
    pub pool_socket: Option<PathBuf>,
}

/// Whether `req` may run in a pooled sandbox under `choice`. Pure.
pub fn pool_eligible(req: &RunRequest, choice: &PoolChoice) -> bool {
    // Published ports are served by the process that runs the sandbox, so such a run is
    // never handed a sandbox another process prepared.
    !choice.cold
        && !req.terminal
        && req.policy.network_rules.publish.is_empty()
        && req.args.first().is_some_and(|a| !a.contains('='))
}

/// What a run asks a pool service for: at `socket`, a sandbox for `image` and policy
/// `hash`, made from `snapshot` when the caller resolved the image.
struct Ask {
    socket: PathBuf,
    image: String,
    hash: String,
    snapshot: Option<String>,
}

impl Runner {
    /// The runtime binary a pool service must run its sandboxes under to serve this
    /// runner: `None` for the default runc.
    pub fn pool_runtime_key(&self) -> Option<String> {
        self.runtime_binary()
            .filter(|rb| !rb.default)
            .map(|rb| rb.path.to_string_lossy().into_owned())
    }

    /// A prepared sandbox for `req` from the pool service for its image and policy, and
    /// that service's socket; `None` when `req` is not eligible ([`pool_eligible`]) or no
    /// pool has one.
    pub async fn take_pooled(
        &self,
        req: &RunRequest,
        choice: &PoolChoice,
    ) -> Option<(Prepared, PathBuf)> {
        let ask = self.pool_ask(req, choice)?;
        self.take_asked(ask).await
    }

    /// What to ask which pool service for `req`; `None` when `req` is not eligible.
    /// Nothing of `req` is held while the pool answers, so a run's future stays `Send`
    /// whatever its stdin and output are.
    fn pool_ask(&self, req: &RunRequest, choice: &PoolChoice) -> Option<Ask> {
        if !pool_eligible(req, choice) {
            return None;
        }
        let hash = req.policy.hash();
        Some(Ask {
            socket: crate::pool::socket_path(&choice.socket_dir, &hash),
            image: req.policy.image.clone(),
            hash,
            snapshot: req.image.as_ref().map(|b| b.snapshot.clone()),
        })
    }

    async fn take_asked(&self, ask: Ask) -> Option<(Prepared, PathBuf)> {
        let place = self.place();
        let Ask {
            socket,
            image,
            hash,
            snapshot,
        } = ask;
        match service::take(&socket, &image, &hash, snapshot.as_deref(), &place).await {
            Ok(p) => p.map(|p| (p, socket)),
            Err(e) => {
                tracing::warn!("{e}; starting cold");
                None
            }
        }
    }

    /// Runs `req` in a pooled sandbox when one is to be had ([`Runner::take_pooled`]),
    /// cold otherwise.
    pub async fn run_pooled_or_cold(
        &self,
        req: RunRequest,
        choice: &PoolChoice,
    ) -> Result<Ran, RunError> {
        let ask = self.pool_ask(&req, choice);
        let taken = match ask {
            Some(ask) => self.take_asked(ask).await,
            None => None,
        };
        match taken {
            Some((p, socket)) => {
                tracing::debug!(id = %p.id, "took a pooled sandbox");
                let result = self.run_prepared(p, req).await?;
                Ok(Ran {
                    result,
                    pool_socket: Some(socket),
                })
            }
            None => Ok(Ran {
                result: self.run(req).await?,
                pool_socket: None,
            }),
        }
    }

    /// Runs `req` in a sandbox of `pool` (one this process holds) when the run is eligible
    /// ([`pool_eligible`], never cold by choice), the pool is for its image and policy
    /// ([`Pool::matches`]) and has one ready; cold otherwise ([`RunResult::pooled`] says
    /// which).
    pub async fn run_in_pool_or_cold(
        &self,
        req: RunRequest,
        pool: Option<&Pool>,
    ) -> Result<RunResult, RunError> {
        let taken = pool
            .filter(|p| pool_eligible(&req, &PoolChoice::default()) && p.matches(&req.policy))
            .and_then(|pool| {
                let snapshot = req.image.as_ref().map(|b| b.snapshot.as_str());
                pool.take_held(snapshot).map(|p| (pool, p))
            });
        match taken {
            Some((pool, p)) => {
                let r = self.run_prepared(p, req).await;
                pool.run_ended();
                r
            }
            None => self.run(req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{HostPolicyEnv, Policy, PolicyOverrides};

    fn req(args: &[&str]) -> RunRequest {
        let policy = Policy::default()
            .validate(None, &PolicyOverrides::default(), &HostPolicyEnv)
            .unwrap();
        RunRequest::new(policy, args.iter().map(ToString::to_string))
    }

    #[test]
    fn pooled_runs_are_chosen_by_one_rule() {
        let any = PoolChoice::default();
        assert!(pool_eligible(&req(&["echo", "hi"]), &any));
        let cold = PoolChoice {
            cold: true,
            ..PoolChoice::default()
        };
        assert!(!pool_eligible(&req(&["echo"]), &cold), "asked cold");
        assert!(
            !pool_eligible(&req(&["A=1", "env"]), &any),
            "a first word with `=`"
        );
        assert!(!pool_eligible(&req(&[]), &any), "no command");
        let mut tty = req(&["sh"]);
        tty.terminal = true;
        assert!(!pool_eligible(&tty, &any), "a terminal");
    }

    #[tokio::test]
    async fn with_no_pool_serving_the_run_is_cold() {
        let t = tempfile::tempdir().unwrap();
        let fake = crate::containerd::fake::FakeContainerd::new();
        let runner = fake
            .runner_builder(t.path(), &t.path().join("proc"))
            .build()
            .unwrap();
        let choice = PoolChoice {
            cold: false,
            socket_dir: t.path().join("pools"),
        };
        let r = req(&["true"]);
        assert!(runner.take_pooled(&r, &choice).await.is_none());
    }
}
