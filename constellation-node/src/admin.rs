//! The admin HTTP API (axum).
//!
//! | method | path | auth | answer |
//! | --- | --- | --- | --- |
//! | GET | `/health` | – | 200 `ok` while the process serves |
//! | GET | `/ready` | – | 200 when every actor runs and the listener accepts, 503 otherwise |
//! | GET | `/metrics` | – | Prometheus text |
//! | GET | `/api/v1/stats` | – | JSON: node, in-flight, connections, catalog, regions, last federation |
//! | GET | `/api/v1/cluster` | – | JSON: members, the federation lease, this node's last federation, store health |
//! | GET | `/api/v1/patterns/global?region=R` | – | JSON: region R's global version, patterns, trends |
//! | POST | `/api/v1/content` | bearer | one JSON `CatalogItem` → import report |
//! | POST | `/api/v1/content/import[?format=F]` | bearer | body in format F: `jsonl` (default), `movielens-u-item`, `movies-csv` → import report |
//! | POST | `/api/v1/federation/trigger` | bearer | runs federation now → its summary |
//!
//! Mutating endpoints need `Authorization: Bearer <token>`; without a token
//! configured they answer 403 (refused outright), with a wrong or missing
//! one 401. Errors are JSON `{"error": {"code", "message"}}`: 400 bad input,
//! 409 an import or federation run is already running, 413 too many items,
//! 503 no model / actor unavailable, 504 timeout, 500 store failure.
//! Bodies are limited to `admin_body_limit` bytes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use omega_constellation::actors::{
    catalog::parse_import, ActorsError, CatalogError, ImportFormat, Node,
};
use omega_protocol::{CatalogItem, Region};

/// How long an import or a federation run may take before the API answers 504
/// (the work continues in the actor).
pub const LONG_OPERATION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The actor tree.
    pub node: Arc<Node>,
    /// The bearer token, if configured.
    pub token: Option<Arc<str>>,
    /// The Prometheus recorder.
    pub prometheus: PrometheusHandle,
    /// Whether the QUIC listener accepts.
    pub listening: Arc<AtomicBool>,
    /// This node's name.
    pub node_name: Arc<str>,
    /// Start time (for uptime).
    pub started: Instant,
    /// Connection slots (for stats).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Configured connection bound.
    pub max_connections: usize,
}

/// The router.
pub fn router(state: AdminState, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/patterns/global", get(global_patterns))
        .route("/api/v1/content", post(add_content))
        .route("/api/v1/content/import", post(import_content))
        .route("/api/v1/federation/trigger", post(trigger_federation))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.to_string()}})),
    )
        .into_response()
}

fn actors_error(e: &ActorsError) -> Response {
    let (status, code) = match e {
        ActorsError::Busy(_) => (StatusCode::CONFLICT, "busy"),
        ActorsError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ActorsError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ActorsError::Catalog(CatalogError::NoModel) => {
            (StatusCode::SERVICE_UNAVAILABLE, "no_model")
        }
        ActorsError::Catalog(CatalogError::TooMany { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_many_items")
        }
        ActorsError::Catalog(CatalogError::Parse { .. } | CatalogError::Invalid { .. }) => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, code, e)
}

/// `None` when authorized, otherwise the refusal to send.
fn authorize(state: &AdminState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "no admin token is configured on this node; mutating endpoints are disabled",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        // Constant time (subtle): the token must not leak through timing.
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )),
    }
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.node.is_ready() && state.listening.load(Ordering::Acquire) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// Always 200: the answer says what of the store could not be read.
async fn cluster(State(state): State<AdminState>) -> Response {
    Json(state.node.cluster_status().await).into_response()
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    // Read at scrape time: a gauge set per admitted sync would stay at the
    // last burst's value once traffic stops.
    metrics::gauge!(crate::telemetry::IN_FLIGHT).set(state.node.in_flight().in_flight() as f64);
    state.prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
        .into_response()
}

async fn stats(State(state): State<AdminState>) -> Response {
    let store = Arc::clone(state.node.store());
    let read = tokio::task::spawn_blocking(move || {
        let regions = store.regions()?;
        let mut out = Vec::new();
        for r in regions {
            let g = store.region_globals(&r)?;
            out.push(json!({
                "region": r,
                "global_version": g.version,
                "global_patterns": g.patterns.len(),
                "trends": g.trends.len(),
            }));
        }
        Ok::<_, omega_constellation::store::StoreError>((
            out,
            store.catalog_len()?,
            store.catalog_version()?,
        ))
    })
    .await;
    let (regions, catalog_items, catalog_version) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    };
    let last = state.node.last_federation().await;
    let in_flight = state.node.in_flight();
    Json(json!({
        "node": &*state.node_name,
        "uptime_secs": state.started.elapsed().as_secs(),
        "ready": state.node.is_ready(),
        "shards": state.node.config().shards,
        "in_flight": in_flight.in_flight(),
        "max_in_flight": in_flight.max(),
        "connections": state.max_connections.saturating_sub(state.connections.available_permits()),
        "max_connections": state.max_connections,
        "catalog_items": catalog_items,
        "catalog_version": catalog_version,
        "model_loaded": state.node.has_embedder(),
        "regions": regions,
        "devices": last.as_ref().map(|l| l.devices),
        "patterns": last.as_ref().map(|l| l.patterns),
        "last_federation": last,
        "learning": state.node.learning_stats(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct RegionQuery {
    region: String,
}

async fn global_patterns(
    State(state): State<AdminState>,
    Query(q): Query<RegionQuery>,
) -> Response {
    let region = match Region::new(q.region) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let store = Arc::clone(state.node.store());
    let r = region.clone();
    match tokio::task::spawn_blocking(move || store.region_globals(&r)).await {
        Ok(Ok(g)) => Json(json!({
            "region": region,
            "version": g.version,
            "patterns": g.patterns,
            "trends": g.trends,
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "store", e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

async fn import(state: &AdminState, items: Vec<CatalogItem>) -> Response {
    match state
        .node
        .import_catalog(items, LONG_OPERATION_TIMEOUT)
        .await
    {
        Ok(report) => Json(report).into_response(),
        Err(e) => actors_error(&e),
    }
}

async fn add_content(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = authorize(&state, &headers) {
        return r;
    }
    match serde_json::from_str::<CatalogItem>(&body) {
        Ok(item) => import(&state, vec![item]).await,
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", e),
    }
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn import_content(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<FormatQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = authorize(&state, &headers) {
        return r;
    }
    let format = match q.format.as_deref() {
        None => ImportFormat::JsonLines,
        Some(name) => match ImportFormat::from_name(name) {
            Some(f) => f,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_format",
                    format!("unknown format {name:?} (jsonl, movielens-u-item, movies-csv)"),
                )
            }
        },
    };
    let max = state.node.config().catalog.max_items_per_import;
    let items = match tokio::task::spawn_blocking(move || parse_import(format, &body, max)).await {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => return actors_error(&ActorsError::Catalog(e)),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    };
    import(&state, items).await
}

async fn trigger_federation(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(r) = authorize(&state, &headers) {
        return r;
    }
    match state.node.trigger_federation(LONG_OPERATION_TIMEOUT).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => actors_error(&e),
    }
}
