//! `federated`: every user as a TV that learns from the fleet through the
//! real constellation code, in simulated time, in process.
//!
//! * **TVs**: one omega-brain [`BrainStore`] per user (redb on an in-memory
//!   backend, as `local`), region `eu-west`, the daemon's default
//!   recommender and privacy budget. A TV is switched on 30 minutes before
//!   its user's first training interaction and takes the catalog from the
//!   node then (pages back to back, as the sync actor pages); it observes
//!   the training interactions at their timestamps; at the test
//!   interaction's timestamp it answers `recommend` (LOO-full, or LOO-100
//!   through `recommend_among`, as `local`) with what it knows then; it is
//!   switched off one round interval plus a day after that, so that the
//!   first round opening after its last watch can still include it. The
//!   test interaction is never observed.
//! * **Node**: omega-constellation's [`sync::run`](node_sync::run) (the
//!   shell the shard actor calls) over a [`MemoryStore`] holding the same
//!   catalog, a [`SyncCore`] (no rate limit; the node's default
//!   `next_sync_secs` of 5–15 minutes, which the TVs follow) and the
//!   [`Learning`] with [`FederatedOptions`]' round sizes.
//! * **The wire**: every request is encoded by the TV
//!   ([`codec::encode_request`]), decoded by the node
//!   ([`codec::decode_packed_request`]); every answer is encoded by the node
//!   ([`codec::encode_packed_response`]) and decoded by the TV
//!   ([`codec::decode_response`]); the frame bytes are counted per device.
//! * **Parallelism**: syncs due within one simulated minute form a batch;
//!   the TVs prepare their requests in parallel (a TV's request depends only
//!   on its own state: this is where the noise and the masking cost is),
//!   the node answers them one at a time in time order, then the TVs apply
//!   their answers in parallel. Each TV is at most once in a batch, so the
//!   outcome is the one of a sequential run.
//!
//! # Elided syncs
//!
//! A sync is skipped (and the TV's next 5–15 minute slot drawn from its own
//! seeded generator until the next round is due) when all of these hold:
//! the TV has no round message to answer and is not in a round (it holds
//! no node message and awaits no outcome), no round is open in the region
//! and none is due ([`Learning::wants_round`] is false), the TV's fleet
//! cursor is at the node's published version and end, and its catalog
//! version is the node's. Such a sync carries no round message, and its
//! answer would carry no catalog page, no fleet page, no round message and
//! no global patterns (TVs upload none); the TV would apply nothing. On the
//! node it would only refresh the device record's `last_sync_ms`, which
//! nothing in the sync or learning path reads. Only a sync can open a round
//! or advance one, and the region's state changes only while a round is
//! due or open, when nothing is elided; so the run is the one with every
//! sync made. Elided syncs are counted, not sent: the bytes per device are
//! those of the syncs made.
//!
//! # The attack
//!
//! A node-side attacker reads every request frame each TV sent, as it is
//! sent (the node's codec), and keeps what its attacks need; it also has
//! everything the node has: the catalog, each folded round's sum (the
//! totals before and after the fold) and the published fleet pages. Per
//! TV it names 10 titles with each attack ([`Attack`]); the report's
//! `attack_hit_rate` is the best attack's mean share of the 10 that the
//! user watched in training, and `prior_hit_rate` the same for the 10
//! titles most watched in training by all users.
//!
//! Noise is drawn by OpenDP from the operating system's generator (never a
//! seed), so two runs differ in the noise; everything else (schedules,
//! keys) follows `--seed`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use omega_brain::{BrainStore, RoundCredentials};
use omega_brain_core::{Reason, RecommenderConfig, UploadKind};
use omega_certs::{CaKind, CertificateAuthority, Validity};
use omega_constellation::store::{MemoryStore, PatternStore};
use omega_constellation::sync::{
    self as node_sync, Learning, LearningConfig, SyncConfig, SyncCore,
};
use omega_constellation_core::aggregate::{AggregateConfig, RegionTotals, RoundSum};
use omega_constellation_core::rounds::{RoundStats, RoundsConfig};
use omega_privacy::secagg::{from_ring, ToServer, Verifier};
use omega_privacy::Budget;
use omega_protocol::codec;
use omega_protocol::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use omega_protocol::{
    CatalogEntry, ContentId, DeviceId, NodeToTv, Region, SyncRequest, SUCCESS_THRESHOLD,
};
use omega_transport::attest::{DeviceAttestor, DeviceVerifier};
use omega_transport::quic::TrustAnchor;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use super::local::{event, watch_fraction, SharedCatalog};
use super::{loo100_candidates, Candidates, Method, Protocol, Ranked, Split, K};

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
/// How long before its first watch a TV is switched on.
const SETUP_MS: u64 = 30 * MINUTE_MS;
/// Syncs due within this span form one batch.
const BATCH_MS: u64 = MINUTE_MS;
/// The next sync after an answer that said more pages follow.
const PAGING_MS: u64 = 1_000;
/// A TV's sync interval when it draws its own (elided syncs), as the
/// node's default `next_sync_secs`.
const SYNC_SECS: (u64, u64) = (300, 900);
/// Distinct decline reasons kept for the report.
const MAX_REASONS: usize = 16;
/// The region of every simulated TV.
pub const REGION: &str = "eu-west";

/// Round sizing of the simulated node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FederatedOptions {
    /// Days from the end of a round to the opening of the next.
    pub round_interval_days: f64,
    /// Most TVs in a round (n, at most 822).
    pub cohort: u16,
    /// Answers every phase needs (t, more than n/2).
    pub threshold: u16,
    /// Seed of the schedules and the TVs' key generators.
    pub seed: u64,
    /// Keep every request frame, and the size of every answer frame that
    /// carries no catalog page, of the first this many users' TVs (tests,
    /// `bench sync`).
    pub keep_frames: usize,
    /// Ablation, to measure what the privacy mechanisms cost: after each
    /// folded round the node's totals are replaced by the exact counts over
    /// every TV's successful watches so far (no noise, every TV, nothing
    /// hidden), which the same TVs then rank with.
    pub exact_fleet: bool,
}

impl Default for FederatedOptions {
    /// A round every 14 days over cohorts of up to 200 TVs, 105 needed.
    /// Why: every folded round adds the same noise to the totals whatever
    /// its size, so a round should sum as many TVs as are online (here a
    /// few hundred of ml-100k's 943 at a time), and rounds should be few;
    /// t just over n/2 keeps the sum's noise at σ·√(n/t) ≈ 1.4σ while half
    /// the cohort may drop out. Measured on ml-100k LOO-full (one run each,
    /// n/t/days → HR@10): 51/26/7 → 0.046, 150/80/14 → 0.074,
    /// 150/80/21 → 0.070, 200/105/14 → 0.079, 300/160/7 → 0.067,
    /// 1000/600/30 → no round reached its threshold. A different fleet
    /// size or timeline wants other sizes: they are flags.
    fn default() -> Self {
        FederatedOptions {
            round_interval_days: 14.0,
            cohort: 200,
            threshold: 105,
            seed: 42,
            keep_frames: 0,
            exact_fleet: false,
        }
    }
}

/// Bytes on the wire, frames with their headers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BytesReport {
    /// Mean over TVs of the request bytes a TV sent.
    pub up_per_device: f64,
    /// Mean over TVs of the answer bytes a TV received.
    pub down_per_device: f64,
    /// Mean over TVs of the syncs made.
    pub syncs_per_device: f64,
    /// Syncs elided over the run (see the module docs).
    pub syncs_elided: u64,
}

/// The privacy figures of EVALUATION.md, plus the TV's local ε.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PrivacyReport {
    /// ε one device can spend per 24 hours at the default budget (central:
    /// with at least t honest members in a round).
    pub epsilon_per_day: f64,
    /// δ alongside.
    pub delta: f64,
    /// ε of one release protected by the TV's own noise share alone (the
    /// node and every other member colluding).
    pub epsilon_local: Option<f64>,
    /// The best attack's hit rate.
    pub attack_hit_rate: f64,
    /// The hit rate of the 10 titles most watched in training.
    pub prior_hit_rate: f64,
    /// attack / prior.
    pub attack_ratio: f64,
    /// The attack that won.
    pub attack: &'static str,
    /// Every attack's hit rate.
    pub attacks: BTreeMap<&'static str, f64>,
}

/// What the rounds did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundsReport {
    /// Days between rounds.
    pub interval_days: f64,
    /// n.
    pub cohort: u16,
    /// t.
    pub threshold: u16,
    /// Rounds opened.
    pub opened: u64,
    /// Rounds folded into the totals.
    pub folded: u64,
    /// Rounds that failed at a phase close.
    pub failed: u64,
    /// Rounds summed but not folded.
    pub not_folded: u64,
    /// Contributions folded.
    pub contributions: u64,
    /// Titles published at the end.
    pub published_titles: usize,
    /// (Title, partner) links published at the end, each pair counted
    /// from both sides.
    pub published_partners: usize,
    /// The noise scale of the totals at the end, in title units.
    pub sigma: f64,
    /// Users whose recommendations were made with fleet knowledge.
    pub users_with_fleet: usize,
    /// Recommended slots whose reason is the fleet's ("watched together"
    /// or "popular in your region").
    pub fleet_reasons: usize,
    /// Rounds the TVs declined (budget, layout, catalog version).
    pub declined: u64,
    /// Declines by reason (digits left out; at most 16 reasons).
    pub declined_reasons: BTreeMap<String, u64>,
    /// Sync answers that were errors.
    pub sync_errors: u64,
    /// Wall time of the simulation, seconds.
    pub seconds: f64,
}

/// Everything a federated run reports beside HR and NDCG.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetReport {
    /// Bytes per device.
    pub bytes: BytesReport,
    /// Privacy figures.
    pub privacy: PrivacyReport,
    /// The rounds.
    pub rounds: RoundsReport,
}

/// The attacks tried, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// The titles with the largest values in the TV's masked inputs read as
    /// if unmasked (mod 2³² as signed, summed over its inputs).
    MaskedAsPlain,
    /// The titles whose masked values grew most between the TV's
    /// consecutive masked inputs.
    MaskedDifferences,
    /// The region's published popularity (the same 10 for every TV).
    PublishedPopularity,
    /// The titles most watched in the rounds the TV sent a masked input
    /// in (each folded round's sum per contributor, summed over them), the
    /// published popularity breaking ties and standing in when it took
    /// part in none.
    RoundsJoined,
}

impl Attack {
    const ALL: [Attack; 4] = [
        Attack::MaskedAsPlain,
        Attack::MaskedDifferences,
        Attack::PublishedPopularity,
        Attack::RoundsJoined,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Attack::MaskedAsPlain => "masked_as_plain",
            Attack::MaskedDifferences => "masked_differences",
            Attack::PublishedPopularity => "published_popularity",
            Attack::RoundsJoined => "rounds_joined",
        }
    }
}

/// What the attacker keeps of one TV's frames.
#[derive(Debug, Clone, Default)]
struct Spy {
    /// Per catalog slot: the masked values read as signed, summed.
    plain: Vec<f64>,
    /// Per catalog slot: differences of consecutive masked values, summed.
    diffs: Vec<f64>,
    /// The catalog section of the last masked input.
    last: Option<Vec<u32>>,
    /// Sessions the TV sent a masked input in.
    sessions: Vec<u64>,
}

impl Spy {
    /// Reads one request frame as the node receives it.
    fn read(&mut self, frame: &[u8], slots: usize) -> Result<()> {
        let (body, rest) = codec::unframe(frame, MAX_REQUEST_FRAME)?;
        if !rest.is_empty() {
            bail!("bytes after a request frame");
        }
        let req: SyncRequest = codec::decode_request(body)?;
        let Some(round) = req.round else {
            return Ok(());
        };
        let ToServer::MaskedInput(m) = round.msg else {
            return Ok(());
        };
        let items: Vec<u32> = m.masked.iter().take(slots).copied().collect();
        let signed = from_ring(&items);
        self.plain.resize(slots, 0.0);
        self.diffs.resize(slots, 0.0);
        for (p, v) in self.plain.iter_mut().zip(&signed) {
            *p += *v as f64;
        }
        if let Some(prev) = &self.last {
            let d: Vec<u32> = items
                .iter()
                .zip(prev)
                .map(|(a, b)| a.wrapping_sub(*b))
                .collect();
            for (p, v) in self.diffs.iter_mut().zip(from_ring(&d)) {
                *p += v as f64;
            }
        }
        self.last = Some(items);
        self.sessions.push(round.session);
        Ok(())
    }
}

/// A folded round as the node saw it.
#[derive(Debug, Clone)]
struct FoldedRound {
    session: Option<u64>,
    /// Per title: its noisy sum in this round.
    titles: BTreeMap<ContentId, f64>,
    contributors: u64,
}

/// One simulated TV.
struct Tv {
    user: usize,
    device: DeviceId,
    /// Its device certificate's key and the device CA.
    credentials: RoundCredentials,
    store: BrainStore,
    keys: StdRng,
    jitter: StdRng,
    next_watch: usize,
    /// The session of the round it takes part in, until told its outcome.
    engaged: Option<u64>,
    /// It holds a node message to answer.
    inbox: bool,
    up: u64,
    down: u64,
    syncs: u64,
    frames: Option<Vec<Vec<u8>>>,
    answers: Option<Vec<usize>>,
    spy: Spy,
}

/// What is kept of a TV once it is switched off.
#[derive(Debug, Clone, Default)]
struct TvSummary {
    up: u64,
    down: u64,
    syncs: u64,
    spy: Spy,
    frames: Vec<Vec<u8>>,
    answers: Vec<usize>,
}

/// The simulated node.
struct Node {
    core: SyncCore,
    store: MemoryStore,
    learning: Mutex<Learning>,
    rng: StdRng,
    catalog_version: u64,
    region: Region,
    /// Rounds ended and folded so far.
    progress: RoundProgress,
    interval_ms: u64,
    /// The round last seen inviting.
    session: Option<u64>,
    rounds: Vec<FoldedRound>,
    last_titles: BTreeMap<ContentId, f64>,
    last_contributors: u64,
}

/// A simulation's device CA: it issues a simulated TV's certificate when
/// the TV first needs round credentials, and one verifier (which remembers
/// each attestation it accepted) checks every round member. `eval` and
/// `fleet` both use it.
pub(crate) struct SimDevices {
    ca: CertificateAuthority,
    /// Checks round members' signed keys for every TV.
    pub(crate) verifier: Arc<dyn Verifier>,
}

impl SimDevices {
    /// A fresh device CA and its verifier.
    pub(crate) fn new() -> Result<Self> {
        let ca = CertificateAuthority::generate(CaKind::Device)?;
        let verifier: Arc<dyn Verifier> =
            DeviceVerifier::new(&TrustAnchor::from_pem(ca.cert_pem().as_bytes(), &[])?)?;
        Ok(Self { ca, verifier })
    }

    /// Round credentials of `device`, with a certificate issued for it now.
    pub(crate) fn credentials(&self, device: &DeviceId) -> Result<RoundCredentials> {
        let cert = self
            .ca
            .issue_device(device.as_str(), Validity::days_from_now(30))?;
        Ok(RoundCredentials {
            attestor: Arc::new(DeviceAttestor::from_pem(
                cert.cert_pem.as_bytes(),
                cert.key_pem.as_bytes(),
            )?),
            verifier: Arc::clone(&self.verifier),
        })
    }
}

/// A region's rounds as a simulation sees them after each node call: how
/// many have ended (failed, folded or not) and been folded, and when the
/// last one ended (the next is due a round interval later). `eval` and
/// `fleet` both track their node with it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RoundProgress {
    ends: u64,
    /// Rounds folded.
    pub(crate) folded: u64,
    /// When the last round ended.
    pub(crate) ended_ms: Option<u64>,
}

impl RoundProgress {
    /// Notes the region's counters at `now_ms`; true when a round was
    /// folded since the last call.
    pub(crate) fn note(&mut self, rounds: &RoundStats, now_ms: u64) -> bool {
        let ends = rounds.failed + rounds.folded + rounds.not_folded;
        if ends > self.ends {
            self.ends = ends;
            self.ended_ms = Some(now_ms);
        }
        let folded = rounds.folded > self.folded;
        self.folded = self.folded.max(rounds.folded);
        folded
    }
}

impl Node {
    fn round_open(&self) -> bool {
        self.learning
            .lock()
            .stats()
            .first()
            .is_some_and(|s| s.phase.is_some())
    }

    /// Notes what a sync at `now_ms` changed: a round's end, a fold.
    fn observe(&mut self, now_ms: u64) {
        let l = self.learning.lock();
        let Some(s) = l.stats().into_iter().next() else {
            return;
        };
        if self.progress.note(&s.rounds, now_ms) {
            if let Some(t) = l.totals(&self.region) {
                let titles = t
                    .titles
                    .iter()
                    .map(|(id, v)| {
                        let before = self.last_titles.get(id).copied().unwrap_or(0.0);
                        (id.clone(), v - before)
                    })
                    .collect();
                self.rounds.push(FoldedRound {
                    session: self.session,
                    titles,
                    contributors: t.contributors.saturating_sub(self.last_contributors),
                });
                self.last_titles = t.titles.clone();
                self.last_contributors = t.contributors;
            }
        }
    }

    /// When the next round is due (`None`: at the next sync).
    fn due_ms(&self) -> Option<u64> {
        self.progress.ended_ms.map(|t| t + self.interval_ms)
    }

    /// Answers one request frame at `now_ms`.
    fn answer(&mut self, device: &DeviceId, frame: &[u8], now_ms: u64) -> Result<Vec<u8>> {
        let (body, _) = codec::unframe(frame, MAX_REQUEST_FRAME)?;
        let req = codec::decode_packed_request(body)?;
        let (resp, _) = node_sync::run(
            &mut self.core,
            &self.store,
            Some(&self.learning),
            device,
            req,
            now_ms,
            &mut self.rng,
        );
        if let Ok(a) = &resp {
            if let Some(NodeToTv::Invite { spec, .. }) = &a.round {
                self.session = Some(spec.session.session);
            }
        }
        let out = codec::encode_packed_response(&resp)?;
        self.observe(now_ms);
        Ok(out)
    }
}

/// The `federated` method. See the module docs.
pub struct Federated {
    model_dir: PathBuf,
    cache_dir: PathBuf,
    protocol: Protocol,
    opts: FederatedOptions,
    recommender: RecommenderConfig,
    run: Option<FleetRun>,
}

impl std::fmt::Debug for Federated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federated")
            .field("protocol", &self.protocol)
            .field("opts", &self.opts)
            .field("trained", &self.run.is_some())
            .finish()
    }
}

/// A finished run: every user's recommendations and the report.
#[derive(Debug, Clone)]
pub struct FleetRun {
    /// Per user (split order): the TV's top 10 at the test interaction.
    pub ranked: Vec<Vec<Ranked>>,
    /// Per user: the reasons of those recommendations.
    pub reasons: Vec<Vec<Reason>>,
    /// The figures beside HR and NDCG.
    pub report: FleetReport,
    /// Per kept user (the first `keep_frames`): every request frame its TV
    /// sent, in order.
    pub frames: Vec<Vec<Vec<u8>>>,
    /// Per kept user: the size of every answer frame its TV received that
    /// carried no catalog page (errors included), in order.
    pub answers: Vec<Vec<usize>>,
}

impl Federated {
    /// A method embedding the catalog with the model in `model_dir` (cached
    /// under `cache_dir`), ranking for `protocol`.
    pub fn new(
        model_dir: PathBuf,
        cache_dir: PathBuf,
        protocol: Protocol,
        opts: FederatedOptions,
    ) -> Self {
        Self {
            model_dir,
            cache_dir,
            protocol,
            opts,
            recommender: RecommenderConfig::default(),
            run: None,
        }
    }

    /// The finished run.
    pub fn result(&self) -> Option<&FleetRun> {
        self.run.as_ref()
    }
}

impl Method for Federated {
    fn name(&self) -> &'static str {
        "federated"
    }

    fn train(&mut self, split: &Split, progress: &ProgressBar) -> Result<()> {
        let mut catalog = SharedCatalog::build(split, &self.model_dir, &self.cache_dir, progress)?;
        let loo100 = match self.protocol {
            Protocol::Loo100 => Some(loo100_candidates(split)),
            Protocol::LooFull => None,
        };
        let sim = Sim::new(split, &mut catalog, self.opts, &self.recommender, loo100)?;
        self.run = Some(sim.run(progress)?);
        Ok(())
    }

    fn top_k(
        &self,
        _split: &Split,
        user: usize,
        candidates: Candidates<'_>,
        k: usize,
    ) -> Result<Vec<Ranked>> {
        let Some(run) = &self.run else {
            bail!("federated was not trained");
        };
        let want = match self.protocol {
            Protocol::LooFull => matches!(candidates, Candidates::Unseen),
            Protocol::Loo100 => matches!(candidates, Candidates::Only(_)),
        };
        if !want || k > K {
            bail!("federated ranked for {:?} with k = {K} only", self.protocol);
        }
        let mut out = run.ranked.get(user).cloned().unwrap_or_default();
        out.truncate(k);
        Ok(out)
    }

    fn fleet(&self) -> Option<&FleetReport> {
        self.run.as_ref().map(|r| &r.report)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    On,
    Watch,
    Sync,
    Test,
    Off,
}

/// The simulation.
struct Sim<'a> {
    split: &'a Split,
    catalog: &'a mut SharedCatalog,
    opts: FederatedOptions,
    recommender: &'a RecommenderConfig,
    loo100: Option<Vec<Vec<u32>>>,
    node: Node,
    tvs: Vec<Option<Tv>>,
    done: Vec<TvSummary>,
    queue: BinaryHeap<Reverse<(u64, Ev, usize)>>,
    indexed: bool,
    ranked: Vec<Vec<Ranked>>,
    reasons: Vec<Vec<Reason>>,
    elided: u64,
    declined: u64,
    declined_reasons: BTreeMap<String, u64>,
    sync_errors: u64,
    epsilon_local: Option<f64>,
    /// Catalog slot → data-set item.
    slot_items: Vec<u32>,
    /// Each TV's device certificate and the shared round verifier.
    pki: SimDevices,
}

impl<'a> Sim<'a> {
    fn new(
        split: &'a Split,
        catalog: &'a mut SharedCatalog,
        opts: FederatedOptions,
        recommender: &'a RecommenderConfig,
        loo100: Option<Vec<Vec<u32>>>,
    ) -> Result<Self> {
        let region = Region::new(REGION)?;
        let store = MemoryStore::new();
        let packed: Vec<_> = catalog
            .entries
            .iter()
            .map(|e| CatalogEntry {
                item: e.item.clone(),
                embedding: e.embedding.to_i8(),
            })
            .collect();
        let catalog_version = store.upsert_catalog(&packed)?;
        let core = SyncCore::new(SyncConfig {
            allowed_regions: [region.clone()].into(),
            min_sync_interval_secs: 0,
            ..SyncConfig::default()
        })?;
        let interval_ms = (opts.round_interval_days * DAY_MS as f64) as u64;
        let pki = SimDevices::new()?;
        let learning = Learning::new(
            LearningConfig {
                rounds: RoundsConfig {
                    cohort: opts.cohort,
                    threshold: opts.threshold,
                    // Every member of a round must hear its outcome.
                    outcomes: usize::from(opts.cohort) * 2,
                    ..RoundsConfig::default()
                },
                interval_ms,
                ..LearningConfig::default()
            },
            std::slice::from_ref(&region),
            Vec::new(),
            Arc::clone(&pki.verifier),
        )?;
        let mut ids: Vec<&ContentId> = catalog.entries.iter().map(|e| &e.item.id).collect();
        ids.sort();
        let slot_items = ids
            .into_iter()
            .map(|id| catalog.item_of(id).context("catalog id without an item"))
            .collect::<Result<_>>()?;
        let n = split.users.len();
        let mut queue = BinaryHeap::new();
        for (u, user) in split.users.iter().enumerate() {
            let first = user.train.first().context("a user without training")?;
            let on = (first.timestamp * 1000).saturating_sub(SETUP_MS);
            queue.push(Reverse((on, Ev::On, u)));
        }
        Ok(Sim {
            split,
            catalog,
            opts,
            recommender,
            loo100,
            node: Node {
                core,
                store,
                learning: Mutex::new(learning),
                rng: StdRng::seed_from_u64(opts.seed ^ 0x6e6f6465),
                catalog_version,
                region,
                progress: RoundProgress::default(),
                interval_ms,
                session: None,
                rounds: Vec::new(),
                last_titles: BTreeMap::new(),
                last_contributors: 0,
            },
            tvs: (0..n).map(|_| None).collect(),
            done: vec![TvSummary::default(); n],
            queue,
            indexed: false,
            ranked: vec![Vec::new(); n],
            reasons: vec![Vec::new(); n],
            elided: 0,
            declined: 0,
            declined_reasons: BTreeMap::new(),
            epsilon_local: None,
            sync_errors: 0,
            slot_items,
            pki,
        })
    }

    fn run(mut self, progress: &ProgressBar) -> Result<FleetRun> {
        let start = std::time::Instant::now();
        let first = self.queue.peek().map_or(0, |Reverse((t, _, _))| *t);
        let last = self
            .split
            .users
            .iter()
            .map(|u| u.test.timestamp * 1000)
            .max();
        let grace = self.node.interval_ms + DAY_MS;
        progress.set_length(last.map_or(0, |l| (l + grace).saturating_sub(first) / DAY_MS + 1));
        progress.set_message("federated: simulated days");
        while let Some(Reverse((t, ev, u))) = self.queue.pop() {
            progress.set_position(t.saturating_sub(first) / DAY_MS);
            match ev {
                Ev::On => self.switch_on(u, t)?,
                Ev::Watch => self.watch(u)?,
                Ev::Test => self.test(u)?,
                Ev::Off => self.switch_off(u, t)?,
                Ev::Sync => {
                    let mut batch = Vec::new();
                    self.offer(u, t, &mut batch);
                    while let Some(&Reverse((t2, Ev::Sync, u2))) = self.queue.peek() {
                        if t2 >= t + BATCH_MS || batch.iter().any(|&(_, b)| b == u2) {
                            break;
                        }
                        self.queue.pop();
                        self.offer(u2, t2, &mut batch);
                    }
                    if !batch.is_empty() {
                        self.sync_batch(batch)?;
                    }
                }
            }
        }
        progress.finish_and_clear();
        let report = self.report(start)?;
        let kept = 0..self.opts.keep_frames.min(self.done.len());
        let frames = kept.clone().map(|u| self.done[u].frames.clone()).collect();
        let answers = kept.map(|u| self.done[u].answers.clone()).collect();
        Ok(FleetRun {
            ranked: self.ranked,
            reasons: self.reasons,
            report,
            frames,
            answers,
        })
    }

    /// The exact-fleet ablation's totals at `now_ms`: every user's
    /// successful training watches so far, encoded as the TVs encode a
    /// release (`ContributionLayout::build`: each title once, pairs of the
    /// most watched titles within the window) and folded as a round without
    /// noise (`RegionTotals::fold`).
    fn exact_totals(&self, now_ms: u64) -> Result<RegionTotals> {
        let cfg = LearningConfig::default();
        let seqs: Vec<Vec<u32>> = self
            .split
            .users
            .iter()
            .map(|u| {
                u.train
                    .iter()
                    .filter(|x| {
                        x.timestamp.saturating_mul(1000) <= now_ms
                            && watch_fraction(x.rating) >= SUCCESS_THRESHOLD
                    })
                    .map(|x| x.item)
                    .collect()
            })
            .collect();
        // The pair titles: the most watched, each counted once per user.
        let items = self.catalog.entries.len();
        let mut watched = vec![0u32; items];
        for seq in &seqs {
            let distinct: std::collections::BTreeSet<u32> = seq.iter().copied().collect();
            for item in distinct {
                watched[item as usize] += 1;
            }
        }
        let mut ranked: Vec<u32> = (0..items as u32)
            .filter(|&i| watched[i as usize] > 0)
            .collect();
        ranked.sort_by_key(|&i| (std::cmp::Reverse(watched[i as usize]), i));
        ranked.truncate(usize::from(cfg.pair_titles));
        let mut pair_of = vec![None; items];
        for (p, &i) in ranked.iter().enumerate() {
            pair_of[i as usize] = Some(p as u16);
        }
        let layout = omega_privacy::ContributionLayout::new(
            u32::try_from(items)?,
            ranked.len() as u16,
            cfg.window,
        )?;
        let mut values = vec![0i64; layout.dimension()];
        for seq in seqs.iter().filter(|s| !s.is_empty()) {
            let watches: Vec<omega_privacy::Watch> = seq
                .iter()
                .map(|&i| omega_privacy::Watch {
                    slot: i,
                    pair: pair_of[i as usize],
                })
                .collect();
            for (v, x) in values.iter_mut().zip(layout.build(&[], &watches)?) {
                *v += x;
            }
        }
        let id = |item: u32| self.catalog.entries[item as usize].item.id.clone();
        let slots: Vec<Option<ContentId>> = (0..items as u32).map(|i| Some(id(i))).collect();
        let pair_titles: Vec<ContentId> = ranked.iter().map(|&i| id(i)).collect();
        let mut totals = RegionTotals::default();
        totals.fold(
            &RoundSum {
                layout: &layout,
                slots: &slots,
                pair_titles: &pair_titles,
                values: &values,
                contributors: seqs.iter().filter(|s| !s.is_empty()).count(),
                sigma: 0.0,
                scale: 1,
            },
            &AggregateConfig::default(),
        )?;
        totals.rounds = u32::try_from(self.node.progress.folded).unwrap_or(u32::MAX);
        Ok(totals)
    }

    fn switch_on(&mut self, u: usize, t: u64) -> Result<()> {
        let user = &self.split.users[u];
        let store = BrainStore::open_with_backend(
            redb::backends::InMemoryBackend::new(),
            "eval-tv.redb",
            self.catalog.store,
        )?;
        let seed = self.opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ user.id;
        let device = DeviceId::new(format!("tv-{}", user.id))?;
        let credentials = self.pki.credentials(&device)?;
        self.tvs[u] = Some(Tv {
            user: u,
            device,
            credentials,
            store,
            keys: StdRng::seed_from_u64(seed),
            jitter: StdRng::seed_from_u64(seed ^ 0x6a69_7474_6572),
            next_watch: 0,
            engaged: None,
            inbox: false,
            up: 0,
            down: 0,
            syncs: 0,
            frames: (u < self.opts.keep_frames).then(Vec::new),
            answers: (u < self.opts.keep_frames).then(Vec::new),
            spy: Spy::default(),
        });
        self.queue.push(Reverse((t, Ev::Sync, u)));
        if let Some(x) = user.train.first() {
            self.queue.push(Reverse((x.timestamp * 1000, Ev::Watch, u)));
        }
        let test = user.test.timestamp * 1000;
        self.queue.push(Reverse((test, Ev::Test, u)));
        let grace = self.node.interval_ms + DAY_MS;
        self.queue.push(Reverse((test + grace, Ev::Off, u)));
        Ok(())
    }

    fn watch(&mut self, u: usize) -> Result<()> {
        let user = &self.split.users[u];
        let Some(tv) = self.tvs[u].as_mut() else {
            return Ok(());
        };
        let Some(x) = user.train.get(tv.next_watch) else {
            return Ok(());
        };
        let id = &self.catalog.entries[x.item as usize].item.id;
        let seen = tv.store.observe(event(id, x)?)?;
        if !seen.known_item {
            bail!(
                "user {}: watched {id} before the TV held the catalog",
                user.id
            );
        }
        tv.next_watch += 1;
        if let Some(next) = user.train.get(tv.next_watch) {
            self.queue
                .push(Reverse((next.timestamp * 1000, Ev::Watch, u)));
        }
        Ok(())
    }

    fn test(&mut self, u: usize) -> Result<()> {
        let user = &self.split.users[u];
        let Some(tv) = self.tvs[u].as_ref() else {
            bail!("user {}: the TV is off at the test", user.id);
        };
        let st = tv.store.state();
        let candidates = match &self.loo100 {
            Some(c) => Candidates::Only(&c[u]),
            None => Candidates::Unseen,
        };
        let recs =
            self.catalog
                .recommendations(&st, &user.test, candidates, K, self.recommender)?;
        self.ranked[u] = self.catalog.ranked(&recs)?;
        self.reasons[u] = recs.into_iter().map(|r| r.reason).collect();
        Ok(())
    }

    fn switch_off(&mut self, u: usize, t: u64) -> Result<()> {
        if let Some(tv) = self.tvs[u].take() {
            // Every TV's releases cost the same (one budget, one threshold):
            // asked of TVs until one has released (OpenDP's conversions
            // are slow).
            if self.epsilon_local.is_none() {
                self.epsilon_local = tv.store.privacy_status(t)?.epsilon_local;
            }
            self.done[u] = TvSummary {
                up: tv.up,
                down: tv.down,
                syncs: tv.syncs,
                spy: tv.spy,
                frames: tv.frames.unwrap_or_default(),
                answers: tv.answers.unwrap_or_default(),
            };
        }
        Ok(())
    }

    /// Adds the TV's sync at `t` to `batch`, or elides it (module docs).
    fn offer(&mut self, u: usize, t: u64, batch: &mut Vec<(u64, usize)>) {
        let Some(tv) = self.tvs[u].as_mut() else {
            return;
        };
        let node = &self.node;
        let quiet = !tv.inbox
            && tv.engaged.is_none()
            && tv.store.state().versions.catalog == node.catalog_version
            && !node.round_open()
            && {
                let l = node.learning.lock();
                !l.wants_round(&node.region, t)
                    && l.fleet_page(&node.region, tv.store.state().fleet.cursor())
                        .is_none()
            };
        match node.due_ms().filter(|_| quiet) {
            Some(due) => {
                let mut next = t;
                while next <= due {
                    next += tv.jitter.random_range(SYNC_SECS.0..=SYNC_SECS.1) * 1000;
                    self.elided += 1;
                }
                self.queue.push(Reverse((next, Ev::Sync, u)));
            }
            None => batch.push((t, u)),
        }
    }

    fn sync_batch(&mut self, batch: Vec<(u64, usize)>) -> Result<()> {
        let mut tvs: Vec<(u64, Tv)> = batch
            .iter()
            .filter_map(|&(t, u)| self.tvs[u].take().map(|tv| (t, tv)))
            .collect();
        // The TVs' requests, in parallel (noise, masking).
        let region = self.node.region.clone();
        let prepared: Vec<_> = tvs
            .par_iter_mut()
            .map(|(t, tv)| -> Result<_> {
                let p = tv.store.prepare_sync(
                    UploadKind::Delta,
                    region.clone(),
                    *t,
                    &tv.credentials,
                    &mut tv.keys,
                )?;
                let frame = codec::encode_request(&p.request)?;
                Ok((p, frame))
            })
            .collect::<Result<_>>()?;
        // The node, one at a time in time order.
        let mut answers = Vec::with_capacity(tvs.len());
        for ((t, tv), (_, frame)) in tvs.iter().zip(&prepared) {
            let folded = self.node.progress.folded;
            answers.push(self.node.answer(&tv.device, frame, *t)?);
            if self.opts.exact_fleet && self.node.progress.folded > folded {
                let exact = self.exact_totals(*t)?;
                self.node
                    .learning
                    .lock()
                    .replace_totals(&self.node.region, exact);
            }
        }
        // The TVs apply their answers, in parallel.
        let slots = self.slot_items.len();
        let outcomes: Vec<_> = tvs
            .par_iter_mut()
            .zip(prepared)
            .zip(answers)
            .map(|(((t, tv), (p, frame)), answer)| -> Result<_> {
                tv.up += frame.len() as u64;
                tv.down += answer.len() as u64;
                tv.syncs += 1;
                tv.spy.read(&frame, slots)?;
                if let Some(f) = tv.frames.as_mut() {
                    f.push(frame);
                }
                let declined = p.round_declined.as_ref().map(|e| e.to_string());
                let (body, _) = codec::unframe(&answer, MAX_RESPONSE_FRAME)?;
                let decoded = codec::decode_response(body)?;
                let catalog_page = decoded.as_ref().is_ok_and(|a| a.catalog.is_some());
                if let (Some(sizes), false) = (tv.answers.as_mut(), catalog_page) {
                    sizes.push(answer.len());
                }
                let accepted = match decoded {
                    Ok(a) => a,
                    Err(_) => return Ok((*t + SYNC_SECS.0 * 1000, declined, true)),
                };
                tv.inbox = accepted.round.is_some();
                match &accepted.round {
                    Some(NodeToTv::Invite { spec, .. }) => tv.engaged = Some(spec.session.session),
                    Some(NodeToTv::Step { session, .. }) => tv.engaged = Some(*session),
                    Some(NodeToTv::Finished { session, .. }) if tv.engaged == Some(*session) => {
                        tv.engaged = None
                    }
                    _ => {}
                }
                let more = accepted.catalog.as_ref().is_some_and(|c| c.more)
                    || accepted.fleet.as_ref().is_some_and(|f| {
                        f.offset as usize + f.titles.len() < f.total_titles as usize
                    });
                tv.store.finish_sync(&p, &accepted)?;
                let next = if more {
                    *t + PAGING_MS
                } else {
                    *t + u64::from(accepted.next_sync_secs.max(1)) * 1000
                };
                Ok((next, declined, false))
            })
            .collect::<Result<_>>()?;
        for ((_, tv), (next, declined, error)) in tvs.into_iter().zip(outcomes) {
            if let Some(why) = declined {
                self.declined += 1;
                // The reason without its numbers, so that reasons group.
                let why: String = why.chars().filter(|c| !c.is_ascii_digit()).collect();
                if self.declined_reasons.len() < MAX_REASONS
                    || self.declined_reasons.contains_key(&why)
                {
                    *self.declined_reasons.entry(why).or_default() += 1;
                }
            }
            self.sync_errors += u64::from(error);
            let u = tv.user;
            if !self.indexed && tv.store.state().versions.catalog == self.node.catalog_version {
                self.catalog.reindex(&tv.store.state())?;
                self.indexed = true;
            }
            self.queue.push(Reverse((next, Ev::Sync, u)));
            self.tvs[u] = Some(tv);
        }
        Ok(())
    }

    fn report(&self, start: std::time::Instant) -> Result<FleetReport> {
        let n = self.done.len().max(1) as f64;
        let bytes = BytesReport {
            up_per_device: self.done.iter().map(|d| d.up as f64).sum::<f64>() / n,
            down_per_device: self.done.iter().map(|d| d.down as f64).sum::<f64>() / n,
            syncs_per_device: self.done.iter().map(|d| d.syncs as f64).sum::<f64>() / n,
            syncs_elided: self.elided,
        };
        let budget = Budget::default();
        let epsilon_per_day = budget.epsilon_of(budget.rho_limit()?)?;
        let (attacks, prior) = self.attacks();
        let (best, rate) = attacks
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(("none", 0.0), |(a, r)| (a.name(), *r));
        let privacy = PrivacyReport {
            epsilon_per_day,
            delta: budget.delta,
            epsilon_local: self.epsilon_local,
            attack_hit_rate: rate,
            prior_hit_rate: prior,
            attack_ratio: if prior > 0.0 { rate / prior } else { 0.0 },
            attack: best,
            attacks: attacks.iter().map(|(a, r)| (a.name(), *r)).collect(),
        };
        let l = self.node.learning.lock();
        let stats = l.stats().into_iter().next().context("no region")?;
        let rounds = RoundsReport {
            interval_days: self.opts.round_interval_days,
            cohort: self.opts.cohort,
            threshold: self.opts.threshold,
            opened: stats.rounds.opened,
            folded: stats.rounds.folded,
            failed: stats.rounds.failed,
            not_folded: stats.rounds.not_folded,
            contributions: stats.contributions,
            published_titles: stats.published_titles,
            published_partners: stats.published_partners,
            sigma: stats.sigma,
            users_with_fleet: self
                .reasons
                .iter()
                .filter(|r| r.iter().any(fleet_reason))
                .count(),
            fleet_reasons: self
                .reasons
                .iter()
                .flatten()
                .filter(|r| fleet_reason(r))
                .count(),
            declined: self.declined,
            declined_reasons: self.declined_reasons.clone(),
            sync_errors: self.sync_errors,
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok(FleetReport {
            bytes,
            privacy,
            rounds,
        })
    }

    /// Every attack's hit rate, and the prior's.
    fn attacks(&self) -> (Vec<(Attack, f64)>, f64) {
        let items = self.catalog.entries.len();
        let users = &self.split.users;
        let hit = |named: &[u32], u: usize| {
            named.iter().filter(|&&i| users[u].trained_on(i)).count() as f64 / K as f64
        };
        let mean = |f: &dyn Fn(usize) -> f64| {
            users.iter().enumerate().map(|(u, _)| f(u)).sum::<f64>() / users.len().max(1) as f64
        };
        // The prior: the 10 titles most watched in training.
        let mut counts = vec![0f64; items];
        for u in users {
            for &i in u.train_items() {
                counts[i as usize] += 1.0;
            }
        }
        let prior_top = top10(&counts);
        let prior = mean(&|u| hit(&prior_top, u));
        // The node's published popularity, by item.
        let mut popular = vec![0f64; items];
        if let Some(p) = self.node.learning.lock().publication(&self.node.region) {
            for t in p.titles.iter() {
                if let Some(i) = self.catalog.item_of(&t.id) {
                    popular[i as usize] = f64::from(t.total);
                }
            }
        }
        let popular_top = top10(&popular);
        let by_slot = |values: &[f64]| {
            let mut out = vec![f64::MIN; items];
            for (slot, v) in values.iter().enumerate() {
                if let Some(&i) = self.slot_items.get(slot) {
                    out[i as usize] = *v;
                }
            }
            top10(&out)
        };
        let rounds: HashMap<u64, &FoldedRound> = self
            .node
            .rounds
            .iter()
            .filter_map(|r| r.session.map(|s| (s, r)))
            .collect();
        let max_pop = popular.iter().copied().fold(0.0, f64::max).max(1.0);
        let out = Attack::ALL
            .iter()
            .map(|&a| {
                let rate = mean(&|u| {
                    let spy = &self.done[u].spy;
                    let named = match a {
                        Attack::MaskedAsPlain if !spy.plain.is_empty() => by_slot(&spy.plain),
                        Attack::MaskedDifferences if spy.sessions.len() > 1 => by_slot(&spy.diffs),
                        Attack::RoundsJoined => {
                            let mut score: Vec<f64> =
                                popular.iter().map(|p| 1e-6 * p / max_pop).collect();
                            for s in &spy.sessions {
                                let Some(r) = rounds.get(s) else { continue };
                                let c = r.contributors.max(1) as f64;
                                for (id, v) in &r.titles {
                                    if let Some(i) = self.catalog.item_of(id) {
                                        score[i as usize] += v / c;
                                    }
                                }
                            }
                            top10(&score)
                        }
                        _ => popular_top.clone(),
                    };
                    hit(&named, u)
                });
                (a, rate)
            })
            .collect();
        (out, prior)
    }
}

fn fleet_reason(r: &Reason) -> bool {
    matches!(
        r,
        Reason::WatchedTogether { .. } | Reason::PopularInYourRegion
    )
}

/// The 10 indices with the largest values, ties by index.
fn top10(values: &[f64]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        values[b as usize]
            .total_cmp(&values[a as usize])
            .then(a.cmp(&b))
    });
    idx.truncate(K);
    idx
}
