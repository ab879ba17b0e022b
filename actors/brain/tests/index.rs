//! The usearch index as a cache of redb: saved, reloaded, rebuilt when damaged.
#![allow(clippy::unwrap_used)]

#[path = "../../brain-core/tests/support/mod.rs"]
mod support;

use omega_brain::index::{index_path_for, CatalogIndex, IndexConfig, IndexLoad, IndexScalar};
use omega_brain::store::{BrainStore, StoreConfig};
use omega_brain::CandidateSearch;
use support::*;

fn store_with_catalog(dir: &std::path::Path) -> BrainStore {
    let (catalog, _) = clustered_catalog(10, 20, 11);
    let (mut s, _) = BrainStore::open(dir.join("brain.redb"), StoreConfig::default()).unwrap();
    s.update_catalog(&catalog, &[]).unwrap();
    s
}

fn queries() -> Vec<Vec<f32>> {
    (0..10).map(|i| unit(500 + i).into_vec()).collect()
}

fn answers(idx: &CatalogIndex) -> Vec<Vec<u64>> {
    queries()
        .iter()
        .map(|q| idx.nearest(q, 10).unwrap())
        .collect()
}

#[test]
fn saved_index_loads_and_damaged_index_is_rebuilt_with_same_results() {
    for scalar in [IndexScalar::F32, IndexScalar::I8] {
        let dir = tempfile::tempdir().unwrap();
        let s = store_with_catalog(dir.path());
        let cfg = IndexConfig {
            scalar,
            ..IndexConfig::default()
        };
        let path = s.index_path();
        let rev = s.state().versions.catalog_rev;
        let (idx, load) =
            CatalogIndex::open_or_rebuild(&path, &s.state().catalog, rev, cfg).unwrap();
        assert!(
            matches!(load, IndexLoad::Rebuilt { .. }),
            "no file yet: {load:?}"
        );
        assert_eq!(idx.len(), 200);
        let want = answers(&idx);
        // The nearest item to an item's own vector is the item.
        let (key, vector) = {
            let st = s.state();
            let rec = st.catalog.iter().nth(7).unwrap();
            (rec.key, rec.vector())
        };
        assert_eq!(idx.nearest(&vector, 1).unwrap(), vec![key]);

        let (idx2, load) =
            CatalogIndex::open_or_rebuild(&path, &s.state().catalog, rev, cfg).unwrap();
        assert_eq!(load, IndexLoad::Loaded);
        assert_eq!(answers(&idx2), want);

        // Truncated.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let (idx3, load) =
            CatalogIndex::open_or_rebuild(&path, &s.state().catalog, rev, cfg).unwrap();
        assert!(
            matches!(load, IndexLoad::Rebuilt { ref reason } if reason.contains("truncated")),
            "{load:?}"
        );
        assert_eq!(answers(&idx3), want);

        // Garbled body.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n / 2..n / 2 + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (idx4, load) =
            CatalogIndex::open_or_rebuild(&path, &s.state().catalog, rev, cfg).unwrap();
        assert!(
            matches!(load, IndexLoad::Rebuilt { ref reason } if reason.contains("checksum")),
            "{load:?}"
        );
        assert_eq!(answers(&idx4), want);

        // Missing.
        std::fs::remove_file(&path).unwrap();
        let (_, load) = CatalogIndex::open_or_rebuild(&path, &s.state().catalog, rev, cfg).unwrap();
        assert!(matches!(load, IndexLoad::Rebuilt { .. }));
        let (_, load) = CatalogIndex::open_or_rebuild(&path, &s.state().catalog, rev, cfg).unwrap();
        assert_eq!(load, IndexLoad::Loaded);
    }
}

#[test]
fn stale_index_is_detected_and_incremental_updates_match_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = store_with_catalog(dir.path());
    let cfg = IndexConfig::default();
    let path = index_path_for(s.path());
    let (idx, _) = CatalogIndex::open_or_rebuild(
        &path,
        &s.state().catalog,
        s.state().versions.catalog_rev,
        cfg,
    )
    .unwrap();
    // The catalog changes: one item withdrawn, one added.
    let change = s
        .update_catalog(&[entry("new-1", "New", "g", unit(99))], &[cid("c0-0")])
        .unwrap();
    idx.apply(&s.state().catalog, &change).unwrap();
    assert_eq!(idx.len(), 200);
    assert_eq!(
        idx.nearest(unit(99).as_slice(), 1).unwrap(),
        vec![s.state().catalog.key_of(&cid("new-1")).unwrap()]
    );
    // The file on disk is for the previous revision: stale.
    let (_, load) = CatalogIndex::open_or_rebuild(
        &path,
        &s.state().catalog,
        s.state().versions.catalog_rev,
        cfg,
    )
    .unwrap();
    assert!(
        matches!(load, IndexLoad::Rebuilt { ref reason } if reason.contains("stale")),
        "{load:?}"
    );
}

/// The same state through a rebuilt index gives the same recommendations
/// (the build is deterministic).
#[test]
fn recommend_through_a_rebuilt_index_gives_the_same_answer() {
    use omega_brain::{recommend, BrainState, RecommendRequest, RecommenderConfig};
    let (catalog, _) = clustered_catalog(5, 10, 31);
    let mut st = BrainState::default();
    for e in &catalog {
        st.catalog.upsert(e);
    }
    let req = RecommendRequest {
        recent: vec![cid("c0-0"), cid("c1-1"), cid("c3-3")],
        ..RecommendRequest::new(evening(), 10)
    };
    let cfg = RecommenderConfig::default();
    let idx = CatalogIndex::build(&st.catalog, IndexConfig::default()).unwrap();
    let a = recommend(&st, &idx, &req, None, &cfg).unwrap();
    let idx2 = CatalogIndex::build(&st.catalog, IndexConfig::default()).unwrap();
    let b = recommend(&st, &idx2, &req, None, &cfg).unwrap();
    assert_eq!(a.len(), 10);
    assert_eq!(a, b);
}
