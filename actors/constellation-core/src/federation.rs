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
//!    one heavy device from dominating a cluster's direction; the capped
//!    `samples` is also what the published figures count).
//! 2. The patterns are put in a canonical order (a keyed hash of device and
//!    pattern id, [`order_hash`], then the ids), so the output does not
//!    depend on input order, and at most `max_patterns_per_region` are
//!    kept: those first in that order, an unbiased, deterministic sample.
//!    The hash is keyed with the node's secret [`FederationConfig::order_key`]:
//!    a device that picks its pattern ids cannot predict where they land, so
//!    it can neither make sure it is sampled nor seed the clusters.
//! 3. Per context bucket, greedy clustering in that order: a pattern joins the
//!    most similar cluster whose centroid is within `cluster_threshold`
//!    cosine, else starts a new one (at most `max_clusters_per_bucket`;
//!    past it the pattern is dropped and counted). The centroid is the
//!    normalized weighted sum.
//! 4. Privacy rule 3: a cluster is published only when at least `k` distinct
//!    devices support it ([`FederationConfig::k_min_devices`], at least
//!    [`MIN_K_DEVICES`]), and no device carries more than
//!    [`FederationConfig::max_device_share`] of its weight: each device's
//!    weight in the cluster is capped ([`device_scales`], [`cap_shares`]) and all it
//!    contributes (direction, success, samples) is scaled down with it
//!    before the published figures are computed. So k − 1 devices with tiny
//!    weights cannot make one device's pattern publishable with its own
//!    direction and figures. At most `max_globals_per_region` are
//!    published, best supported first (support, then capped weight).
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

use crate::store::{
    PatternStore, RegionGlobals, RegionPattern, StoreError, StoredPattern, MAX_GLOBALS_PER_REGION,
    MAX_SCAN_PAGE,
};
use siphasher::sip::SipHasher24;

/// The smallest `k` a node accepts (privacy rule 3).
pub const MIN_K_DEVICES: u32 = 5;

/// The secret key of [`order_hash`]. `Default` is the all-zero key, which is
/// public: a node sets a secret one (random per node start, or read from a
/// file so that every run of a cluster orders alike).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderKey(pub [u8; 16]);

impl OrderKey {
    /// A fresh random key.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        Self(rng.random())
    }
}

/// Keeps the key out of logs.
impl std::fmt::Debug for OrderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderKey(..)")
    }
}

/// A keyed hash (SipHash-2-4) of byte strings, each length-prefixed so that
/// different splits never collide by construction. Use it wherever a device
/// could otherwise choose inputs (ids) to land where it likes in an order.
pub fn order_hash(key: &OrderKey, parts: &[&[u8]]) -> u64 {
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_key(&key.0);
    for p in parts {
        h.write(&(p.len() as u64).to_le_bytes());
        h.write(p);
    }
    h.finish()
}

/// Caps `weights` (each ≥ 0) so that none exceeds `max_share` of their
/// capped total: every weight above one cap `c` becomes `c`, the others
/// stay (water-filling; `c` is the largest cap that satisfies the bound).
/// With fewer than `1 / max_share` positive weights the bound cannot hold:
/// then every weight becomes the smallest positive one (equal shares, the
/// closest to it). Returns the capped weights in the input's order.
pub fn cap_shares(weights: &[f64], max_share: f64) -> Vec<f64> {
    let mut sorted: Vec<f64> = weights.iter().copied().filter(|w| *w > 0.0).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let n = sorted.len();
    let total: f64 = sorted.iter().sum();
    let Some(&min) = sorted.last() else {
        return weights.to_vec();
    };
    let cap = if sorted[0] <= max_share * total {
        f64::INFINITY
    } else if max_share * n as f64 + 1e-12 < 1.0 {
        min
    } else {
        // The top j weights take the cap c, which must be c = s·(j·c + rest).
        let mut rest = total;
        let mut cap = min;
        for j in 1..n {
            rest -= sorted[j - 1];
            let room = 1.0 - max_share * j as f64;
            if room <= 1e-12 {
                break;
            }
            let c = max_share * rest / room;
            if c >= sorted[j] {
                cap = c.min(sorted[j - 1]);
                break;
            }
        }
        cap
    };
    weights.iter().map(|w| w.min(cap)).collect()
}

/// The factor (in `(0, 1]`) by which each device's contributions to one
/// aggregate are scaled so that no device carries more than `max_share` of
/// its weight: `contributions` are (device, weight) pairs, several per device
/// allowed; a device's weights are summed, then capped by [`cap_shares`].
/// Multiply everything a device contributes (vectors, counts, rates'
/// weights) by its factor before aggregating.
pub fn device_scales<'a>(
    contributions: impl IntoIterator<Item = (&'a DeviceId, f64)>,
    max_share: f64,
) -> BTreeMap<&'a DeviceId, f64> {
    let mut per_device: BTreeMap<&DeviceId, f64> = BTreeMap::new();
    for (d, w) in contributions {
        *per_device.entry(d).or_default() += w;
    }
    let raw: Vec<f64> = per_device.values().copied().collect();
    let capped = cap_shares(&raw, max_share);
    per_device
        .into_keys()
        .zip(raw.iter().zip(&capped))
        .map(|(d, (r, c))| (d, if *r > 0.0 { c / r } else { 0.0 }))
        .collect()
}

/// How federation aggregates. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationConfig {
    /// Distinct devices a cluster needs to be published (privacy rule 3);
    /// at least [`MIN_K_DEVICES`].
    pub k_min_devices: u32,
    /// The largest share of a published cluster's weight one device may
    /// carry, in `[1 / k_min_devices, 1]`; heavier devices are capped
    /// ([`cap_shares`]). Default 0.2 (= 1 / the default k).
    pub max_device_share: f32,
    /// The key of the canonical order ([`order_hash`]); see [`OrderKey`].
    pub order_key: OrderKey,
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
            k_min_devices: MIN_K_DEVICES,
            max_device_share: 1.0 / MIN_K_DEVICES as f32,
            order_key: OrderKey::default(),
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
    /// `k_min_devices` is below [`MIN_K_DEVICES`] (privacy rule 3).
    #[error("k_min_devices = {k} is below the minimum of {min}")]
    ThresholdTooLow {
        /// The configured k.
        k: u32,
        /// The smallest k accepted.
        min: u32,
    },
    /// Reading inputs or publishing failed; regions published before the
    /// failure stay published, the failing one is unchanged.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl FederationConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), FederationError> {
        let err = |m: &str| Err(FederationError::Config(m.to_string()));
        if self.k_min_devices < MIN_K_DEVICES {
            return Err(FederationError::ThresholdTooLow {
                k: self.k_min_devices,
                min: MIN_K_DEVICES,
            });
        }
        let share = self.max_device_share;
        if !(share.is_finite() && share * self.k_min_devices as f32 >= 1.0 && share <= 1.0) {
            return err("max_device_share must be in [1 / k_min_devices, 1]");
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

/// The keyed hash of a device pattern's canonical order.
fn pattern_hash<E>(p: &RegionPattern<E>, key: &OrderKey) -> u64 {
    order_hash(
        key,
        &[p.device.as_str().as_bytes(), &p.pattern.id.0.to_le_bytes()],
    )
}

/// A pattern's samples as federation counts them (capped).
fn capped_samples<E>(p: &RegionPattern<E>, config: &FederationConfig) -> u32 {
    p.pattern.samples.min(config.max_samples_per_pattern)
}

fn weight<E>(p: &RegionPattern<E>, config: &FederationConfig) -> f32 {
    let w = p.pattern.success_rate * capped_samples(p, config) as f32;
    if w.is_finite() && w > 0.0 {
        w
    } else {
        0.0
    }
}

/// A cluster being formed: its running (uncapped) centroid decides which
/// patterns join; what is published is computed from its members by
/// [`Cluster::aggregate`].
struct Cluster<'a> {
    bucket: ContextBucket,
    sum: Vec<f32>,
    centroid: Embedding,
    devices: BTreeSet<&'a DeviceId>,
    /// Positions of the members in the (canonically ordered) rows.
    members: Vec<usize>,
    /// Position of the first member in canonical order (a tie breaker).
    first: usize,
}

/// What a cluster publishes, each device's contribution capped to the
/// configured share of the weight.
struct Aggregate {
    centroid: Embedding,
    weight: f64,
    success_samples: f64,
    samples: f64,
}

impl<'a> Cluster<'a> {
    fn add(&mut self, pos: usize, p: &'a RegionPattern<Embedding>, w: f32) {
        for (s, v) in self.sum.iter_mut().zip(p.pattern.embedding.as_slice()) {
            *s += w * v;
        }
        if let Ok(c) = Embedding::new(self.sum.clone()) {
            self.centroid = c;
        }
        self.devices.insert(&p.device);
        self.members.push(pos);
    }

    /// The published figures: each device's weight in the cluster is capped
    /// by [`cap_shares`] and everything it contributes is scaled with it.
    fn aggregate(
        &self,
        rows: &[(&RegionPattern<Embedding>, f32, u64)],
        config: &FederationConfig,
    ) -> Aggregate {
        let scale = device_scales(
            self.members.iter().map(|&m| {
                let (p, w, _) = rows[m];
                (&p.device, f64::from(w))
            }),
            f64::from(config.max_device_share),
        );
        let mut sum = vec![0.0f64; EMBEDDING_DIM];
        let mut out = Aggregate {
            centroid: self.centroid.clone(),
            weight: 0.0,
            success_samples: 0.0,
            samples: 0.0,
        };
        for &m in &self.members {
            let (p, w, _) = rows[m];
            let f = scale.get(&p.device).copied().unwrap_or(0.0);
            let w = f * f64::from(w);
            for (s, v) in sum.iter_mut().zip(p.pattern.embedding.as_slice()) {
                *s += w * f64::from(*v);
            }
            let n = f * f64::from(capped_samples(p, config));
            out.weight += w;
            out.success_samples += n * f64::from(p.pattern.success_rate);
            out.samples += n;
        }
        if let Ok(c) = Embedding::new(sum.into_iter().map(|x| x as f32).collect()) {
            out.centroid = c;
        }
        out
    }

    fn to_global(&self, agg: &Aggregate, id: u64) -> GlobalPattern {
        let rate = if agg.samples > 0.0 {
            (agg.success_samples / agg.samples).clamp(0.0, 1.0) as f32
        } else {
            0.0
        };
        GlobalPattern {
            id,
            bucket: self.bucket,
            embedding: agg.centroid.clone(),
            success_rate: rate,
            support: u32::try_from(self.devices.len()).unwrap_or(u32::MAX),
            // At least 1: every member has samples, however scaled down.
            samples: (agg.samples.round() as u32).max(1),
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
    let key = &config.order_key;
    let mut rows: Vec<(&RegionPattern<Embedding>, f32, u64)> = inputs
        .iter()
        .map(|p| (p, weight(p, config), pattern_hash(p, key)))
        .filter(|(_, w, _)| *w > 0.0)
        .collect();
    rows.sort_by(|(a, wa, ha), (b, wb, hb)| {
        (ha, &a.device, a.pattern.id)
            .cmp(&(hb, &b.device, b.pattern.id))
            .then_with(|| wa.total_cmp(wb))
            .then_with(|| a.pattern.updated_at_ms.cmp(&b.pattern.updated_at_ms))
    });
    rows.dedup_by(|b, a| a.0.device == b.0.device && a.0.pattern.id == b.0.pattern.id);
    rows.truncate(config.max_patterns_per_region);
    stats.used_patterns = rows.len();

    // 3: greedy clustering per bucket.
    let mut clusters: Vec<Cluster<'_>> = Vec::new();
    let mut per_bucket: BTreeMap<ContextBucket, Vec<usize>> = BTreeMap::new();
    for (pos, (p, w, _)) in rows.iter().enumerate() {
        let members = per_bucket.entry(p.pattern.bucket).or_default();
        let mut best: Option<(usize, f32)> = None;
        for &ci in members.iter() {
            let cos = clusters[ci].centroid.cosine(&p.pattern.embedding);
            if cos >= config.cluster_threshold && best.is_none_or(|(_, b)| cos > b) {
                best = Some((ci, cos));
            }
        }
        match best {
            Some((ci, _)) => clusters[ci].add(pos, p, *w),
            None if members.len() < config.max_clusters_per_bucket => {
                let mut c = Cluster {
                    bucket: p.pattern.bucket,
                    sum: vec![0.0; EMBEDDING_DIM],
                    centroid: p.pattern.embedding.clone(),
                    devices: BTreeSet::new(),
                    members: Vec::new(),
                    first: pos,
                };
                c.add(pos, p, *w);
                members.push(clusters.len());
                clusters.push(c);
            }
            None => stats.dropped_patterns += 1,
        }
    }
    stats.clusters = clusters.len();

    // 4: k-threshold and ranking.
    let k = config.k_min_devices as usize;
    let mut eligible: Vec<(&Cluster<'_>, Aggregate)> = clusters
        .iter()
        .filter(|c| c.devices.len() >= k)
        .map(|c| (c, c.aggregate(&rows, config)))
        .collect();
    stats.eligible_clusters = eligible.len();
    eligible.sort_by(|(a, aa), (b, ab)| {
        b.devices
            .len()
            .cmp(&a.devices.len())
            .then_with(|| ab.weight.total_cmp(&aa.weight))
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
    for (i, (c, agg)) in eligible.iter().enumerate() {
        let Some(centroid) = quantized(&agg.centroid) else {
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
    for ((c, agg), id) in eligible.iter().zip(ids) {
        let id = id.unwrap_or_else(|| {
            next_id += 1;
            next_id
        });
        let g = c.to_global(agg, id);
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

/// Heap entry ordering rows by canonical key (largest on top): the row and
/// its keyed hash.
struct Sampled(RegionPattern, u64);

impl Sampled {
    fn key(&self) -> (u64, &DeviceId, u64) {
        (self.1, &self.0.device, self.0.pattern.id.0)
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
                let h = pattern_hash(&row, &config.order_key);
                heap.push(Sampled(row, h));
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
        // Quality weighting alone, without the share cap (which binds here:
        // see `no_device_carries_more_than_its_share`).
        let uncapped = FederationConfig {
            max_device_share: 1.0,
            ..FederationConfig::default()
        };
        let out = federate_region(&rows, &RegionGlobals::default(), &[], &uncapped);
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
            Err(FederationError::ThresholdTooLow { k: 0, min: 5 })
        ));
    }

    #[test]
    fn k_below_five_is_refused() {
        for k in 0..MIN_K_DEVICES {
            let c = FederationConfig {
                k_min_devices: k,
                ..FederationConfig::default()
            };
            assert_eq!(
                c.validate(),
                Err(FederationError::ThresholdTooLow { k, min: 5 })
            );
        }
        let ten = FederationConfig {
            k_min_devices: 10,
            ..FederationConfig::default()
        };
        assert_eq!(ten.validate(), Ok(()));
        // The share bound must leave room for k devices.
        for share in [0.05, 0.0, f32::NAN, 1.5] {
            let c = FederationConfig {
                max_device_share: share,
                ..FederationConfig::default()
            };
            assert!(
                matches!(c.validate(), Err(FederationError::Config(_))),
                "{share}"
            );
        }
    }

    #[test]
    fn cap_shares_bounds_every_share_and_keeps_the_small_ones() {
        let share = |w: &[f64]| {
            let t: f64 = w.iter().sum();
            w.iter().fold(0.0f64, |m, x| m.max(x / t))
        };
        // Nothing to do when every share is within the bound.
        assert_eq!(cap_shares(&[1.0, 1.0, 1.0, 1.0, 1.0], 0.2), vec![1.0; 5]);
        // One heavy device among tiny ones: capped to the bound exactly.
        let w = cap_shares(&[1000.0, 1.0, 1.0, 1.0, 1.0], 0.2);
        assert_eq!(w[1..], [1.0; 4]);
        assert!((share(&w) - 0.2).abs() < 1e-9, "{w:?}");
        // Too few devices for the bound: equal shares.
        assert_eq!(cap_shares(&[5.0, 1.0, 2.0], 0.2), vec![1.0; 3]);
        assert!(cap_shares(&[], 0.2).is_empty());
        // Many pseudo-random inputs: the bound holds, no weight grows, the
        // order of weights is kept and the weights below the cap are intact.
        let mut state = 1u64;
        for case in 0..2000 {
            let n = 5 + case % 40;
            let w: Vec<f64> = (0..n)
                .map(|_| {
                    let r = suite_rand(&mut state);
                    if r.is_multiple_of(7) {
                        (r % 1_000_000) as f64 + 1.0
                    } else {
                        (r % 1000) as f64 / 100.0 + 0.001
                    }
                })
                .collect();
            for s in [0.2, 0.5, 1.0 / n as f64] {
                let c = cap_shares(&w, s);
                // Up to floating-point rounding.
                assert!(
                    share(&c) <= s * (1.0 + 1e-6),
                    "case {case}: {w:?} at {s}: {c:?}"
                );
                let cap = c.iter().copied().fold(0.0f64, f64::max);
                for (a, b) in w.iter().zip(&c) {
                    assert!(b <= a);
                    if *a < cap {
                        assert_eq!(a, b);
                    }
                }
            }
        }
    }

    #[test]
    fn device_scales_sum_a_devices_contributions_before_capping() {
        let (a, b) = (device(1), device(2));
        let others: Vec<DeviceId> = (3..7).map(device).collect();
        // Device a splits a heavy weight over three patterns: it is capped
        // as one device, all its patterns by one factor.
        let mut rows = vec![(&a, 40.0), (&a, 40.0), (&a, 20.0), (&b, 1.0)];
        rows.extend(others.iter().map(|d| (d, 1.0)));
        let scales = device_scales(rows.iter().copied(), 0.2);
        // Five devices at 1 and a capped at c: c = 0.2 (c + 5) → c = 1.25.
        assert!((scales[&a] * 100.0 - 1.25).abs() < 1e-9, "{scales:?}");
        assert_eq!(scales[&b], 1.0);
        assert!(others.iter().all(|d| scales[d] == 1.0));
        let total: f64 = rows.iter().map(|(d, w)| scales[*d] * w).sum();
        assert!(scales[&a] * 100.0 / total <= 0.2 + 1e-9);
    }

    fn suite_rand(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *state >> 11
    }

    #[test]
    fn no_device_carries_more_than_its_share() {
        // One heavy device and four light ones: the heavy one's weight is
        // capped to a fifth of the total, so all five count alike.
        let heavy = embedding_near(1, 500, 0.15);
        let mut rows = vec![row(0, 1, heavy.clone(), 0, 1.0, 1000)];
        rows.extend((1..5).map(|d| row(d, 1, embedding_near(1, 600 + d, 0.15), 0, 0.5, 2)));
        let out = run1(&rows, &RegionGlobals::default());
        assert_eq!(out.patterns.len(), 1);
        let g = &out.patterns[0];
        // Equal weights (1 each): the rate is the plain mean, samples scaled.
        assert!(
            (g.success_rate - (1.0 + 4.0 * 0.5) / 5.0).abs() < 0.1,
            "{g:?}"
        );
        assert!(g.samples <= 10, "{g:?}");
        let others = Embedding::new(
            (0..EMBEDDING_DIM)
                .map(|i| {
                    rows[1..]
                        .iter()
                        .map(|r| r.pattern.embedding.as_slice()[i])
                        .sum()
                })
                .collect(),
        )
        .unwrap();
        assert!(g.embedding.cosine(&others) > g.embedding.cosine(&heavy));
    }

    #[test]
    fn the_order_is_keyed() {
        let key = |n: u8| OrderKey([n; 16]);
        let rows = group(0, 200, 1, 0);
        let order = |k: &OrderKey| {
            let mut ids: Vec<(u64, String)> = rows
                .iter()
                .map(|r| (pattern_hash(r, k), r.device.to_string()))
                .collect();
            ids.sort();
            ids.into_iter().map(|(_, d)| d).collect::<Vec<_>>()
        };
        assert_eq!(order(&key(1)), order(&key(1)));
        assert_ne!(order(&key(1)), order(&key(2)));
        // Length-prefixed parts: a different split is a different input.
        let k = key(3);
        assert_ne!(
            order_hash(&k, &[b"ab", b"c"]),
            order_hash(&k, &[b"a", b"bc"])
        );
        // The sample a region keeps depends on the key, not on ids a device picks.
        let small = |k: OrderKey| FederationConfig {
            max_patterns_per_region: 20,
            order_key: k,
            ..FederationConfig::default()
        };
        let a = federate_region(&rows, &RegionGlobals::default(), &[], &small(key(1)));
        let b = federate_region(&rows, &RegionGlobals::default(), &[], &small(key(2)));
        assert_eq!(a.stats.used_patterns, 20);
        assert_ne!(a.patterns, b.patterns);
        assert!(!format!("{:?}", key(7)).contains('7'));
    }

    #[test]
    fn one_device_with_huge_samples_does_not_own_the_trends() {
        // Cluster A: six devices with 100 samples each. Cluster B: five
        // devices with 10, one of which claims u32::MAX.
        let mut rows: Vec<RegionPattern<Embedding>> = (0..6)
            .map(|d| row(d, 1, embedding_near(1, 100 + d, 0.05), 2, 0.8, 100))
            .collect();
        rows.extend((10..15).map(|d| {
            let samples = if d == 10 { u32::MAX } else { 10 };
            row(d, 1, embedding_near(2, 100 + d, 0.05), 2, 0.8, samples)
        }));
        let catalog: Vec<CatalogVector> = [(1u64, 1u64), (2, 2)]
            .into_iter()
            .map(|(n, seed)| CatalogVector {
                id: suite::content(n),
                embedding: embedding(seed),
            })
            .collect();
        let out = federate_region(
            &rows,
            &RegionGlobals::default(),
            &catalog,
            &FederationConfig::default(),
        );
        assert_eq!(out.patterns.len(), 2);
        assert_eq!(
            out.trends[0].content_id,
            suite::content(1),
            "{:?}",
            out.trends
        );
        let b = out
            .patterns
            .iter()
            .find(|g| g.embedding.cosine(&embedding(2)) > 0.9)
            .unwrap();
        assert!(b.samples <= 100, "{b:?}");
    }

    /// k − 1 attacker devices and one victim whose pattern lies in the
    /// attackers' cluster: whatever weights the attackers pick, the victim
    /// never carries more than 1/k of a published global, so the global is
    /// never the victim's pattern: its direction is nearer the attackers'
    /// mix than the victim's, and with tiny attacker weights (the attack)
    /// its success rate is not the victim's. Without the share cap the
    /// tiny-weight attack works, which shows the check can fail.
    #[test]
    fn sybils_never_get_a_victims_pattern_published() {
        let attack = |config: &FederationConfig| {
            let k = u64::from(config.k_min_devices);
            let mut state = 7u64;
            let mut published_victims = 0;
            for seed in 0..300u64 {
                let base = 1_000 + seed;
                let victim = embedding_near(base, 50_000 + seed, 0.1);
                let mut rows = vec![row(0, 1, victim.clone(), 0, 1.0, 1000)];
                let mut sybils = vec![0.0f32; EMBEDDING_DIM];
                // Even seeds: the attack (tiny weights); odd: any weights.
                let tiny = seed.is_multiple_of(2);
                for d in 1..k {
                    let r = suite_rand(&mut state);
                    let noise = 0.05 + (r % 10) as f32 / 100.0;
                    let e = embedding_near(base, 60_000 + seed * 16 + d, noise);
                    for (s, v) in sybils.iter_mut().zip(e.as_slice()) {
                        *s += v;
                    }
                    let (rate, samples) = if tiny {
                        (0.001, 1)
                    } else {
                        (
                            [0.001, 0.01, 1.0][(r % 3) as usize],
                            [1, 2, 1000, u32::MAX][(r / 3 % 4) as usize],
                        )
                    };
                    rows.push(row(d + 1000 * (seed + 1), 1, e, 0, rate, samples));
                }
                let sybils = Embedding::new(sybils).unwrap();
                let out = federate_region(&rows, &RegionGlobals::default(), &[], config);
                let victims = out.patterns.iter().any(|g| {
                    g.embedding.cosine(&victim) >= g.embedding.cosine(&sybils)
                        || (tiny && g.success_rate > 0.5)
                });
                published_victims += usize::from(victims);
            }
            published_victims
        };
        assert_eq!(attack(&FederationConfig::default()), 0);
        let uncapped = FederationConfig {
            max_device_share: 1.0,
            ..FederationConfig::default()
        };
        assert!(attack(&uncapped) >= 100, "the attack works without the cap");
    }
}
