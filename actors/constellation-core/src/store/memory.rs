//! [`MemoryStore`]: the reference model of [`PatternStore`], written as
//! plainly as possible (ordered maps behind one mutex, no indexes). The
//! store suite compares every other implementation with it, and sans-IO tests
//! and in-process simulations may use it as a fast, non-durable store.
//!
//! Nothing survives a drop. Its memory is bounded only by the limits of the
//! trait (per device, per region) times the number of devices, regions and
//! catalog items it is given.

use crate::aggregate::RegionTotals;
use std::collections::{BTreeMap, BTreeSet};

use parking_lot::{Mutex, MutexGuard};

use omega_protocol::{
    ContentId, DeviceId, PackedCatalogEntry, PackedCatalogPage, PackedGlobalPattern, PatternId,
    Region, TrendSignal,
};

use super::{
    check_publish, clamp_page, DeviceInfo, DeviceState, DeviceSync, GlobalsChange, PatternCursor,
    PatternStore, RegionGlobals, RegionPattern, RegionPatternPage, StoreError, StoredPattern,
    MAX_GLOBAL_TOMBSTONES, MAX_SCAN_PAGE,
};
use omega_protocol::limits::MAX_CATALOG_PAGE;

#[derive(Debug, Default, Clone)]
struct RegionData {
    version: u64,
    /// Devices at a version below this missed pruned tombstones.
    floor: u64,
    max_id: u64,
    trends: Vec<TrendSignal>,
    /// id → (version of the last change, pattern or tombstone).
    records: BTreeMap<u64, (u64, Option<PackedGlobalPattern>)>,
}

#[derive(Debug, Default, Clone)]
struct Inner {
    devices: BTreeMap<DeviceId, DeviceState>,
    patterns: BTreeMap<(DeviceId, PatternId), StoredPattern>,
    regions: BTreeSet<Region>,
    globals: BTreeMap<Region, RegionData>,
    /// id → (catalog version of the last change, entry or tombstone).
    catalog: BTreeMap<ContentId, (u64, Option<PackedCatalogEntry>)>,
    catalog_version: u64,
    totals: BTreeMap<Region, RegionTotals>,
}

/// The in-memory reference implementation of [`PatternStore`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // parking_lot's lock does not poison; a panic while holding it cannot
        // leave a half-applied write: every write builds its result on a copy
        // or checks before mutating.
        self.inner.lock()
    }
}

impl Inner {
    fn device_patterns(&self, device: &DeviceId) -> Vec<StoredPattern> {
        self.patterns
            .range((device.clone(), PatternId(0))..=(device.clone(), PatternId(u64::MAX)))
            .map(|(_, p)| p.clone())
            .collect()
    }
}

impl PatternStore for MemoryStore {
    fn device_state(&self, device: &DeviceId) -> Result<Option<DeviceInfo>, StoreError> {
        let inner = self.lock();
        Ok(inner.devices.get(device).map(|state| DeviceInfo {
            state: state.clone(),
            pattern_count: inner.device_patterns(device).len() as u32,
        }))
    }

    fn device_patterns(&self, device: &DeviceId) -> Result<Vec<StoredPattern>, StoreError> {
        Ok(self.lock().device_patterns(device))
    }

    fn apply_device_sync(
        &self,
        device: &DeviceId,
        sync: DeviceSync<'_>,
    ) -> Result<u32, StoreError> {
        let mut inner = self.lock();
        let mine = sync.apply_to(inner.device_patterns(device))?;
        let count = mine.len() as u32;
        inner.patterns.retain(|(d, _), _| d != device);
        for (id, p) in mine {
            inner.patterns.insert((device.clone(), id), p);
        }
        inner.devices.insert(device.clone(), sync.state.clone());
        inner.regions.insert(sync.state.region.clone());
        Ok(count)
    }

    fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        inner.patterns.retain(|(d, _), _| d != device);
        Ok(inner.devices.remove(device).is_some())
    }

    fn region_totals(&self, region: &Region) -> Result<Option<RegionTotals>, StoreError> {
        Ok(self.lock().totals.get(region).cloned())
    }

    fn put_region_totals(
        &self,
        region: &Region,
        read: Option<u32>,
        totals: &RegionTotals,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.totals.get(region).map(|t| t.rounds) != read {
            return Err(StoreError::Conflict {
                op: "put_region_totals",
            });
        }
        inner.totals.insert(region.clone(), totals.clone());
        Ok(())
    }

    fn regions(&self) -> Result<Vec<Region>, StoreError> {
        Ok(self.lock().regions.iter().cloned().collect())
    }

    fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError> {
        let limit = clamp_page(limit, MAX_SCAN_PAGE);
        let inner = self.lock();
        let mut rows: Vec<RegionPattern> = inner
            .patterns
            .iter()
            .filter(|((d, id), _)| {
                inner.devices.get(d).map(|s| &s.region) == Some(region)
                    && after.is_none_or(|c| (d, id) > (&c.device, &c.pattern))
            })
            .take(limit + 1)
            .map(|((d, _), p)| RegionPattern {
                device: d.clone(),
                pattern: p.clone(),
            })
            .collect();
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok(RegionPatternPage::new(rows, more))
    }

    // Written out here rather than through `plan_publish`, which the real
    // stores share: the reference model stays independent of what the
    // property tests check against it.
    fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        patterns: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError> {
        check_publish(patterns, trends)?;
        let mut inner = self.lock();
        let mut data = inner.globals.get(region).cloned().unwrap_or_default();
        if version <= data.version {
            return Err(StoreError::StaleVersion {
                current: data.version,
                given: version,
            });
        }
        let new_ids: BTreeSet<u64> = patterns.iter().map(|p| p.id).collect();
        for (id, rec) in data.records.iter_mut() {
            if rec.1.is_some() && !new_ids.contains(id) {
                *rec = (version, None);
            }
        }
        for p in patterns {
            let unchanged = matches!(data.records.get(&p.id), Some((_, Some(old))) if old == p);
            if !unchanged {
                data.records.insert(p.id, (version, Some(p.clone())));
            }
            data.max_id = data.max_id.max(p.id);
        }
        let mut tombstones: Vec<(u64, u64)> = data
            .records
            .iter()
            .filter(|(_, r)| r.1.is_none())
            .map(|(id, r)| (r.0, *id))
            .collect();
        tombstones.sort_unstable();
        let excess = tombstones.len().saturating_sub(MAX_GLOBAL_TOMBSTONES);
        for (changed, id) in tombstones.into_iter().take(excess) {
            data.records.remove(&id);
            data.floor = data.floor.max(changed);
        }
        data.version = version;
        data.trends = trends.to_vec();
        inner.globals.insert(region.clone(), data);
        Ok(())
    }

    fn region_globals(&self, region: &Region) -> Result<RegionGlobals, StoreError> {
        let inner = self.lock();
        Ok(match inner.globals.get(region) {
            None => RegionGlobals::default(),
            Some(d) => RegionGlobals {
                version: d.version,
                patterns: d.records.values().filter_map(|r| r.1.clone()).collect(),
                trends: d.trends.clone(),
                max_id: d.max_id,
            },
        })
    }

    fn globals_since(&self, region: &Region, since: u64) -> Result<GlobalsChange, StoreError> {
        let inner = self.lock();
        let empty = RegionData::default();
        let d = inner.globals.get(region).unwrap_or(&empty);
        let mut change = GlobalsChange {
            version: d.version,
            trends: d.trends.clone(),
            ..GlobalsChange::default()
        };
        if since == d.version {
            return Ok(change);
        }
        change.reset = since == 0 || since > d.version || since < d.floor;
        for (id, (changed, p)) in &d.records {
            match p {
                Some(p) if change.reset || *changed > since => change.patterns.push(p.clone()),
                None if !change.reset && *changed > since => change.removed.push(*id),
                _ => {}
            }
        }
        Ok(change)
    }

    fn upsert_catalog(&self, entries: &[PackedCatalogEntry]) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        for e in entries {
            inner.catalog_version += 1;
            let v = inner.catalog_version;
            inner
                .catalog
                .insert(e.item.id.clone(), (v, Some(e.clone())));
        }
        Ok(inner.catalog_version)
    }

    fn remove_catalog(&self, ids: &[ContentId]) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        for id in ids {
            if matches!(inner.catalog.get(id), Some((_, Some(_)))) {
                inner.catalog_version += 1;
                let v = inner.catalog_version;
                inner.catalog.insert(id.clone(), (v, None));
            }
        }
        Ok(inner.catalog_version)
    }

    fn catalog_version(&self) -> Result<u64, StoreError> {
        Ok(self.lock().catalog_version)
    }

    fn catalog_len(&self) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .catalog
            .values()
            .filter(|r| r.1.is_some())
            .count() as u64)
    }

    fn catalog_page(&self, since: u64, max_items: usize) -> Result<PackedCatalogPage, StoreError> {
        let max_items = clamp_page(max_items, MAX_CATALOG_PAGE);
        let inner = self.lock();
        let mut changes: Vec<(u64, &ContentId, &Option<PackedCatalogEntry>)> = inner
            .catalog
            .iter()
            .filter(|(_, r)| r.0 > since)
            .map(|(id, r)| (r.0, id, &r.1))
            .collect();
        changes.sort_by_key(|c| c.0);
        let more = changes.len() > max_items;
        changes.truncate(max_items);
        let mut page = PackedCatalogPage {
            version: inner.catalog_version,
            more,
            ..PackedCatalogPage::default()
        };
        if more {
            page.version = changes.last().map_or(since, |c| c.0);
        }
        for (_, id, e) in changes {
            match e {
                Some(e) => page.upserts.push(e.clone()),
                None => page.removed.push(id.clone()),
            }
        }
        Ok(page)
    }

    fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError> {
        let limit = clamp_page(limit, MAX_SCAN_PAGE);
        let inner = self.lock();
        Ok(inner
            .catalog
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .filter_map(|(_, r)| r.1.clone())
            .take(limit)
            .collect())
    }
}
