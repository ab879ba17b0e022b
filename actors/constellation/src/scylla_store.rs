//! [`ScyllaStore`]: the [`PatternStore`] on ScyllaDB or Apache Cassandra
//! (CQL native protocol v4, the `scylla` driver), for nodes that share one
//! database instead of each keeping a redb file.
//!
//! Schema: `deploy/scylla/schema.cql`, applied by [`ScyllaStore::open`]
//! (every statement `IF NOT EXISTS`, schema agreement awaited once at the
//! end). Partitions: a device's state and patterns (`devices`); per region
//! the device patterns for the federation's scan (`region_patterns`), the
//! globals with their tombstones and trends (`globals`) and the learned
//! totals (`region_totals`); the catalog items (`catalog_items`), its change
//! log bucketed by version (`catalog_log`, 4096 versions a partition, so a
//! page of changes reads one or two partitions in order) and its version
//! counter (`catalog_meta`). Blobs are postcard. Every statement is prepared
//! once in `open`; reads and plain writes are marked idempotent,
//! lightweight transactions are not; every scan is paged by the driver;
//! batches never span partitions; consistency (LOCAL_QUORUM by default,
//! LOCAL_SERIAL for transactions) and the request timeout come from
//! [`ScyllaOptions`].
//!
//! Per-device ordering: every write of a device is a lightweight transaction
//! `IF wts = <the value read>` on its partition (one conditional batch: the
//! state, the pattern rows), where `wts` is a microsecond timestamp that
//! grows with each write. A write computed from a state another node has
//! changed meanwhile is refused ([`StoreError::Conflict`], nothing applied)
//! instead of overwriting it; the caller re-reads. The device's pattern
//! version cannot order writes (a reset starts it again), and a plain
//! `USING TIMESTAMP` write cannot refuse a stale read-modify-write; the
//! transaction costs one Paxos round per sync (measured in the tests' log).
//!
//! Region rows follow the device partition, which is the truth: after the
//! transaction they are written `USING TIMESTAMP wts` (so a late writer never
//! overwrites a newer one), then a per-device marker row (`kind = 0`) with
//! `wts`. A crash between the two leaves the marker behind the device's
//! `wts`; the device's next write sees that and rewrites all its region rows
//! (deleting its rows in every region first). Until then the federation may
//! read a stale row, which it tolerates (one device's old patterns).
//!
//! Versions: a region's global version is the condition of the publication's
//! transaction (`IF version = <read>`), so concurrent federation runs cannot
//! both publish. Catalog versions come from a counter row: a transaction
//! allocates the change's versions (`allocated`), the rows are written, a
//! second transaction makes them visible (`committed`, what readers see). A
//! writer that finds `allocated != committed` repairs a crashed write
//! (recounts live items and commits the allocated range, so its partly
//! written changes become visible). Catalog writes are rare; two concurrent
//! ones get [`StoreError::Conflict`] for one of them.
//!
//! Learned totals: each node folds its own aggregation rounds and adds them
//! to the region's row with a transaction `IF rounds = <read>` (`IF NOT
//! EXISTS` for the first); a node that lost the race gets
//! [`StoreError::Conflict`], re-reads and adds its rounds again.
//!
//! Cluster: the store is also the [`ClusterStore`] of the nodes sharing
//! it: heartbeats in `members` (`USING TTL`), the federation lease in
//! `leases` (lightweight transactions with a TTL; see the impl).
//!
//! The trait is blocking; the store owns a small tokio runtime (two workers)
//! for the async driver and `block_on`s it in each call: directly from plain
//! threads, inside `block_in_place` from a multi-threaded runtime's threads
//! (`spawn_blocking` ones, and workers of callers that break the trait's
//! rule and call from async code), and from a scoped thread inside a
//! current-thread runtime. Dropping the store shuts its runtime down in the background, so a
//! drop inside an async context does not panic.
//!
//! Deployment note: a sync of
//! [`MAX_PATTERNS_PER_DEVICE`](omega_constellation_core::store::MAX_PATTERNS_PER_DEVICE) patterns or a
//! publication of [`MAX_GLOBALS_PER_REGION`](omega_constellation_core::store::MAX_GLOBALS_PER_REGION) globals is one batch of up to
//! about 150 KB; the cluster's `batch_size_fail_threshold` must allow it
//! (ScyllaDB's default 1 MiB does; Cassandra's 50 KiB does not, see
//! `scripts/cassandra.sh`). The catalog's items are one partition (id order
//! for [`PatternStore::catalog_entries`]), fine for catalogs of up to about
//! 100,000 titles.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};

use crate::record::{dec, enc};

use omega_protocol::limits::MAX_CATALOG_PAGE;
use omega_protocol::{
    ContentId, DeviceId, PackedCatalogEntry, PackedCatalogPage, PackedGlobalPattern, PatternId,
    Region, TrendSignal,
};

use omega_constellation_core::aggregate::RegionTotals;
use omega_constellation_core::cluster::{check_args, ClusterStore, Lease, Member, MAX_MEMBERS};
use omega_constellation_core::store::{
    check_publish, clamp_page, plan_publish, DeviceInfo, DeviceState, DeviceSync, GlobalRecord,
    GlobalsChange, PatternCursor, PatternStore, RegionGlobals, RegionPattern, RegionPatternPage,
    StoreError, StoredPattern, MAX_SCAN_PAGE,
};

/// The schema (migration 1) with `{keyspace}` and `{replication}` to fill.
pub const SCHEMA_CQL: &str = include_str!("../../../deploy/scylla/schema.cql");
/// The blob format this build reads and writes (`store_meta`, `format`).
pub const SCYLLA_FORMAT: u64 = 1;
/// How long the write token of a forgotten device outlives it: writes of the
/// device in that window still order after the forget.
const FORGET_TTL_SECS: i32 = 86_400;
/// Catalog versions per `catalog_log` partition.
const LOG_BUCKET: u64 = 4096;
/// Rows per page the driver fetches in scans.
const PAGE_SIZE: i32 = 1000;
/// Statements per batch of region rows or catalog rows (region rows are not
/// written atomically, the marker row says when they are complete).
const CHUNK: usize = 64;

/// Login for the cluster (the password comes from a file, never the TOML).
#[derive(Clone)]
pub struct Credentials {
    /// The role name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How [`ScyllaStore::open`] reaches and lays out its keyspace.
#[derive(Debug, Clone)]
pub struct ScyllaOptions {
    /// `host:port` of some nodes of the cluster.
    pub contact_points: Vec<String>,
    /// The keyspace (created if missing): a letter, then letters, digits or
    /// `_`, at most 48.
    pub keyspace: String,
    /// The keyspace's replication map, e.g. `class = NetworkTopologyStrategy,
    /// dc1 = 3` (keys and values: letters, digits, `_ . -`).
    pub replication: BTreeMap<String, String>,
    /// Consistency of reads and writes.
    pub consistency: Consistency,
    /// Consistency of the lightweight transactions' Paxos phase.
    pub serial_consistency: SerialConsistency,
    /// Every request's timeout (the driver's, per attempt).
    pub request_timeout: Duration,
    /// Login, `None` for a cluster without authentication.
    pub credentials: Option<Credentials>,
}

impl ScyllaOptions {
    /// Options for `keyspace` at `contact_points` with SimpleStrategy
    /// replication factor 1, LOCAL_QUORUM, LOCAL_SERIAL, 5 s timeouts and no
    /// login (a development or test cluster).
    pub fn new(contact_points: Vec<String>, keyspace: impl Into<String>) -> Self {
        Self {
            contact_points,
            keyspace: keyspace.into(),
            replication: BTreeMap::from([
                ("class".to_owned(), "SimpleStrategy".to_owned()),
                ("replication_factor".to_owned(), "1".to_owned()),
            ]),
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            request_timeout: Duration::from_secs(5),
            credentials: None,
        }
    }
}

/// Where the tests' database is: `OMEGA_TEST_CQL` (host:port), or `None`
/// after printing (once) that the test is skipped. With `OMEGA_REQUIRE_CQL=1`
/// (CI) a missing address panics instead: the tests must not pass unrun.
#[cfg(feature = "testing")]
pub fn cql_test_target() -> Option<String> {
    let required = std::env::var("OMEGA_REQUIRE_CQL").is_ok_and(|v| v == "1");
    match std::env::var("OMEGA_TEST_CQL") {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ if required => panic!(
            "OMEGA_REQUIRE_CQL=1 but OMEGA_TEST_CQL is not set \
             (scripts/cassandra.sh start; export OMEGA_TEST_CQL=127.0.0.1:9042)"
        ),
        _ => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                println!(
                    "skipped: OMEGA_TEST_CQL not set \
                     (scripts/cassandra.sh start; export OMEGA_TEST_CQL=127.0.0.1:9042)"
                );
            });
            None
        }
    }
}

/// Options for a keyspace at `addr` that no other test or run uses.
#[cfg(feature = "testing")]
pub fn fresh_test_options(addr: &str) -> ScyllaOptions {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let ks = format!(
        "omega_t{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    ScyllaOptions::new(vec![addr.to_owned()], ks)
}

/// A fresh keyspace at `addr` with the schema applied, opened off the async
/// executor, for tests that then start nodes on it: its options, and the
/// store (dropping the keyspace when dropped).
#[cfg(feature = "testing")]
pub async fn fresh_test_store(addr: &str) -> Result<(ScyllaOptions, ScyllaStore), StoreError> {
    let opts = fresh_test_options(addr);
    let o = opts.clone();
    let store = tokio::task::spawn_blocking(move || ScyllaStore::open(&o))
        .await
        .map_err(|e| StoreError::backend("open", e))??;
    Ok((opts, store.dropping_keyspace()))
}

/// A consistency level by its CQL name (`LOCAL_QUORUM`, `QUORUM`, `ONE`, …).
pub fn parse_consistency(name: &str) -> Option<Consistency> {
    Some(match name.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => return None,
    })
}

fn valid_keyspace(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 48
}

fn replication_cql(map: &BTreeMap<String, String>) -> Result<String, StoreError> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    if !map.contains_key("class") {
        return Err(StoreError::InvalidInput {
            reason: "the replication map has no class".into(),
        });
    }
    let mut parts = Vec::new();
    for (k, v) in map {
        if !ok(k) || !ok(v) {
            return Err(StoreError::InvalidInput {
                reason: format!("replication entry {k:?} = {v:?} is not a plain name"),
            });
        }
        parts.push(format!("'{k}': '{v}'"));
    }
    Ok(format!("{{{}}}", parts.join(", ")))
}

/// Migration 2 for keyspaces made before it: the `region_totals.rounds`
/// column (the condition of the totals' transactions), and each row's value
/// from its totals. Idempotent; two nodes migrating at once are fine (the
/// column is re-checked after a refused `ALTER`, the values are written `IF
/// rounds = null`).
async fn migrate_totals_rounds(session: &Session, ks: &str) -> Result<(), StoreError> {
    let op = "migrate region_totals.rounds";
    let has_column = || async {
        let rows = session
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns \
                 WHERE keyspace_name = ? AND table_name = 'region_totals' AND column_name = 'rounds'",
                (ks,),
            )
            .await
            .map_err(be(op))?
            .into_rows_result()
            .map_err(be(op))?;
        Ok::<_, StoreError>(rows.rows_num() > 0)
    };
    if !has_column().await? {
        let added = session
            .query_unpaged(
                format!("ALTER TABLE {ks}.region_totals ADD rounds bigint"),
                &[],
            )
            .await;
        session.await_schema_agreement().await.map_err(be(op))?;
        if let Err(e) = added {
            if !has_column().await? {
                return Err(StoreError::backend(op, e));
            }
        }
    }
    let rows = session
        .query_unpaged(
            format!("SELECT region, rounds FROM {ks}.region_totals"),
            &[],
        )
        .await
        .map_err(be(op))?
        .into_rows_result()
        .map_err(be(op))?;
    let legacy: Vec<String> = rows
        .rows::<(String, Option<i64>)>()
        .map_err(be(op))?
        .filter_map(|r| match r {
            Ok((region, None)) => Some(Ok(region)),
            Ok(_) => None,
            Err(e) => Some(Err(be(op)(e))),
        })
        .collect::<Result<_, _>>()?;
    for region in legacy {
        let row: Option<(Option<Vec<u8>>,)> = session
            .query_unpaged(
                format!("SELECT totals FROM {ks}.region_totals WHERE region = ?"),
                (region.as_str(),),
            )
            .await
            .map_err(be(op))?
            .into_rows_result()
            .map_err(be(op))?
            .maybe_first_row()
            .map_err(be(op))?;
        let Some((Some(blob),)) = row else { continue };
        let totals: RegionTotals = dec("learned totals", &blob)?;
        session
            .query_unpaged(
                format!(
                    "UPDATE {ks}.region_totals SET rounds = ? WHERE region = ? IF rounds = null"
                ),
                (i64::from(totals.rounds), region.as_str()),
            )
            .await
            .map_err(be(op))?;
    }
    Ok(())
}

/// The schema's statements for `keyspace`, in order.
pub fn schema_statements(keyspace: &str, replication: &str) -> Vec<String> {
    let text: String = SCHEMA_CQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace("{keyspace}", keyspace)
                .replace("{replication}", replication)
        })
        .collect()
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |message| StoreError::Corrupt { what, message }
}

fn be<E: std::fmt::Display>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::backend(op, e)
}

/// A `u64` as a `bigint` that sorts like it (clustering keys).
fn key(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// The inverse of [`key`].
fn unkey(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// A `u64` in a non-key `bigint` column (bit for bit).
fn big(v: u64) -> CqlValue {
    CqlValue::BigInt(v as i64)
}

fn text(s: &str) -> CqlValue {
    CqlValue::Text(s.to_owned())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The next write token of a partition whose token is `old`.
fn next_wts(old: Option<i64>) -> i64 {
    let now = now_us();
    old.map_or(now, |o| now.max(o.saturating_add(2)))
}

type Values = Vec<Option<CqlValue>>;

/// Every statement, prepared once in [`ScyllaStore::open`].
#[derive(Debug)]
struct Statements {
    dev_head: PreparedStatement,
    dev_read: PreparedStatement,
    dev_cas: PreparedStatement,
    dev_forget: PreparedStatement,
    dev_put: PreparedStatement,
    dev_del: PreparedStatement,
    marker_read: PreparedStatement,
    marker_put: PreparedStatement,
    reg_put: PreparedStatement,
    reg_del: PreparedStatement,
    reg_del_device: PreparedStatement,
    reg_scan: PreparedStatement,
    reg_scan_after: PreparedStatement,
    regions_put: PreparedStatement,
    regions_read: PreparedStatement,
    glob_read: PreparedStatement,
    glob_cas: PreparedStatement,
    glob_put: PreparedStatement,
    glob_del: PreparedStatement,
    totals_read: PreparedStatement,
    totals_rounds: PreparedStatement,
    totals_insert: PreparedStatement,
    totals_cas: PreparedStatement,
    item_read: PreparedStatement,
    item_put: PreparedStatement,
    items_scan: PreparedStatement,
    items_scan_after: PreparedStatement,
    log_put: PreparedStatement,
    log_del: PreparedStatement,
    log_scan: PreparedStatement,
    meta_read: PreparedStatement,
    meta_read_serial: PreparedStatement,
    meta_alloc: PreparedStatement,
    meta_commit: PreparedStatement,
    member_put: PreparedStatement,
    members_read: PreparedStatement,
    lease_read: PreparedStatement,
    lease_insert: PreparedStatement,
    lease_update: PreparedStatement,
    lease_delete: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, ks: &str) -> Result<Self, StoreError> {
        let prep = |cql: String, idempotent: bool| async move {
            let mut s = session.prepare(cql).await.map_err(be("prepare"))?;
            s.set_is_idempotent(idempotent);
            s.set_page_size(PAGE_SIZE);
            Ok::<_, StoreError>(s)
        };
        let read = |cql: String| prep(cql, true);
        let write = |cql: String| prep(cql, true);
        let cas = |cql: String| prep(cql, false);
        let mut meta_read_serial = read(format!(
            "SELECT allocated, committed, live FROM {ks}.catalog_meta WHERE name = 'catalog'"
        ))
        .await?;
        meta_read_serial.set_consistency(Consistency::LocalSerial);
        let mut lease_read = read(format!(
            "SELECT holder, expires_ms FROM {ks}.leases WHERE name = ?"
        ))
        .await?;
        lease_read.set_consistency(Consistency::LocalSerial);
        Ok(Self {
            dev_head: read(format!(
                "SELECT wts, pattern_version, region, last_sync_ms, pattern_id FROM {ks}.devices WHERE device = ?"
            ))
            .await?,
            dev_read: read(format!(
                "SELECT wts, pattern_version, region, last_sync_ms, pattern_id, pattern FROM {ks}.devices WHERE device = ?"
            ))
            .await?,
            dev_cas: cas(format!(
                "UPDATE {ks}.devices SET wts = ?, pattern_version = ?, region = ?, last_sync_ms = ? WHERE device = ? IF wts = ?"
            ))
            .await?,
            dev_forget: cas(format!(
                "UPDATE {ks}.devices USING TTL {FORGET_TTL_SECS} SET wts = ?, pattern_version = null, region = null, last_sync_ms = null WHERE device = ? IF wts = ?"
            ))
            .await?,
            dev_put: write(format!(
                "INSERT INTO {ks}.devices (device, pattern_id, pattern) VALUES (?, ?, ?)"
            ))
            .await?,
            dev_del: write(format!(
                "DELETE FROM {ks}.devices WHERE device = ? AND pattern_id = ?"
            ))
            .await?,
            marker_read: read(format!(
                "SELECT wts FROM {ks}.region_patterns WHERE region = ? AND device = ? AND kind = 0 AND pattern_id = 0"
            ))
            .await?,
            marker_put: write(format!(
                "INSERT INTO {ks}.region_patterns (region, device, kind, pattern_id, wts) VALUES (?, ?, 0, 0, ?) USING TIMESTAMP ?"
            ))
            .await?,
            reg_put: write(format!(
                "INSERT INTO {ks}.region_patterns (region, device, kind, pattern_id, pattern) VALUES (?, ?, 1, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            reg_del: write(format!(
                "DELETE FROM {ks}.region_patterns USING TIMESTAMP ? WHERE region = ? AND device = ? AND kind = 1 AND pattern_id = ?"
            ))
            .await?,
            reg_del_device: write(format!(
                "DELETE FROM {ks}.region_patterns USING TIMESTAMP ? WHERE region = ? AND device = ?"
            ))
            .await?,
            reg_scan: read(format!(
                "SELECT device, kind, pattern_id, pattern FROM {ks}.region_patterns WHERE region = ?"
            ))
            .await?,
            reg_scan_after: read(format!(
                "SELECT device, kind, pattern_id, pattern FROM {ks}.region_patterns WHERE region = ? AND (device, kind, pattern_id) > (?, 1, ?)"
            ))
            .await?,
            regions_put: write(format!(
                "INSERT INTO {ks}.regions (bucket, region) VALUES (0, ?)"
            ))
            .await?,
            regions_read: read(format!("SELECT region FROM {ks}.regions WHERE bucket = 0")).await?,
            glob_read: read(format!(
                "SELECT version, floor, max_id, trends, id, changed, pattern FROM {ks}.globals WHERE region = ?"
            ))
            .await?,
            glob_cas: cas(format!(
                "UPDATE {ks}.globals SET version = ?, floor = ?, max_id = ?, trends = ? WHERE region = ? IF version = ?"
            ))
            .await?,
            glob_put: write(format!(
                "INSERT INTO {ks}.globals (region, id, changed, pattern) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            glob_del: write(format!("DELETE FROM {ks}.globals WHERE region = ? AND id = ?")).await?,
            totals_read: read(format!(
                "SELECT totals FROM {ks}.region_totals WHERE region = ?"
            ))
            .await?,
            totals_rounds: read(format!(
                "SELECT rounds FROM {ks}.region_totals WHERE region = ?"
            ))
            .await?,
            totals_insert: cas(format!(
                "INSERT INTO {ks}.region_totals (region, totals, rounds) VALUES (?, ?, ?) IF NOT EXISTS"
            ))
            .await?,
            totals_cas: cas(format!(
                "UPDATE {ks}.region_totals SET totals = ?, rounds = ? WHERE region = ? IF rounds = ?"
            ))
            .await?,
            item_read: read(format!(
                "SELECT version, entry FROM {ks}.catalog_items WHERE bucket = 0 AND id = ?"
            ))
            .await?,
            item_put: write(format!(
                "INSERT INTO {ks}.catalog_items (bucket, id, version, entry) VALUES (0, ?, ?, ?)"
            ))
            .await?,
            items_scan: read(format!(
                "SELECT id, entry FROM {ks}.catalog_items WHERE bucket = 0"
            ))
            .await?,
            items_scan_after: read(format!(
                "SELECT id, entry FROM {ks}.catalog_items WHERE bucket = 0 AND id > ?"
            ))
            .await?,
            log_put: write(format!(
                "INSERT INTO {ks}.catalog_log (bucket, version, id, entry) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            log_del: write(format!(
                "DELETE FROM {ks}.catalog_log WHERE bucket = ? AND version = ?"
            ))
            .await?,
            log_scan: read(format!(
                "SELECT version, id, entry FROM {ks}.catalog_log WHERE bucket = ? AND version > ? AND version <= ?"
            ))
            .await?,
            meta_read: read(format!(
                "SELECT allocated, committed, live FROM {ks}.catalog_meta WHERE name = 'catalog'"
            ))
            .await?,
            meta_read_serial,
            meta_alloc: cas(format!(
                "UPDATE {ks}.catalog_meta SET allocated = ? WHERE name = 'catalog' IF allocated = ? AND committed = ?"
            ))
            .await?,
            meta_commit: cas(format!(
                "UPDATE {ks}.catalog_meta SET committed = ?, live = ? WHERE name = 'catalog' IF committed = ?"
            ))
            .await?,
            member_put: write(format!(
                "INSERT INTO {ks}.members (bucket, node, addr, heartbeat_ms, expires_ms) VALUES (0, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            members_read: read(format!(
                "SELECT node, addr, heartbeat_ms, expires_ms FROM {ks}.members WHERE bucket = 0"
            ))
            .await?,
            lease_read,
            lease_insert: cas(format!(
                "INSERT INTO {ks}.leases (name, holder, expires_ms) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?"
            ))
            .await?,
            lease_update: cas(format!(
                "UPDATE {ks}.leases USING TTL ? SET holder = ?, expires_ms = ? WHERE name = ? IF holder = ? AND expires_ms = ?"
            ))
            .await?,
            lease_delete: cas(format!(
                "DELETE FROM {ks}.leases WHERE name = ? IF holder = ?"
            ))
            .await?,
        })
    }
}

/// A device partition as read.
#[derive(Debug, Default)]
struct DeviceRead {
    wts: Option<i64>,
    state: Option<DeviceState>,
    /// Pattern ids, and the patterns when they were read.
    ids: Vec<PatternId>,
    patterns: Vec<StoredPattern>,
}

/// The catalog counter row.
#[derive(Debug, Clone, Copy, Default)]
struct CatalogMeta {
    allocated: u64,
    committed: u64,
    live: u64,
}

/// A region's globals partition as read.
#[derive(Debug, Default)]
struct GlobalsRead {
    version: Option<u64>,
    floor: u64,
    max_id: u64,
    trends: Vec<TrendSignal>,
    records: BTreeMap<u64, GlobalRecord>,
}

#[derive(Debug)]
struct Inner {
    session: Session,
    st: Statements,
}

/// The [`PatternStore`] on ScyllaDB / Cassandra (see the module docs).
#[derive(Debug)]
pub struct ScyllaStore {
    inner: Option<Inner>,
    rt: Option<tokio::runtime::Runtime>,
    keyspace: String,
    /// Drop the keyspace when the store is dropped (tests' fresh keyspaces).
    drop_keyspace: bool,
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if let (true, Some(inner)) = (self.drop_keyspace, &self.inner) {
                let cql = format!("DROP KEYSPACE IF EXISTS {}", self.keyspace);
                let dropped = block_on_own(&rt, async {
                    inner
                        .session
                        .query_unpaged(cql, &[])
                        .await
                        .map_err(be("drop keyspace"))
                });
                if let Err(e) = dropped {
                    tracing::warn!(keyspace = %self.keyspace, error = %e, "keyspace not dropped");
                }
            }
            {
                let _entered = rt.enter();
                self.inner.take();
            }
            rt.shutdown_background();
        }
    }
}

impl ScyllaStore {
    /// Connects, creates the keyspace and tables if missing (awaiting schema
    /// agreement once), checks the record format ([`StoreError::UnsupportedFormat`]
    /// for another) and prepares every statement. Blocking, like the trait.
    pub fn open(opts: &ScyllaOptions) -> Result<Self, StoreError> {
        if !valid_keyspace(&opts.keyspace) {
            return Err(StoreError::InvalidInput {
                reason: format!("{:?} is not a keyspace name", opts.keyspace),
            });
        }
        if opts.contact_points.is_empty() {
            return Err(StoreError::InvalidInput {
                reason: "no contact points".into(),
            });
        }
        let replication = replication_cql(&opts.replication)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("omega-scylla")
            .enable_all()
            .build()
            .map_err(be("open"))?;
        let inner = rt.block_on(Self::connect(opts, &replication))?;
        Ok(Self {
            inner: Some(inner),
            rt: Some(rt),
            keyspace: opts.keyspace.clone(),
            drop_keyspace: false,
        })
    }

    async fn connect(opts: &ScyllaOptions, replication: &str) -> Result<Inner, StoreError> {
        let op = "open";
        let profile = ExecutionProfile::builder()
            .consistency(opts.consistency)
            .serial_consistency(Some(opts.serial_consistency))
            .request_timeout(Some(opts.request_timeout))
            .build()
            .into_handle();
        let mut builder = SessionBuilder::new()
            .known_nodes(&opts.contact_points)
            .connection_timeout(opts.request_timeout)
            .auto_await_schema_agreement(false)
            .fetch_schema_metadata(false)
            .default_execution_profile_handle(profile);
        if let Some(c) = &opts.credentials {
            builder = builder.user(c.username.clone(), c.password.clone());
        }
        let session = builder.build().await.map_err(be(op))?;
        let ks = &opts.keyspace;
        for cql in schema_statements(ks, replication) {
            session.query_unpaged(cql, &[]).await.map_err(be(op))?;
        }
        session.await_schema_agreement().await.map_err(be(op))?;
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.store_meta (name, value) VALUES ('format', ?) IF NOT EXISTS"
                ),
                (SCYLLA_FORMAT as i64,),
            )
            .await
            .map_err(be(op))?;
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.catalog_meta (name, allocated, committed, live) VALUES ('catalog', 0, 0, 0) IF NOT EXISTS"),
                &[],
            )
            .await
            .map_err(be(op))?;
        let found: Option<(Option<i64>,)> = session
            .query_unpaged(
                format!("SELECT value FROM {ks}.store_meta WHERE name = 'format'"),
                &[],
            )
            .await
            .map_err(be(op))?
            .into_rows_result()
            .map_err(|e| StoreError::Corrupt {
                what: "store format",
                message: e.to_string(),
            })?
            .maybe_first_row()
            .map_err(|e| StoreError::Corrupt {
                what: "store format",
                message: e.to_string(),
            })?;
        let found = found.and_then(|r| r.0).map(|v| v as u64);
        if found != Some(SCYLLA_FORMAT) {
            return Err(StoreError::UnsupportedFormat {
                found: found.unwrap_or(0),
                supported: SCYLLA_FORMAT,
            });
        }
        migrate_totals_rounds(&session, ks).await?;
        let st = Statements::prepare(&session, ks).await?;
        Ok(Inner { session, st })
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Drops the keyspace (all its data) when the store is dropped (tests'
    /// fresh keyspaces).
    #[cfg(feature = "testing")]
    pub fn dropping_keyspace(mut self) -> Self {
        self.drop_keyspace = true;
        self
    }

    /// Runs one CQL statement without values (tests: drop the keyspace,
    /// damage a row).
    #[cfg(feature = "testing")]
    pub fn execute_raw(&self, cql: &str) -> Result<(), StoreError> {
        self.run(|i| async move {
            i.session
                .query_unpaged(cql.to_owned(), &[])
                .await
                .map_err(be("execute_raw"))?;
            Ok(())
        })
    }

    fn run<'a, T, F>(&'a self, f: impl FnOnce(&'a Inner) -> F) -> Result<T, StoreError>
    where
        T: Send,
        F: Future<Output = Result<T, StoreError>> + Send + 'a,
    {
        let (Some(rt), Some(inner)) = (&self.rt, &self.inner) else {
            return Err(StoreError::backend("run", "the store is closed"));
        };
        block_on_own(rt, f(inner))
    }
}

/// Runs `fut` to completion on the store's own runtime `rt` from whatever
/// thread calls: directly from a plain thread; inside `block_in_place` from
/// a multi-threaded runtime's threads (it leaves that runtime's context, so
/// `block_on` may start); from a scoped thread inside a current-thread
/// runtime.
fn block_on_own<T: Send>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, StoreError>> + Send,
) -> Result<T, StoreError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => rt.block_on(fut),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| rt.block_on(fut)),
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(|| rt.block_on(fut))
                .join()
                .unwrap_or_else(|_| Err(StoreError::backend("run", "the store call panicked")))
        }),
    }
}

impl Inner {
    /// Every row of `stmt` with `values`, page by page, handed to `each`
    /// until it returns `false`.
    async fn scan<R>(
        &self,
        op: &'static str,
        what: &'static str,
        stmt: &PreparedStatement,
        values: &impl SerializeRow,
        mut each: impl FnMut(R) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>
    where
        R: for<'f> DeserializeRow<'f, 'f>,
    {
        let mut paging = PagingState::start();
        loop {
            let (res, next) = self
                .session
                .execute_single_page(stmt, values, paging)
                .await
                .map_err(be(op))?;
            let rows = res
                .into_rows_result()
                .map_err(|e| corrupt(what)(e.to_string()))?;
            for row in rows.rows::<R>().map_err(|e| corrupt(what)(e.to_string()))? {
                if !each(row.map_err(|e| corrupt(what)(e.to_string()))?)? {
                    return Ok(());
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Break(()) => return Ok(()),
                std::ops::ControlFlow::Continue(p) => paging = p,
            }
        }
    }

    /// Whether a lightweight transaction's answer says it was applied.
    fn applied(
        op: &'static str,
        res: scylla::response::query_result::QueryResult,
    ) -> Result<bool, StoreError> {
        let row: Option<Row> = res
            .into_rows_result()
            .map_err(be(op))?
            .maybe_first_row()
            .map_err(be(op))?;
        match row.as_ref().and_then(|r| r.columns.first()) {
            Some(Some(CqlValue::Boolean(b))) => Ok(*b),
            other => Err(StoreError::backend(
                op,
                format!("unexpected transaction answer {other:?}"),
            )),
        }
    }

    async fn batch(
        &self,
        op: &'static str,
        kind: BatchType,
        idempotent: bool,
        stmts: Vec<(&PreparedStatement, Values)>,
    ) -> Result<scylla::response::query_result::QueryResult, StoreError> {
        let mut batch = Batch::new(kind);
        batch.set_is_idempotent(idempotent);
        let mut values = Vec::with_capacity(stmts.len());
        for (s, v) in stmts {
            batch.append_statement(s.clone());
            values.push(v);
        }
        self.session.batch(&batch, values).await.map_err(be(op))
    }

    /// Plain idempotent writes in unlogged batches of [`CHUNK`] (each batch
    /// within one partition: callers group by partition).
    async fn write_chunks(
        &self,
        op: &'static str,
        stmts: Vec<(&PreparedStatement, Values)>,
    ) -> Result<(), StoreError> {
        let mut rest = stmts;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(CHUNK));
            self.batch(op, BatchType::Unlogged, true, rest).await?;
            rest = tail;
        }
        Ok(())
    }

    async fn read_device(&self, device: &DeviceId, full: bool) -> Result<DeviceRead, StoreError> {
        let op = "read device";
        let mut out = DeviceRead::default();
        let mut region: Option<String> = None;
        let mut head = (None, None, 0i64);
        let mut rows: Vec<(Option<i64>, Option<Vec<u8>>)> = Vec::new();
        type Head = (
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        type Full = (
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
        );
        let values = (device.as_str(),);
        if full {
            self.scan(op, "device", &self.st.dev_read, &values, |r: Full| {
                head = (r.0, r.1, r.3.unwrap_or(0));
                region = r.2;
                rows.push((r.4, r.5));
                Ok(true)
            })
            .await?;
        } else {
            self.scan(op, "device", &self.st.dev_head, &values, |r: Head| {
                head = (r.0, r.1, r.3.unwrap_or(0));
                region = r.2;
                rows.push((r.4, None));
                Ok(true)
            })
            .await?;
        }
        out.wts = head.0;
        if let (Some(version), Some(region)) = (head.1, region) {
            out.state = Some(DeviceState {
                pattern_version: version as u64,
                region: Region::new(region).map_err(|e| corrupt("device region")(e.to_string()))?,
                last_sync_ms: head.2 as u64,
            });
        }
        for (id, blob) in rows {
            let Some(id) = id else { continue };
            out.ids.push(PatternId(unkey(id)));
            if full {
                let blob =
                    blob.ok_or_else(|| corrupt("pattern")("no pattern in its row".into()))?;
                out.patterns.push(dec("pattern", &blob)?);
            }
        }
        Ok(out)
    }

    async fn marker(&self, region: &Region, device: &DeviceId) -> Result<Option<i64>, StoreError> {
        let mut found = None;
        self.scan(
            "read marker",
            "region marker",
            &self.st.marker_read,
            &(region.as_str(), device.as_str()),
            |r: (Option<i64>,)| {
                found = r.0;
                Ok(false)
            },
        )
        .await?;
        Ok(found)
    }

    async fn regions(&self) -> Result<Vec<Region>, StoreError> {
        let mut out = Vec::new();
        self.scan(
            "regions",
            "region",
            &self.st.regions_read,
            &(),
            |r: (String,)| {
                out.push(Region::new(r.0).map_err(|e| corrupt("region")(e.to_string()))?);
                Ok(true)
            },
        )
        .await?;
        Ok(out)
    }

    /// Deletes the device's region rows in every region, as of `ts`.
    async fn drop_region_rows(&self, device: &DeviceId, ts: i64) -> Result<(), StoreError> {
        for r in self.regions().await? {
            self.session
                .execute_unpaged(&self.st.reg_del_device, (ts, r.as_str(), device.as_str()))
                .await
                .map_err(be("drop region rows"))?;
        }
        Ok(())
    }

    fn reg_put(
        &self,
        region: &Region,
        device: &DeviceId,
        p: &StoredPattern,
        ts: i64,
    ) -> Result<(&PreparedStatement, Values), StoreError> {
        Ok((
            &self.st.reg_put,
            vec![
                Some(text(region.as_str())),
                Some(text(device.as_str())),
                Some(CqlValue::BigInt(key(p.id.0))),
                Some(CqlValue::Blob(enc(p)?)),
                Some(CqlValue::BigInt(ts)),
            ],
        ))
    }

    async fn apply_device_sync(
        &self,
        device: &DeviceId,
        sync: DeviceSync<'_>,
    ) -> Result<u32, StoreError> {
        let op = "apply_device_sync";
        let old = self.read_device(device, true).await?;
        let mine = sync.apply_to(old.patterns.iter().cloned())?;
        let region = &sync.state.region;
        let marker_ok = match &old.state {
            Some(s) if &s.region == region && !sync.reset => {
                old.wts.is_some() && self.marker(region, device).await? == old.wts
            }
            _ => false,
        };
        if old.state.as_ref().is_none_or(|s| &s.region != region) {
            self.session
                .execute_unpaged(&self.st.regions_put, (region.as_str(),))
                .await
                .map_err(be(op))?;
        }
        let wts = next_wts(old.wts);
        let dev = || Some(text(device.as_str()));
        let upserted: BTreeSet<PatternId> = sync.upserts.iter().map(|p| p.id).collect();
        let mut stmts: Vec<(&PreparedStatement, Values)> = vec![(
            &self.st.dev_cas,
            vec![
                Some(CqlValue::BigInt(wts)),
                Some(big(sync.state.pattern_version)),
                Some(text(region.as_str())),
                Some(big(sync.state.last_sync_ms)),
                dev(),
                old.wts.map(CqlValue::BigInt),
            ],
        )];
        let gone: Vec<PatternId> = old
            .ids
            .iter()
            .filter(|id| !mine.contains_key(id))
            .copied()
            .collect();
        for id in &gone {
            stmts.push((
                &self.st.dev_del,
                vec![dev(), Some(CqlValue::BigInt(key(id.0)))],
            ));
        }
        for p in mine.values().filter(|p| upserted.contains(&p.id)) {
            stmts.push((
                &self.st.dev_put,
                vec![
                    dev(),
                    Some(CqlValue::BigInt(key(p.id.0))),
                    Some(CqlValue::Blob(enc(p)?)),
                ],
            ));
        }
        let res = self.batch(op, BatchType::Logged, false, stmts).await?;
        if !Self::applied(op, res)? {
            return Err(StoreError::Conflict { op });
        }
        // The device partition is written (the truth); now its region rows.
        let count = mine.len() as u32;
        if let Err(e) = self
            .write_region_rows(device, region, &mine, &upserted, &gone, wts, marker_ok)
            .await
        {
            tracing::warn!(device = %device.as_str(), error = %e, "region rows behind the device; its next sync rewrites them");
        }
        Ok(count)
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_region_rows(
        &self,
        device: &DeviceId,
        region: &Region,
        mine: &BTreeMap<PatternId, StoredPattern>,
        upserted: &BTreeSet<PatternId>,
        gone: &[PatternId],
        wts: i64,
        delta: bool,
    ) -> Result<(), StoreError> {
        let op = "write region rows";
        let mut stmts = Vec::new();
        if delta {
            for id in gone {
                stmts.push((
                    &self.st.reg_del,
                    vec![
                        Some(CqlValue::BigInt(wts)),
                        Some(text(region.as_str())),
                        Some(text(device.as_str())),
                        Some(CqlValue::BigInt(key(id.0))),
                    ],
                ));
            }
            for p in mine.values().filter(|p| upserted.contains(&p.id)) {
                stmts.push(self.reg_put(region, device, p, wts)?);
            }
        } else {
            self.drop_region_rows(device, wts - 1).await?;
            for p in mine.values() {
                stmts.push(self.reg_put(region, device, p, wts)?);
            }
        }
        self.write_chunks(op, stmts).await?;
        self.session
            .execute_unpaged(
                &self.st.marker_put,
                (region.as_str(), device.as_str(), wts, wts),
            )
            .await
            .map_err(be(op))?;
        Ok(())
    }

    async fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let op = "forget_device";
        let old = self.read_device(device, false).await?;
        let wts = next_wts(old.wts);
        if old.wts.is_some() {
            let dev = || Some(text(device.as_str()));
            let mut stmts: Vec<(&PreparedStatement, Values)> = vec![(
                &self.st.dev_forget,
                vec![
                    Some(CqlValue::BigInt(wts)),
                    dev(),
                    old.wts.map(CqlValue::BigInt),
                ],
            )];
            for id in &old.ids {
                stmts.push((
                    &self.st.dev_del,
                    vec![dev(), Some(CqlValue::BigInt(key(id.0)))],
                ));
            }
            let res = self.batch(op, BatchType::Logged, false, stmts).await?;
            if !Self::applied(op, res)? {
                return Err(StoreError::Conflict { op });
            }
        }
        // Always, so that a forget retried after a failure here still
        // removes the device from every region.
        self.drop_region_rows(device, wts).await?;
        Ok(old.state.is_some())
    }

    async fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError> {
        let op = "region_patterns";
        let limit = clamp_page(limit, MAX_SCAN_PAGE);
        let mut rows = Vec::new();
        let mut bad = None;
        let mut each = |r: (String, i32, i64, Option<Vec<u8>>)| {
            if r.1 != 1 {
                return Ok(true);
            }
            if rows.len() == limit {
                return Ok(false);
            }
            let device =
                DeviceId::new(r.0).map_err(|e| corrupt("region row device")(e.to_string()))?;
            let Some(blob) = r.3 else {
                bad = Some(device);
                return Ok(true);
            };
            rows.push(RegionPattern {
                device,
                pattern: dec("pattern", &blob)?,
            });
            Ok(true)
        };
        // The scan stops at the first row past `limit`: `more` is whether
        // it stopped early.
        let mut more = false;
        let mut wrapped = |r| {
            let go = each(r)?;
            if !go {
                more = true;
            }
            Ok(go)
        };
        match after {
            None => {
                self.scan(
                    op,
                    "region row",
                    &self.st.reg_scan,
                    &(region.as_str(),),
                    &mut wrapped,
                )
                .await?
            }
            Some(c) => {
                self.scan(
                    op,
                    "region row",
                    &self.st.reg_scan_after,
                    &(region.as_str(), c.device.as_str(), key(c.pattern.0)),
                    &mut wrapped,
                )
                .await?
            }
        }
        if let Some(device) = bad {
            return Err(corrupt("region row")(format!(
                "a row of {} has no pattern",
                device.as_str()
            )));
        }
        Ok(RegionPatternPage::new(rows, more))
    }

    async fn read_globals(&self, region: &Region) -> Result<GlobalsRead, StoreError> {
        let mut out = GlobalsRead::default();
        type G = (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
            Option<i64>,
            Option<i64>,
            Option<Vec<u8>>,
        );
        let mut trends: Option<Vec<u8>> = None;
        self.scan(
            "read globals",
            "globals",
            &self.st.glob_read,
            &(region.as_str(),),
            |r: G| {
                out.version = r.0.map(|v| v as u64);
                out.floor = r.1.unwrap_or(0) as u64;
                out.max_id = r.2.unwrap_or(0) as u64;
                trends = r.3;
                if let (Some(id), Some(changed)) = (r.4, r.5) {
                    let pattern = r.6.map(|b| dec("global pattern", &b)).transpose()?;
                    out.records.insert(
                        unkey(id),
                        GlobalRecord {
                            changed: changed as u64,
                            pattern,
                        },
                    );
                }
                Ok(true)
            },
        )
        .await?;
        if let Some(t) = trends {
            out.trends = dec("trends", &t)?;
        }
        Ok(out)
    }

    async fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        patterns: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError> {
        let op = "publish_globals";
        check_publish(patterns, trends)?;
        let old = self.read_globals(region).await?;
        let current = old.version.unwrap_or(0);
        if version <= current {
            return Err(StoreError::StaleVersion {
                current,
                given: version,
            });
        }
        let plan = plan_publish(&old.records, old.floor, old.max_id, version, patterns);
        let r = || Some(text(region.as_str()));
        let mut stmts: Vec<(&PreparedStatement, Values)> = vec![(
            &self.st.glob_cas,
            vec![
                Some(big(version)),
                Some(big(plan.floor)),
                Some(big(plan.max_id)),
                Some(CqlValue::Blob(enc(&trends.to_vec())?)),
                r(),
                old.version.map(big),
            ],
        )];
        for (id, rec) in &plan.writes {
            let pattern = rec
                .pattern
                .as_ref()
                .map(enc)
                .transpose()?
                .map(CqlValue::Blob);
            stmts.push((
                &self.st.glob_put,
                vec![
                    r(),
                    Some(CqlValue::BigInt(key(*id))),
                    Some(big(rec.changed)),
                    pattern,
                ],
            ));
        }
        for id in &plan.pruned {
            stmts.push((
                &self.st.glob_del,
                vec![r(), Some(CqlValue::BigInt(key(*id)))],
            ));
        }
        let res = self.batch(op, BatchType::Logged, false, stmts).await?;
        if !Self::applied(op, res)? {
            let current = self.read_globals(region).await?.version.unwrap_or(0);
            return Err(StoreError::StaleVersion {
                current,
                given: version,
            });
        }
        Ok(())
    }

    async fn read_meta(&self, serial: bool) -> Result<CatalogMeta, StoreError> {
        let stmt = if serial {
            &self.st.meta_read_serial
        } else {
            &self.st.meta_read
        };
        let mut meta = None;
        self.scan(
            "read catalog meta",
            "catalog meta",
            stmt,
            &(),
            |r: (Option<i64>, Option<i64>, Option<i64>)| {
                meta = Some(CatalogMeta {
                    allocated: r.0.unwrap_or(0) as u64,
                    committed: r.1.unwrap_or(0) as u64,
                    live: r.2.unwrap_or(0) as u64,
                });
                Ok(false)
            },
        )
        .await?;
        meta.ok_or_else(|| corrupt("catalog meta")("the counter row is missing".into()))
    }

    async fn commit_catalog(&self, from: u64, to: u64, live: u64) -> Result<bool, StoreError> {
        let res = self
            .session
            .execute_unpaged(&self.st.meta_commit, (to as i64, live as i64, from as i64))
            .await
            .map_err(be("commit catalog"))?;
        Self::applied("commit catalog", res)
    }

    /// Commits the versions of a write that allocated them and never
    /// committed (a crash), recounting the live items.
    async fn repair_catalog(&self, meta: CatalogMeta) -> Result<(), StoreError> {
        let mut live = 0u64;
        self.scan(
            "repair catalog",
            "catalog item",
            &self.st.items_scan,
            &(),
            |r: (String, Option<Vec<u8>>)| {
                live += u64::from(r.1.is_some());
                Ok(true)
            },
        )
        .await?;
        tracing::warn!(
            from = meta.committed,
            to = meta.allocated,
            "committing catalog versions of an unfinished write"
        );
        self.commit_catalog(meta.committed, meta.allocated, live)
            .await?;
        Ok(())
    }

    async fn write_catalog(
        &self,
        op: &'static str,
        changes: Vec<(ContentId, Option<&PackedCatalogEntry>)>,
    ) -> Result<u64, StoreError> {
        let mut meta = self.read_meta(true).await?;
        if meta.allocated != meta.committed {
            self.repair_catalog(meta).await?;
            meta = self.read_meta(true).await?;
        }
        // The items' current versions (from the store, then from this write).
        let mut current: BTreeMap<ContentId, (Option<u64>, bool)> = BTreeMap::new();
        for (id, _) in &changes {
            if current.contains_key(id) {
                continue;
            }
            let mut found = (None, false);
            self.scan(
                op,
                "catalog item",
                &self.st.item_read,
                &(id.as_str(),),
                |r: (Option<i64>, Option<Vec<u8>>)| {
                    found = (r.0.map(|v| v as u64), r.1.is_some());
                    Ok(false)
                },
            )
            .await?;
            current.insert(id.clone(), found);
        }
        let stored: BTreeMap<ContentId, Option<u64>> =
            current.iter().map(|(id, v)| (id.clone(), v.0)).collect();
        let mut version = meta.committed;
        let mut live = meta.live;
        let mut last: BTreeMap<ContentId, (u64, Option<&PackedCatalogEntry>)> = BTreeMap::new();
        for (id, entry) in &changes {
            let Some(cur) = current.get_mut(id) else {
                continue;
            };
            if entry.is_none() && !cur.1 {
                continue;
            }
            version += 1;
            match (cur.1, entry.is_some()) {
                (false, true) => live += 1,
                (true, false) => live = live.saturating_sub(1),
                _ => {}
            }
            *cur = (Some(version), entry.is_some());
            last.insert(id.clone(), (version, *entry));
        }
        if version == meta.committed {
            return Ok(version);
        }
        let res = self
            .session
            .execute_unpaged(
                &self.st.meta_alloc,
                (version as i64, meta.allocated as i64, meta.committed as i64),
            )
            .await
            .map_err(be(op))?;
        if !Self::applied(op, res)? {
            return Err(StoreError::Conflict { op });
        }
        let mut items = Vec::new();
        let mut logs: BTreeMap<u64, Vec<(&PreparedStatement, Values)>> = BTreeMap::new();
        for (id, (v, entry)) in &last {
            let blob = entry.map(enc).transpose()?.map(CqlValue::Blob);
            items.push((
                &self.st.item_put,
                vec![Some(text(id.as_str())), Some(big(*v)), blob.clone()],
            ));
            logs.entry(v / LOG_BUCKET).or_default().push((
                &self.st.log_put,
                vec![
                    Some(big(v / LOG_BUCKET)),
                    Some(CqlValue::BigInt(key(*v))),
                    Some(text(id.as_str())),
                    blob,
                ],
            ));
            if let Some(Some(old)) = stored.get(id) {
                logs.entry(old / LOG_BUCKET).or_default().push((
                    &self.st.log_del,
                    vec![
                        Some(big(old / LOG_BUCKET)),
                        Some(CqlValue::BigInt(key(*old))),
                    ],
                ));
            }
        }
        for (_, stmts) in logs {
            self.write_chunks(op, stmts).await?;
        }
        self.write_chunks(op, items).await?;
        if !self.commit_catalog(meta.committed, version, live).await? {
            return Err(StoreError::Conflict { op });
        }
        Ok(version)
    }

    async fn catalog_page(
        &self,
        since: u64,
        max_items: usize,
    ) -> Result<PackedCatalogPage, StoreError> {
        let op = "catalog_page";
        let max_items = clamp_page(max_items, MAX_CATALOG_PAGE);
        let current = self.read_meta(false).await?.committed;
        let mut page = PackedCatalogPage {
            version: current,
            ..PackedCatalogPage::default()
        };
        if since >= current {
            return Ok(page);
        }
        let mut last = since;
        let mut taken = 0usize;
        for bucket in (since + 1) / LOG_BUCKET..=current / LOG_BUCKET {
            self.scan(
                op,
                "catalog log",
                &self.st.log_scan,
                &(bucket as i64, key(since), key(current)),
                |r: (i64, String, Option<Vec<u8>>)| {
                    if taken == max_items {
                        page.more = true;
                        return Ok(false);
                    }
                    taken += 1;
                    match r.2 {
                        Some(b) => page.upserts.push(dec("catalog entry", &b)?),
                        None => page.removed.push(
                            ContentId::new(r.1)
                                .map_err(|e| corrupt("catalog log")(e.to_string()))?,
                        ),
                    }
                    last = unkey(r.0);
                    Ok(true)
                },
            )
            .await?;
            if page.more {
                break;
            }
        }
        if page.more {
            page.version = last;
        }
        Ok(page)
    }

    async fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError> {
        let op = "catalog_entries";
        let limit = clamp_page(limit, MAX_SCAN_PAGE);
        let mut out = Vec::new();
        let mut each = |r: (String, Option<Vec<u8>>)| {
            if out.len() == limit {
                return Ok(false);
            }
            if let Some(b) = r.1 {
                out.push(dec("catalog entry", &b)?);
            }
            Ok(true)
        };
        match after {
            None => {
                self.scan(op, "catalog item", &self.st.items_scan, &(), &mut each)
                    .await?
            }
            Some(a) => {
                self.scan(
                    op,
                    "catalog item",
                    &self.st.items_scan_after,
                    &(a.as_str(),),
                    &mut each,
                )
                .await?
            }
        }
        Ok(out)
    }
}

impl PatternStore for ScyllaStore {
    fn device_state(&self, device: &DeviceId) -> Result<Option<DeviceInfo>, StoreError> {
        self.run(|i| async move {
            let d = i.read_device(device, false).await?;
            Ok(d.state.map(|state| DeviceInfo {
                state,
                pattern_count: d.ids.len() as u32,
            }))
        })
    }

    fn device_patterns(&self, device: &DeviceId) -> Result<Vec<StoredPattern>, StoreError> {
        self.run(|i| async move { Ok(i.read_device(device, true).await?.patterns) })
    }

    fn apply_device_sync(
        &self,
        device: &DeviceId,
        sync: DeviceSync<'_>,
    ) -> Result<u32, StoreError> {
        self.run(|i| i.apply_device_sync(device, sync))
    }

    fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        self.run(|i| i.forget_device(device))
    }

    fn region_totals(&self, region: &Region) -> Result<Option<RegionTotals>, StoreError> {
        self.run(|i| async move {
            let mut found = None;
            i.scan(
                "region_totals",
                "learned totals",
                &i.st.totals_read,
                &(region.as_str(),),
                |r: (Option<Vec<u8>>,)| {
                    found = r.0;
                    Ok(false)
                },
            )
            .await?;
            found.map(|b| dec("learned totals", &b)).transpose()
        })
    }

    /// The `rounds` column alone (not the totals blob).
    fn region_totals_rounds(&self, region: &Region) -> Result<Option<u32>, StoreError> {
        self.run(|i| async move {
            let mut found = None;
            i.scan(
                "region_totals_rounds",
                "learned totals' rounds",
                &i.st.totals_rounds,
                &(region.as_str(),),
                |r: (Option<i64>,)| {
                    found = r.0;
                    Ok(false)
                },
            )
            .await?;
            found
                .map(|v| {
                    u32::try_from(v).map_err(|_| StoreError::Corrupt {
                        what: "learned totals' rounds",
                        message: format!("{v} is not a round count"),
                    })
                })
                .transpose()
        })
    }

    /// A lightweight transaction on the region's row: `IF NOT EXISTS` when
    /// nothing was read, else `IF rounds = <read>`.
    fn put_region_totals(
        &self,
        region: &Region,
        read: Option<u32>,
        totals: &RegionTotals,
    ) -> Result<(), StoreError> {
        let op = "put_region_totals";
        let blob = enc(totals)?;
        let rounds = i64::from(totals.rounds);
        self.run(|i| async move {
            let res = match read {
                None => i
                    .session
                    .execute_unpaged(&i.st.totals_insert, (region.as_str(), blob, rounds))
                    .await
                    .map_err(be(op))?,
                Some(r) => i
                    .session
                    .execute_unpaged(
                        &i.st.totals_cas,
                        (blob, rounds, region.as_str(), i64::from(r)),
                    )
                    .await
                    .map_err(be(op))?,
            };
            if Inner::applied(op, res)? {
                Ok(())
            } else {
                Err(StoreError::Conflict { op })
            }
        })
    }

    fn regions(&self) -> Result<Vec<Region>, StoreError> {
        self.run(|i| i.regions())
    }

    fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError> {
        self.run(|i| i.region_patterns(region, after, limit))
    }

    fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        patterns: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError> {
        self.run(|i| i.publish_globals(region, version, patterns, trends))
    }

    fn region_globals(&self, region: &Region) -> Result<RegionGlobals, StoreError> {
        self.run(|i| async move {
            let g = i.read_globals(region).await?;
            Ok(RegionGlobals {
                version: g.version.unwrap_or(0),
                patterns: g.records.into_values().filter_map(|r| r.pattern).collect(),
                trends: g.trends,
                max_id: g.max_id,
            })
        })
    }

    fn globals_since(&self, region: &Region, since: u64) -> Result<GlobalsChange, StoreError> {
        self.run(|i| async move {
            let g = i.read_globals(region).await?;
            Ok(omega_constellation_core::store::globals_change(
                g.version.unwrap_or(0),
                g.floor,
                g.trends,
                &g.records,
                since,
            ))
        })
    }

    fn upsert_catalog(&self, entries: &[PackedCatalogEntry]) -> Result<u64, StoreError> {
        let changes = entries
            .iter()
            .map(|e| (e.item.id.clone(), Some(e)))
            .collect();
        self.run(|i| i.write_catalog("upsert_catalog", changes))
    }

    fn remove_catalog(&self, ids: &[ContentId]) -> Result<u64, StoreError> {
        let changes = ids.iter().map(|id| (id.clone(), None)).collect();
        self.run(|i| i.write_catalog("remove_catalog", changes))
    }

    fn catalog_version(&self) -> Result<u64, StoreError> {
        self.run(|i| async move { Ok(i.read_meta(false).await?.committed) })
    }

    fn catalog_len(&self) -> Result<u64, StoreError> {
        self.run(|i| async move { Ok(i.read_meta(false).await?.live) })
    }

    fn catalog_page(&self, since: u64, max_items: usize) -> Result<PackedCatalogPage, StoreError> {
        self.run(|i| i.catalog_page(since, max_items))
    }

    fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError> {
        self.run(|i| i.catalog_entries(after, limit))
    }
}

/// A TTL in milliseconds as CQL's whole seconds: rounded up, plus one,
/// because the database counts a TTL from the current second rounded down
/// (a row must not vanish before its `expires_ms`; the conditions on
/// `expires_ms` judge expiry to the millisecond).
fn ttl_secs(ttl_ms: u64) -> i32 {
    i32::try_from(ttl_ms.div_ceil(1000) + 1).unwrap_or(i32::MAX)
}

/// Lease rounds [`ClusterStore::try_lease`] tries before it answers with the
/// lease as it reads it (each lost round means another node changed it).
const LEASE_ROUNDS: usize = 3;

impl Inner {
    /// The lease row at LOCAL_SERIAL (sees every committed transaction).
    async fn read_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let mut lease = None;
        self.scan(
            "read lease",
            "lease",
            &self.st.lease_read,
            &(name,),
            |r: (Option<String>, Option<i64>)| {
                if let (Some(holder), Some(exp)) = r {
                    lease = Some(Lease {
                        name: name.to_owned(),
                        holder,
                        expires_ms: exp as u64,
                    });
                }
                Ok(false)
            },
        )
        .await?;
        Ok(lease)
    }
}

/// Membership and the lease (see the module docs of
/// [`omega_constellation_core::cluster`]): heartbeats are plain writes
/// `USING TTL`; the lease is taken with `IF NOT EXISTS` when free and with
/// `IF holder = <read> AND expires_ms = <read>` to renew or take over an
/// expired one, so two nodes racing for it get one winner.
impl ClusterStore for ScyllaStore {
    fn heartbeat(
        &self,
        node: &str,
        addr: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        check_args(&[node, addr], Some(ttl_ms))?;
        let expires = now_ms.saturating_add(ttl_ms);
        self.run(|i| async move {
            i.session
                .execute_unpaged(
                    &i.st.member_put,
                    (node, addr, now_ms as i64, expires as i64, ttl_secs(ttl_ms)),
                )
                .await
                .map_err(be("heartbeat"))?;
            Ok(())
        })
    }

    fn members(&self, now_ms: u64) -> Result<Vec<Member>, StoreError> {
        self.run(|i| async move {
            let mut out = Vec::new();
            i.scan(
                "members",
                "member",
                &i.st.members_read,
                &(),
                |r: (String, Option<String>, Option<i64>, Option<i64>)| {
                    let expires_ms = r.3.unwrap_or(0) as u64;
                    if expires_ms > now_ms {
                        out.push(Member {
                            node: r.0,
                            addr: r.1.unwrap_or_default(),
                            heartbeat_ms: r.2.unwrap_or(0) as u64,
                            expires_ms,
                        });
                    }
                    Ok(out.len() < MAX_MEMBERS)
                },
            )
            .await?;
            Ok(out)
        })
    }

    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, StoreError> {
        check_args(&[name, holder], Some(ttl_ms))?;
        let op = "try lease";
        let expires = now_ms.saturating_add(ttl_ms);
        let ours = Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            expires_ms: expires,
        };
        self.run(|i| async move {
            for _ in 0..LEASE_ROUNDS {
                let res = match i.read_lease(name).await? {
                    Some(l) if l.holder != holder && now_ms < l.expires_ms => return Ok(l),
                    None => i
                        .session
                        .execute_unpaged(
                            &i.st.lease_insert,
                            (name, holder, expires as i64, ttl_secs(ttl_ms)),
                        )
                        .await
                        .map_err(be(op))?,
                    Some(l) => i
                        .session
                        .execute_unpaged(
                            &i.st.lease_update,
                            (
                                ttl_secs(ttl_ms),
                                holder,
                                expires as i64,
                                name,
                                l.holder.as_str(),
                                l.expires_ms as i64,
                            ),
                        )
                        .await
                        .map_err(be(op))?,
                };
                if Inner::applied(op, res)? {
                    return Ok(ours);
                }
            }
            // Lost every round to other writers: answer with what stands.
            match i.read_lease(name).await? {
                Some(l) => Ok(l),
                None => Err(StoreError::Conflict { op }),
            }
        })
    }

    fn lease(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        self.run(|i| async move { Ok(i.read_lease(name).await?.filter(|l| now_ms < l.expires_ms)) })
    }

    fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        self.run(|i| async move {
            let res = i
                .session
                .execute_unpaged(&i.st.lease_delete, (name, holder))
                .await
                .map_err(be("release lease"))?;
            Inner::applied("release lease", res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_the_numbers() {
        let xs = [
            0u64,
            1,
            2,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{w:?}");
            assert_eq!(unkey(key(w[0])), w[0]);
        }
    }

    #[test]
    fn names_and_replication_are_checked() {
        assert!(valid_keyspace("omega_1"));
        assert!(!valid_keyspace("1omega"));
        assert!(!valid_keyspace("omega; DROP"));
        let mut r = ScyllaOptions::new(vec![], "k").replication;
        assert_eq!(
            replication_cql(&r).expect("valid"),
            "{'class': 'SimpleStrategy', 'replication_factor': '1'}"
        );
        r.insert("dc1".into(), "3'}".into());
        assert!(matches!(
            replication_cql(&r),
            Err(StoreError::InvalidInput { .. })
        ));
        r.clear();
        assert!(replication_cql(&r).is_err(), "no class");
        assert_eq!(
            parse_consistency("local_quorum"),
            Some(Consistency::LocalQuorum)
        );
        assert_eq!(parse_consistency("SERIAL"), None);
    }

    #[test]
    fn the_schema_splits_into_statements() {
        let s = schema_statements(
            "ks",
            "{'class': 'SimpleStrategy', 'replication_factor': '1'}",
        );
        assert!(
            s[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ks"),
            "{}",
            s[0]
        );
        assert!(s
            .iter()
            .all(|x| !x.contains('{') || x.starts_with("CREATE KEYSPACE")));
        assert!(s.iter().any(|x| x.contains("ks.catalog_meta")));
        assert!(s.iter().any(|x| x.contains("ks.members")));
        assert!(s.iter().any(|x| x.contains("ks.leases")));
        assert_eq!(s.len(), 12);
    }
}
