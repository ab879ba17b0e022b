//! The shared store suite, the reopen test and the reference-model proptest,
//! run against the embedded redb store.
#![allow(clippy::unwrap_used)]

use omega_constellation::store::suite::{self, Op, MODEL_DEVICES, MODEL_REGIONS};
use omega_constellation::store::RedbStore;
use proptest::prelude::*;

fn fresh() -> (tempfile::TempDir, RedbStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join("store.redb")).unwrap();
    (dir, store)
}

#[test]
fn redb_store_passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    suite::run_all(|| {
        n += 1;
        RedbStore::open(dir.path().join(format!("store-{n}.redb"))).unwrap()
    });
}

#[test]
fn redb_store_keeps_acknowledged_state_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    suite::reopen_keeps_acknowledged_state(|| RedbStore::open(&path).unwrap());
}

#[test]
fn a_file_that_is_not_a_store_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, b"definitely not a redb file, just some bytes").unwrap();
    assert!(RedbStore::open(&path).is_err());
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..MODEL_DEVICES;
    let reg = 0..MODEL_REGIONS;
    prop_oneof![
        4 => (
            dev.clone(),
            reg.clone(),
            0..6u64,
            prop::bool::weighted(0.2),
            prop::collection::vec((0..6u8, 0..20u64, 1..5u32), 0..4),
            prop::collection::vec(0..6u8, 0..3),
        )
            .prop_map(|(device, region, version, reset, upserts, removals)| Op::Sync {
                device,
                region,
                version,
                reset,
                upserts,
                removals,
            }),
        1 => dev.prop_map(Op::Forget),
        2 => (
            reg,
            0..8u64,
            prop::collection::btree_map(0..8u8, 0..4u64, 0..4),
            prop::collection::vec(0..5u8, 0..3),
        )
            .prop_map(|(region, version, patterns, trends)| Op::Publish {
                region,
                version,
                patterns: patterns.into_iter().collect(),
                trends,
            }),
        2 => prop::collection::vec((0..6u8, 0..4u64), 0..4).prop_map(Op::UpsertCatalog),
        1 => prop::collection::vec(0..6u8, 0..3).prop_map(Op::RemoveCatalog),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redb_store_matches_the_reference_model(ops in prop::collection::vec(op(), 1..24)) {
        let (_dir, store) = fresh();
        suite::check_against_model(&store, &ops);
    }
}
