//! [`FailingStore`]: a fault-injecting wrapper for tests. It counts writes
//! (every method that changes the store) and fails the chosen one with
//! [`StoreError::Injected`] *before* it reaches the inner store, so a failed
//! write applies nothing, exactly like a failed commit. Reads pass through.

use std::sync::atomic::{AtomicU64, Ordering};

use omega_protocol::{
    ContentId, DeviceId, PackedCatalogEntry, PackedCatalogPage, PackedGlobalPattern, Region,
    TrendSignal,
};

use crate::aggregate::RegionTotals;

use super::{
    DeviceInfo, DeviceSync, GlobalsChange, PatternCursor, PatternStore, RegionGlobals,
    RegionPatternPage, StoreError, StoredPattern,
};

/// Wraps a store and fails its `fail_on`-th write (1-based); 0 never fails.
#[derive(Debug)]
pub struct FailingStore<S> {
    inner: S,
    writes: AtomicU64,
    fail_on: AtomicU64,
}

impl<S> FailingStore<S> {
    /// Wraps `inner`, failing write number `fail_on` (1-based; 0: never).
    pub fn new(inner: S, fail_on: u64) -> Self {
        Self {
            inner,
            writes: AtomicU64::new(0),
            fail_on: AtomicU64::new(fail_on),
        }
    }

    /// Fails the `n`-th write from now on (1 = the next one; 0 = never).
    pub fn fail_nth_from_now(&self, n: u64) {
        let done = self.writes.load(Ordering::SeqCst);
        let target = if n == 0 { 0 } else { done + n };
        self.fail_on.store(target, Ordering::SeqCst);
    }

    /// Writes attempted so far (failed ones included).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn write(&self) -> Result<(), StoreError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_on.load(Ordering::SeqCst) {
            Err(StoreError::Injected { write: n })
        } else {
            Ok(())
        }
    }
}

impl<S: PatternStore> PatternStore for FailingStore<S> {
    fn device_state(&self, device: &DeviceId) -> Result<Option<DeviceInfo>, StoreError> {
        self.inner.device_state(device)
    }
    fn device_patterns(&self, device: &DeviceId) -> Result<Vec<StoredPattern>, StoreError> {
        self.inner.device_patterns(device)
    }
    fn apply_device_sync(
        &self,
        device: &DeviceId,
        sync: DeviceSync<'_>,
    ) -> Result<u32, StoreError> {
        self.write()?;
        self.inner.apply_device_sync(device, sync)
    }
    fn forget_device(&self, device: &DeviceId) -> Result<bool, StoreError> {
        self.write()?;
        self.inner.forget_device(device)
    }
    fn region_totals(&self, region: &Region) -> Result<Option<RegionTotals>, StoreError> {
        self.inner.region_totals(region)
    }
    fn region_totals_rounds(&self, region: &Region) -> Result<Option<u32>, StoreError> {
        self.inner.region_totals_rounds(region)
    }
    fn put_region_totals(
        &self,
        region: &Region,
        read: Option<u32>,
        totals: &RegionTotals,
    ) -> Result<(), StoreError> {
        self.write()?;
        self.inner.put_region_totals(region, read, totals)
    }
    fn regions(&self) -> Result<Vec<Region>, StoreError> {
        self.inner.regions()
    }
    fn region_patterns(
        &self,
        region: &Region,
        after: Option<&PatternCursor>,
        limit: usize,
    ) -> Result<RegionPatternPage, StoreError> {
        self.inner.region_patterns(region, after, limit)
    }
    fn publish_globals(
        &self,
        region: &Region,
        version: u64,
        patterns: &[PackedGlobalPattern],
        trends: &[TrendSignal],
    ) -> Result<(), StoreError> {
        self.write()?;
        self.inner
            .publish_globals(region, version, patterns, trends)
    }
    fn region_globals(&self, region: &Region) -> Result<RegionGlobals, StoreError> {
        self.inner.region_globals(region)
    }
    fn globals_since(&self, region: &Region, since: u64) -> Result<GlobalsChange, StoreError> {
        self.inner.globals_since(region, since)
    }
    fn upsert_catalog(&self, entries: &[PackedCatalogEntry]) -> Result<u64, StoreError> {
        self.write()?;
        self.inner.upsert_catalog(entries)
    }
    fn remove_catalog(&self, ids: &[ContentId]) -> Result<u64, StoreError> {
        self.write()?;
        self.inner.remove_catalog(ids)
    }
    fn catalog_version(&self) -> Result<u64, StoreError> {
        self.inner.catalog_version()
    }
    fn catalog_len(&self) -> Result<u64, StoreError> {
        self.inner.catalog_len()
    }
    fn catalog_page(&self, since: u64, max_items: usize) -> Result<PackedCatalogPage, StoreError> {
        self.inner.catalog_page(since, max_items)
    }
    fn catalog_entries(
        &self,
        after: Option<&ContentId>,
        limit: usize,
    ) -> Result<Vec<PackedCatalogEntry>, StoreError> {
        self.inner.catalog_entries(after, limit)
    }
}
