//! The constellation's storage interface, [`PatternStore`], and its
//! implementations.
//!
//! The trait is shaped for a wide-column store (the later ScyllaDB
//! implementation must fit it) as much as for the embedded redb store of
//! omega-constellation:
//!
//! * **per device** (partition key: device id): a [`DeviceState`] and the
//!   device's patterns. [`PatternStore::apply_device_sync`] is the only
//!   multi-row write and it touches one device only (in ScyllaDB: one logged
//!   batch over the device's partition and its rows in the region table).
//! * **per region** (partition key: region): the device patterns of the region
//!   (the federation's input, read in bounded pages), the published global
//!   patterns with their versions and tombstones, and the trend signals.
//! * **catalog**: items with embeddings keyed by [`ContentId`]; every change
//!   takes the next value of a monotonic catalog sequence, so devices page
//!   through changes by version.
//!
//! No operation assumes a transaction across devices or regions.
//!
//! The trait is blocking. Callers run it off the async executor (a shard
//! actor calls it from `spawn_blocking` or a dedicated thread); a ScyllaDB
//! implementation bridges to its async driver inside those blocking calls.
//!
//! Invariants every implementation keeps (checked by `suite`, with the `testing` feature):
//!
//! * A write returns `Ok` only once it is durable; a write that returns `Err`
//!   applied nothing.
//! * All patterns of a device belong to the device's current region.
//! * Versions never go backwards: a device's state is what the last
//!   successful sync wrote; a region's global version only grows; the catalog
//!   version only grows.
//!
//! Limits (past each, the write is refused with [`StoreError::LimitExceeded`]
//! and nothing is applied, or a read is clamped):
//!
//! * [`MAX_PATTERNS_PER_DEVICE`] patterns per device.
//! * [`MAX_GLOBALS_PER_REGION`] live global patterns and [`limits::MAX_TRENDS`]
//!   trends per region; at most [`MAX_GLOBAL_TOMBSTONES`] withdrawn ids are
//!   remembered per region (older ones are pruned and devices that far behind
//!   get a reset instead of a delta).
//! * [`MAX_SCAN_PAGE`] rows per region-pattern or catalog-entry page,
//!   [`limits::MAX_CATALOG_PAGE`] per catalog-change page.

use crate::aggregate::RegionTotals;
use serde::{Deserialize, Serialize};

use omega_protocol::{
    limits, ContentId, ContextBucket, DeviceId, GlobalPattern, PackedCatalogEntry,
    PackedCatalogPage, PackedGlobalPattern, PatternId, Region, TernaryEmbedding, TrendSignal,
};

#[cfg(any(test, feature = "testing"))]
mod failing;
mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod suite;

#[cfg(any(test, feature = "testing"))]
pub use failing::FailingStore;
pub use memory::MemoryStore;

/// Patterns one device may hold on the node.
pub const MAX_PATTERNS_PER_DEVICE: u32 = 1024;
/// Live global patterns per region (one response's worth).
pub const MAX_GLOBALS_PER_REGION: usize = limits::MAX_GLOBAL_PATTERNS;
/// Withdrawn global ids remembered per region (one response's worth).
pub const MAX_GLOBAL_TOMBSTONES: usize = limits::MAX_GLOBAL_REMOVED;
/// Rows in one page of [`PatternStore::region_patterns`] or
/// [`PatternStore::catalog_entries`]; larger requests are clamped.
pub const MAX_SCAN_PAGE: usize = 4096;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The storage engine failed (I/O, transaction, commit, connection).
    /// Nothing from a failed write was applied.
    #[error("storage backend failed during {op}: {message}")]
    Backend {
        /// The store operation that failed.
        op: &'static str,
        /// The engine's error, rendered.
        message: String,
    },
    /// The storage ran out of space during `op`; nothing from a failed write
    /// was applied.
    #[error("storage full during {op}")]
    DiskFull {
        /// The store operation that failed.
        op: &'static str,
    },
    /// The store was written in a record format this build does not read
    /// (e.g. by an older build); nothing was read or changed.
    #[error("the store is in format {found}, this build reads format {supported} only")]
    UnsupportedFormat {
        /// The file's format.
        found: u64,
        /// The format this build reads.
        supported: u64,
    },
    /// Stored bytes could not be decoded: the store is damaged or was written
    /// by an incompatible build.
    #[error("stored {what} is corrupt: {message}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// The decoder's error, rendered.
        message: String,
    },
    /// A write would exceed a store limit (see the module docs); nothing was
    /// applied.
    #[error("{what}: {len} exceeds the limit of {max}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The size the write would have produced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// [`PatternStore::publish_globals`] was given a version not above the
    /// region's current one (a concurrent or replayed federation run); nothing
    /// was applied.
    #[error("global version {given} is not above the current version {current}")]
    StaleVersion {
        /// The region's current global version.
        current: u64,
        /// The version the caller tried to publish.
        given: u64,
    },
    /// The caller broke the operation's contract (e.g. one global id twice in
    /// a publication); nothing was applied.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// Another writer changed the same device (catalog counter, learned
    /// totals) between this operation's read and its write (a store shared
    /// by several nodes); nothing was applied. The caller may re-read and
    /// retry.
    #[error("{op}: a concurrent write changed the record first")]
    Conflict {
        /// The store operation that was refused.
        op: &'static str,
    },
    /// A fault injected by `FailingStore` (tests only); nothing was applied.
    #[cfg(any(test, feature = "testing"))]
    #[error("injected failure of write #{write}")]
    Injected {
        /// The 1-based number of the failed write.
        write: u64,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`] of operation `op` with `e` rendered.
    pub fn backend(op: &'static str, e: impl std::fmt::Display) -> Self {
        StoreError::Backend {
            op,
            message: e.to_string(),
        }
    }
}

/// What the node remembers about a device besides its patterns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The device pattern version the node acknowledged last.
    pub pattern_version: u64,
    /// The device's region (all its patterns belong to it).
    pub region: Region,
    /// Unix milliseconds of the last accepted sync.
    pub last_sync_ms: u64,
}

/// A device's state as stored, with the pattern count the store maintains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// What the last sync wrote.
    pub state: DeviceState,
    /// How many patterns the device holds on the node.
    pub pattern_count: u32,
}

/// One device pattern as stored on the node: `E` is the embedding's form,
/// the ternary wire form it arrived in (the default, what stores hold) or
/// [`Embedding`](omega_protocol::Embedding) once federation has decoded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPattern<E = TernaryEmbedding> {
    /// The pattern's id on its device.
    pub id: PatternId,
    /// Coarse context.
    pub bucket: ContextBucket,
    /// Aggregate embedding.
    pub embedding: E,
    /// Share of successful watches, 0.0–1.0.
    pub success_rate: f32,
    /// Watches folded into the pattern (at least 1).
    pub samples: u32,
    /// Unix milliseconds of the sync that last wrote it.
    pub updated_at_ms: u64,
}

/// A device pattern found by a region scan (`E`: see [`StoredPattern`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionPattern<E = TernaryEmbedding> {
    /// The device holding it.
    pub device: DeviceId,
    /// The pattern.
    pub pattern: StoredPattern<E>,
}

/// Where a region scan resumes: strictly after this (device, pattern) key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PatternCursor {
    /// Device of the last row returned.
    pub device: DeviceId,
    /// Pattern id of the last row returned.
    pub pattern: PatternId,
}

/// One page of a region scan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionPatternPage {
    /// Rows in (device, pattern id) order.
    pub rows: Vec<RegionPattern>,
    /// Where the next page starts, `None` when the scan is complete.
    pub next: Option<PatternCursor>,
}

impl RegionPatternPage {
    /// A page of `rows`; when `more` rows follow, the cursor points after the
    /// last one.
    pub fn new(rows: Vec<RegionPattern>, more: bool) -> Self {
        let next = if more {
            rows.last().map(|r| PatternCursor {
                device: r.device.clone(),
                pattern: r.pattern.id,
            })
        } else {
            None
        };
        Self { rows, next }
    }
}

/// The changes one sync makes to one device, applied atomically.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSync<'a> {
    /// The device's state after the sync (its region moves every pattern).
    pub state: &'a DeviceState,
    /// Drop every pattern of the device before applying the rest (snapshot).
    pub reset: bool,
    /// Patterns to insert or replace, by id.
    pub upserts: &'a [StoredPattern],
    /// Pattern ids to delete (unknown ids are ignored).
    pub removals: &'a [PatternId],
}

impl DeviceSync<'_> {
    /// The device's patterns by id after this sync, from its `current` ones
    /// (ignored when `reset`): removals, then upserts. Refuses with
    /// [`StoreError::LimitExceeded`] past [`MAX_PATTERNS_PER_DEVICE`].
    pub fn apply_to(
        &self,
        current: impl IntoIterator<Item = StoredPattern>,
    ) -> Result<std::collections::BTreeMap<PatternId, StoredPattern>, StoreError> {
        let mut mine: std::collections::BTreeMap<PatternId, StoredPattern> = if self.reset {
            std::collections::BTreeMap::new()
        } else {
            current.into_iter().map(|p| (p.id, p)).collect()
        };
        for id in self.removals {
            mine.remove(id);
        }
        for p in self.upserts {
            mine.insert(p.id, p.clone());
        }
        if mine.len() > MAX_PATTERNS_PER_DEVICE as usize {
            return Err(StoreError::LimitExceeded {
                what: "patterns per device",
                len: mine.len(),
                max: MAX_PATTERNS_PER_DEVICE as usize,
            });
        }
        Ok(mine)
    }
}

/// A region's published globals as the store holds them (`E`: the wire form,
/// or [`Embedding`](omega_protocol::Embedding) once federation decoded them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionGlobals<E = TernaryEmbedding> {
    /// Current global version (0: nothing published yet).
    pub version: u64,
    /// Live global patterns, ordered by id.
    pub patterns: Vec<GlobalPattern<E>>,
    /// Current trend signals.
    pub trends: Vec<TrendSignal>,
    /// The largest global id ever published in the region (ids are never
    /// reused).
    pub max_id: u64,
}

impl<E> Default for RegionGlobals<E> {
    fn default() -> Self {
        Self {
            version: 0,
            patterns: Vec::new(),
            trends: Vec::new(),
            max_id: 0,
        }
    }
}

/// What changed in a region's globals since a device's version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GlobalsChange {
    /// The region's current global version.
    pub version: u64,
    /// The device must drop its globals first (`patterns` is then the whole
    /// set): it was at 0, ahead of the node, or behind the remembered
    /// tombstones.
    pub reset: bool,
    /// Patterns added or changed since the device's version (all when `reset`).
    pub patterns: Vec<PackedGlobalPattern>,
    /// Ids withdrawn since the device's version (empty when `reset`).
    pub removed: Vec<u64>,
    /// The region's current trends.
    pub trends: Vec<TrendSignal>,
}

/// The node's storage. See the module docs for the partitioning and the
/// invariants; `suite` (feature `testing`) checks them for any implementation.
pub trait PatternStore: Send + Sync {
    /// The device's state, `None` if the node holds nothing for it.
    fn device_state(&self, device: &DeviceId) -> Result<Option<DeviceInfo>, StoreError>;

    /// All patterns of a device, by id (at most [`MAX_PATTERNS_PER_DEVICE`]).
    fn device_patterns(&self, device: &DeviceId) -> Result<Vec<StoredPattern>, StoreError>;

    /// Applies one sync of one device atomically and durably: optionally drops
    /// every pattern (`reset`), then removes `removals`, then upserts
    /// `upserts`, moves all patterns to `state.region` and writes `state`.
    /// Refuses with [`StoreError::LimitExceeded`] if the device would hold more
    /// than [`MAX_PATTERNS_PER_DEVICE`] patterns. Returns the new pattern count.
    fn apply_device_sync(&self, device: &DeviceId, sync: DeviceSync<'_>)
        -> Result<u32, StoreError>;

    /// Drops the device's state and patterns (privacy rule 4). Returns whether
    /// anything was held.
    fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError>;

    /// The region's learned totals (the folded sums of its aggregation
    /// rounds: no device's data), `None` if never stored.
    fn region_totals(&self, region: &Region) -> Result<Option<RegionTotals>, StoreError>;

    /// The rounds of the region's learned totals (`None`: none stored),
    /// for a node checking whether another node folded: a store that keeps
    /// them apart answers without reading the totals (the default reads
    /// them).
    fn region_totals_rounds(&self, region: &Region) -> Result<Option<u32>, StoreError> {
        Ok(self.region_totals(region)?.map(|t| t.rounds))
    }

    /// Replaces the region's learned totals if the stored ones are still
    /// those the caller computed `totals` from: `read` is their
    /// [`RegionTotals::rounds`] (`None`: none were stored). Otherwise
    /// (another node folded a round meanwhile) refuses with
    /// [`StoreError::Conflict`] and changes nothing: the caller re-reads,
    /// adds its rounds to what it read and tries again. Rounds only grow, so
    /// they name the stored totals.
    fn put_region_totals(
        &self,
        region: &Region,
        read: Option<u32>,
        totals: &RegionTotals,
    ) -> Result<(), StoreError>;

    /// Regions that have held devices (the federation's work list).
    fn regions(&self) -> Result<Vec<Region>, StoreError>;

    /// One page of a region's device patterns in (device, pattern id) order,
    /// strictly after `after`; `limit` is clamped to 1..=[`MAX_SCAN_PAGE`].
    fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError>;

    /// Replaces the region's global patterns and trends with these, as
    /// `version` (which must be above the current one). Patterns equal to the
    /// stored ones keep their change version; missing ids become tombstones.
    /// At most [`MAX_GLOBALS_PER_REGION`] patterns (unique ids) and
    /// [`limits::MAX_TRENDS`] trends.
    fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        patterns: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError>;

    /// The region's current globals.
    fn region_globals(&self, region: &Region) -> Result<RegionGlobals, StoreError>;

    /// What changed in the region's globals since `since` (see
    /// [`GlobalsChange::reset`] for when the answer is the whole set).
    fn globals_since(&self, region: &Region, since: u64) -> Result<GlobalsChange, StoreError>;

    /// Inserts or replaces catalog entries (in order; a later duplicate wins).
    /// Each entry takes the next catalog version; returns the new version.
    fn upsert_catalog(&self, entries: &[PackedCatalogEntry]) -> Result<u64, StoreError>;

    /// Withdraws catalog items (unknown ids are ignored). Each withdrawn item
    /// takes the next catalog version; returns the new version.
    fn remove_catalog(&self, ids: &[ContentId]) -> Result<u64, StoreError>;

    /// The current catalog version (0: empty, never written).
    fn catalog_version(&self) -> Result<u64, StoreError>;

    /// Live catalog items.
    fn catalog_len(&self) -> Result<u64, StoreError>;

    /// Changes after version `since`, oldest first, at most `max_items`
    /// (clamped to 1..=[`limits::MAX_CATALOG_PAGE`]) upserts plus removals.
    /// The page's `version` is that of its last change, or the current version
    /// when it reaches the end (`more == false`). An item changed twice appears
    /// once, at its latest version.
    fn catalog_page(&self, since: u64, max_items: usize) -> Result<PackedCatalogPage, StoreError>;

    /// Live catalog entries in id order strictly after `after`; `limit` is
    /// clamped to 1..=[`MAX_SCAN_PAGE`] (for the federation's trend mapping).
    fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError>;
}

/// Checks `publish_globals` arguments; shared by the implementations.
pub fn check_publish(
    patterns: &[PackedGlobalPattern],
    trends: &[TrendSignal],
) -> Result<(), StoreError> {
    if patterns.len() > MAX_GLOBALS_PER_REGION {
        return Err(StoreError::LimitExceeded {
            what: "global patterns per region",
            len: patterns.len(),
            max: MAX_GLOBALS_PER_REGION,
        });
    }
    if trends.len() > limits::MAX_TRENDS {
        return Err(StoreError::LimitExceeded {
            what: "trends per region",
            len: trends.len(),
            max: limits::MAX_TRENDS,
        });
    }
    let mut ids: Vec<u64> = patterns.iter().map(|p| p.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(StoreError::InvalidInput {
            reason: "a global pattern id appears twice".into(),
        });
    }
    Ok(())
}

/// One global id's stored record: the version of its last change and the
/// pattern, or `None` for a tombstone (a withdrawn id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalRecord {
    /// The global version that last changed it.
    pub changed: u64,
    /// The pattern; `None` once withdrawn.
    pub pattern: Option<PackedGlobalPattern>,
}

/// What [`plan_publish`] decided a publication writes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PublishPlan {
    /// Records to write (new or changed patterns, new tombstones).
    pub writes: Vec<(u64, GlobalRecord)>,
    /// Tombstones to delete (the oldest past [`MAX_GLOBAL_TOMBSTONES`]).
    pub pruned: Vec<u64>,
    /// The region's tombstone floor after the publication.
    pub floor: u64,
    /// The region's largest global id after the publication.
    pub max_id: u64,
}

/// Plans publishing `patterns` as `version` over the region's stored
/// `records` (by id), `floor` and `max_id`, for stores that persist records
/// one by one: patterns equal to the stored ones keep their change version,
/// missing live ids become tombstones, the oldest tombstones past
/// [`MAX_GLOBAL_TOMBSTONES`] are pruned (raising the floor). The caller has
/// checked the arguments ([`check_publish`]) and the version.
pub fn plan_publish(
    records: &std::collections::BTreeMap<u64, GlobalRecord>,
    floor: u64,
    max_id: u64,
    version: u64,
    patterns: &[PackedGlobalPattern],
) -> PublishPlan {
    let mut plan = PublishPlan {
        floor,
        max_id,
        ..PublishPlan::default()
    };
    let new_ids: std::collections::BTreeSet<u64> = patterns.iter().map(|p| p.id).collect();
    for (id, rec) in records {
        if rec.pattern.is_some() && !new_ids.contains(id) {
            let tomb = GlobalRecord {
                changed: version,
                pattern: None,
            };
            plan.writes.push((*id, tomb));
        }
    }
    for p in patterns {
        let unchanged =
            matches!(records.get(&p.id), Some(GlobalRecord { pattern: Some(old), .. }) if old == p);
        if !unchanged {
            let rec = GlobalRecord {
                changed: version,
                pattern: Some(p.clone()),
            };
            plan.writes.push((p.id, rec));
        }
        plan.max_id = plan.max_id.max(p.id);
    }
    let mut after = records.clone();
    after.extend(plan.writes.iter().cloned());
    let mut tombstones: Vec<(u64, u64)> = after
        .iter()
        .filter(|(_, rec)| rec.pattern.is_none())
        .map(|(id, rec)| (rec.changed, *id))
        .collect();
    tombstones.sort_unstable();
    let excess = tombstones.len().saturating_sub(MAX_GLOBAL_TOMBSTONES);
    for (changed, id) in tombstones.into_iter().take(excess) {
        plan.pruned.push(id);
        plan.floor = plan.floor.max(changed);
    }
    plan
}

/// [`PatternStore::globals_since`] over a region's stored state: its
/// `version`, tombstone `floor`, `trends` and `records` by id.
pub fn globals_change(
    version: u64,
    floor: u64,
    trends: Vec<TrendSignal>,
    records: &std::collections::BTreeMap<u64, GlobalRecord>,
    since: u64,
) -> GlobalsChange {
    let mut change = GlobalsChange {
        version,
        trends,
        ..GlobalsChange::default()
    };
    if since == version {
        return change;
    }
    change.reset = since == 0 || since > version || since < floor;
    for (id, rec) in records {
        match &rec.pattern {
            Some(p) if change.reset || rec.changed > since => change.patterns.push(p.clone()),
            None if !change.reset && rec.changed > since => change.removed.push(*id),
            _ => {}
        }
    }
    change
}

/// `limit` clamped to `1..=max` (page sizes of the scans).
pub fn clamp_page(limit: usize, max: usize) -> usize {
    limit.clamp(1, max)
}

/// Lets states that hold an `Arc<dyn PatternStore>` derive `Debug`.
impl std::fmt::Debug for dyn PatternStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn PatternStore")
    }
}

/// A shared store (one per node, handed to every shard's core).
impl<T: PatternStore + ?Sized> PatternStore for std::sync::Arc<T> {
    fn device_state(&self, device: &DeviceId) -> Result<Option<DeviceInfo>, StoreError> {
        (**self).device_state(device)
    }
    fn device_patterns(&self, device: &DeviceId) -> Result<Vec<StoredPattern>, StoreError> {
        (**self).device_patterns(device)
    }
    fn apply_device_sync(
        &self,
        device: &DeviceId,
        sync: DeviceSync<'_>,
    ) -> Result<u32, StoreError> {
        (**self).apply_device_sync(device, sync)
    }
    fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        (**self).forget_device(device)
    }
    fn region_totals(&self, region: &Region) -> Result<Option<RegionTotals>, StoreError> {
        (**self).region_totals(region)
    }
    fn region_totals_rounds(&self, region: &Region) -> Result<Option<u32>, StoreError> {
        (**self).region_totals_rounds(region)
    }
    fn put_region_totals(
        &self,
        region: &Region,
        read: Option<u32>,
        totals: &RegionTotals,
    ) -> Result<(), StoreError> {
        (**self).put_region_totals(region, read, totals)
    }
    fn regions(&self) -> Result<Vec<Region>, StoreError> {
        (**self).regions()
    }
    fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError> {
        (**self).region_patterns(region, after, limit)
    }
    fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        patterns: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError> {
        (**self).publish_globals(region, version, patterns, trends)
    }
    fn region_globals(&self, region: &Region) -> Result<RegionGlobals, StoreError> {
        (**self).region_globals(region)
    }
    fn globals_since(&self, region: &Region, since: u64) -> Result<GlobalsChange, StoreError> {
        (**self).globals_since(region, since)
    }
    fn upsert_catalog(&self, entries: &[PackedCatalogEntry]) -> Result<u64, StoreError> {
        (**self).upsert_catalog(entries)
    }
    fn remove_catalog(&self, ids: &[ContentId]) -> Result<u64, StoreError> {
        (**self).remove_catalog(ids)
    }
    fn catalog_version(&self) -> Result<u64, StoreError> {
        (**self).catalog_version()
    }
    fn catalog_len(&self) -> Result<u64, StoreError> {
        (**self).catalog_len()
    }
    fn catalog_page(&self, since: u64, max_items: usize) -> Result<PackedCatalogPage, StoreError> {
        (**self).catalog_page(since, max_items)
    }
    fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError> {
        (**self).catalog_entries(after, limit)
    }
}
