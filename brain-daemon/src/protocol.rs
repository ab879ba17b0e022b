//! The socket protocol: newline-delimited JSON, one object per line each way.
//!
//! Request: `{"id": <any JSON>, "op": "<name>", ...fields}`. Response: the same
//! `id` (null when the request could not be parsed far enough to read it) and
//! either `{"id", "ok": true, "result": ...}` or
//! `{"id", "ok": false, "error": {"code": "...", "message": "..."}}`.
//! Responses on one connection may come out of request order when several
//! requests are in flight (up to `max_in_flight_per_connection`): match them
//! by `id`. Unknown fields are refused (`unknown_field`).
//!
//! # Operations
//!
//! Every op needs a role ([`crate::access`]): `recommend`, `observe`,
//! `stats` and `health` the `app` role; the others the `system` role.
//!
//! | op | fields | result |
//! | --- | --- | --- |
//! | `recommend` | `hour` 0–23, `weekday` 0–6 (0 = Monday) (both default to the current UTC time), `recent` [content id] (newest first, ≤ 50), `mood` string (≤ 512 bytes), `k` 1–100 (default 10) | `{"items": [{"content_id", "title", "score", "confidence", "reason": {"kind", ...}, "reason_text"}]}` |
//! | `observe` | `content_id`, `fraction` 0–1, `at` unix seconds (default now), `hour`, `weekday` (default: from `at`, UTC) | `{"seq", "patterns_changed", "known_item", "duplicate"}`, sent after the durable commit; episodes are kept in `at` order whatever the arrival order, and the same `content_id` at the same `at` again is `duplicate: true` and changes nothing |
//! | `catalog.upsert` | `items`: [{`id`, `title`, `genres`, `year`, `description`}] | `{"upserted", "catalog_items"}` (embedded by the model, all or nothing) |
//! | `catalog.import` | `path` (a JSON-lines file of items, read by the daemon: a regular file inside `catalog_import_dir`, relative paths taken there; `forbidden` for anything outside or missing, `not_available` without the directory) or `lines` (the same text inline) | `{"imported", "upserted", "catalog_items"}` (committed in chunks of 512 items) |
//! | `stats` | – | counters: `episodes`, `last_episode_seq`, `local_patterns`, `global_patterns`, `trends`, `catalog_items`, `index_items`, versions, `forget_pending`, and `sync`: `{"enabled", "last_success_ms", "last_error": {"kind", "message", "at_ms"}, "next_attempt_ms", "next_kind", "syncs_ok", "syncs_failed", "bytes_up", "bytes_down", "snapshots_today", "snapshots_refused", "node"}` (bytes: request and response frames, totals), and `privacy`: `{"budget": {"epsilon_budget", "delta", "epsilon_spent", "epsilon_left", "releases", "renews_at_ms"}, "released_upto", "pending", "pending_upto", "in_session", "last", "epsilon_central", "epsilon_local"}` (the daily budget over the last 24 hours; `epsilon_local`: what the TV's own noise share alone guarantees) |
//! | `history` | `limit` 1–1000 (default 100) | `{"episodes": [{"seq", "content_id", "fraction", "at", "hour", "weekday"}]}` newest first |
//! | `health` | – | `model` (loading/ready/failed), `store` (opened/created/recovered/down), `store_recovered`, `index` (loaded/rebuilt), `index_rebuilt_reason`, `running`, `restarts`, `last_failures` |
//! | `forget` | – | `{"forgotten": true}`: history and local patterns erased; the next syncs send a forget until a node accepts it |
//! | `sync.now` | – | a sync attempt now (system role): `{"outcome": "ok" \| "retry_after" \| "resync_required" \| "unreachable" \| "refused" \| "local", "kind": "delta" \| "snapshot" \| "forget", "node", "message", "bytes_up", "bytes_down", "catalog_upserted", "catalog_more", "fleet_more", "round" (the round step sent: `keys`, `shares`, `masked_input`, `unmask` or null), "forget_acknowledged", "next_attempt_ms"}`; `not_available` when no node is configured |
//! | `debug.panic_inference` | – | `{"armed": true}`; only with `debug_ops = true`, else `debug_disabled`. The `debug.*` ops exist only in a build with the `testing` feature (the tests'); elsewhere they are `unknown_op` |
//! | `debug.hold` | `timeout_ms` 1–30000 (default 30000) | `{"released": true}` once a `debug.release` comes, `{"released": false}` at the timeout; meanwhile it is a request in flight like any other (it counts against both in-flight limits, and shutdown waits for it). Only with `debug_ops = true`, else `debug_disabled` |
//! | `debug.release` | – | `{"released": n}`: ends every `debug.hold` waiting now (n of them). Answered at once by the connection, outside the in-flight limits (so it works while they are reached). Only with `debug_ops = true`, else `debug_disabled` |
//! | `debug.status` | – | `{"held", "in_flight", "connections"}`: requests waiting in `debug.hold`, requests in flight daemon-wide (including the held ones), open connections (including this one). Answered like `debug.release`. Only with `debug_ops = true`, else `debug_disabled` |
//!
//! # Error codes
//!
//! | code | meaning | connection |
//! | --- | --- | --- |
//! | `request_too_large` | line longer than `max_request_bytes` (64 KiB); the rest of the line is discarded | stays open |
//! | `invalid_utf8` | the line is not UTF-8 | stays open |
//! | `invalid_json` | not JSON (numbers out of f64 range such as `1e999` land here) | stays open |
//! | `invalid_request` | not an object, or `op` not a string | stays open |
//! | `unknown_op` | no such op | stays open |
//! | `missing_field` / `unknown_field` / `invalid_field` | a field is missing, unexpected, of the wrong type or out of range (`hour` 25, `fraction` -1, ...) | stays open |
//! | `busy` | the daemon-wide in-flight limit, or the inference queue, is full; retry | stays open |
//! | `too_many_connections` | past `max_connections`; sent once, then the daemon closes | closed |
//! | `unavailable` | an actor is restarting after a failure; retry | stays open |
//! | `inference_failed` | the model actor died while handling this request | stays open |
//! | `model_unavailable` | the model could not be loaded (moods, catalog text) | stays open |
//! | `storage_error` | redb failed (I/O); nothing was changed | stays open |
//! | `disk_full` | redb failed for lack of space; nothing was changed | stays open |
//! | `catalog_full` | the catalog limit would be exceeded; nothing was changed | stays open |
//! | `not_available` | the op's part is off (`sync.now` with no node configured) | stays open |
//! | `debug_disabled` | a `debug.*` op without `debug_ops = true` | stays open |
//! | `forbidden` | the connection's role (from its peer's uid and gid, `[access]`) does not cover the op, or a `catalog.import` path is outside the import directory or missing | stays open |
//! | `rate_limited` | more `observe`s on this connection than `[access] observe_per_sec` / `observe_burst` allow; retry later | stays open |
//! | `internal` | anything else (logged) | stays open |

#[cfg(feature = "daemon")]
use omega_brain::actors::{ActorError, ChildKind};
#[cfg(feature = "daemon")]
use omega_brain::{BrainError, CoreError};
use omega_brain_core::RecommendRequest;
use omega_protocol::catalog_import::{parse_import, ImportFormat};
use omega_protocol::{CatalogItem, ContentId, ViewingContext};
use serde_json::{json, Map, Value};

/// Most recent ids in a `recommend`.
pub const MAX_RECENT: usize = 50;
/// Longest mood text.
pub const MAX_MOOD_BYTES: usize = 512;
/// Largest `k`.
pub const MAX_K: u64 = 100;
/// Items per commit in `catalog.import`.
pub const IMPORT_CHUNK: usize = 512;
/// Longest `debug.hold`, and its default, in milliseconds.
pub const MAX_HOLD_MS: u64 = 30_000;

/// A typed protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    /// Stable machine-readable code (see the table).
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ProtoError {
    /// An error with a code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(feature = "daemon")]
impl From<ActorError> for ProtoError {
    fn from(e: ActorError) -> Self {
        let code = match &e {
            ActorError::Unavailable(_) => "unavailable",
            ActorError::Crashed(ChildKind::Inference) => "inference_failed",
            ActorError::Crashed(_) => "internal",
            ActorError::Busy(_) => "busy",
            ActorError::ModelUnavailable(_) => "model_unavailable",
            ActorError::Embed(_) => "inference_failed",
            ActorError::Invalid(_) => "invalid_field",
            #[cfg(feature = "testing")]
            ActorError::DebugDisabled => "debug_disabled",
            ActorError::SyncDisabled => "not_available",
            ActorError::Spawn(_) | ActorError::RecommendPanicked(_) => "internal",
            ActorError::Brain(b) => match b {
                BrainError::Core(CoreError::CatalogFull { .. }) => "catalog_full",
                BrainError::Core(CoreError::Invalid(_)) => "invalid_field",
                BrainError::DiskFull(_) => "disk_full",
                BrainError::Storage(_) | BrainError::Io { .. } => "storage_error",
                _ => "internal",
            },
        };
        ProtoError::new(code, e.to_string())
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `recommend`: the recommender's own request, parsed from the line as is.
    Recommend(RecommendRequest),
    /// `observe`.
    Observe {
        /// What.
        content_id: ContentId,
        /// Share watched.
        fraction: f32,
        /// Unix seconds.
        at: u64,
        /// When (local).
        context: ViewingContext,
    },
    /// `catalog.upsert`.
    CatalogUpsert(Vec<CatalogItem>),
    /// `catalog.import` from a file.
    CatalogImportPath(std::path::PathBuf),
    /// `catalog.import` inline.
    CatalogImportLines(String),
    /// `stats`.
    Stats,
    /// `history`.
    History(usize),
    /// `health`.
    Health,
    /// `forget`.
    Forget,
    /// `sync.now`.
    SyncNow,
    /// `debug.panic_inference`.
    #[cfg(feature = "testing")]
    DebugPanicInference,
    /// `debug.hold`: wait for `debug.release`, at most this long.
    #[cfg(feature = "testing")]
    DebugHold(std::time::Duration),
    /// `debug.release`.
    #[cfg(feature = "testing")]
    DebugRelease,
    /// `debug.status`.
    #[cfg(feature = "testing")]
    DebugStatus,
}

struct Fields(Map<String, Value>);

fn bad(field: &str, why: impl std::fmt::Display) -> ProtoError {
    ProtoError::new("invalid_field", format!("{field}: {why}"))
}

impl Fields {
    fn take(&mut self, k: &str) -> Option<Value> {
        self.0.remove(k).filter(|v| !v.is_null())
    }

    fn uint(&mut self, k: &str, max: u64) -> Result<Option<u64>, ProtoError> {
        match self.take(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(bad(k, format!("{v} is not an integer in 0..={max}"))),
            },
        }
    }

    fn string(&mut self, k: &str, max: usize) -> Result<Option<String>, ProtoError> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
            Some(Value::String(s)) => Err(bad(k, format!("{} bytes, at most {max}", s.len()))),
            Some(v) => Err(bad(k, format!("expected a string, got {v}"))),
        }
    }

    fn required<T>(k: &str, v: Option<T>) -> Result<T, ProtoError> {
        v.ok_or_else(|| ProtoError::new("missing_field", format!("{k} is required")))
    }

    fn finish(self, op: &str) -> Result<(), ProtoError> {
        match self.0.keys().next() {
            Some(k) => Err(ProtoError::new(
                "unknown_field",
                format!("{op} has no field {k:?}"),
            )),
            None => Ok(()),
        }
    }

    fn context(&mut self, default_at: u64) -> Result<ViewingContext, ProtoError> {
        let hour = self.uint("hour", 23)?;
        let weekday = self.uint("weekday", 6)?;
        let d = ViewingContext::from_unix_utc(default_at);
        let h = hour.map_or(d.hour, |h| h as u8);
        let w = weekday.map_or(d.weekday, |w| w as u8);
        ViewingContext::new(h, w).map_err(|e| bad("context", e))
    }
}

fn content_id(field: &str, v: Value) -> Result<ContentId, ProtoError> {
    match v {
        Value::String(s) => ContentId::new(s).map_err(|e| bad(field, e)),
        v => Err(bad(field, format!("expected a string, got {v}"))),
    }
}

/// The fields of `recommend` ([`RecommendRequest`]'s serde names).
const RECOMMEND_FIELDS: [&str; 5] = ["hour", "weekday", "recent", "mood", "k"];

/// Parses one request line (without its newline) received at `now` (unix
/// seconds: the default time of `recommend` and `observe`). Returns the id
/// to echo (null when unreadable) and the request or its error.
pub fn parse(line: &[u8], now: u64) -> (Value, Result<Request, ProtoError>) {
    let text = match std::str::from_utf8(line) {
        Ok(t) => t,
        Err(e) => {
            return (
                Value::Null,
                Err(ProtoError::new("invalid_utf8", e.to_string())),
            )
        }
    };
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return (
                Value::Null,
                Err(ProtoError::new("invalid_json", e.to_string())),
            )
        }
    };
    let Value::Object(mut map) = v else {
        return (
            Value::Null,
            Err(ProtoError::new(
                "invalid_request",
                "a request is a JSON object",
            )),
        );
    };
    let id = map.remove("id").unwrap_or(Value::Null);
    let op = match map.remove("op") {
        Some(Value::String(s)) => s,
        Some(v) => {
            return (
                id,
                Err(ProtoError::new(
                    "invalid_request",
                    format!("op must be a string, got {v}"),
                )),
            )
        }
        None => return (id, Err(ProtoError::new("missing_field", "op is required"))),
    };
    let r = parse_op(&op, Fields(map), now);
    (id, r)
}

/// `recommend`: the fields deserialize into [`RecommendRequest`] (null means
/// absent; a missing hour or weekday is `now`'s, UTC), then the socket's
/// bounds are checked.
fn parse_recommend(mut f: Fields, now: u64) -> Result<RecommendRequest, ProtoError> {
    f.0.retain(|_, v| !v.is_null());
    if let Some(k) = f.0.keys().find(|k| !RECOMMEND_FIELDS.contains(&k.as_str())) {
        return Err(ProtoError::new(
            "unknown_field",
            format!("recommend has no field {k:?}"),
        ));
    }
    let d = ViewingContext::from_unix_utc(now);
    f.0.entry("hour").or_insert(d.hour.into());
    f.0.entry("weekday").or_insert(d.weekday.into());
    let mut req: RecommendRequest =
        serde_json::from_value(Value::Object(f.0)).map_err(|e| bad("recommend", e))?;
    req.context().map_err(|e| bad("context", e))?;
    if req.recent.len() > MAX_RECENT {
        return Err(bad(
            "recent",
            format!("{} ids, at most {MAX_RECENT}", req.recent.len()),
        ));
    }
    if let Some(m) = &req.mood {
        if m.len() > MAX_MOOD_BYTES {
            return Err(bad(
                "mood",
                format!("{} bytes, at most {MAX_MOOD_BYTES}", m.len()),
            ));
        }
    }
    if req.k == 0 || req.k as u64 > MAX_K {
        return Err(bad("k", format!("{} is not in 1..={MAX_K}", req.k)));
    }
    req.mood = req.mood_text().map(str::to_string);
    Ok(req)
}

fn parse_op(op: &str, mut f: Fields, now: u64) -> Result<Request, ProtoError> {
    let req = match op {
        "recommend" => return parse_recommend(f, now).map(Request::Recommend),
        "observe" => {
            let id = Fields::required("content_id", f.take("content_id"))?;
            let content_id = content_id("content_id", id)?;
            let fraction = match Fields::required("fraction", f.take("fraction"))? {
                Value::Number(n) => match n.as_f64() {
                    Some(x) if x.is_finite() && (0.0..=1.0).contains(&x) => x as f32,
                    _ => return Err(bad("fraction", format!("{n} is not in 0.0..=1.0"))),
                },
                v => return Err(bad("fraction", format!("expected a number, got {v}"))),
            };
            let at = f.uint("at", u64::from(u32::MAX) * 4)?.unwrap_or(now);
            let context = f.context(at)?;
            Request::Observe {
                content_id,
                fraction,
                at,
                context,
            }
        }
        "catalog.upsert" => {
            let items = Fields::required("items", f.take("items"))?;
            let items: Vec<CatalogItem> =
                serde_json::from_value(items).map_err(|e| bad("items", e))?;
            Request::CatalogUpsert(items)
        }
        "catalog.import" => {
            let path = f.string("path", 4096)?;
            let lines = f.string("lines", usize::MAX)?;
            match (path, lines) {
                (Some(p), None) => Request::CatalogImportPath(p.into()),
                (None, Some(l)) => Request::CatalogImportLines(l),
                _ => {
                    return Err(ProtoError::new(
                        "missing_field",
                        "catalog.import takes exactly one of path or lines",
                    ))
                }
            }
        }
        "stats" => Request::Stats,
        "health" => Request::Health,
        "forget" => Request::Forget,
        "history" => Request::History(match f.uint("limit", 1000)? {
            Some(0) => return Err(bad("limit", "must be at least 1")),
            Some(n) => n as usize,
            None => 100,
        }),
        "sync.now" => Request::SyncNow,
        #[cfg(feature = "testing")]
        "debug.panic_inference" => Request::DebugPanicInference,
        #[cfg(feature = "testing")]
        "debug.hold" => {
            let ms = match f.uint("timeout_ms", MAX_HOLD_MS)? {
                Some(0) => return Err(bad("timeout_ms", "must be at least 1")),
                Some(ms) => ms,
                None => MAX_HOLD_MS,
            };
            Request::DebugHold(std::time::Duration::from_millis(ms))
        }
        #[cfg(feature = "testing")]
        "debug.release" => Request::DebugRelease,
        #[cfg(feature = "testing")]
        "debug.status" => Request::DebugStatus,
        other => return Err(ProtoError::new("unknown_op", format!("no op {other:?}"))),
    };
    f.finish(op)?;
    Ok(req)
}

/// Parses JSON-lines catalog items (blank lines skipped; the format's one
/// parser, `omega_protocol::catalog_import`); errors name the line. The file
/// size bound of `catalog.import` bounds the item count.
pub fn parse_catalog_lines(text: &str) -> Result<Vec<CatalogItem>, ProtoError> {
    parse_import(ImportFormat::JsonLines, text.as_bytes(), usize::MAX)
        .map_err(|e| ProtoError::new("invalid_field", e.to_string()))
}

/// Encodes a success line (with the trailing newline).
pub fn ok_line(id: &Value, result: Value) -> String {
    let mut s = json!({"id": id, "ok": true, "result": result}).to_string();
    s.push('\n');
    s
}

/// Encodes an error line (with the trailing newline).
pub fn err_line(id: &Value, e: &ProtoError) -> String {
    let mut s =
        json!({"id": id, "ok": false, "error": {"code": e.code, "message": e.message}}).to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// 2023-11-14 22:13:20 UTC, a Tuesday.
    const NOW: u64 = 1_700_000_000;

    const OPS: &[&str] = &[
        "recommend",
        "observe",
        "catalog.upsert",
        "catalog.import",
        "stats",
        "health",
        "forget",
        "history",
        "sync.now",
        "debug.panic_inference",
        "debug.hold",
        "debug.release",
        "debug.status",
        "no.such.op",
    ];
    const FIELDS: &[&str] = &[
        "hour",
        "weekday",
        "recent",
        "mood",
        "k",
        "content_id",
        "fraction",
        "at",
        "items",
        "path",
        "limit",
        "timeout_ms",
        "x",
    ];

    /// Any JSON value, a few levels deep, with the numbers and strings that
    /// probe bounds (huge, negative, fractional, empty, very long).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
            ".{0,40}".prop_map(Value::from),
            (1usize..70_000).prop_map(|n| Value::from("x".repeat(n))),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Arbitrary bytes: a typed error or a request, never a panic.
        #[test]
        fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let (_, r) = parse(&bytes, NOW);
            if let Err(e) = r {
                prop_assert!(!e.code.is_empty() && !e.message.is_empty());
            }
        }

        /// Well-formed requests with arbitrary field values: the id is echoed
        /// and every refusal is typed.
        #[test]
        fn parse_echoes_the_id_and_types_every_error(
            op in prop::sample::select(OPS),
            fields in prop::collection::vec((prop::sample::select(FIELDS), json_value()), 0..5),
            id in any::<u32>(),
        ) {
            let mut req = serde_json::Map::new();
            req.insert("id".into(), Value::from(id));
            req.insert("op".into(), Value::from(op));
            for (k, v) in fields {
                req.insert(k.into(), v);
            }
            let line = serde_json::to_vec(&Value::Object(req)).unwrap();
            let (got_id, r) = parse(&line, NOW);
            prop_assert_eq!(got_id, Value::from(id));
            if let Err(e) = r {
                prop_assert!(
                    ["invalid_field", "unknown_field", "missing_field", "unknown_op"]
                        .contains(&e.code),
                    "unexpected code {}", e.code
                );
            }
        }
    }

    fn code(line: &str) -> &'static str {
        parse(line.as_bytes(), NOW).1.unwrap_err().code
    }

    #[test]
    fn missing_times_come_from_now() {
        let (_, r) = parse(br#"{"id":1,"op":"recommend","mood":"  "}"#, NOW);
        let Ok(Request::Recommend(req)) = r else {
            panic!("{r:?}")
        };
        assert_eq!((req.hour, req.weekday, req.k), (22, 1, 10));
        assert_eq!(req.mood, None, "a blank mood is no mood");
        let (_, r) = parse(
            br#"{"id":1,"op":"observe","content_id":"a","fraction":0.5}"#,
            NOW,
        );
        let Ok(Request::Observe { at, context, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!((at, context.hour, context.weekday), (NOW, 22, 1));
    }

    #[test]
    fn typed_errors() {
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(
            code(r#"{"id":1,"op":"observe","content_id":"a","fraction":1e999}"#),
            "invalid_json"
        );
        assert_eq!(
            code(r#"{"id":1,"op":"observe","content_id":"a","fraction":-1}"#),
            "invalid_field"
        );
        assert_eq!(
            code(r#"{"id":1,"op":"recommend","hour":25}"#),
            "invalid_field"
        );
        assert_eq!(code(r#"{"id":1,"op":"recommend","k":0}"#), "invalid_field");
        assert_eq!(code(r#"{"id":1,"op":"nope"}"#), "unknown_op");
        assert_eq!(code(r#"{"id":1,"op":"stats","x":1}"#), "unknown_field");
        assert_eq!(
            code(r#"{"id":1,"op":"observe","fraction":0.5}"#),
            "missing_field"
        );
        assert_eq!(code("[1]"), "invalid_request");
        assert_eq!(parse(b"\xff\xfe", NOW).1.unwrap_err().code, "invalid_utf8");
        let (id, r) = parse(br#"{"id":"x","op":"recommend","hour":20,"weekday":4,"recent":["a"],"mood":"calm","k":5}"#, NOW);
        assert_eq!(id, json!("x"));
        assert!(matches!(
            r.unwrap(),
            Request::Recommend(RecommendRequest { k: 5, .. })
        ));
        #[cfg(feature = "testing")]
        {
            assert_eq!(
                code(r#"{"id":1,"op":"debug.hold","timeout_ms":30001}"#),
                "invalid_field"
            );
            assert_eq!(
                code(r#"{"id":1,"op":"debug.hold","timeout_ms":0}"#),
                "invalid_field"
            );
            assert_eq!(
                parse(br#"{"id":1,"op":"debug.hold","timeout_ms":250}"#, NOW).1,
                Ok(Request::DebugHold(std::time::Duration::from_millis(250)))
            );
        }
        #[cfg(not(feature = "testing"))]
        assert_eq!(code(r#"{"id":1,"op":"debug.hold"}"#), "unknown_op");
    }
}
