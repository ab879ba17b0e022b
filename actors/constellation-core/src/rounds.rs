//! One region's aggregation rounds, as a sans-IO coordinator: which TVs take
//! part, what each is told on its next sync, when a phase closes, and what
//! of the sum is folded into the region's totals. No wire, store or clock:
//! the caller passes `now_ms` and an RNG and moves the messages
//! ([`NodeToTv`], [`TvToNode`]) in its sync answers and requests.
//!
//! # Phases and their timing
//!
//! A round is one [`secagg`] session over up to n TVs of the region
//! ([`RoundsConfig::cohort`]), opened by the caller with the round's layout
//! and pair slots ([`Coordinator::open`]). Its phases follow the server's
//! rounds:
//!
//! 1. [`Phase::Join`]: a TV that syncs while there is room is invited
//!    ([`NodeToTv::Invite`], with a fresh [`ClientId`]) and answers with its
//!    advertised keys. Closes at its deadline or as soon as n TVs were
//!    invited and all of them answered; with fewer than t keys the round
//!    fails.
//! 2. [`Phase::Shares`]: every member of U1 gets the member list and answers
//!    with its sealed shares.
//! 3. [`Phase::Inputs`]: every member of U2 gets the shares sealed for it
//!    and answers with its masked input.
//! 4. [`Phase::Unmask`]: every member of U3 gets the survivors and answers
//!    with its unmasking shares; at the close the server rebuilds the sum.
//! 5. [`Phase::Summed`]: the sum waits for [`Coordinator::finish`], which
//!    folds it into the region's [`RegionTotals`] if at least k inputs are in
//!    it, and ends the round.
//!
//! Each phase closes when its deadline passes ([`Coordinator::tick`]) or as
//! soon as every member it expects has answered (checked after each answer).
//! A TV learns a step on one sync and answers on a later one, so a phase must
//! span two syncs: the defaults (40 minutes a phase) cover two of the slowest
//! sync intervals (15 minutes) plus margin. A close with fewer than t answers
//! ([`ServerError::TooFew`]), or a sum that cannot be rebuilt, fails the
//! round; then a new one can be opened.
//!
//! # What members are told
//!
//! A TV is told `Finished { included }` when its part in the round ends:
//! `included: false` when a phase closed without its answer, when the round
//! failed or when the sum was not folded (fewer than k inputs); `true` only
//! when the sum holding its input was folded. The round's state is dropped
//! as soon as it ends; the outcomes go into a bounded set
//! ([`RoundsConfig::outcomes`], oldest dropped first) and each is kept
//! [`RoundsConfig::outcome_ttl_ms`] (default 3 days), so a TV learns its
//! outcome on its next sync, and again whenever it sends anything for that
//! round. A TV that does not hear back in time (offline past the expiry,
//! evicted from the set) gets [`RoundError::UnknownSession`] for that round
//! and must decide on its own (the TV side treats it as not included and
//! offers the same noisy release again, which costs it no privacy).
//!
//! # Who is who
//!
//! The device → member id map is the node's, keyed by the [`DeviceId`] of
//! the sync's certificate: a message is always taken as from the sender's
//! own id, so a device cannot answer for another, and one that is not a
//! member is refused ([`RoundError::NotMember`]). Duplicate, out-of-phase or
//! malformed messages are refused with a typed error and change nothing.
//! Advertised keys must be signed by the sender's own credential (checked
//! with the caller's [`Verifier`]: a trusted device certificate whose id is
//! the sender's), else they are refused ([`RoundError::Unattested`]): every
//! TV checks every member's signature and would abandon a round listing
//! one bad advertisement.
//!
//! # Bounds
//!
//! One open round at a time; at most n members and their pending steps
//! (one member list, n inboxes of at most n − 1 ciphertexts, one survivor
//! list) beside the server's own bounded state; at most
//! [`RoundsConfig::outcomes`] remembered outcomes. A summed round holds one
//! sum of D words until the caller finishes it; [`Coordinator::tick`] keeps
//! reporting [`Tick::Summed`] until then, and no new round opens meanwhile.
//!
//! # A node restart
//!
//! The coordinator lives in memory: a restart loses the open round and the
//! remembered outcomes (folded totals are the caller's, stored). The members
//! of the lost round get [`RoundError::UnknownSession`] when they next send
//! a message for it, or time out on their side; either way their input was
//! not used and they offer the same noisy release in the next round.

use std::collections::BTreeMap;

use omega_privacy::round::{NodeToTv, RoundSpec, TvToNode};
use omega_privacy::secagg::{
    attest, Aggregate, ClientId, Config, ConfigError, MemberList, Server, ServerError,
    SharesForYou, Survivors, ToClient, ToServer, Verifier,
};
use omega_privacy::ContributionLayout;
use omega_protocol::{ContentId, DeviceId};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregateConfig, AggregateError, RegionTotals, RoundSum};

const MINUTE_MS: u64 = 60_000;

/// How rounds are sized and timed (the node's `[rounds]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoundsConfig {
    /// n: most TVs invited into one round. Default 200 (every round adds
    /// the same noise to the totals, so a round should sum many TVs).
    pub cohort: u16,
    /// t: answers every phase needs, and the shares that rebuild a secret.
    /// Must be more than n/2 and at least the aggregate's k. Default 105.
    pub threshold: u16,
    /// How long the join phase stays open. Default 40 minutes.
    pub join_ms: u64,
    /// How long members have to send their shares. Default 40 minutes.
    pub shares_ms: u64,
    /// How long members have to send their masked inputs. Default 40 minutes.
    pub inputs_ms: u64,
    /// How long survivors have to send their unmasking shares. Default 40
    /// minutes.
    pub unmask_ms: u64,
    /// Most remembered outcomes (past it the oldest is dropped). The node's
    /// learning refuses fewer than `cohort` (some members of a round would
    /// never hear theirs). Default 2,000.
    pub outcomes: usize,
    /// How long an outcome is remembered. Default 3 days.
    pub outcome_ttl_ms: u64,
}

impl Default for RoundsConfig {
    fn default() -> Self {
        RoundsConfig {
            cohort: 200,
            threshold: 105,
            join_ms: 40 * MINUTE_MS,
            shares_ms: 40 * MINUTE_MS,
            inputs_ms: 40 * MINUTE_MS,
            unmask_ms: 40 * MINUTE_MS,
            outcomes: 2000,
            outcome_ttl_ms: 3 * 24 * 60 * MINUTE_MS,
        }
    }
}

/// A round's phase: whose messages it waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Inviting TVs and collecting their keys.
    Join,
    /// Collecting sealed shares from U1.
    Shares,
    /// Collecting masked inputs from U2.
    Inputs,
    /// Collecting unmasking shares from U3.
    Unmask,
    /// The sum is rebuilt and waits for [`Coordinator::finish`].
    Summed,
}

/// Why a round cannot be opened, a message is refused or a sum not folded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RoundError {
    /// The cohort, threshold or layout do not make a valid session.
    #[error("invalid session: {0}")]
    Config(#[from] ConfigError),
    /// The threshold is below the aggregate's k: a round could be summed
    /// with fewer contributors than may be folded.
    #[error("threshold {threshold} is below k = {k}")]
    ThresholdBelowK {
        /// The threshold.
        threshold: u16,
        /// The aggregate's k.
        k: usize,
    },
    /// The pair slots are not one catalog slot of the layout per pair title.
    #[error("pair slots do not fit the layout")]
    PairSlots,
    /// A round is already open (one at a time).
    #[error("round {0} is still open")]
    RoundOpen(u64),
    /// The message is for a round the node does not know (over and
    /// forgotten, or lost by a restart).
    #[error("no round {0} here")]
    UnknownSession(u64),
    /// The device is not a member of the round its message is for.
    #[error("device {0} is not a member of the round")]
    NotMember(DeviceId),
    /// The server refused the message (wrong phase, duplicate, bad shape).
    #[error("refused: {0}")]
    Refused(#[from] ServerError),
    /// Advertised keys whose attestation does not verify, or vouches for
    /// another identity than the sending device.
    #[error("keys of {device} are not attested by it: {reason}")]
    Unattested {
        /// The sender.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// [`Coordinator::finish`] was called without a summed round.
    #[error("no summed round to finish")]
    NotSummed,
    /// The sum was not folded (too few contributors, or it does not fit the
    /// catalog or noise scale given); the round ended without it.
    #[error("sum not folded: {0}")]
    NotFolded(#[from] AggregateError),
}

/// What [`Coordinator::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Nothing to do (no round, or its phase is still open).
    Idle,
    /// A phase closed and this one opened.
    Opened(Phase),
    /// The round failed when a phase closed; its members are told
    /// `included: false`.
    Failed {
        /// The round.
        session: u64,
        /// Why the phase could not close.
        error: ServerError,
    },
    /// The round is summed: call [`Coordinator::finish`].
    Summed,
}

/// What [`Coordinator::finish`] folded.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// The round.
    pub session: u64,
    /// Contributors folded (|U3|).
    pub contributors: usize,
    /// The noise scale folded.
    pub sigma: f64,
}

/// Counters for the node's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundStats {
    /// Rounds opened.
    pub opened: u64,
    /// Rounds that failed at a phase close.
    pub failed: u64,
    /// Rounds whose sum was folded.
    pub folded: u64,
    /// Rounds summed but not folded.
    pub not_folded: u64,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    id: ClientId,
    /// Whether it sent the current phase's message.
    answered: bool,
}

/// The steps members fetch in the current phase.
#[derive(Debug)]
enum Pending {
    None,
    Members(MemberList),
    Shares(BTreeMap<ClientId, SharesForYou>),
    Survivors(Survivors),
}

#[derive(Debug)]
struct Open {
    spec: RoundSpec,
    server: Server,
    phase: Phase,
    deadline_ms: u64,
    next_id: u32,
    members: BTreeMap<DeviceId, Member>,
    pending: Pending,
    sum: Option<Aggregate>,
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    session: u64,
    included: bool,
    at_ms: u64,
    told: bool,
}

/// One region's round coordinator.
#[derive(Debug)]
pub struct Coordinator {
    config: RoundsConfig,
    aggregate: AggregateConfig,
    round: Option<Open>,
    outcomes: BTreeMap<DeviceId, Outcome>,
    stats: RoundStats,
}

impl Coordinator {
    /// A coordinator with no round open; checks that t > n/2 and t ≥ k.
    pub fn new(config: RoundsConfig, aggregate: AggregateConfig) -> Result<Self, RoundError> {
        // The dimension is checked per round; 1 stands in for it here.
        Config {
            session: 0,
            cohort: config.cohort,
            threshold: config.threshold,
            dim: 1,
        }
        .validate()?;
        if usize::from(config.threshold) < aggregate.k() {
            return Err(RoundError::ThresholdBelowK {
                threshold: config.threshold,
                k: aggregate.k(),
            });
        }
        Ok(Coordinator {
            config,
            aggregate,
            round: None,
            outcomes: BTreeMap::new(),
            stats: RoundStats::default(),
        })
    }

    /// The open round's session id and phase.
    pub fn phase(&self) -> Option<(u64, Phase)> {
        self.round
            .as_ref()
            .map(|r| (r.spec.session.session, r.phase))
    }

    /// The summed round's layout, threshold and number of inputs in its
    /// sum, while it waits for [`Coordinator::finish`].
    pub fn summed(&self) -> Option<(ContributionLayout, u16, usize)> {
        let r = self.round.as_ref()?;
        let sum = r.sum.as_ref()?;
        Some((r.spec.layout, r.spec.session.threshold, sum.survivors.len()))
    }

    /// The counters.
    pub fn stats(&self) -> RoundStats {
        self.stats
    }

    /// Opens a round over `layout` (pair title `i` is catalog slot
    /// `pair_slots[i]`; the slots are the live titles of catalog version
    /// `catalog_version` in id order) with a session id drawn from `rng`; the join phase
    /// starts now. Refused while another round is open.
    pub fn open(
        &mut self,
        layout: ContributionLayout,
        pair_slots: Vec<u32>,
        catalog_version: u64,
        scale: u32,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Result<u64, RoundError> {
        if let Some((session, _)) = self.phase() {
            return Err(RoundError::RoundOpen(session));
        }
        if pair_slots.len() != usize::from(layout.pair_items())
            || pair_slots.iter().any(|&s| s >= layout.items())
        {
            return Err(RoundError::PairSlots);
        }
        let config = Config {
            session: rng.random(),
            cohort: self.config.cohort,
            threshold: self.config.threshold,
            dim: u32::try_from(layout.dimension()).unwrap_or(u32::MAX),
        };
        let server = Server::new(config)?;
        self.round = Some(Open {
            spec: RoundSpec {
                session: config,
                layout,
                pair_slots,
                catalog_version,
                scale,
            },
            server,
            phase: Phase::Join,
            deadline_ms: now_ms.saturating_add(self.config.join_ms),
            next_id: 0,
            members: BTreeMap::new(),
            pending: Pending::None,
            sum: None,
        });
        self.stats.opened += 1;
        Ok(config.session)
    }

    /// The one entry a sync calls: takes the device's round message, if
    /// any, and returns what the device needs next (an invitation — only if
    /// `may_join` —, the next step, its outcome, or nothing). Advertised
    /// keys are checked with `verifier` first. A refused message changes
    /// nothing.
    pub fn on_sync(
        &mut self,
        device: &DeviceId,
        msg: Option<TvToNode>,
        may_join: bool,
        verifier: &dyn Verifier,
        now_ms: u64,
    ) -> Result<Option<NodeToTv>, RoundError> {
        if let Some(msg) = msg {
            let current = self.phase().map(|(s, _)| s) == Some(msg.session);
            let round = self.round.as_mut().filter(|_| current);
            let Some(round) = round.filter(|r| r.members.contains_key(device)) else {
                // A late message from a TV whose part is over: its outcome.
                return match self.outcomes.get_mut(device) {
                    Some(o) if o.session == msg.session => Ok(Some(told(o))),
                    _ if current => Err(RoundError::NotMember(device.clone())),
                    _ => Err(RoundError::UnknownSession(msg.session)),
                };
            };
            let Some(member) = round.members.get_mut(device) else {
                return Err(RoundError::NotMember(device.clone()));
            };
            if let ToServer::AdvertiseKeys(keys) = &msg.msg {
                let unattested = |reason: String| RoundError::Unattested {
                    device: device.clone(),
                    reason,
                };
                let identity = attest::verify_keys(msg.session, member.id, keys, verifier)
                    .map_err(|e| unattested(e.to_string()))?;
                if identity != device.as_str() {
                    return Err(unattested(format!("signed by {identity}")));
                }
            }
            round.server.receive(member.id, msg.msg)?;
            member.answered = true;
            if round.all_answered(self.config.cohort) {
                self.close_phase(now_ms);
            }
        }
        Ok(self.answer(device, may_join))
    }

    /// What `device` needs next, inviting it if the join phase has room and
    /// it `may_join`.
    fn answer(&mut self, device: &DeviceId, may_join: bool) -> Option<NodeToTv> {
        if let Some(round) = self.round.as_mut() {
            if let Some(member) = round.members.get(device) {
                return round.step_for(member);
            }
        }
        // Not a member: first its outcome of an earlier round, once.
        if let Some(o) = self.outcomes.get_mut(device) {
            if !o.told {
                return Some(told(o));
            }
        }
        let round = self.round.as_mut()?;
        if !may_join || round.phase != Phase::Join || round.next_id >= u32::from(self.config.cohort)
        {
            return None;
        }
        let member = Member {
            id: ClientId(round.next_id),
            answered: false,
        };
        round.next_id += 1;
        round.members.insert(device.clone(), member);
        round.step_for(&member)
    }

    /// Closes the phase whose deadline has passed (and drops expired
    /// outcomes); says what happened. Reports [`Tick::Summed`] for as long as
    /// a summed round waits for [`Coordinator::finish`].
    pub fn tick(&mut self, now_ms: u64) -> Tick {
        let ttl = self.config.outcome_ttl_ms;
        self.outcomes
            .retain(|_, o| now_ms.saturating_sub(o.at_ms) < ttl);
        match &self.round {
            None => Tick::Idle,
            Some(r) if r.phase == Phase::Summed => Tick::Summed,
            Some(r) if now_ms < r.deadline_ms => Tick::Idle,
            Some(_) => self.close_phase(now_ms),
        }
    }

    /// Closes the current phase: the members that did not answer are told
    /// they are out, the rest get the next step; a close the server refuses
    /// fails the round.
    fn close_phase(&mut self, now_ms: u64) -> Tick {
        let Some(round) = self.round.as_mut() else {
            return Tick::Idle;
        };
        let session = round.spec.session.session;
        let closed = match round.phase {
            Phase::Join => round.server.close_keys().map(|list| {
                let next = Pending::Members(list);
                (Phase::Shares, self.config.shares_ms, next)
            }),
            Phase::Shares => round.server.close_shares().map(|inboxes| {
                let next = Pending::Shares(inboxes.into_iter().collect());
                (Phase::Inputs, self.config.inputs_ms, next)
            }),
            Phase::Inputs => round.server.close_inputs().map(|survivors| {
                let next = Pending::Survivors(survivors);
                (Phase::Unmask, self.config.unmask_ms, next)
            }),
            Phase::Unmask => round.server.finish().map(|sum| {
                round.sum = Some(sum);
                (Phase::Summed, 0, Pending::None)
            }),
            Phase::Summed => return Tick::Summed,
        };
        match closed {
            Ok((phase, duration, pending)) => {
                let dropped: Vec<DeviceId> = round
                    .members
                    .iter()
                    .filter(|(_, m)| !m.answered)
                    .map(|(d, _)| d.clone())
                    .collect();
                for d in &dropped {
                    round.members.remove(d);
                }
                for m in round.members.values_mut() {
                    m.answered = false;
                }
                round.phase = phase;
                round.deadline_ms = now_ms.saturating_add(duration);
                round.pending = pending;
                for d in dropped {
                    self.remember(d, session, false, now_ms);
                }
                if phase == Phase::Summed {
                    Tick::Summed
                } else {
                    Tick::Opened(phase)
                }
            }
            Err(error) => {
                self.stats.failed += 1;
                self.end(false, now_ms);
                Tick::Failed { session, error }
            }
        }
    }

    /// Folds the summed round into `totals` if at least k inputs are in it:
    /// the u32 sum is read back as signed, `catalog` names the title of
    /// every slot (`None`: withdrawn; at least the layout's slots) and
    /// `sigma` is the total noise scale in the sum. Ends the round either
    /// way: the members are told whether their input was used.
    pub fn finish(
        &mut self,
        totals: &mut RegionTotals,
        catalog: &[Option<ContentId>],
        sigma: f64,
        now_ms: u64,
    ) -> Result<Folded, RoundError> {
        let Some(round) = self.round.as_ref() else {
            return Err(RoundError::NotSummed);
        };
        let Some(sum) = round.sum.as_ref() else {
            return Err(RoundError::NotSummed);
        };
        let folded = fold(&round.spec, sum, totals, catalog, sigma, &self.aggregate);
        let session = round.spec.session.session;
        let contributors = sum.survivors.len();
        match &folded {
            Ok(()) => self.stats.folded += 1,
            Err(_) => self.stats.not_folded += 1,
        }
        self.end(folded.is_ok(), now_ms);
        folded?;
        Ok(Folded {
            session,
            contributors,
            sigma,
        })
    }

    /// Ends the open round: every member is told `included`.
    fn end(&mut self, included: bool, now_ms: u64) {
        let Some(round) = self.round.take() else {
            return;
        };
        let session = round.spec.session.session;
        for device in round.members.into_keys() {
            self.remember(device, session, included, now_ms);
        }
    }

    /// Remembers a device's outcome, dropping the oldest past the bound.
    fn remember(&mut self, device: DeviceId, session: u64, included: bool, now_ms: u64) {
        self.outcomes.insert(
            device,
            Outcome {
                session,
                included,
                at_ms: now_ms,
                told: false,
            },
        );
        while self.outcomes.len() > self.config.outcomes {
            let oldest = self
                .outcomes
                .iter()
                .min_by_key(|(_, o)| o.at_ms)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => self.outcomes.remove(&d),
                None => break,
            };
        }
    }
}

fn told(o: &mut Outcome) -> NodeToTv {
    o.told = true;
    NodeToTv::Finished {
        session: o.session,
        included: o.included,
    }
}

impl Open {
    /// Whether every member the phase expects has answered (in the join
    /// phase: and the cohort is full).
    fn all_answered(&self, cohort: u16) -> bool {
        let full = self.phase != Phase::Join || self.next_id >= u32::from(cohort);
        full && self.members.values().all(|m| m.answered)
    }

    /// What a member needs next: its invitation until it answers, then the
    /// phase's step until it answers that.
    fn step_for(&self, member: &Member) -> Option<NodeToTv> {
        if member.answered {
            return None;
        }
        let session = self.spec.session.session;
        let msg = match &self.pending {
            Pending::None if self.phase == Phase::Join => {
                return Some(NodeToTv::Invite {
                    spec: self.spec.clone(),
                    member: member.id,
                })
            }
            Pending::None => return None,
            Pending::Members(list) => ToClient::Members(list.clone()),
            Pending::Shares(inboxes) => ToClient::Shares(inboxes.get(&member.id)?.clone()),
            Pending::Survivors(s) => ToClient::Survivors(s.clone()),
        };
        Some(NodeToTv::Step { session, msg })
    }
}

/// Reads the sum back as signed values and folds it, or says why not.
fn fold(
    spec: &RoundSpec,
    sum: &Aggregate,
    totals: &mut RegionTotals,
    catalog: &[Option<ContentId>],
    sigma: f64,
    cfg: &AggregateConfig,
) -> Result<(), AggregateError> {
    let layout = &spec.layout;
    let slots = catalog
        .get(..layout.items() as usize)
        .ok_or(AggregateError::Layout("catalog shorter than the layout"))?;
    let pair_titles: Vec<ContentId> = spec
        .pair_slots
        .iter()
        .map(|&s| slots.get(s as usize).cloned().flatten())
        .collect::<Option<_>>()
        .ok_or(AggregateError::Layout("a pair title's slot is withdrawn"))?;
    let values = omega_privacy::secagg::from_ring(&sum.sum);
    totals.fold(
        &RoundSum {
            layout,
            slots,
            pair_titles: &pair_titles,
            values: &values,
            contributors: sum.survivors.len(),
            sigma,
            scale: spec.scale,
        },
        cfg,
    )
}

#[cfg(test)]
pub(crate) mod tests;
