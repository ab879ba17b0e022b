//! BrainStore against real redb files: bounds, durability, recovery, failures.
#![allow(clippy::unwrap_used)]

#[path = "../../brain-core/tests/support/mod.rs"]
mod support;

use std::sync::OnceLock;

use omega_brain::RoundCredentials;
use omega_privacy::secagg::attest::testing::Registry;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// This TV's round credential and the trusted ones (a stand-in for the
/// device certificate and CA).
fn auth() -> &'static RoundCredentials {
    static AUTH: OnceLock<RoundCredentials> = OnceLock::new();
    AUTH.get_or_init(|| {
        let pki = Registry::new();
        RoundCredentials {
            attestor: Arc::new(pki.attestor("tv-store-test", true)),
            verifier: Arc::new(pki),
        }
    })
}

use omega_brain::store::{BrainStore, OpenOutcome, StoreConfig};
use omega_brain::{BrainError, CoreError, PatternConfig};
use omega_brain_core::UploadKind;
use omega_protocol::{
    CatalogPage, ContextBucket, GlobalPattern, PatternId, SyncAccepted, SyncKind, TrendSignal,
};
use support::*;

fn small_cfg() -> StoreConfig {
    StoreConfig {
        max_episodes: 5,
        max_catalog_items: 20,
        max_global_patterns: 3,
        patterns: PatternConfig {
            max_patterns: 3,
            assign_threshold: 0.6,
        },
        ..StoreConfig::default()
    }
}

#[test]
fn create_then_reopen_keeps_every_acknowledged_observe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brain.redb");
    let (catalog, _) = clustered_catalog(2, 5, 1);
    {
        let (mut s, outcome) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(outcome, OpenOutcome::Created);
        s.update_catalog(&catalog, &[]).unwrap();
        for i in 0..12u64 {
            let id = format!("c{}-{}", i % 2, i % 5);
            let out = s.observe(event(&id, 0.95, 1_000 + i)).unwrap();
            assert_eq!(out.seq, i);
            assert!(out.known_item);
        }
        // Dropped without any explicit flush.
    }
    let (s, outcome) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(outcome, OpenOutcome::Opened);
    let st = s.state();
    assert_eq!(st.episodes.len(), 12);
    assert_eq!(st.episodes.back().unwrap().event.timestamp_secs, 1_011);
    assert_eq!(st.catalog.len(), 10);
    assert!(!st.patterns.is_empty());
    assert!(st.versions.pattern >= 1);
    let views: u32 = st.patterns.iter().map(|p| p.views).sum();
    assert_eq!(views, 12);
    assert!(st.is_fully_watched(&cid("c0-0")));
}

#[test]
fn episodes_form_a_bounded_ring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    {
        let (mut s, _) = BrainStore::open(&path, small_cfg()).unwrap();
        for i in 0..9u64 {
            s.observe(event(&format!("x{i}"), 0.95, i)).unwrap();
        }
        assert_eq!(s.state().episodes.len(), 5);
        // The four oldest were evicted, and with them their "fully watched" mark.
        assert!(!s.state().is_fully_watched(&cid("x0")));
        assert!(s.state().is_fully_watched(&cid("x8")));
    }
    let (s, _) = BrainStore::open(&path, small_cfg()).unwrap();
    let ts: Vec<u64> = s
        .state()
        .episodes
        .iter()
        .map(|e| e.event.timestamp_secs)
        .collect();
    assert_eq!(ts, vec![4, 5, 6, 7, 8]);
}

#[test]
fn pattern_limit_evicts_least_useful_and_records_removal() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, _) = clustered_catalog(4, 3, 2);
    let (mut s, _) = BrainStore::open(dir.path().join("b.redb"), small_cfg()).unwrap();
    s.update_catalog(&catalog, &[]).unwrap();
    // Cluster 0 watched three times (strong), 1 and 2 once each.
    for (i, id) in ["c0-0", "c0-1", "c0-2", "c1-0", "c2-0"].iter().enumerate() {
        s.observe(event(id, 0.95, i as u64)).unwrap();
    }
    assert_eq!(s.state().patterns.len(), 3);
    let weakest = s.state().patterns.eviction_candidate().unwrap();
    // A fourth cluster needs room: the oldest single-view pattern (cluster 1) goes.
    s.observe(event("c3-0", 0.95, 10)).unwrap();
    assert_eq!(s.state().patterns.len(), 3);
    assert!(s.state().patterns.get(weakest).is_none());
    let t = s
        .state()
        .patterns
        .tombstones()
        .get(&weakest)
        .copied()
        .unwrap();
    assert_eq!(t.version, s.state().versions.pattern);
    // The strong pattern survived.
    assert!(s.state().patterns.iter().any(|p| p.views == 3));
}

#[test]
fn catalog_past_its_limit_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, _) = clustered_catalog(5, 5, 3); // 25 items, limit 20
    let (mut s, _) = BrainStore::open(dir.path().join("b.redb"), small_cfg()).unwrap();
    s.update_catalog(&catalog[..18], &[]).unwrap();
    let err = s.update_catalog(&catalog[18..], &[]).unwrap_err();
    assert!(
        matches!(
            err,
            BrainError::Core(CoreError::CatalogFull {
                current: 18,
                adding: 7,
                max: 20
            })
        ),
        "{err}"
    );
    assert_eq!(s.state().catalog.len(), 18);
    // Updates of known items and swaps (remove + add) still work.
    s.update_catalog(&catalog[..2], &[]).unwrap();
    s.update_catalog(&catalog[18..20], &[cid("c0-0"), cid("c0-1")])
        .unwrap();
    assert_eq!(s.state().catalog.len(), 18);
    assert!(s.state().catalog.get(&cid("c0-0")).is_none());
    // Keys are never reused.
    let keys: Vec<u64> = s.state().catalog.iter().map(|r| r.key).collect();
    assert_eq!(*keys.last().unwrap(), 19);

    // Through a sync: the page is refused, the rest applies, the catalog
    // version does not move.
    let before = s.state().versions.catalog;
    let applied = s
        .apply_sync(&SyncAccepted {
            global_version: 4,
            catalog: Some(CatalogPage {
                version: 9,
                upserts: catalog[20..].to_vec(),
                removed: vec![],
                more: false,
            }),
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(
        applied.catalog_refused,
        Some(CoreError::CatalogFull { .. })
    ));
    assert_eq!(s.state().versions.catalog, before);
    assert_eq!(s.state().versions.global, 4);
}

fn global(id: u64, support: u32, seed: u64) -> GlobalPattern {
    GlobalPattern {
        id,
        bucket: evening().bucket(),
        embedding: unit(seed),
        success_rate: 0.8,
        support,
        samples: support * 10,
    }
}

#[test]
fn global_patterns_follow_syncs_and_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let (catalog, _) = clustered_catalog(1, 3, 4);
    {
        let (mut s, _) = BrainStore::open(&path, small_cfg()).unwrap();
        s.update_catalog(&catalog, &[]).unwrap();
        s.apply_sync(&SyncAccepted {
            global_version: 1,
            global_patterns: (1..=5).map(|i| global(i, i as u32 * 10, i)).collect(),
            trends: vec![TrendSignal {
                content_id: cid("c0-1"),
                bucket: evening().bucket(),
                score: 0.9,
            }],
            ..Default::default()
        })
        .unwrap();
        // Limit 3: the best supported (5, 4, 3) stay.
        let ids: Vec<u64> = s.state().globals.keys().copied().collect();
        assert_eq!(ids, vec![3, 4, 5]);
        // Upsert + removal.
        s.apply_sync(&SyncAccepted {
            global_version: 2,
            global_patterns: vec![global(9, 1000, 9)],
            global_removed: vec![3],
            ..Default::default()
        })
        .unwrap();
        let ids: Vec<u64> = s.state().globals.keys().copied().collect();
        assert_eq!(ids, vec![4, 5, 9]);
    }
    let (mut s, _) = BrainStore::open(&path, small_cfg()).unwrap();
    assert_eq!(
        s.state().globals.keys().copied().collect::<Vec<_>>(),
        vec![4, 5, 9]
    );
    assert_eq!(s.state().versions.global, 2);
    assert!(s.state().trends.is_empty(), "trends are replaced wholesale");
    // Reset drops everything first.
    s.apply_sync(&SyncAccepted {
        global_version: 3,
        global_reset: true,
        global_patterns: vec![global(7, 5, 7)],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        s.state().globals.keys().copied().collect::<Vec<_>>(),
        vec![7]
    );
}

#[test]
fn fleet_knowledge_another_version_wrote_is_paged_again_not_taken_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brain.redb");
    {
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        s.observe(event("a", 0.9, 1)).unwrap();
    }
    {
        // What an older build's fleet knowledge looks like to this one.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let blobs: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("blobs");
            let mut t = txn.open_table(blobs).unwrap();
            t.insert("fleet", [7u8, 1, 2].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (s, outcome) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(outcome, OpenOutcome::Opened, "the file is not moved aside");
    assert_eq!(s.state().episodes.len(), 1, "the history is kept");
    assert!(s.state().fleet.is_empty());
    assert_eq!(
        s.state().fleet.cursor(),
        Default::default(),
        "paged from the start"
    );
}

#[test]
fn damaged_file_is_moved_aside_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brain.redb");
    {
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        s.observe(event("a", 0.9, 1)).unwrap();
    }
    // Garble the whole header region.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (s, outcome) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    let OpenOutcome::Recovered { moved_to, reason } = outcome else {
        panic!("expected recovery, got {outcome:?}");
    };
    assert!(!reason.is_empty());
    assert!(moved_to.exists());
    assert!(moved_to
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("brain.redb.damaged-"));
    assert_eq!(
        std::fs::read(&moved_to).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    assert!(s.state().episodes.is_empty());
    drop(s);
    // The fresh store is a normal store from now on.
    let (_, outcome) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(outcome, OpenOutcome::Opened);
}

#[test]
fn garbage_file_is_recovered_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brain.redb");
    std::fs::write(&path, b"this is not a database").unwrap();
    let (_, outcome) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert!(
        matches!(outcome, OpenOutcome::Recovered { .. }),
        "{outcome:?}"
    );
}

/// A file backend whose writes and syncs fail while `fail` is set: a full disk.
#[derive(Debug)]
struct FlakyDisk {
    inner: redb::backends::FileBackend,
    fail: Arc<AtomicBool>,
}

impl redb::StorageBackend for FlakyDisk {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        self.inner.write(offset, data)
    }
}

#[test]
fn failed_write_returns_typed_error_and_keeps_previous_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let (catalog, _) = clustered_catalog(1, 3, 5);
    let fail = Arc::new(AtomicBool::new(false));
    let open = |fail: &Arc<AtomicBool>| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        let inner = redb::backends::FileBackend::new(file).unwrap();
        BrainStore::open_with_backend(
            FlakyDisk {
                inner,
                fail: fail.clone(),
            },
            &path,
            StoreConfig::default(),
        )
        .unwrap()
    };
    {
        let mut s = open(&fail);
        s.update_catalog(&catalog, &[]).unwrap();
        s.observe(event("c0-0", 0.95, 1)).unwrap();
        let before_eps = s.state().episodes.len();
        let before_v = s.state().versions;
        let before_patterns: Vec<_> = s.state().patterns.iter().cloned().collect();

        fail.store(true, Ordering::SeqCst);
        let err = s.observe(event("c0-1", 0.95, 2)).unwrap_err();
        assert!(matches!(err, BrainError::DiskFull(_)), "{err}");
        // Memory unchanged.
        assert_eq!(s.state().episodes.len(), before_eps);
        assert_eq!(s.state().versions, before_v);
        assert_eq!(
            s.state().patterns.iter().cloned().collect::<Vec<_>>(),
            before_patterns
        );
        fail.store(false, Ordering::SeqCst);
    }
    // Disk unchanged: reopen shows the state before the failed write.
    let s = open(&fail);
    assert_eq!(s.state().episodes.len(), 1);
    assert_eq!(s.state().episodes[0].event.timestamp_secs, 1);
}

#[test]
fn acknowledgements_are_checked_and_prune_removals() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = BrainStore::open(dir.path().join("b.redb"), StoreConfig::default()).unwrap();
    let (catalog, _) = clustered_catalog(1, 3, 6);
    s.update_catalog(&catalog, &[]).unwrap();
    for (i, id) in ["c0-0", "c0-1", "c0-2"].iter().enumerate() {
        s.observe(event(id, 0.95, i as u64)).unwrap();
    }
    let v = s.state().versions.pattern;
    assert!(matches!(
        s.acknowledge(SyncKind::Delta, v + 1, 3),
        Err(BrainError::Core(CoreError::BadAck { .. }))
    ));
    s.acknowledge(SyncKind::Delta, v, 3).unwrap();
    assert_eq!(s.state().versions.acked, v);
    assert!(s.state().patterns.iter().all(|p| p.known_to_node));
    assert!(matches!(
        s.acknowledge(SyncKind::Delta, v - 1, 3),
        Err(BrainError::Core(CoreError::BadAck { .. }))
    ));
    // forget erases history and patterns.
    s.forget().unwrap();
    assert!(s.state().episodes.is_empty() && s.state().patterns.is_empty());
    let _ = (PatternId(0), ContextBucket::all().count());
}

#[test]
fn trends_change_only_with_the_global_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let (catalog, _) = clustered_catalog(1, 3, 4);
    let trend = |id: &str, score: f32| TrendSignal {
        content_id: cid(id),
        bucket: evening().bucket(),
        score,
    };
    {
        let (mut s, _) = BrainStore::open(&path, small_cfg()).unwrap();
        s.update_catalog(&catalog, &[]).unwrap();
        s.apply_sync(&SyncAccepted {
            global_version: 4,
            trends: vec![trend("c0-1", 0.9)],
            ..Default::default()
        })
        .unwrap();
        // Same global version: the node sends no trends; they are kept.
        s.apply_sync(&SyncAccepted {
            global_version: 4,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.state().trends, vec![trend("c0-1", 0.9)]);
    }
    // Kept on disk too.
    let (mut s, _) = BrainStore::open(&path, small_cfg()).unwrap();
    assert_eq!(s.state().trends, vec![trend("c0-1", 0.9)]);
    // A reset at the same version replaces them.
    s.apply_sync(&SyncAccepted {
        global_version: 4,
        global_reset: true,
        trends: vec![trend("c0-2", 0.5)],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.state().trends, vec![trend("c0-2", 0.5)]);
    // A new version replaces them, even with an empty list.
    s.apply_sync(&SyncAccepted {
        global_version: 5,
        ..Default::default()
    })
    .unwrap();
    assert!(s.state().trends.is_empty());
}

/// Everything the mirror holds, in comparable form.
#[derive(Debug, PartialEq)]
struct Mirror {
    catalog: Vec<omega_brain::CatalogRecord>,
    next_key: u64,
    patterns: Vec<omega_brain::PatternInfo>,
    tombstones: Vec<(PatternId, omega_brain_core::patterns::Tombstone)>,
    next_pattern: u64,
    globals: Vec<GlobalPattern>,
    trends: Vec<TrendSignal>,
    episodes: Vec<omega_brain_core::state::Episode>,
    versions: omega_brain::Versions,
}

fn mirror(s: &BrainStore) -> Mirror {
    let st = s.state();
    Mirror {
        catalog: st.catalog.iter().cloned().collect(),
        next_key: st.catalog.next_key(),
        patterns: st.patterns.iter().cloned().collect(),
        tombstones: st
            .patterns
            .tombstones()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect(),
        next_pattern: st.patterns.next_id(),
        globals: st.globals.values().cloned().collect(),
        trends: st.trends.clone(),
        episodes: st.episodes.iter().cloned().collect(),
        versions: st.versions,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Observe {
        item: usize,
        fraction: u8,
        hour: u8,
        weekday: u8,
    },
    Catalog(std::ops::Range<usize>),
    Ack,
    Forget,
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        // Two context buckets (weekday and weekend evenings), so that patterns
        // gather several items and acknowledgements have something to mark.
        8 => (0usize..26, prop_oneof![3 => 70u8..=100, 1 => 0u8..70], 20u8..22, prop::sample::select(vec![1u8, 6])).prop_map(|(item, fraction, hour, weekday)| {
            Op::Observe { item, fraction, hour, weekday }
        }),
        2 => (0usize..24, 1usize..12).prop_map(|(a, n)| Op::Catalog(a..(a + n).min(24))),
        1 => Just(Op::Ack),
        1 => Just(Op::Forget),
        2 => Just(Op::Reopen),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random operations under small limits (evictions, refusals, folds into
    /// existing patterns read back from redb): the bounds hold after every
    /// step, and reopening the file gives back exactly the mirror that was in
    /// memory (memory never holds what the disk does not, and vice versa).
    #[test]
    fn random_operations_survive_reopen(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let mut cfg = small_cfg();
        cfg.patterns.assign_threshold = 0.1; // items of a cluster join its pattern
        let (catalog, _) = clustered_catalog(4, 6, 9);
        let (mut s, _) = BrainStore::open(&path, cfg).unwrap();
        s.update_catalog(&catalog[..12], &[]).unwrap();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Observe { item, fraction, hour, weekday } => {
                    let id = if item < 24 { format!("c{}-{}", item / 6, item % 6) } else { format!("unknown-{item}") };
                    let ev = omega_protocol::ViewingEvent::new(
                        cid(&id),
                        f32::from(fraction) / 100.0,
                        n as u64,
                        omega_protocol::ViewingContext::new(hour, weekday).unwrap(),
                    ).unwrap();
                    s.observe(ev).unwrap();
                }
                Op::Catalog(r) => {
                    let before = mirror(&s);
                    match s.update_catalog(&catalog[r], &[]) {
                        Ok(_) => {}
                        Err(BrainError::Core(CoreError::CatalogFull { .. })) => {
                            proptest::prop_assert_eq!(mirror(&s), before, "a refused change changed memory");
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::Ack => {
                    let plan = s.build_delta(&omega_brain::DeltaConfig::default(), &mut rng);
                    s.acknowledge(plan.kind, plan.upto_version, 3).unwrap();
                }
                Op::Forget => s.forget().unwrap(),
                Op::Reopen => {
                    let before = mirror(&s);
                    drop(s);
                    let (again, outcome) = BrainStore::open(&path, cfg).unwrap();
                    proptest::prop_assert_eq!(outcome, OpenOutcome::Opened);
                    s = again;
                    proptest::prop_assert_eq!(mirror(&s), before);
                }
            }
            let st = s.state();
            proptest::prop_assert!(st.episodes.len() <= cfg.max_episodes);
            proptest::prop_assert!(st.patterns.len() <= cfg.patterns.max_patterns);
            proptest::prop_assert!(st.catalog.len() <= cfg.max_catalog_items);
        }
        let before = mirror(&s);
        drop(s);
        let (s, _) = BrainStore::open(&path, cfg).unwrap();
        proptest::prop_assert_eq!(mirror(&s), before);
    }
}

/// The sync path uploads no pattern data (until the private contribution
/// lands), whatever was watched, for deltas and snapshots alike.
#[test]
fn the_sync_upload_carries_no_pattern_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = BrainStore::open(dir.path().join("b.redb"), StoreConfig::default()).unwrap();
    let (catalog, _) = clustered_catalog(2, 5, 1);
    s.update_catalog(&catalog, &[]).unwrap();
    for i in 0..20u64 {
        s.observe(event(&format!("c{}-{}", i % 2, i % 5), 0.95, 1_000 + i))
            .unwrap();
    }
    assert!(s.state().versions.pattern > 0);
    assert!(
        !s.build_delta(&Default::default(), &mut rand::rng())
            .delta
            .is_empty(),
        "there is something that could leak"
    );
    let region = omega_protocol::Region::new("eu").unwrap();
    for kind in [UploadKind::Delta, UploadKind::Snapshot] {
        let p = s
            .prepare_sync(kind, region.clone(), 0, auth(), &mut rand::rng())
            .unwrap();
        assert!(p.request.delta.is_empty(), "{kind:?}");
        assert_eq!(p.request.pattern_version, 0, "views do not move versions");
        assert_eq!(p.forget_generation, None);
    }
    assert_eq!(
        s.prepare_sync(UploadKind::Snapshot, region, 0, auth(), &mut rand::rng())
            .unwrap()
            .request
            .kind,
        SyncKind::Snapshot
    );
}

#[test]
fn forget_queues_a_tombstone_until_a_node_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let region = omega_protocol::Region::new("eu").unwrap();
    let sent = {
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(s.forget_pending(), None);
        s.forget().unwrap();
        assert_eq!(s.forget_pending(), Some(1));
        s.prepare_sync(
            UploadKind::Delta,
            region.clone(),
            0,
            auth(),
            &mut rand::rng(),
        )
        .unwrap()
    };
    assert_eq!(sent.request.kind, SyncKind::Forget);
    assert!(sent.request.delta.is_empty());
    // The flag survives a restart; a refused or lost attempt leaves it.
    let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(s.forget_pending(), Some(1));
    let again = s
        .prepare_sync(
            UploadKind::Snapshot,
            region.clone(),
            0,
            auth(),
            &mut rand::rng(),
        )
        .unwrap();
    assert_eq!(again.request.kind, SyncKind::Forget);
    // A second forget while the first is in flight: accepting the first does
    // not clear the second.
    s.forget().unwrap();
    let fin = s
        .finish_sync(
            &again,
            &SyncAccepted {
                global_version: 2,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!fin.forget_acknowledged);
    assert_eq!(s.state().versions.global, 2, "the download applies");
    let second = s
        .prepare_sync(
            UploadKind::Delta,
            region.clone(),
            0,
            auth(),
            &mut rand::rng(),
        )
        .unwrap();
    assert_eq!(second.forget_generation, Some(2));
    let fin = s.finish_sync(&second, &SyncAccepted::default()).unwrap();
    assert!(fin.forget_acknowledged);
    assert_eq!(s.forget_pending(), None);
    drop(s);
    let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(s.forget_pending(), None, "cleared durably");
    assert_eq!(
        s.prepare_sync(UploadKind::Delta, region, 0, auth(), &mut rand::rng())
            .unwrap()
            .request
            .kind,
        SyncKind::Delta
    );
}

#[test]
fn finish_sync_refuses_an_acknowledgement_the_tv_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = BrainStore::open(dir.path().join("b.redb"), StoreConfig::default()).unwrap();
    let p = s
        .prepare_sync(
            UploadKind::Delta,
            omega_protocol::Region::new("eu").unwrap(),
            0,
            auth(),
            &mut rand::rng(),
        )
        .unwrap();
    let fin = s
        .finish_sync(
            &p,
            &SyncAccepted {
                acked_version: 99,
                global_version: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        fin.ack_refused,
        Some(BrainError::Core(CoreError::BadAck { acked: 99, .. }))
    ));
    assert_eq!(s.state().versions.acked, 0);
    assert_eq!(s.state().versions.global, 1);
}

#[test]
fn episodes_are_kept_in_viewing_order_and_a_repeated_viewing_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("order.redb");
    let (catalog, _) = clustered_catalog(2, 5, 1);
    let order = |s: &BrainStore| -> Vec<u64> {
        s.state()
            .episodes
            .iter()
            .map(|e| e.event.timestamp_secs)
            .collect()
    };
    {
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        s.update_catalog(&catalog, &[]).unwrap();
        // Pipelined observes arriving out of order.
        for at in [1_030u64, 1_010, 1_040, 1_020] {
            let out = s.observe(event("c0-1", 0.95, at)).unwrap();
            assert!(!out.duplicate);
        }
        assert_eq!(order(&s), vec![1_010, 1_020, 1_030, 1_040]);
        assert_eq!(
            s.state().recent_watches(1)[0].0.as_str(),
            "c0-1",
            "the newest by time is the most recent"
        );
        let before = s.state().versions;
        let again = s.observe(event("c0-1", 0.95, 1_020)).unwrap();
        assert!(again.duplicate);
        assert!(!again.patterns_changed);
        assert_eq!(
            s.state().versions,
            before,
            "a repeated viewing changes nothing"
        );
        assert_eq!(s.state().episodes.len(), 4);
        // Another title at the same time is another viewing.
        assert!(!s.observe(event("c1-1", 0.95, 1_020)).unwrap().duplicate);
    }
    let (s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
    assert_eq!(order(&s), vec![1_010, 1_020, 1_020, 1_030, 1_040]);
}

#[test]
fn the_privacy_budget_is_stored_and_reported_and_survives_forget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("privacy.redb");
    let now = 1_800_000_000_000;
    {
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        let p = s.privacy_status(now).unwrap();
        assert_eq!(p.budget.epsilon_budget, 4.0);
        assert_eq!(p.budget.delta, 1e-6);
        assert_eq!((p.budget.epsilon_spent, p.budget.epsilon_left), (0.0, 4.0));
        assert!(!p.pending && p.released_upto.is_none() && p.last.is_none());
        s.observe(event("x", 0.9, 1)).unwrap();
        s.forget().unwrap();
        assert_eq!(s.privacy_status(now).unwrap().budget.epsilon_budget, 4.0);
    }
    // A new budget in the configuration applies on reopen.
    let cfg = StoreConfig {
        privacy_budget: omega_privacy::Budget::new(2.0, 1e-7).unwrap(),
        ..StoreConfig::default()
    };
    let (s, _) = BrainStore::open(&path, cfg).unwrap();
    let p = s.privacy_status(now).unwrap();
    assert_eq!((p.budget.epsilon_budget, p.budget.delta), (2.0, 1e-7));
}

/// A node that answers every sync with a fresh invitation (a new session,
/// and a new layout every other time) cannot make the TV spend more than its
/// daily budget: the first release spends it, a release for another layout
/// is declined, the same layout reuses the pending release at no new cost,
/// and the ledger survives a restart.
#[test]
fn a_node_inviting_on_every_sync_cannot_spend_past_the_budget() {
    use omega_brain_core::RoundClientError;
    use omega_privacy::round::{NodeToTv, RoundSpec};
    use omega_privacy::secagg::{ClientId, Config, ToServer};
    use omega_privacy::{ContributionLayout, LedgerError};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("brain.redb");
    let (catalog, _) = clustered_catalog(2, 5, 1);
    let region = omega_protocol::Region::new("eu").unwrap();
    let invite = |session: u64| {
        let pairs = if session.is_multiple_of(2) { 3 } else { 4 };
        let layout = ContributionLayout::new(10, pairs, 2).unwrap();
        NodeToTv::Invite {
            spec: RoundSpec {
                session: Config {
                    session,
                    cohort: 12,
                    threshold: 11,
                    dim: layout.dimension() as u32,
                },
                layout,
                pair_slots: (0..u32::from(pairs)).collect(),
                catalog_version: 0,
                scale: 1,
            },
            member: ClientId(0),
        }
    };
    let mut keys_sent = 0;
    let mut declined = 0;
    for restart in 0..2 {
        let (mut s, _) = BrainStore::open(&path, StoreConfig::default()).unwrap();
        if restart == 0 {
            s.update_catalog(&catalog, &[]).unwrap();
            for i in 0..6u64 {
                s.observe(event(&format!("c{}-{}", i % 2, i % 5), 0.95, 1_000 + i))
                    .unwrap();
            }
        }
        for k in 0..10u64 {
            let session = restart * 100 + k;
            let now = 1_000_000 + session * 1000;
            let p = s
                .prepare_sync(
                    UploadKind::Delta,
                    region.clone(),
                    now,
                    auth(),
                    &mut rand::rng(),
                )
                .unwrap();
            match (&p.request.round, &p.round_declined) {
                (Some(r), None) => {
                    assert!(matches!(r.msg, ToServer::AdvertiseKeys(_)));
                    keys_sent += 1;
                }
                (None, Some(RoundClientError::Ledger(LedgerError::Exhausted { .. }))) => {
                    declined += 1
                }
                (None, None) => {}
                other => panic!("unexpected {other:?}"),
            }
            let answer = SyncAccepted {
                next_sync_secs: 0,
                round: Some(invite(session)),
                ..Default::default()
            };
            s.finish_sync(&p, &answer).unwrap();
            let spent = s.privacy_status(now).unwrap().budget.epsilon_spent;
            assert!(spent <= 4.0 + 1e-9, "spent {spent}");
        }
    }
    // One release, offered again for its own layout; every other layout
    // declined once the budget was spent.
    assert!(
        keys_sent >= 1 && declined >= 5,
        "{keys_sent} sent, {declined} declined"
    );
}
