//! The learner driven by real secure-aggregation clients in simulated time.

use omega_privacy::secagg::{Client, ToClient, ToServer};

use crate::rounds::tests::{client, pki};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;
use crate::store::{MemoryStore, PatternStore, StoreError};

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

/// Stores `writes` in `store` (each must be taken) and hands them back.
fn write_all(l: &mut Learning, store: &MemoryStore, writes: Vec<TotalsWrite>) {
    for w in writes {
        store
            .put_region_totals(&w.region, w.read, &w.totals)
            .expect("stored");
        l.written(w);
    }
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
    assert_eq!(
        l.publication(&region()).map(|p| p.version),
        Some(0),
        "published once the store holds it"
    );
    let store = MemoryStore::new();
    let writes = l.take_writes();
    assert_eq!(writes.len(), 1);
    assert!(l.take_writes().is_empty(), "taken once");
    write_all(&mut l, &store, writes);
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
    let writes = l.take_writes();
    write_all(&mut l, &store, writes);
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
    let stored = vec![(
        region(),
        store
            .region_totals(&region())
            .expect("read")
            .expect("stored"),
    )];
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
    assert!(l.take_writes().is_empty());
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

/// Two nodes on one store each fold a round from the same (empty) totals:
/// the second write is refused, re-read and added to the first one's, so
/// the store holds both rounds; the node that folded first serves the
/// newer totals after a refresh, under the same version.
#[test]
fn nodes_sharing_a_store_add_their_rounds_and_serve_the_newest_totals() {
    let store = MemoryStore::new();
    let mut rng = StdRng::seed_from_u64(5);
    let new = || {
        Learning::new(config(), &[region()], Vec::new(), Arc::new(pki().clone())).expect("config")
    };
    let (mut a, mut b) = (new(), new());
    let mut now = 0;
    a.open(&region(), 7, &catalog(), now, &mut rng)
        .expect("opens");
    // Slots a b c d: node A's TVs watched c, two of them d.
    run_round(&mut a, &mut tvs(6), &mut now, &mut rng, &|k, _| {
        vec![0, 0, 1, u32::from(k < 2)]
    });
    b.open(&region(), 7, &catalog(), now, &mut rng)
        .expect("opens");
    // Node B's TVs watched a.
    run_round(&mut b, &mut tvs(6), &mut now, &mut rng, &|_, _| {
        vec![1, 0, 0, 0]
    });
    let wa = a.take_writes();
    let mut wb = b.take_writes();
    assert_eq!((wa.len(), wb.len()), (1, 1));
    assert_eq!((wa[0].read, wb[0].read), (None, None), "both read nothing");
    write_all(&mut a, &store, wa);
    let wb = wb.pop().expect("write");
    let refused = store.put_region_totals(&wb.region, wb.read, &wb.totals);
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store
            .region_totals(&region())
            .expect("read")
            .map(|t| t.rounds),
        Some(1),
        "A's round is not overwritten"
    );
    b.conflict(&wb, store.region_totals(&region()).expect("read"));
    assert_eq!(
        b.publication(&region()),
        a.publication(&region()),
        "B serves what the store holds meanwhile"
    );
    let retry = b.take_writes();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].read, Some(1), "added to A's totals");
    write_all(&mut b, &store, retry);
    let t = store
        .region_totals(&region())
        .expect("read")
        .expect("stored");
    assert_eq!((t.rounds, t.contributors), (2, 12));
    let titles: Vec<(&str, f64)> = t.titles.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        titles,
        vec![("a", 6.0), ("b", 0.0), ("c", 6.0), ("d", 2.0)],
        "both rounds' contributions"
    );
    assert_eq!(b.publication(&region()).map(|p| p.version), Some(2));
    assert!(!b.is_newer(&region(), Some(2)), "B wrote them");

    // A serves B's round after its next refresh, under the same version.
    assert_eq!(a.publication(&region()).map(|p| p.version), Some(1));
    assert!(a.refresh_due(&region(), now));
    let rounds = store.region_totals_rounds(&region()).expect("read");
    assert!(a.is_newer(&region(), rounds), "2 rounds stored, 1 here");
    assert!(!a.is_newer(&region(), Some(1)) && !a.is_newer(&region(), None));
    a.stored_totals(&region(), store.region_totals(&region()).expect("read"));
    assert_eq!(a.publication(&region()), b.publication(&region()));
    assert_eq!(
        a.fleet_page(&region(), FleetCursor::default()),
        b.fleet_page(&region(), FleetCursor::default())
    );
    assert!(
        !a.refresh_due(&region(), now + 4_999),
        "at most every refresh_ms"
    );
    // An older read (a slow refresh) never takes A back.
    let mut old = t.clone();
    old.rounds = 1;
    a.stored_totals(&region(), Some(old));
    assert_eq!(a.publication(&region()).map(|p| p.version), Some(2));

    // A write that fails (not a conflict) stays pending until the next
    // refresh, then carries the same round.
    now += 60 * MIN;
    a.open(&region(), 7, &catalog(), now, &mut rng)
        .expect("opens");
    run_round(&mut a, &mut tvs(6), &mut now, &mut rng, &|_, layout| {
        let mut v = vec![0; layout.dimension()];
        v[1] = 1;
        v
    });
    let failed = a.take_writes();
    assert_eq!(failed.len(), 1);
    a.unwritten(&failed[0]);
    assert!(a.take_writes().is_empty(), "not before the next refresh");
    assert!(a.refresh_due(&region(), now + 5_000));
    let again = a.take_writes();
    assert_eq!(again, failed, "the same round, on the same read");
    write_all(&mut a, &store, again);
    let t = store
        .region_totals(&region())
        .expect("read")
        .expect("stored");
    assert_eq!((t.rounds, t.titles[&id("b")]), (3, 6.0));
}
