//! The learner driven by real secure-aggregation clients in simulated time.

use omega_privacy::secagg::{Client, ToClient, ToServer};

use crate::rounds::tests::{client, pki};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

const MIN: u64 = 60_000;

fn id(s: &str) -> ContentId {
    ContentId::new(s).expect("valid id")
}

fn region() -> Region {
    Region::new("eu-west").expect("region")
}

fn config() -> LearningConfig {
    LearningConfig {
        rounds: RoundsConfig {
            cohort: 6,
            threshold: 5,
            ..RoundsConfig::default()
        },
        interval_ms: 60 * MIN,
        pair_titles: 3,
        window: 2,
        z: 0.0,
        page_titles: 2,
        ..LearningConfig::default()
    }
}

/// A TV without noise: its input is given per layout by `input`.
struct Tv {
    device: DeviceId,
    client: Option<Client>,
    outbox: Option<TvToNode>,
    input: Vec<u32>,
    outcome: Option<bool>,
}

/// Catalog d c b a (any order: slots are in id order a b c d).
fn catalog() -> Vec<ContentId> {
    ["d", "c", "b", "a"].iter().map(|s| id(s)).collect()
}

fn run_round(
    l: &mut Learning,
    tvs: &mut [Tv],
    now: &mut u64,
    rng: &mut StdRng,
    inputs: &dyn Fn(usize, &ContributionLayout) -> Vec<u32>,
) {
    for _ in 0..200 {
        *now += MIN;
        for (k, tv) in tvs.iter_mut().enumerate() {
            let (next, err) = l.on_sync(&region(), &tv.device, 7, tv.outbox.take(), *now);
            assert_eq!(err, None);
            match next {
                None => {}
                Some(NodeToTv::Invite { spec, member }) => {
                    // Entries travel as 0/scale (no noise in these TVs).
                    tv.input = inputs(k, &spec.layout)
                        .into_iter()
                        .map(|v| v * spec.scale)
                        .collect();
                    let (c, keys) = client(&tv.device, spec.session, member, rng);
                    tv.client = Some(c);
                    tv.outbox = Some(TvToNode {
                        session: spec.session.session,
                        msg: ToServer::AdvertiseKeys(keys),
                    });
                }
                Some(NodeToTv::Step { session, msg }) => {
                    let c = tv.client.as_mut().expect("member");
                    let reply = match msg {
                        ToClient::Members(list) => {
                            ToServer::ShareKeys(c.share_keys(&list, pki(), rng).expect("share"))
                        }
                        ToClient::Shares(inbox) => {
                            ToServer::MaskedInput(c.masked_input(&inbox, &tv.input).expect("mask"))
                        }
                        ToClient::Survivors(s) => ToServer::Unmask(c.unmask(&s).expect("unmask")),
                    };
                    tv.outbox = Some(TvToNode {
                        session,
                        msg: reply,
                    });
                }
                Some(NodeToTv::Finished { included, .. }) => {
                    tv.outcome = Some(included);
                    tv.client = None;
                }
            }
        }
        if tvs.iter().all(|t| t.outcome.is_some()) {
            return;
        }
    }
    panic!("the round did not finish");
}

fn tvs(n: usize) -> Vec<Tv> {
    (0..n)
        .map(|k| Tv {
            device: DeviceId::new(format!("tv-{k}")).expect("device"),
            client: None,
            outbox: None,
            input: Vec::new(),
            outcome: None,
        })
        .collect()
}

#[test]
fn a_round_opens_folds_publishes_and_the_next_pairs_the_most_watched_titles() {
    let mut l =
        Learning::new(config(), &[region()], Vec::new(), Arc::new(pki().clone())).expect("config");
    let mut rng = StdRng::seed_from_u64(1);
    let mut now = 0;
    assert!(l.wants_round(&region(), now));
    assert_eq!(
        l.fleet_page(&region(), FleetCursor::default()),
        None,
        "nothing published yet"
    );
    l.open(&region(), 7, &catalog(), now, &mut rng)
        .expect("opens");
    assert!(!l.wants_round(&region(), now), "one round at a time");
    let mut fleet = tvs(6);
    // Round 1: no pair titles yet. Slots a b c d; every TV watched c, TVs 0-3 b, TV 0 a.
    run_round(&mut l, &mut fleet, &mut now, &mut rng, &|k, layout| {
        assert_eq!((layout.items(), layout.pair_items()), (4, 0));
        vec![u32::from(k == 0), u32::from(k < 4), 1, 0]
    });
    assert!(fleet.iter().all(|t| t.outcome == Some(true)));
    let changed = l.take_changed();
    assert_eq!(changed.len(), 1);
    assert!(l.take_changed().is_empty(), "taken once");
    let p = l.publication(&region()).expect("region");
    assert_eq!(p.version, 1);
    let order: Vec<(&str, f32)> = p.titles.iter().map(|t| (t.id.as_str(), t.total)).collect();
    assert_eq!(
        order,
        vec![("c", 6.0), ("b", 4.0), ("a", 1.0)],
        "d (0) is not published"
    );

    // Paged two titles at a time.
    let first = l
        .fleet_page(&region(), FleetCursor::default())
        .expect("page");
    assert_eq!(
        (
            first.version,
            first.offset,
            first.total_titles,
            first.titles.len()
        ),
        (1, 0, 3, 2)
    );
    let second = l
        .fleet_page(
            &region(),
            FleetCursor {
                version: 1,
                offset: 2,
            },
        )
        .expect("page");
    assert_eq!((second.offset, second.titles[0].id.as_str()), (2, "a"));
    assert_eq!(
        l.fleet_page(
            &region(),
            FleetCursor {
                version: 1,
                offset: 3
            }
        ),
        None,
        "caught up"
    );

    // The next round waits for the interval, then pairs c b a (slots 2 1 0).
    assert!(
        !l.wants_round(&region(), now + 55 * MIN),
        "folded a minute or two before the last outcome"
    );
    assert!(l.wants_round(&region(), now + 60 * MIN));
    now += 60 * MIN;
    l.open(&region(), 7, &catalog(), now, &mut rng)
        .expect("opens");
    for tv in &mut fleet {
        tv.outcome = None;
    }
    run_round(&mut l, &mut fleet, &mut now, &mut rng, &|_, layout| {
        assert_eq!((layout.items(), layout.pair_items()), (4, 3));
        let mut v = vec![0u32; layout.dimension()];
        // Everyone watched c then b: the pair (c, b) = pair indices (0, 1).
        v[1] = 1;
        v[2] = 1;
        v[layout.pair_entry(0, 1).expect("pair")] = 1;
        v
    });
    let p = l.publication(&region()).expect("region");
    assert_eq!(p.version, 2);
    let c = p.titles.iter().find(|t| t.id.as_str() == "c").expect("c");
    assert_eq!(c.partners, vec![(id("b"), 6.0)]);
    // A new version starts a device again at 0.
    let page = l
        .fleet_page(
            &region(),
            FleetCursor {
                version: 1,
                offset: 3,
            },
        )
        .expect("page");
    assert_eq!((page.version, page.offset), (2, 0));

    // A restart from the stored totals publishes the same version.
    let stored = l.take_changed();
    let again =
        Learning::new(config(), &[region()], stored, Arc::new(pki().clone())).expect("config");
    assert_eq!(again.publication(&region()), l.publication(&region()));
}

#[test]
fn bad_inputs_are_refused() {
    let mut rng = StdRng::seed_from_u64(2);
    let bad_k = LearningConfig { k: 4, ..config() };
    assert!(matches!(
        Learning::new(bad_k, &[region()], Vec::new(), Arc::new(pki().clone())),
        Err(LearningError::Aggregate(_))
    ));
    let bad_page = LearningConfig {
        page_titles: 201,
        ..config()
    };
    assert!(matches!(
        Learning::new(bad_page, &[region()], Vec::new(), Arc::new(pki().clone())),
        Err(LearningError::Size { .. })
    ));
    // Every member of a round must be able to hear its outcome.
    let mut forgetful = config();
    forgetful.rounds.outcomes = 5;
    assert!(matches!(
        Learning::new(forgetful, &[region()], Vec::new(), Arc::new(pki().clone())),
        Err(LearningError::Size {
            field: "rounds.outcomes",
            ..
        })
    ));
    // A member list of 900 signed members would not fit an answer frame.
    let mut crowded = config();
    crowded.rounds.cohort = 900;
    crowded.rounds.threshold = 600;
    crowded.rounds.outcomes = 2000;
    assert!(matches!(
        Learning::new(crowded, &[region()], Vec::new(), Arc::new(pki().clone())),
        Err(LearningError::Size {
            field: "rounds.cohort",
            ..
        })
    ));
    let mut l =
        Learning::new(config(), &[region()], Vec::new(), Arc::new(pki().clone())).expect("config");
    let other = Region::new("us-east").expect("region");
    assert!(!l.wants_round(&other, 0));
    assert_eq!(
        l.open(&other, 1, &catalog(), 0, &mut rng),
        Err(LearningError::Region(other.clone()))
    );
    let (next, err) = l.on_sync(&other, &DeviceId::new("tv-1").expect("id"), 7, None, 0);
    assert_eq!((next, err), (None, Some(LearningError::Region(other))));
    assert_eq!(
        l.open(&region(), 1, &[], 0, &mut rng),
        Err(LearningError::EmptyCatalog)
    );
    let huge: Vec<ContentId> = (0..=MAX_ROUND_DIM).map(|k| id(&format!("t{k}"))).collect();
    assert!(matches!(
        l.open(&region(), 1, &huge, 0, &mut rng),
        Err(LearningError::TooLarge { .. })
    ));
    // A message for a round the node does not know changes nothing.
    let msg = TvToNode {
        session: 99,
        msg: ToServer::ShareKeys(omega_privacy::secagg::ShareKeys { sealed: Vec::new() }),
    };
    let (_, err) = l.on_sync(
        &region(),
        &DeviceId::new("tv-1").expect("id"),
        7,
        Some(msg),
        0,
    );
    assert!(matches!(
        err,
        Some(LearningError::Round(RoundError::UnknownSession(99)))
    ));
}

#[test]
fn disabled_learning_opens_nothing_and_answers_nothing() {
    let cfg = LearningConfig {
        enabled: false,
        ..config()
    };
    let mut l =
        Learning::new(cfg, &[region()], Vec::new(), Arc::new(pki().clone())).expect("config");
    assert!(!l.wants_round(&region(), 0));
    let (next, err) = l.on_sync(&region(), &DeviceId::new("tv-1").expect("id"), 7, None, 0);
    assert_eq!((next, err), (None, None));
}

#[test]
fn k_minus_one_sybils_and_one_victim_never_get_a_sum_folded_or_published() {
    // The default rounds need t = 105 answers; four attacker devices (k - 1)
    // and one victim are five: every round fails at its join close, and
    // nothing about the victim is ever folded or published.
    let cfg = LearningConfig {
        interval_ms: 60 * MIN,
        ..LearningConfig::default()
    };
    let mut l =
        Learning::new(cfg, &[region()], Vec::new(), Arc::new(pki().clone())).expect("config");
    let mut rng = StdRng::seed_from_u64(3);
    let mut fleet = tvs(5);
    let mut now = 0;
    let mut opened = 0;
    while now < 3 * 24 * 60 * MIN {
        if l.wants_round(&region(), now) {
            l.open(&region(), 7, &catalog(), now, &mut rng)
                .expect("opens");
            opened += 1;
        }
        for tv in &mut fleet {
            let (next, _) = l.on_sync(&region(), &tv.device, 7, tv.outbox.take(), now);
            if let Some(NodeToTv::Invite { spec, member }) = next {
                let (c, keys) = client(&tv.device, spec.session, member, &mut rng);
                tv.client = Some(c);
                tv.outbox = Some(TvToNode {
                    session: spec.session.session,
                    msg: ToServer::AdvertiseKeys(keys),
                });
            }
        }
        now += 10 * MIN;
    }
    assert!(opened > 10, "rounds kept opening: {opened}");
    let stats = &l.stats()[0];
    assert_eq!(
        (stats.rounds.folded, stats.fleet_version),
        (0, 0),
        "{stats:?}"
    );
    assert!(stats.rounds.failed >= 10, "{stats:?}");
    assert_eq!(l.fleet_page(&region(), FleetCursor::default()), None);
    assert!(l.take_changed().is_empty());
}

#[test]
fn only_a_device_holding_the_rounds_catalog_version_is_invited() {
    let mut l =
        Learning::new(config(), &[region()], Vec::new(), Arc::new(pki().clone())).expect("config");
    let mut rng = StdRng::seed_from_u64(4);
    l.open(&region(), 7, &catalog(), 0, &mut rng)
        .expect("opens");
    let d = DeviceId::new("tv-1").expect("id");
    assert_eq!(
        l.on_sync(&region(), &d, 6, None, 0),
        (None, None),
        "still paging the catalog"
    );
    let (next, err) = l.on_sync(&region(), &d, 7, None, 0);
    assert_eq!(err, None);
    assert!(matches!(next, Some(NodeToTv::Invite { .. })), "{next:?}");
}
