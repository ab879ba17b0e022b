//! The sync shell: [`run`] performs the store reads and the write that the
//! core's [`SyncCore`] names, in the core's order (module docs of
//! [`omega_constellation_core::sync`]), and [`InFlight`], the bound on syncs
//! being processed at once.
//!
//! A store failure never reaches the device as text: it is logged (tracing,
//! `error`) under a fresh [`ErrorId`] and the device gets
//! [`internal_error`] with that id.
//!
//! The learning part of an accepted, non-forget sync ([`learn`]): the
//! region's next round is opened when due (the live catalog read first), the
//! device's round message goes to the [`Learning`] and its next step comes
//! back in the answer, with a fleet page when the device is behind (not
//! beside a catalog page: one large page per answer). Rounds folded here are
//! added to the store's totals before the answer leaves ([`store_totals`]:
//! a compare-and-set, re-read and retried on a conflict with another node's
//! fold, at most [`TOTALS_ATTEMPTS`] times a sync), and at most every
//! `refresh_ms` the store's totals are read so that rounds other nodes
//! folded are served here too. A refused round message or a failed learning
//! read or write never fails the sync: the device still gets its answer,
//! without the learning part, and the failure is logged.

use std::sync::Arc;

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use omega_protocol::{
    DeviceId, PackedSyncAccepted, PackedSyncRequest, PackedSyncResponse, SyncError,
};

pub use omega_constellation_core::sync::*;

use crate::store::{PatternStore, StoreError};
pub use omega_constellation_core::learning::{Learning, LearningConfig, LearningError};

/// Catalog entries read per page when a round opens.
const CATALOG_READ_PAGE: usize = 1000;

/// Writes of learned totals tried per [`store_totals`] call; a write still
/// refused by other nodes' folds after that stays due and is tried again at
/// the next sync.
pub const TOTALS_ATTEMPTS: usize = 4;

/// Runs one sync of `device` at `now_ms` (unix milliseconds) through `core`
/// against `store`: admit, validate, read the device, plan, read the answer's
/// inputs, decide, write, then the learning part (`learning`, if the node
/// learns), finish. Blocking (the store is).
pub fn run<S: PatternStore + ?Sized>(
    core: &mut SyncCore,
    store: &S,
    learning: Option<&Mutex<Learning>>,
    device: &DeviceId,
    mut req: PackedSyncRequest,
    now_ms: u64,
    rng: &mut impl Rng,
) -> (PackedSyncResponse, SyncOutcome) {
    if let Err(e) = core.admit(device, now_ms) {
        return (Err(e), SyncOutcome::Refused);
    }
    let round = req.round.take();
    let held = Held {
        catalog_version: req.catalog_version,
        fleet: req.fleet,
    };
    let region = req.region.clone();
    let forget = req.kind == omega_protocol::SyncKind::Forget;
    let mut result = process(core, store, device, req, now_ms, rng);
    if let (Some(l), Ok((accepted, _)), false) = (learning, result.as_mut(), forget) {
        learn(
            l, store, device, &region, round, held, accepted, now_ms, rng,
        );
    }
    core.finish(device, now_ms, result)
}

/// What the device's request says it holds: its catalog version (a round
/// invites only devices holding the round's) and its fleet cursor.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// The device's catalog version.
    pub catalog_version: u64,
    /// Where it is in the fleet knowledge.
    pub fleet: omega_protocol::FleetCursor,
}

/// The learning part of an accepted sync (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn learn<S: PatternStore + ?Sized>(
    learning: &Mutex<Learning>,
    store: &S,
    device: &DeviceId,
    region: &omega_protocol::Region,
    round: Option<omega_protocol::TvToNode>,
    held: Held,
    accepted: &mut PackedSyncAccepted,
    now_ms: u64,
    rng: &mut impl Rng,
) {
    // One lock on the common path; a due round reads the catalog unlocked
    // (another shard may open it meanwhile: `open` refuses the second).
    let mut l = learning.lock();
    if l.wants_round(region, now_ms) {
        drop(l);
        match live_catalog(store) {
            Ok(Some((version, ids))) if !ids.is_empty() => {
                match learning.lock().open(region, version, &ids, now_ms, rng) {
                    Ok(session) => {
                        tracing::info!(%region, session, titles = ids.len(), "aggregation round opened")
                    }
                    Err(e) => tracing::debug!(%region, error = %e, "aggregation round not opened"),
                }
            }
            Ok(_) => tracing::debug!(%region, "no catalog to open a round over"),
            Err(e) => tracing::error!(%region, error = %e, "catalog read for a round failed"),
        }
        l = learning.lock();
    }
    let (step, refused) = l.on_sync(region, device, held.catalog_version, round, now_ms);
    if let Some(e) = refused {
        tracing::debug!(device = %device, error = %e, "round message refused");
    }
    let refresh = l.refresh_due(region, now_ms);
    drop(l);
    if refresh {
        // The rounds first: the totals themselves only when newer.
        let newer = store
            .region_totals_rounds(region)
            .map(|rounds| learning.lock().is_newer(region, rounds));
        let read = match newer {
            Ok(true) => store.region_totals(region).map(Some),
            Ok(false) => Ok(None),
            Err(e) => Err(e),
        };
        match read {
            Ok(Some(totals)) => learning.lock().stored_totals(region, totals),
            Ok(None) => {}
            Err(e) => tracing::warn!(%region, error = %e, "reading the learned totals failed"),
        }
    }
    store_totals(learning, store);
    accepted.round = step;
    accepted.fleet = match accepted.catalog {
        Some(_) => None,
        None => learning.lock().fleet_page(region, held.fleet),
    };
}

/// Adds the rounds `learning` folded to the store's totals
/// ([`Learning::take_writes`]): a write refused because another node folded
/// meanwhile is re-read and retried, at most [`TOTALS_ATTEMPTS`] times in
/// all; a failed one stays pending (tried again at the next refresh). The
/// learner is locked only between store calls. A failed write is checked
/// by a read: a write that timed out but applied is taken as written (it
/// would otherwise be added twice).
pub fn store_totals<S: PatternStore + ?Sized>(learning: &Mutex<Learning>, store: &S) {
    for _ in 0..TOTALS_ATTEMPTS {
        let writes = learning.lock().take_writes();
        if writes.is_empty() {
            return;
        }
        for w in writes {
            match store.put_region_totals(&w.region, w.read, &w.totals) {
                Ok(()) => learning.lock().written(w),
                Err(StoreError::Conflict { .. }) => match store.region_totals(&w.region) {
                    Ok(current) => {
                        tracing::debug!(region = %w.region, "another node folded first: adding to its totals");
                        learning.lock().conflict(&w, current);
                    }
                    Err(e) => {
                        tracing::error!(region = %w.region, error = %e, "reading the learned totals failed");
                        learning.lock().unwritten(&w);
                    }
                },
                Err(e) => {
                    // A write whose outcome is unknown (a timeout) may have
                    // applied: then the store holds exactly its totals.
                    if store.region_totals(&w.region).ok().flatten().as_ref() == Some(&w.totals) {
                        learning.lock().written(w);
                        continue;
                    }
                    // Kept pending; written again at the next refresh.
                    tracing::error!(region = %w.region, error = %e, "storing the learned totals failed");
                    learning.lock().unwritten(&w);
                }
            }
        }
    }
}

/// The live catalog's version and titles (all pages); `None` when the
/// catalog changed while it was read (the next sync tries again).
fn live_catalog<S: PatternStore + ?Sized>(
    store: &S,
) -> Result<Option<(u64, Vec<omega_protocol::ContentId>)>, StoreError> {
    let version = store.catalog_version()?;
    let mut ids = Vec::new();
    let mut after: Option<omega_protocol::ContentId> = None;
    loop {
        let page = store.catalog_entries(after.as_ref(), CATALOG_READ_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.item.id.clone());
        ids.extend(page.into_iter().map(|e| e.item.id));
    }
    Ok((store.catalog_version()? == version).then_some((version, ids)))
}

fn process<S: PatternStore + ?Sized>(
    core: &SyncCore,
    store: &S,
    device: &DeviceId,
    req: PackedSyncRequest,
    now_ms: u64,
    rng: &mut impl Rng,
) -> Result<(PackedSyncAccepted, SyncOutcome), SyncError> {
    core.validate(&req)?;
    let stored = read("device_state", rng, device, || store.device_state(device))?;
    let plan = core.plan(&req, stored.as_ref())?;
    // Reads first: a failure here leaves the store untouched.
    let globals = read("globals_since", rng, device, || {
        store.globals_since(&req.region, req.global_version)
    })?;
    let current = read("catalog_version", rng, device, || store.catalog_version())?;
    let catalog = match core.catalog_read(req.catalog_version, current) {
        Some(page) => Some(read("catalog_page", rng, device, || {
            store.catalog_page(page.since, page.max_items)
        })?),
        None => None,
    };
    let decision = core.decide(req, plan, AnswerInputs { globals, catalog }, now_ms, rng)?;
    const WRITE: &str = "write";
    let written = match &decision.write {
        None => Ok(()),
        Some(StoreWrite::Forget) => timed(WRITE, || store.forget_device(device)).map(drop),
        Some(StoreWrite::Apply(changes)) => {
            timed(WRITE, || store.apply_device_sync(device, changes.as_sync())).map(drop)
        }
    };
    if let Err(e) = written {
        return Err(SyncCore::write_refused(&e).unwrap_or_else(|| failed(rng, device, WRITE, e)));
    }
    Ok((decision.accepted, decision.outcome))
}

/// Runs one store call of the sync path, its time recorded in
/// [`STORE_DURATION`](crate::actors::names::STORE_DURATION) under `op` (one
/// of [`STORE_OPS`](crate::actors::names::STORE_OPS)), failed or not.
fn timed<T>(op: &'static str, call: impl FnOnce() -> T) -> T {
    use crate::actors::names;
    debug_assert!(names::STORE_OPS.contains(&op), "{op} is not in STORE_OPS");
    let started = std::time::Instant::now();
    let out = call();
    metrics::histogram!(names::STORE_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
    out
}

/// One read of the sync path: [`timed`] under `op`, a failure logged and
/// answered by [`failed`] under the same `op`.
fn read<T, R: Rng + ?Sized>(
    op: &'static str,
    rng: &mut R,
    device: &DeviceId,
    call: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, SyncError> {
    timed(op, call).map_err(|e| failed(rng, device, op, e))
}

/// Logs a store failure under a fresh id and returns the generic answer.
fn failed<R: Rng + ?Sized>(
    rng: &mut R,
    device: &DeviceId,
    op: &'static str,
    e: StoreError,
) -> SyncError {
    let id = ErrorId(rng.random());
    tracing::error!(error_id = %id, device = %device, op, error = %e, "sync failed in the store");
    internal_error(id)
}

/// One admitted sync; dropping it frees the slot.
pub type Permit = OwnedSemaphorePermit;

/// A bound on syncs being processed at once, shared by the listener's tasks
/// (clone it freely): a [`Semaphore`] of `max` permits. Past the bound the
/// shell answers [`InFlight::busy`] instead of queueing.
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    max: usize,
    retry_after_secs: u32,
}

impl InFlight {
    /// At most `max` syncs at once (clamped to [`Semaphore::MAX_PERMITS`]);
    /// refused ones are told to retry after `retry_after_secs` (at least 1).
    pub fn new(max: usize, retry_after_secs: u32) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
            retry_after_secs: retry_after_secs.max(1),
        }
    }

    /// A permit if fewer than the maximum are out, `None` otherwise.
    pub fn try_acquire(&self) -> Option<Permit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Syncs in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The answer to a sync refused for lack of a permit.
    pub fn busy(&self) -> SyncError {
        SyncError::RetryAfter {
            secs: self.retry_after_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_permits_are_bounded_and_released() {
        let f = InFlight::new(2, 3);
        let a = f.try_acquire().expect("first");
        let b = f.try_acquire().expect("second");
        assert!(f.try_acquire().is_none());
        assert_eq!(f.in_flight(), 2);
        assert_eq!(f.busy(), SyncError::RetryAfter { secs: 3 });
        drop(a);
        let c = f.clone().try_acquire().expect("freed");
        drop((b, c));
        assert_eq!(f.in_flight(), 0);
    }
}
