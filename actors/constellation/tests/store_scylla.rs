//! The shared store suite, the reopen test and the reference-model proptest,
//! run against a real Cassandra or ScyllaDB at `OMEGA_TEST_CQL` (host:port;
//! `scripts/cassandra.sh start` runs one here). Each test uses fresh
//! keyspaces of its own (dropped after), so the tests run in parallel.
//!
//! Without `OMEGA_TEST_CQL` the tests say they were skipped and pass, unless
//! `OMEGA_REQUIRE_CQL=1` (CI), where a missing or unreachable database fails.
#![allow(clippy::unwrap_used)]

#[path = "common/store_ops.rs"]
mod store_ops;

use std::time::Instant;

use omega_constellation::cluster::{self, ClusterStore, FEDERATION_LEASE};
use omega_constellation::store::suite::{self, device, pattern, region, state};
use omega_constellation::store::{
    cql_test_target as target, fresh_test_options as fresh_options, DeviceSync, PatternStore,
    ScyllaOptions, ScyllaStore, StoreError, SCYLLA_FORMAT,
};
use proptest::prelude::*;
use store_ops::op;

/// An empty store in a fresh keyspace, dropped with the store.
fn fresh(addr: &str) -> ScyllaStore {
    let opts = fresh_options(addr);
    match ScyllaStore::open(&opts) {
        Ok(s) => s.dropping_keyspace(),
        Err(e) => panic!(
            "cannot open a store at {addr} (is Cassandra running? scripts/cassandra.sh start): {e}"
        ),
    }
}

#[test]
fn scylla_store_passes_the_shared_suite() {
    let Some(addr) = target() else { return };
    let started = Instant::now();
    suite::run_all(|| fresh(&addr));
    println!("shared suite: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn scylla_store_keeps_acknowledged_state_across_reopen() {
    let Some(addr) = target() else { return };
    let opts = fresh_options(&addr);
    suite::reopen_keeps_acknowledged_state(|| ScyllaStore::open(&opts).unwrap());
    drop(ScyllaStore::open(&opts).unwrap().dropping_keyspace());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn scylla_store_matches_the_reference_model(ops in prop::collection::vec(op(), 1..24)) {
        let Some(addr) = target() else { return Ok(()) };
        let store = fresh(&addr);
        suite::check_against_model(&store, &ops);
    }
}

#[test]
fn rows_in_a_wrong_format_are_typed_errors_not_panics() {
    let Some(addr) = target() else { return };
    let opts = fresh_options(&addr);
    let s = ScyllaStore::open(&opts).unwrap().dropping_keyspace();
    let ks = s.keyspace().to_owned();
    let d = device(1);
    let st = state(1, 1, 0);
    let ps = [pattern(1, 1, 1, 0)];
    let sync = DeviceSync {
        state: &st,
        reset: false,
        upserts: &ps,
        removals: &[],
    };
    s.apply_device_sync(&d, sync).unwrap();
    // A blob that is no pattern, in the device partition and the region's.
    s.execute_raw(&format!(
        "UPDATE {ks}.devices SET pattern = 0xdeadbeef WHERE device = 'tv-00001' AND pattern_id = {}",
        (1u64 ^ (1 << 63)) as i64
    ))
    .unwrap();
    let err = s.device_patterns(&d).expect_err("a damaged pattern");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    s.execute_raw(&format!(
        "UPDATE {ks}.region_patterns SET pattern = 0x00 WHERE region = 'r1' AND device = 'tv-00001' AND kind = 1 AND pattern_id = {}",
        (1u64 ^ (1 << 63)) as i64
    ))
    .unwrap();
    let err = s
        .region_patterns(&region(1), None, 10)
        .expect_err("damaged row");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // A device id that is not one, in a region row.
    s.execute_raw(&format!(
        "INSERT INTO {ks}.region_patterns (region, device, kind, pattern_id, pattern) VALUES ('r2', 'NOT A DEVICE', 1, 0, 0x00)"
    ))
    .unwrap();
    let err = s.region_patterns(&region(2), None, 10).expect_err("bad id");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // Trends that do not decode.
    s.execute_raw(&format!(
        "UPDATE {ks}.globals SET version = 1, trends = 0xffffffffffff WHERE region = 'r1'"
    ))
    .unwrap();
    let err = s.region_globals(&region(1)).expect_err("bad trends");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // A keyspace of another record format is refused on open.
    s.execute_raw(&format!(
        "UPDATE {ks}.store_meta SET value = 99 WHERE name = 'format'"
    ))
    .unwrap();
    let err = ScyllaStore::open(&opts).expect_err("another format");
    assert_eq!(
        err,
        StoreError::UnsupportedFormat {
            found: 99,
            supported: SCYLLA_FORMAT
        }
    );
}

#[test]
fn an_unreachable_database_is_an_error_not_a_panic() {
    // Nothing listens on port 1 of the loopback address.
    let opts = ScyllaOptions::new(vec!["127.0.0.1:1".into()], "omega_unreachable");
    let err = ScyllaStore::open(&opts).expect_err("nothing listens there");
    assert!(
        matches!(err, StoreError::Backend { op: "open", .. }),
        "{err:?}"
    );
    let bad = ScyllaOptions::new(vec!["127.0.0.1:1".into()], "no-dashes");
    assert!(matches!(
        ScyllaStore::open(&bad),
        Err(StoreError::InvalidInput { .. })
    ));
}

/// The node calls the store from `spawn_blocking` inside its runtime: the
/// store's own runtime must not panic there, nor when it is dropped inside
/// an async task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_spawn_blocking_inside_a_runtime() {
    let Some(addr) = target() else { return };
    let opts = fresh_options(&addr);
    let store = std::sync::Arc::new(
        tokio::task::spawn_blocking(move || ScyllaStore::open(&opts))
            .await
            .unwrap()
            .unwrap(),
    );
    let s = std::sync::Arc::clone(&store);
    let (count, mut timings) = tokio::task::spawn_blocking(move || {
        let st = state(1, 1, 0);
        let mut timings = Vec::new();
        let mut count = 0;
        for i in 0..20u64 {
            let ps = [pattern(i, i, 1, 0)];
            let started = Instant::now();
            count = s
                .apply_device_sync(
                    &device(1),
                    DeviceSync {
                        state: &st,
                        reset: false,
                        upserts: &ps,
                        removals: &[],
                    },
                )
                .unwrap();
            timings.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        (count, timings)
    })
    .await
    .unwrap();
    assert_eq!(count, 20);
    timings.sort_by(f64::total_cmp);
    println!(
        "apply_device_sync (read + transaction + region rows): median {:.1} ms, max {:.1} ms",
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );
    let s = std::sync::Arc::clone(&store);
    let ks = store.keyspace().to_owned();
    let n = tokio::task::spawn_blocking(move || s.device_patterns(&device(1)).unwrap().len())
        .await
        .unwrap();
    assert_eq!(n, 20);
    // Drop the keyspace from a blocking thread, then drop the store here,
    // in the async task.
    let s = std::sync::Arc::clone(&store);
    tokio::task::spawn_blocking(move || {
        s.execute_raw(&format!("DROP KEYSPACE IF EXISTS {ks}"))
            .unwrap()
    })
    .await
    .unwrap();
    drop(store);
}

/// Calls from async code break the trait's rule (the node's startup does it
/// once); they block the calling thread, as the redb store does, but do not
/// panic on either runtime flavor.
#[test]
fn a_call_from_async_code_blocks_but_does_not_panic() {
    let Some(addr) = target() else { return };
    let store = fresh(&addr);
    for multi in [false, true] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread().build()
        }
        .unwrap();
        let n = rt.block_on(async { store.catalog_version().unwrap() });
        assert_eq!(n, 0, "multi-threaded: {multi}");
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Two stores on one keyspace: two nodes of a cluster.
fn two_nodes(addr: &str) -> (Box<ScyllaStore>, Box<ScyllaStore>) {
    let opts = fresh_options(addr);
    let a = ScyllaStore::open(&opts).unwrap().dropping_keyspace();
    let b = ScyllaStore::open(&opts).unwrap();
    (Box::new(a), Box::new(b))
}

#[test]
fn scylla_cluster_passes_the_cluster_suite_across_two_nodes() {
    let Some(addr) = target() else { return };
    cluster::suite::run_all(|| two_nodes(&addr), wall_ms);
}

/// Real TTLs: the holder stops renewing, the row expires in the database and
/// the other node takes the lease (polled with a deadline, no fixed sleep);
/// the stopped node's heartbeat row disappears the same way.
#[test]
fn the_other_node_takes_the_lease_once_the_holder_stops_renewing() {
    let Some(addr) = target() else { return };
    let (a, b) = two_nodes(&addr);
    let ttl = 2_000;
    a.heartbeat("node-a", "127.0.0.1:1", wall_ms(), ttl)
        .unwrap();
    b.heartbeat("node-b", "127.0.0.1:2", wall_ms(), 60_000)
        .unwrap();
    let first = a
        .try_lease(FEDERATION_LEASE, "node-a", wall_ms(), ttl)
        .unwrap();
    assert_eq!(first.holder, "node-a");
    let stopped_at = wall_ms();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let taken = loop {
        let l = b
            .try_lease(FEDERATION_LEASE, "node-b", wall_ms(), ttl)
            .unwrap();
        if l.holder == "node-b" {
            break wall_ms();
        }
        assert_eq!(l.holder, "node-a", "only a or b");
        assert!(Instant::now() < deadline, "b never took the lease");
        // Poll (each try is a Paxos round); the deadline bounds the wait.
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        taken >= first.expires_ms,
        "taken at {taken}, before a's lease expired at {}",
        first.expires_ms
    );
    assert!(
        taken - stopped_at < 10_000,
        "taken {} ms after a stopped",
        taken - stopped_at
    );
    let again = a
        .try_lease(FEDERATION_LEASE, "node-a", wall_ms(), ttl)
        .unwrap();
    assert_eq!(
        again.holder, "node-b",
        "a cannot take it back while b holds it"
    );
    let members: Vec<String> = b
        .members(wall_ms())
        .unwrap()
        .into_iter()
        .map(|m| m.node)
        .collect();
    assert_eq!(members, ["node-b"], "a's heartbeat expired");
}

/// Two nodes racing to publish the same region version: exactly one
/// publication applies (the version is the condition of the transaction).
#[test]
fn two_nodes_cannot_publish_the_same_global_version() {
    let Some(addr) = target() else { return };
    let (a, b) = two_nodes(&addr);
    let r = region(1);
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|s| {
        let ha = s.spawn(|| a.publish_globals(&r, 1, &[suite::global(1, 1)], &[]));
        let hb = s.spawn(|| b.publish_globals(&r, 1, &[suite::global(2, 2)], &[]));
        vec![ha.join().unwrap(), hb.join().unwrap()]
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "one publication applies: {results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                e,
                StoreError::Conflict { .. } | StoreError::StaleVersion { .. }
            ),
            "the loser is refused: {e:?}"
        );
    }
    let g = a.region_globals(&r).unwrap();
    assert_eq!(g.version, 1);
    assert_eq!(g.patterns.len(), 1, "one publication's patterns, not a mix");
}

/// Two nodes adding rounds to one region's learned totals at once, each
/// read, add, compare-and-set and, when refused, again (as the sync shell
/// does): every round of both is in the store at the end, none overwritten.
#[test]
fn two_nodes_adding_learned_rounds_at_once_lose_none() {
    use omega_constellation_core::aggregate::RegionTotals;
    let Some(addr) = target() else { return };
    let (a, b) = two_nodes(&addr);
    let r = region(1);
    const ROUNDS: u32 = 6;
    let add = |s: &ScyllaStore, title: u64| {
        let mut conflicts = 0;
        for _ in 0..ROUNDS {
            loop {
                let read = s.region_totals(&r).unwrap();
                let mut t = read.clone().unwrap_or_default();
                *t.titles.entry(suite::content(title)).or_default() += 1.0;
                t.rounds += 1;
                t.contributors += 5;
                match s.put_region_totals(&r, read.map(|t| t.rounds), &t) {
                    Ok(()) => break,
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("write failed: {e}"),
                }
            }
        }
        conflicts
    };
    let conflicts: u32 = std::thread::scope(|s| {
        let ha = s.spawn(|| add(&a, 1));
        let hb = s.spawn(|| add(&b, 2));
        ha.join().unwrap() + hb.join().unwrap()
    });
    let t: RegionTotals = a.region_totals(&r).unwrap().expect("stored");
    assert_eq!(
        (t.rounds, t.contributors),
        (2 * ROUNDS, 10 * u64::from(ROUNDS))
    );
    assert_eq!(t.titles[&suite::content(1)], f64::from(ROUNDS));
    assert_eq!(t.titles[&suite::content(2)], f64::from(ROUNDS));
    println!("{conflicts} conflicting writes retried");
}

/// A keyspace made before the totals' `rounds` column: opening it adds the
/// column and fills it from each row's totals, so the compare-and-set works
/// on totals written before.
#[test]
fn opening_a_keyspace_without_the_rounds_column_migrates_it() {
    use omega_constellation_core::aggregate::RegionTotals;
    let Some(addr) = target() else { return };
    let opts = fresh_options(&addr);
    let s = ScyllaStore::open(&opts).unwrap().dropping_keyspace();
    let ks = s.keyspace().to_owned();
    let mut t = RegionTotals::default();
    t.titles.insert(suite::content(1), 4.0);
    t.rounds = 3;
    s.put_region_totals(&region(1), None, &t).unwrap();
    // As an older build left it: no column, the row written without it.
    s.execute_raw(&format!("ALTER TABLE {ks}.region_totals DROP rounds"))
        .unwrap();
    let again = ScyllaStore::open(&opts).unwrap();
    assert_eq!(again.region_totals(&region(1)).unwrap(), Some(t.clone()));
    let mut next = t.clone();
    next.rounds = 4;
    let stale = again.put_region_totals(&region(1), Some(2), &next);
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    again
        .put_region_totals(&region(1), Some(3), &next)
        .expect("the migrated row's rounds are the condition");
    assert_eq!(s.region_totals(&region(1)).unwrap(), Some(next));
}
