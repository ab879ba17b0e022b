//! The brain's in-memory state: the catalog, local and global patterns, trends
//! and the episode ring, plus the monotonic versions.
//!
//! Plain data with plain methods (no IO). omega-brain's `BrainStore` keeps one
//! of these as the mirror of its redb file and changes it only after a commit,
//! so it never holds anything the disk does not; it shares that one copy
//! behind a read-write lock with the recommend path, which reads it in place.
//! Tests and benchmarks may build one directly.
//!
//! Invariants: catalog keys are assigned in increasing order and never reused,
//! so key order is insertion order; the episode ring is ordered by (viewing
//! time, seq) whatever the arrival order, and holds at most one episode per
//! (title, viewing time); `watched` counts exactly the episodes in the ring
//! per title.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use omega_protocol::{
    CatalogEntry, CatalogItem, ContentId, Embedding, EmbeddingError, GlobalPattern, I8Embedding,
    TrendSignal, ViewingEvent,
};
use serde::{Deserialize, Serialize};

use crate::patterns::PatternBook;

/// Watch fraction from which a title counts as fully watched
/// ([`BrainState::is_fully_watched`]).
pub const FULLY_WATCHED: f32 = 0.9;

/// A catalog item in memory, with its stable vector-index key.
///
/// The embedding is held as int8 codes (388 bytes instead of 1,536; cosine to
/// the f32 vector ≥ 0.9999, see omega-protocol's quantization tests): at
/// 10,000 items that is 4 MB instead of 15. redb keeps the f32 vector.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRecord {
    /// Key in the vector index (and in redb); assigned once, never reused.
    pub key: u64,
    /// The item.
    pub item: CatalogItem,
    /// Its embedding, quantized.
    pub embedding: I8Embedding,
}

impl CatalogRecord {
    /// The record of `entry` under `key`.
    pub fn new(key: u64, entry: &CatalogEntry) -> Self {
        Self {
            key,
            item: entry.item.clone(),
            embedding: entry.embedding.to_i8(),
        }
    }

    /// The (dequantized, unit-length) embedding.
    pub fn vector(&self) -> Vec<f32> {
        self.embedding.to_f32()
    }

    /// The embedding as an [`Embedding`] (renormalized after dequantization).
    pub fn embedding(&self) -> Result<Embedding, EmbeddingError> {
        self.embedding.decode()
    }
}

/// The content catalog with its ContentId ↔ key mapping.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_key: BTreeMap<u64, CatalogRecord>,
    by_id: HashMap<ContentId, u64>,
    next_key: u64,
}

impl Catalog {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The item with this id.
    pub fn get(&self, id: &ContentId) -> Option<&CatalogRecord> {
        self.by_id.get(id).and_then(|k| self.by_key.get(k))
    }

    /// The item with this key.
    pub fn by_key(&self, key: u64) -> Option<&CatalogRecord> {
        self.by_key.get(&key)
    }

    /// The key of an id.
    pub fn key_of(&self, id: &ContentId) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    /// Items in key (insertion) order.
    pub fn iter(&self) -> impl Iterator<Item = &CatalogRecord> {
        self.by_key.values()
    }

    /// The key the next new item gets.
    pub fn next_key(&self) -> u64 {
        self.next_key
    }

    /// Inserts or replaces an item; a new id gets the next key. Returns the
    /// record as stored and whether the id was new.
    pub fn upsert(&mut self, entry: &CatalogEntry) -> (&CatalogRecord, bool) {
        let (key, new) = match self.by_id.get(&entry.item.id) {
            Some(k) => (*k, false),
            None => {
                let k = self.next_key;
                self.next_key += 1;
                (k, true)
            }
        };
        self.by_id.insert(entry.item.id.clone(), key);
        self.by_key.insert(key, CatalogRecord::new(key, entry));
        let rec = &self.by_key[&key];
        (rec, new)
    }

    /// Restores a record read from disk (keeps its key).
    pub fn restore(&mut self, rec: CatalogRecord) {
        self.next_key = self.next_key.max(rec.key + 1);
        self.by_id.insert(rec.item.id.clone(), rec.key);
        self.by_key.insert(rec.key, rec);
    }

    /// Raises the key the next new item gets to at least `k` (keys are never
    /// reused, so it never goes down).
    pub fn set_next_key(&mut self, k: u64) {
        self.next_key = self.next_key.max(k);
    }

    /// Removes an item; returns its key if it was there.
    pub fn remove(&mut self, id: &ContentId) -> Option<u64> {
        let key = self.by_id.remove(id)?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// A fingerprint of the key ↔ id mapping (FNV-1a), to tell whether an index
    /// file was built from this catalog.
    pub fn fingerprint(&self) -> u64 {
        let mut h = omega_protocol::hash::Fnv1a::new();
        for r in self.by_key.values() {
            h.write(&r.key.to_le_bytes());
            h.write(r.item.id.as_str().as_bytes());
        }
        h.finish()
    }
}

/// Monotonic versions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// Bumped by every change to local patterns (fold, eviction, forget).
    pub pattern: u64,
    /// The pattern version the constellation node holds.
    pub acked: u64,
    /// The region's global version the device holds.
    pub global: u64,
    /// The catalog version the device holds.
    pub catalog: u64,
    /// Local revision of the catalog's contents, bumped by every change; the
    /// index file records the revision it was built from.
    pub catalog_rev: u64,
}

/// One stored viewing event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Position in the ring, increasing.
    pub seq: u64,
    /// The event.
    pub event: ViewingEvent,
}

/// Everything the brain knows, in memory.
#[derive(Debug, Clone, Default)]
pub struct BrainState {
    /// The catalog.
    pub catalog: Catalog,
    /// Local patterns and their removals not yet acknowledged.
    pub patterns: PatternBook,
    /// Global patterns by id.
    pub globals: BTreeMap<u64, GlobalPattern>,
    /// Regional trends, as the last sync gave them.
    pub trends: Vec<TrendSignal>,
    /// The region's fleet knowledge, as far as fleet pages delivered it.
    pub fleet: crate::fleet::FleetKnowledge,
    /// The episode ring, oldest viewing time first (ties by `seq`). Change it
    /// only through [`Self::push_episode`], [`Self::pop_episode`] and
    /// [`Self::clear_episodes`], which keep the counts below in step.
    pub episodes: VecDeque<Episode>,
    /// Versions.
    pub versions: Versions,
    watched: HashMap<ContentId, u32>,
    viewings: HashSet<(ContentId, u64)>,
}

fn count_in(map: &mut HashMap<ContentId, u32>, id: &ContentId) {
    *map.entry(id.clone()).or_default() += 1;
}

fn count_out(map: &mut HashMap<ContentId, u32>, id: &ContentId) {
    if let Some(n) = map.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            map.remove(id);
        }
    }
}

impl BrainState {
    /// Adds an episode at its place in viewing-time order (a late arrival
    /// goes before newer ones); no bound here: the store enforces the ring
    /// size. Callers check [`Self::has_viewing`] first: a second episode of
    /// the same (title, time) is not added.
    pub fn push_episode(&mut self, ep: Episode) {
        let key = (ep.event.content_id.clone(), ep.event.timestamp_secs);
        if !self.viewings.insert(key) {
            return;
        }
        count_in(&mut self.watched, &ep.event.content_id);
        let order = |e: &Episode| (e.event.timestamp_secs, e.seq);
        if self.episodes.back().is_none_or(|b| order(b) <= order(&ep)) {
            self.episodes.push_back(ep);
        } else {
            let at = self.episodes.partition_point(|e| order(e) <= order(&ep));
            self.episodes.insert(at, ep);
        }
    }

    /// Whether the ring holds a viewing of `id` at `at` (unix seconds).
    pub fn has_viewing(&self, id: &ContentId, at: u64) -> bool {
        self.viewings.contains(&(id.clone(), at))
    }

    /// Drops the oldest episode.
    pub fn pop_episode(&mut self) -> Option<Episode> {
        let ep = self.episodes.pop_front()?;
        self.viewings
            .remove(&(ep.event.content_id.clone(), ep.event.timestamp_secs));
        count_out(&mut self.watched, &ep.event.content_id);
        Some(ep)
    }

    /// Drops every episode.
    pub fn clear_episodes(&mut self) {
        self.episodes.clear();
        self.viewings.clear();
        self.watched.clear();
    }

    /// Whether a title was fully watched (in an episode still in the ring).
    /// A scan of the ring: nothing on the recommend path asks (every watched
    /// title is left out there, see [`Self::has_watched`]).
    pub fn is_fully_watched(&self, id: &ContentId) -> bool {
        self.episodes
            .iter()
            .any(|e| &e.event.content_id == id && e.event.watched_fraction >= FULLY_WATCHED)
    }

    /// Whether a title was watched at all, finished or abandoned (in an
    /// episode still in the ring).
    pub fn has_watched(&self, id: &ContentId) -> bool {
        self.watched.contains_key(id)
    }

    /// Distinct titles in the ring.
    pub fn watched_titles(&self) -> usize {
        self.watched.len()
    }

    /// The most recent watches, newest first, distinct titles, each with its
    /// largest watch fraction among them.
    pub fn recent_watches(&self, n: usize) -> Vec<(&ContentId, f32)> {
        let mut out: Vec<(&ContentId, f32)> = Vec::with_capacity(n);
        for ep in self.episodes.iter().rev() {
            let (id, f) = (&ep.event.content_id, ep.event.watched_fraction);
            if let Some(seen) = out.iter_mut().find(|(o, _)| *o == id) {
                seen.1 = seen.1.max(f);
            } else if out.len() < n {
                out.push((id, f));
            } else {
                break;
            }
        }
        out
    }
}
