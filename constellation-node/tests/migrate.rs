//! `omega_node::migrate::copy_store` from a real redb file into the reference
//! model and (with `OMEGA_TEST_CQL`) into a fresh Cassandra keyspace: a TV
//! at any catalog or global version the source ever had ends, paging the
//! target from there, with exactly the source's current catalog and globals;
//! totals, devices and patterns are equal; a non-empty target is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use omega_constellation::store::suite::{
    catalog_entry, content, device, global, pattern, region, state, trend,
};
use omega_constellation::store::{
    cql_test_target, fresh_test_options, DeviceSync, MemoryStore, PatternStore, RedbStore,
    ScyllaStore,
};
use omega_constellation_core::aggregate::RegionTotals;
use omega_node::migrate::{copy_store, MigrateError};
use omega_protocol::{ContentId, PackedCatalogEntry, PackedGlobalPattern};

/// What a TV holds at one version: catalog entries by id, globals by id.
type CatalogView = BTreeMap<ContentId, PackedCatalogEntry>;
type GlobalsView = BTreeMap<u64, PackedGlobalPattern>;

struct History {
    catalog: Vec<(u64, CatalogView)>,
    globals: Vec<(u64, GlobalsView)>,
}

fn live_catalog(s: &dyn PatternStore) -> CatalogView {
    s.catalog_entries(None, 4096)
        .unwrap()
        .into_iter()
        .map(|e| (e.item.id.clone(), e))
        .collect()
}

fn live_globals(s: &dyn PatternStore) -> GlobalsView {
    s.region_globals(&region(1))
        .unwrap()
        .patterns
        .into_iter()
        .map(|p| (p.id, p))
        .collect()
}

/// A source with history: catalog upserts, withdrawals and a re-upsert;
/// three global versions with a withdrawal and a change; three devices;
/// learned totals.
fn populate(s: &dyn PatternStore) -> History {
    let mut h = History {
        catalog: vec![(0, CatalogView::new())],
        globals: vec![(0, GlobalsView::new())],
    };
    let mut snap_catalog = |s: &dyn PatternStore| {
        h.catalog
            .push((s.catalog_version().unwrap(), live_catalog(s)));
    };
    s.upsert_catalog(&(1..=6).map(|n| catalog_entry(n, n)).collect::<Vec<_>>())
        .unwrap();
    snap_catalog(s);
    s.remove_catalog(&[content(2), content(3)]).unwrap();
    snap_catalog(s);
    s.upsert_catalog(&[catalog_entry(4, 40)]).unwrap();
    snap_catalog(s);
    s.upsert_catalog(&[catalog_entry(7, 7), catalog_entry(3, 33)])
        .unwrap();
    snap_catalog(s);
    s.remove_catalog(&[content(5)]).unwrap();
    snap_catalog(s);

    let r = region(1);
    for (v, globals) in [
        (1, vec![global(1, 1), global(2, 2), global(3, 3)]),
        (2, vec![global(1, 1), global(3, 30)]),
        (3, vec![global(1, 1), global(3, 30), global(4, 4)]),
    ] {
        s.publish_globals(&r, v, &globals, &[trend(1)]).unwrap();
        h.globals.push((v, live_globals(s)));
    }
    for d in 1..=3u64 {
        let st = state(d, 1, 1_000 * d);
        let patterns: Vec<_> = (1..=d).map(|p| pattern(p, d * 10 + p, 5, 1_000)).collect();
        let sync = DeviceSync {
            state: &st,
            reset: true,
            upserts: &patterns,
            removals: &[],
        };
        s.apply_device_sync(&device(d), sync).unwrap();
    }
    let mut totals = RegionTotals::default();
    totals.titles.insert(content(1), 12.5);
    totals.pairs.insert((content(1), content(4)), 3.0);
    totals.variance = 2.0;
    totals.rounds = 2;
    totals.contributors = 40;
    s.put_region_totals(&r, None, &totals).unwrap();
    h
}

/// A TV holding `view` at `version` pages the target to its end.
fn page_catalog(to: &dyn PatternStore, mut version: u64, mut view: CatalogView) -> CatalogView {
    loop {
        let page = to.catalog_page(version, 2).unwrap();
        for id in &page.removed {
            view.remove(id);
        }
        for e in page.upserts {
            view.insert(e.item.id.clone(), e);
        }
        version = page.version;
        if !page.more {
            return view;
        }
    }
}

fn sync_globals(to: &dyn PatternStore, since: u64, mut view: GlobalsView) -> GlobalsView {
    let change = to.globals_since(&region(1), since).unwrap();
    if change.reset {
        view.clear();
    }
    for id in &change.removed {
        view.remove(id);
    }
    for p in change.patterns {
        view.insert(p.id, p);
    }
    view
}

fn check(from: &dyn PatternStore, to: &dyn PatternStore, h: &History) {
    let report = copy_store(from, to, &[region(1), region(2)]).unwrap();
    assert_eq!(report.devices, 3, "{report:?}");
    assert_eq!(report.patterns, 6, "{report:?}");
    assert_eq!(report.totals, 1, "{report:?}");
    assert!(report.target_catalog_version > report.source_catalog_version);

    let now = live_catalog(from);
    assert_eq!(live_catalog(to), now);
    for (v, view) in &h.catalog {
        assert_eq!(
            page_catalog(to, *v, view.clone()),
            now,
            "a TV at catalog version {v}"
        );
    }
    let globals = live_globals(from);
    assert_eq!(live_globals(to), globals);
    let (src, dst) = (
        from.region_globals(&region(1)).unwrap(),
        to.region_globals(&region(1)).unwrap(),
    );
    assert_eq!((dst.version, &dst.trends), (src.version, &src.trends));
    assert!(dst.max_id >= src.max_id);
    for (v, view) in &h.globals {
        assert_eq!(
            sync_globals(to, *v, view.clone()),
            globals,
            "a TV at global version {v}"
        );
    }
    for d in 1..=3 {
        assert_eq!(
            to.device_state(&device(d)).unwrap(),
            from.device_state(&device(d)).unwrap()
        );
        assert_eq!(
            to.device_patterns(&device(d)).unwrap(),
            from.device_patterns(&device(d)).unwrap()
        );
    }
    assert_eq!(
        to.region_totals(&region(1)).unwrap(),
        from.region_totals(&region(1)).unwrap()
    );
    assert_eq!(to.region_totals(&region(2)).unwrap(), None);
    // A second copy into the now full target is refused.
    assert!(matches!(
        copy_store(from, to, &[region(1)]),
        Err(MigrateError::TargetNotEmpty(_))
    ));
}

#[test]
fn a_redb_store_copied_into_the_reference_model_serves_every_tv_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let from = RedbStore::open(dir.path().join("constellation.redb")).unwrap();
    let h = populate(&from);
    check(&from, &MemoryStore::new(), &h);
}

#[test]
fn a_redb_store_copied_into_cassandra_serves_every_tv_as_before() {
    let Some(addr) = cql_test_target() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let from = RedbStore::open(dir.path().join("constellation.redb")).unwrap();
    let h = populate(&from);
    let to = ScyllaStore::open(&fresh_test_options(&addr))
        .unwrap()
        .dropping_keyspace();
    check(&from, &to, &h);
}
