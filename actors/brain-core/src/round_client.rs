//! The TV's side of an aggregation round (sans-IO): it answers the node's
//! [`NodeToTv`] messages with [`TvToNode`] messages, deciding itself whether
//! to take part, how much noise to add and what it has spent.
//!
//! # The guarantee, in plain words
//!
//! * **Central** (when at least t members of the cohort — the round's
//!   threshold — are honest and complete the round): the node learns only
//!   the sum of the members' noisy releases, which carries noise of scale at
//!   least σ_total; one release then costs the viewer ρ = Δ²/(2σ_total²) of
//!   zero-concentrated DP, charged in the TV's 24-hour ledger (by default one
//!   release spends the whole daily budget, ε = 4 at δ = 10⁻⁶).
//!   Every member's keys are signed with its device certificate and checked
//!   by every TV ([`RoundCredentials`]), so the node cannot invent members; it can
//!   only bring real devices of its own. With c of them among the survivors
//!   the sum still carries (t − c)/t of the noise variance; with
//!   c ≥ 2t − n + 1 it could split the survivors and unmask one input, so
//!   the TV declines rounds where that takes fewer than
//!   [`RoundClientConfig::min_split_colluders`] devices (11 at the node's
//!   default n = 200, t = 105).
//! * **Local** (if the node and t − 1 members collude, or past that split):
//!   only this TV's own share of the noise, σ_total/√t, protects the viewer,
//!   i.e. ρ_local = t·ρ, a much larger ε. [`RoundClient::status`] reports
//!   both.
//!
//! The sum of t independent discrete Gaussians of variance σ_total²/t is not
//! exactly one discrete Gaussian of variance σ_total²; Kairouz, Liu & Steinke
//! (ICML 2021, "The distributed discrete Gaussian mechanism") bound the
//! difference by a term that shrinks like exp(−π²σ_i²) in each share's σ_i,
//! so the TV declines rounds whose share would be below
//! [`RoundClientConfig::min_share_sigma`].
//!
//! # What the TV sends, and what it never sends
//!
//! Only the secure-aggregation messages of omega-privacy's `secagg`, wrapped
//! in [`TvToNode`] (the session number and one of: advertised public keys,
//! sealed key shares, the masked noisy release, unmasking shares). Never a
//! content id, a title, a timestamp, a count or the release in the clear; the
//! masked input is the noisy release plus masks that cancel only in the sum.
//!
//! # Rules
//!
//! * A release covers the successful watches after `released_upto` (see
//!   [`crate::release`]); it is made (planned, noised, **charged**) when an
//!   acceptable invitation arrives, before any key leaves, and past the budget
//!   the round is declined with [`RoundClientError::Ledger`] and nothing is
//!   sent.
//! * The noisy release stays pending until a round reports
//!   `Finished { included: true }` for a session its masked input was sent
//!   in; then `released_upto` advances and it is dropped. Until then it is
//!   offered again, unchanged (no new noise, no new charge: re-sending the
//!   same numbers reveals nothing new), in later rounds with the same layout
//!   and pair slots.
//! * If a later round has another layout, the pending release cannot be
//!   expressed in it: it is dropped, `released_upto` does not advance (its
//!   watches go into the next release) and its charge stays spent. That is
//!   conservative: the node may have received it in a sum already, so the
//!   cost was real.
//! * A masked input is sent at most once per session (masking one input
//!   twice in a session could show the node the difference of two masks).
//! * The secure-aggregation client is volatile: a restart loses it, which
//!   the node sees as a dropout; the pending release and the ledger persist
//!   ([`PrivacyState`], which the caller must store after every call that
//!   returned `Ok`, before sending its reply).

use std::collections::HashMap;
use std::sync::Arc;

use omega_privacy::round::{NodeToTv, RoundSpec, TvToNode};
use omega_privacy::secagg::{
    self, Attestor, Client, ClientError, ConfigError, ToClient, ToServer, Verifier,
};
use omega_privacy::{
    Budget, BudgetError, BudgetStatus, ContributionLayout, GaussianRelease, LayoutError, Ledger,
    LedgerError, MechanismError,
};
use omega_protocol::{ContentId, SUCCESS_THRESHOLD};
use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::release::{plan_release, RoundLayout};
use crate::state::BrainState;

/// Sessions a pending release remembers having been masked in; past it the
/// oldest is forgotten (a late `Finished` for it is then
/// [`RoundClientError::NotOffered`]).
pub const MAX_OFFERS: usize = 16;

/// The bounds within which the TV takes part in a round, whatever the node
/// asks. `#[serde(default)]`: every field has the default below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoundClientConfig {
    /// Smallest threshold t accepted (default 10): a node cannot make the TV
    /// take part in a tiny cohort, where its noise share would be large
    /// against the sum.
    pub min_threshold: u16,
    /// Largest cohort accepted (default 1000): a client does 2·n key
    /// agreements and sends about 100·n bytes of shares.
    pub max_cohort: u16,
    /// Largest vector dimension accepted (default 2¹⁹: 2 MiB masked).
    pub max_dim: u32,
    /// Largest pair window accepted (default 8): the window sets the
    /// sensitivity, hence the noise needed for the same budget.
    pub max_window: u8,
    /// Watch fraction from which a watch counts in a release (default the
    /// protocol's success threshold, 0.7).
    pub min_fraction: f32,
    /// Share of the daily ρ budget one release spends, in (0, 1] (default
    /// 1.0: one release a day at the full budget).
    pub release_share: f64,
    /// Smallest noise share σ_total/√t accepted (default 1.0; see the module
    /// docs on summing discrete Gaussians).
    pub min_share_sigma: f64,
    /// Fewest devices of its own a node must bring into a cohort to split
    /// the survivors and unmask one input (2t − n + 1 for cohort n and
    /// threshold t); rounds below it are declined (default 10).
    pub min_split_colluders: u16,
}

/// What vouches for this TV's round keys and checks the other members'
/// (in the daemon: its device certificate and key, and the device CA,
/// `omega_transport::attest`).
#[derive(Clone)]
pub struct RoundCredentials {
    /// Signs this TV's advertised keys.
    pub attestor: Arc<dyn Attestor>,
    /// Checks every member's signed keys.
    pub verifier: Arc<dyn Verifier>,
}

impl std::fmt::Debug for RoundCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundCredentials").finish_non_exhaustive()
    }
}

impl Default for RoundClientConfig {
    fn default() -> Self {
        RoundClientConfig {
            min_threshold: 10,
            max_cohort: secagg::MAX_COHORT,
            max_dim: 1 << 19,
            max_window: 8,
            min_fraction: SUCCESS_THRESHOLD,
            release_share: 1.0,
            min_share_sigma: 1.0,
            min_split_colluders: 10,
        }
    }
}

/// Why a configuration is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundConfigError {
    /// `min_threshold` must be at least 2 and at most `max_cohort`, which
    /// must be at most secagg's `MAX_COHORT`.
    #[error("threshold/cohort bounds {min_threshold}..={max_cohort} are not usable")]
    Cohort {
        /// The configured minimum threshold.
        min_threshold: u16,
        /// The configured maximum cohort.
        max_cohort: u16,
    },
    /// `max_dim` must be in 1..=secagg's `MAX_DIM`.
    #[error("max_dim {0} is outside 1..={max}", max = secagg::MAX_DIM)]
    Dim(u32),
    /// `max_window` must be at least 1.
    #[error("max_window must be at least 1")]
    Window,
    /// `min_fraction` must be in [0, 1].
    #[error("min_fraction {0} is outside [0, 1]")]
    Fraction(f32),
    /// `release_share` must be in (0, 1].
    #[error("release_share {0} is outside (0, 1]")]
    Share(f64),
    /// `min_share_sigma` must be finite and not negative.
    #[error("min_share_sigma {0} is not a finite non-negative number")]
    ShareSigma(f64),
}

impl RoundClientConfig {
    /// The smallest threshold a TV with this configuration accepts for a
    /// cohort of `cohort`: at least `min_threshold`, and enough that a split
    /// of the survivors (2t − n + 1 devices) takes `min_split_colluders`.
    pub fn least_threshold(&self, cohort: u16) -> u16 {
        let split = (u32::from(cohort) + u32::from(self.min_split_colluders)).saturating_sub(1);
        let t = u16::try_from(split.div_ceil(2)).unwrap_or(u16::MAX);
        t.max(self.min_threshold)
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), RoundConfigError> {
        if self.min_threshold < 2
            || self.max_cohort < self.min_threshold
            || self.max_cohort > secagg::MAX_COHORT
        {
            return Err(RoundConfigError::Cohort {
                min_threshold: self.min_threshold,
                max_cohort: self.max_cohort,
            });
        }
        if self.max_dim == 0 || self.max_dim > secagg::MAX_DIM {
            return Err(RoundConfigError::Dim(self.max_dim));
        }
        if self.max_window == 0 {
            return Err(RoundConfigError::Window);
        }
        if !(0.0..=1.0).contains(&self.min_fraction) {
            return Err(RoundConfigError::Fraction(self.min_fraction));
        }
        if !(self.release_share > 0.0 && self.release_share <= 1.0) {
            return Err(RoundConfigError::Share(self.release_share));
        }
        if !(self.min_share_sigma.is_finite() && self.min_share_sigma >= 0.0) {
            return Err(RoundConfigError::ShareSigma(self.min_share_sigma));
        }
        Ok(())
    }
}

/// Why the TV declines a message: nothing is sent, and nothing changed
/// except where a variant says otherwise.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundClientError {
    /// The invitation's threshold is below the TV's minimum.
    #[error("threshold {got} is below the minimum {min}")]
    ThresholdTooLow {
        /// The round's threshold.
        got: u16,
        /// The TV's minimum.
        min: u16,
    },
    /// A node with this few devices of its own in the cohort could split
    /// the survivors and unmask one input (2t − n + 1 is below the TV's
    /// minimum).
    #[error("a split of this round takes {got} colluding devices, the minimum is {min}")]
    SplitTooEasy {
        /// 2t − n + 1.
        got: u16,
        /// The TV's minimum.
        min: u16,
    },
    /// The invitation's cohort is above the TV's maximum.
    #[error("cohort {got} is above the maximum {max}")]
    CohortTooLarge {
        /// The round's cohort size.
        got: u16,
        /// The TV's maximum.
        max: u16,
    },
    /// The invitation's dimension is above the TV's maximum.
    #[error("dimension {got} is above the maximum {max}")]
    DimTooLarge {
        /// The round's dimension.
        got: u32,
        /// The TV's maximum.
        max: u32,
    },
    /// The invitation's pair window is above the TV's maximum.
    #[error("window {got} is above the maximum {max}")]
    WindowTooLarge {
        /// The round's window.
        got: u8,
        /// The TV's maximum.
        max: u8,
    },
    /// The round's scale is 0 or above `omega_privacy::round::MAX_SCALE`.
    #[error("scale {0} is outside 1..=1024")]
    Scale(u32),
    /// The session's dimension is not the layout's.
    #[error("session dimension {session} differs from the layout's {layout}")]
    DimMismatch {
        /// The session's `dim`.
        session: u32,
        /// The layout's dimension.
        layout: usize,
    },
    /// The pair slots are not one distinct slot inside the layout per pair
    /// title.
    #[error("pair slots do not match the layout's pair titles")]
    PairSlots,
    /// The session's parameters are invalid for secure aggregation.
    #[error("session: {0}")]
    Session(#[from] ConfigError),
    /// Each member's noise share would be below the TV's minimum.
    #[error("noise share {share_sigma:.3} is below the minimum {min:.3}")]
    ShareTooSmall {
        /// σ_total/√t.
        share_sigma: f64,
        /// The TV's minimum.
        min: f64,
    },
    /// The pending release's masked input already left in this session.
    #[error("session {0}: this release was already masked in it")]
    AlreadyMasked(u64),
    /// The budget is spent ([`LedgerError::Exhausted`]) or the ledger
    /// refused the charge otherwise: nothing was sent.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A budget conversion failed.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// The noise could not be built or drawn.
    #[error(transparent)]
    Mechanism(#[from] MechanismError),
    /// The release could not be planned in the layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// A step or outcome names a session the TV is not in (or no longer
    /// holds: a restart loses the round).
    #[error("not in session {0}")]
    UnknownSession(u64),
    /// A step's message does not fit the round (the secagg client's reason).
    #[error("secure aggregation: {0}")]
    Client(#[from] ClientError),
    /// The round has no pending release to mask (it was dropped).
    #[error("no pending release for session {0}")]
    NoRelease(u64),
    /// The round's slots belong to another catalog version than the TV's.
    #[error("the round is over catalog version {round}, the TV holds {held}")]
    CatalogVersion {
        /// The round's catalog version.
        round: u64,
        /// The TV's.
        held: u64,
    },
    /// `Finished` names a session the pending release was not masked in
    /// (if it was the session in progress, that round is over all the same).
    #[error("session {0} did not receive the pending release")]
    NotOffered(u64),
}

/// The catalog slots of a round over `spec`: the TV's live titles in id
/// order, which are the node's when both hold the round's catalog version
/// (refused otherwise: the TV syncs its catalog first).
pub fn catalog_slots(
    spec: &RoundSpec,
    brain: &BrainState,
) -> Result<HashMap<ContentId, u32>, RoundClientError> {
    if spec.catalog_version != brain.versions.catalog {
        return Err(RoundClientError::CatalogVersion {
            round: spec.catalog_version,
            held: brain.versions.catalog,
        });
    }
    let mut ids: Vec<&ContentId> = brain.catalog.iter().map(|r| &r.item.id).collect();
    ids.sort();
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u32))
        .collect())
}

/// A noisy release kept until a round includes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRelease {
    /// The noisy vector.
    pub noisy: Vec<i64>,
    /// The newest episode it covers (`None`: there was none yet).
    pub upto: Option<u64>,
    /// The cost charged for it.
    pub cost: ReleaseCost,
    /// The layout it was made for.
    pub layout: ContributionLayout,
    /// The pair slots it was made for.
    pub pair_slots: Vec<u32>,
    /// The scale it was made for (its entries are 0/scale plus noise).
    pub scale: u32,
    /// Sessions its masked input was sent in, oldest first (at most
    /// [`MAX_OFFERS`]).
    pub masked_in: Vec<u64>,
}

/// What one release cost, centrally and locally.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReleaseCost {
    /// When it was made (ms, the TV's clock).
    pub at_ms: u64,
    /// The round's threshold t.
    pub threshold: u16,
    /// σ_total: the noise any t members' sum carries.
    pub sigma_total: f64,
    /// ρ with at least t honest members (what the ledger was charged).
    pub rho: f64,
    /// ρ of this TV's share alone (≈ t·ρ).
    pub rho_local: f64,
}

/// The persistent part of the TV's privacy: the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyState {
    budget: Budget,
    ledger: Ledger,
    released_upto: Option<u64>,
    pending: Option<PendingRelease>,
    last_cost: Option<ReleaseCost>,
}

impl PrivacyState {
    /// A fresh state: nothing spent, nothing released.
    pub fn new(budget: Budget) -> Self {
        PrivacyState {
            budget,
            ledger: Ledger::default(),
            released_upto: None,
            pending: None,
            last_cost: None,
        }
    }

    /// The daily budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Changes the daily budget from the next charge on (charges made stay
    /// counted).
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// The accountant.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The newest episode included in a sum the node used (`None` before
    /// the first).
    pub fn released_upto(&self) -> Option<u64> {
        self.released_upto
    }

    /// The noisy release waiting for a round to include it.
    pub fn pending(&self) -> Option<&PendingRelease> {
        self.pending.as_ref()
    }

    /// This state after the viewer's history is forgotten: no pending
    /// release, releases start again from the first episode; the budget and
    /// the ledger are kept (the charges were real). [`RoundClient::forget`]
    /// comes to the same.
    pub fn forgotten(&self) -> PrivacyState {
        PrivacyState {
            pending: None,
            released_upto: None,
            ..self.clone()
        }
    }
}

/// What `stats` shows about privacy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacyStatus {
    /// The budget over the last 24 hours.
    pub budget: BudgetStatus,
    /// The newest episode released.
    pub released_upto: Option<u64>,
    /// Whether a noisy release is pending.
    pub pending: bool,
    /// The newest episode the pending release covers, if any.
    pub pending_upto: Option<u64>,
    /// The session the TV is taking part in, if any.
    pub in_session: Option<u64>,
    /// The last release's cost.
    pub last: Option<ReleaseCost>,
    /// ε of the last release with at least t honest members.
    pub epsilon_central: Option<f64>,
    /// ε of the last release protected by this TV's own noise alone.
    pub epsilon_local: Option<f64>,
}

/// The round in progress (volatile).
struct Current {
    session: u64,
    client: Client,
    /// The last message handled and its reply, to answer a repeat the same.
    last: (NodeToTv, TvToNode),
}

/// The TV's round state machine: the persistent [`PrivacyState`] and the
/// volatile secure-aggregation client.
pub struct RoundClient {
    config: RoundClientConfig,
    state: PrivacyState,
    current: Option<Current>,
    /// Whether `state` changed since [`RoundClient::take_unsaved`] last
    /// said so (the caller stores it then, instead of comparing copies).
    unsaved: bool,
}

impl std::fmt::Debug for RoundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundClient")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("session", &self.current.as_ref().map(|c| c.session))
            .finish()
    }
}

/// The round's layout as the TV holds it, from the spec and the catalog
/// slots the node assigned (`slots`: content id → slot). Titles whose slot
/// is outside the layout are left out.
pub fn round_layout(
    spec: &RoundSpec,
    slots: &HashMap<ContentId, u32>,
) -> Result<RoundLayout, RoundClientError> {
    let layout = spec.layout;
    if spec.pair_slots.len() != usize::from(layout.pair_items()) {
        return Err(RoundClientError::PairSlots);
    }
    let mut pair_of_slot: HashMap<u32, u16> = HashMap::with_capacity(spec.pair_slots.len());
    for (i, &slot) in spec.pair_slots.iter().enumerate() {
        let index = u16::try_from(i).map_err(|_| RoundClientError::PairSlots)?;
        if slot >= layout.items() || pair_of_slot.insert(slot, index).is_some() {
            return Err(RoundClientError::PairSlots);
        }
    }
    let mut out = RoundLayout {
        layout,
        slots: HashMap::new(),
        pairs: HashMap::new(),
    };
    for (id, &slot) in slots.iter().filter(|(_, &s)| s < layout.items()) {
        out.slots.insert(id.clone(), slot);
        if let Some(&p) = pair_of_slot.get(&slot) {
            out.pairs.insert(id.clone(), p);
        }
    }
    Ok(out)
}

impl RoundClient {
    /// A client over a stored (or fresh) state.
    pub fn new(config: RoundClientConfig, state: PrivacyState) -> Result<Self, RoundConfigError> {
        config.validate()?;
        Ok(RoundClient {
            config,
            state,
            current: None,
            unsaved: false,
        })
    }

    /// The persistent state (store it after every call that changed it,
    /// [`Self::take_unsaved`], before sending the reply).
    pub fn state(&self) -> &PrivacyState {
        &self.state
    }

    /// Whether the persistent state changed since the last call (a call
    /// that only repeats an answer, or is declined before any charge,
    /// changes nothing); clears the flag.
    pub fn take_unsaved(&mut self) -> bool {
        std::mem::take(&mut self.unsaved)
    }

    /// The session in progress, if any.
    pub fn session(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.session)
    }

    /// After the viewer's history is forgotten: the round and the pending
    /// release are dropped and releases start again from the first episode
    /// (the store's sequence restarts); the
    /// ledger is kept (its charges were real).
    pub fn forget(&mut self) {
        self.current = None;
        self.state = self.state.forgotten();
        self.unsaved = true;
    }

    /// Handles one message from the node: the reply to send, if any.
    ///
    /// `brain` gives the episodes and `slots` the catalog slot of each title
    /// (as the node assigned them); `rng` must be a CSPRNG (production: OS
    /// seeded) — it makes the secure-aggregation keys; the noise is drawn by
    /// OpenDP from its own OS-seeded generator. `auth` signs this TV's keys
    /// and checks the other members'.
    pub fn on_node(
        &mut self,
        msg: NodeToTv,
        brain: &BrainState,
        slots: &HashMap<ContentId, u32>,
        now_ms: u64,
        auth: &RoundCredentials,
        rng: &mut impl CryptoRng,
    ) -> Result<Option<TvToNode>, RoundClientError> {
        if let Some(cur) = &self.current {
            if cur.last.0 == msg {
                return Ok(Some(cur.last.1.clone()));
            }
        }
        match msg {
            NodeToTv::Invite { spec, member } => {
                let reply = self.invite(&spec, member, brain, slots, now_ms, auth, rng)?;
                Ok(Some(reply))
            }
            NodeToTv::Step { session, msg } => self.step(session, msg, auth, rng).map(Some),
            NodeToTv::Finished { session, included } => {
                self.finished(session, included)?;
                Ok(None)
            }
        }
    }

    fn check_spec(&self, spec: &RoundSpec) -> Result<(), RoundClientError> {
        let c = &self.config;
        let s = &spec.session;
        s.validate()?;
        if s.threshold < c.min_threshold {
            return Err(RoundClientError::ThresholdTooLow {
                got: s.threshold,
                min: c.min_threshold,
            });
        }
        let split = (2 * u32::from(s.threshold) + 1).saturating_sub(u32::from(s.cohort));
        let split = u16::try_from(split).unwrap_or(u16::MAX);
        if split < c.min_split_colluders {
            return Err(RoundClientError::SplitTooEasy {
                got: split,
                min: c.min_split_colluders,
            });
        }
        if s.cohort > c.max_cohort {
            return Err(RoundClientError::CohortTooLarge {
                got: s.cohort,
                max: c.max_cohort,
            });
        }
        if s.dim > c.max_dim {
            return Err(RoundClientError::DimTooLarge {
                got: s.dim,
                max: c.max_dim,
            });
        }
        if spec.layout.window() > c.max_window {
            return Err(RoundClientError::WindowTooLarge {
                got: spec.layout.window(),
                max: c.max_window,
            });
        }
        if spec.scale == 0 || spec.scale > omega_privacy::round::MAX_SCALE {
            return Err(RoundClientError::Scale(spec.scale));
        }
        if s.dim as usize != spec.layout.dimension() {
            return Err(RoundClientError::DimMismatch {
                session: s.dim,
                layout: spec.layout.dimension(),
            });
        }
        Ok(())
    }

    /// A new noisy release for `spec`, charged; not yet stored.
    fn make_release(
        &self,
        spec: &RoundSpec,
        brain: &BrainState,
        slots: &HashMap<ContentId, u32>,
        now_ms: u64,
    ) -> Result<(PendingRelease, Ledger), RoundClientError> {
        let round = round_layout(spec, slots)?;
        let sensitivity = spec.layout.l2_sensitivity();
        let target = self.state.budget.rho_limit()? * self.config.release_share;
        let total = GaussianRelease::for_rho(target, sensitivity)?;
        let t = spec.session.threshold;
        // In the round's units (entries 0/scale): same ratio of noise to
        // sensitivity, hence the same cost.
        let scale = spec.scale;
        let share_sigma = total.sigma() * f64::from(scale) / f64::from(t).sqrt();
        if share_sigma < self.config.min_share_sigma {
            return Err(RoundClientError::ShareTooSmall {
                share_sigma,
                min: self.config.min_share_sigma,
            });
        }
        let share = GaussianRelease::new(share_sigma, sensitivity.saturating_mul(scale))?;
        let mut ledger = self.state.ledger.clone();
        ledger.charge(&self.state.budget, now_ms, total.rho())?;
        let plan = plan_release(
            brain,
            self.state.released_upto,
            &round,
            self.config.min_fraction,
        )?;
        let scaled: Vec<i64> = plan
            .contribution
            .iter()
            .map(|v| v * i64::from(scale))
            .collect();
        let noisy = share.release(&scaled)?;
        let cost = ReleaseCost {
            at_ms: now_ms,
            threshold: t,
            sigma_total: total.sigma(),
            rho: total.rho(),
            rho_local: share.rho(),
        };
        let pending = PendingRelease {
            noisy,
            upto: plan.upto,
            cost,
            layout: spec.layout,
            pair_slots: spec.pair_slots.clone(),
            scale,
            masked_in: Vec::new(),
        };
        Ok((pending, ledger))
    }

    // `on_node`'s inputs, passed through.
    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        spec: &RoundSpec,
        member: secagg::ClientId,
        brain: &BrainState,
        slots: &HashMap<ContentId, u32>,
        now_ms: u64,
        auth: &RoundCredentials,
        rng: &mut impl CryptoRng,
    ) -> Result<TvToNode, RoundClientError> {
        self.check_spec(spec)?;
        let session = spec.session.session;
        let reusable = self.state.pending.as_ref().filter(|p| {
            p.layout == spec.layout && p.pair_slots == spec.pair_slots && p.scale == spec.scale
        });
        if reusable.is_some_and(|p| p.masked_in.contains(&session)) {
            return Err(RoundClientError::AlreadyMasked(session));
        }
        let fresh = match reusable {
            Some(_) => None,
            None => Some(self.make_release(spec, brain, slots, now_ms)?),
        };
        let (client, keys) = Client::new(spec.session, member, auth.attestor.as_ref(), rng)?;
        if let Some((pending, ledger)) = fresh {
            // Charged before anything leaves; a pending release for another
            // layout is dropped (its charge stays, its watches go again).
            self.state.ledger = ledger;
            self.state.last_cost = Some(pending.cost);
            self.state.pending = Some(pending);
            self.unsaved = true;
        }
        let reply = TvToNode {
            session,
            msg: ToServer::AdvertiseKeys(keys),
        };
        self.current = Some(Current {
            session,
            client,
            last: (
                NodeToTv::Invite {
                    spec: spec.clone(),
                    member,
                },
                reply.clone(),
            ),
        });
        Ok(reply)
    }

    fn step(
        &mut self,
        session: u64,
        msg: ToClient,
        auth: &RoundCredentials,
        rng: &mut impl CryptoRng,
    ) -> Result<TvToNode, RoundClientError> {
        let cur = self
            .current
            .as_mut()
            .filter(|c| c.session == session)
            .ok_or(RoundClientError::UnknownSession(session))?;
        let out = match &msg {
            ToClient::Members(list) => {
                ToServer::ShareKeys(cur.client.share_keys(list, auth.verifier.as_ref(), rng)?)
            }
            ToClient::Shares(shares) => {
                let pending = self
                    .state
                    .pending
                    .as_mut()
                    .ok_or(RoundClientError::NoRelease(session))?;
                let input = secagg::to_ring(&pending.noisy);
                let masked = cur.client.masked_input(shares, &input)?;
                if pending.masked_in.len() == MAX_OFFERS {
                    pending.masked_in.remove(0);
                }
                pending.masked_in.push(session);
                self.unsaved = true;
                ToServer::MaskedInput(masked)
            }
            ToClient::Survivors(s) => ToServer::Unmask(cur.client.unmask(s)?),
        };
        let reply = TvToNode { session, msg: out };
        cur.last = (NodeToTv::Step { session, msg }, reply.clone());
        Ok(reply)
    }

    fn finished(&mut self, session: u64, included: bool) -> Result<(), RoundClientError> {
        if self.session() == Some(session) {
            self.current = None;
        }
        let pending = self
            .state
            .pending
            .as_mut()
            .filter(|p| p.masked_in.contains(&session))
            .ok_or(RoundClientError::NotOffered(session))?;
        if included {
            self.state.released_upto = pending.upto;
            self.state.pending = None;
        } else {
            pending.masked_in.retain(|&s| s != session);
        }
        self.unsaved = true;
        Ok(())
    }

    /// The privacy figures for `stats` at `now_ms`.
    pub fn status(&self, now_ms: u64) -> Result<PrivacyStatus, RoundClientError> {
        let budget = &self.state.budget;
        let last = self.state.last_cost;
        Ok(PrivacyStatus {
            budget: self.state.ledger.status(budget, now_ms)?,
            released_upto: self.state.released_upto,
            pending: self.state.pending.is_some(),
            pending_upto: self.state.pending.as_ref().and_then(|p| p.upto),
            in_session: self.session(),
            last,
            epsilon_central: last.map(|c| budget.epsilon_of(c.rho)).transpose()?,
            epsilon_local: last.map(|c| budget.epsilon_of(c.rho_local)).transpose()?,
        })
    }
}
