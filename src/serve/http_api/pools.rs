//! Warm pools over the API: a token fills a pool for one policy (through the same ceiling
//! as a sandbox's), sees and drains only its own, and `POST /v1/run` under that policy
//! takes a ready sandbox from it ([`crate::runner::Runner::run_in_pool_or_cold`]). A pool
//! is [`crate::pool::Pool`], run in the server's process over the server's runner, exactly
//! as `stockade pool fill` runs it; its members count toward the token's quotas from the
//! fill until the drain ([`super::quota::Ledger::reserve_pool`]).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::error::HttpError;
use super::wire::{Drained, FillPool, PoolList, PoolView};
use super::{read_json, Answer, Caller, HttpApi};
use crate::policy::HostPolicyEnv;
use crate::pool::{Pool, PoolConfig};
use crate::serve::http::json;

/// A pool and the token that filled it.
pub(super) struct OwnedPool {
    pub(super) token: String,
    pub(super) pool: Pool,
}

fn view(id: &str, pool: &Pool) -> PoolView {
    let st = pool.status();
    PoolView {
        id: id.to_string(),
        image: st.image,
        policy_hash: st.policy_hash,
        size: st.size,
        ready: st.ready,
        preparing: st.preparing,
        taken: st.taken,
        misses: st.misses,
        memory_bytes: st.memory_bytes,
        last_error: st.last_error,
    }
}

/// `POST /v1/pools`: starts a pool filling itself.
#[utoipa::path(post, path = "/v1/pools", tag = "pools",
    request_body = FillPool,
    responses(
        (status = 201, description = "The pool, filling in the background", body = PoolView),
        (status = 400, description = "A field is malformed", body = super::error::ErrorBody),
        (status = 403, description = "The policy asks for more than the server grants", body = super::error::ErrorBody),
        (status = 409, description = "The caller already has a pool for this policy", body = super::error::ErrorBody),
        (status = 429, description = "Its members would take the token past a quota", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn fill(api: &HttpApi, caller: &Caller, req: Request<Incoming>) -> Answer {
    let body: FillPool = read_json(req).await?;
    if body.size == 0 {
        return Err(HttpError::invalid("size: must be at least 1").field("size"));
    }
    let policy = super::policy::request_policy(&api.server, body.policy.as_ref(), &HostPolicyEnv)?;
    let hash = policy.hash();
    let id = crate::runner::new_id().replacen(crate::runner::ID_PREFIX, "pool-", 1);
    let mut pools = api.pools.lock().await;
    if let Some((other, _)) = pools
        .iter()
        .find(|(_, p)| p.token == caller.token && p.pool.policy_hash() == hash)
    {
        return Err(HttpError::conflict(format!(
            "policy: pool {other} already serves this policy ({hash})"
        ))
        .field("policy"));
    }
    api.ledger
        .reserve_pool(&caller.token, &id, body.size, policy.limits.memory)?;
    let config = PoolConfig {
        size: body.size,
        ..PoolConfig::default()
    };
    let pool = match Pool::start(api.sandboxes.runner().clone(), policy, config) {
        Ok(p) => p,
        Err(e) => {
            api.ledger.release_pool(&id);
            return Err(HttpError::internal(e.to_string()));
        }
    };
    let answer = view(&id, &pool);
    pools.insert(
        id,
        OwnedPool {
            token: caller.token.clone(),
            pool,
        },
    );
    Ok(json(StatusCode::CREATED, &answer))
}

/// `GET /v1/pools`: the caller's pools.
#[utoipa::path(get, path = "/v1/pools", tag = "pools",
    responses((status = 200, description = "The caller's pools", body = PoolList)),
    security(("bearer" = [])))]
pub(super) async fn list(api: &HttpApi, caller: &Caller) -> Answer {
    let pools = api.pools.lock().await;
    let mut mine: Vec<PoolView> = pools
        .iter()
        .filter(|(_, p)| p.token == caller.token)
        .map(|(id, p)| view(id, &p.pool))
        .collect();
    mine.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(json(StatusCode::OK, &PoolList { pools: mine }))
}

fn missing(id: &str) -> HttpError {
    HttpError::not_found(format!("no such pool: {id}")).field("id")
}

/// `GET /v1/pools/{id}`.
#[utoipa::path(get, path = "/v1/pools/{id}", tag = "pools",
    params(("id" = String, Path, description = "The pool's id")),
    responses(
        (status = 200, description = "What it holds", body = PoolView),
        (status = 404, description = "No such pool of the caller's", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn get(api: &HttpApi, caller: &Caller, id: &str) -> Answer {
    let pools = api.pools.lock().await;
    match pools.get(id) {
        Some(p) if p.token == caller.token => Ok(json(StatusCode::OK, &view(id, &p.pool))),
        _ => Err(missing(id)),
    }
}

/// `DELETE /v1/pools/{id}`: stops refilling and removes every sandbox it holds.
#[utoipa::path(delete, path = "/v1/pools/{id}", tag = "pools",
    params(("id" = String, Path, description = "The pool's id")),
    responses(
        (status = 200, description = "Drained", body = Drained),
        (status = 404, description = "No such pool of the caller's", body = super::error::ErrorBody),
    ),
    security(("bearer" = [])))]
pub(super) async fn drain(api: &HttpApi, caller: &Caller, id: &str) -> Answer {
    let owned = {
        let mut pools = api.pools.lock().await;
        if pools.get(id).is_none_or(|p| p.token != caller.token) {
            return Err(missing(id));
        }
        pools.remove(id).expect("looked up above")
    };
    let removed = owned.pool.drain().await;
    api.ledger.release_pool(id);
    Ok(json(
        StatusCode::OK,
        &Drained {
            id: id.to_string(),
            removed,
        },
    ))
}

/// The caller's pool for `policy_hash`, if any.
pub(super) async fn matching(api: &HttpApi, caller: &Caller, policy_hash: &str) -> Option<Pool> {
    let pools = api.pools.lock().await;
    pools
        .values()
        .find(|p| p.token == caller.token && p.pool.policy_hash() == policy_hash)
        .map(|p| p.pool.clone())
}

/// Drains every pool (the server is stopping); returns how many sandboxes were removed.
pub(super) async fn drain_all(api: &HttpApi) -> usize {
    let all: Vec<(String, OwnedPool)> = api.pools.lock().await.drain().collect();
    let mut removed = 0;
    for (id, p) in all {
        removed += p.pool.drain().await;
        api.ledger.release_pool(&id);
    }
    removed
}
