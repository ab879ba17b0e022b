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
//! Bounds: at most [`PatternConfig::max_patterns`] patterns (default 10,000).
//! Starting one past the limit evicts the least useful: fewest views, then
//! oldest update, then lowest id; the eviction is recorded as a removal
//! ([`Tombstone`]) for the next delta. Each pattern remembers at most
//! [`MAX_TRACKED_ITEMS`] distinct item fingerprints: its distinct-item count
//! saturates there (it only needs to prove "at least 3").

use std::collections::{BTreeMap, BTreeSet};

use omega_protocol::embedding::dot;
use omega_protocol::{ContentId, ContextBucket, Embedding, PatternId, PatternSummary};
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

    /// successes / views.
    pub fn success_rate(&self) -> f32 {
        if self.views == 0 {
            0.0
        } else {
            self.successes as f32 / self.views as f32
        }
    }

    /// The normalized direction of the sum; `None` if it has none.
    pub fn centroid(&self) -> Option<Embedding> {
        Embedding::new(self.sum.clone()).ok()
    }

    /// The shareable summary (exact embedding: the delta builder adds noise).
    pub fn summary(&self) -> Option<PatternSummary> {
        Some(PatternSummary {
            id: self.id,
            bucket: self.bucket,
            embedding: self.centroid()?,
            success_rate: self.success_rate(),
            samples: self.views,
        })
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

/// A pattern and `1 / |sum|` (0 when the sum has no direction), so that the
/// cosine to its centroid is `dot(sum, v) × inv_norm` without keeping a second
/// 384-float vector per pattern (15 MB at 10,000 patterns).
#[derive(Debug, Clone)]
struct Slot {
    pattern: LocalPattern,
    inv_norm: f32,
}

fn inv_norm(sum: &[f32]) -> f32 {
    let n = dot(sum, sum).sqrt();
    if n.is_finite() && n > 0.0 {
        1.0 / n
    } else {
        0.0
    }
}

/// All local patterns, indexed by bucket, plus pending tombstones.
#[derive(Debug, Clone, Default)]
pub struct PatternBook {
    slots: BTreeMap<PatternId, Slot>,
    buckets: [BTreeSet<PatternId>; 8],
    tombstones: BTreeMap<PatternId, Tombstone>,
    next_id: u64,
}

/// Fingerprint of a content id (FNV-1a); stays on the device.
pub fn item_fingerprint(id: &ContentId) -> u64 {
    let mut h = crate::index::Fnv::new();
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
    pub fn get(&self, id: PatternId) -> Option<&LocalPattern> {
        self.slots.get(&id).map(|s| &s.pattern)
    }

    /// All patterns in id order.
    pub fn iter(&self) -> impl Iterator<Item = &LocalPattern> {
        self.slots.values().map(|s| &s.pattern)
    }

    /// Patterns of one bucket that have a direction (a non-zero sum), each
    /// with `1 / |sum|`: the cosine of `v` to its centroid is
    /// `dot(&p.sum, v) × inv_norm`.
    pub fn in_bucket(&self, bucket: ContextBucket) -> impl Iterator<Item = (&LocalPattern, f32)> {
        self.buckets[usize::from(bucket.index())]
            .iter()
            .filter_map(|id| self.slots.get(id))
            .filter(|s| s.inv_norm > 0.0)
            .map(|s| (&s.pattern, s.inv_norm))
    }

    /// Pending removals.
    pub fn tombstones(&self) -> &BTreeMap<PatternId, Tombstone> {
        &self.tombstones
    }

    /// The id the next new pattern gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    pub(crate) fn set_next_id(&mut self, n: u64) {
        self.next_id = self.next_id.max(n);
    }

    /// Restores a tombstone read from disk.
    pub(crate) fn restore_tombstone(&mut self, id: PatternId, t: Tombstone) {
        self.tombstones.insert(id, t);
    }

    /// The pattern that goes first when room is needed: fewest views, then
    /// oldest update, then lowest id.
    pub fn eviction_candidate(&self) -> Option<PatternId> {
        self.slots
            .values()
            .min_by_key(|s| (s.pattern.views, s.pattern.updated_version, s.pattern.id))
            .map(|s| s.pattern.id)
    }

    fn nearest(&self, bucket: ContextBucket, item: &Embedding) -> Option<(PatternId, f32)> {
        let mut best: Option<(PatternId, f32)> = None;
        for (p, inv_norm) in self.in_bucket(bucket) {
            let cos = dot(&p.sum, item.as_slice()) * inv_norm;
            if best.is_none_or(|(_, b)| cos > b) {
                best = Some((p.id, cos));
            }
        }
        best
    }

    /// Plans the effect of one view of an item (embedding `item`, fingerprint
    /// `item_fp`) in `bucket` at pattern version `version`. Empty when nothing
    /// changes.
    pub fn plan_view(
        &self,
        bucket: ContextBucket,
        item: &Embedding,
        item_fp: u64,
        success: bool,
        version: u64,
        cfg: &PatternConfig,
    ) -> Vec<PatternOp> {
        let near = self
            .nearest(bucket, item)
            .filter(|(_, cos)| *cos >= cfg.assign_threshold)
            .and_then(|(id, _)| self.get(id));
        match (near, success) {
            (Some(p), _) => {
                let mut p = p.clone();
                p.views = p.views.saturating_add(1);
                if success {
                    p.successes = p.successes.saturating_add(1);
                    p.sum
                        .iter_mut()
                        .zip(item.as_slice())
                        .for_each(|(s, v)| *s += v);
                    p.add_item(item_fp);
                }
                p.updated_version = version;
                vec![PatternOp::Upsert(p)]
            }
            (None, false) => Vec::new(),
            (None, true) => {
                let mut ops = Vec::new();
                if cfg.max_patterns == 0 {
                    return ops;
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
                ops
            }
        }
    }

    /// Applies planned changes.
    pub fn apply(&mut self, ops: &[PatternOp]) {
        for op in ops {
            match op {
                PatternOp::Upsert(p) => self.insert(p.clone()),
                PatternOp::Remove { id, tombstone } => {
                    self.remove(*id);
                    self.tombstones.insert(*id, *tombstone);
                }
            }
        }
    }

    /// Inserts or replaces a pattern (no bound check: see [`Self::plan_view`]).
    pub fn insert(&mut self, p: LocalPattern) {
        self.next_id = self.next_id.max(p.id.0 + 1);
        if let Some(old) = self.slots.get(&p.id) {
            self.buckets[usize::from(old.pattern.bucket.index())].remove(&p.id);
        }
        self.buckets[usize::from(p.bucket.index())].insert(p.id);
        let inv_norm = inv_norm(&p.sum);
        self.slots.insert(
            p.id,
            Slot {
                pattern: p,
                inv_norm,
            },
        );
    }

    fn remove(&mut self, id: PatternId) -> Option<LocalPattern> {
        let s = self.slots.remove(&id)?;
        self.buckets[usize::from(s.pattern.bucket.index())].remove(&id);
        Some(s.pattern)
    }

    /// Marks acknowledged patterns as known and drops acknowledged tombstones.
    /// `snapshot`: the node replaced everything, so only what the snapshot
    /// carried (eligible, updated ≤ `acked`) is known afterwards. Returns the
    /// patterns whose flag changed and the tombstones dropped.
    pub fn plan_ack(
        &self,
        acked: u64,
        min_distinct: u32,
        snapshot: bool,
    ) -> (Vec<LocalPattern>, Vec<PatternId>) {
        let mut changed = Vec::new();
        for p in self.iter() {
            let carried = p.distinct_items() >= min_distinct && p.updated_version <= acked;
            let known = if snapshot {
                carried
            } else {
                p.known_to_node || carried
            };
            if known != p.known_to_node {
                let mut q = p.clone();
                q.known_to_node = known;
                changed.push(q);
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
    pub fn apply_ack(&mut self, changed: &[LocalPattern], dropped: &[PatternId]) {
        for p in changed {
            self.insert(p.clone());
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
