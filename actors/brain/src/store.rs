//! `BrainStore`: the TV's memory over one redb file, the source of truth.
//!
//! It keeps, in redb and mirrored in a [`BrainState`] (catalog vectors as int8
//! codes and patterns as [`crate::PatternInfo`] in the mirror; the exact
//! records only in redb):
//! * episodes, a ring of at most [`StoreConfig::max_episodes`] (default 1,000):
//!   the oldest is evicted by the commit that adds one past the limit;
//! * local patterns (see [`omega_brain_core::patterns`]; default at most 10,000, the least
//!   useful evicted and recorded as a removal for the next delta);
//! * global patterns, at most [`StoreConfig::max_global_patterns`] (default
//!   500), changed per sync as [`SyncAccepted`] says (reset, upserts,
//!   removals); past the limit the weakest (fewest supporting devices, then
//!   lowest success rate, then highest id) are dropped;
//! * trends, replaced wholesale by a sync that moves the global version (or
//!   resets it); the node sends trend signals only when the device's global
//!   version differs from the region's, so a sync at the same global version
//!   (its trend list empty) keeps the trends held (the protocol bounds them
//!   to 100);
//! * the catalog with embeddings and the ContentId ↔ index key mapping, at most
//!   [`StoreConfig::max_catalog_items`] (default 50,000). Past the limit a
//!   change that would add items is **refused** whole with
//!   [`CoreError::CatalogFull`] (updates and removals of known items still
//!   work): silently evicting titles would make recommendations vanish without
//!   anyone noticing, a refusal is logged and fixed by raising the limit. In a
//!   sync the refused page is reported and not acknowledged (the catalog
//!   version stays), the rest of the sync still applies;
//! * versions: pattern (bumped by every change of local patterns), acked (what
//!   the node holds), global, catalog (the node's), and a local catalog
//!   revision the index file is tied to.
//!
//! * the forget tombstone queue: `forget` bumps a durable forget generation
//!   in its own transaction; while it is ahead of the generation a node
//!   acknowledged, [`BrainStore::prepare_sync`] builds a `Forget` request
//!   (before anything else), and [`BrainStore::finish_sync`] records the
//!   node's acceptance in the same transaction as the rest of that sync.
//!
//! What a sync, a catalog change or an acknowledgement changes is planned by
//! omega-brain-core ([`omega_brain_core::sync`]) over the mirror; the store
//! writes the plan in one transaction and, once committed, applies it to the
//! mirror.
//!
//! Invariants: every mutation is one redb write transaction with immediate
//! durability (`forget` is one commit too, into a fresh file renamed over
//! the old one, so no freed page keeps erased history), and the in-memory
//! mirror changes only after its commit returned. So a method that returns `Ok` is durable (`observe` included),
//! and one that returns `Err` changed nothing, on disk or in memory.
//!
//! Opening a damaged file (redb reports corruption, or a record does not
//! decode) moves it aside as `<file>.damaged-<unix secs>`, creates a fresh
//! store and says so in [`OpenOutcome::Recovered`]. Errors that are not damage
//! (permission denied, file locked by another process, disk full) are returned.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use omega_brain_core::delta::{self, DeltaConfig, DeltaPlan};
use omega_brain_core::fleet::{FleetKnowledge, PageApplied};
use omega_brain_core::patterns::{
    item_fingerprint, LocalPattern, PatternConfig, PatternOp, Tombstone,
};
/// What signs this TV's round keys and checks the other members'.
pub use omega_brain_core::round_client::RoundCredentials;
use omega_brain_core::round_client::{
    catalog_slots, PrivacyState, PrivacyStatus, RoundClient, RoundClientConfig, RoundClientError,
};
use omega_brain_core::state::{BrainState, CatalogRecord, Episode, Versions};
use omega_brain_core::sync::{
    plan_ack, plan_catalog, plan_sync, CatalogChange, CatalogPlan, SyncLimits,
};
use omega_brain_core::CoreError;
use omega_brain_core::UploadKind;
use omega_privacy::Budget;
use omega_protocol::{
    CatalogEntry, ContentId, GlobalPattern, NodeToTv, PatternDelta, PatternId, Region,
    SyncAccepted, SyncKind, SyncRequest, TvToNode, ViewingContext, ViewingEvent,
};
use rand::{CryptoRng, Rng};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::BrainError;
use crate::state::SharedState;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const EPISODES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("episodes");
const PATTERNS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("patterns");
const TOMBSTONES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("tombstones");
const GLOBALS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("globals");
const BLOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("blobs");
const CATALOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("catalog");
const CATALOG_IDS: TableDefinition<'_, &str, u64> = TableDefinition::new("catalog_ids");
/// The blob holding the [`PrivacyState`] (ledger, pending release).
const PRIVACY_BLOB: &str = "privacy";
/// Blob: the region's fleet knowledge ([`FleetKnowledge`]).
const FLEET_BLOB: &str = "fleet";

const SCHEMA_VERSION: u64 = 1;

/// Limits of the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreConfig {
    /// Episodes kept (at least 1); the oldest is evicted past it.
    pub max_episodes: usize,
    /// Catalog items; changes adding items past it are refused.
    pub max_catalog_items: usize,
    /// Global patterns; the weakest are dropped past it.
    pub max_global_patterns: usize,
    /// Local patterns and how they form.
    pub patterns: PatternConfig,
    /// redb's page cache in bytes (default 4 MiB; redb's own default is 1 GiB).
    /// The whole state is read once at open and then mirrored in memory, so
    /// the cache only serves writes' B-tree paths: a small one costs nothing
    /// measurable and keeps the daemon's resident memory down.
    pub cache_bytes: usize,
    /// The daily privacy budget (applies from the next charge; charges made
    /// stay counted).
    pub privacy_budget: Budget,
    /// The bounds of the aggregation rounds the TV takes part in.
    pub rounds: RoundClientConfig,
}

/// Default of [`StoreConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_episodes: 1_000,
            max_catalog_items: 50_000,
            max_global_patterns: 500,
            patterns: PatternConfig::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            privacy_budget: Budget::default(),
            rounds: RoundClientConfig::default(),
        }
    }
}

/// How the store was opened. `Recovered` deserves a loud log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// An existing file opened cleanly.
    Opened,
    /// There was no file; a fresh store was created.
    Created,
    /// The file was damaged: it was moved to `moved_to` and a fresh, empty
    /// store created in its place.
    Recovered {
        /// Where the damaged file now is.
        moved_to: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// What an `observe` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveOutcome {
    /// Sequence number of the stored episode.
    pub seq: u64,
    /// Whether local patterns changed (the pattern version moved).
    pub patterns_changed: bool,
    /// Whether the item was in the catalog (only then can it shape patterns).
    pub known_item: bool,
    /// The same title at the same time was already stored: nothing changed
    /// (`seq` is then the next sequence number, unused).
    pub duplicate: bool,
}

/// What [`BrainStore::apply_sync`] did.
#[derive(Debug, Default)]
pub struct SyncApplied {
    /// Catalog keys touched (apply them to the index).
    pub catalog: CatalogChange,
    /// Set when the sync's catalog page was refused (catalog full); the rest
    /// of the sync was applied.
    pub catalog_refused: Option<CoreError>,
}

enum OpenFail {
    Damaged(String),
    Other(BrainError),
}

fn is_damage(e: &redb::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => true,
        redb::Error::Io(io) => {
            matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof)
        }
        _ => false,
    }
}

fn classify(e: impl Into<redb::Error>) -> OpenFail {
    let e = e.into();
    if is_damage(&e) {
        OpenFail::Damaged(e.to_string())
    } else {
        OpenFail::Other(BrainError::from(e))
    }
}

fn enc<T: Serialize>(table: &'static str, v: &T) -> Result<Vec<u8>, BrainError> {
    postcard::to_allocvec(v).map_err(|e| BrainError::corrupt(table, e))
}

fn dec<T: DeserializeOwned>(table: &'static str, b: &[u8]) -> Result<T, BrainError> {
    postcard::from_bytes(b).map_err(|e| BrainError::corrupt(table, e))
}

/// The TV's durable memory. See the module docs.
#[derive(Debug)]
pub struct BrainStore {
    db: Database,
    path: PathBuf,
    cfg: StoreConfig,
    state: SharedState,
    next_episode: u64,
    forget: ForgetQueue,
    /// The privacy accountant and the pending release (blob `privacy`), with
    /// the volatile round client.
    rounds: RoundClient,
    /// The node's last round message, answered by the next sync (kept until
    /// a sync succeeds: the round client answers a repeated message with
    /// its first answer). Volatile.
    round_inbox: Option<NodeToTv>,
}

/// The forget tombstone: generations of `forget` asked and acknowledged by a
/// node (both durable in the meta table). Pending while `asked > acked`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ForgetQueue {
    asked: u64,
    acked: u64,
}

/// A sync request ready to send, and what to do with its answer
/// ([`BrainStore::finish_sync`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedSync {
    /// The request.
    pub request: SyncRequest,
    /// For a `Forget` request: the forget generation it carries (acknowledged
    /// when the node accepts it).
    pub forget_generation: Option<u64>,
    /// Why the TV declined the node's last round message (nothing of the
    /// round is sent then).
    pub round_declined: Option<RoundClientError>,
}

/// What [`BrainStore::finish_sync`] did.
#[derive(Debug, Default)]
pub struct SyncFinished {
    /// What applying the answer did.
    pub applied: SyncApplied,
    /// Set when the node's acknowledgement was refused (it named a version the
    /// TV never sent); the download was applied anyway.
    pub ack_refused: Option<BrainError>,
    /// Whether this sync completed a pending forget.
    pub forget_acknowledged: bool,
}

/// Opens `path` for writing, created with mode 0600 if missing and narrowed
/// to 0600 if it exists with a wider mode (a file an older version left
/// 0644): the store and the index hold the viewing history. `truncate`
/// empties it; without, redb finds its data (or an empty file, which it
/// initializes).
pub(crate) fn open_private(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// [`open_private`] for a redb file, as a store error.
fn private_db_file(path: &Path) -> Result<(), BrainError> {
    open_private(path, false)
        .map(drop)
        .map_err(|source| BrainError::Io {
            what: "creating the store file (mode 0600)",
            path: path.to_path_buf(),
            source,
        })
}

impl BrainStore {
    /// Opens (or creates) the store at `path`, mode 0600 ([`open_private`]);
    /// a damaged file is moved aside
    /// and replaced by a fresh store ([`OpenOutcome::Recovered`]).
    pub fn open(
        path: impl AsRef<Path>,
        cfg: StoreConfig,
    ) -> Result<(Self, OpenOutcome), BrainError> {
        let path = path.as_ref();
        let existed = path.exists();
        private_db_file(path)?;
        let db = match Database::builder()
            .set_cache_size(cfg.cache_bytes)
            .create(path)
        {
            Ok(db) => Ok(db),
            Err(e) => Err(classify(e)),
        };
        let loaded = db.and_then(|db| Self::load(db, path, cfg));
        match loaded {
            Ok(s) => Ok((
                s,
                if existed {
                    OpenOutcome::Opened
                } else {
                    OpenOutcome::Created
                },
            )),
            Err(OpenFail::Other(e)) => Err(e),
            Err(OpenFail::Damaged(reason)) => {
                let moved_to = move_aside(path)?;
                tracing::error!(path = %path.display(), moved_to = %moved_to.display(), %reason,
                    "brain store damaged: moved aside, starting fresh");
                private_db_file(path)?;
                let db = Database::builder()
                    .set_cache_size(cfg.cache_bytes)
                    .create(path)
                    .map_err(BrainError::storage)?;
                let s = Self::load(db, path, cfg).map_err(|f| match f {
                    OpenFail::Damaged(r) => BrainError::corrupt("fresh store", r),
                    OpenFail::Other(e) => e,
                })?;
                Ok((s, OpenOutcome::Recovered { moved_to, reason }))
            }
        }
    }

    /// Opens over a custom redb backend (tests inject failing disks this way).
    /// No recovery: damage is an error here. [`BrainStore::forget`] rewrites
    /// the store into a fresh file at `path`, which it then uses instead of
    /// the backend.
    pub fn open_with_backend(
        backend: impl redb::StorageBackend,
        path: impl AsRef<Path>,
        cfg: StoreConfig,
    ) -> Result<Self, BrainError> {
        let db = Database::builder()
            .set_cache_size(cfg.cache_bytes)
            .create_with_backend(backend)
            .map_err(BrainError::storage)?;
        Self::load(db, path.as_ref(), cfg).map_err(|f| match f {
            OpenFail::Damaged(r) => BrainError::corrupt("store", r),
            OpenFail::Other(e) => e,
        })
    }

    fn load(db: Database, path: &Path, cfg: StoreConfig) -> Result<Self, OpenFail> {
        // Create missing tables and the schema marker.
        let txn = db.begin_write().map_err(classify)?;
        {
            let mut meta = txn.open_table(META).map_err(classify)?;
            let schema = meta.get("schema").map_err(classify)?.map(|g| g.value());
            match schema {
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(classify)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(v) => return Err(OpenFail::Damaged(format!("unknown schema version {v}"))),
            }
            for t in [EPISODES, PATTERNS, TOMBSTONES, GLOBALS, CATALOG] {
                txn.open_table(t).map_err(classify)?;
            }
            txn.open_table(BLOBS).map_err(classify)?;
            txn.open_table(CATALOG_IDS).map_err(classify)?;
        }
        txn.commit().map_err(classify)?;

        let mut state = BrainState::default();
        let rtxn = db.begin_read().map_err(classify)?;
        let damaged = |e: BrainError| OpenFail::Damaged(e.to_string());
        let meta = rtxn.open_table(META).map_err(classify)?;
        let m = |k: &str| -> Result<u64, OpenFail> {
            Ok(meta.get(k).map_err(classify)?.map_or(0, |g| g.value()))
        };
        state.versions = Versions {
            pattern: m("pattern_version")?,
            acked: m("acked_version")?,
            global: m("global_version")?,
            catalog: m("catalog_version")?,
            catalog_rev: m("catalog_rev")?,
        };
        let next_episode = m("next_episode")?;
        let forget = ForgetQueue {
            asked: m("forget_asked")?,
            acked: m("forget_acked")?,
        };
        state.patterns.set_next_id(m("next_pattern_id")?);
        state.catalog.set_next_key(m("next_catalog_key")?);

        for row in rtxn
            .open_table(EPISODES)
            .map_err(classify)?
            .iter()
            .map_err(classify)?
        {
            let (k, v) = row.map_err(classify)?;
            let event: ViewingEvent = dec("episodes", v.value()).map_err(damaged)?;
            state.push_episode(Episode {
                seq: k.value(),
                event,
            });
        }
        for row in rtxn
            .open_table(PATTERNS)
            .map_err(classify)?
            .iter()
            .map_err(classify)?
        {
            let (_, v) = row.map_err(classify)?;
            let p: LocalPattern = dec("patterns", v.value()).map_err(damaged)?;
            state.patterns.insert(&p);
        }
        for row in rtxn
            .open_table(TOMBSTONES)
            .map_err(classify)?
            .iter()
            .map_err(classify)?
        {
            let (k, v) = row.map_err(classify)?;
            let t: Tombstone = dec("tombstones", v.value()).map_err(damaged)?;
            state.patterns.restore_tombstone(PatternId(k.value()), t);
        }
        for row in rtxn
            .open_table(GLOBALS)
            .map_err(classify)?
            .iter()
            .map_err(classify)?
        {
            let (k, v) = row.map_err(classify)?;
            let g: GlobalPattern = dec("globals", v.value()).map_err(damaged)?;
            state.globals.insert(k.value(), g);
        }
        if let Some(t) = rtxn
            .open_table(BLOBS)
            .map_err(classify)?
            .get("trends")
            .map_err(classify)?
        {
            state.trends = dec("blobs", t.value()).map_err(damaged)?;
        }
        if let Some(f) = rtxn
            .open_table(BLOBS)
            .map_err(classify)?
            .get(FLEET_BLOB)
            .map_err(classify)?
        {
            // A copy of what the node publishes: one this build cannot read
            // (written by another version) is dropped and paged again from
            // the start at the next sync, not taken for damage.
            state.fleet = dec("blobs", f.value()).unwrap_or_else(|error| {
                tracing::warn!(%error, "fleet knowledge not readable: paging it again");
                FleetKnowledge::default()
            });
        }
        let mut privacy = match rtxn
            .open_table(BLOBS)
            .map_err(classify)?
            .get(PRIVACY_BLOB)
            .map_err(classify)?
        {
            Some(p) => dec::<PrivacyState>("blobs", p.value()).map_err(damaged)?,
            None => PrivacyState::new(cfg.privacy_budget),
        };
        privacy.set_budget(cfg.privacy_budget);
        let rounds =
            RoundClient::new(cfg.rounds, privacy).map_err(|e| OpenFail::Other(e.into()))?;
        let ids = rtxn.open_table(CATALOG_IDS).map_err(classify)?;
        for row in rtxn
            .open_table(CATALOG)
            .map_err(classify)?
            .iter()
            .map_err(classify)?
        {
            let (k, v) = row.map_err(classify)?;
            let entry: CatalogEntry = dec("catalog", v.value()).map_err(damaged)?;
            let key = k.value();
            let mapped = ids
                .get(entry.item.id.as_str())
                .map_err(classify)?
                .map(|g| g.value());
            if mapped != Some(key) {
                return Err(OpenFail::Damaged(format!(
                    "catalog key {key} not mapped from {}",
                    entry.item.id
                )));
            }
            state.catalog.restore(CatalogRecord::new(key, &entry));
        }
        if ids.len().map_err(classify)? != state.catalog.len() as u64 {
            return Err(OpenFail::Damaged(
                "catalog id map and catalog differ in size".into(),
            ));
        }
        drop(ids);
        drop(meta);
        drop(rtxn);
        let mut me = Self {
            db,
            path: path.to_path_buf(),
            cfg,
            state: SharedState::new(state),
            next_episode,
            forget,
            rounds,
            round_inbox: None,
        };
        me.cfg.max_episodes = me.cfg.max_episodes.max(1);
        Ok(me)
    }

    /// The in-memory mirror, read-locked (change it through the store). Drop
    /// the guard before calling a method that writes.
    pub fn state(&self) -> parking_lot::RwLockReadGuard<'_, BrainState> {
        self.state.read()
    }

    /// The mirror as shared with readers (the recommender): every commit of
    /// this store shows in it.
    pub fn shared_state(&self) -> SharedState {
        self.state.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// The redb file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the vector index file lives (next to the redb file).
    pub fn index_path(&self) -> PathBuf {
        crate::index::index_path_for(&self.path)
    }

    fn write(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), BrainError>,
    ) -> Result<(), BrainError> {
        let txn = self.db.begin_write().map_err(BrainError::storage)?;
        f(&txn)?; // on error the transaction is dropped: aborted
        txn.commit().map_err(BrainError::storage)
    }

    fn put_meta(
        txn: &WriteTransaction,
        v: &Versions,
        extra: &[(&str, u64)],
    ) -> Result<(), BrainError> {
        let mut meta = txn.open_table(META).map_err(BrainError::storage)?;
        for (k, x) in [
            ("pattern_version", v.pattern),
            ("acked_version", v.acked),
            ("global_version", v.global),
            ("catalog_version", v.catalog),
            ("catalog_rev", v.catalog_rev),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            meta.insert(k, x).map_err(BrainError::storage)?;
        }
        Ok(())
    }

    /// The full record of a pattern memory knows of (memory keeps only its
    /// [`crate::PatternInfo`]).
    fn load_pattern(&self, id: PatternId) -> Result<LocalPattern, BrainError> {
        let txn = self.db.begin_read().map_err(BrainError::storage)?;
        let table = txn.open_table(PATTERNS).map_err(BrainError::storage)?;
        let row = table.get(id.0).map_err(BrainError::storage)?;
        match row {
            Some(v) => dec("patterns", v.value()),
            None => Err(missing_pattern(id)),
        }
    }

    fn put_pattern_ops(txn: &WriteTransaction, ops: &[PatternOp]) -> Result<(), BrainError> {
        let mut pt = txn.open_table(PATTERNS).map_err(BrainError::storage)?;
        let mut tt = txn.open_table(TOMBSTONES).map_err(BrainError::storage)?;
        for op in ops {
            match op {
                PatternOp::Upsert(p) => {
                    pt.insert(p.id.0, enc("patterns", p)?.as_slice())
                        .map_err(BrainError::storage)?;
                }
                PatternOp::Remove { id, tombstone } => {
                    pt.remove(id.0).map_err(BrainError::storage)?;
                    tt.insert(id.0, enc("tombstones", tombstone)?.as_slice())
                        .map_err(BrainError::storage)?;
                }
            }
        }
        Ok(())
    }

    /// Records a viewing event and folds it into local patterns; returns only
    /// after the redb commit (durable). Evicts the oldest episode past the ring
    /// size and, when a new pattern needs room, the least useful pattern.
    pub fn observe(&mut self, event: ViewingEvent) -> Result<ObserveOutcome, BrainError> {
        // Fields are public: re-validate.
        let event = ViewingEvent::new(
            event.content_id,
            event.watched_fraction,
            event.timestamp_secs,
            ViewingContext::new(event.context.hour, event.context.weekday)?,
        )?;
        let st = self.state.read();
        if st.has_viewing(&event.content_id, event.timestamp_secs) {
            return Ok(ObserveOutcome {
                seq: self.next_episode,
                patterns_changed: false,
                known_item: st.catalog.get(&event.content_id).is_some(),
                duplicate: true,
            });
        }
        let version = st.versions.pattern + 1;
        let rec = st.catalog.get(&event.content_id);
        let ops = match rec {
            Some(r) => st.patterns.plan_view(
                event.context.bucket(),
                &r.embedding()
                    .map_err(|e| BrainError::corrupt("catalog", e))?,
                item_fingerprint(&event.content_id),
                event.is_success(),
                version,
                &self.cfg.patterns,
                |id| self.load_pattern(id),
            )?,
            None => Vec::new(),
        };
        let known_item = rec.is_some();
        let mut versions = st.versions;
        if !ops.is_empty() {
            versions.pattern = version;
        }
        let next_pid = ops.iter().fold(st.patterns.next_id(), |n, op| match op {
            PatternOp::Upsert(p) => n.max(p.id.0 + 1),
            PatternOp::Remove { .. } => n,
        });
        let seq = self.next_episode;
        let excess = (st.episodes.len() + 1).saturating_sub(self.cfg.max_episodes);
        let evicted: Vec<u64> = st.episodes.iter().take(excess).map(|e| e.seq).collect();
        drop(st);
        let bytes = enc("episodes", &event)?;
        self.write(|txn| {
            {
                let mut et = txn.open_table(EPISODES).map_err(BrainError::storage)?;
                et.insert(seq, bytes.as_slice())
                    .map_err(BrainError::storage)?;
                for s in &evicted {
                    et.remove(*s).map_err(BrainError::storage)?;
                }
            }
            Self::put_pattern_ops(txn, &ops)?;
            Self::put_meta(
                txn,
                &versions,
                &[("next_episode", seq + 1), ("next_pattern_id", next_pid)],
            )
        })?;
        // Committed: mirror it.
        let mut st = self.state.write();
        for _ in 0..evicted.len() {
            st.pop_episode();
        }
        st.push_episode(Episode { seq, event });
        st.patterns.apply(&ops);
        st.patterns.set_next_id(next_pid);
        st.versions = versions;
        drop(st);
        self.next_episode = seq + 1;
        Ok(ObserveOutcome {
            seq,
            patterns_changed: !ops.is_empty(),
            known_item,
            duplicate: false,
        })
    }

    fn limits(&self) -> SyncLimits {
        SyncLimits {
            max_catalog_items: self.cfg.max_catalog_items,
            max_global_patterns: self.cfg.max_global_patterns,
        }
    }

    fn write_catalog(txn: &WriteTransaction, plan: &CatalogPlan) -> Result<(), BrainError> {
        let mut ct = txn.open_table(CATALOG).map_err(BrainError::storage)?;
        let mut it = txn.open_table(CATALOG_IDS).map_err(BrainError::storage)?;
        for (k, id) in &plan.removed {
            ct.remove(*k).map_err(BrainError::storage)?;
            it.remove(id.as_str()).map_err(BrainError::storage)?;
        }
        for (key, entry) in &plan.upserts {
            ct.insert(*key, enc("catalog", entry)?.as_slice())
                .map_err(BrainError::storage)?;
            it.insert(entry.item.id.as_str(), *key)
                .map_err(BrainError::storage)?;
        }
        Ok(())
    }

    /// Adds or replaces catalog items and withdraws others (a local import, or
    /// tests). All or nothing; refused with [`CoreError::CatalogFull`] when
    /// it would add items past the limit. Does not move the node's catalog
    /// version.
    pub fn update_catalog(
        &mut self,
        upserts: &[CatalogEntry],
        removed: &[ContentId],
    ) -> Result<CatalogChange, BrainError> {
        let (plan, mut versions) = {
            let st = self.state.read();
            let plan = plan_catalog(&st, self.cfg.max_catalog_items, upserts, removed)?;
            (plan, st.versions)
        };
        if plan.is_empty() {
            return Ok(CatalogChange::default());
        }
        versions.catalog_rev += 1;
        self.write(|txn| {
            Self::write_catalog(txn, &plan)?;
            Self::put_meta(txn, &versions, &[("next_catalog_key", plan.next_key)])
        })?;
        let mut st = self.state.write();
        st.versions = versions;
        Ok(plan.apply(&mut st))
    }

    /// Applies what a successful sync brought back, as
    /// [`omega_brain_core::sync::plan_sync`] plans it: global patterns (reset,
    /// upserts, removals, then the limit), trends (replaced only when
    /// `global_version` differs from the held one or `global_reset` is set:
    /// the node sends an empty list when the device is up to date), the catalog page
    /// (refused whole if it would overflow the catalog, see
    /// [`SyncApplied::catalog_refused`]) and the versions. One transaction.
    /// The pattern acknowledgement is separate: [`Self::acknowledge`].
    pub fn apply_sync(&mut self, accepted: &SyncAccepted) -> Result<SyncApplied, BrainError> {
        self.apply_sync_with(accepted, &[])
    }

    /// [`Self::apply_sync`], writing `extra` meta entries in the same
    /// transaction.
    fn apply_sync_with(
        &mut self,
        accepted: &SyncAccepted,
        extra: &[(&str, u64)],
    ) -> Result<SyncApplied, BrainError> {
        let st = self.state.read();
        let plan = plan_sync(&st, accepted, &self.limits())?;
        if let Some(e) = &plan.catalog_refused {
            tracing::error!(error = %e, "catalog page refused");
        }
        let next_key = plan.next_catalog_key(&st);
        let fleet = match &accepted.fleet {
            Some(page) => {
                let mut fleet = st.fleet.clone();
                match fleet.apply(page) {
                    PageApplied::Added(_) => Some(fleet),
                    other => {
                        tracing::info!(?other, version = page.version, "fleet page not applied");
                        None
                    }
                }
            }
            None => None,
        };
        drop(st);
        let trends_bytes = plan.trends.as_ref().map(|t| enc("blobs", t)).transpose()?;
        let fleet_bytes = fleet.as_ref().map(|f| enc("blobs", f)).transpose()?;
        self.write(|txn| {
            {
                let mut gt = txn.open_table(GLOBALS).map_err(BrainError::storage)?;
                for id in &plan.globals_deleted {
                    gt.remove(*id).map_err(BrainError::storage)?;
                }
                for (id, g) in plan
                    .globals_written
                    .iter()
                    .filter_map(|id| Some((id, plan.globals.get(id)?)))
                {
                    gt.insert(*id, enc("globals", g)?.as_slice())
                        .map_err(BrainError::storage)?;
                }
                let mut bt = txn.open_table(BLOBS).map_err(BrainError::storage)?;
                if let Some(bytes) = &trends_bytes {
                    bt.insert("trends", bytes.as_slice())
                        .map_err(BrainError::storage)?;
                }
                if let Some(bytes) = &fleet_bytes {
                    bt.insert(FLEET_BLOB, bytes.as_slice())
                        .map_err(BrainError::storage)?;
                }
            }
            if let Some(p) = &plan.catalog {
                Self::write_catalog(txn, p)?;
            }
            let mut meta = vec![("next_catalog_key", next_key)];
            meta.extend_from_slice(extra);
            Self::put_meta(txn, &plan.versions, &meta)
        })?;
        let catalog_refused = plan.catalog_refused.clone();
        let mut st = self.state.write();
        if let Some(f) = fleet {
            st.fleet = f;
        }
        let catalog = plan.apply(&mut st);
        drop(st);
        Ok(SyncApplied {
            catalog,
            catalog_refused,
        })
    }

    /// Builds the delta to upload since the acknowledged version.
    pub fn build_delta(&self, cfg: &DeltaConfig, rng: &mut impl Rng) -> DeltaPlan {
        let st = self.state.read();
        delta::build_delta(
            &st.patterns,
            st.versions.acked,
            st.versions.pattern,
            cfg,
            rng,
        )
    }

    /// Builds the first chunk of a full snapshot (after `ResyncRequired`).
    pub fn build_snapshot(&self, cfg: &DeltaConfig, rng: &mut impl Rng) -> DeltaPlan {
        let st = self.state.read();
        delta::build_snapshot(&st.patterns, st.versions.pattern, cfg, rng)
    }

    /// Records the node's acknowledgement of a delta (`kind` = the plan's kind,
    /// `acked` = `SyncAccepted::acked_version`). For a `Delta` it must lie
    /// between the last acknowledgement and the current pattern version; a
    /// `Snapshot` may go back (the node lost state).
    pub fn acknowledge(
        &mut self,
        kind: SyncKind,
        acked: u64,
        min_distinct_items: u32,
    ) -> Result<(), BrainError> {
        let plan = {
            let st = self.state.read();
            let plan = plan_ack(&st, kind, acked, min_distinct_items)?;
            // Nothing to write (the node acknowledged what it already held,
            // as every sync does while nothing is uploaded): no commit.
            if plan.changed.is_empty() && plan.dropped.is_empty() && plan.versions == st.versions {
                return Ok(());
            }
            plan
        };
        self.write(|txn| {
            {
                let mut pt = txn.open_table(PATTERNS).map_err(BrainError::storage)?;
                for (id, known) in &plan.changed {
                    let mut p: LocalPattern = match pt.get(id.0).map_err(BrainError::storage)? {
                        Some(v) => dec("patterns", v.value())?,
                        None => return Err(missing_pattern(*id)),
                    };
                    p.known_to_node = *known;
                    pt.insert(id.0, enc("patterns", &p)?.as_slice())
                        .map_err(BrainError::storage)?;
                }
                let mut tt = txn.open_table(TOMBSTONES).map_err(BrainError::storage)?;
                for id in &plan.dropped {
                    tt.remove(id.0).map_err(BrainError::storage)?;
                }
            }
            Self::put_meta(txn, &plan.versions, &[])
        })?;
        plan.apply(&mut self.state.write());
        Ok(())
    }

    /// What the TV uploads in a sync of `kind`.
    ///
    /// **Until the private contribution lands this uploads no pattern data at
    /// all**: an empty [`PatternDelta`] (`Delta` from the acknowledged version
    /// to itself, or an empty `Snapshot` after `ResyncRequired`), so versions
    /// do not move with views either. The private contribution (differential
    /// privacy within a daily budget, see issue 14) replaces this one
    /// function; nothing else in the sync path builds an upload.
    /// [`Self::build_delta`] and [`Self::build_snapshot`] are deliberately not
    /// called here: their output leaks what was watched.
    pub fn upload_for_sync(&self, kind: UploadKind) -> DeltaPlan {
        let acked = self.state.read().versions.acked;
        DeltaPlan {
            kind: match kind {
                UploadKind::Delta => SyncKind::Delta,
                UploadKind::Snapshot => SyncKind::Snapshot,
            },
            base_version: match kind {
                UploadKind::Delta => acked,
                UploadKind::Snapshot => 0,
            },
            upto_version: acked,
            delta: PatternDelta::default(),
            more: false,
        }
    }

    /// The privacy figures for `stats` at `now_ms` (ms since the epoch):
    /// the daily budget spent and left, the pending release, the last
    /// release's central and local ε.
    pub fn privacy_status(&self, now_ms: u64) -> Result<PrivacyStatus, BrainError> {
        Ok(self.rounds.status(now_ms)?)
    }

    /// The forget generation waiting for a node's acceptance, if any.
    pub fn forget_pending(&self) -> Option<u64> {
        (self.forget.asked > self.forget.acked).then_some(self.forget.asked)
    }

    /// The next sync request: a `Forget` while one is pending (whatever
    /// `kind` says), else [`Self::upload_for_sync`]'s upload, with the global
    /// and catalog versions held, the fleet cursor and `region`; and the
    /// answer to the node's last round message, made by the round client at
    /// `now_ms` (ms since the epoch; `auth` signs and checks round keys;
    /// `rng` a CSPRNG for its keys) and its privacy state stored before the
    /// request is returned. A message the TV declines is reported in
    /// [`PreparedSync::round_declined`] and nothing of the round is sent.
    pub fn prepare_sync(
        &mut self,
        kind: UploadKind,
        region: Region,
        now_ms: u64,
        auth: &RoundCredentials,
        rng: &mut impl CryptoRng,
    ) -> Result<PreparedSync, BrainError> {
        let (round, round_declined) = self.answer_round(now_ms, auth, rng)?;
        let (versions, fleet) = {
            let st = self.state.read();
            (st.versions, st.fleet.cursor())
        };
        let (kind, base_version, pattern_version, delta, forget_generation) =
            match self.forget_pending() {
                Some(g) => (SyncKind::Forget, 0, 0, PatternDelta::default(), Some(g)),
                None => {
                    let p = self.upload_for_sync(kind);
                    (p.kind, p.base_version, p.upto_version, p.delta, None)
                }
            };
        Ok(PreparedSync {
            request: SyncRequest {
                kind,
                base_version,
                pattern_version,
                global_version: versions.global,
                catalog_version: versions.catalog,
                region,
                delta,
                round,
                fleet,
            },
            forget_generation,
            round_declined,
        })
    }

    /// The round client's answer to the node's last round message, its
    /// state stored first when it changed.
    fn answer_round(
        &mut self,
        now_ms: u64,
        auth: &RoundCredentials,
        rng: &mut impl CryptoRng,
    ) -> Result<(Option<TvToNode>, Option<RoundClientError>), BrainError> {
        let Some(msg) = self.round_inbox.clone() else {
            return Ok((None, None));
        };
        let answer = {
            let st = self.state.read();
            let slots = match &msg {
                NodeToTv::Invite { spec, .. } => catalog_slots(spec, &st),
                _ => Ok(HashMap::new()),
            };
            slots.and_then(|slots| self.rounds.on_node(msg, &st, &slots, now_ms, auth, rng))
        };
        if self.rounds.take_unsaved() {
            let bytes = enc("blobs", self.rounds.state())?;
            let stored = self.write(|txn| {
                txn.open_table(BLOBS)
                    .map_err(BrainError::storage)?
                    .insert(PRIVACY_BLOB, bytes.as_slice())
                    .map_err(BrainError::storage)?;
                Ok(())
            });
            if let Err(e) = stored {
                // Not stored, not sent: the charge made in memory stays (the
                // conservative side), the answer is dropped.
                self.round_inbox = None;
                return Err(e);
            }
        }
        match answer {
            Ok(reply) => Ok((reply, None)),
            Err(e) => {
                // Declined: the same message would be declined again.
                self.round_inbox = None;
                Ok((None, Some(e)))
            }
        }
    }

    /// Applies a node's acceptance of `sent` ([`Self::apply_sync`]) and
    /// then: for a `Forget`, records its generation as acknowledged in the
    /// same transaction (the tombstone is done once no newer forget is
    /// pending); otherwise acknowledges the upload ([`Self::acknowledge`],
    /// a second transaction), unless a forget is pending (the node is about to
    /// drop everything anyway). An acknowledgement naming a version the TV
    /// never sent, or failing to commit, is reported in
    /// [`SyncFinished::ack_refused`] with the download applied.
    pub fn finish_sync(
        &mut self,
        sent: &PreparedSync,
        accepted: &SyncAccepted,
    ) -> Result<SyncFinished, BrainError> {
        self.round_inbox = accepted.round.clone();
        if let Some(g) = sent.forget_generation {
            let acked = self.forget.acked.max(g);
            let applied = self.apply_sync_with(accepted, &[("forget_acked", acked)])?;
            self.forget.acked = acked;
            return Ok(SyncFinished {
                applied,
                ack_refused: None,
                forget_acknowledged: self.forget_pending().is_none(),
            });
        }
        let applied = self.apply_sync(accepted)?;
        let ack_refused = match self.forget_pending() {
            Some(_) => None,
            None => self
                .acknowledge(
                    sent.request.kind,
                    accepted.acked_version,
                    delta::MIN_DISTINCT_ITEMS,
                )
                .err(),
        };
        Ok(SyncFinished {
            applied,
            ack_refused,
            forget_acknowledged: false,
        })
    }

    /// Privacy rule 4: erases the viewing history and local patterns (pattern
    /// ids are never reused; the episode sequence starts again at 0, so a new
    /// `seq` does not count what was erased) and, in the same commit, queues
    /// the forget tombstone: the next syncs send `Forget` until a node
    /// accepts it ([`Self::forget_pending`]).
    ///
    /// Deleting rows would not do: redb leaves freed pages in the file with
    /// their old bytes. So the store is rewritten ([`BrainStore::rewrite`]):
    /// a fresh file gets everything but the history, is committed, then
    /// renamed over the old one. A crash before the rename leaves the old
    /// store whole (the forget was not answered); once `Ok` is returned the
    /// erasure is durable. The damaged copies of this store
    /// ([`OpenOutcome::Recovered`]) hold history too: they are deleted first
    /// (a failure returns the error, the store unchanged; call again). The
    /// catalog index file holds catalog vectors only and is kept.
    pub fn forget(&mut self) -> Result<(), BrainError> {
        remove_damaged_copies(&self.path)?;
        let mut versions = self.state.read().versions;
        versions.pattern += 1;
        versions.acked = 0;
        let asked = self.forget.asked + 1;
        let privacy = enc("blobs", &self.rounds.state().forgotten())?;
        self.rewrite(&[EPISODES, PATTERNS, TOMBSTONES], |txn| {
            txn.open_table(BLOBS)
                .map_err(BrainError::storage)?
                .insert(PRIVACY_BLOB, privacy.as_slice())
                .map_err(BrainError::storage)?;
            Self::put_meta(
                txn,
                &versions,
                &[("next_episode", 0), ("forget_asked", asked)],
            )
        })?;
        self.next_episode = 0;
        self.forget.asked = asked;
        self.rounds.forget();
        // Stored above, in the rewrite's commit.
        self.rounds.take_unsaved();
        self.round_inbox = None;
        let mut st = self.state.write();
        st.clear_episodes();
        st.patterns.clear();
        st.versions = versions;
        Ok(())
    }
}

impl BrainStore {
    /// Replaces the store file by a fresh one holding every table of this
    /// one except `drop` (left empty), then `f`'s writes, in one commit; the
    /// fresh file is then renamed over this one and reopened. Nothing of the
    /// dropped tables' old bytes survives in the file (unlike deleting rows,
    /// which leaves freed pages as they were). A table this code does not
    /// know is an error before anything changes, so no table is ever lost.
    fn rewrite(
        &mut self,
        drop: &[TableDefinition<'_, u64, &[u8]>],
        f: impl FnOnce(&WriteTransaction) -> Result<(), BrainError>,
    ) -> Result<(), BrainError> {
        let mut fresh_path = self.path.clone().into_os_string();
        fresh_path.push(".rewrite");
        let fresh_path = PathBuf::from(fresh_path);
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| BrainError::Io { what, path, source }
        };
        match std::fs::remove_file(&fresh_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("removing a stale rewrite", &fresh_path)(e));
            }
            _ => {}
        }
        if let Err(e) = self.build_rewrite(&fresh_path, drop, f) {
            // Best effort: the partial file holds no more than the store.
            let _ = std::fs::remove_file(&fresh_path);
            return Err(e);
        }
        std::fs::rename(&fresh_path, &self.path).map_err(io("replacing the store", &self.path))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing the data directory", dir))?;
        }
        self.db = Database::builder()
            .set_cache_size(self.cfg.cache_bytes)
            .create(&self.path)
            .map_err(BrainError::storage)?;
        Ok(())
    }

    /// [`BrainStore::rewrite`]'s fresh file at `fresh_path`, committed.
    fn build_rewrite(
        &self,
        fresh_path: &Path,
        drop: &[TableDefinition<'_, u64, &[u8]>],
        f: impl FnOnce(&WriteTransaction) -> Result<(), BrainError>,
    ) -> Result<(), BrainError> {
        private_db_file(fresh_path)?;
        let fresh = Database::builder()
            .set_cache_size(self.cfg.cache_bytes)
            .create(fresh_path)
            .map_err(BrainError::storage)?;
        let src = self.db.begin_read().map_err(BrainError::storage)?;
        let dst = fresh.begin_write().map_err(BrainError::storage)?;
        let dropped: Vec<&str> = drop.iter().map(|t| t.name()).collect();
        for t in src.list_tables().map_err(BrainError::storage)? {
            let name = t.name();
            if dropped.contains(&name) {
                continue;
            }
            match name {
                "meta" => copy_table(&src, &dst, META)?,
                "blobs" => copy_table(&src, &dst, BLOBS)?,
                "catalog_ids" => copy_table(&src, &dst, CATALOG_IDS)?,
                _ => match [EPISODES, PATTERNS, TOMBSTONES, GLOBALS, CATALOG]
                    .into_iter()
                    .find(|d| d.name() == name)
                {
                    Some(def) => copy_table(&src, &dst, def)?,
                    None => {
                        return Err(BrainError::corrupt(
                            "store",
                            format!("table {name} has no rewrite rule"),
                        ))
                    }
                },
            }
        }
        for t in drop {
            dst.open_table(*t).map_err(BrainError::storage)?;
        }
        f(&dst)?;
        dst.commit().map_err(BrainError::storage)
    }
}

/// Copies every row of `def` from `src` to `dst`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<(), BrainError> {
    let from = src.open_table(def).map_err(BrainError::storage)?;
    let mut to = dst.open_table(def).map_err(BrainError::storage)?;
    for row in from.iter().map_err(BrainError::storage)? {
        let (k, v) = row.map_err(BrainError::storage)?;
        to.insert(k.value(), v.value())
            .map_err(BrainError::storage)?;
    }
    Ok(())
}

fn missing_pattern(id: PatternId) -> BrainError {
    BrainError::corrupt(
        "patterns",
        format!("pattern {} is in memory but not in the store", id.0),
    )
}

/// Whether `name` is that of a copy [`move_aside`] made of the file `base`.
fn is_damaged_copy(base: &std::ffi::OsStr, name: &std::ffi::OsStr) -> bool {
    let (Some(base), Some(name)) = (base.to_str(), name.to_str()) else {
        return false;
    };
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix(".damaged-"))
        .is_some_and(|tail| {
            !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        })
}

/// Deletes every damaged copy of the store at `path` (they hold history),
/// then syncs the directory so the deletions are durable.
fn remove_damaged_copies(path: &Path) -> Result<(), BrainError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrainError::Io { what, path, source }
    };
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io("listing damaged store copies", dir))? {
        let entry = entry.map_err(io("listing damaged store copies", dir))?;
        if is_damaged_copy(base, &entry.file_name()) {
            let copy = entry.path();
            std::fs::remove_file(&copy).map_err(io("deleting a damaged store copy", &copy))?;
            tracing::info!(path = %copy.display(), "forget: deleted a damaged store copy");
            removed = true;
        }
    }
    if removed {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the data directory", dir))?;
    }
    Ok(())
}

fn move_aside(path: &Path) -> Result<PathBuf, BrainError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut n = 0u32;
    loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".damaged-{secs}"));
        if n > 0 {
            name.push(format!("-{n}"));
        }
        let target = PathBuf::from(name);
        if !target.exists() {
            std::fs::rename(path, &target).map_err(|source| BrainError::Io {
                what: "moving damaged store aside",
                path: path.to_path_buf(),
                source,
            })?;
            return Ok(target);
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn table_names(s: &BrainStore) -> Vec<String> {
        let r = s.db.begin_read().expect("read");
        let mut v: Vec<String> = r
            .list_tables()
            .expect("list")
            .map(|t| t.name().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn forget_rewrites_every_table_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.redb");
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).expect("open");
        let before = table_names(&s);
        assert_eq!(before.len(), 8, "{before:?}");
        s.forget().expect("forget");
        assert_eq!(table_names(&s), before);
        // A table without a rewrite rule: refused, the store unchanged.
        let t = s.db.begin_write().expect("write");
        t.open_table(TableDefinition::<u64, u64>::new("unknown"))
            .expect("create");
        t.commit().expect("commit");
        let version = s.state.read().versions.pattern;
        assert!(s.forget().is_err());
        assert_eq!(s.state.read().versions.pattern, version);
        assert!(table_names(&s).contains(&"unknown".to_string()));
        assert!(!dir.path().join("b.redb.rewrite").exists());
    }

    #[test]
    fn only_the_stores_own_damaged_copies_match() {
        let base = OsStr::new("brain.redb");
        for name in ["brain.redb.damaged-1795872298", "brain.redb.damaged-17-2"] {
            assert!(is_damaged_copy(base, OsStr::new(name)), "{name}");
        }
        for name in [
            "brain.redb",
            "brain.redb.index",
            "brain.redb.damaged-",
            "brain.redb.damaged-x",
            "other.redb.damaged-1",
            "brain.redb.index.damaged-1",
        ] {
            assert!(!is_damaged_copy(base, OsStr::new(name)), "{name}");
        }
    }
}
