//! Fleet aggregates of private contributions: what a node does with the sum
//! of one round of contributions (secure aggregation gives it nothing else),
//! and what it publishes to TVs.
//!
//! A round's sum is a vector over a [`ContributionLayout`]: per catalog slot
//! how many contributors watched the title, per pair of the round's pair
//! titles how many watched both close together, each entry plus the noise the
//! contributors added (scale σ in total). Rules:
//! * a round counts only with at least `k` contributors ([`AggregateConfig`]
//!   refuses k < [`MIN_K`]);
//! * totals add the rounds' noisy sums unchanged (unbiased) and their noise
//!   variances, so the accumulated noise is σ_acc = √(Σ σ²);
//! * published: titles whose total is at least `z`·σ_acc (at most
//!   `max_titles`, largest first) and, per title, its `partners` largest pair
//!   totals at least `z`·σ_acc. Thresholds keep noise out of what TVs rank
//!   by; privacy does not depend on them (everything here is post-processing
//!   of differentially private sums).
//! * bounded: at most `max_pairs` pair totals per region are kept; past it
//!   the smallest go.

use std::collections::{BTreeMap, HashMap};

use omega_privacy::ContributionLayout;
use omega_protocol::ContentId;
use serde::{Deserialize, Serialize};

/// The least k accepted: an aggregate needs at least this many contributors.
pub const MIN_K: usize = 5;

/// Why a configuration or a round is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// k below [`MIN_K`].
    #[error("k = {0} is below the minimum of {MIN_K} contributors")]
    KTooSmall(usize),
    /// The threshold factor must be finite and not negative.
    #[error("threshold factor {0} is not a finite non-negative number")]
    Threshold(f64),
    /// Fewer contributors than k: the round's sum is not used.
    #[error("{got} contributors, {k} needed")]
    TooFewContributors {
        /// Contributors in the round.
        got: usize,
        /// k.
        k: usize,
    },
    /// The sum, the slot list or the pair list does not fit the layout.
    #[error("round does not fit its layout: {0}")]
    Layout(&'static str),
    /// The noise scale must be finite and not negative.
    #[error("noise scale {0} is not a finite non-negative number")]
    Sigma(f64),
}

/// How rounds are folded and what is published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggregateConfig {
    k: usize,
    z: f64,
    /// Most titles published.
    pub max_titles: usize,
    /// Most partners published per title.
    pub partners: usize,
    /// Most pair totals kept per region.
    pub max_pairs: usize,
}

impl Default for AggregateConfig {
    /// k = 5, z = 3, 1,000 titles, 20 partners each, 200,000 pair totals.
    fn default() -> Self {
        AggregateConfig {
            k: MIN_K,
            z: 3.0,
            max_titles: 1000,
            partners: 20,
            max_pairs: 200_000,
        }
    }
}

impl AggregateConfig {
    /// A checked configuration with default sizes.
    pub fn new(k: usize, z: f64) -> Result<Self, AggregateError> {
        if k < MIN_K {
            return Err(AggregateError::KTooSmall(k));
        }
        if !(z.is_finite() && z >= 0.0) {
            return Err(AggregateError::Threshold(z));
        }
        Ok(AggregateConfig {
            k,
            z,
            ..Self::default()
        })
    }

    /// Contributors a round needs.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The publication threshold in units of accumulated noise.
    pub fn z(&self) -> f64 {
        self.z
    }
}

/// One round's sum, as secure aggregation delivers it.
#[derive(Debug, Clone, Copy)]
pub struct RoundSum<'a> {
    /// The round's layout.
    pub layout: &'a ContributionLayout,
    /// The title of each catalog slot (`None`: a withdrawn slot).
    pub slots: &'a [Option<ContentId>],
    /// The titles taking part in pairs, by pair index.
    pub pair_titles: &'a [ContentId],
    /// The sum, `layout.dimension()` entries.
    pub values: &'a [i64],
    /// Contributors whose input is in the sum.
    pub contributors: usize,
    /// The total noise scale in the sum, in title units (after dividing
    /// by `scale`).
    pub sigma: f64,
    /// Each contribution's entries were 0/`scale` (see omega-privacy's
    /// `RoundSpec::scale`): the sum is divided by it. 0 is refused.
    pub scale: u32,
}

/// A region's accumulated totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionTotals {
    /// Per title, the sum of its entries over the rounds.
    pub titles: BTreeMap<ContentId, f64>,
    /// Per unordered pair (smaller id first), the sum over the rounds.
    pub pairs: BTreeMap<(ContentId, ContentId), f64>,
    /// Σ σ² over the rounds folded.
    pub variance: f64,
    /// Rounds folded.
    pub rounds: u32,
    /// Contributors over the rounds folded.
    pub contributors: u64,
}

/// What TVs of a region receive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Titles with their totals, largest first.
    pub titles: Vec<(ContentId, f32)>,
    /// Per title, its partners with the pair totals, largest first.
    pub partners: BTreeMap<ContentId, Vec<(ContentId, f32)>>,
}

fn ordered(a: &ContentId, b: &ContentId) -> (ContentId, ContentId) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl RegionTotals {
    /// The accumulated noise scale σ_acc.
    pub fn sigma(&self) -> f64 {
        self.variance.sqrt()
    }

    /// Adds one round's sum, or refuses it (nothing changes then).
    pub fn fold(
        &mut self,
        round: &RoundSum<'_>,
        cfg: &AggregateConfig,
    ) -> Result<(), AggregateError> {
        if round.contributors < cfg.k {
            return Err(AggregateError::TooFewContributors {
                got: round.contributors,
                k: cfg.k,
            });
        }
        if !(round.sigma.is_finite() && round.sigma >= 0.0) {
            return Err(AggregateError::Sigma(round.sigma));
        }
        let layout = round.layout;
        if round.values.len() != layout.dimension() {
            return Err(AggregateError::Layout("sum length"));
        }
        if round.slots.len() != layout.items() as usize {
            return Err(AggregateError::Layout("slot list length"));
        }
        if round.pair_titles.len() != usize::from(layout.pair_items()) {
            return Err(AggregateError::Layout("pair list length"));
        }
        if round.scale == 0 {
            return Err(AggregateError::Layout("scale 0"));
        }
        let unit = f64::from(round.scale);
        for (slot, id) in round.slots.iter().enumerate() {
            if let Some(id) = id {
                *self.titles.entry(id.clone()).or_default() += round.values[slot] as f64 / unit;
            }
        }
        for e in layout.items() as usize..layout.dimension() {
            let Some((a, b)) = layout.pair_of(e) else {
                return Err(AggregateError::Layout("pair entry"));
            };
            let (a, b) = (
                &round.pair_titles[a as usize],
                &round.pair_titles[b as usize],
            );
            if a == b {
                continue;
            }
            *self.pairs.entry(ordered(a, b)).or_default() += round.values[e] as f64 / unit;
        }
        self.variance += round.sigma * round.sigma;
        self.rounds += 1;
        self.contributors += round.contributors as u64;
        self.trim_pairs(cfg.max_pairs);
        Ok(())
    }

    /// Adds totals folded elsewhere (`other`: rounds this node folded and
    /// the store does not hold yet): titles, pairs, variances, rounds and
    /// contributors add, then pairs past `cfg.max_pairs` go as in
    /// [`Self::fold`]. Folding rounds into empty totals and merging those
    /// gives what folding them here directly gives (up to that trim).
    pub fn merge(&mut self, other: &RegionTotals, cfg: &AggregateConfig) {
        for (id, v) in &other.titles {
            *self.titles.entry(id.clone()).or_default() += v;
        }
        for (pair, v) in &other.pairs {
            *self.pairs.entry(pair.clone()).or_default() += v;
        }
        self.variance += other.variance;
        self.rounds = self.rounds.saturating_add(other.rounds);
        self.contributors = self.contributors.saturating_add(other.contributors);
        self.trim_pairs(cfg.max_pairs);
    }

    fn trim_pairs(&mut self, max: usize) {
        if self.pairs.len() <= max {
            return;
        }
        let mut values: Vec<f64> = self.pairs.values().copied().collect();
        let cut = self.pairs.len() - max;
        values.select_nth_unstable_by(cut - 1, f64::total_cmp);
        let floor = values[cut - 1];
        let mut dropped = 0;
        self.pairs.retain(|_, v| {
            if dropped < cut && *v <= floor {
                dropped += 1;
                false
            } else {
                true
            }
        });
    }

    /// What to publish under `cfg`.
    pub fn publish(&self, cfg: &AggregateConfig) -> Published {
        let floor = cfg.z * self.sigma();
        let mut titles: Vec<(ContentId, f32)> = self
            .titles
            .iter()
            .filter(|(_, v)| **v > 0.0 && **v >= floor)
            .map(|(id, v)| (id.clone(), *v as f32))
            .collect();
        titles.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        titles.truncate(cfg.max_titles);
        let mut partners: HashMap<ContentId, Vec<(ContentId, f32)>> = HashMap::new();
        for ((a, b), v) in &self.pairs {
            if *v > 0.0 && *v >= floor {
                partners
                    .entry(a.clone())
                    .or_default()
                    .push((b.clone(), *v as f32));
                partners
                    .entry(b.clone())
                    .or_default()
                    .push((a.clone(), *v as f32));
            }
        }
        let partners = partners
            .into_iter()
            .map(|(id, mut list)| {
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                list.truncate(cfg.partners);
                (id, list)
            })
            .collect();
        Published { titles, partners }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ContentId {
        ContentId::new(s).expect("valid id")
    }

    struct Round {
        layout: ContributionLayout,
        slots: Vec<Option<ContentId>>,
        pairs: Vec<ContentId>,
    }

    fn round() -> Round {
        // Slots: a b c (d withdrawn); pairs among a b c.
        Round {
            layout: ContributionLayout::new(4, 3, 5).expect("layout"),
            slots: vec![Some(id("a")), Some(id("b")), Some(id("c")), None],
            pairs: vec![id("a"), id("b"), id("c")],
        }
    }

    fn sum<'a>(r: &'a Round, values: &'a [i64], contributors: usize, sigma: f64) -> RoundSum<'a> {
        RoundSum {
            layout: &r.layout,
            slots: &r.slots,
            pair_titles: &r.pairs,
            values,
            contributors,
            sigma,
            scale: 1,
        }
    }

    #[test]
    fn config_refuses_k_below_five_and_bad_thresholds() {
        for k in 0..MIN_K {
            assert_eq!(
                AggregateConfig::new(k, 3.0),
                Err(AggregateError::KTooSmall(k))
            );
        }
        assert!(matches!(
            AggregateConfig::new(5, f64::NAN),
            Err(AggregateError::Threshold(_))
        ));
        assert_eq!(AggregateConfig::new(5, 3.0).map(|c| c.k()), Ok(5));
    }

    #[test]
    fn rounds_with_too_few_contributors_or_a_wrong_shape_change_nothing() {
        let r = round();
        let cfg = AggregateConfig::default();
        let mut t = RegionTotals::default();
        // 4 titles + 3 pairs: (a,b) (a,c) (b,c).
        let v = [9, 9, 9, 9, 9, 9, 9];
        assert_eq!(
            t.fold(&sum(&r, &v, 4, 1.0), &cfg),
            Err(AggregateError::TooFewContributors { got: 4, k: 5 })
        );
        assert!(t.fold(&sum(&r, &v[..6], 5, 1.0), &cfg).is_err());
        assert!(t.fold(&sum(&r, &v, 5, f64::INFINITY), &cfg).is_err());
        let mut short = round();
        short.pairs.pop();
        assert!(t.fold(&sum(&short, &v, 5, 1.0), &cfg).is_err());
        assert_eq!(t, RegionTotals::default());
    }

    #[test]
    fn totals_add_up_and_publication_keeps_what_stands_out_of_the_noise() {
        let r = round();
        let cfg = AggregateConfig::new(5, 3.0).expect("config");
        let mut t = RegionTotals::default();
        // titles a=40 b=2 c=20 (slot 3 withdrawn: ignored); pairs ab=1 ac=30 bc=-3
        t.fold(&sum(&r, &[40, 2, 20, 99, 1, 30, -3], 6, 3.0), &cfg)
            .expect("folds");
        t.fold(&sum(&r, &[10, 1, 5, 0, 0, 10, 0], 7, 4.0), &cfg)
            .expect("folds");
        assert_eq!(t.titles[&id("a")], 50.0);
        assert_eq!(t.pairs[&(id("a"), id("c"))], 40.0);
        assert!((t.sigma() - 5.0).abs() < 1e-12);
        assert_eq!((t.rounds, t.contributors), (2, 13));
        let p = t.publish(&cfg); // floor 15
        assert_eq!(p.titles, vec![(id("a"), 50.0), (id("c"), 25.0)]);
        assert_eq!(p.partners[&id("a")], vec![(id("c"), 40.0)]);
        assert_eq!(p.partners[&id("c")], vec![(id("a"), 40.0)]);
        assert!(!p.partners.contains_key(&id("b")));
    }

    #[test]
    fn merging_rounds_folded_apart_equals_folding_them_together() {
        let r = round();
        let cfg = AggregateConfig::new(5, 3.0).expect("config");
        let first = [40, 2, 20, 99, 1, 30, -3];
        let second = [10, 1, 5, 0, 0, 10, 0];
        let mut together = RegionTotals::default();
        together
            .fold(&sum(&r, &first, 6, 3.0), &cfg)
            .expect("folds");
        together
            .fold(&sum(&r, &second, 7, 4.0), &cfg)
            .expect("folds");
        let mut here = RegionTotals::default();
        here.fold(&sum(&r, &first, 6, 3.0), &cfg).expect("folds");
        let mut elsewhere = RegionTotals::default();
        elsewhere
            .fold(&sum(&r, &second, 7, 4.0), &cfg)
            .expect("folds");
        here.merge(&elsewhere, &cfg);
        assert_eq!(here, together);
        let bounded = AggregateConfig {
            max_pairs: 1,
            ..cfg
        };
        here.merge(&elsewhere, &bounded);
        assert_eq!(here.pairs.len(), 1, "trimmed to max_pairs");
        assert_eq!((here.rounds, here.contributors), (3, 20));
    }

    #[test]
    fn publication_and_pair_totals_are_bounded() {
        let layout = ContributionLayout::new(30, 30, 5).expect("layout");
        let ids: Vec<ContentId> = (0..30).map(|i| id(&format!("t{i:02}"))).collect();
        let slots: Vec<Option<ContentId>> = ids.iter().cloned().map(Some).collect();
        let values: Vec<i64> = (0..layout.dimension() as i64).map(|i| 100 + i).collect();
        let cfg = AggregateConfig {
            max_titles: 7,
            partners: 3,
            max_pairs: 50,
            ..AggregateConfig::default()
        };
        let mut t = RegionTotals::default();
        let s = RoundSum {
            layout: &layout,
            slots: &slots,
            pair_titles: &ids,
            values: &values,
            contributors: 5,
            sigma: 1.0,
            scale: 1,
        };
        t.fold(&s, &cfg).expect("folds");
        assert_eq!(t.pairs.len(), 50);
        let smallest_kept = t.pairs.values().copied().fold(f64::INFINITY, f64::min);
        assert!(
            smallest_kept >= (100 + layout.dimension() - 50) as f64,
            "the largest are kept"
        );
        let p = t.publish(&cfg);
        assert_eq!(p.titles.len(), 7);
        assert!(p.titles.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(p.partners.values().all(|l| l.len() <= 3));
    }
}
