//! The shared store suite, the reopen test and the reference-model proptest,
//! run against the embedded redb store.
#![allow(clippy::unwrap_used)]

#[path = "common/store_ops.rs"]
mod store_ops;

use omega_constellation::store::suite;
use omega_constellation::store::RedbStore;
use proptest::prelude::*;
use store_ops::op;

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redb_store_matches_the_reference_model(ops in prop::collection::vec(op(), 1..24)) {
        let (_dir, store) = fresh();
        suite::check_against_model(&store, &ops);
    }
}
