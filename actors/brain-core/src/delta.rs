//! The pattern delta a TV uploads: what changed since the node's acknowledged
//! version, under the privacy rules of DESIGN.md.
//!
//! Sans-IO: patterns, versions, configuration and a random source in, a
//! [`DeltaPlan`] out. The node's acknowledgement is planned by
//! [`crate::sync::plan_ack`] and written by the store.
//!
//! Invariants (tested):
//! * only patterns aggregating at least [`DeltaConfig::min_distinct_items`]
//!   (default and floor: 3) distinct items are ever included: a single watched
//!   title never leaves the TV, not even as a removal of a pattern the node
//!   never saw;
//! * at most [`DeltaConfig::max_patterns`] (default 256, the protocol's limit)
//!   added + updated patterns and [`MAX_DELTA_REMOVED`] removals per delta;
//!   the rest wait for the next sync. Changes are taken in version order and
//!   whole versions at a time, and [`DeltaPlan::upto_version`] says how far the
//!   delta reaches, so acknowledging it never skips a change;
//! * with [`DeltaConfig::noise_sigma`] > 0 every uploaded embedding gets
//!   independent Gaussian noise before quantization (see there).
//!
//! A snapshot ([`build_snapshot`], after `ResyncRequired`) is the same walk with
//! nothing assumed known by the node: every eligible pattern is "added", no
//! removals; a snapshot larger than the cap continues with ordinary deltas.

use omega_protocol::limits::{MAX_DELTA_PATTERNS, MAX_DELTA_REMOVED};
use omega_protocol::{Embedding, PatternDelta, PatternId, PatternSummary, SyncKind, EMBEDDING_DIM};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::patterns::PatternBook;

/// The privacy floor on distinct items per uploaded pattern.
pub const MIN_DISTINCT_ITEMS: u32 = 3;

/// How deltas are built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaConfig {
    /// Added + updated patterns per delta; clamped to 1..=256.
    pub max_patterns: usize,
    /// Distinct items a pattern needs before it is shared; values below
    /// [`MIN_DISTINCT_ITEMS`] are raised to it.
    pub min_distinct_items: u32,
    /// Standard deviation of the Gaussian noise added to each coordinate of an
    /// uploaded (unit) embedding, which is then renormalized. 0 disables it.
    ///
    /// What it buys: the noise vector has expected norm σ·√384, so the uploaded
    /// direction keeps an expected cosine of about 1/√(1 + 384σ²) with the true
    /// centroid (σ = 0.02: ≈ 0.93; σ = 0.05: ≈ 0.71). Replacing one title of a
    /// pattern of n items moves its mean by at most 2/n (L2), so by the
    /// Gaussian mechanism one upload is (ε, δ)-differentially private for that
    /// title with ε = (2/n)·√(2 ln(1.25/δ)) / σ; for n = 10, δ = 10⁻⁵, σ = 0.05:
    /// ε ≈ 19 — it blurs exact titles, it is no strong guarantee on its own.
    /// Each upload draws fresh noise, so a pattern uploaded many times leaks
    /// more (its updates compose).
    pub noise_sigma: f32,
}

impl Default for DeltaConfig {
    fn default() -> Self {
        Self {
            max_patterns: MAX_DELTA_PATTERNS,
            min_distinct_items: MIN_DISTINCT_ITEMS,
            noise_sigma: 0.0,
        }
    }
}

/// A delta ready to send, and how far it reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaPlan {
    /// `Snapshot` for [`build_snapshot`], else `Delta`.
    pub kind: SyncKind,
    /// The version the node holds (0 for a snapshot).
    pub base_version: u64,
    /// The version the node holds after applying this delta: send as
    /// `SyncRequest::pattern_version`, acknowledge with it.
    pub upto_version: u64,
    /// The changes.
    pub delta: PatternDelta,
    /// Whether changes beyond `upto_version` are left for the next sync.
    pub more: bool,
}

/// Adds N(0, σ²) to each coordinate and renormalizes; returns the input when
/// σ ≤ 0 (or in the vanishing case the noise cancels it exactly).
pub fn add_noise(e: &Embedding, sigma: f32, rng: &mut impl Rng) -> Embedding {
    if !(sigma > 0.0 && sigma.is_finite()) {
        return e.clone();
    }
    let Ok(noise) = Normal::new(0.0f32, sigma) else {
        return e.clone();
    };
    let v: Vec<f32> = e.as_slice().iter().map(|x| x + noise.sample(rng)).collect();
    debug_assert_eq!(v.len(), EMBEDDING_DIM);
    Embedding::new(v).unwrap_or_else(|_| e.clone())
}

enum Change {
    Pattern(PatternSummary, bool),
    Removal(PatternId),
}

/// Builds the delta since `acked` (the node's version) up to `current`.
pub fn build_delta(
    book: &PatternBook,
    acked: u64,
    current: u64,
    cfg: &DeltaConfig,
    rng: &mut impl Rng,
) -> DeltaPlan {
    walk(book, acked, current, cfg, false, rng)
}

/// Builds a full snapshot (first chunk) for a node that lost this device.
pub fn build_snapshot(
    book: &PatternBook,
    current: u64,
    cfg: &DeltaConfig,
    rng: &mut impl Rng,
) -> DeltaPlan {
    walk(book, 0, current, cfg, true, rng)
}

fn walk(
    book: &PatternBook,
    acked: u64,
    current: u64,
    cfg: &DeltaConfig,
    snapshot: bool,
    rng: &mut impl Rng,
) -> DeltaPlan {
    let min_distinct = cfg.min_distinct_items.max(MIN_DISTINCT_ITEMS);
    let max_patterns = cfg.max_patterns.clamp(1, MAX_DELTA_PATTERNS);
    // (version, change) in version order, ids breaking ties.
    let mut changes: Vec<(u64, PatternId, bool)> = Vec::new(); // (version, id, is_removal)
    for p in book.iter() {
        if p.updated_version > acked && p.distinct_items >= min_distinct {
            changes.push((p.updated_version, p.id, false));
        }
    }
    if !snapshot {
        for (id, t) in book.tombstones() {
            if t.version > acked && t.known_to_node {
                changes.push((t.version, *id, true));
            }
        }
    }
    changes.sort_unstable();

    let mut delta = PatternDelta::default();
    let mut upto = current;
    let mut more = false;
    let mut i = 0;
    while i < changes.len() {
        let v = changes[i].0;
        let group_end = changes[i..]
            .iter()
            .position(|c| c.0 != v)
            .map_or(changes.len(), |n| i + n);
        let group = &changes[i..group_end];
        let n_pat = group.iter().filter(|c| !c.2).count();
        let n_rem = group.len() - n_pat;
        let have_pat = delta.added.len() + delta.updated.len();
        let fits =
            have_pat + n_pat <= max_patterns && delta.removed.len() + n_rem <= MAX_DELTA_REMOVED;
        // A first group too big to fit cannot happen (a version changes at most
        // two patterns); guard anyway by sending it truncated rather than nothing.
        if !fits && (have_pat > 0 || !delta.removed.is_empty()) {
            upto = changes[i - 1].0;
            more = true;
            break;
        }
        for &(_, id, removal) in group {
            let change = if removal {
                Change::Removal(id)
            } else {
                let Some(p) = book.get(id) else { continue };
                let Some(mut s) = p.summary() else { continue };
                s.embedding = add_noise(&s.embedding, cfg.noise_sigma, rng);
                Change::Pattern(s, p.known_to_node && !snapshot)
            };
            match change {
                Change::Removal(id) if delta.removed.len() < MAX_DELTA_REMOVED => {
                    delta.removed.push(id)
                }
                Change::Pattern(s, true)
                    if delta.added.len() + delta.updated.len() < max_patterns =>
                {
                    delta.updated.push(s)
                }
                Change::Pattern(s, false)
                    if delta.added.len() + delta.updated.len() < max_patterns =>
                {
                    delta.added.push(s)
                }
                _ => {}
            }
        }
        i = group_end;
    }
    DeltaPlan {
        kind: if snapshot {
            SyncKind::Snapshot
        } else {
            SyncKind::Delta
        },
        base_version: acked,
        upto_version: upto,
        delta,
        more,
    }
}
