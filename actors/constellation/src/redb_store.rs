//! [`RedbStore`]: the embedded [`PatternStore`] (one redb file per node).
//!
//! Tables (values are postcard):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `devices` | device id | [`DeviceInfo`] |
//! | `patterns` | (region, device id, pattern id) | [`StoredPattern`] |
//! | `regions` | region | () |
//! | `globals` | (region, global id) | change version + pattern or tombstone |
//! | `region_meta` | region | version, tombstone floor, max id, trends |
//! | `catalog` | content id | change version + entry or tombstone |
//! | `catalog_log` | catalog version | content id (one row per live change) |
//! | `meta` | name | u64 (`catalog_version`, `catalog_len`) |
//!
//! Keying patterns by region first keeps a region scan one range read and a
//! device's patterns one range inside it (the device's region is in
//! `devices`). Every write is committed with [`redb::Durability::Immediate`]
//! before the call returns; a transaction that is dropped without commit (on
//! any error) applies nothing.
//!
//! Device syncs are group-committed ([`crate::group_commit`]): concurrent
//! [`PatternStore::apply_device_sync`] calls share one write transaction and
//! one fsync, and each returns only after that commit. A sync refused on its
//! own (a corrupt device record, the pattern limit) is refused before it
//! writes anything, so the others in its batch still commit (and it keeps
//! its own error if they fail); a failed transaction or commit fails every
//! other sync of the batch with its error. The other writes take a
//! transaction each.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;

use redb::{
    Database, ReadableDatabase, ReadableTable, StorageBackend, Table, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::group_commit::Group;
pub use crate::group_commit::GroupOptions;
use crate::record::{dec, enc};

use omega_protocol::limits::MAX_CATALOG_PAGE;
use omega_protocol::{
    ContentId, DeviceId, PackedCatalogEntry, PackedCatalogPage, PackedGlobalPattern, Region,
    TrendSignal,
};

use omega_constellation_core::aggregate::RegionTotals;
use omega_constellation_core::store::{
    check_publish, clamp_page, globals_change, plan_publish, DeviceInfo, DeviceState, DeviceSync,
    GlobalRecord, GlobalsChange, PatternCursor, PatternStore, RegionGlobals, RegionPattern,
    RegionPatternPage, StoreError, StoredPattern, MAX_PATTERNS_PER_DEVICE, MAX_SCAN_PAGE,
};

const DEVICES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("devices");
const PATTERNS: TableDefinition<'_, (&str, &str, u64), &[u8]> = TableDefinition::new("patterns");
const REGIONS: TableDefinition<'_, &str, ()> = TableDefinition::new("regions");
const GLOBALS: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("globals");
const REGION_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("region_meta");
/// Region → its learned totals (postcard).
const LEARNED: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("learned");
/// Region → the rounds count of its learned totals, written with them: the
/// refresh check and the compare-and-set read it instead of decoding totals
/// that can reach megabytes (a file written before it existed has none:
/// then the totals are decoded).
const LEARNED_ROUNDS: TableDefinition<'_, &str, u32> = TableDefinition::new("learned_rounds");
const CATALOG: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("catalog");
const CATALOG_LOG: TableDefinition<'_, u64, &str> = TableDefinition::new("catalog_log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const CATALOG_VERSION: &str = "catalog_version";
/// The record format of this build, in `meta`. Format 1 (no key) kept f32
/// embeddings; format 2 keeps them in their wire form (ternary patterns and
/// globals, int8 catalog entries).
const FORMAT_VERSION: &str = "format_version";
/// The format this build reads and writes.
pub const STORE_FORMAT: u64 = 2;
const CATALOG_LEN: &str = "catalog_len";

/// Greater than every device id (whose characters are at most `z`).
const DEVICE_MAX: &str = "\u{7f}";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RegionMeta {
    version: u64,
    floor: u64,
    max_id: u64,
    trends: Vec<TrendSignal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CatalogRecord {
    version: u64,
    entry: Option<PackedCatalogEntry>,
}

/// Maps any redb error of operation `op` to [`StoreError::DiskFull`] when
/// the file system is out of space, to [`StoreError::Backend`] otherwise.
fn be<E: Into<redb::Error>>(op: &'static str) -> impl Fn(E) -> StoreError {
    move |e| {
        let e: redb::Error = e.into();
        match &e {
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                StoreError::DiskFull { op }
            }
            _ => StoreError::backend(op, e),
        }
    }
}

/// The embedded, durable [`PatternStore`].
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    group: Group<Prepared>,
}

/// One device sync, checked and encoded by its caller before it is queued
/// for a group commit.
struct Prepared {
    device: String,
    state: DeviceState,
    reset: bool,
    /// (pattern id, encoded pattern).
    upserts: Vec<(u64, Vec<u8>)>,
    removals: Vec<u64>,
}

impl Prepared {
    fn new(device: &DeviceId, sync: DeviceSync<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            device: device.as_str().to_owned(),
            state: sync.state.clone(),
            reset: sync.reset,
            upserts: sync
                .upserts
                .iter()
                .map(|p| Ok((p.id.0, enc(p)?)))
                .collect::<Result<_, StoreError>>()?,
            removals: sync.removals.iter().map(|id| id.0).collect(),
        })
    }
}

/// Why one sync of a batch was not applied.
enum SyncFailure {
    /// Refused before it wrote anything: the rest of the batch goes on.
    Refused(StoreError),
    /// The transaction failed, possibly half-written: the batch is aborted.
    Broken(StoreError),
}

/// The tables a device sync writes, opened once per batch.
struct SyncTables<'t> {
    devices: Table<'t, &'static str, &'static [u8]>,
    patterns: Table<'t, (&'static str, &'static str, u64), &'static [u8]>,
    regions: Table<'t, &'static str, ()>,
}

impl RedbStore {
    /// Opens the store at `path` with the default [`GroupOptions`], creating
    /// the file and its tables if needed. A file written in another record
    /// format is refused with [`StoreError::UnsupportedFormat`] (a file
    /// without a format version is format 1).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, GroupOptions::default())
    }

    /// [`RedbStore::open`] with how device syncs are group-committed.
    pub fn open_with(path: impl AsRef<Path>, options: GroupOptions) -> Result<Self, StoreError> {
        Self::init(Database::create(path).map_err(be("open"))?, options)
    }

    /// [`RedbStore::open_with`] on any redb storage backend (tests use it to
    /// inject faults and crashes).
    pub fn open_with_backend(
        backend: impl StorageBackend,
        options: GroupOptions,
    ) -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(be("open"))?;
        Self::init(db, options)
    }

    /// Device-sync batches committed (or failed) since the store was opened:
    /// fewer than the syncs when concurrent syncs shared commits.
    pub fn sync_batches(&self) -> u64 {
        self.group.batches()
    }

    /// Device syncs queued for a commit and not yet taken into a batch.
    pub fn queued_syncs(&self) -> usize {
        self.group.queued()
    }

    fn init(db: Database, options: GroupOptions) -> Result<Self, StoreError> {
        let store = Self {
            db,
            group: Group::new(options),
        };
        let txn = store.write_txn("open")?;
        {
            let fresh = txn.list_tables().map_err(be("open"))?.next().is_none();
            let mut meta = txn.open_table(META).map_err(be("open"))?;
            let found = meta
                .get(FORMAT_VERSION)
                .map_err(be("open"))?
                .map(|v| v.value());
            match found {
                Some(STORE_FORMAT) => {}
                None if fresh => {
                    meta.insert(FORMAT_VERSION, STORE_FORMAT)
                        .map_err(be("open"))?;
                }
                other => {
                    return Err(StoreError::UnsupportedFormat {
                        found: other.unwrap_or(1),
                        supported: STORE_FORMAT,
                    })
                }
            }
        }
        {
            txn.open_table(DEVICES).map_err(be("open"))?;
            txn.open_table(PATTERNS).map_err(be("open"))?;
            txn.open_table(REGIONS).map_err(be("open"))?;
            txn.open_table(GLOBALS).map_err(be("open"))?;
            txn.open_table(REGION_META).map_err(be("open"))?;
            txn.open_table(LEARNED).map_err(be("open"))?;
            txn.open_table(LEARNED_ROUNDS).map_err(be("open"))?;
            txn.open_table(CATALOG).map_err(be("open"))?;
            txn.open_table(CATALOG_LOG).map_err(be("open"))?;
            txn.open_table(META).map_err(be("open"))?;
        }
        txn.commit().map_err(be("open"))?;
        Ok(store)
    }

    /// One catalog transaction: each change either stores an entry
    /// (`Some`, an upsert) or a tombstone (`None`, a removal of a live item;
    /// removing an absent item changes nothing). Every applied change takes
    /// the next catalog version and moves the item's row in the version log.
    fn write_catalog<'a>(
        &self,
        op: &'static str,
        changes: impl Iterator<Item = (&'a str, Option<&'a PackedCatalogEntry>)>,
    ) -> Result<u64, StoreError> {
        let txn = self.write_txn(op)?;
        let version = {
            let mut catalog = txn.open_table(CATALOG).map_err(be(op))?;
            let mut log = txn.open_table(CATALOG_LOG).map_err(be(op))?;
            let mut meta = txn.open_table(META).map_err(be(op))?;
            let mut version = read_u64(&meta, CATALOG_VERSION)?;
            let mut len = read_u64(&meta, CATALOG_LEN)?;
            for (id, entry) in changes {
                let old: Option<CatalogRecord> = match catalog.get(id).map_err(be(op))? {
                    Some(v) => Some(dec("catalog item", v.value())?),
                    None => None,
                };
                let was_live = old.as_ref().is_some_and(|o| o.entry.is_some());
                if entry.is_none() && !was_live {
                    continue;
                }
                version += 1;
                if let Some(old) = old {
                    log.remove(old.version).map_err(be(op))?;
                }
                match (was_live, entry.is_some()) {
                    (false, true) => len += 1,
                    (true, false) => len = len.saturating_sub(1),
                    _ => {}
                }
                let rec = CatalogRecord {
                    version,
                    entry: entry.cloned(),
                };
                catalog.insert(id, enc(&rec)?.as_slice()).map_err(be(op))?;
                log.insert(version, id).map_err(be(op))?;
            }
            meta.insert(CATALOG_VERSION, version).map_err(be(op))?;
            meta.insert(CATALOG_LEN, len).map_err(be(op))?;
            version
        };
        txn.commit().map_err(be(op))?;
        Ok(version)
    }

    /// Applies a batch of device syncs in one transaction and commits it:
    /// one outcome per sync, in order.
    fn commit_syncs(&self, batch: Vec<Prepared>) -> Vec<Result<u32, StoreError>> {
        let op = "apply_device_sync";
        let mut out = Vec::with_capacity(batch.len());
        // The batch failed: every sync not refused on its own gets `e`.
        let fail = |mut out: Vec<Result<u32, StoreError>>, e: StoreError| {
            for r in out.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
            out.resize(batch.len(), Err(e));
            out
        };
        let txn = match self.write_txn(op) {
            Ok(t) => t,
            Err(e) => return fail(out, e),
        };
        {
            let tables = (|| {
                Ok::<_, StoreError>(SyncTables {
                    devices: txn.open_table(DEVICES).map_err(be(op))?,
                    patterns: txn.open_table(PATTERNS).map_err(be(op))?,
                    regions: txn.open_table(REGIONS).map_err(be(op))?,
                })
            })();
            let mut tables = match tables {
                Ok(t) => t,
                Err(e) => return fail(out, e),
            };
            for p in &batch {
                match apply_sync(&mut tables, p) {
                    Ok(count) => out.push(Ok(count)),
                    Err(SyncFailure::Refused(e)) => out.push(Err(e)),
                    // Dropping the transaction uncommitted aborts it.
                    Err(SyncFailure::Broken(e)) => return fail(out, e),
                }
            }
        }
        if out.iter().all(Result::is_err) {
            // Nothing to commit: every sync was refused.
            return out;
        }
        match txn.commit() {
            Ok(()) => out,
            Err(e) => fail(out, be(op)(e)),
        }
    }

    fn write_txn(&self, op: &'static str) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(be(op))?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(be(op))?;
        Ok(txn)
    }

    fn read_txn(&self, op: &'static str) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(be(op))
    }
}

fn device_range<'a>(
    region: &'a str,
    device: &'a str,
) -> std::ops::RangeInclusive<(&'a str, &'a str, u64)> {
    (region, device, 0)..=(region, device, u64::MAX)
}

/// Applies one device sync inside a batch's transaction. Everything that
/// can refuse this sync alone (its device record, the pattern limit) is
/// checked by reads before its first write.
fn apply_sync(t: &mut SyncTables<'_>, p: &Prepared) -> Result<u32, SyncFailure> {
    let op = "apply_device_sync";
    let broken = |e| SyncFailure::Broken(be::<redb::Error>(op)(e));
    let dev = p.device.as_str();
    let region = p.state.region.as_str();
    let old: Option<DeviceInfo> = match t.devices.get(dev).map_err(|e| broken(e.into()))? {
        Some(v) => Some(dec("device", v.value()).map_err(SyncFailure::Refused)?),
        None => None,
    };
    // The patterns kept from before (none after a reset), where they are
    // now; after this sync they are in `region`.
    let kept = old.as_ref().filter(|_| !p.reset);
    let kept_region = kept.map(|o| o.state.region.as_str());
    // The device's pattern count, kept up to date instead of re-counted by
    // a range scan on every sync; computed before any write.
    let mut count = kept.map_or(0, |o| o.pattern_count as usize);
    let mut now: HashMap<u64, bool> = HashMap::new();
    let present = |id: u64, now: &HashMap<u64, bool>| -> Result<bool, SyncFailure> {
        if let Some(&here) = now.get(&id) {
            return Ok(here);
        }
        match kept_region {
            Some(r) => Ok(t
                .patterns
                .get((r, dev, id))
                .map_err(|e| broken(e.into()))?
                .is_some()),
            None => Ok(false),
        }
    };
    for &id in &p.removals {
        if present(id, &now)? {
            count = count.saturating_sub(1);
        }
        now.insert(id, false);
    }
    for (id, _) in &p.upserts {
        if !present(*id, &now)? {
            count += 1;
        }
        now.insert(*id, true);
    }
    if count > MAX_PATTERNS_PER_DEVICE as usize {
        return Err(SyncFailure::Refused(StoreError::LimitExceeded {
            what: "patterns per device",
            len: count,
            max: MAX_PATTERNS_PER_DEVICE as usize,
        }));
    }
    let info = enc(&DeviceInfo {
        state: p.state.clone(),
        pattern_count: count as u32,
    })
    .map_err(SyncFailure::Refused)?;
    // From here on a failure may leave this sync half-written.
    if let Some(old) = &old {
        let old_region = old.state.region.as_str();
        if p.reset {
            t.patterns
                .retain_in(device_range(old_region, dev), |_, _| false)
                .map_err(|e| broken(e.into()))?;
        } else if old_region != region {
            // Move every pattern to the device's new region.
            let mut moved = Vec::new();
            for row in t
                .patterns
                .range(device_range(old_region, dev))
                .map_err(|e| broken(e.into()))?
            {
                let (k, v) = row.map_err(|e| broken(e.into()))?;
                moved.push((k.value().2, v.value().to_vec()));
            }
            t.patterns
                .retain_in(device_range(old_region, dev), |_, _| false)
                .map_err(|e| broken(e.into()))?;
            for (id, bytes) in moved {
                t.patterns
                    .insert((region, dev, id), bytes.as_slice())
                    .map_err(|e| broken(e.into()))?;
            }
        }
    }
    for &id in &p.removals {
        t.patterns
            .remove((region, dev, id))
            .map_err(|e| broken(e.into()))?;
    }
    for (id, bytes) in &p.upserts {
        t.patterns
            .insert((region, dev, *id), bytes.as_slice())
            .map_err(|e| broken(e.into()))?;
    }
    t.devices
        .insert(dev, info.as_slice())
        .map_err(|e| broken(e.into()))?;
    t.regions.insert(region, ()).map_err(|e| broken(e.into()))?;
    Ok(count as u32)
}

fn read_meta(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    region: &Region,
) -> Result<RegionMeta, StoreError> {
    match table.get(region.as_str()).map_err(be("read region"))? {
        Some(v) => dec("region meta", v.value()),
        None => Ok(RegionMeta::default()),
    }
}

fn read_u64(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(table
        .get(key)
        .map_err(be("read meta"))?
        .map_or(0, |v| v.value()))
}

/// The rounds count of `region`'s stored totals: from `rounds`, else (a file
/// written before that table) from the decoded totals.
fn held_rounds(
    rounds: &impl ReadableTable<&'static str, u32>,
    learned: &impl ReadableTable<&'static str, &'static [u8]>,
    region: &Region,
    op: &'static str,
) -> Result<Option<u32>, StoreError> {
    if let Some(r) = rounds.get(region.as_str()).map_err(be(op))? {
        return Ok(Some(r.value()));
    }
    learned
        .get(region.as_str())
        .map_err(be(op))?
        .map(|v| dec::<RegionTotals>("learned totals", v.value()).map(|t| t.rounds))
        .transpose()
}

impl PatternStore for RedbStore {
    fn device_state(&self, device: &DeviceId) -> Result<Option<DeviceInfo>, StoreError> {
        let txn = self.read_txn("device_state")?;
        let t = txn.open_table(DEVICES).map_err(be("device_state"))?;
        let v = t.get(device.as_str()).map_err(be("device_state"))?;
        v.map(|v| dec("device", v.value())).transpose()
    }

    fn device_patterns(&self, device: &DeviceId) -> Result<Vec<StoredPattern>, StoreError> {
        let op = "device_patterns";
        let txn = self.read_txn(op)?;
        let devices = txn.open_table(DEVICES).map_err(be(op))?;
        let Some(info) = devices.get(device.as_str()).map_err(be(op))? else {
            return Ok(Vec::new());
        };
        let info: DeviceInfo = dec("device", info.value())?;
        let patterns = txn.open_table(PATTERNS).map_err(be(op))?;
        let mut out = Vec::new();
        for row in patterns
            .range(device_range(info.state.region.as_str(), device.as_str()))
            .map_err(be(op))?
        {
            let (_, v) = row.map_err(be(op))?;
            out.push(dec("pattern", v.value())?);
        }
        Ok(out)
    }

    fn apply_device_sync(
        &self,
        device: &DeviceId,
        sync: DeviceSync<'_>,
    ) -> Result<u32, StoreError> {
        let prepared = Prepared::new(device, sync)?;
        self.group
            .submit(prepared, |batch| self.commit_syncs(batch))
    }

    fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let op = "forget_device";
        let dev = device.as_str();
        let txn = self.write_txn(op)?;
        let found = {
            let mut devices = txn.open_table(DEVICES).map_err(be(op))?;
            let mut patterns = txn.open_table(PATTERNS).map_err(be(op))?;
            let old: Option<DeviceInfo> = match devices.remove(dev).map_err(be(op))? {
                Some(v) => Some(dec("device", v.value())?),
                None => None,
            };
            if let Some(old) = &old {
                patterns
                    .retain_in(device_range(old.state.region.as_str(), dev), |_, _| false)
                    .map_err(be(op))?;
            }
            old.is_some()
        };
        txn.commit().map_err(be(op))?;
        Ok(found)
    }

    fn region_totals(&self, region: &Region) -> Result<Option<RegionTotals>, StoreError> {
        let op = "region_totals";
        let txn = self.read_txn(op)?;
        let t = txn.open_table(LEARNED).map_err(be(op))?;
        let row = t.get(region.as_str()).map_err(be(op))?;
        row.map(|v| dec("learned totals", v.value())).transpose()
    }

    fn region_totals_rounds(&self, region: &Region) -> Result<Option<u32>, StoreError> {
        let op = "region_totals_rounds";
        let txn = self.read_txn(op)?;
        let rounds = txn.open_table(LEARNED_ROUNDS).map_err(be(op))?;
        let learned = txn.open_table(LEARNED).map_err(be(op))?;
        held_rounds(&rounds, &learned, region, op)
    }

    fn put_region_totals(
        &self,
        region: &Region,
        read: Option<u32>,
        totals: &RegionTotals,
    ) -> Result<(), StoreError> {
        let op = "put_region_totals";
        let bytes = enc(totals)?;
        let txn = self.write_txn(op)?;
        {
            let mut t = txn.open_table(LEARNED).map_err(be(op))?;
            let mut rounds = txn.open_table(LEARNED_ROUNDS).map_err(be(op))?;
            if held_rounds(&rounds, &t, region, op)? != read {
                // Dropping the transaction aborts it: nothing applied.
                return Err(StoreError::Conflict { op });
            }
            t.insert(region.as_str(), bytes.as_slice())
                .map_err(be(op))?;
            rounds
                .insert(region.as_str(), totals.rounds)
                .map_err(be(op))?;
        }
        txn.commit().map_err(be(op))?;
        Ok(())
    }

    fn regions(&self) -> Result<Vec<Region>, StoreError> {
        let op = "regions";
        let txn = self.read_txn(op)?;
        let t = txn.open_table(REGIONS).map_err(be(op))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(be(op))? {
            let (k, _) = row.map_err(be(op))?;
            out.push(Region::new(k.value()).map_err(|e| StoreError::Corrupt {
                what: "region",
                message: e.to_string(),
            })?);
        }
        Ok(out)
    }

    fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError> {
        let op = "region_patterns";
        let limit = clamp_page(limit, MAX_SCAN_PAGE);
        let r = region.as_str();
        let txn = self.read_txn(op)?;
        let t = txn.open_table(PATTERNS).map_err(be(op))?;
        let lower = match after {
            Some(c) => Bound::Excluded((r, c.device.as_str(), c.pattern.0)),
            None => Bound::Included((r, "", 0)),
        };
        let upper = Bound::Excluded((r, DEVICE_MAX, 0));
        let mut rows = Vec::new();
        let mut more = false;
        for row in t.range((lower, upper)).map_err(be(op))? {
            if rows.len() == limit {
                more = true;
                break;
            }
            let (k, v) = row.map_err(be(op))?;
            let device = DeviceId::new(k.value().1).map_err(|e| StoreError::Corrupt {
                what: "pattern key",
                message: e.to_string(),
            })?;
            rows.push(RegionPattern {
                device,
                pattern: dec("pattern", v.value())?,
            });
        }
        Ok(RegionPatternPage::new(rows, more))
    }

    fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        new: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError> {
        check_publish(new, trends)?;
        let op = "publish_globals";
        let r = region.as_str();
        let txn = self.write_txn(op)?;
        {
            let mut metas = txn.open_table(REGION_META).map_err(be(op))?;
            let mut globals = txn.open_table(GLOBALS).map_err(be(op))?;
            let mut meta = read_meta(&metas, region)?;
            if version <= meta.version {
                return Err(StoreError::StaleVersion {
                    current: meta.version,
                    given: version,
                });
            }
            let mut existing = std::collections::BTreeMap::new();
            for row in globals.range((r, 0)..=(r, u64::MAX)).map_err(be(op))? {
                let (k, v) = row.map_err(be(op))?;
                let rec: GlobalRecord = dec("global pattern", v.value())?;
                existing.insert(k.value().1, rec);
            }
            let plan = plan_publish(&existing, meta.floor, meta.max_id, version, new);
            for (id, rec) in &plan.writes {
                globals
                    .insert((r, *id), enc(rec)?.as_slice())
                    .map_err(be(op))?;
            }
            for id in &plan.pruned {
                globals.remove((r, *id)).map_err(be(op))?;
            }
            meta.floor = plan.floor;
            meta.max_id = plan.max_id;
            meta.version = version;
            meta.trends = trends.to_vec();
            metas.insert(r, enc(&meta)?.as_slice()).map_err(be(op))?;
        }
        txn.commit().map_err(be(op))?;
        Ok(())
    }

    fn region_globals(&self, region: &Region) -> Result<RegionGlobals, StoreError> {
        let op = "region_globals";
        let r = region.as_str();
        let txn = self.read_txn(op)?;
        let meta = read_meta(&txn.open_table(REGION_META).map_err(be(op))?, region)?;
        let globals = txn.open_table(GLOBALS).map_err(be(op))?;
        let mut patterns = Vec::new();
        for row in globals.range((r, 0)..=(r, u64::MAX)).map_err(be(op))? {
            let (_, v) = row.map_err(be(op))?;
            let rec: GlobalRecord = dec("global pattern", v.value())?;
            patterns.extend(rec.pattern);
        }
        Ok(RegionGlobals {
            version: meta.version,
            patterns,
            trends: meta.trends,
            max_id: meta.max_id,
        })
    }

    fn globals_since(&self, region: &Region, since: u64) -> Result<GlobalsChange, StoreError> {
        let op = "globals_since";
        let r = region.as_str();
        let txn = self.read_txn(op)?;
        let meta = read_meta(&txn.open_table(REGION_META).map_err(be(op))?, region)?;
        let globals = txn.open_table(GLOBALS).map_err(be(op))?;
        let mut records = std::collections::BTreeMap::new();
        for row in globals.range((r, 0)..=(r, u64::MAX)).map_err(be(op))? {
            let (k, v) = row.map_err(be(op))?;
            records.insert(k.value().1, dec("global pattern", v.value())?);
        }
        Ok(globals_change(
            meta.version,
            meta.floor,
            meta.trends,
            &records,
            since,
        ))
    }

    fn upsert_catalog(&self, entries: &[PackedCatalogEntry]) -> Result<u64, StoreError> {
        self.write_catalog(
            "upsert_catalog",
            entries.iter().map(|e| (e.item.id.as_str(), Some(e))),
        )
    }

    fn remove_catalog(&self, ids: &[ContentId]) -> Result<u64, StoreError> {
        self.write_catalog("remove_catalog", ids.iter().map(|id| (id.as_str(), None)))
    }

    fn catalog_version(&self) -> Result<u64, StoreError> {
        let txn = self.read_txn("catalog_version")?;
        read_u64(
            &txn.open_table(META).map_err(be("catalog_version"))?,
            CATALOG_VERSION,
        )
    }

    fn catalog_len(&self) -> Result<u64, StoreError> {
        let txn = self.read_txn("catalog_len")?;
        read_u64(
            &txn.open_table(META).map_err(be("catalog_len"))?,
            CATALOG_LEN,
        )
    }

    fn catalog_page(&self, since: u64, max_items: usize) -> Result<PackedCatalogPage, StoreError> {
        let op = "catalog_page";
        let max_items = clamp_page(max_items, MAX_CATALOG_PAGE);
        let txn = self.read_txn(op)?;
        let current = read_u64(&txn.open_table(META).map_err(be(op))?, CATALOG_VERSION)?;
        let log = txn.open_table(CATALOG_LOG).map_err(be(op))?;
        let catalog = txn.open_table(CATALOG).map_err(be(op))?;
        let mut page = PackedCatalogPage {
            version: current,
            ..PackedCatalogPage::default()
        };
        let mut last = since;
        for (taken, row) in log
            .range((Bound::Excluded(since), Bound::Unbounded))
            .map_err(be(op))?
            .enumerate()
        {
            if taken == max_items {
                page.more = true;
                break;
            }
            let (k, id) = row.map_err(be(op))?;
            let id = id.value();
            let rec: CatalogRecord = match catalog.get(id).map_err(be(op))? {
                Some(v) => dec("catalog item", v.value())?,
                None => {
                    return Err(StoreError::Corrupt {
                        what: "catalog log",
                        message: format!("log names {id:?}, which has no record"),
                    })
                }
            };
            match rec.entry {
                Some(e) => page.upserts.push(e),
                None => page
                    .removed
                    .push(ContentId::new(id).map_err(|e| StoreError::Corrupt {
                        what: "catalog log",
                        message: e.to_string(),
                    })?),
            }
            last = k.value();
        }
        if page.more {
            page.version = last;
        }
        Ok(page)
    }

    fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError> {
        let op = "catalog_entries";
        let limit = clamp_page(limit, MAX_SCAN_PAGE);
        let txn = self.read_txn(op)?;
        let catalog = txn.open_table(CATALOG).map_err(be(op))?;
        let lower = match after {
            Some(a) => Bound::Excluded(a.as_str()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for row in catalog
            .range::<&str>((lower, Bound::Unbounded))
            .map_err(be(op))?
        {
            if out.len() == limit {
                break;
            }
            let (_, v) = row.map_err(be(op))?;
            let rec: CatalogRecord = dec("catalog item", v.value())?;
            out.extend(rec.entry);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_format(path: &Path, format: Option<u64>) {
        let store = RedbStore::open(path).expect("open");
        let txn = store.write_txn("test").expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            match format {
                Some(f) => meta.insert(FORMAT_VERSION, f).map(drop),
                None => meta.remove(FORMAT_VERSION).map(drop),
            }
            .expect("write");
        }
        txn.commit().expect("commit");
    }

    #[test]
    fn a_store_of_another_format_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        // Written by a build before format versions: format 1.
        set_format(&path, None);
        assert_eq!(
            RedbStore::open(&path).err(),
            Some(StoreError::UnsupportedFormat {
                found: 1,
                supported: STORE_FORMAT
            })
        );
        set_format_raw(&path, 3);
        assert_eq!(
            RedbStore::open(&path).err(),
            Some(StoreError::UnsupportedFormat {
                found: 3,
                supported: STORE_FORMAT
            })
        );
        // A fresh file is created in the current format and reopens.
        let fresh = dir.path().join("fresh.redb");
        drop(RedbStore::open(&fresh).expect("create"));
        assert!(RedbStore::open(&fresh).is_ok());
    }

    #[test]
    fn an_out_of_space_error_is_disk_full_not_a_message() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(
            be::<redb::Error>("commit")(redb::Error::Io(full)),
            StoreError::DiskFull { op: "commit" }
        );
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(matches!(
            be::<redb::Error>("commit")(redb::Error::Io(other)),
            StoreError::Backend { op: "commit", .. }
        ));
    }

    /// Writes the format key without going through `open`'s check.
    fn set_format_raw(path: &Path, format: u64) {
        let db = Database::create(path).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert(FORMAT_VERSION, format).expect("write");
        }
        txn.commit().expect("commit");
    }
}
