//! `POST /containers/prune`: removes every container of the server that is not running.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;

use super::Docker;
use crate::containerd::TaskStatus;
use crate::serve::http::{ok_json, query, Answer, ApiError};

/// `POST /containers/prune`: removes the created, exited and dead containers and lists
/// them. Filters (`until`, `label`) are refused rather than ignored.
pub async fn containers(d: &Arc<Docker>, req: &Request<Incoming>) -> Answer {
    if let Some(f) = query(req).get("filters") {
        let given = f.trim();
        if !given.is_empty() && given != "{}" {
            return Err(ApiError::bad(
                "filters: pruning with filters is not supported by stockade serve",
            ));
        }
    }
    let mut deleted = Vec::new();
    for c in d.all() {
        if c.sandbox.state().await.ok() == Some(TaskStatus::Running) {
            continue;
        }
        d.remove(&c, true).await?;
        deleted.push(c.sandbox.id().to_string());
    }
    ok_json(&json!({"ContainersDeleted": deleted, "SpaceReclaimed": 0}))
}
