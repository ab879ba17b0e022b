//! Moving a node's data from one store to another (the embedded redb file to
//! a ScyllaDB keyspace): [`copy_store`], through the [`PatternStore`] trait
//! only, into an empty target, with every node stopped.
//!
//! What moves, and how TVs see it afterwards:
//! * **Learned totals** (the folded sums of the aggregation rounds), per
//!   region, exactly: the fleet version TVs hold is the totals' round count,
//!   so their fleet cursors stay valid.
//! * **Devices** that hold patterns (found by the regions' pattern scans):
//!   state and patterns. A device with no pattern (every TV since uploads
//!   stopped) cannot be listed through the trait and is not copied; it holds
//!   nothing but its last sync time, and its next sync is accepted as a
//!   first one (`Delta` from version 0).
//! * **Global patterns** per region, at the source's version, and the
//!   source's tombstones (withdrawn ids still held, and its largest id):
//!   they are recreated by publishing them alone at the version below, so a
//!   TV at an older global version receives every live pattern and every
//!   withdrawal. Tombstones the source already pruned are not recreated (a
//!   TV that old was due a full reset there and gets every live pattern
//!   here, without those removals); nor are any when no pattern is live.
//! * **Catalog**: the target numbers its versions afresh, so entries are
//!   written until the target's version reaches the source's, then every
//!   withdrawn id is written and withdrawn, then every live entry once more:
//!   each change a TV lacks then lies above any version it can hold, and a
//!   TV paging from its old version receives the whole catalog and every
//!   withdrawal. This costs about (source version + 2 × withdrawn + live)
//!   catalog writes, and holds the withdrawn ids in memory. A catalog with
//!   no live item left is not copied (its withdrawals cannot be recreated
//!   without an entry to borrow).
//!
//! Not moved: the rate limiter and open aggregation rounds (memory only).

use std::collections::BTreeSet;

use omega_constellation::store::{
    DeviceSync, PatternStore, StoreError, MAX_GLOBALS_PER_REGION, MAX_SCAN_PAGE,
};
use omega_protocol::{
    limits, CatalogEntry, ContentId, DeviceId, PackedCatalogEntry, PackedGlobalPattern, Region,
};

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The target already holds data of this kind.
    #[error("the target store is not empty: it holds {0}")]
    TargetNotEmpty(&'static str),
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`copy_store`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// Regions whose learned totals were copied.
    pub totals: usize,
    /// Devices copied (those holding patterns).
    pub devices: u64,
    /// Their patterns.
    pub patterns: u64,
    /// Regions whose globals were published, and tombstones recreated.
    pub global_regions: usize,
    /// Withdrawn global ids recreated as tombstones.
    pub global_tombstones: usize,
    /// Live catalog items.
    pub catalog_items: u64,
    /// Withdrawn catalog ids recreated as withdrawals.
    pub catalog_withdrawn: u64,
    /// The source's catalog version.
    pub source_catalog_version: u64,
    /// The target's catalog version at the end (above the source's).
    pub target_catalog_version: u64,
}

/// Copies `from` into the empty `to`; `regions` are the configured ones
/// (learned totals are looked up in these and in every region that held
/// devices). Nodes must not serve either store meanwhile.
pub fn copy_store(
    from: &dyn PatternStore,
    to: &dyn PatternStore,
    regions: &[Region],
) -> Result<MigrationReport, MigrateError> {
    if to.catalog_version()? != 0 {
        return Err(MigrateError::TargetNotEmpty("a catalog"));
    }
    if !to.regions()?.is_empty() {
        return Err(MigrateError::TargetNotEmpty("devices"));
    }
    let mut report = MigrationReport::default();
    let mut all: BTreeSet<Region> = regions.iter().cloned().collect();
    let held = from.regions()?;
    all.extend(held.iter().cloned());
    for region in &all {
        if let Some(totals) = from.region_totals(region)? {
            to.put_region_totals(region, None, &totals)?;
            report.totals += 1;
        }
    }
    for region in &held {
        copy_devices(from, to, region, &mut report)?;
    }
    for region in &all {
        copy_globals(from, to, region, &mut report)?;
    }
    copy_catalog(from, to, &mut report)?;
    Ok(report)
}

fn copy_devices(
    from: &dyn PatternStore,
    to: &dyn PatternStore,
    region: &Region,
    report: &mut MigrationReport,
) -> Result<(), MigrateError> {
    let mut cursor = None;
    let mut last: Option<DeviceId> = None;
    loop {
        let page = from.region_patterns(region, cursor.as_ref(), MAX_SCAN_PAGE)?;
        for row in &page.rows {
            if last.as_ref() == Some(&row.device) {
                continue;
            }
            last = Some(row.device.clone());
            let Some(info) = from.device_state(&row.device)? else {
                continue;
            };
            // A device is copied under the region its state names.
            if info.state.region != *region {
                continue;
            }
            let patterns = from.device_patterns(&row.device)?;
            let sync = DeviceSync {
                state: &info.state,
                reset: true,
                upserts: &patterns,
                removals: &[],
            };
            to.apply_device_sync(&row.device, sync)?;
            report.devices += 1;
            report.patterns += patterns.len() as u64;
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

fn copy_globals(
    from: &dyn PatternStore,
    to: &dyn PatternStore,
    region: &Region,
    report: &mut MigrationReport,
) -> Result<(), MigrateError> {
    let g = from.region_globals(region)?;
    if g.version == 0 {
        return Ok(());
    }
    let live: BTreeSet<u64> = g.patterns.iter().map(|p| p.id).collect();
    let mut withdrawn: BTreeSet<u64> = BTreeSet::new();
    if g.version >= 2 {
        let change = from.globals_since(region, 1)?;
        if !change.reset {
            withdrawn.extend(change.removed.iter().copied());
        }
        // The largest id ever used stays used, so no id is handed out twice.
        if !live.contains(&g.max_id) && g.max_id > 0 {
            withdrawn.insert(g.max_id);
        }
    }
    // Tombstones are made by publishing the withdrawn ids alone (with a
    // live pattern's content) at the version below: at the source's version
    // they are withdrawn and every live pattern is new, so a TV at any older
    // version receives both. Without a live pattern to borrow, the globals
    // are published without them. At most the newest (largest)
    // MAX_GLOBALS_PER_REGION ids.
    if let (Some(template), false) = (g.patterns.first(), withdrawn.is_empty()) {
        let before: Vec<PackedGlobalPattern> = withdrawn
            .iter()
            .rev()
            .take(MAX_GLOBALS_PER_REGION)
            .map(|id| PackedGlobalPattern {
                id: *id,
                ..template.clone()
            })
            .collect();
        to.publish_globals(region, g.version - 1, &before, &[])?;
        report.global_tombstones += before.len();
    }
    to.publish_globals(region, g.version, &g.patterns, &g.trends)?;
    report.global_regions += 1;
    Ok(())
}

/// Calls `each` with the source's live entries, one scan page at a time.
fn live_pages(
    from: &dyn PatternStore,
    mut each: impl FnMut(&[PackedCatalogEntry]) -> Result<(), MigrateError>,
) -> Result<(), MigrateError> {
    let mut after: Option<ContentId> = None;
    loop {
        let page = from.catalog_entries(after.as_ref(), MAX_SCAN_PAGE)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.item.id.clone());
        each(&page)?;
        if page.len() < MAX_SCAN_PAGE {
            return Ok(());
        }
    }
}

fn copy_catalog(
    from: &dyn PatternStore,
    to: &dyn PatternStore,
    report: &mut MigrationReport,
) -> Result<(), MigrateError> {
    let source_version = from.catalog_version()?;
    report.source_catalog_version = source_version;
    if source_version == 0 {
        return Ok(());
    }
    // Every id the source withdrew (its change log from the start).
    let mut withdrawn: Vec<ContentId> = Vec::new();
    let mut since = 0;
    loop {
        let page = from.catalog_page(since, limits::MAX_CATALOG_PAGE)?;
        withdrawn.extend(page.removed.iter().cloned());
        if !page.more || page.version <= since {
            break;
        }
        since = page.version;
    }
    // Live entries until the target's version reaches the source's.
    let mut template: Option<PackedCatalogEntry> = None;
    while to.catalog_version()? < source_version {
        let mut wrote = false;
        live_pages(from, |page| {
            if to.catalog_version()? < source_version {
                template.get_or_insert_with(|| page[0].clone());
                to.upsert_catalog(page)?;
                wrote = true;
            }
            Ok(())
        })?;
        if !wrote {
            break;
        }
    }
    // Each withdrawn id written (with a live entry's content) and withdrawn.
    let template = match template {
        Some(t) => Some(t),
        None => from.catalog_entries(None, 1)?.into_iter().next(),
    };
    for chunk in withdrawn.chunks(MAX_SCAN_PAGE) {
        if let Some(t) = &template {
            let placeholders: Vec<PackedCatalogEntry> = chunk
                .iter()
                .map(|id| CatalogEntry {
                    item: omega_protocol::CatalogItem {
                        id: id.clone(),
                        ..t.item.clone()
                    },
                    embedding: t.embedding.clone(),
                })
                .collect();
            to.upsert_catalog(&placeholders)?;
        }
        to.remove_catalog(chunk)?;
        report.catalog_withdrawn += chunk.len() as u64;
    }
    // Every live entry once more, above every version a TV can hold.
    live_pages(from, |page| {
        to.upsert_catalog(page)?;
        report.catalog_items += page.len() as u64;
        Ok(())
    })?;
    report.target_catalog_version = to.catalog_version()?;
    Ok(())
}
