//! The sync core against a real redb store (and a fault-injecting wrapper):
//! versions, replays, resyncs, validation, rate limit, globals, catalog pages.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use omega_constellation::store::suite::{
    bucket, catalog_entry, device, embedding, global, region, trend,
};
use omega_constellation::store::{FailingStore, MemoryStore, PatternStore, RedbStore};
use omega_constellation::sync::{self, SyncConfig, SyncCore, SyncOutcome};
use omega_protocol::{
    codec, DeviceId, PackedPatternDelta, PackedPatternSummary, PackedSyncRequest,
    PackedSyncResponse, PatternId, SyncError, SyncKind,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A core and its store, driven as a shard actor drives them
/// ([`sync::run`]: reads, decision, write).
struct Shard<S> {
    core: SyncCore,
    store: S,
}

impl<S: PatternStore> Shard<S> {
    fn new(store: S, config: SyncConfig) -> Result<Self, omega_constellation::sync::ConfigError> {
        Ok(Self {
            core: SyncCore::new(config)?,
            store,
        })
    }

    fn store(&self) -> &S {
        &self.store
    }

    fn handle(
        &mut self,
        device: &DeviceId,
        req: PackedSyncRequest,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> PackedSyncResponse {
        self.handle_with_outcome(device, req, now_ms, rng).0
    }

    fn handle_with_outcome(
        &mut self,
        device: &DeviceId,
        req: PackedSyncRequest,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> (PackedSyncResponse, SyncOutcome) {
        sync::run(&mut self.core, &self.store, None, device, req, now_ms, rng)
    }
}

const MIN: u64 = 60_000;

fn summary(id: u64, seed: u64) -> PackedPatternSummary {
    PackedPatternSummary {
        id: PatternId(id),
        bucket: bucket(seed),
        embedding: embedding(seed).to_ternary(),
        success_rate: 0.5,
        samples: 4,
    }
}

fn req(kind: SyncKind, base: u64, version: u64, delta: PackedPatternDelta) -> PackedSyncRequest {
    PackedSyncRequest {
        kind,
        base_version: base,
        pattern_version: version,
        global_version: 0,
        catalog_version: 0,
        region: region(1),
        delta,
        round: None,
        fleet: Default::default(),
    }
}

fn added(ps: Vec<PackedPatternSummary>) -> PackedPatternDelta {
    PackedPatternDelta {
        added: ps,
        ..PackedPatternDelta::default()
    }
}

/// The default configuration serving the test regions `r0`..`r3`.
fn config() -> SyncConfig {
    SyncConfig {
        allowed_regions: (0..4).map(region).collect(),
        ..SyncConfig::default()
    }
}

fn redb_core() -> (tempfile::TempDir, Shard<Arc<RedbStore>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path().join("s.redb")).unwrap());
    (dir, Shard::new(store, config()).unwrap())
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

#[test]
fn a_snapshot_then_deltas_are_applied_in_version_order() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let dev = device(1);
    let snap = req(
        SyncKind::Snapshot,
        0,
        3,
        added(vec![summary(1, 1), summary(2, 2)]),
    );
    let ok = core.handle(&dev, snap, 1_000, &mut rng).unwrap();
    assert_eq!(ok.acked_version, 3);
    assert!((300..=900).contains(&ok.next_sync_secs));
    let stored = core.store().device_patterns(&dev).unwrap();
    assert_eq!(stored.len(), 2);
    // Kept exactly as it came.
    assert_eq!(stored[0].embedding, embedding(1).to_ternary());
    assert_eq!(stored[0].updated_at_ms, 1_000);

    let delta = PackedPatternDelta {
        added: vec![summary(3, 3)],
        updated: vec![summary(1, 11)],
        removed: vec![PatternId(2)],
    };
    let (resp, outcome) = core.handle_with_outcome(
        &dev,
        req(SyncKind::Delta, 3, 4, delta),
        1_000 + MIN,
        &mut rng,
    );
    assert_eq!(resp.unwrap().acked_version, 4);
    assert_eq!(outcome, SyncOutcome::Applied);
    let stored = core.store().device_patterns(&dev).unwrap();
    assert_eq!(
        stored.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(stored[0].embedding, embedding(11).to_ternary());
    let info = core.store().device_state(&dev).unwrap().unwrap();
    assert_eq!(
        (info.state.pattern_version, info.state.last_sync_ms),
        (4, 1_000 + MIN)
    );
}

#[test]
fn a_replay_is_acknowledged_without_reapplying() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let dev = device(1);
    let first = req(SyncKind::Delta, 0, 1, added(vec![summary(1, 1)]));
    core.handle(&dev, first.clone(), 0, &mut rng).unwrap();
    let before = core.store().device_patterns(&dev).unwrap();
    let (resp, outcome) = core.handle_with_outcome(&dev, first, MIN, &mut rng);
    assert_eq!(resp.unwrap().acked_version, 1);
    assert_eq!(outcome, SyncOutcome::Replayed);
    // Nothing rewritten: the pattern keeps its first timestamp.
    assert_eq!(core.store().device_patterns(&dev).unwrap(), before);
    // A replayed snapshot too.
    let snap = req(SyncKind::Snapshot, 0, 1, added(vec![summary(9, 9)]));
    let (resp, outcome) = core.handle_with_outcome(&dev, snap, 2 * MIN, &mut rng);
    assert_eq!(
        (resp.unwrap().acked_version, outcome),
        (1, SyncOutcome::Replayed)
    );
    assert_eq!(core.store().device_patterns(&dev).unwrap(), before);
}

#[test]
fn an_unknown_base_requires_a_resync_charged_to_the_rate_limit() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let dev = device(1);
    let lost = req(SyncKind::Delta, 5, 6, added(vec![summary(1, 1)]));
    assert_eq!(
        core.handle(&dev, lost, 0, &mut rng),
        Err(SyncError::ResyncRequired { node_version: 0 })
    );
    // Charged: the snapshot waits for the next interval like any sync, so
    // provoking (or answering) ResyncRequired cannot speed a device up.
    let snap = req(SyncKind::Snapshot, 0, 6, added(vec![summary(1, 1)]));
    assert_eq!(
        core.handle(&dev, snap.clone(), 1, &mut rng),
        Err(SyncError::RetryAfter { secs: 60 })
    );
    assert_eq!(
        core.handle(&dev, snap, MIN, &mut rng)
            .unwrap()
            .acked_version,
        6
    );
    // A device ahead of the node's version (lost write) is asked again.
    let ahead = req(SyncKind::Delta, 8, 9, added(vec![summary(2, 2)]));
    assert_eq!(
        core.handle(&dev, ahead.clone(), 2 * MIN, &mut rng),
        Err(SyncError::ResyncRequired { node_version: 6 })
    );
    assert!(matches!(
        core.handle(&dev, ahead, 2 * MIN + 1, &mut rng),
        Err(SyncError::RetryAfter { .. })
    ));
}

#[test]
fn a_snapshot_replaces_everything_and_forget_drops_the_device() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let dev = device(1);
    let other = device(2);
    let r = req(
        SyncKind::Delta,
        0,
        1,
        added(vec![summary(1, 1), summary(2, 2)]),
    );
    core.handle(&dev, r.clone(), 0, &mut rng).unwrap();
    core.handle(&other, r, 0, &mut rng).unwrap();
    let snap = req(SyncKind::Snapshot, 1, 2, added(vec![summary(7, 7)]));
    core.handle(&dev, snap, MIN, &mut rng).unwrap();
    let ids: Vec<u64> = core
        .store()
        .device_patterns(&dev)
        .unwrap()
        .iter()
        .map(|p| p.id.0)
        .collect();
    assert_eq!(ids, vec![7]);

    let forget = req(SyncKind::Forget, 2, 3, PackedPatternDelta::default());
    let (resp, outcome) = core.handle_with_outcome(&dev, forget, 2 * MIN, &mut rng);
    assert_eq!(
        (resp.unwrap().acked_version, outcome),
        (0, SyncOutcome::Forgotten)
    );
    assert_eq!(core.store().device_state(&dev).unwrap(), None);
    assert!(core.store().device_patterns(&dev).unwrap().is_empty());
    assert_eq!(core.store().device_patterns(&other).unwrap().len(), 2);
    let rows = core
        .store()
        .region_patterns(&region(1), None, 100)
        .unwrap()
        .rows;
    assert!(rows.iter().all(|r| r.device == other));
}

#[test]
fn what_the_codec_cannot_check_is_refused() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let mut zero = summary(2, 2);
    zero.samples = 0;
    let cases: Vec<(&str, PackedSyncRequest)> = vec![
        (
            "duplicate id",
            req(
                SyncKind::Delta,
                0,
                1,
                added(vec![summary(1, 1), summary(1, 2)]),
            ),
        ),
        (
            "added and updated",
            req(
                SyncKind::Delta,
                0,
                1,
                PackedPatternDelta {
                    added: vec![summary(1, 1)],
                    updated: vec![summary(1, 1)],
                    removed: vec![],
                },
            ),
        ),
        (
            "changed and removed",
            req(
                SyncKind::Delta,
                0,
                1,
                PackedPatternDelta {
                    added: vec![],
                    updated: vec![summary(1, 1)],
                    removed: vec![PatternId(1)],
                },
            ),
        ),
        (
            "removed twice",
            req(
                SyncKind::Delta,
                0,
                1,
                PackedPatternDelta {
                    removed: vec![PatternId(4), PatternId(4)],
                    ..PackedPatternDelta::default()
                },
            ),
        ),
        ("no samples", req(SyncKind::Delta, 0, 1, added(vec![zero]))),
        (
            "regression",
            req(SyncKind::Delta, 5, 4, PackedPatternDelta::default()),
        ),
        (
            "change without a new version",
            req(SyncKind::Delta, 0, 0, added(vec![summary(1, 1)])),
        ),
        (
            "forget with patterns",
            req(SyncKind::Forget, 0, 1, added(vec![summary(1, 1)])),
        ),
        (
            "snapshot with removals",
            req(
                SyncKind::Snapshot,
                0,
                1,
                PackedPatternDelta {
                    removed: vec![PatternId(1)],
                    ..PackedPatternDelta::default()
                },
            ),
        ),
    ];
    for (i, (what, r)) in cases.into_iter().enumerate() {
        let dev = device(100 + i as u64);
        let got = core.handle(&dev, r, 0, &mut rng);
        assert!(
            matches!(got, Err(SyncError::BadRequest { .. })),
            "{what}: {got:?}"
        );
        assert_eq!(core.store().device_state(&dev).unwrap(), None, "{what}");
    }

    // Regions outside the allow-list: a clear reason, charged to the rate
    // limit, nothing stored.
    let only_r2 = SyncConfig {
        allowed_regions: BTreeSet::from([region(2)]),
        ..config()
    };
    let mut core = Shard::new(MemoryStore::new(), only_r2).unwrap();
    let r = req(SyncKind::Delta, 0, 1, added(vec![summary(1, 1)]));
    let Err(SyncError::BadRequest { reason }) = core.handle(&device(1), r.clone(), 0, &mut rng)
    else {
        panic!("a region outside the allow-list is a bad request")
    };
    assert!(
        reason.contains("region r1 is not served") && reason.contains("r2"),
        "{reason}"
    );
    assert_eq!(core.store().device_state(&device(1)).unwrap(), None);
    let mut ok = r;
    ok.region = region(2);
    assert!(matches!(
        core.handle(&device(1), ok.clone(), 1, &mut rng),
        Err(SyncError::RetryAfter { .. })
    ));
    assert!(core.handle(&device(1), ok.clone(), MIN, &mut rng).is_ok());
    // The default allow-list serves the TV's default region only.
    let mut core = Shard::new(MemoryStore::new(), SyncConfig::default()).unwrap();
    assert!(matches!(
        core.handle(&device(2), r_in(ok.clone(), "eu"), 0, &mut rng),
        Err(SyncError::BadRequest { .. })
    ));
    let default = r_in(ok, omega_protocol::DEFAULT_REGION);
    assert!(core.handle(&device(3), default, 0, &mut rng).is_ok());
    // A forget is accepted whatever region it names: a device can always be
    // dropped (e.g. after the allow-list changed).
    let forget = req(SyncKind::Forget, 1, 2, PackedPatternDelta::default());
    let (got, outcome) = core.handle_with_outcome(&device(3), forget, MIN, &mut rng);
    assert_eq!(
        (got.map(|a| a.acked_version), outcome),
        (Ok(0), SyncOutcome::Forgotten)
    );
    assert_eq!(core.store().device_state(&device(3)).unwrap(), None);
}

fn r_in(mut r: PackedSyncRequest, region: &str) -> PackedSyncRequest {
    r.region = omega_protocol::Region::new(region).unwrap();
    r
}

#[test]
fn one_sync_a_minute_per_device() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let dev = device(1);
    let pull = |v| req(SyncKind::Delta, v, v, PackedPatternDelta::default());
    core.handle(&dev, pull(0), 10_000, &mut rng).unwrap();
    assert_eq!(
        core.handle(&dev, pull(0), 10_500, &mut rng),
        Err(SyncError::RetryAfter { secs: 60 })
    );
    assert_eq!(
        core.handle(&dev, pull(0), 55_000, &mut rng),
        Err(SyncError::RetryAfter { secs: 15 })
    );
    // Other devices are not affected.
    core.handle(&device(2), pull(0), 10_500, &mut rng).unwrap();
    core.handle(&dev, pull(0), 70_000, &mut rng).unwrap();
    // Bad requests count too.
    let bad = req(SyncKind::Delta, 3, 1, PackedPatternDelta::default());
    assert!(core.handle(&device(3), bad, 0, &mut rng).is_err());
    assert!(matches!(
        core.handle(&device(3), pull(0), 1, &mut rng),
        Err(SyncError::RetryAfter { .. })
    ));
}

#[test]
fn samples_are_clamped_on_arrival() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let mut huge = summary(1, 1);
    huge.samples = u32::MAX;
    let mut honest = summary(2, 2);
    honest.samples = 7;
    let r = req(SyncKind::Delta, 0, 1, added(vec![huge, honest]));
    core.handle(&device(1), r, 0, &mut rng).unwrap();
    let stored = core.store().device_patterns(&device(1)).unwrap();
    let samples: Vec<u32> = stored.iter().map(|p| p.samples).collect();
    assert_eq!(samples, vec![sync::DEFAULT_MAX_PATTERN_SAMPLES, 7]);
}

#[test]
fn the_pattern_limit_is_a_bad_request_and_applies_nothing() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let dev = device(1);
    let mut version = 0;
    for chunk in 0..4u64 {
        let ps = (0..256).map(|i| summary(chunk * 256 + i, i)).collect();
        let r = req(SyncKind::Delta, version, version + 1, added(ps));
        core.handle(&dev, r, chunk * MIN, &mut rng).unwrap();
        version += 1;
    }
    let r = req(
        SyncKind::Delta,
        version,
        version + 1,
        added(vec![summary(5000, 1)]),
    );
    let got = core.handle(&dev, r, 10 * MIN, &mut rng);
    assert!(matches!(got, Err(SyncError::BadRequest { .. })), "{got:?}");
    let info = core.store().device_state(&dev).unwrap().unwrap();
    assert_eq!((info.state.pattern_version, info.pattern_count), (4, 1024));
}

#[test]
fn a_failed_write_is_internal_and_applies_nothing() {
    let store = Arc::new(FailingStore::new(MemoryStore::new(), 0));
    let mut core = Shard::new(Arc::clone(&store), config()).unwrap();
    let mut rng = rng();
    let dev = device(1);
    core.handle(
        &dev,
        req(SyncKind::Delta, 0, 1, added(vec![summary(1, 1)])),
        0,
        &mut rng,
    )
    .unwrap();
    let before = (
        store.device_state(&dev).unwrap(),
        store.device_patterns(&dev).unwrap(),
    );
    for (n, (kind, base, delta)) in [
        (SyncKind::Delta, 1, added(vec![summary(2, 2)])),
        (SyncKind::Snapshot, 0, added(vec![summary(3, 3)])),
        (SyncKind::Forget, 1, PackedPatternDelta::default()),
    ]
    .into_iter()
    .enumerate()
    {
        store.fail_nth_from_now(1);
        let at = (n as u64 + 1) * MIN;
        let got = core.handle(&dev, req(kind, base, 2, delta), at, &mut rng);
        assert!(
            matches!(got, Err(SyncError::Internal { .. })),
            "{kind:?}: {got:?}"
        );
        // The store's error text stays in the node's log.
        let Err(SyncError::Internal { reason }) = got else {
            unreachable!()
        };
        assert!(!reason.contains("injected"), "{reason}");
        assert!(reason.contains("ref "), "{reason}");
        let after = (
            store.device_state(&dev).unwrap(),
            store.device_patterns(&dev).unwrap(),
        );
        assert_eq!(after, before, "{kind:?} applied something");
    }
    // Charged: the retry waits for the next interval.
    store.fail_nth_from_now(0);
    let r = req(SyncKind::Delta, 1, 2, added(vec![summary(2, 2)]));
    assert!(matches!(
        core.handle(&dev, r.clone(), 3 * MIN + 1, &mut rng),
        Err(SyncError::RetryAfter { .. })
    ));
    assert_eq!(
        core.handle(&dev, r, 4 * MIN, &mut rng)
            .unwrap()
            .acked_version,
        2
    );
}

#[test]
fn responses_carry_globals_trends_and_catalog_pages() {
    let (_d, mut core) = redb_core();
    let mut rng = rng();
    let store = Arc::clone(core.store());
    store
        .publish_globals(&region(1), 1, &[global(1, 1), global(2, 2)], &[trend(1)])
        .unwrap();
    store
        .publish_globals(&region(2), 1, &[global(9, 9)], &[])
        .unwrap();
    let entries: Vec<_> = (0..150).map(|i| catalog_entry(i, i)).collect();
    assert_eq!(store.upsert_catalog(&entries).unwrap(), 150);

    let dev = device(1);
    let first = core
        .handle(
            &dev,
            req(SyncKind::Delta, 0, 0, PackedPatternDelta::default()),
            0,
            &mut rng,
        )
        .unwrap();
    assert!(first.global_reset);
    assert_eq!(first.global_version, 1);
    assert_eq!(first.global_patterns.len(), 2);
    assert_eq!(first.trends, vec![trend(1)]);
    let page = first.catalog.clone().unwrap();
    assert_eq!(
        (page.upserts.len(), page.more, page.version),
        (100, true, 100)
    );
    // The response fits the wire.
    codec::encode_packed_response(&Ok(first.clone())).unwrap();

    let mut next = req(SyncKind::Delta, 0, 0, PackedPatternDelta::default());
    next.global_version = 1;
    next.catalog_version = 100;
    let second = core.handle(&dev, next.clone(), MIN, &mut rng).unwrap();
    assert!(!second.global_reset);
    assert!(second.global_patterns.is_empty() && second.trends.is_empty());
    let page = second.catalog.unwrap();
    assert_eq!(
        (page.upserts.len(), page.more, page.version),
        (50, false, 150)
    );

    next.catalog_version = 150;
    let third = core.handle(&dev, next.clone(), 2 * MIN, &mut rng).unwrap();
    assert!(third.catalog.is_none());

    // A new publication: only the change, and the trends again.
    store
        .publish_globals(&region(1), 2, &[global(2, 2), global(3, 3)], &[trend(2)])
        .unwrap();
    let fourth = core.handle(&dev, next.clone(), 3 * MIN, &mut rng).unwrap();
    assert_eq!(fourth.global_version, 2);
    assert_eq!(
        fourth
            .global_patterns
            .iter()
            .map(|g| g.id)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(fourth.global_removed, vec![1]);
    assert_eq!(fourth.trends, vec![trend(2)]);

    // A device ahead of the node's catalog starts over.
    next.catalog_version = 999;
    next.global_version = 2;
    let fifth = core.handle(&dev, next, 4 * MIN, &mut rng).unwrap();
    assert_eq!(fifth.catalog.unwrap().upserts.len(), 100);
}

#[test]
fn next_sync_is_randomized_within_the_configured_range() {
    let fast = SyncConfig {
        min_sync_interval_secs: 0,
        next_sync_secs: (10, 12),
        ..config()
    };
    let mut core = Shard::new(MemoryStore::new(), fast).unwrap();
    let mut rng = rng();
    let mut seen = BTreeSet::new();
    for i in 0..64 {
        let r = req(SyncKind::Delta, 0, 0, PackedPatternDelta::default());
        seen.insert(
            core.handle(&device(1), r, i, &mut rng)
                .unwrap()
                .next_sync_secs,
        );
    }
    assert_eq!(seen, BTreeSet::from([10, 11, 12]));
    // Same seed, same answers.
    let again = |seed| {
        let mut core = Shard::new(MemoryStore::new(), config()).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let r = req(SyncKind::Delta, 0, 0, PackedPatternDelta::default());
        core.handle(&device(1), r, 0, &mut rng)
            .unwrap()
            .next_sync_secs
    };
    assert_eq!(again(3), again(3));
}
