//! Rounds driven through the coordinator by real secure-aggregation clients
//! in simulated time: each TV syncs on its own schedule, answers every step
//! on its next sync, and leaves when a test says.

use omega_privacy::secagg::attest::testing::Registry;
use omega_privacy::secagg::{AdvertiseKeys, Attestor, Client, MaskedInput, ToServer};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

/// The trusted device credentials of every test (a device's key is made on
/// first use and kept).
pub(crate) fn pki() -> &'static Registry {
    static PKI: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    PKI.get_or_init(Registry::new)
}

/// A secure-aggregation client for `device`, its keys signed with the
/// device's credential.
pub(crate) fn client(
    device: &DeviceId,
    config: Config,
    member: ClientId,
    rng: &mut StdRng,
) -> (Client, AdvertiseKeys) {
    let attestor = pki().attestor(device.as_str(), true);
    Client::new(config, member, &attestor, rng).expect("session")
}

const MIN: u64 = MINUTE_MS;

fn id(s: &str) -> ContentId {
    ContentId::new(s).expect("valid id")
}

fn layout() -> ContributionLayout {
    ContributionLayout::new(4, 3, 5).expect("layout")
}

/// Slots a b c d; pair titles are slots 0 1 2.
fn catalog() -> Vec<Option<ContentId>> {
    ["a", "b", "c", "d"].iter().map(|s| Some(id(s))).collect()
}

fn config(cohort: u16, threshold: u16) -> RoundsConfig {
    RoundsConfig {
        cohort,
        threshold,
        ..RoundsConfig::default()
    }
}

/// One simulated TV.
struct Tv {
    device: DeviceId,
    /// Its noisy contribution, small signed values.
    input: Vec<i64>,
    /// Syncs every `period` minutes, `offset` minutes into the period.
    period: u64,
    offset: u64,
    /// Stops syncing while the round is in this phase (and after it).
    leave_at: Option<Phase>,
    online: bool,
    client: Option<Client>,
    outbox: Option<TvToNode>,
    outcome: Option<(u64, bool)>,
}

impl Tv {
    fn new(k: usize, dim: usize) -> Tv {
        Tv {
            device: DeviceId::new(format!("tv-{k:03}")).expect("device id"),
            input: (0..dim).map(|j| ((k * 7 + j * 3) % 5) as i64 - 2).collect(),
            period: 5,
            offset: 0,
            leave_at: None,
            online: true,
            client: None,
            outbox: None,
            outcome: None,
        }
    }

    /// One sync: sends its pending message, handles the answer.
    fn sync(
        &mut self,
        node: &mut Coordinator,
        now: u64,
        rng: &mut StdRng,
    ) -> Result<(), RoundError> {
        let answer = node.on_sync(&self.device, self.outbox.take(), true, pki(), now)?;
        self.handle(answer, rng);
        Ok(())
    }

    fn handle(&mut self, answer: Option<NodeToTv>, rng: &mut StdRng) {
        match answer {
            None => {}
            Some(NodeToTv::Invite { spec, member }) => {
                let (client, keys) = client(&self.device, spec.session, member, rng);
                self.client = Some(client);
                self.send(spec.session.session, ToServer::AdvertiseKeys(keys));
            }
            Some(NodeToTv::Step { session, msg }) => {
                let input: Vec<u32> = self.input.iter().map(|&v| v as u32).collect();
                let client = self.client.as_mut().expect("a member");
                let reply = match msg {
                    ToClient::Members(list) => {
                        ToServer::ShareKeys(client.share_keys(&list, pki(), rng).expect("share"))
                    }
                    ToClient::Shares(inbox) => {
                        ToServer::MaskedInput(client.masked_input(&inbox, &input).expect("mask"))
                    }
                    ToClient::Survivors(s) => ToServer::Unmask(client.unmask(&s).expect("unmask")),
                };
                self.send(session, reply);
            }
            Some(NodeToTv::Finished { session, included }) => {
                self.outcome = Some((session, included));
                self.client = None;
                self.outbox = None;
            }
        }
    }

    fn send(&mut self, session: u64, msg: ToServer) {
        self.outbox = Some(TvToNode { session, msg });
    }
}

/// A node's coordinator, its totals and a fleet, one minute at a time.
struct Sim {
    node: Coordinator,
    tvs: Vec<Tv>,
    rng: StdRng,
    now: u64,
    totals: RegionTotals,
    finished: Vec<Result<Folded, RoundError>>,
    ticks: Vec<(u64, Tick)>,
    /// Each phase the round was seen in first, with the minute.
    phases: Vec<(u64, Phase)>,
}

const SIGMA: f64 = 2.0;

impl Sim {
    fn new(config: RoundsConfig, tvs: usize) -> Sim {
        let node = Coordinator::new(config, AggregateConfig::default()).expect("config");
        let dim = layout().dimension();
        Sim {
            node,
            tvs: (0..tvs).map(|k| Tv::new(k, dim)).collect(),
            rng: StdRng::seed_from_u64(7),
            now: 0,
            totals: RegionTotals::default(),
            finished: Vec::new(),
            ticks: Vec::new(),
            phases: Vec::new(),
        }
    }

    fn open(&mut self) -> u64 {
        self.node
            .open(layout(), vec![0, 1, 2], 1, 1, self.now, &mut self.rng)
            .expect("opens")
    }

    /// One minute: due TVs sync, then the node ticks (and finishes a summed
    /// round).
    fn minute(&mut self) {
        let phase = self.node.phase().map(|(_, p)| p);
        for tv in &mut self.tvs {
            if let (Some(leave), Some(p)) = (tv.leave_at, phase) {
                if p == leave {
                    tv.online = false;
                }
            }
            if tv.online && self.now % (tv.period * MIN) == tv.offset * MIN {
                tv.sync(&mut self.node, self.now, &mut self.rng)
                    .expect("an honest sync");
            }
        }
        let tick = self.node.tick(self.now);
        if tick == Tick::Summed {
            let done = self
                .node
                .finish(&mut self.totals, &catalog(), SIGMA, self.now);
            self.finished.push(done);
        }
        if tick != Tick::Idle {
            self.ticks.push((self.now, tick));
        }
        if let Some((_, p)) = self.node.phase() {
            if self.phases.last().map(|(_, last)| *last) != Some(p) {
                self.phases.push((self.now / MIN, p));
            }
        }
        self.now += MIN;
    }

    /// Runs until no round is open (or `limit` minutes pass).
    fn run_round(&mut self, limit: u64) {
        for _ in 0..limit {
            self.minute();
            if self.node.phase().is_none() {
                return;
            }
        }
        panic!("round still open after {limit} minutes");
    }

    /// Every TV syncs twice more (to hear its outcome), online or not.
    fn tell_everyone(&mut self) {
        for tv in &mut self.tvs {
            tv.online = true;
            tv.leave_at = None;
            for _ in 0..2 {
                tv.sync(&mut self.node, self.now, &mut self.rng)
                    .expect("an honest sync");
            }
        }
    }

    /// What folding the inputs of `tvs` alone gives.
    fn expected(&self, tvs: &[usize]) -> RegionTotals {
        let mut values = vec![0i64; layout().dimension()];
        for &k in tvs {
            for (v, x) in values.iter_mut().zip(&self.tvs[k].input) {
                *v += x;
            }
        }
        let pairs = [id("a"), id("b"), id("c")];
        let mut want = RegionTotals::default();
        want.fold(
            &RoundSum {
                layout: &layout(),
                slots: &catalog(),
                pair_titles: &pairs,
                values: &values,
                contributors: tvs.len(),
                sigma: SIGMA,
                scale: 1,
            },
            &AggregateConfig::default(),
        )
        .expect("folds");
        want
    }

    fn outcomes(&self) -> Vec<Option<bool>> {
        self.tvs
            .iter()
            .map(|tv| tv.outcome.map(|(_, inc)| inc))
            .collect()
    }
}

#[test]
fn config_needs_a_majority_threshold_of_at_least_k() {
    let agg = AggregateConfig::default();
    assert!(matches!(
        Coordinator::new(config(9, 4), agg),
        Err(RoundError::Config(_))
    ));
    assert_eq!(
        Coordinator::new(config(6, 4), agg).map(|_| ()),
        Err(RoundError::ThresholdBelowK { threshold: 4, k: 5 })
    );
    assert!(Coordinator::new(config(9, 5), agg).is_ok());
    assert!(Coordinator::new(RoundsConfig::default(), agg).is_ok());
}

#[test]
fn a_full_round_sums_exactly_and_folds_into_the_totals() {
    let mut sim = Sim::new(config(6, 5), 6);
    let session = sim.open();
    assert_eq!(
        sim.node
            .open(layout(), vec![0, 1, 2], 1, 1, 0, &mut sim.rng),
        Err(RoundError::RoundOpen(session))
    );
    sim.run_round(200);
    // Every phase closed early, as soon as all six had answered.
    assert!(sim.now < 40 * MIN, "closed at {} min", sim.now / MIN);
    let folded = sim.finished[0].clone().expect("folded");
    assert_eq!((folded.session, folded.contributors), (session, 6));
    assert_eq!(sim.totals, sim.expected(&[0, 1, 2, 3, 4, 5]));
    assert!(
        sim.totals.titles.values().any(|&v| v < 0.0),
        "signed sums come back"
    );
    sim.tell_everyone();
    assert!(sim.tvs.iter().all(|tv| tv.outcome == Some((session, true))));
    let stats = sim.node.stats();
    assert_eq!((stats.opened, stats.folded, stats.failed), (1, 1, 0));
}

#[test]
fn dropouts_up_to_n_minus_t_still_sum_the_survivors() {
    let mut sim = Sim::new(config(9, 5), 9);
    // Two leave before sending their shares, two before their input.
    sim.tvs[1].leave_at = Some(Phase::Shares);
    sim.tvs[4].leave_at = Some(Phase::Shares);
    sim.tvs[2].leave_at = Some(Phase::Inputs);
    sim.tvs[8].leave_at = Some(Phase::Inputs);
    sim.open();
    sim.run_round(500);
    sim.finished[0].clone().expect("folded");
    assert_eq!(sim.totals, sim.expected(&[0, 3, 5, 6, 7]));
    sim.tell_everyone();
    let (t, f) = (Some(true), Some(false));
    assert_eq!(sim.outcomes(), vec![t, f, f, t, f, t, t, t, f]);
}

#[test]
fn too_few_joiners_fail_the_round_and_a_later_round_succeeds() {
    let mut sim = Sim::new(config(9, 5), 6);
    for tv in &mut sim.tvs[4..] {
        tv.online = false;
    }
    let first = sim.open();
    sim.run_round(100);
    assert!(sim.finished.is_empty());
    assert!(matches!(
        sim.ticks.last(),
        Some((at, Tick::Failed { session, error: ServerError::TooFew { got: 4, need: 5 } }))
            if *session == first && *at == 40 * MIN
    ));
    assert_eq!(sim.node.stats().failed, 1);

    // Six TVs now: the four of the first round hear their outcome on their
    // next sync, then join.
    for tv in &mut sim.tvs {
        tv.online = true;
    }
    let second = sim.open();
    sim.run_round(300);
    let folded = sim.finished[0].clone().expect("folded");
    assert_eq!(folded.session, second);
    assert_eq!(sim.totals, sim.expected(&[0, 1, 2, 3, 4, 5]));
    sim.tell_everyone();
    assert!(sim.tvs.iter().all(|tv| tv.outcome == Some((second, true))));
}

#[test]
fn refused_messages_change_nothing() {
    let mut sim = Sim::new(config(6, 5), 7);
    let session = sim.open();
    let rng = &mut sim.rng;
    let node = &mut sim.node;
    // tv-006 stays outside: the cohort is full before it asks.
    for tv in &mut sim.tvs[..6] {
        tv.sync(node, 0, rng).expect("invited");
    }
    let outsider = sim.tvs[6].device.clone();
    assert_eq!(
        node.on_sync(&outsider, None, true, pki(), 0),
        Ok(None),
        "no room"
    );

    // Keys: a stranger's, an unknown session's, then each member's.
    let keys0 = sim.tvs[0].outbox.clone().expect("keys");
    assert_eq!(
        node.on_sync(&outsider, Some(keys0.clone()), true, pki(), 0),
        Err(RoundError::NotMember(outsider.clone()))
    );
    let other_session = TvToNode {
        session: session ^ 1,
        ..keys0.clone()
    };
    assert_eq!(
        node.on_sync(&sim.tvs[0].device, Some(other_session), true, pki(), 0),
        Err(RoundError::UnknownSession(session ^ 1))
    );
    // tv-005's keys signed by another device, or by a key nobody issued:
    // every TV would abandon a list holding them, so the node refuses them.
    let Some(ToServer::AdvertiseKeys(keys5)) = sim.tvs[5].outbox.clone().map(|m| m.msg) else {
        panic!("tv-005 was invited")
    };
    let statement = attest::statement(session, ClientId(5), &keys5.channel_pk, &keys5.mask_pk);
    for signer in [
        pki().attestor("tv-004", true),
        pki().attestor("tv-005", false),
    ] {
        let forged = TvToNode {
            session,
            msg: ToServer::AdvertiseKeys(AdvertiseKeys {
                attestation: signer.attest(&statement).expect("sign"),
                ..keys5.clone()
            }),
        };
        assert!(matches!(
            node.on_sync(&sim.tvs[5].device, Some(forged), true, pki(), 0),
            Err(RoundError::Unattested { .. })
        ));
    }
    for tv in &mut sim.tvs[..5] {
        tv.sync(node, MIN, rng).expect("keys");
    }
    assert_eq!(
        node.on_sync(&sim.tvs[0].device, Some(keys0), true, pki(), MIN),
        Err(RoundError::Refused(ServerError::Duplicate(ClientId(0))))
    );
    sim.tvs[5].sync(node, MIN, rng).expect("keys");
    assert_eq!(node.phase(), Some((session, Phase::Shares)));

    // Shares: everyone gets the member list and answers.
    for tv in &mut sim.tvs[..6] {
        tv.sync(node, 2 * MIN, rng).expect("member list");
    }
    // tv-001 sends tv-000's shares as its own: they are taken as tv-001's
    // and refused (not addressed to the others of tv-001).
    let shares0 = sim.tvs[0].outbox.clone().expect("shares");
    assert_eq!(
        node.on_sync(&sim.tvs[1].device, Some(shares0), true, pki(), 3 * MIN),
        Err(RoundError::Refused(ServerError::Addressees(ClientId(1))))
    );
    // An advertisement now is out of phase.
    let (_, keys) = client(
        &sim.tvs[2].device,
        Config {
            session,
            cohort: 6,
            threshold: 5,
            dim: 7,
        },
        ClientId(2),
        rng,
    );
    let stale = TvToNode {
        session,
        msg: ToServer::AdvertiseKeys(keys),
    };
    assert!(matches!(
        node.on_sync(&sim.tvs[2].device, Some(stale), true, pki(), 3 * MIN),
        Err(RoundError::Refused(ServerError::WrongRound { .. }))
    ));
    assert_eq!(node.phase(), Some((session, Phase::Shares)));

    // None of it mattered: the round completes with everyone's exact sum.
    sim.tvs.pop();
    sim.now = 3 * MIN;
    sim.run_round(300);
    sim.finished[0].clone().expect("folded");
    assert_eq!(sim.totals, sim.expected(&[0, 1, 2, 3, 4, 5]));
}

#[test]
fn a_sum_that_cannot_be_folded_ends_the_round_unused() {
    let mut sim = Sim::new(config(6, 5), 6);
    let session = sim.open();
    // Run the round by hand up to the sum, then finish with a catalog that
    // withdrew a pair title's slot.
    while sim.node.phase() != Some((session, Phase::Summed)) {
        assert!(sim.now < 200 * MIN, "never summed");
        for tv in &mut sim.tvs {
            tv.sync(&mut sim.node, sim.now, &mut sim.rng)
                .expect("an honest sync");
        }
        sim.now += 5 * MIN;
    }
    assert_eq!(sim.node.tick(sim.now), Tick::Summed);
    let mut withdrawn = catalog();
    withdrawn[1] = None;
    assert!(matches!(
        sim.node.finish(&mut sim.totals, &withdrawn, SIGMA, sim.now),
        Err(RoundError::NotFolded(AggregateError::Layout(_)))
    ));
    assert_eq!(sim.totals, RegionTotals::default());
    assert_eq!(sim.node.phase(), None);
    assert_eq!(
        sim.node.finish(&mut sim.totals, &catalog(), SIGMA, sim.now),
        Err(RoundError::NotSummed)
    );
    sim.tell_everyone();
    assert!(sim
        .tvs
        .iter()
        .all(|tv| tv.outcome == Some((session, false))));
    assert_eq!(sim.node.stats().not_folded, 1);
}

#[test]
fn deadlines_close_phases_for_tvs_syncing_every_15_minutes() {
    // Seven of a cohort of nine, each on its own 15-minute schedule: the
    // join phase cannot fill and closes at its deadline; one TV leaves
    // before its input, so that phase waits for its deadline too.
    let mut sim = Sim::new(config(9, 5), 7);
    for (k, tv) in sim.tvs.iter_mut().enumerate() {
        tv.period = 15;
        tv.offset = 2 * k as u64;
    }
    sim.tvs[3].leave_at = Some(Phase::Inputs);
    sim.open();
    sim.run_round(1000);
    let opened = &sim.phases[1..];
    // Join closes at 40; Shares early (all answered on their second sync);
    // Inputs at its deadline, 40 minutes after it opened.
    assert_eq!(opened[0], (40, Phase::Shares));
    assert_eq!(opened[1].1, Phase::Inputs);
    assert!(opened[1].0 < 80, "shares closed early: {opened:?}");
    assert_eq!(opened[2], (opened[1].0 + 40, Phase::Unmask));
    sim.finished[0].clone().expect("folded");
    assert_eq!(sim.totals, sim.expected(&[0, 1, 2, 4, 5, 6]));
}

#[test]
fn outcomes_are_told_once_kept_for_late_messages_and_expire() {
    let mut cfg = config(6, 5);
    cfg.outcomes = 4;
    let mut sim = Sim::new(cfg, 6);
    let session = sim.open();
    sim.run_round(200);
    sim.finished[0].clone().expect("folded");
    // Six outcomes, four kept: the two first remembered are gone.
    let told: Vec<bool> = sim
        .tvs
        .iter()
        .map(|tv| sim.node.outcomes.contains_key(&tv.device))
        .collect();
    assert_eq!(told.iter().filter(|&&k| k).count(), 4);

    // Told once on a sync without a message, again on a late message.
    let kept = sim
        .tvs
        .iter()
        .position(|tv| sim.node.outcomes.contains_key(&tv.device));
    let tv = &sim.tvs[kept.expect("one kept")];
    let late = TvToNode {
        session,
        msg: ToServer::MaskedInput(MaskedInput { masked: vec![0; 7] }),
    };
    let finished = Some(NodeToTv::Finished {
        session,
        included: true,
    });
    assert_eq!(
        sim.node.on_sync(&tv.device, None, true, pki(), sim.now),
        Ok(finished.clone())
    );
    assert_eq!(
        sim.node.on_sync(&tv.device, None, true, pki(), sim.now),
        Ok(None)
    );
    assert_eq!(
        sim.node
            .on_sync(&tv.device, Some(late.clone()), true, pki(), sim.now),
        Ok(finished)
    );
    // After the expiry the round is unknown.
    let later = sim.now + RoundsConfig::default().outcome_ttl_ms;
    assert_eq!(sim.node.tick(later), Tick::Idle);
    assert!(sim.node.outcomes.is_empty());
    assert_eq!(
        sim.node.on_sync(&tv.device, Some(late), true, pki(), later),
        Err(RoundError::UnknownSession(session))
    );
}

#[test]
fn a_sum_of_fewer_than_k_inputs_is_not_folded() {
    // Unreachable through a coordinator (t >= k), so the fold itself.
    let layout = layout();
    let spec = RoundSpec {
        session: Config {
            session: 1,
            cohort: 6,
            threshold: 5,
            dim: 7,
        },
        layout,
        pair_slots: vec![0, 1, 2],
        catalog_version: 1,
        scale: 1,
    };
    let mut sum = Aggregate {
        sum: vec![3; 7],
        survivors: (0..4).map(ClientId).collect(),
    };
    let cfg = AggregateConfig::default();
    let mut totals = RegionTotals::default();
    assert_eq!(
        fold(&spec, &sum, &mut totals, &catalog(), SIGMA, &cfg),
        Err(AggregateError::TooFewContributors { got: 4, k: 5 })
    );
    assert_eq!(totals, RegionTotals::default());
    sum.survivors.push(ClientId(4));
    fold(&spec, &sum, &mut totals, &catalog(), SIGMA, &cfg).expect("five fold");
    assert_eq!(totals.contributors, 5);
}
