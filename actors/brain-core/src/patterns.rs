//! Local patterns: the device's consolidated tastes per context bucket.
//!
//! Sans-IO. A successful watch (fraction ≥ 0.7) folds the item's embedding into
//! the most similar pattern of the event's bucket when the cosine is at least
//! [`PatternConfig::assign_threshold`], else it starts a new pattern. An
//! unsuccessful watch counts as a view of the nearest pattern above the same
//! threshold (its success rate drops) and adds no embedding; with no such
//! pattern it changes nothing.
//!
//! Changes are *planned* ([`PatternBook::plan_view`] returns [`PatternOp`]s)
//! and *applied* separately ([`PatternBook::apply`]), so the store can commit
//! them to disk first and touch memory only on success.
//!
//! Memory holds a [`PatternInfo`] per pattern: the counters and the centroid
//! as int8 codes (≈ 450 bytes). The full [`LocalPattern`] with its exact f32
//! sum and item fingerprints (≈ 1.7 KB) lives only in the store; planning a
//! fold reads it through the `load` function the caller passes, so folding
//! stays exact while 10,000 patterns cost ≈ 4.5 MB of memory instead of ≈ 17.
//!
//! Bounds: at most [`PatternConfig::max_patterns`] patterns (default 10,000).
//! Starting one past the limit evicts the least useful: fewest views, then
//! oldest update, then lowest id; the eviction is recorded as a removal
//! ([`Tombstone`]) for the next delta. Each pattern remembers at most
//! [`MAX_TRACKED_ITEMS`] distinct item fingerprints: its distinct-item count
//! saturates there (it only needs to prove "at least 3").

use std::collections::{BTreeMap, BTreeSet};

use omega_protocol::{ContentId, ContextBucket, Embedding, I8Embedding, PatternId, PatternSummary};
use serde::{Deserialize, Serialize};

/// Distinct items a pattern tracks; its distinct count saturates here.
pub const MAX_TRACKED_ITEMS: usize = 64;

/// How patterns are formed and bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatternConfig {
    /// Most patterns kept; past it the least useful is evicted.
    pub max_patterns: usize,
    /// Cosine from which an item joins an existing pattern.
    pub assign_threshold: f32,
}

impl Default for PatternConfig {
    fn default() -> Self {
        Self {
            max_patterns: 10_000,
            assign_threshold: 0.55,
        }
    }
}

/// One local pattern, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalPattern {
    /// Id, unique on this device, never reused.
    pub id: PatternId,
    /// The context bucket.
    pub bucket: ContextBucket,
    /// Unnormalized sum of the embeddings of the successful watches.
    pub sum: Vec<f32>,
    /// Watches attributed (successful or not): the pattern's sample count.
    pub views: u32,
    /// Successful watches attributed.
    pub successes: u32,
    /// Sorted fingerprints of the distinct items folded in (at most
    /// [`MAX_TRACKED_ITEMS`]).
    pub items: Vec<u64>,
    /// Pattern version at creation.
    pub created_version: u64,
    /// Pattern version of the last change.
    pub updated_version: u64,
    /// Whether an acknowledged delta carried this pattern (the node has it).
    pub known_to_node: bool,
}

impl LocalPattern {
    /// A pattern from one successful watch.
    pub fn new(
        id: PatternId,
        bucket: ContextBucket,
        item: &Embedding,
        item_fp: u64,
        version: u64,
    ) -> Self {
        Self {
            id,
            bucket,
            sum: item.as_slice().to_vec(),
            views: 1,
            successes: 1,
            items: vec![item_fp],
            created_version: version,
            updated_version: version,
            known_to_node: false,
        }
    }

    /// Distinct items folded in (saturating at [`MAX_TRACKED_ITEMS`]).
    pub fn distinct_items(&self) -> u32 {
        self.items.len() as u32
    }

    /// The normalized direction of the sum; `None` if it has none.
    pub fn centroid(&self) -> Option<Embedding> {
        Embedding::new(self.sum.clone()).ok()
    }

    /// Folds one view into the pattern (exact: the f32 sum).
    pub fn fold(&mut self, item: &Embedding, item_fp: u64, success: bool, version: u64) {
        self.views = self.views.saturating_add(1);
        if success {
            self.successes = self.successes.saturating_add(1);
            self.sum
                .iter_mut()
                .zip(item.as_slice())
                .for_each(|(s, v)| *s += v);
            self.add_item(item_fp);
        }
        self.updated_version = version;
    }

    fn add_item(&mut self, fp: u64) {
        if let Err(pos) = self.items.binary_search(&fp) {
            if self.items.len() < MAX_TRACKED_ITEMS {
                self.items.insert(pos, fp);
            }
        }
    }
}

/// A removal waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Pattern version of the removal.
    pub version: u64,
    /// Whether the node had the pattern (only then is the removal sent).
    pub known_to_node: bool,
}

/// A planned change.
#[derive(Debug, Clone, PartialEq)]
pub enum PatternOp {
    /// Insert or replace this pattern.
    Upsert(LocalPattern),
    /// Remove a pattern (eviction), recording a tombstone at this version.
    Remove {
        /// The pattern.
        id: PatternId,
        /// The tombstone to keep for the next delta.
        tombstone: Tombstone,
    },
}

/// What memory keeps of a [`LocalPattern`]: everything but the exact sum and
/// the item fingerprints, with the centroid as int8 codes (cosine to the
/// exact centroid ≥ 0.9999).
#[derive(Debug, Clone, PartialEq)]
pub struct PatternInfo {
    /// Id.
    pub id: PatternId,
    /// The context bucket.
    pub bucket: ContextBucket,
    /// The normalized direction of the sum; `None` if it has none.
    pub centroid: Option<I8Embedding>,
    /// Watches attributed.
    pub views: u32,
    /// Successful watches attributed.
    pub successes: u32,
    /// Distinct items folded in (saturating at [`MAX_TRACKED_ITEMS`]).
    pub distinct_items: u32,
    /// Pattern version at creation.
    pub created_version: u64,
    /// Pattern version of the last change.
    pub updated_version: u64,
    /// Whether an acknowledged delta carried this pattern.
    pub known_to_node: bool,
}

impl PatternInfo {
    /// The in-memory part of `p`.
    pub fn of(p: &LocalPattern) -> Self {
        Self {
            id: p.id,
            bucket: p.bucket,
            centroid: p.centroid().map(|c| c.to_i8()),
            views: p.views,
            successes: p.successes,
            distinct_items: p.distinct_items(),
            created_version: p.created_version,
            updated_version: p.updated_version,
            known_to_node: p.known_to_node,
        }
    }

    /// successes / views.
    pub fn success_rate(&self) -> f32 {
        if self.views == 0 {
            0.0
        } else {
            self.successes as f32 / self.views as f32
        }
    }

    /// The shareable summary (the delta builder adds noise).
    pub fn summary(&self) -> Option<PatternSummary> {
        Some(PatternSummary {
            id: self.id,
            bucket: self.bucket,
            embedding: self.centroid.as_ref()?.decode().ok()?,
            success_rate: self.success_rate(),
            samples: self.views,
        })
    }
}

/// All local patterns (as [`PatternInfo`]), indexed by bucket, plus pending
/// tombstones.
#[derive(Debug, Clone, Default)]
pub struct PatternBook {
    slots: BTreeMap<PatternId, PatternInfo>,
    buckets: [BTreeSet<PatternId>; 8],
    tombstones: BTreeMap<PatternId, Tombstone>,
    next_id: u64,
}

/// Fingerprint of a content id (FNV-1a); stays on the device.
pub fn item_fingerprint(id: &ContentId) -> u64 {
    let mut h = omega_protocol::hash::Fnv1a::new();
    h.write(id.as_str().as_bytes());
    h.finish()
}

impl PatternBook {
    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A pattern by id.
    pub fn get(&self, id: PatternId) -> Option<&PatternInfo> {
        self.slots.get(&id)
    }

    /// All patterns in id order.
    pub fn iter(&self) -> impl Iterator<Item = &PatternInfo> {
        self.slots.values()
    }

    /// Patterns of one bucket that have a direction, with their centroids.
    pub fn in_bucket(
        &self,
        bucket: ContextBucket,
    ) -> impl Iterator<Item = (&PatternInfo, &I8Embedding)> {
        self.buckets[usize::from(bucket.index())]
            .iter()
            .filter_map(|id| self.slots.get(id))
            .filter_map(|p| Some((p, p.centroid.as_ref()?)))
    }

    /// Pending removals.
    pub fn tombstones(&self) -> &BTreeMap<PatternId, Tombstone> {
        &self.tombstones
    }

    /// The id the next new pattern gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Raises the id the next new pattern gets to at least `n` (ids are never
    /// reused, so it never goes down).
    pub fn set_next_id(&mut self, n: u64) {
        self.next_id = self.next_id.max(n);
    }

    /// Restores a tombstone read from disk.
    pub fn restore_tombstone(&mut self, id: PatternId, t: Tombstone) {
        self.tombstones.insert(id, t);
    }

    /// The pattern that goes first when room is needed: fewest views, then
    /// oldest update, then lowest id.
    pub fn eviction_candidate(&self) -> Option<PatternId> {
        self.slots
            .values()
            .min_by_key(|p| (p.views, p.updated_version, p.id))
            .map(|p| p.id)
    }

    fn nearest(&self, bucket: ContextBucket, item: &Embedding) -> Option<(PatternId, f32)> {
        let mut best: Option<(PatternId, f32)> = None;
        for (p, c) in self.in_bucket(bucket) {
            let cos = c.dot(item.as_slice());
            if best.is_none_or(|(_, b)| cos > b) {
                best = Some((p.id, cos));
            }
        }
        best
    }

    /// Plans the effect of one view of an item (embedding `item`, fingerprint
    /// `item_fp`) in `bucket` at pattern version `version`. Empty when nothing
    /// changes. `load` gives the full pattern the view joins (from the store).
    #[allow(clippy::too_many_arguments)]
    pub fn plan_view<E>(
        &self,
        bucket: ContextBucket,
        item: &Embedding,
        item_fp: u64,
        success: bool,
        version: u64,
        cfg: &PatternConfig,
        load: impl FnOnce(PatternId) -> Result<LocalPattern, E>,
    ) -> Result<Vec<PatternOp>, E> {
        let near = self
            .nearest(bucket, item)
            .filter(|(_, cos)| *cos >= cfg.assign_threshold)
            .map(|(id, _)| id);
        match (near, success) {
            (Some(id), _) => {
                let mut p = load(id)?;
                p.fold(item, item_fp, success, version);
                Ok(vec![PatternOp::Upsert(p)])
            }
            (None, false) => Ok(Vec::new()),
            (None, true) => {
                let mut ops = Vec::new();
                if cfg.max_patterns == 0 {
                    return Ok(ops);
                }
                if self.len() >= cfg.max_patterns {
                    if let Some(victim) = self.eviction_candidate() {
                        let known = self.get(victim).is_some_and(|p| p.known_to_node);
                        ops.push(PatternOp::Remove {
                            id: victim,
                            tombstone: Tombstone {
                                version,
                                known_to_node: known,
                            },
                        });
                    }
                }
                ops.push(PatternOp::Upsert(LocalPattern::new(
                    PatternId(self.next_id),
                    bucket,
                    item,
                    item_fp,
                    version,
                )));
                Ok(ops)
            }
        }
    }

    /// Applies planned changes.
    pub fn apply(&mut self, ops: &[PatternOp]) {
        for op in ops {
            match op {
                PatternOp::Upsert(p) => self.insert(p),
                PatternOp::Remove { id, tombstone } => {
                    self.remove(*id);
                    self.tombstones.insert(*id, *tombstone);
                }
            }
        }
    }

    /// Inserts or replaces a pattern (no bound check: see [`Self::plan_view`]).
    pub fn insert(&mut self, p: &LocalPattern) {
        self.next_id = self.next_id.max(p.id.0 + 1);
        if let Some(old) = self.slots.get(&p.id) {
            self.buckets[usize::from(old.bucket.index())].remove(&p.id);
        }
        self.buckets[usize::from(p.bucket.index())].insert(p.id);
        self.slots.insert(p.id, PatternInfo::of(p));
    }

    fn remove(&mut self, id: PatternId) -> Option<PatternInfo> {
        let p = self.slots.remove(&id)?;
        self.buckets[usize::from(p.bucket.index())].remove(&id);
        Some(p)
    }

    /// Marks acknowledged patterns as known and drops acknowledged tombstones.
    /// `snapshot`: the node replaced everything, so only what the snapshot
    /// carried (eligible, updated ≤ `acked`) is known afterwards. Returns the
    /// patterns whose flag changes (with the new flag) and the tombstones
    /// dropped.
    pub fn plan_ack(
        &self,
        acked: u64,
        min_distinct: u32,
        snapshot: bool,
    ) -> (Vec<(PatternId, bool)>, Vec<PatternId>) {
        let mut changed = Vec::new();
        for p in self.iter() {
            let carried = p.distinct_items >= min_distinct && p.updated_version <= acked;
            let known = if snapshot {
                carried
            } else {
                p.known_to_node || carried
            };
            if known != p.known_to_node {
                changed.push((p.id, known));
            }
        }
        let dropped = self
            .tombstones
            .iter()
            .filter(|(_, t)| snapshot || t.version <= acked)
            .map(|(id, _)| *id)
            .collect();
        (changed, dropped)
    }

    /// Applies [`Self::plan_ack`]'s result.
    pub fn apply_ack(&mut self, changed: &[(PatternId, bool)], dropped: &[PatternId]) {
        for (id, known) in changed {
            if let Some(p) = self.slots.get_mut(id) {
                p.known_to_node = *known;
            }
        }
        for id in dropped {
            self.tombstones.remove(id);
        }
    }

    /// Forgets everything except the id counter (ids are never reused).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.buckets.iter_mut().for_each(BTreeSet::clear);
        self.tombstones.clear();
    }
}
