//! What a sync, a catalog change or an acknowledgement changes on the TV,
//! planned over plain data.
//!
//! Each `plan_*` function reads a [`BrainState`] and returns a plan: what to
//! write (the store turns it into one redb transaction) and, once that commit
//! succeeded, how to change the in-memory state (`apply`). Nothing is changed
//! by planning, so a refused or failed plan leaves everything as it was.
//!
//! Rules (the store's module docs say why):
//! * global patterns: reset if asked, removals, upserts, then past
//!   [`SyncLimits::max_global_patterns`] the weakest go (fewest supporting
//!   devices, then lowest success rate, then highest id);
//! * trends are replaced only when the sync moves the global version or
//!   resets it (an up-to-date device gets an empty list meaning "no change");
//! * a catalog page that would grow the catalog past
//!   [`SyncLimits::max_catalog_items`] is refused whole
//!   ([`CoreError::CatalogFull`], reported in [`SyncPlan::catalog_refused`]):
//!   the catalog version then stays, the rest of the sync still applies;
//! * versions: the global version is the node's; the catalog version moves
//!   (never back) and the local catalog revision is bumped only when a page
//!   is applied.

use std::collections::BTreeMap;

use omega_protocol::{CatalogEntry, ContentId, GlobalPattern, PatternId, SyncAccepted, SyncKind};

use crate::delta::MIN_DISTINCT_ITEMS;
use crate::error::CoreError;
use crate::state::{BrainState, CatalogRecord, Versions};

/// The limits a sync plan enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncLimits {
    /// Catalog items; changes adding items past it are refused.
    pub max_catalog_items: usize,
    /// Global patterns; the weakest are dropped past it.
    pub max_global_patterns: usize,
}

/// Catalog keys touched by a change, to update the vector index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogChange {
    /// Keys added or with a new embedding.
    pub upserted: Vec<u64>,
    /// Keys withdrawn.
    pub removed: Vec<u64>,
}

impl CatalogChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// A planned catalog change.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogPlan {
    /// Records to write, with their keys (new ids get fresh keys).
    pub upserts: Vec<(u64, CatalogEntry)>,
    /// Records to delete.
    pub removed: Vec<(u64, ContentId)>,
    /// The key the next new item gets afterwards.
    pub next_key: u64,
}

impl CatalogPlan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }

    /// Mirrors the committed plan into `state`; returns the keys touched.
    pub fn apply(self, state: &mut BrainState) -> CatalogChange {
        let mut change = CatalogChange::default();
        for (k, id) in self.removed {
            state.catalog.remove(&id);
            change.removed.push(k);
        }
        for (key, entry) in self.upserts {
            change.upserted.push(key);
            state.catalog.restore(CatalogRecord::new(key, &entry));
        }
        state.catalog.set_next_key(self.next_key);
        change
    }
}

/// Plans catalog upserts and removals against `state`. Refused with
/// [`CoreError::CatalogFull`] when it would add items past `max_items`, with
/// [`CoreError::Invalid`] when an item is invalid.
pub fn plan_catalog(
    state: &BrainState,
    max_items: usize,
    upserts: &[CatalogEntry],
    removed: &[ContentId],
) -> Result<CatalogPlan, CoreError> {
    let cat = &state.catalog;
    let mut rem: Vec<(u64, ContentId)> = Vec::new();
    for id in removed {
        if let Some(k) = cat.key_of(id) {
            if !rem.iter().any(|(x, _)| *x == k) {
                rem.push((k, id.clone()));
            }
        }
    }
    let mut next_key = cat.next_key();
    let mut recs: BTreeMap<ContentId, (u64, CatalogEntry)> = BTreeMap::new();
    let mut adding = 0usize;
    for e in upserts {
        e.item.validate()?;
        let key = match (recs.get(&e.item.id), cat.key_of(&e.item.id)) {
            (Some(r), _) => r.0,
            (None, Some(k)) if !rem.iter().any(|(x, _)| *x == k) => k,
            _ => {
                adding += 1;
                next_key += 1;
                next_key - 1
            }
        };
        recs.insert(e.item.id.clone(), (key, e.clone()));
    }
    let after_removal = cat.len() - rem.len();
    if adding > 0 && after_removal + adding > max_items {
        return Err(CoreError::CatalogFull {
            current: cat.len(),
            adding,
            max: max_items,
        });
    }
    Ok(CatalogPlan {
        upserts: recs.into_values().collect(),
        removed: rem,
        next_key,
    })
}

/// What a successful sync changes on the TV.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPlan {
    /// The global patterns afterwards (all of them).
    pub globals: BTreeMap<u64, GlobalPattern>,
    /// Ids of global patterns to write (new or changed; all in `globals`).
    pub globals_written: Vec<u64>,
    /// Ids of global patterns to delete.
    pub globals_deleted: Vec<u64>,
    /// The new trends, when they are replaced.
    pub trends: Option<Vec<omega_protocol::TrendSignal>>,
    /// The catalog page to apply, if the sync carried one that fits.
    pub catalog: Option<CatalogPlan>,
    /// Why the sync's catalog page was refused (catalog full), if it was.
    pub catalog_refused: Option<CoreError>,
    /// The versions afterwards.
    pub versions: Versions,
}

impl SyncPlan {
    /// The key the next new catalog item gets afterwards.
    pub fn next_catalog_key(&self, state: &BrainState) -> u64 {
        self.catalog
            .as_ref()
            .map_or(state.catalog.next_key(), |p| p.next_key)
    }

    /// Mirrors the committed plan into `state`; returns the catalog keys touched.
    pub fn apply(self, state: &mut BrainState) -> CatalogChange {
        state.globals = self.globals;
        if let Some(t) = self.trends {
            state.trends = t;
        }
        state.versions = self.versions;
        match self.catalog {
            Some(p) => p.apply(state),
            None => CatalogChange::default(),
        }
    }
}

/// Plans what `accepted` changes (see the module docs). The pattern
/// acknowledgement is separate: [`plan_ack`]. Refused only when the catalog
/// page holds an invalid item; a page that does not fit is reported in
/// [`SyncPlan::catalog_refused`] instead.
pub fn plan_sync(
    state: &BrainState,
    accepted: &SyncAccepted,
    limits: &SyncLimits,
) -> Result<SyncPlan, CoreError> {
    // Global patterns.
    let mut globals = if accepted.global_reset {
        BTreeMap::new()
    } else {
        state.globals.clone()
    };
    for id in &accepted.global_removed {
        globals.remove(id);
    }
    for g in &accepted.global_patterns {
        globals.insert(g.id, g.clone());
    }
    if globals.len() > limits.max_global_patterns {
        let mut ranked: Vec<&GlobalPattern> = globals.values().collect();
        ranked.sort_by(|a, b| {
            b.support
                .cmp(&a.support)
                .then(b.success_rate.total_cmp(&a.success_rate))
                .then(a.id.cmp(&b.id))
        });
        let drop: Vec<u64> = ranked[limits.max_global_patterns..]
            .iter()
            .map(|g| g.id)
            .collect();
        for id in drop {
            globals.remove(&id);
        }
    }
    let globals_deleted = state
        .globals
        .keys()
        .filter(|id| !globals.contains_key(id))
        .copied()
        .collect();
    let globals_written = globals
        .iter()
        .filter(|(id, g)| state.globals.get(id) != Some(g))
        .map(|(id, _)| *id)
        .collect();
    // The node sends trends only when the device's global version is
    // behind; an up-to-date device gets an empty list that means "no change".
    let replace_trends = accepted.global_reset || accepted.global_version != state.versions.global;
    let trends = replace_trends.then(|| accepted.trends.clone());
    // Catalog page.
    let mut catalog_refused = None;
    let mut catalog = None;
    if let Some(page) = &accepted.catalog {
        match plan_catalog(
            state,
            limits.max_catalog_items,
            &page.upserts,
            &page.removed,
        ) {
            Ok(p) => catalog = Some(p),
            Err(e @ CoreError::CatalogFull { .. }) => catalog_refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    let mut versions = state.versions;
    versions.global = accepted.global_version;
    if let (Some(page), Some(_)) = (&accepted.catalog, &catalog) {
        versions.catalog = versions.catalog.max(page.version);
        versions.catalog_rev += 1;
    }
    Ok(SyncPlan {
        globals,
        globals_written,
        globals_deleted,
        trends,
        catalog,
        catalog_refused,
        versions,
    })
}

/// What the node's acknowledgement changes.
#[derive(Debug, Clone, PartialEq)]
pub struct AckPlan {
    /// Patterns whose "known to the node" flag changes, with the new flag.
    pub changed: Vec<(PatternId, bool)>,
    /// Tombstones acknowledged, to drop.
    pub dropped: Vec<PatternId>,
    /// The versions afterwards.
    pub versions: Versions,
}

impl AckPlan {
    /// Mirrors the committed plan into `state`.
    pub fn apply(&self, state: &mut BrainState) {
        state.patterns.apply_ack(&self.changed, &self.dropped);
        state.versions = self.versions;
    }
}

/// Plans the node's acknowledgement of a delta (`kind` = the plan's kind,
/// `acked` = `SyncAccepted::acked_version`). For a `Delta` it must lie
/// between the last acknowledgement and the current pattern version; a
/// `Snapshot` may go back (the node lost state). Refused with
/// [`CoreError::BadAck`] otherwise.
pub fn plan_ack(
    state: &BrainState,
    kind: SyncKind,
    acked: u64,
    min_distinct_items: u32,
) -> Result<AckPlan, CoreError> {
    let v = state.versions;
    let ok = match kind {
        SyncKind::Snapshot => acked <= v.pattern,
        _ => (v.acked..=v.pattern).contains(&acked),
    };
    if !ok {
        return Err(CoreError::BadAck {
            acked,
            last_acked: v.acked,
            current: v.pattern,
        });
    }
    let (changed, dropped) = state.patterns.plan_ack(
        acked,
        min_distinct_items.max(MIN_DISTINCT_ITEMS),
        matches!(kind, SyncKind::Snapshot),
    );
    let mut versions = v;
    versions.acked = acked;
    Ok(AckPlan {
        changed,
        dropped,
        versions,
    })
}
