//! The API's OpenAPI 3.1 document, generated from the handlers' annotations and the wire
//! types ([`utoipa`]); served without authentication at `GET /openapi.json` (it describes
//! the API, and holds nothing of any sandbox) and committed as `docs/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorBody, ErrorDetail};
use super::wire::*;
use super::{code, exec, files, pools, sandboxes};

/// Paths not annotated on a handler of their own: health, version, metrics.
mod system {
    #![allow(dead_code)]
    use super::super::wire::{Health, Version};

    /// `GET /v1/health`: the server answers (no token needed).
    #[utoipa::path(get, path = "/v1/health", tag = "system",
        responses((status = 200, description = "The server answers", body = Health)))]
    pub fn health() {}

    /// `GET /v1/version`.
    #[utoipa::path(get, path = "/v1/version", tag = "system",
        responses(
            (status = 200, description = "Versions", body = Version),
            (status = 401, description = "No token, or an unknown one", body = super::ErrorBody),
        ),
        security(("bearer" = [])))]
    pub fn version() {}

    /// `GET /v1/metrics`: Prometheus' text format.
    #[utoipa::path(get, path = "/v1/metrics", tag = "system",
        responses((status = 200, description = "Metrics in Prometheus' text format 0.0.4", content_type = "text/plain", body = String)),
        security(("bearer" = [])))]
    pub fn metrics() {}
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token of the server's --token-file"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stockade",
        description = "Sandboxes for untrusted code: create, exec, files, a stateful code interpreter, one-shot runs, warm pools. Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`; every answer carries `X-Request-Id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        system::health,
        system::version,
        system::metrics,
        sandboxes::run,
        sandboxes::create,
        sandboxes::list,
        sandboxes::get,
        sandboxes::delete,
        sandboxes::extend,
        pools::fill,
        pools::list,
        pools::get,
        pools::drain,
        exec::exec,
        code::run,
        files::write,
        files::read,
        files::remove,
        files::list,
        files::stat,
        files::mkdir,
        files::put_archive,
        files::get_archive,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Health, Version, CreateSandbox, ExtendLifetime, Encoding,
        ExecBody, RunBody, ExecOutcome, TruncatedView, StreamRecord, SandboxList, FileEntry,
        FileList, Written, CodeBody, CodeResult, CodeErrorView, FillPool, PoolView, PoolList,
        Drained,
    )),
    modifiers(&Bearer),
)]
struct ApiDoc;

/// The document, pretty-printed, with the stream route (whose body is NDJSON) added.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut value = serde_json::to_value(&doc).expect("the document serializes");
    add_stream_route(&mut value);
    let mut text = serde_json::to_string_pretty(&value).expect("the document serializes");
    text.push('\n');
    text
}

/// `/exec/stream` takes what `/exec` takes and answers NDJSON records.
fn add_stream_route(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let Some(mut op) = paths.get("/v1/sandboxes/{id}/exec").cloned() else {
        return;
    };
    if let Some(post) = op.get_mut("post") {
        post["operationId"] = "exec_stream".into();
        post["summary"] = "The same exec, its output streamed as NDJSON records".into();
        post["responses"]["200"] = serde_json::json!({
            "description": "One JSON record a line: `stdout`/`stderr` chunks, then one `exit` record (an `ExecOutcome` without output) or one `error` record",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}}
        });
    }
    paths.insert("/v1/sandboxes/{id}/exec/stream".into(), op);
}

/// `GET /openapi.json`.
pub fn response() -> hyper::Response<crate::serve::http::Body> {
    hyper::Response::builder()
        .header("Content-Type", "application/json")
        .body(crate::serve::http::full(document()))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is the document the code generates; `UPDATE_GOLDEN=1`
    /// rewrites it.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} differs from the generated document; regenerate it with UPDATE_GOLDEN=1 cargo test --lib openapi",
            path.display()
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let v: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        assert!(
            v["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            v["openapi"]
        );
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/v1/health",
            "/v1/run",
            "/v1/sandboxes",
            "/v1/sandboxes/{id}",
            "/v1/sandboxes/{id}/exec",
            "/v1/sandboxes/{id}/exec/stream",
            "/v1/sandboxes/{id}/code",
            "/v1/sandboxes/{id}/files",
            "/v1/sandboxes/{id}/archive",
            "/v1/metrics",
        ] {
            assert!(paths.contains_key(p), "{p}");
        }
        assert_eq!(
            v["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
