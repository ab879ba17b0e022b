//! Federation: device patterns → global patterns and trend signals per region.
//!
//! Plain, deterministic code: [`federate_region`] (and [`federate`] over
//! several regions) takes the region's device patterns, the previously
//! published globals and the catalog's embeddings, and returns what to
//! publish. [`run`] drives it over a [`PatternStore`] with bounded memory and
//! publishes the result.
//!
//! Federation computes in f32: [`run`] decodes the stored wire forms
//! (ternary patterns and globals, int8 catalog entries) of what it reads and
//! quantizes the published globals once, when publishing.
//!
//! Per region:
//!
//! 1. Patterns with no positive weight are ignored; weight =
//!    `success_rate × min(samples, max_samples_per_pattern)` (the cap keeps
//!    one heavy device from dominating a cluster's direction).
//! 2. The patterns are put in a canonical order (a stable hash of device and
//!    pattern id, then the ids), so the output does not depend on input
//!    order, and at most `max_patterns_per_region` are kept: those first in
//!    that order, an unbiased, deterministic sample.
//! 3. Per context bucket, greedy clustering in that order: a pattern joins the
//!    most similar cluster whose centroid is within `cluster_threshold`
//!    cosine, else starts a new one (at most `max_clusters_per_bucket`;
//!    past it the pattern is dropped and counted). The centroid is the
//!    normalized weighted sum.
//! 4. Privacy rule 3: a cluster is published only when at least `k` distinct
//!    devices support it. At most `max_globals_per_region` are published,
//!    best supported first (support, then weight).
//! 5. Stable ids: each published cluster takes the id of the most similar
//!    previous global of its bucket (cosine ≥ `id_match_threshold`, best
//!    pairs first, one-to-one); the others take fresh ids above every id the
//!    region ever used.
//! 6. Trends: the published clusters whose weight (`success_rate × samples`)
//!    grew most against their previous global (new ones grew from 0) are
//!    mapped to their nearest catalog items. They come only from published,
//!    k-supported patterns and the node's own catalog, never from anything a
//!    device reports about content (devices report none).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use omega_protocol::{
    limits, ContentId, ContextBucket, DeviceId, Embedding, EmbeddingError, GlobalPattern,
    PackedGlobalPattern, Region, TernaryEmbedding, TrendSignal, EMBEDDING_DIM,
};

use crate::shard::stable_hash_parts;
use crate::store::{
    PatternStore, RegionGlobals, RegionPattern, StoreError, StoredPattern, MAX_GLOBALS_PER_REGION,
    MAX_SCAN_PAGE,
};

/// How federation aggregates. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationConfig {
    /// Distinct devices a cluster needs to be published (privacy rule 3).
    pub k_min_devices: u32,
    /// Globals published per region (≤ [`MAX_GLOBALS_PER_REGION`]).
    pub max_globals_per_region: usize,
    /// Cosine to a centroid for a pattern to join its cluster.
    pub cluster_threshold: f32,
    /// Cosine to a previous global for a cluster to keep its id.
    pub id_match_threshold: f32,
    /// Clusters per region and bucket; patterns that fit none past it are
    /// dropped from this run.
    pub max_clusters_per_bucket: usize,
    /// Patterns considered per region (a deterministic sample past it).
    pub max_patterns_per_region: usize,
    /// Samples counted per pattern when weighting.
    pub max_samples_per_pattern: u32,
    /// Rising clusters turned into trends per region.
    pub max_trend_clusters: usize,
    /// Catalog items per rising cluster.
    pub trends_per_cluster: usize,
    /// Trend signals per region (≤ [`limits::MAX_TRENDS`]).
    pub max_trends: usize,
    /// Catalog items [`run`] loads for trend mapping.
    pub max_catalog_items: usize,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            k_min_devices: 5,
            max_globals_per_region: 64,
            cluster_threshold: 0.8,
            id_match_threshold: 0.85,
            max_clusters_per_bucket: 256,
            max_patterns_per_region: 250_000,
            max_samples_per_pattern: 1000,
            max_trend_clusters: 8,
            trends_per_cluster: 3,
            max_trends: 20,
            max_catalog_items: 200_000,
        }
    }
}

/// Why federation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FederationError {
    /// A configuration value is out of range.
    #[error("invalid federation config: {0}")]
    Config(String),
    /// Reading inputs or publishing failed; regions published before the
    /// failure stay published, the failing one is unchanged.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl FederationConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), FederationError> {
        let err = |m: &str| Err(FederationError::Config(m.to_string()));
        if self.k_min_devices == 0 {
            return err("k_min_devices must be at least 1");
        }
        if self.max_globals_per_region == 0 || self.max_globals_per_region > MAX_GLOBALS_PER_REGION
        {
            return err("max_globals_per_region must be in 1..=512");
        }
        let unit = |t: f32| t > 0.0 && t <= 1.0;
        if !unit(self.cluster_threshold) || !unit(self.id_match_threshold) {
            return err("thresholds must be in (0, 1]");
        }
        if self.max_clusters_per_bucket == 0
            || self.max_patterns_per_region == 0
            || self.max_samples_per_pattern == 0
        {
            return err("cluster, pattern and sample caps must be at least 1");
        }
        if self.max_trends > limits::MAX_TRENDS {
            return err("max_trends must be at most 100");
        }
        Ok(())
    }
}

/// A catalog item's embedding, for trend mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogVector {
    /// The item.
    pub id: ContentId,
    /// Its embedding.
    pub embedding: Embedding,
}

/// Counters of one region's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionStats {
    /// Patterns given.
    pub input_patterns: usize,
    /// Patterns clustered (after weighting, deduplication and sampling).
    pub used_patterns: usize,
    /// Patterns dropped because their bucket had no room for a new cluster.
    pub dropped_patterns: usize,
    /// Clusters formed.
    pub clusters: usize,
    /// Clusters with at least k devices.
    pub eligible_clusters: usize,
}

/// What to publish for one region.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionOutput {
    /// Global patterns, by id.
    pub patterns: Vec<GlobalPattern>,
    /// Trend signals, strongest first.
    pub trends: Vec<TrendSignal>,
    /// Counters.
    pub stats: RegionStats,
}

/// Canonical order key of a device pattern.
/// (Used inside sorts and heap operations: hashes without allocating.)
fn order_key<E>(p: &RegionPattern<E>) -> (u64, &DeviceId, u64) {
    let id = p.pattern.id.0.to_le_bytes();
    let h = stable_hash_parts(&[p.device.as_str().as_bytes(), &[0], &id]);
    (h, &p.device, p.pattern.id.0)
}

fn weight<E>(p: &RegionPattern<E>, config: &FederationConfig) -> f32 {
    let s = p.pattern.samples.min(config.max_samples_per_pattern) as f32;
    let w = p.pattern.success_rate * s;
    if w.is_finite() && w > 0.0 {
        w
    } else {
        0.0
    }
}

struct Cluster<'a> {
    bucket: ContextBucket,
    sum: Vec<f32>,
    centroid: Embedding,
    weight: f64,
    success_samples: f64,
    samples: u64,
    devices: BTreeSet<&'a DeviceId>,
    /// Position of the first member in canonical order (a tie breaker).
    first: usize,
}

impl<'a> Cluster<'a> {
    fn add(&mut self, p: &'a RegionPattern<Embedding>, w: f32) {
        for (s, v) in self.sum.iter_mut().zip(p.pattern.embedding.as_slice()) {
            *s += w * v;
        }
        if let Ok(c) = Embedding::new(self.sum.clone()) {
            self.centroid = c;
        }
        self.weight += f64::from(w);
        self.success_samples += f64::from(p.pattern.success_rate) * f64::from(p.pattern.samples);
        self.samples += u64::from(p.pattern.samples);
        self.devices.insert(&p.device);
    }

    fn to_global(&self, id: u64) -> GlobalPattern {
        let rate = if self.samples == 0 {
            0.0
        } else {
            (self.success_samples / self.samples as f64).clamp(0.0, 1.0) as f32
        };
        GlobalPattern {
            id,
            bucket: self.bucket,
            embedding: self.centroid.clone(),
            success_rate: rate,
            support: u32::try_from(self.devices.len()).unwrap_or(u32::MAX),
            samples: u32::try_from(self.samples).unwrap_or(u32::MAX),
        }
    }
}

fn growth_weight(g: &GlobalPattern) -> f64 {
    f64::from(g.success_rate) * f64::from(g.samples)
}

/// Federates one region (see the module docs), in f32.
pub fn federate_region(
    inputs: &[RegionPattern<Embedding>],
    previous: &RegionGlobals<Embedding>,
    catalog: &[CatalogVector],
    config: &FederationConfig,
) -> RegionOutput {
    let mut stats = RegionStats {
        input_patterns: inputs.len(),
        ..RegionStats::default()
    };

    // 1–2: weight, canonical order, deduplicate, sample.
    let mut rows: Vec<(&RegionPattern<Embedding>, f32)> = inputs
        .iter()
        .map(|p| (p, weight(p, config)))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    rows.sort_by(|(a, wa), (b, wb)| {
        order_key(a)
            .cmp(&order_key(b))
            .then_with(|| wa.total_cmp(wb))
            .then_with(|| a.pattern.updated_at_ms.cmp(&b.pattern.updated_at_ms))
    });
    rows.dedup_by(|b, a| a.0.device == b.0.device && a.0.pattern.id == b.0.pattern.id);
    rows.truncate(config.max_patterns_per_region);
    stats.used_patterns = rows.len();

    // 3: greedy clustering per bucket.
    let mut clusters: Vec<Cluster<'_>> = Vec::new();
    let mut per_bucket: BTreeMap<ContextBucket, Vec<usize>> = BTreeMap::new();
    for (pos, (p, w)) in rows.iter().enumerate() {
        let members = per_bucket.entry(p.pattern.bucket).or_default();
        let mut best: Option<(usize, f32)> = None;
        for &ci in members.iter() {
            let cos = clusters[ci].centroid.cosine(&p.pattern.embedding);
            if cos >= config.cluster_threshold && best.is_none_or(|(_, b)| cos > b) {
                best = Some((ci, cos));
            }
        }
        match best {
            Some((ci, _)) => clusters[ci].add(p, *w),
            None if members.len() < config.max_clusters_per_bucket => {
                let mut c = Cluster {
                    bucket: p.pattern.bucket,
                    sum: vec![0.0; EMBEDDING_DIM],
                    centroid: p.pattern.embedding.clone(),
                    weight: 0.0,
                    success_samples: 0.0,
                    samples: 0,
                    devices: BTreeSet::new(),
                    first: pos,
                };
                c.add(p, *w);
                members.push(clusters.len());
                clusters.push(c);
            }
            None => stats.dropped_patterns += 1,
        }
    }
    stats.clusters = clusters.len();

    // 4: k-threshold and ranking.
    let k = config.k_min_devices as usize;
    let mut eligible: Vec<&Cluster<'_>> =
        clusters.iter().filter(|c| c.devices.len() >= k).collect();
    stats.eligible_clusters = eligible.len();
    eligible.sort_by(|a, b| {
        b.devices
            .len()
            .cmp(&a.devices.len())
            .then_with(|| b.weight.total_cmp(&a.weight))
            .then_with(|| a.bucket.cmp(&b.bucket))
            .then_with(|| a.first.cmp(&b.first))
    });
    eligible.truncate(config.max_globals_per_region.min(MAX_GLOBALS_PER_REGION));

    // 5: stable ids. Published globals are stored ternary, so the previous
    // ones arrive as decoded ternary codes: compare like with like, both
    // sides through the same quantization (idempotent on an already decoded
    // code), so an unchanged cluster matches its id exactly (cosine 1)
    // instead of at the ternary round trip's ~0.9, next to the threshold.
    let quantized = |e: &Embedding| TernaryEmbedding::encode(e).decode().ok();
    let previous_q: Vec<Option<Embedding>> = previous
        .patterns
        .iter()
        .map(|p| quantized(&p.embedding))
        .collect();
    let mut pairs: Vec<(f32, usize, u64)> = Vec::new();
    for (i, c) in eligible.iter().enumerate() {
        let Some(centroid) = quantized(&c.centroid) else {
            continue;
        };
        for (prev, prev_q) in previous.patterns.iter().zip(&previous_q) {
            if let (true, Some(prev_q)) = (prev.bucket == c.bucket, prev_q) {
                let cos = centroid.cosine(prev_q);
                if cos >= config.id_match_threshold {
                    pairs.push((cos, i, prev.id));
                }
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut ids: Vec<Option<u64>> = vec![None; eligible.len()];
    let mut taken: BTreeSet<u64> = BTreeSet::new();
    for (_, i, id) in pairs {
        if ids[i].is_none() && !taken.contains(&id) {
            ids[i] = Some(id);
            taken.insert(id);
        }
    }
    let mut next_id = previous
        .patterns
        .iter()
        .map(|p| p.id)
        .fold(previous.max_id, u64::max);
    let prev_by_id: BTreeMap<u64, &GlobalPattern> =
        previous.patterns.iter().map(|p| (p.id, p)).collect();
    let mut published: Vec<(GlobalPattern, f64)> = Vec::with_capacity(eligible.len());
    for (c, id) in eligible.iter().zip(ids) {
        let id = id.unwrap_or_else(|| {
            next_id += 1;
            next_id
        });
        let g = c.to_global(id);
        let before = prev_by_id.get(&id).map_or(0.0, |p| growth_weight(p));
        let growth = growth_weight(&g) - before;
        published.push((g, growth));
    }

    // 6: trends.
    let trends = trends(&published, catalog, config);
    let mut patterns: Vec<GlobalPattern> = published.into_iter().map(|(g, _)| g).collect();
    patterns.sort_by_key(|g| g.id);
    RegionOutput {
        patterns,
        trends,
        stats,
    }
}

fn trends(
    published: &[(GlobalPattern, f64)],
    catalog: &[CatalogVector],
    config: &FederationConfig,
) -> Vec<TrendSignal> {
    let mut rising: Vec<&(GlobalPattern, f64)> =
        published.iter().filter(|(_, g)| *g > 0.0).collect();
    rising.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
    rising.truncate(config.max_trend_clusters);
    let Some(top) = rising.first().map(|r| r.1) else {
        return Vec::new();
    };
    let mut best: BTreeMap<(ContentId, ContextBucket), f32> = BTreeMap::new();
    for (g, growth) in rising {
        let mut near: Vec<(f32, &ContentId)> = catalog
            .iter()
            .map(|c| (g.embedding.cosine(&c.embedding), &c.id))
            .filter(|(cos, _)| *cos > 0.0)
            .collect();
        near.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        near.truncate(config.trends_per_cluster);
        for (cos, id) in near {
            let score = ((growth / top) as f32 * cos).clamp(0.0, 1.0);
            let slot = best.entry((id.clone(), g.bucket)).or_insert(0.0);
            *slot = slot.max(score);
        }
    }
    let mut out: Vec<TrendSignal> = best
        .into_iter()
        .map(|((content_id, bucket), score)| TrendSignal {
            content_id,
            bucket,
            score,
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.content_id.cmp(&b.content_id))
            .then_with(|| a.bucket.cmp(&b.bucket))
    });
    out.truncate(config.max_trends.min(limits::MAX_TRENDS));
    out
}

/// Federates several regions; regions missing from `previous` start fresh.
pub fn federate(
    inputs: &BTreeMap<Region, Vec<RegionPattern<Embedding>>>,
    previous: &BTreeMap<Region, RegionGlobals<Embedding>>,
    catalog: &[CatalogVector],
    config: &FederationConfig,
) -> BTreeMap<Region, RegionOutput> {
    let empty = RegionGlobals::default();
    inputs
        .iter()
        .map(|(r, ps)| {
            let prev = previous.get(r).unwrap_or(&empty);
            (r.clone(), federate_region(ps, prev, catalog, config))
        })
        .collect()
}

/// What [`run`] did for one region.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionReport {
    /// The region.
    pub region: Region,
    /// The version published, `None` when nothing changed (no new version).
    pub published_version: Option<u64>,
    /// The region's global version after the run (published or kept).
    pub global_version: u64,
    /// Distinct devices with patterns in the region.
    pub devices: usize,
    /// Globals published (or kept).
    pub globals: usize,
    /// Trends published (or kept).
    pub trends: usize,
    /// Counters.
    pub stats: RegionStats,
}

fn corrupt(what: &'static str) -> impl Fn(EmbeddingError) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

/// A stored row with its embedding decoded for clustering.
fn decode_row(row: RegionPattern) -> Result<RegionPattern<Embedding>, EmbeddingError> {
    let p = row.pattern;
    Ok(RegionPattern {
        device: row.device,
        pattern: StoredPattern {
            id: p.id,
            bucket: p.bucket,
            embedding: p.embedding.decode()?,
            success_rate: p.success_rate,
            samples: p.samples,
            updated_at_ms: p.updated_at_ms,
        },
    })
}

/// The published globals decoded, for id matching and growth.
fn decode_globals(g: &RegionGlobals) -> Result<RegionGlobals<Embedding>, EmbeddingError> {
    let patterns = g
        .patterns
        .iter()
        .map(|p| {
            Ok(GlobalPattern {
                id: p.id,
                bucket: p.bucket,
                embedding: p.embedding.decode()?,
                success_rate: p.success_rate,
                support: p.support,
                samples: p.samples,
            })
        })
        .collect::<Result<_, EmbeddingError>>()?;
    Ok(RegionGlobals {
        version: g.version,
        patterns,
        trends: g.trends.clone(),
        max_id: g.max_id,
    })
}

/// A global quantized to its wire form (once, at publication).
pub fn pack_global(g: &GlobalPattern) -> PackedGlobalPattern {
    GlobalPattern {
        id: g.id,
        bucket: g.bucket,
        embedding: g.embedding.to_ternary(),
        success_rate: g.success_rate,
        support: g.support,
        samples: g.samples,
    }
}

/// Heap entry ordering rows by canonical key (largest on top).
struct Sampled(RegionPattern);

impl Sampled {
    fn key(&self) -> (u64, &DeviceId, u64) {
        order_key(&self.0)
    }
}
impl PartialEq for Sampled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Sampled {}
impl PartialOrd for Sampled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Sampled {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Runs federation over a store: loads up to `max_catalog_items` catalog
/// embeddings, then per region streams its device patterns keeping the
/// `max_patterns_per_region` first in canonical order (memory bounded by that
/// number whatever the region's size), federates, and publishes a new global
/// version when the result differs from what is published.
pub fn run<S: PatternStore>(
    store: &S,
    config: &FederationConfig,
) -> Result<Vec<RegionReport>, FederationError> {
    config.validate()?;
    let mut catalog = Vec::new();
    let mut after: Option<ContentId> = None;
    while catalog.len() < config.max_catalog_items {
        let page = store.catalog_entries(after.as_ref(), MAX_SCAN_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.item.id.clone());
        for e in page {
            let embedding = e.embedding.decode().map_err(corrupt("catalog entry"))?;
            catalog.push(CatalogVector {
                id: e.item.id,
                embedding,
            });
        }
    }
    catalog.truncate(config.max_catalog_items);

    let mut reports = Vec::new();
    for region in store.regions()? {
        let mut heap: BinaryHeap<Sampled> = BinaryHeap::new();
        let (mut seen, mut devices) = (0usize, 0usize);
        let mut last_device: Option<DeviceId> = None;
        let mut cursor = None;
        loop {
            let page = store.region_patterns(&region, cursor.as_ref(), MAX_SCAN_PAGE)?;
            for row in page.rows {
                seen += 1;
                // Rows come in (device, pattern) order: count device changes.
                if last_device.as_ref() != Some(&row.device) {
                    devices += 1;
                    last_device = Some(row.device.clone());
                }
                if weight(&row, config) <= 0.0 {
                    continue;
                }
                heap.push(Sampled(row));
                if heap.len() > config.max_patterns_per_region {
                    heap.pop();
                }
            }
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let rows = heap
            .into_iter()
            .map(|s| decode_row(s.0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(corrupt("device pattern"))?;
        let previous = store.region_globals(&region)?;
        let decoded = decode_globals(&previous).map_err(corrupt("global pattern"))?;
        let mut out = federate_region(&rows, &decoded, &catalog, config);
        out.stats.input_patterns = seen;
        // Quantized once, here, for the store and every response after.
        let packed: Vec<PackedGlobalPattern> = out.patterns.iter().map(pack_global).collect();
        // Both lists are ordered by id (RegionGlobals' contract, federate_region's output).
        let changed = previous.patterns.len() != packed.len()
            || previous.patterns.iter().zip(&packed).any(|(a, b)| a != b)
            || previous.trends != out.trends;
        let published_version = if changed {
            let v = previous.version + 1;
            store.publish_globals(&region, v, &packed, &out.trends)?;
            Some(v)
        } else {
            None
        };
        tracing::info!(
            region = %region,
            version = ?published_version,
            globals = out.patterns.len(),
            trends = out.trends.len(),
            patterns = seen,
            "federated region"
        );
        reports.push(RegionReport {
            region,
            published_version,
            global_version: published_version.unwrap_or(previous.version),
            devices,
            globals: out.patterns.len(),
            trends: out.trends.len(),
            stats: out.stats,
        });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{self, bucket, device, embedding, embedding_near, region};
    use crate::store::{DeviceState, DeviceSync, MemoryStore, StoredPattern};
    use omega_protocol::PatternId;

    fn row(
        dev: u64,
        id: u64,
        e: Embedding,
        b: u64,
        rate: f32,
        samples: u32,
    ) -> RegionPattern<Embedding> {
        RegionPattern {
            device: device(dev),
            pattern: StoredPattern {
                id: PatternId(id),
                bucket: bucket(b),
                embedding: e,
                success_rate: rate,
                samples,
                updated_at_ms: 0,
            },
        }
    }

    /// `n` devices (numbered from `first`) with one pattern near `base`.
    fn group(first: u64, n: u64, base: u64, b: u64) -> Vec<RegionPattern<Embedding>> {
        (first..first + n)
            .map(|d| row(d, base, embedding_near(base, 10_000 + d, 0.05), b, 0.8, 10))
            .collect()
    }

    fn run1(inputs: &[RegionPattern<Embedding>], prev: &RegionGlobals<Embedding>) -> RegionOutput {
        federate_region(inputs, prev, &[], &FederationConfig::default())
    }

    #[test]
    fn a_cluster_needs_k_distinct_devices() {
        assert!(run1(&group(0, 4, 1, 0), &RegionGlobals::default())
            .patterns
            .is_empty());
        let out = run1(&group(0, 5, 1, 0), &RegionGlobals::default());
        assert_eq!(out.patterns.len(), 1);
        let g = &out.patterns[0];
        assert_eq!((g.support, g.samples, g.bucket), (5, 50, bucket(0)));
        assert!(g.embedding.cosine(&embedding(1)) > 0.95);
        assert_eq!(out.stats.eligible_clusters, 1);
        // One device with many patterns is still one device.
        let one: Vec<RegionPattern<Embedding>> = (0..10)
            .map(|i| row(1, i, embedding_near(1, 100 + i, 0.05), 0, 0.8, 10))
            .collect();
        assert!(run1(&one, &RegionGlobals::default()).patterns.is_empty());
        // Patterns without successes carry no weight and no support.
        let mut idle = group(0, 5, 1, 0);
        idle[0].pattern.success_rate = 0.0;
        assert!(run1(&idle, &RegionGlobals::default()).patterns.is_empty());
        // Buckets are separate: 3 + 3 devices in two buckets publish nothing.
        let mut split = group(0, 3, 1, 0);
        split.extend(group(3, 3, 1, 1));
        assert!(run1(&split, &RegionGlobals::default()).patterns.is_empty());
    }

    #[test]
    fn aggregation_is_quality_weighted() {
        let heavy = embedding_near(1, 500, 0.15);
        let light = embedding_near(1, 600, 0.15);
        assert!(heavy.cosine(&light) > 0.8);
        let mut rows: Vec<RegionPattern<Embedding>> = (0..3)
            .map(|d| row(d, 1, heavy.clone(), 0, 1.0, 100))
            .collect();
        rows.extend((3..6).map(|d| row(d, 1, light.clone(), 0, 0.1, 1)));
        let out = run1(&rows, &RegionGlobals::default());
        assert_eq!(out.patterns.len(), 1);
        let g = &out.patterns[0];
        assert!(g.embedding.cosine(&heavy) > g.embedding.cosine(&light) + 0.1);
        // success rate weighted by samples: (3×100×1.0 + 3×1×0.1) / 303.
        let expected = (300.0 + 0.3) / 303.0;
        assert!(
            (g.success_rate - expected).abs() < 1e-4,
            "{}",
            g.success_rate
        );
        assert_eq!((g.support, g.samples), (6, 303));
    }

    #[test]
    fn publication_is_capped_best_supported_first() {
        let mut rows = group(0, 5, 1, 0);
        rows.extend(group(10, 7, 2, 0));
        rows.extend(group(20, 6, 3, 0));
        let config = FederationConfig {
            max_globals_per_region: 2,
            ..FederationConfig::default()
        };
        let out = federate_region(&rows, &RegionGlobals::default(), &[], &config);
        let mut supports: Vec<u32> = out.patterns.iter().map(|g| g.support).collect();
        supports.sort_unstable();
        assert_eq!(supports, vec![6, 7]);
    }

    #[test]
    fn the_same_input_in_any_order_gives_the_same_output() {
        let mut rows = group(0, 6, 1, 0);
        rows.extend(group(6, 5, 2, 3));
        rows.extend(group(11, 8, 3, 3));
        rows.extend((0..30).map(|d| row(100 + d, 1, embedding(5000 + d), d % 8, 0.5, 3)));
        let catalog: Vec<CatalogVector> = (0..20)
            .map(|i| CatalogVector {
                id: suite::content(i),
                embedding: embedding(i),
            })
            .collect();
        let config = FederationConfig::default();
        let a = federate_region(&rows, &RegionGlobals::default(), &catalog, &config);
        let b = federate_region(&rows, &RegionGlobals::default(), &catalog, &config);
        assert_eq!(a, b);
        assert_eq!(a.patterns.len(), 3);
        let mut permuted = rows.clone();
        permuted.reverse();
        permuted.rotate_left(7);
        let c = federate_region(&permuted, &RegionGlobals::default(), &catalog, &config);
        assert_eq!(a, c);
        // Through `federate` as well.
        let map = BTreeMap::from([(region(1), rows), (region(2), permuted)]);
        let out = federate(&map, &BTreeMap::new(), &catalog, &config);
        assert_eq!(out[&region(1)], out[&region(2)]);
    }

    #[test]
    fn ids_are_stable_while_a_cluster_persists() {
        let mut rows = group(0, 5, 1, 0);
        rows.extend(group(10, 5, 2, 0));
        let first = run1(&rows, &RegionGlobals::default());
        assert_eq!(
            first.patterns.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let prev = RegionGlobals {
            version: 1,
            patterns: first.patterns.clone(),
            trends: vec![],
            max_id: 2,
        };
        // More devices join cluster 1, a new cluster appears, cluster 2 stays.
        let mut more = rows.clone();
        more.extend(group(20, 3, 1, 0));
        more.extend(group(30, 5, 3, 2));
        let second = run1(&more, &prev);
        let id_of = |out: &RegionOutput, base: u64| {
            out.patterns
                .iter()
                .find(|g| g.embedding.cosine(&embedding(base)) > 0.9)
                .map(|g| g.id)
        };
        assert_eq!(id_of(&second, 1), id_of(&first, 1));
        assert_eq!(id_of(&second, 2), id_of(&first, 2));
        assert_eq!(id_of(&second, 3), Some(3));
        // As `run` hands them over: the stored globals are decoded ternary
        // codes, and the ids still hold.
        let stored = RegionGlobals {
            patterns: prev
                .patterns
                .iter()
                .map(|g| GlobalPattern {
                    embedding: TernaryEmbedding::encode(&g.embedding).decode().unwrap(),
                    ..g.clone()
                })
                .collect(),
            ..prev.clone()
        };
        let from_stored = run1(&more, &stored);
        assert_eq!(id_of(&from_stored, 1), id_of(&first, 1));
        assert_eq!(id_of(&from_stored, 2), id_of(&first, 2));
        assert_eq!(id_of(&from_stored, 3), Some(3));
        // Withdrawn ids are never reused: fresh ids start above max_id.
        let prev = RegionGlobals {
            max_id: 40,
            ..RegionGlobals::default()
        };
        let third = run1(&rows, &prev);
        assert_eq!(
            third.patterns.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![41, 42]
        );
    }

    #[test]
    fn trends_come_from_growing_clusters_and_the_catalog() {
        let rows = group(0, 6, 1, 2);
        let catalog: Vec<CatalogVector> = [(1u64, 1u64), (2, 77), (3, 78)]
            .into_iter()
            .map(|(n, seed)| CatalogVector {
                id: suite::content(n),
                embedding: embedding(seed),
            })
            .collect();
        let config = FederationConfig::default();
        let out = federate_region(&rows, &RegionGlobals::default(), &catalog, &config);
        assert!(!out.trends.is_empty());
        let top = &out.trends[0];
        assert_eq!(
            (top.content_id.clone(), top.bucket),
            (suite::content(1), bucket(2))
        );
        assert!(top.score > 0.9 && top.score <= 1.0);
        assert!(out.trends.len() <= config.max_trends);
        // No growth since the previous run: no trends.
        let prev = RegionGlobals {
            version: 1,
            patterns: out.patterns.clone(),
            trends: out.trends.clone(),
            max_id: 1,
        };
        let again = federate_region(&rows, &prev, &catalog, &config);
        assert_eq!(again.patterns, out.patterns);
        assert!(again.trends.is_empty());
    }

    #[test]
    fn run_publishes_only_when_something_changed() {
        let store = MemoryStore::new();
        for r in group(0, 6, 1, 0) {
            let state = DeviceState {
                pattern_version: 1,
                region: region(1),
                last_sync_ms: 0,
            };
            let sync = DeviceSync {
                state: &state,
                reset: false,
                upserts: &[StoredPattern {
                    id: r.pattern.id,
                    bucket: r.pattern.bucket,
                    embedding: r.pattern.embedding.to_ternary(),
                    success_rate: r.pattern.success_rate,
                    samples: r.pattern.samples,
                    updated_at_ms: r.pattern.updated_at_ms,
                }],
                removals: &[],
            };
            store.apply_device_sync(&r.device, sync).expect("apply");
        }
        store
            .upsert_catalog(&[suite::catalog_entry(1, 1)])
            .expect("catalog");
        let config = FederationConfig::default();
        let reports = run(&store, &config).expect("run");
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].published_version, Some(1));
        assert_eq!(reports[0].globals, 1);
        assert_eq!(reports[0].stats.input_patterns, 6);
        let g = store.globals_since(&region(1), 0).expect("read");
        assert_eq!((g.version, g.patterns.len()), (1, 1));
        assert_eq!(g.trends.len(), 1);
        // Same input: the clusters persist; only the trends fade (no growth).
        let reports = run(&store, &config).expect("run");
        assert_eq!(reports[0].published_version, Some(2));
        let g = store.globals_since(&region(1), 1).expect("read");
        assert!(g.patterns.is_empty() && g.removed.is_empty() && g.trends.is_empty());
        // Nothing at all changed: no new version.
        let reports = run(&store, &config).expect("run");
        assert_eq!(reports[0].published_version, None);
        assert!(matches!(
            run(
                &store,
                &FederationConfig {
                    k_min_devices: 0,
                    ..config
                }
            ),
            Err(FederationError::Config(_))
        ));
    }
}
