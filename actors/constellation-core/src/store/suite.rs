//! The shared [`PatternStore`] test suite: one `pub fn` per check, each
//! taking a fresh, empty store (or a way to open one), panicking with a
//! message on the first violation. [`run_all`] runs every check; a new
//! implementation (ScyllaDB) calls it from its own tests with a factory that
//! hands out empty stores (e.g. a fresh keyspace each).
//!
//! [`check_against_model`] replays a sequence of [`Op`]s against a store and
//! against [`MemoryStore`] (the reference model) and compares every read
//! after every step; the crate's tests drive it with proptest.
//!
//! The helpers that build test data ([`embedding`], [`pattern`], …) are
//! deterministic so the other modules' tests can reuse them.

use crate::aggregate::RegionTotals;
use omega_protocol::{
    CatalogItem, ContentId, ContextBucket, DeviceId, Embedding, PackedCatalogEntry,
    PackedGlobalPattern, PatternId, Region, TrendSignal, EMBEDDING_DIM,
};

use super::{
    DeviceState, DeviceSync, MemoryStore, PatternStore, StoreError, StoredPattern,
    MAX_GLOBALS_PER_REGION, MAX_GLOBAL_TOMBSTONES, MAX_PATTERNS_PER_DEVICE,
};

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Non-zero coordinates of a test embedding, each ±1/8 so that the squared
/// norm is exactly 1 in `f32`.
const TEST_NONZERO: usize = 64;

/// The positions and signs of `embedding(seed)`'s non-zero coordinates.
fn support(seed: u64) -> Vec<(usize, f32)> {
    let mut s = seed ^ 0x5eed_0000_0000_0000;
    let mut idx: Vec<usize> = (0..EMBEDDING_DIM).collect();
    for i in 0..TEST_NONZERO {
        let j = i + (splitmix(&mut s) % (EMBEDDING_DIM - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(TEST_NONZERO);
    idx.into_iter()
        .map(|i| {
            (
                i,
                if splitmix(&mut s) & 1 == 1 {
                    0.125
                } else {
                    -0.125
                },
            )
        })
        .collect()
}

fn build(coords: &[(usize, f32)]) -> Embedding {
    let mut v = vec![0.0f32; EMBEDDING_DIM];
    for (i, x) in coords {
        v[*i] = *x;
    }
    Embedding::new(v).expect("64 coordinates of 1/8 have unit norm")
}

/// A deterministic pseudo-random unit vector: 64 coordinates of ±1/8 (distinct
/// seeds are nearly orthogonal). Its norm is exactly 1, so a store that keeps
/// coordinates and rebuilds it with [`Embedding::new`] gets it back bit for
/// bit, which lets the suite compare exactly.
pub fn embedding(seed: u64) -> Embedding {
    build(&support(seed))
}

/// A unit vector close to `embedding(base)`: a share `noise` (0–1) of its
/// non-zero coordinates moved to positions taken from `embedding(jitter)`,
/// so its cosine to the base is about `1 - noise` (also exactly unit norm).
pub fn embedding_near(base: u64, jitter: u64, noise: f32) -> Embedding {
    let mut coords = support(base);
    let moved = ((noise.clamp(0.0, 1.0) * TEST_NONZERO as f32).round() as usize).min(TEST_NONZERO);
    let mut used: std::collections::BTreeSet<usize> = coords.iter().map(|c| c.0).collect();
    let candidates: Vec<(usize, f32)> = support(jitter)
        .into_iter()
        .chain((0..EMBEDDING_DIM).map(|i| (i, 0.125)))
        .collect();
    let mut fresh = candidates.into_iter();
    for c in coords.iter_mut().take(moved) {
        for n in fresh.by_ref() {
            if used.insert(n.0) {
                *c = n;
                break;
            }
        }
    }
    build(&coords)
}

/// A device id `tv-<n>`.
pub fn device(n: u64) -> DeviceId {
    DeviceId::new(format!("tv-{n:05}")).expect("valid device id")
}

/// A region `r<n>`.
pub fn region(n: u64) -> Region {
    Region::new(format!("r{n}")).expect("valid region")
}

/// Bucket number `n % 8`.
pub fn bucket(n: u64) -> ContextBucket {
    ContextBucket::from_index((n % 8) as u8).expect("index below 8")
}

/// A stored pattern with embedding `embedding(seed)`.
pub fn pattern(id: u64, seed: u64, samples: u32, at_ms: u64) -> StoredPattern {
    StoredPattern {
        id: PatternId(id),
        bucket: bucket(seed),
        embedding: embedding(seed).to_ternary(),
        success_rate: (seed % 10) as f32 / 10.0,
        samples,
        updated_at_ms: at_ms,
    }
}

/// A device state.
pub fn state(version: u64, region_n: u64, at_ms: u64) -> DeviceState {
    DeviceState {
        pattern_version: version,
        region: region(region_n),
        last_sync_ms: at_ms,
    }
}

/// A global pattern with embedding `embedding(seed)`.
pub fn global(id: u64, seed: u64) -> PackedGlobalPattern {
    PackedGlobalPattern {
        id,
        bucket: bucket(seed),
        embedding: embedding(seed).to_ternary(),
        success_rate: 0.5,
        support: 5,
        samples: 50,
    }
}

/// A content id `m:<n>`.
pub fn content(n: u64) -> ContentId {
    ContentId::new(format!("m:{n}")).expect("valid content id")
}

/// A catalog entry for `content(n)`.
pub fn catalog_entry(n: u64, seed: u64) -> PackedCatalogEntry {
    PackedCatalogEntry {
        item: CatalogItem {
            id: content(n),
            title: format!("Title {n} / {seed}"),
            genres: vec!["Drama".into()],
            year: Some(2000),
            description: String::new(),
        },
        embedding: embedding(seed).to_i8(),
    }
}

/// A trend for `content(n)`.
pub fn trend(n: u64) -> TrendSignal {
    TrendSignal {
        content_id: content(n),
        bucket: bucket(n),
        score: 0.5,
    }
}

fn sync<'a>(
    state: &'a DeviceState,
    reset: bool,
    upserts: &'a [StoredPattern],
    removals: &'a [PatternId],
) -> DeviceSync<'a> {
    DeviceSync {
        state,
        reset,
        upserts,
        removals,
    }
}

fn ids(ps: &[StoredPattern]) -> Vec<u64> {
    ps.iter().map(|p| p.id.0).collect()
}

/// An empty store answers every read with "nothing".
pub fn empty_store_reads<S: PatternStore>(s: &S) {
    let d = device(1);
    let r = region(1);
    assert_eq!(s.device_state(&d).expect("read"), None);
    assert!(s.device_patterns(&d).expect("read").is_empty());
    assert!(s.regions().expect("read").is_empty());
    let page = s.region_patterns(&r, None, 10).expect("read");
    assert!(page.rows.is_empty() && page.next.is_none());
    assert_eq!(s.region_globals(&r).expect("read").version, 0);
    let g = s.globals_since(&r, 0).expect("read");
    assert_eq!((g.version, g.patterns.len(), g.removed.len()), (0, 0, 0));
    assert_eq!(s.catalog_version().expect("read"), 0);
    assert_eq!(s.catalog_len().expect("read"), 0);
    let c = s.catalog_page(0, 10).expect("read");
    assert!(c.upserts.is_empty() && c.removed.is_empty() && !c.more);
    assert!(s.catalog_entries(None, 10).expect("read").is_empty());
    assert!(!s.forget_device(&d).expect("forget"));
}

/// Upserts, replacements and removals of one device, and its state.
pub fn device_sync_round_trip<S: PatternStore>(s: &S) {
    let d = device(1);
    let st = state(1, 1, 1000);
    let ps = [pattern(1, 11, 3, 1000), pattern(2, 12, 4, 1000)];
    assert_eq!(
        s.apply_device_sync(&d, sync(&st, false, &ps, &[]))
            .expect("apply"),
        2
    );
    let info = s.device_state(&d).expect("read").expect("device known");
    assert_eq!(info.state, st);
    assert_eq!(info.pattern_count, 2);
    assert_eq!(s.device_patterns(&d).expect("read"), ps.to_vec());
    assert_eq!(s.regions().expect("read"), vec![region(1)]);

    // Replace pattern 2, add 3, remove 1 (and an unknown id).
    let st2 = state(2, 1, 2000);
    let ups = [pattern(2, 22, 9, 2000), pattern(3, 13, 1, 2000)];
    let n = s
        .apply_device_sync(&d, sync(&st2, false, &ups, &[PatternId(1), PatternId(99)]))
        .expect("apply");
    assert_eq!(n, 2);
    assert_eq!(s.device_patterns(&d).expect("read"), ups.to_vec());
    assert_eq!(s.device_state(&d).expect("read").expect("known").state, st2);

    // Another device is untouched by all of this.
    let other = device(2);
    let st_o = state(7, 1, 2000);
    s.apply_device_sync(&other, sync(&st_o, false, &[pattern(1, 5, 1, 0)], &[]))
        .expect("apply");
    assert_eq!(ids(&s.device_patterns(&d).expect("read")), vec![2, 3]);
    assert_eq!(ids(&s.device_patterns(&other).expect("read")), vec![1]);
}

/// `reset` drops every earlier pattern before the upserts.
pub fn reset_replaces_everything<S: PatternStore>(s: &S) {
    let d = device(1);
    let ps = [
        pattern(1, 1, 1, 0),
        pattern(2, 2, 1, 0),
        pattern(3, 3, 1, 0),
    ];
    s.apply_device_sync(&d, sync(&state(3, 1, 0), false, &ps, &[]))
        .expect("apply");
    let snap = [pattern(7, 7, 2, 5)];
    let n = s
        .apply_device_sync(&d, sync(&state(1, 1, 5), true, &snap, &[]))
        .expect("apply");
    assert_eq!(n, 1);
    assert_eq!(s.device_patterns(&d).expect("read"), snap.to_vec());
    let n = s
        .apply_device_sync(&d, sync(&state(2, 1, 6), true, &[], &[]))
        .expect("apply");
    assert_eq!(n, 0);
    assert!(s.device_patterns(&d).expect("read").is_empty());
    assert!(s.device_state(&d).expect("read").is_some());
}

/// A device that changes region takes all its patterns along.
pub fn region_change_moves_patterns<S: PatternStore>(s: &S) {
    let d = device(1);
    let ps = [pattern(1, 1, 1, 0), pattern(2, 2, 1, 0)];
    s.apply_device_sync(&d, sync(&state(1, 1, 0), false, &ps, &[]))
        .expect("apply");
    s.apply_device_sync(
        &d,
        sync(&state(2, 2, 1), false, &[pattern(3, 3, 1, 1)], &[]),
    )
    .expect("apply");
    assert_eq!(ids(&s.device_patterns(&d).expect("read")), vec![1, 2, 3]);
    assert!(s
        .region_patterns(&region(1), None, 100)
        .expect("read")
        .rows
        .is_empty());
    let rows = s.region_patterns(&region(2), None, 100).expect("read").rows;
    assert_eq!(rows.len(), 3);
    let mut regions = s.regions().expect("read");
    regions.sort();
    assert_eq!(regions, vec![region(1), region(2)]);
}

/// A sync that would exceed [`MAX_PATTERNS_PER_DEVICE`] is refused whole.
pub fn pattern_limit_is_atomic<S: PatternStore>(s: &S) {
    let d = device(1);
    let max = MAX_PATTERNS_PER_DEVICE as u64;
    let ps: Vec<StoredPattern> = (0..max).map(|i| pattern(i, i, 1, 0)).collect();
    assert_eq!(
        s.apply_device_sync(&d, sync(&state(1, 1, 0), false, &ps, &[]))
            .expect("apply"),
        MAX_PATTERNS_PER_DEVICE
    );
    let one_more = [pattern(max, 1, 1, 0)];
    let err = s
        .apply_device_sync(&d, sync(&state(2, 2, 9), false, &one_more, &[]))
        .expect_err("over the limit");
    assert!(matches!(err, StoreError::LimitExceeded { .. }), "{err:?}");
    let info = s.device_state(&d).expect("read").expect("known");
    assert_eq!(info.state, state(1, 1, 0), "state unchanged");
    assert_eq!(info.pattern_count, MAX_PATTERNS_PER_DEVICE);
    assert_eq!(
        s.region_patterns(&region(1), None, 1)
            .expect("read")
            .rows
            .len(),
        1,
        "patterns not moved"
    );
    // Replacing one while removing one stays within the limit.
    s.apply_device_sync(&d, sync(&state(2, 1, 9), false, &one_more, &[PatternId(0)]))
        .expect("apply within the limit");
}

/// `forget_device` drops state and patterns and nothing else.
pub fn forget_drops_the_device<S: PatternStore>(s: &S) {
    let (a, b) = (device(1), device(2));
    s.apply_device_sync(
        &a,
        sync(&state(1, 1, 0), false, &[pattern(1, 1, 1, 0)], &[]),
    )
    .expect("apply");
    s.apply_device_sync(
        &b,
        sync(&state(1, 1, 0), false, &[pattern(1, 2, 1, 0)], &[]),
    )
    .expect("apply");
    assert!(s.forget_device(&a).expect("forget"));
    assert_eq!(s.device_state(&a).expect("read"), None);
    assert!(s.device_patterns(&a).expect("read").is_empty());
    let rows = s.region_patterns(&region(1), None, 100).expect("read").rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].device, b);
    assert!(!s.forget_device(&a).expect("forget twice"));
}

/// A forgotten device's contribution is gone from the next federation run
/// (privacy rule 4): six devices support one global; after one forgets, the
/// next run publishes it with support 5; after a second forgets, support is
/// below k and the global is withdrawn.
pub fn forget_removes_the_device_from_federation<S: PatternStore>(s: &S) {
    use crate::federation::{run, FederationConfig};
    let config = FederationConfig::default();
    for n in 0..6u64 {
        let p = StoredPattern {
            embedding: embedding_near(1, 100 + n, 0.05).to_ternary(),
            success_rate: 0.8,
            ..pattern(1, 1, 10, 0)
        };
        s.apply_device_sync(&device(n), sync(&state(1, 1, 0), false, &[p], &[]))
            .expect("apply");
    }
    let support = |s: &S| -> Vec<u32> {
        let g = s.region_globals(&region(1)).expect("read");
        g.patterns.iter().map(|p| p.support).collect()
    };
    let reports = run(s, &config).expect("federation");
    assert_eq!(reports[0].devices, 6);
    assert_eq!(support(s), vec![6]);
    assert!(s.forget_device(&device(0)).expect("forget"));
    let reports = run(s, &config).expect("federation");
    assert_eq!(
        reports[0].devices, 5,
        "the forgotten device is still counted"
    );
    assert_eq!(support(s), vec![5]);
    assert!(s.forget_device(&device(1)).expect("forget"));
    let reports = run(s, &config).expect("federation");
    assert_eq!(reports[0].devices, 4);
    let g = s.region_globals(&region(1)).expect("read");
    assert!(g.patterns.is_empty(), "below k the global is withdrawn");
    let change = s.globals_since(&region(1), 1).expect("read");
    assert_eq!(change.removed.len(), 1, "devices are told to drop it");
}

/// Region scans page in (device, pattern) order and see only their region.
pub fn region_scan_pages<S: PatternStore>(s: &S) {
    for n in 0..5u64 {
        let ps: Vec<StoredPattern> = (0..3).map(|i| pattern(i, n * 10 + i, 1, 0)).collect();
        s.apply_device_sync(&device(n), sync(&state(1, n % 2, 0), false, &ps, &[]))
            .expect("apply");
    }
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = s
            .region_patterns(&region(0), after.as_ref(), 4)
            .expect("read");
        assert!(page.rows.len() <= 4);
        seen.extend(page.rows.iter().map(|r| (r.device.clone(), r.pattern.id.0)));
        pages += 1;
        assert!(pages < 100, "scan does not terminate");
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    let expected: Vec<(DeviceId, u64)> = [0u64, 2, 4]
        .iter()
        .flat_map(|&n| (0..3).map(move |i| (device(n), i)))
        .collect();
    assert_eq!(seen, expected);
}

/// Publication versions, change tracking, tombstones, resets and refusals.
pub fn globals_publish_and_changes<S: PatternStore>(s: &S) {
    let r = region(1);
    s.publish_globals(&r, 1, &[global(1, 1), global(2, 2)], &[trend(1)])
        .expect("publish");
    let g = s.globals_since(&r, 0).expect("read");
    assert!(g.reset);
    assert_eq!((g.version, g.patterns.len()), (1, 2));
    assert_eq!(g.trends, vec![trend(1)]);
    assert_eq!(s.globals_since(&r, 1).expect("read").patterns.len(), 0);

    // v2: 1 unchanged, 2 changed, 3 added; then v3: 1 withdrawn.
    s.publish_globals(&r, 2, &[global(1, 1), global(2, 20), global(3, 3)], &[])
        .expect("publish");
    let g = s.globals_since(&r, 1).expect("read");
    assert!(!g.reset);
    let mut changed: Vec<u64> = g.patterns.iter().map(|p| p.id).collect();
    changed.sort_unstable();
    assert_eq!(changed, vec![2, 3]);
    assert!(g.removed.is_empty() && g.trends.is_empty());
    s.publish_globals(&r, 3, &[global(2, 20), global(3, 3)], &[])
        .expect("publish");
    let g = s.globals_since(&r, 2).expect("read");
    assert_eq!((g.patterns.len(), g.removed.clone()), (0, vec![1]));
    let g = s.globals_since(&r, 1).expect("read");
    assert_eq!(g.removed, vec![1]);
    assert_eq!(g.patterns.len(), 2);
    // A device ahead of the node is reset.
    let g = s.globals_since(&r, 9).expect("read");
    assert!(g.reset && g.removed.is_empty());
    assert_eq!(g.patterns.len(), 2);
    // A re-published id comes back.
    s.publish_globals(&r, 4, &[global(1, 1), global(2, 20), global(3, 3)], &[])
        .expect("publish");
    let g = s.globals_since(&r, 3).expect("read");
    assert_eq!(g.patterns.iter().map(|p| p.id).collect::<Vec<_>>(), vec![1]);
    let full = s.region_globals(&r).expect("read");
    assert_eq!((full.version, full.patterns.len(), full.max_id), (4, 3, 3));

    // Refusals apply nothing.
    let stale = s.publish_globals(&r, 4, &[], &[]).expect_err("stale");
    assert_eq!(
        stale,
        StoreError::StaleVersion {
            current: 4,
            given: 4
        }
    );
    let dup = s.publish_globals(&r, 5, &[global(1, 1), global(1, 2)], &[]);
    assert!(matches!(dup, Err(StoreError::InvalidInput { .. })));
    let too_many: Vec<PackedGlobalPattern> = (0..=MAX_GLOBALS_PER_REGION as u64)
        .map(|i| global(i, i))
        .collect();
    assert!(matches!(
        s.publish_globals(&r, 5, &too_many, &[]),
        Err(StoreError::LimitExceeded { .. })
    ));
    assert_eq!(s.region_globals(&r).expect("read"), full);
    // Other regions are independent.
    assert_eq!(s.region_globals(&region(2)).expect("read").version, 0);
}

/// Past [`MAX_GLOBAL_TOMBSTONES`], the oldest tombstones are pruned and
/// devices older than them get a reset.
pub fn global_tombstones_are_bounded<S: PatternStore>(s: &S) {
    let r = region(1);
    let per = MAX_GLOBALS_PER_REGION as u64;
    let rounds = (MAX_GLOBAL_TOMBSTONES as u64 / per) + 2;
    for v in 1..=rounds {
        let ps: Vec<PackedGlobalPattern> = ((v - 1) * per..v * per).map(|i| global(i, i)).collect();
        s.publish_globals(&r, v, &ps, &[]).expect("publish");
    }
    let g = s.globals_since(&r, 1).expect("read");
    assert!(g.reset, "a device behind the pruned tombstones is reset");
    assert_eq!(g.patterns.len(), per as usize);
    let g = s.globals_since(&r, rounds - 1).expect("read");
    assert!(!g.reset);
    assert_eq!(g.removed.len(), per as usize);
    assert!(g.removed.len() <= MAX_GLOBAL_TOMBSTONES);
}

/// Catalog versions, tombstones and pages.
pub fn catalog_versions_and_pages<S: PatternStore>(s: &S) {
    let v = s
        .upsert_catalog(&[
            catalog_entry(1, 1),
            catalog_entry(2, 2),
            catalog_entry(3, 3),
        ])
        .expect("upsert");
    assert_eq!(v, 3);
    assert_eq!(s.catalog_len().expect("read"), 3);
    let p = s.catalog_page(0, 2).expect("read");
    assert_eq!(p.upserts, vec![catalog_entry(1, 1), catalog_entry(2, 2)]);
    assert!(p.more);
    assert_eq!(p.version, 2);
    let p = s.catalog_page(p.version, 2).expect("read");
    assert_eq!(
        (p.upserts.clone(), p.more, p.version),
        (vec![catalog_entry(3, 3)], false, 3)
    );
    assert!(s.catalog_page(3, 2).expect("read").upserts.is_empty());

    // Change 1, remove 2 (and an unknown id): one version each.
    assert_eq!(
        s.upsert_catalog(&[catalog_entry(1, 10)]).expect("upsert"),
        4
    );
    assert_eq!(
        s.remove_catalog(&[content(2), content(77)])
            .expect("remove"),
        5
    );
    assert_eq!(s.remove_catalog(&[content(2)]).expect("remove again"), 5);
    assert_eq!(s.catalog_len().expect("read"), 2);
    let p = s.catalog_page(3, 10).expect("read");
    assert_eq!(p.upserts, vec![catalog_entry(1, 10)]);
    assert_eq!(p.removed, vec![content(2)]);
    assert_eq!(p.version, 5);
    // From scratch, every item appears once at its latest version.
    let p = s.catalog_page(0, 10).expect("read");
    assert_eq!(p.upserts, vec![catalog_entry(3, 3), catalog_entry(1, 10)]);
    assert_eq!(p.removed, vec![content(2)]);
    // Re-adding a removed item.
    assert_eq!(
        s.upsert_catalog(&[catalog_entry(2, 20)]).expect("upsert"),
        6
    );
    assert_eq!(s.catalog_len().expect("read"), 3);
    let all = s.catalog_entries(None, 10).expect("read");
    assert_eq!(
        all.iter().map(|e| e.item.id.clone()).collect::<Vec<_>>(),
        vec![content(1), content(2), content(3)]
    );
    let rest = s.catalog_entries(Some(&content(1)), 1).expect("read");
    assert_eq!(rest, vec![catalog_entry(2, 20)]);
    // A duplicate in one batch: the later one wins, both take a version.
    assert_eq!(
        s.upsert_catalog(&[catalog_entry(9, 1), catalog_entry(9, 2)])
            .expect("upsert"),
        8
    );
    assert_eq!(
        s.catalog_page(6, 10).expect("read").upserts,
        vec![catalog_entry(9, 2)]
    );
}

/// A region's learned totals are stored, replaced and read back per region.
pub fn region_totals_round_trip<S: PatternStore>(s: &S) {
    assert_eq!(s.region_totals(&region(1)).expect("read"), None);
    let mut t = RegionTotals::default();
    t.titles.insert(content(1), 12.5);
    t.pairs.insert((content(1), content(2)), -3.0);
    t.variance = 54.0;
    t.rounds = 2;
    t.contributors = 60;
    s.put_region_totals(&region(1), None, &t).expect("write");
    assert_eq!(s.region_totals(&region(1)).expect("read"), Some(t.clone()));
    assert_eq!(
        s.region_totals(&region(2)).expect("read"),
        None,
        "per region"
    );
    t.rounds = 3;
    s.put_region_totals(&region(1), Some(2), &t).expect("write");
    assert_eq!(s.region_totals(&region(1)).expect("read"), Some(t));
}

/// Writes of learned totals are compare-and-set on the rounds read: a
/// writer that read older totals (another node folded meanwhile) or none
/// when some are stored is refused with [`StoreError::Conflict`] and
/// changes nothing, so no node's folded round is overwritten.
pub fn region_totals_are_compare_and_set<S: PatternStore>(s: &S) {
    let conflict = |r: Result<(), StoreError>| {
        assert!(
            matches!(r, Err(StoreError::Conflict { .. })),
            "a stale write is refused: {r:?}"
        )
    };
    let mut a = RegionTotals::default();
    a.titles.insert(content(1), 5.0);
    a.rounds = 1;
    a.contributors = 5;
    conflict(s.put_region_totals(&region(1), Some(0), &a));
    assert_eq!(s.region_totals(&region(1)).expect("read"), None);
    s.put_region_totals(&region(1), None, &a)
        .expect("first write");
    // Another node also read nothing and folded its own round.
    let mut b = RegionTotals::default();
    b.titles.insert(content(2), 6.0);
    b.rounds = 1;
    b.contributors = 6;
    conflict(s.put_region_totals(&region(1), None, &b));
    conflict(s.put_region_totals(&region(1), Some(0), &b));
    conflict(s.put_region_totals(&region(1), Some(2), &b));
    assert_eq!(s.region_totals(&region(1)).expect("read"), Some(a.clone()));
    // It re-reads and adds its round to what it read.
    let mut both = a.clone();
    both.titles.insert(content(2), 6.0);
    both.rounds = 2;
    both.contributors = 11;
    assert_eq!(s.region_totals_rounds(&region(1)).expect("read"), Some(1));
    s.put_region_totals(&region(1), Some(1), &both)
        .expect("write on what was read");
    assert_eq!(s.region_totals(&region(1)).expect("read"), Some(both));
    assert_eq!(s.region_totals_rounds(&region(1)).expect("read"), Some(2));
    assert_eq!(s.region_totals_rounds(&region(2)).expect("read"), None);
    // Per region: another region's rounds are not this one's.
    conflict(s.put_region_totals(&region(2), Some(2), &a));
    s.put_region_totals(&region(2), None, &a)
        .expect("other region");
}

/// Everything acknowledged before the store is dropped is there after it is
/// reopened. `open` must open the same persistent store each time.
pub fn reopen_keeps_acknowledged_state<S: PatternStore>(mut open: impl FnMut() -> S) {
    let d = device(1);
    let ps = [pattern(1, 1, 1, 0), pattern(2, 2, 1, 0)];
    {
        let s = open();
        s.apply_device_sync(&d, sync(&state(2, 1, 100), false, &ps, &[]))
            .expect("apply");
        s.apply_device_sync(&device(2), sync(&state(1, 1, 100), false, &ps, &[]))
            .expect("apply");
        s.forget_device(&device(2)).expect("forget");
        s.publish_globals(&region(1), 1, &[global(1, 1)], &[trend(1)])
            .expect("publish");
        s.upsert_catalog(&[catalog_entry(1, 1), catalog_entry(2, 2)])
            .expect("upsert");
        s.remove_catalog(&[content(1)]).expect("remove");
        let mut t = RegionTotals::default();
        t.titles.insert(content(2), 7.0);
        t.rounds = 1;
        s.put_region_totals(&region(1), None, &t).expect("write");
    }
    let s = open();
    let t = s.region_totals(&region(1)).expect("read").expect("kept");
    assert_eq!(
        (t.rounds, t.titles.get(&content(2)).copied()),
        (1, Some(7.0))
    );
    let info = s.device_state(&d).expect("read").expect("device kept");
    assert_eq!(info.state, state(2, 1, 100));
    assert_eq!(s.device_patterns(&d).expect("read"), ps.to_vec());
    assert_eq!(s.device_state(&device(2)).expect("read"), None);
    let g = s.region_globals(&region(1)).expect("read");
    assert_eq!(
        (g.version, g.patterns, g.trends),
        (1, vec![global(1, 1)], vec![trend(1)])
    );
    assert_eq!(s.catalog_version().expect("read"), 3);
    assert_eq!(s.catalog_len().expect("read"), 1);
    let p = s.catalog_page(0, 10).expect("read");
    assert_eq!(
        (p.upserts, p.removed),
        (vec![catalog_entry(2, 2)], vec![content(1)])
    );
}

/// One step of a [`check_against_model`] run. Small numbers name devices,
/// regions, patterns and content so that operations collide often.
#[derive(Debug, Clone)]
pub enum Op {
    /// `apply_device_sync` for `device(device)` in `region(region)`.
    Sync {
        /// Device number.
        device: u8,
        /// Region number.
        region: u8,
        /// Pattern version written.
        version: u64,
        /// Snapshot semantics.
        reset: bool,
        /// (pattern id, embedding seed, samples).
        upserts: Vec<(u8, u64, u32)>,
        /// Pattern ids removed.
        removals: Vec<u8>,
    },
    /// `forget_device(device(n))`.
    Forget(u8),
    /// `publish_globals(region(region), version, …)`.
    Publish {
        /// Region number.
        region: u8,
        /// Version to publish (may be stale on purpose).
        version: u64,
        /// (global id, embedding seed).
        patterns: Vec<(u8, u64)>,
        /// Content numbers of trends.
        trends: Vec<u8>,
    },
    /// `upsert_catalog` of (content number, seed) entries.
    UpsertCatalog(Vec<(u8, u64)>),
    /// `remove_catalog` of content numbers.
    RemoveCatalog(Vec<u8>),
}

/// Devices, regions named by [`Op`]s are below these.
pub const MODEL_DEVICES: u8 = 4;
/// See [`MODEL_DEVICES`].
pub const MODEL_REGIONS: u8 = 3;

fn apply_op<S: PatternStore>(s: &S, op: &Op, step: u64) -> Result<u64, StoreError> {
    match op {
        Op::Sync {
            device: d,
            region: r,
            version,
            reset,
            upserts,
            removals,
        } => {
            let st = state(*version, u64::from(*r), step);
            let ups: Vec<StoredPattern> = upserts
                .iter()
                .map(|(id, seed, n)| pattern(u64::from(*id), *seed, *n, step))
                .collect();
            let rem: Vec<PatternId> = removals.iter().map(|i| PatternId(u64::from(*i))).collect();
            s.apply_device_sync(&device(u64::from(*d)), sync(&st, *reset, &ups, &rem))
                .map(u64::from)
        }
        Op::Forget(d) => s.forget_device(&device(u64::from(*d))).map(u64::from),
        Op::Publish {
            region: r,
            version,
            patterns,
            trends,
        } => {
            let ps: Vec<PackedGlobalPattern> = patterns
                .iter()
                .map(|(id, seed)| global(u64::from(*id), *seed))
                .collect();
            let ts: Vec<TrendSignal> = trends.iter().map(|n| trend(u64::from(*n))).collect();
            s.publish_globals(&region(u64::from(*r)), *version, &ps, &ts)
                .map(|()| 0)
        }
        Op::UpsertCatalog(items) => {
            let es: Vec<PackedCatalogEntry> = items
                .iter()
                .map(|(n, seed)| catalog_entry(u64::from(*n), *seed))
                .collect();
            s.upsert_catalog(&es)
        }
        Op::RemoveCatalog(ns) => {
            let ids: Vec<ContentId> = ns.iter().map(|n| content(u64::from(*n))).collect();
            s.remove_catalog(&ids)
        }
    }
}

fn assert_same_reads<S: PatternStore>(s: &S, m: &MemoryStore, step: usize) {
    let ctx = |what: &str| format!("step {step}: {what} differs from the model");
    for d in 0..u64::from(MODEL_DEVICES) {
        let d = device(d);
        assert_eq!(
            s.device_state(&d).expect("read"),
            m.device_state(&d).expect("read"),
            "{}",
            ctx("device_state")
        );
        assert_eq!(
            s.device_patterns(&d).expect("read"),
            m.device_patterns(&d).expect("read"),
            "{}",
            ctx("device_patterns")
        );
    }
    let mut sr = s.regions().expect("read");
    sr.sort();
    assert_eq!(sr, m.regions().expect("read"), "{}", ctx("regions"));
    for r in 0..u64::from(MODEL_REGIONS) {
        let r = region(r);
        let mut after = None;
        loop {
            let a = s.region_patterns(&r, after.as_ref(), 2).expect("read");
            let b = m.region_patterns(&r, after.as_ref(), 2).expect("read");
            assert_eq!(a, b, "{}", ctx("region_patterns"));
            match a.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let g = m.region_globals(&r).expect("read");
        assert_eq!(
            s.region_globals(&r).expect("read"),
            g,
            "{}",
            ctx("region_globals")
        );
        for since in [0, 1, g.version.saturating_sub(1), g.version, g.version + 1] {
            let mut a = s.globals_since(&r, since).expect("read");
            let mut b = m.globals_since(&r, since).expect("read");
            for c in [&mut a, &mut b] {
                c.patterns.sort_by_key(|p| p.id);
                c.removed.sort_unstable();
            }
            assert_eq!(a, b, "{}", ctx("globals_since"));
        }
    }
    let v = m.catalog_version().expect("read");
    assert_eq!(
        s.catalog_version().expect("read"),
        v,
        "{}",
        ctx("catalog_version")
    );
    assert_eq!(
        s.catalog_len().expect("read"),
        m.catalog_len().expect("read"),
        "{}",
        ctx("catalog_len")
    );
    for since in 0..=v + 1 {
        assert_eq!(
            s.catalog_page(since, 3).expect("read"),
            m.catalog_page(since, 3).expect("read"),
            "{}",
            ctx("catalog_page")
        );
    }
    assert_eq!(
        s.catalog_entries(None, 100).expect("read"),
        m.catalog_entries(None, 100).expect("read"),
        "{}",
        ctx("catalog_entries")
    );
}

/// Applies `ops` to `store` (which must start empty) and to a fresh
/// [`MemoryStore`]; every result and every read after every step must agree.
pub fn check_against_model<S: PatternStore>(store: &S, ops: &[Op]) {
    let model = MemoryStore::new();
    for (step, op) in ops.iter().enumerate() {
        let a = apply_op(store, op, step as u64);
        let b = apply_op(&model, op, step as u64);
        match (&a, &b) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "step {step}: {op:?} results differ"),
            (Err(x), Err(y)) => assert_eq!(
                std::mem::discriminant(x),
                std::mem::discriminant(y),
                "step {step}: {op:?} errors differ: {x} vs {y}"
            ),
            _ => panic!("step {step}: {op:?}: store {a:?}, model {b:?}"),
        }
        assert_same_reads(store, &model, step);
    }
}

/// Runs every check above except [`reopen_keeps_acknowledged_state`] (which
/// needs a persistent store), each on a fresh store from `make_store`.
pub fn run_all<S: PatternStore>(mut make_store: impl FnMut() -> S) {
    empty_store_reads(&make_store());
    device_sync_round_trip(&make_store());
    reset_replaces_everything(&make_store());
    region_change_moves_patterns(&make_store());
    pattern_limit_is_atomic(&make_store());
    forget_drops_the_device(&make_store());
    forget_removes_the_device_from_federation(&make_store());
    region_scan_pages(&make_store());
    globals_publish_and_changes(&make_store());
    global_tombstones_are_bounded(&make_store());
    catalog_versions_and_pages(&make_store());
    region_totals_round_trip(&make_store());
    region_totals_are_compare_and_set(&make_store());
    let fixed = [
        Op::Sync {
            device: 0,
            region: 0,
            version: 1,
            reset: false,
            upserts: vec![(1, 1, 1), (2, 2, 2)],
            removals: vec![],
        },
        Op::Sync {
            device: 1,
            region: 0,
            version: 1,
            reset: false,
            upserts: vec![(1, 3, 1)],
            removals: vec![],
        },
        Op::Sync {
            device: 0,
            region: 1,
            version: 2,
            reset: false,
            upserts: vec![(3, 3, 1)],
            removals: vec![1],
        },
        Op::Publish {
            region: 0,
            version: 1,
            patterns: vec![(1, 1), (2, 2)],
            trends: vec![1],
        },
        Op::Publish {
            region: 0,
            version: 2,
            patterns: vec![(2, 2), (3, 3)],
            trends: vec![],
        },
        Op::Publish {
            region: 0,
            version: 2,
            patterns: vec![],
            trends: vec![],
        },
        Op::UpsertCatalog(vec![(1, 1), (2, 2), (1, 3)]),
        Op::RemoveCatalog(vec![2, 5]),
        Op::Forget(1),
        Op::Sync {
            device: 0,
            region: 1,
            version: 3,
            reset: true,
            upserts: vec![(9, 9, 9)],
            removals: vec![],
        },
    ];
    check_against_model(&make_store(), &fixed);
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_embeddings_survive_renormalization() {
        for seed in 0..200 {
            for e in [
                super::embedding(seed),
                super::embedding_near(seed, seed + 1, 0.2),
            ] {
                assert_eq!(
                    super::Embedding::new(e.as_slice().to_vec()).expect("valid"),
                    e
                );
            }
        }
        let near = super::embedding_near(1, 2, 0.25);
        let cos = near.cosine(&super::embedding(1));
        assert!((0.7..0.8).contains(&cos), "{cos}");
        assert!(super::embedding(1).cosine(&super::embedding(2)).abs() < 0.4);
    }

    #[test]
    fn the_reference_model_passes_the_suite() {
        super::run_all(super::MemoryStore::new);
    }
}
