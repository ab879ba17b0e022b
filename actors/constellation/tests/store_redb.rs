//! The shared store suite, the reopen test and the reference-model proptest,
//! run against the embedded redb store.
#![allow(clippy::unwrap_used)]

#[path = "common/store_ops.rs"]
mod store_ops;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use omega_constellation::store::suite;
use omega_constellation::store::{
    DeviceSync, GroupOptions, PatternStore, RedbStore, StoreError, StoredPattern,
    MAX_PATTERNS_PER_DEVICE,
};
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

/// A disk that keeps only what was synced: writes go to a backend's live
/// copy, `sync_data` copies it into `durable` (what survives a crash). While
/// `hold` is set a sync waits (a slow fsync); the sync numbered `crash_from`
/// (counting every sync since the disk was made) and everything after it
/// fails: the machine is gone.
#[derive(Debug)]
struct Disk {
    durable: Mutex<Vec<u8>>,
    syncs: AtomicU64,
    crash_from: AtomicU64,
    hold: Mutex<bool>,
    released: Condvar,
}

impl Disk {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            durable: Mutex::new(Vec::new()),
            syncs: AtomicU64::new(0),
            crash_from: AtomicU64::new(u64::MAX),
            hold: Mutex::new(false),
            released: Condvar::new(),
        })
    }

    fn crashed(&self) -> bool {
        self.syncs.load(Ordering::SeqCst) > self.crash_from.load(Ordering::SeqCst)
    }

    fn set_hold(&self, on: bool) {
        *self.hold.lock().unwrap() = on;
        self.released.notify_all();
    }
}

#[derive(Debug)]
struct CrashBackend {
    live: Mutex<Vec<u8>>,
    disk: Arc<Disk>,
}

impl CrashBackend {
    /// The machine (re)started: the file as last synced, no crash pending.
    fn start(disk: &Arc<Disk>) -> Self {
        disk.crash_from.store(u64::MAX, Ordering::SeqCst);
        Self {
            live: Mutex::new(disk.durable.lock().unwrap().clone()),
            disk: Arc::clone(disk),
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.disk.crashed() {
            return Err(io::Error::other("crashed"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for CrashBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.live.lock().unwrap().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let live = self.live.lock().unwrap();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let src = live
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.live.lock().unwrap().resize(len, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let n = self.disk.syncs.fetch_add(1, Ordering::SeqCst);
        let mut hold = self.disk.hold.lock().unwrap();
        while *hold {
            hold = self.disk.released.wait(hold).unwrap();
        }
        drop(hold);
        if n >= self.disk.crash_from.load(Ordering::SeqCst) {
            return Err(io::Error::other("crashed"));
        }
        *self.disk.durable.lock().unwrap() = self.live.lock().unwrap().clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let mut live = self.live.lock().unwrap();
        if live.len() < start + data.len() {
            live.resize(start + data.len(), 0);
        }
        live[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Polls `cond` until it holds or ten seconds pass.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Syncs queued behind a slow commit.
const BATCH: u64 = 24;
/// The device that syncs alone first (acknowledged before any crash).
const WARM_UP: u64 = 1000;

/// One sync of device `n`: one pattern, version `n + 1`, region 1 to 3.
fn sync_device(store: &RedbStore, n: u64) -> Result<u32, StoreError> {
    let state = suite::state(n + 1, 1 + n % 3, n);
    let ps = [suite::pattern(n, n, 1, n)];
    store.apply_device_sync(
        &suite::device(n),
        DeviceSync {
            state: &state,
            reset: false,
            upserts: &ps,
            removals: &[],
        },
    )
}

/// A sync of device `n` one pattern past the limit, refused on its own.
fn sync_over_the_limit(store: &RedbStore, n: u64) -> Result<u32, StoreError> {
    let state = suite::state(1, 1, 0);
    let ps: Vec<StoredPattern> = (0..=u64::from(MAX_PATTERNS_PER_DEVICE))
        .map(|i| suite::pattern(i, i, 1, 0))
        .collect();
    store.apply_device_sync(
        &suite::device(n),
        DeviceSync {
            state: &state,
            reset: false,
            upserts: &ps,
            removals: &[],
        },
    )
}

/// What one run of [`queued_batch`] saw.
struct Batched {
    /// Device `n`'s outcome at `n - 1` (the last is over the limit).
    outcomes: Vec<Result<u32, StoreError>>,
    /// Disk syncs of one commit, and of the batch's.
    syncs_per_commit: u64,
    batch_syncs: u64,
    /// Commits (or failed commits) of device syncs.
    batches: u64,
}

/// Device `WARM_UP` syncs alone; device 0's commit then waits in fsync
/// while devices 1..=`BATCH` queue (the last one over the pattern limit,
/// refused alone); then the disk is released. With `crash`, the machine
/// crashes in the first fsync after device 0's commit: the batch's.
fn queued_batch(disk: &Arc<Disk>, crash: bool) -> Batched {
    let store = Arc::new(
        RedbStore::open_with_backend(CrashBackend::start(disk), GroupOptions::default()).unwrap(),
    );
    let before = disk.syncs.load(Ordering::SeqCst);
    assert_eq!(sync_device(&store, WARM_UP), Ok(1));
    let base = disk.syncs.load(Ordering::SeqCst);
    let syncs_per_commit = base - before;
    assert!(syncs_per_commit >= 1);
    if crash {
        disk.crash_from
            .store(base + syncs_per_commit, Ordering::SeqCst);
    }
    disk.set_hold(true);
    let first = {
        let s = Arc::clone(&store);
        std::thread::spawn(move || sync_device(&s, 0))
    };
    eventually("device 0's commit in fsync", || {
        disk.syncs.load(Ordering::SeqCst) > base
    });
    let handles: Vec<_> = (1..=BATCH)
        .map(|n| {
            let s = Arc::clone(&store);
            std::thread::spawn(move || {
                if n == BATCH {
                    sync_over_the_limit(&s, n)
                } else {
                    sync_device(&s, n)
                }
            })
        })
        .collect();
    eventually("every sync queued", || {
        store.queued_syncs() == BATCH as usize
    });
    disk.set_hold(false);
    assert_eq!(first.join().unwrap(), Ok(1), "device 0 commits alone");
    let outcomes = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let batch_syncs = disk.syncs.load(Ordering::SeqCst) - base - syncs_per_commit;
    let batches = store.sync_batches();
    drop(store);
    Batched {
        outcomes,
        syncs_per_commit,
        batch_syncs,
        batches,
    }
}

/// The over-the-limit sync was refused on its own; every other one is `ok`.
fn check_outcomes(run: &Batched, ok: impl Fn(&Result<u32, StoreError>) -> bool) {
    for (n, got) in (1..).zip(&run.outcomes) {
        if n == BATCH {
            assert!(
                matches!(got, Err(StoreError::LimitExceeded { .. })),
                "its own refusal: {got:?}"
            );
        } else {
            assert!(ok(got), "device {n}: {got:?}");
        }
    }
}

#[test]
fn concurrent_syncs_share_one_commit_and_every_acknowledged_one_survives() {
    let disk = Disk::new();
    let run = queued_batch(&disk, false);
    check_outcomes(&run, |got| got == &Ok(1));
    // 2 + BATCH syncs in three commits: the warm-up, device 0, the batch.
    assert_eq!(run.batches, 3);
    assert_eq!(run.batch_syncs, run.syncs_per_commit, "one commit's fsyncs");
    // Power cut now: only what was synced is left.
    let store =
        RedbStore::open_with_backend(CrashBackend::start(&disk), GroupOptions::default()).unwrap();
    for n in (0..BATCH).chain([WARM_UP]) {
        let info = store.device_state(&suite::device(n)).unwrap();
        assert_eq!(
            info.map(|i| (i.state.pattern_version, i.pattern_count)),
            Some((n + 1, 1)),
            "device {n} acknowledged, so durable"
        );
    }
    assert_eq!(store.device_state(&suite::device(BATCH)).unwrap(), None);
}

#[test]
fn a_crash_before_the_batch_commit_loses_the_whole_batch_and_acknowledges_none() {
    let disk = Disk::new();
    let run = queued_batch(&disk, true);
    check_outcomes(&run, |got| matches!(got, Err(StoreError::Backend { .. })));
    assert_eq!(run.batches, 3);
    let store =
        RedbStore::open_with_backend(CrashBackend::start(&disk), GroupOptions::default()).unwrap();
    for n in [WARM_UP, 0] {
        assert!(
            store.device_state(&suite::device(n)).unwrap().is_some(),
            "device {n} was acknowledged before the crash"
        );
    }
    for n in 1..=BATCH {
        assert_eq!(
            store.device_state(&suite::device(n)).unwrap(),
            None,
            "device {n}: none of the batch"
        );
    }
    // Only batch devices (2, 5, …) had patterns in region 3.
    assert!(store
        .region_patterns(&suite::region(3), None, 100)
        .unwrap()
        .rows
        .is_empty());
    // The store works on after the restart.
    assert_eq!(sync_device(&store, 5), Ok(1));
}
