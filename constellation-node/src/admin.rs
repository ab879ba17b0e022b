//! The admin HTTP API (axum).
//!
//! | method | path | auth | answer |
//! | --- | --- | --- | --- |
//! | GET | `/health` | – | 200 `ok` while the process serves |
//! | GET | `/ready` | – | 200 when every actor runs and the listener accepts, 503 otherwise |
//! | GET | `/metrics` | admin or metrics | Prometheus text |
//! | GET | `/api/v1/stats` | admin | JSON: node, in-flight, connections, catalog, regions, last federation |
//! | GET | `/api/v1/cluster` | admin | JSON: members, the federation lease, this node's last federation, store health |
//! | GET | `/api/v1/patterns/global?region=R` | admin | JSON: region R's global version, patterns, trends |
//! | POST | `/api/v1/content` | admin | one JSON `CatalogItem` → import report |
//! | POST | `/api/v1/content/import[?format=F]` | admin | body in format F: `jsonl` (default), `movielens-u-item`, `movies-csv` → import report |
//! | POST | `/api/v1/federation/trigger` | admin | runs federation now → its summary |
//!
//! Every request except `/health` and `/ready` passes [`guard`] before any
//! handler runs, so before any byte of its body is read:
//! 1. its `Host` (port stripped) must be on the allow-list ([`HostAllowList`]:
//!    loopback names, the admin listen IP, `admin_allowed_hosts`), else 421
//!    `host_not_allowed` (DNS rebinding);
//! 2. it needs `Authorization: Bearer <token>`: the admin token, or for
//!    `/metrics` also the metrics token ([`crate::secrets::BearerToken`],
//!    compared in constant time). Without any token configured the answer is
//!    403 `admin_disabled`; with a wrong or missing one 401 `unauthorized`.
//!
//! Bodies: at most `admin_body_limit` bytes (64 KiB) on every route except
//! the content import, whose body is read as it arrives up to
//! `admin_import_limit` (64 MiB), one import body at a time (a second gets
//! 409 `busy` before its body is read). Past either bound: 413.
//!
//! Errors are JSON `{"error": {"code", "message"}}`: 400 bad input, 409 an
//! import or federation run is already running, 413 too large a body or too
//! many items, 503 no model / actor unavailable, 504 timeout, 500 store
//! failure.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
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

use crate::secrets::BearerToken;

/// How long an import or a federation run may take before the API answers 504
/// (the work continues in the actor).
pub const LONG_OPERATION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The actor tree.
    pub node: Arc<Node>,
    /// The admin bearer token, if configured.
    pub token: Option<BearerToken>,
    /// The token good for `/metrics` only, if configured.
    pub metrics_token: Option<BearerToken>,
    /// The `Host` names answered.
    pub hosts: Arc<HostAllowList>,
    /// Largest content import body, bytes.
    pub import_limit: usize,
    /// One permit: the import body being received.
    pub import_gate: Arc<tokio::sync::Semaphore>,
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

/// The `Host` names the admin API answers (lower case, without port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAllowList(BTreeSet<String>);

impl HostAllowList {
    /// `localhost`, `127.0.0.1`, `::1`, the IP of `admin` (unless it is the
    /// unspecified address) and `extra`.
    pub fn new(admin: SocketAddr, extra: &[String]) -> Self {
        let mut names: BTreeSet<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(String::from)
            .collect();
        if !admin.ip().is_unspecified() {
            names.insert(admin.ip().to_string());
        }
        names.extend(extra.iter().map(|h| normalize_host(h)));
        Self(names)
    }

    /// Whether the request's `Host` header names an allowed host.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| self.0.contains(&normalize_host(h)))
    }
}

/// `Host` without port or IPv6 brackets, lower case, trailing dot removed.
fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or("")
    } else {
        h
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The router. `body_limit` bounds every body but the content import's
/// (`state.import_limit`).
pub fn router(state: AdminState, body_limit: usize) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/cluster", get(cluster))
        .route("/api/v1/patterns/global", get(global_patterns))
        .route("/api/v1/content", post(add_content))
        .route(
            "/api/v1/content/import",
            post(import_content).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/federation/trigger", post(trigger_federation))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Which token a path takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `/health`, `/ready`: none, any `Host`.
    Open,
    /// `/metrics`: the admin or the metrics token.
    Metrics,
    /// Everything else: the admin token.
    Admin,
}

fn access(path: &str) -> Access {
    match path {
        "/health" | "/ready" => Access::Open,
        "/metrics" => Access::Metrics,
        _ => Access::Admin,
    }
}

/// Checks `Host` and the bearer token before the handler (and so before
/// any body is read): see the module docs.
async fn guard(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    let access = access(req.uri().path());
    if access != Access::Open {
        if !state.hosts.allows(req.headers()) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "the Host header names no host this admin API answers (admin_allowed_hosts)",
            );
        }
        if let Some(refusal) = authorize(&state, req.headers(), access) {
            return refusal;
        }
    }
    next.run(req).await
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
fn authorize(state: &AdminState, headers: &HeaderMap, access: Access) -> Option<Response> {
    let metrics = match access {
        Access::Open => return None,
        Access::Metrics => state.metrics_token.as_ref(),
        Access::Admin => None,
    };
    if state.token.is_none() && metrics.is_none() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "no admin token is configured on this node; the admin API is disabled",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = given.is_some_and(|g| {
        // Both compared, in constant time, whichever matches.
        let admin = state
            .token
            .as_ref()
            .is_some_and(|t| t.matches(g.as_bytes()));
        let metrics = metrics.is_some_and(|t| t.matches(g.as_bytes()));
        admin | metrics
    });
    if ok {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        ))
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

async fn add_content(State(state): State<AdminState>, body: String) -> Response {
    match serde_json::from_str::<CatalogItem>(&body) {
        Ok(item) => import(&state, vec![item]).await,
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", e),
    }
}

#[derive(Debug, Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

/// Reads `body` as it arrives, refusing it (413) once over `limit` bytes;
/// a declared `Content-Length` over it is refused before reading.
async fn read_bounded(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("an import body is at most {limit} bytes (admin_import_limit)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    // Grows with the bytes received, not with what the header claims.
    let mut buf = Vec::new();
    while let Some(chunk) =
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut stream), cx)).await
    {
        let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", e))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

async fn import_content(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<FormatQuery>,
    body: Body,
) -> Response {
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
    // One import body in memory at a time: a second is refused at once,
    // before its body is read, rather than queued.
    let Ok(_receiving) = Arc::clone(&state.import_gate).try_acquire_owned() else {
        return error(
            StatusCode::CONFLICT,
            "busy",
            "another import body is being received; retry later",
        );
    };
    let body = match read_bounded(&headers, body, state.import_limit).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let max = state.node.config().catalog.max_items_per_import;
    let items = match tokio::task::spawn_blocking(move || parse_import(format, &body, max)).await {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => return actors_error(&ActorsError::Catalog(e)),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    };
    import(&state, items).await
}

async fn trigger_federation(State(state): State<AdminState>) -> Response {
    match state.node.trigger_federation(LONG_OPERATION_TIMEOUT).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => actors_error(&e),
    }
}
