//! What the node learns from the fleet, per region, as a sans-IO object the
//! sync shell calls: when a region's next aggregation round opens and over
//! which layout, each device's round message in and out, the round's sum
//! folded into the region's totals, and the fleet pages TVs read.
//!
//! * **Rounds**: one [`Coordinator`] per allowed region. A round opens when
//!   the region's previous one ended at least [`LearningConfig::interval_ms`]
//!   ago (and at the first sync); its slots are the live catalog titles at
//!   the catalog version the shell passes, in id order, and its pair titles
//!   are the [`LearningConfig::pair_titles`] titles with the largest totals
//!   so far (none before the first fold: the first round teaches popularity
//!   only). Phases advance on syncs: every call ticks the region first.
//! * **Folding**: a summed round (at least k contributors) is folded into
//!   empty [`RegionTotals`] and kept as pending until the store holds it.
//!   Nodes sharing a store each fold their own rounds, so the store's totals
//!   are the truth and a node only adds to them: [`Learning::take_writes`]
//!   names the store's totals this node read (their rounds) and those plus
//!   the pending rounds; the shell writes them with a compare-and-set
//!   ([`crate::store::PatternStore::put_region_totals`]). Taken
//!   ([`Learning::written`]): they are published. Refused because another
//!   node folded meanwhile ([`Learning::conflict`], with the store's
//!   current totals): the same pending rounds are added to those at the next
//!   take (a bounded number of tries in the shell). Failed otherwise
//!   ([`Learning::unwritten`]): they stay pending and are tried again at the
//!   next refresh.
//! * **Refresh**: every [`LearningConfig::refresh_ms`] per region
//!   ([`Learning::refresh_due`]) the shell reads the stored totals' rounds;
//!   newer totals (more rounds: another node folded,
//!   [`Learning::is_newer`]) are read and published here too
//!   ([`Learning::stored_totals`]). Only the store's totals are ever
//!   published and the fleet version is their rounds count, so every node
//!   serves the same pages under the same version and a TV's fleet cursor
//!   stays valid on another node.
//! * **Noise scale**: TVs choose their noise from their own budget; the node
//!   assumes the default budget ([`omega_privacy::Budget::default`]) and the
//!   layout's sensitivity to know σ of one round's sum, √(n/t)·σ_total for n
//!   survivors each adding σ_total/√t. It only sets publication thresholds:
//!   privacy never depends on what the node assumes.
//! * **Fleet pages**: the published titles (largest total first) with their
//!   partners, [`LearningConfig::page_titles`] per page, by version and
//!   offset ([`FleetCursor`]).
//!
//! What the node never has: any one TV's contribution. A forget cannot take
//! a device's past watches out of sums it was already folded into (they are
//! indistinguishable inside the noise; that is the point); the device takes
//! part in no round after it is forgotten until it syncs again.

use std::collections::BTreeMap;
use std::sync::Arc;

use omega_privacy::round::{NodeToTv, TvToNode};
use omega_privacy::secagg::Verifier;
use omega_privacy::{Budget, ContributionLayout, GaussianRelease};
use omega_protocol::{limits, ContentId, DeviceId, FleetCursor, FleetPage, FleetTitle, Region};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregateConfig, AggregateError, RegionTotals};
use crate::rounds::{Coordinator, Folded, RoundError, RoundStats, RoundsConfig, Tick};

const HOUR_MS: u64 = 3_600_000;

/// How the node learns (the node's `[learning]` section). Every field has
/// the default given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningConfig {
    /// Whether rounds run at all. Default true.
    pub enabled: bool,
    /// Round sizes and phase deadlines.
    pub rounds: RoundsConfig,
    /// Least time from the end of a region's round to the opening of its
    /// next one. Default 24 hours (a TV releases at most once a day at the
    /// default budget, and every round adds noise to the totals).
    pub interval_ms: u64,
    /// Titles taking part in pairs (the layout's pair section has
    /// m(m − 1)/2 entries). Default 256.
    pub pair_titles: u16,
    /// Successful watches before a watch that pair with it. Default 5.
    pub window: u8,
    /// Contributors a round needs to be folded (at least 5). Default 5.
    pub k: usize,
    /// Publication threshold in units of the totals' noise. Default 3.
    pub z: f64,
    /// Most titles published. Default 1,000.
    pub max_titles: usize,
    /// Most partners published per title (at most 32). Default 20.
    pub partners: usize,
    /// Titles per fleet page (at most 200). Default 200.
    pub page_titles: usize,
    /// Least time between two reads of a region's stored totals (to serve
    /// rounds other nodes folded, and to retry storing rounds a failed write
    /// left pending). Default 5 seconds.
    pub refresh_ms: u64,
}

impl Default for LearningConfig {
    fn default() -> Self {
        let aggregate = AggregateConfig::default();
        LearningConfig {
            enabled: true,
            rounds: RoundsConfig::default(),
            interval_ms: 24 * HOUR_MS,
            pair_titles: 256,
            window: 5,
            k: aggregate.k(),
            z: aggregate.z(),
            max_titles: aggregate.max_titles,
            partners: aggregate.partners,
            page_titles: limits::MAX_FLEET_PAGE,
            refresh_ms: 5_000,
        }
    }
}

/// Why the configuration, a round or a message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearningError {
    /// k or z is not acceptable.
    #[error("aggregate: {0}")]
    Aggregate(#[from] AggregateError),
    /// The rounds' sizes are not acceptable, or the coordinator refused.
    #[error("round: {0}")]
    Round(#[from] RoundError),
    /// A size is out of its range.
    #[error("{field} = {value} is outside {range}")]
    Size {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The allowed range.
        range: &'static str,
    },
    /// The layout of a round could not be built.
    #[error("layout: {0}")]
    Layout(#[from] omega_privacy::LayoutError),
    /// The region is not served here.
    #[error("region {0} is not served by this node")]
    Region(Region),
    /// The catalog is empty: no round can open.
    #[error("the catalog is empty")]
    EmptyCatalog,
    /// The layout would make masked inputs larger than a request frame.
    #[error("a round over {items} titles and {pairs} pair titles does not fit a request frame")]
    TooLarge {
        /// Catalog titles.
        items: usize,
        /// Pair titles.
        pairs: usize,
    },
}

/// Largest cohort whose member list, with the largest attestations a
/// member may attach, fits an answer frame with room to spare.
pub const MAX_LISTED_COHORT: usize =
    (limits::MAX_RESPONSE_FRAME - 64 * 1024) / omega_privacy::secagg::MAX_LISTED_MEMBER_BYTES;
// The refusal below names the figure.
const _: () = assert!(MAX_LISTED_COHORT == 822);

/// Request bytes kept for everything but the masked input (ids, lengths).
const FRAME_SLACK: usize = 4096;

/// Largest layout dimension whose masked input (4 bytes an entry) fits a
/// request frame.
pub const MAX_ROUND_DIM: usize = (limits::MAX_REQUEST_FRAME - FRAME_SLACK) / 4;

impl LearningConfig {
    fn check(&self) -> Result<AggregateConfig, LearningError> {
        let size = |field, value: usize, lo: usize, hi: usize, range| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(LearningError::Size {
                    field,
                    value: value as u64,
                    range,
                })
            }
        };
        size(
            "partners",
            self.partners,
            0,
            limits::MAX_FLEET_PARTNERS,
            "0..=32",
        )?;
        size(
            "page_titles",
            self.page_titles,
            1,
            limits::MAX_FLEET_PAGE,
            "1..=200",
        )?;
        size("window", usize::from(self.window), 1, 8, "1..=8")?;
        // The member list (each member's signed keys and certificate) must
        // fit one answer frame.
        size(
            "rounds.cohort",
            usize::from(self.rounds.cohort),
            1,
            MAX_LISTED_COHORT,
            "1..=822 (the member list must fit an answer frame)",
        )?;
        // Every member of a round must be able to hear its outcome.
        size(
            "rounds.outcomes",
            self.rounds.outcomes,
            usize::from(self.rounds.cohort),
            usize::MAX,
            "at least rounds.cohort",
        )?;
        let mut aggregate = AggregateConfig::new(self.k, self.z)?;
        aggregate.max_titles = self.max_titles;
        aggregate.partners = self.partners;
        Ok(aggregate)
    }
}

/// One published version of a region's fleet knowledge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Publication {
    /// Version (0: nothing published yet).
    pub version: u64,
    /// Titles, largest total first, each with its partners.
    pub titles: Arc<Vec<FleetTitle>>,
}

/// A write of a region's learned totals to the store
/// ([`Learning::take_writes`]): hand it back with the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TotalsWrite {
    /// The region.
    pub region: Region,
    /// The rounds of the store's totals `totals` were computed from (`None`:
    /// none were stored): the write's condition.
    pub read: Option<u32>,
    /// The store's totals plus the rounds folded here since.
    pub totals: RegionTotals,
}

#[derive(Debug)]
struct RegionLearning {
    coordinator: Coordinator,
    /// The store's totals as last read or written: what is published.
    totals: RegionTotals,
    /// Their rounds as the store holds them (`None`: none stored).
    stored: Option<u32>,
    /// Rounds folded here that no write is carrying yet.
    pending: RegionTotals,
    /// Rounds folded here that a taken write carries.
    in_flight: Option<RegionTotals>,
    /// Whether `pending` should be written at the next take.
    write_due: bool,
    /// When the store's totals were last read for a refresh.
    checked_ms: Option<u64>,
    publication: Publication,
    /// The open round's slots (live titles in id order).
    slots: Vec<Option<ContentId>>,
    /// The catalog version of the open round's slots.
    catalog_version: u64,
    /// When the last round ended (`None`: none since the node started).
    ended_ms: Option<u64>,
}

/// What the node has learned, per region, and the rounds in progress.
pub struct Learning {
    config: LearningConfig,
    aggregate: AggregateConfig,
    regions: BTreeMap<Region, RegionLearning>,
    /// Checks the members' signed keys (the device CA).
    verifier: Arc<dyn Verifier>,
}

impl std::fmt::Debug for Learning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learning")
            .field("config", &self.config)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// The counters of one region, for the node's stats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionLearningStats {
    /// The region.
    pub region: Region,
    /// Round counters.
    pub rounds: RoundStats,
    /// The open round's phase, if any.
    pub phase: Option<String>,
    /// Published fleet version.
    pub fleet_version: u64,
    /// Published titles.
    pub published_titles: usize,
    /// Published (title, partner) links (each pair counted from both sides).
    pub published_partners: usize,
    /// Rounds folded into the totals (restarts included).
    pub rounds_folded: u32,
    /// Contributions folded into the totals.
    pub contributions: u64,
    /// The totals' noise scale.
    pub sigma: f64,
}

impl Learning {
    /// A learner for `regions`, starting from the totals stored earlier
    /// (the store's, as read now; regions not in `regions` are ignored);
    /// `verifier` checks the round members' signed keys (the device CA).
    pub fn new(
        config: LearningConfig,
        regions: &[Region],
        stored: Vec<(Region, RegionTotals)>,
        verifier: Arc<dyn Verifier>,
    ) -> Result<Self, LearningError> {
        let aggregate = config.check()?;
        let mut stored: BTreeMap<Region, RegionTotals> = stored.into_iter().collect();
        let mut out = BTreeMap::new();
        for region in regions {
            let totals = stored.remove(region);
            let mut r = RegionLearning {
                coordinator: Coordinator::new(config.rounds, aggregate)?,
                stored: totals.as_ref().map(|t| t.rounds),
                totals: totals.unwrap_or_default(),
                pending: RegionTotals::default(),
                in_flight: None,
                write_due: false,
                checked_ms: None,
                publication: Publication::default(),
                slots: Vec::new(),
                catalog_version: 0,
                ended_ms: None,
            };
            if r.totals.rounds > 0 {
                r.publish(&aggregate);
            }
            out.insert(region.clone(), r);
        }
        Ok(Learning {
            config,
            aggregate,
            regions: out,
            verifier,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LearningConfig {
        &self.config
    }

    /// Whether `region` is ready for a new round at `now_ms`: the shell then
    /// reads the catalog and calls [`Self::open`].
    pub fn wants_round(&self, region: &Region, now_ms: u64) -> bool {
        let Some(r) = self.regions.get(region) else {
            return false;
        };
        self.config.enabled
            && r.coordinator.phase().is_none()
            && r.ended_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= self.config.interval_ms)
    }

    /// Opens `region`'s next round over the live catalog titles `ids` of
    /// catalog version `catalog_version` (any order; duplicates ignored).
    pub fn open(
        &mut self,
        region: &Region,
        catalog_version: u64,
        ids: &[ContentId],
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Result<u64, LearningError> {
        let config = self.config;
        let r = self
            .regions
            .get_mut(region)
            .ok_or_else(|| LearningError::Region(region.clone()))?;
        let mut ids: Vec<ContentId> = ids.to_vec();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Err(LearningError::EmptyCatalog);
        }
        let index: BTreeMap<&ContentId, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id, i as u32))
            .collect();
        // Pair titles: the largest totals among live titles.
        let mut ranked: Vec<(&ContentId, f64)> = r
            .totals
            .titles
            .iter()
            .filter(|(id, v)| **v > 0.0 && index.contains_key(id))
            .map(|(id, v)| (id, *v))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut pairs = usize::from(config.pair_titles).min(ranked.len());
        while pairs > 0 && ids.len() + pairs * (pairs - 1) / 2 > MAX_ROUND_DIM {
            pairs -= 1;
        }
        if ids.len() > MAX_ROUND_DIM {
            return Err(LearningError::TooLarge {
                items: ids.len(),
                pairs,
            });
        }
        let pair_slots: Vec<u32> = ranked[..pairs].iter().map(|(id, _)| index[id]).collect();
        let items = u32::try_from(ids.len()).map_err(|_| LearningError::TooLarge {
            items: ids.len(),
            pairs,
        })?;
        // `pairs` <= pair_titles: u16.
        let layout = ContributionLayout::new(items, pairs as u16, config.window)?;
        let scale = round_scale(&layout, config.rounds.threshold);
        let session =
            r.coordinator
                .open(layout, pair_slots, catalog_version, scale, now_ms, rng)?;
        r.slots = ids.into_iter().map(Some).collect();
        r.catalog_version = catalog_version;
        Ok(session)
    }

    /// One device's sync in `region` at `now_ms`: ticks the region's round
    /// (folding a summed one), then hands the coordinator the device's
    /// message. Returns what the device needs next; a refused message is
    /// reported beside it and changes nothing. A device is invited only when
    /// it holds the open round's catalog version (`catalog_version`, from
    /// its request): one still paging the catalog would have to decline, and
    /// a member that never answers holds the phase until its deadline.
    pub fn on_sync(
        &mut self,
        region: &Region,
        device: &DeviceId,
        catalog_version: u64,
        msg: Option<TvToNode>,
        now_ms: u64,
    ) -> (Option<NodeToTv>, Option<LearningError>) {
        if !self.config.enabled {
            return (None, None);
        }
        let aggregate = self.aggregate;
        let Some(r) = self.regions.get_mut(region) else {
            return (None, Some(LearningError::Region(region.clone())));
        };
        r.tick(now_ms, &aggregate);
        let may_join = catalog_version == r.catalog_version;
        match r
            .coordinator
            .on_sync(device, msg, may_join, self.verifier.as_ref(), now_ms)
        {
            Ok(next) => {
                // An answer may close a phase; fold at once if it was the last.
                r.tick(now_ms, &aggregate);
                (next, None)
            }
            Err(e) => (None, Some(e.into())),
        }
    }

    /// Ticks every region (for a timer: rounds also advance on syncs).
    pub fn tick(&mut self, now_ms: u64) {
        let aggregate = self.aggregate;
        for r in self.regions.values_mut() {
            r.tick(now_ms, &aggregate);
        }
    }

    /// The page of `region`'s fleet knowledge a device at `cursor` needs,
    /// or `None` when it is caught up (or nothing is published).
    pub fn fleet_page(&self, region: &Region, cursor: FleetCursor) -> Option<FleetPage> {
        let p = &self.regions.get(region)?.publication;
        if p.version == 0 {
            return None;
        }
        let offset = if cursor.version == p.version {
            cursor.offset as usize
        } else {
            0
        };
        if cursor.version == p.version && offset >= p.titles.len() {
            return None;
        }
        let end = (offset + self.config.page_titles).min(p.titles.len());
        Some(FleetPage {
            version: p.version,
            offset: offset as u32,
            total_titles: p.titles.len() as u32,
            titles: p.titles.get(offset..end).unwrap_or_default().to_vec(),
        })
    }

    /// `region`'s current publication.
    pub fn publication(&self, region: &Region) -> Option<&Publication> {
        self.regions.get(region).map(|r| &r.publication)
    }

    /// `region`'s published totals (the store's, as last read or written).
    pub fn totals(&self, region: &Region) -> Option<&RegionTotals> {
        self.regions.get(region).map(|r| &r.totals)
    }

    /// Replaces `region`'s published totals and publishes them as a new
    /// fleet version (the simulator's exact-totals ablation). The store is
    /// not written: the next fold's write adds to these. An unknown region
    /// is ignored.
    pub fn replace_totals(&mut self, region: &Region, totals: RegionTotals) {
        let aggregate = self.aggregate;
        if let Some(r) = self.regions.get_mut(region) {
            r.totals = totals;
            r.publish(&aggregate);
        }
    }

    /// The writes of folded rounds due now, at most one per region at a
    /// time: each is the store's totals as last read plus the rounds folded
    /// here since. Hand each back to [`Self::written`], [`Self::conflict`]
    /// or [`Self::unwritten`].
    pub fn take_writes(&mut self) -> Vec<TotalsWrite> {
        let aggregate = self.aggregate;
        let mut out = Vec::new();
        for (region, r) in &mut self.regions {
            if !r.write_due || r.in_flight.is_some() || r.pending.rounds == 0 {
                continue;
            }
            r.write_due = false;
            let carried = std::mem::take(&mut r.pending);
            let mut totals = r.totals.clone();
            totals.merge(&carried, &aggregate);
            r.in_flight = Some(carried);
            out.push(TotalsWrite {
                region: region.clone(),
                read: r.stored,
                totals,
            });
        }
        out
    }

    /// The store took `write`: its totals are published (unless newer ones
    /// were read meanwhile).
    pub fn written(&mut self, write: TotalsWrite) {
        let aggregate = self.aggregate;
        if let Some(r) = self.regions.get_mut(&write.region) {
            r.in_flight = None;
            r.adopt(write.totals, false, &aggregate);
        }
    }

    /// The store refused `write` because its totals changed since they were
    /// read; `current` is what it holds now. They are published, and the
    /// write's rounds are added to them at the next [`Self::take_writes`].
    pub fn conflict(&mut self, write: &TotalsWrite, current: Option<RegionTotals>) {
        let aggregate = self.aggregate;
        if let Some(r) = self.regions.get_mut(&write.region) {
            r.requeue(&aggregate);
            r.write_due = true;
            match current {
                Some(t) => r.adopt(t, true, &aggregate),
                None => {
                    r.stored = None;
                    r.totals = RegionTotals::default();
                    r.publish(&aggregate);
                }
            }
        }
    }

    /// Writing `write` failed (not a conflict): its rounds stay pending and
    /// are written again at the next refresh ([`Self::refresh_due`]).
    pub fn unwritten(&mut self, write: &TotalsWrite) {
        let aggregate = self.aggregate;
        if let Some(r) = self.regions.get_mut(&write.region) {
            r.requeue(&aggregate);
        }
    }

    /// Whether the shell should read `region`'s stored totals now (at most
    /// once per [`LearningConfig::refresh_ms`]; a `true` counts as the read).
    /// Rounds a failed write left pending become due for writing again.
    pub fn refresh_due(&mut self, region: &Region, now_ms: u64) -> bool {
        let every = self.config.refresh_ms;
        let Some(r) = self.regions.get_mut(region) else {
            return false;
        };
        if r.checked_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < every)
        {
            return false;
        }
        r.checked_ms = Some(now_ms);
        if r.pending.rounds > 0 {
            r.write_due = true;
        }
        true
    }

    /// Whether the store's totals of `region`, holding `rounds` rounds
    /// (`None`: none), are newer than those published here: then the shell
    /// reads them for [`Self::stored_totals`].
    pub fn is_newer(&self, region: &Region, rounds: Option<u32>) -> bool {
        self.regions
            .get(region)
            .is_some_and(|r| match (rounds, r.stored) {
                (Some(new), Some(old)) => new > old,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }

    /// The store's totals of `region` as just read: newer ones than those
    /// published here (more rounds: another node folded) are published.
    pub fn stored_totals(&mut self, region: &Region, totals: Option<RegionTotals>) {
        let aggregate = self.aggregate;
        if let (Some(r), Some(t)) = (self.regions.get_mut(region), totals) {
            r.adopt(t, false, &aggregate);
        }
    }

    /// Counters per region.
    pub fn stats(&self) -> Vec<RegionLearningStats> {
        self.regions
            .iter()
            .map(|(region, r)| RegionLearningStats {
                region: region.clone(),
                rounds: r.coordinator.stats(),
                phase: r.coordinator.phase().map(|(_, p)| format!("{p:?}")),
                fleet_version: r.publication.version,
                published_titles: r.publication.titles.len(),
                published_partners: r.publication.titles.iter().map(|t| t.partners.len()).sum(),
                rounds_folded: r.totals.rounds,
                contributions: r.totals.contributors,
                sigma: r.totals.sigma(),
            })
            .collect()
    }
}

/// σ_total a TV at the default budget adds (over any t members) for
/// `layout`, in title units.
fn default_sigma_total(layout: &ContributionLayout) -> f64 {
    Budget::default()
        .rho_limit()
        .ok()
        .and_then(|rho| GaussianRelease::for_rho(rho, layout.l2_sensitivity()).ok())
        .map_or(0.0, |g| g.sigma())
}

/// σ of one round's sum in title units: each of the n survivors adds
/// σ_total/√t.
pub fn round_sigma(layout: &ContributionLayout, threshold: u16, survivors: usize) -> f64 {
    default_sigma_total(layout) * (survivors as f64 / f64::from(threshold.max(1))).sqrt()
}

/// Each member's noise share, in the round's units, that [`round_scale`]
/// aims at: twice the TVs' default least share (1.0), so that a TV with a
/// somewhat smaller budget still takes part.
pub const TARGET_SHARE_SIGMA: f64 = 2.0;

/// The round's scale (omega-privacy's `RoundSpec::scale`): the least
/// integer that lifts a default TV's noise share σ_total/√t to
/// [`TARGET_SHARE_SIGMA`] units.
pub fn round_scale(layout: &ContributionLayout, threshold: u16) -> u32 {
    let share = default_sigma_total(layout) / f64::from(threshold.max(1)).sqrt();
    if share <= 0.0 {
        return 1;
    }
    let scale = (TARGET_SHARE_SIGMA / share).ceil();
    // Bounded by the TV's MAX_SCALE; a share that small means a broken budget.
    (scale as u32).clamp(1, omega_privacy::round::MAX_SCALE)
}

impl RegionLearning {
    fn tick(&mut self, now_ms: u64, aggregate: &AggregateConfig) {
        match self.coordinator.tick(now_ms) {
            Tick::Idle | Tick::Opened(_) => {}
            Tick::Failed { session, error } => {
                tracing::info!(session, %error, "aggregation round failed");
                self.ended_ms = Some(now_ms);
            }
            Tick::Summed => {
                let Some((layout, threshold, survivors)) = self.coordinator.summed() else {
                    return;
                };
                let sigma = round_sigma(&layout, threshold, survivors);
                let mut round = RegionTotals::default();
                match self
                    .coordinator
                    .finish(&mut round, &self.slots, sigma, now_ms)
                {
                    Ok(Folded {
                        session,
                        contributors,
                        sigma,
                    }) => {
                        tracing::info!(session, contributors, sigma, "aggregation round folded");
                        self.pending.merge(&round, aggregate);
                        self.write_due = true;
                    }
                    Err(error) => tracing::info!(%error, "aggregation round not folded"),
                }
                self.ended_ms = Some(now_ms);
                self.slots.clear();
            }
        }
    }

    /// Takes `totals` as the store's and publishes them if they are newer
    /// than the published ones, or in any case with `always`.
    fn adopt(&mut self, totals: RegionTotals, always: bool, aggregate: &AggregateConfig) {
        let newer = self.stored.is_none_or(|r| totals.rounds > r);
        if !(newer || always) {
            return;
        }
        self.stored = Some(totals.rounds);
        if totals != self.totals {
            self.totals = totals;
            self.publish(aggregate);
        }
    }

    /// A write's rounds back to pending, before any folded since.
    fn requeue(&mut self, aggregate: &AggregateConfig) {
        if let Some(mut carried) = self.in_flight.take() {
            carried.merge(&self.pending, aggregate);
            self.pending = carried;
        }
    }

    fn publish(&mut self, aggregate: &AggregateConfig) {
        let published = self.totals.publish(aggregate);
        let mut partners = published.partners;
        let titles: Vec<FleetTitle> = published
            .titles
            .into_iter()
            .map(|(id, total)| FleetTitle {
                partners: partners.remove(&id).unwrap_or_default(),
                id,
                total,
            })
            .collect();
        // The rounds folded name the version: it only grows, and survives
        // a restart with the stored totals.
        self.publication = Publication {
            version: u64::from(self.totals.rounds),
            titles: Arc::new(titles),
        };
    }
}

#[cfg(test)]
mod tests;
