//! The sync decisions: one device's sync request in, one [`PackedSyncResponse`]
//! and at most one store write out.
//!
//! The core names the reads it needs and returns the write to make; it never
//! touches a store, a clock or a thread. The shell (omega-constellation's
//! `sync::run`, called by a shard actor) drives one sync so:
//!
//! 1. [`SyncCore::admit`]: the per-device rate limit ([`RateLimiter`]) →
//!    `RetryAfter{secs}`;
//! 2. [`SyncCore::validate`]: what the codec cannot check (region in the
//!    configured allow-list, duplicate or contradictory pattern ids,
//!    `samples == 0`, version regressions, shape of `Snapshot` and `Forget`)
//!    → `BadRequest`. A `Forget` is accepted whatever region it names: a
//!    device may always be dropped;
//! 3. read the device's state, then [`SyncCore::plan`]: the stored version
//!    decides: `base_version` equal → apply; `pattern_version` equal (a
//!    replay) → acknowledge without re-applying; otherwise →
//!    `ResyncRequired{node_version}` (privacy rule 5: the TV is the source of
//!    truth). `Snapshot` replaces everything, `Forget` drops the device
//!    (privacy rule 4);
//! 4. the answer's reads: the globals changed since the device's version,
//!    the catalog version and, if [`SyncCore::catalog_read`] asks for one, a
//!    catalog page; then [`SyncCore::decide`] builds the response and the
//!    [`StoreWrite`]. The reads happen *before* the write, so a failure
//!    anywhere yields `Internal` with nothing applied;
//! 5. the shell performs the write (one atomic store call); a refused write
//!    becomes [`SyncCore::write_refused`]'s answer, any other failure
//!    `Internal`;
//! 6. [`SyncCore::finish`] charges the rate limit for every admitted sync,
//!    whatever its answer: `BadRequest`, `ResyncRequired` and `Internal`
//!    included, so that no answer lets a device (or a node that keeps
//!    asking for snapshots) sync faster than the limit.
//!
//! `samples` is not trusted: each stored pattern's count is clamped to
//! [`SyncConfig::max_pattern_samples`] on arrival.
//!
//! Trends travel with a global version: they are sent whenever the device's
//! global version differs from the region's (the device replaces its trends),
//! and omitted when it is current (the device keeps what it has).
//!
//! `Internal` answers never carry store error text: the shell logs the error
//! under an [`ErrorId`] and answers [`internal_error`] with that id.

use std::collections::{BTreeSet, HashMap, VecDeque};

use rand::Rng;

use omega_protocol::{
    limits, DeviceId, PackedCatalogPage, PackedPatternSummary, PackedSyncAccepted,
    PackedSyncRequest, PackedSyncResponse, PatternId, Region, SyncError, SyncKind,
};

use crate::store::{
    DeviceInfo, DeviceState, DeviceSync, GlobalsChange, StoreError, StoredPattern,
    MAX_PATTERNS_PER_DEVICE,
};

/// Default per-device interval between syncs.
pub const DEFAULT_MIN_SYNC_INTERVAL_SECS: u32 = 60;
/// Default number of devices the rate limiter remembers.
pub const DEFAULT_RATE_LIMITER_CAPACITY: usize = 131_072;
/// Default range of `next_sync_secs`.
pub const DEFAULT_NEXT_SYNC_SECS: (u32, u32) = (300, 900);
/// Default cap on a stored pattern's `samples` (larger counts are clamped
/// on arrival): a TV keeps 1,000 episodes by default, so no honest pattern
/// folds more watches than that.
pub const DEFAULT_MAX_PATTERN_SAMPLES: u32 = 1000;
/// Default catalog entries per response.
pub const DEFAULT_CATALOG_PAGE_ITEMS: usize = 100;
/// Largest catalog page a response may carry: a worst-case entry (64 B id,
/// 256 B title, 2 KiB description, 16 genres, 388 B embedding) is under
/// 3.3 KiB, so 300 of them stay under the 1 MiB response frame.
pub const MAX_CATALOG_PAGE_ITEMS: usize = 300;

/// Why a [`SyncConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `next_sync_secs` is empty (`min > max`) or starts at 0.
    #[error("next sync range {min}..={max} s is empty or starts at 0")]
    BadNextSyncRange {
        /// Lower bound.
        min: u32,
        /// Upper bound.
        max: u32,
    },
    /// The catalog page size is 0 or above [`MAX_CATALOG_PAGE_ITEMS`].
    #[error("catalog page of {0} items is outside 1..={MAX_CATALOG_PAGE_ITEMS}")]
    BadCatalogPage(usize),
    /// The rate limiter's capacity or burst is 0.
    #[error("rate limiter capacity and burst must be at least 1")]
    BadRateLimiter,
    /// An allow-list of regions that is empty would refuse every device.
    #[error("the allowed-region list is empty")]
    NoRegionsAllowed,
    /// The cap on a pattern's `samples` is 0.
    #[error("the cap on a pattern's samples must be at least 1")]
    BadSampleCap,
}

/// How a [`SyncCore`] behaves. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Regions devices may declare (a sync naming another is a
    /// `BadRequest`, charged to the rate limit). Default: the one region
    /// [`omega_protocol::DEFAULT_REGION`].
    pub allowed_regions: BTreeSet<Region>,
    /// Per-device interval between charged syncs (0 disables the limit).
    pub min_sync_interval_secs: u32,
    /// Syncs a device may make back to back before the interval applies
    /// (a token bucket of this depth refilled one per interval).
    pub rate_burst: u32,
    /// Devices the rate limiter remembers (see [`RateLimiter`]).
    pub rate_limiter_capacity: usize,
    /// `next_sync_secs` is drawn uniformly from this inclusive range.
    pub next_sync_secs: (u32, u32),
    /// Catalog changes per response, 1..=[`MAX_CATALOG_PAGE_ITEMS`].
    pub catalog_page_items: usize,
    /// A stored pattern's `samples` is clamped to this on arrival (at least
    /// 1). Default [`DEFAULT_MAX_PATTERN_SAMPLES`].
    pub max_pattern_samples: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            allowed_regions: BTreeSet::from([Region::default_region()]),
            min_sync_interval_secs: DEFAULT_MIN_SYNC_INTERVAL_SECS,
            rate_burst: 1,
            rate_limiter_capacity: DEFAULT_RATE_LIMITER_CAPACITY,
            next_sync_secs: DEFAULT_NEXT_SYNC_SECS,
            catalog_page_items: DEFAULT_CATALOG_PAGE_ITEMS,
            max_pattern_samples: DEFAULT_MAX_PATTERN_SAMPLES,
        }
    }
}

impl SyncConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (min, max) = self.next_sync_secs;
        if min == 0 || min > max {
            return Err(ConfigError::BadNextSyncRange { min, max });
        }
        if self.catalog_page_items == 0 || self.catalog_page_items > MAX_CATALOG_PAGE_ITEMS {
            return Err(ConfigError::BadCatalogPage(self.catalog_page_items));
        }
        if self.rate_limiter_capacity == 0 || self.rate_burst == 0 {
            return Err(ConfigError::BadRateLimiter);
        }
        if self.allowed_regions.is_empty() {
            return Err(ConfigError::NoRegionsAllowed);
        }
        if self.max_pattern_samples == 0 {
            return Err(ConfigError::BadSampleCap);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Rate limiter.

/// Per-device rate limit with bounded memory.
///
/// A generic cell rate algorithm: each device has a theoretical arrival time
/// `tat`; a sync at `now` is allowed when `now >= tat - (burst - 1) × interval`
/// and, when charged, moves `tat` to `max(tat, now) + interval`. A device whose
/// `tat` has passed is indistinguishable from an unknown one, so entries
/// expire by themselves and only devices charged within the last
/// `burst × interval` occupy memory.
///
/// Bound: at most `capacity` devices. Past it, the device charged longest ago
/// is forgotten early, which at worst lets it sync once more before its
/// interval ends; nothing else changes. With the defaults (131,072 devices,
/// 60 s) that needs over 2,000 distinct devices a second on one core, far
/// above the design's load, so eviction means abuse, not normal traffic.
///
/// Time is treated as monotonic: a `now` earlier than one already seen is
/// taken as the latest seen.
#[derive(Debug)]
pub struct RateLimiter {
    interval_ms: u64,
    tolerance_ms: u64,
    capacity: usize,
    tat: HashMap<DeviceId, u64>,
    /// Charges in order, for expiry and eviction; entries whose `tat` no
    /// longer matches the map are stale and skipped.
    order: VecDeque<(DeviceId, u64)>,
    latest: u64,
}

impl RateLimiter {
    /// A limiter of one sync per `interval_secs` with bursts of `burst`,
    /// remembering at most `capacity` devices (both at least 1).
    pub fn new(interval_secs: u32, burst: u32, capacity: usize) -> Self {
        let interval_ms = u64::from(interval_secs) * 1000;
        Self {
            interval_ms,
            tolerance_ms: interval_ms * u64::from(burst.max(1) - 1),
            capacity: capacity.max(1),
            tat: HashMap::new(),
            order: VecDeque::new(),
            latest: 0,
        }
    }

    /// Whether `device` may sync at `now_ms`; `Err(secs)` to wait otherwise
    /// (at least 1). Does not charge.
    pub fn check(&mut self, device: &DeviceId, now_ms: u64) -> Result<(), u32> {
        let now = self.advance(now_ms);
        match self.tat.get(device) {
            Some(&tat) if now + self.tolerance_ms < tat => {
                let wait_ms = tat - self.tolerance_ms - now;
                Err(u32::try_from(wait_ms.div_ceil(1000))
                    .unwrap_or(u32::MAX)
                    .max(1))
            }
            _ => Ok(()),
        }
    }

    /// Charges one sync of `device` at `now_ms`.
    pub fn charge(&mut self, device: &DeviceId, now_ms: u64) {
        if self.interval_ms == 0 {
            return;
        }
        let now = self.advance(now_ms);
        let tat = self.tat.get(device).copied().unwrap_or(now).max(now) + self.interval_ms;
        self.tat.insert(device.clone(), tat);
        self.order.push_back((device.clone(), tat));
        while self.tat.len() > self.capacity {
            self.pop_front();
        }
        if self.order.len() > 2 * self.capacity + 16 {
            let tat = &self.tat;
            self.order.retain(|(d, t)| tat.get(d) == Some(t));
        }
    }

    /// Devices currently remembered.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// Whether no device is remembered.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    fn advance(&mut self, now_ms: u64) -> u64 {
        self.latest = self.latest.max(now_ms);
        let now = self.latest;
        // Entries whose tat has passed carry no information: drop them.
        while self.order.front().is_some_and(|(_, t)| *t <= now) {
            self.pop_front();
        }
        now
    }

    fn pop_front(&mut self) {
        if let Some((d, t)) = self.order.pop_front() {
            if self.tat.get(&d) == Some(&t) {
                self.tat.remove(&d);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The core.

/// What a sync did, for metrics and logs (the response says the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// A delta or snapshot was applied.
    Applied,
    /// A replay of the last applied sync was acknowledged; nothing written.
    Replayed,
    /// The device was forgotten.
    Forgotten,
    /// The sync was refused (the response holds the error).
    Refused,
}

/// What a valid sync does to the device's stored state, decided from the
/// stored version ([`SyncCore::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Apply the delta (`reset`: a snapshot replacing everything).
    Apply {
        /// Drop every stored pattern first.
        reset: bool,
    },
    /// A replay of the sync that wrote `version`: acknowledge, write nothing.
    Replay {
        /// The stored (and acknowledged) version.
        version: u64,
    },
    /// Drop the device (privacy rule 4).
    Forget,
}

/// A catalog page the answer needs: `store.catalog_page(since, max_items)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogRead {
    /// Changes after this catalog version.
    pub since: u64,
    /// At most this many items.
    pub max_items: usize,
}

/// The reads the answer is built from, gathered by the shell after
/// [`SyncCore::plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerInputs {
    /// `store.globals_since(&req.region, req.global_version)`.
    pub globals: GlobalsChange,
    /// The page [`SyncCore::catalog_read`] asked for, `None` if it asked for
    /// none.
    pub catalog: Option<PackedCatalogPage>,
}

/// The changes one applied sync makes to one device (owned form of
/// [`DeviceSync`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceChanges {
    /// The device's state after the sync.
    pub state: DeviceState,
    /// Drop every pattern first (snapshot).
    pub reset: bool,
    /// Patterns to insert or replace.
    pub upserts: Vec<StoredPattern>,
    /// Pattern ids to delete.
    pub removals: Vec<PatternId>,
}

impl DeviceChanges {
    /// The borrowed form [`PatternStore::apply_device_sync`](crate::store::PatternStore::apply_device_sync) takes.
    pub fn as_sync(&self) -> DeviceSync<'_> {
        DeviceSync {
            state: &self.state,
            reset: self.reset,
            upserts: &self.upserts,
            removals: &self.removals,
        }
    }
}

/// The one store write a sync makes, performed by the shell.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreWrite {
    /// `store.apply_device_sync(device, changes.as_sync())`.
    Apply(DeviceChanges),
    /// `store.forget_device(device)`.
    Forget,
}

/// What [`SyncCore::decide`] decided: the answer to send once `write` (if
/// any) has succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The answer.
    pub accepted: PackedSyncAccepted,
    /// What the sync does.
    pub outcome: SyncOutcome,
    /// The write to make before answering.
    pub write: Option<StoreWrite>,
}

/// An opaque id under which the shell logs a failure that a device is told
/// about only as [`SyncError::Internal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorId(pub u64);

impl std::fmt::Display for ErrorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The answer to a sync that failed inside the node: a generic reason and
/// the id the failure was logged under, nothing of the failure itself.
pub fn internal_error(id: ErrorId) -> SyncError {
    SyncError::Internal {
        reason: format!("internal node error (ref {id})"),
    }
}

/// The sync decisions of one shard (see the module docs); its state is the
/// rate limiter.
#[derive(Debug)]
pub struct SyncCore {
    config: SyncConfig,
    limiter: RateLimiter,
}

fn bad(reason: impl Into<String>) -> SyncError {
    SyncError::BadRequest {
        reason: reason.into(),
    }
}

impl SyncCore {
    /// A core with `config`.
    pub fn new(config: SyncConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiter = RateLimiter::new(
            config.min_sync_interval_secs,
            config.rate_burst,
            config.rate_limiter_capacity,
        );
        Ok(Self { config, limiter })
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Step 1: whether `device` may sync at `now_ms` (unix milliseconds);
    /// `RetryAfter` otherwise. Does not charge (see [`SyncCore::finish`]).
    pub fn admit(&mut self, device: &DeviceId, now_ms: u64) -> Result<(), SyncError> {
        self.limiter
            .check(device, now_ms)
            .map_err(|secs| SyncError::RetryAfter { secs })
    }

    /// Step 3: what the sync does given the device's stored state (`None`: the
    /// node holds nothing for it). Expects a request that passed
    /// [`SyncCore::validate`]. `Err` is `ResyncRequired`.
    pub fn plan(
        &self,
        req: &PackedSyncRequest,
        stored: Option<&DeviceInfo>,
    ) -> Result<Plan, SyncError> {
        let version = stored.map_or(0, |i| i.state.pattern_version);
        let known = stored.is_some();
        Ok(match req.kind {
            SyncKind::Forget => Plan::Forget,
            SyncKind::Snapshot if known && req.pattern_version == version => {
                Plan::Replay { version }
            }
            SyncKind::Snapshot => Plan::Apply { reset: true },
            SyncKind::Delta if req.base_version == version => Plan::Apply { reset: false },
            SyncKind::Delta if known && req.pattern_version == version => Plan::Replay { version },
            SyncKind::Delta => {
                return Err(SyncError::ResyncRequired {
                    node_version: version,
                })
            }
        })
    }

    /// Step 4: the catalog page the answer needs, given the device's catalog
    /// version and the node's current one; `None` when the device is current.
    /// A device ahead of the node (the node's catalog was rebuilt) starts over
    /// from the beginning.
    pub fn catalog_read(&self, device_version: u64, current: u64) -> Option<CatalogRead> {
        if device_version == current {
            return None;
        }
        let since = if device_version > current {
            0
        } else {
            device_version
        };
        Some(CatalogRead {
            since,
            max_items: self.config.catalog_page_items,
        })
    }

    /// Step 4: the answer and the write, from the request (taken by value:
    /// its pattern embeddings move into the stored records), the plan and the
    /// reads. `Err` is `Internal` when the reads break the response's limits.
    pub fn decide(
        &self,
        req: PackedSyncRequest,
        plan: Plan,
        inputs: AnswerInputs,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Result<Decision, SyncError> {
        let mut accepted = self.answer(&req, inputs, rng)?;
        let (outcome, write) = match plan {
            Plan::Replay { version } => {
                accepted.acked_version = version;
                (SyncOutcome::Replayed, None)
            }
            Plan::Forget => {
                accepted.acked_version = 0;
                (SyncOutcome::Forgotten, Some(StoreWrite::Forget))
            }
            Plan::Apply { reset } => {
                accepted.acked_version = req.pattern_version;
                let delta = req.delta;
                let changes = DeviceChanges {
                    state: DeviceState {
                        pattern_version: req.pattern_version,
                        region: req.region,
                        last_sync_ms: now_ms,
                    },
                    reset,
                    upserts: delta
                        .added
                        .into_iter()
                        .chain(delta.updated)
                        .map(|p| stored_pattern(p, self.config.max_pattern_samples, now_ms))
                        .collect(),
                    removals: delta.removed,
                };
                (SyncOutcome::Applied, Some(StoreWrite::Apply(changes)))
            }
        };
        Ok(Decision {
            accepted,
            outcome,
            write,
        })
    }

    /// Step 5: the answer to a write the store refused for the device's sake
    /// (it would exceed the device's pattern limit: `BadRequest`); `None` for
    /// any other failure, which the shell answers with [`internal_error`].
    pub fn write_refused(e: &StoreError) -> Option<SyncError> {
        match e {
            StoreError::LimitExceeded { len, max, .. } => Some(bad(format!(
                "the device would hold {len} patterns, at most {max} allowed"
            ))),
            _ => None,
        }
    }

    /// Step 6: charges the rate limit for a sync admitted at `now_ms` and
    /// turns its result into the response. Every admitted sync is charged,
    /// whatever its answer: were `ResyncRequired` or `Internal` free, a
    /// device could sync without limit by provoking them, and a node could
    /// make a TV upload snapshot after snapshot; the snapshot that follows a
    /// `ResyncRequired` waits for the next interval like any sync.
    pub fn finish(
        &mut self,
        device: &DeviceId,
        now_ms: u64,
        result: Result<(PackedSyncAccepted, SyncOutcome), SyncError>,
    ) -> (PackedSyncResponse, SyncOutcome) {
        self.limiter.charge(device, now_ms);
        match result {
            Ok((accepted, outcome)) => (Ok(accepted), outcome),
            Err(e) => {
                tracing::debug!(device = %device, kind = e.kind(), error = %e, "sync refused");
                (Err(e), SyncOutcome::Refused)
            }
        }
    }

    /// Everything of the response except `acked_version`.
    fn answer(
        &self,
        req: &PackedSyncRequest,
        inputs: AnswerInputs,
        rng: &mut impl Rng,
    ) -> Result<PackedSyncAccepted, SyncError> {
        let globals = inputs.globals;
        if globals.patterns.len() > limits::MAX_GLOBAL_PATTERNS
            || globals.removed.len() > limits::MAX_GLOBAL_REMOVED
            || globals.trends.len() > limits::MAX_TRENDS
        {
            return Err(SyncError::Internal {
                reason: "the store returned more globals than a response may carry".into(),
            });
        }
        let trends = if globals.version == req.global_version {
            Vec::new()
        } else {
            globals.trends
        };
        let (min, max) = self.config.next_sync_secs;
        Ok(PackedSyncAccepted {
            acked_version: 0,
            global_version: globals.version,
            global_reset: globals.reset,
            global_patterns: globals.patterns,
            global_removed: globals.removed,
            trends,
            catalog: inputs.catalog,
            next_sync_secs: rng.random_range(min..=max),
            // The shell adds the learning's part (round step, fleet page).
            round: None,
            fleet: None,
        })
    }

    /// Step 2: checks what the codec cannot (see the module docs).
    pub fn validate(&self, req: &PackedSyncRequest) -> Result<(), SyncError> {
        if req.kind != SyncKind::Forget && !self.config.allowed_regions.contains(&req.region) {
            return Err(bad(format!(
                "region {} is not served by this node (allowed: {})",
                req.region,
                self.config
                    .allowed_regions
                    .iter()
                    .map(Region::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if req.pattern_version < req.base_version {
            return Err(bad(format!(
                "pattern version {} is below the base version {}",
                req.pattern_version, req.base_version
            )));
        }
        let d = &req.delta;
        match req.kind {
            SyncKind::Forget if !d.is_empty() => {
                return Err(bad("a forget carries no patterns"));
            }
            SyncKind::Snapshot if !d.updated.is_empty() || !d.removed.is_empty() => {
                return Err(bad("a snapshot carries only added patterns"));
            }
            SyncKind::Delta if !d.is_empty() && req.pattern_version == req.base_version => {
                return Err(bad("a delta with changes needs a new pattern version"));
            }
            _ => {}
        }
        let upserts = d.added.len() + d.updated.len();
        if upserts > limits::MAX_DELTA_PATTERNS {
            return Err(bad(format!(
                "{upserts} patterns in one delta, at most {}",
                limits::MAX_DELTA_PATTERNS
            )));
        }
        if d.removed.len() > limits::MAX_DELTA_REMOVED {
            return Err(bad(format!(
                "{} removals in one delta, at most {}",
                d.removed.len(),
                limits::MAX_DELTA_REMOVED
            )));
        }
        let mut seen: BTreeSet<PatternId> = BTreeSet::new();
        for p in d.added.iter().chain(&d.updated) {
            if !seen.insert(p.id) {
                return Err(bad(format!("pattern {} appears twice", p.id.0)));
            }
            if p.samples == 0 {
                return Err(bad(format!("pattern {} has no samples", p.id.0)));
            }
            if !(p.success_rate.is_finite() && (0.0..=1.0).contains(&p.success_rate)) {
                return Err(bad(format!("pattern {} has a bad success rate", p.id.0)));
            }
        }
        let mut removed: BTreeSet<PatternId> = BTreeSet::new();
        for id in &d.removed {
            if !removed.insert(*id) {
                return Err(bad(format!("pattern {} is removed twice", id.0)));
            }
            if seen.contains(id) {
                return Err(bad(format!("pattern {} is both changed and removed", id.0)));
            }
        }
        if req.kind == SyncKind::Snapshot && upserts > MAX_PATTERNS_PER_DEVICE as usize {
            return Err(bad("snapshot larger than a device may hold"));
        }
        Ok(())
    }
}

/// A pattern as stored, its `samples` clamped to `max_samples`.
fn stored_pattern(p: PackedPatternSummary, max_samples: u32, now_ms: u64) -> StoredPattern {
    StoredPattern {
        id: p.id,
        bucket: p.bucket,
        embedding: p.embedding,
        success_rate: p.success_rate,
        samples: p.samples.min(max_samples),
        updated_at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{device, embedding, region};

    #[test]
    fn the_limiter_allows_one_sync_per_interval() {
        let mut l = RateLimiter::new(60, 1, 10);
        let d = device(1);
        assert_eq!(l.check(&d, 1_000), Ok(()));
        l.charge(&d, 1_000);
        assert_eq!(l.check(&d, 1_001), Err(60));
        assert_eq!(l.check(&d, 31_000), Err(30));
        assert_eq!(l.check(&d, 60_999), Err(1));
        assert_eq!(l.check(&d, 61_000), Ok(()));
        // Expired entries are dropped.
        assert!(l.is_empty());
        assert_eq!(l.check(&device(2), 61_000), Ok(()));
    }

    #[test]
    fn the_limiter_honours_bursts_and_monotonic_time() {
        let mut l = RateLimiter::new(60, 2, 10);
        let d = device(1);
        l.charge(&d, 0);
        assert_eq!(l.check(&d, 0), Ok(()));
        l.charge(&d, 0);
        assert_eq!(l.check(&d, 0), Err(60));
        // A clock going back does not reopen the door.
        assert_eq!(l.check(&d, 0), Err(60));
        assert_eq!(l.check(&d, 60_000), Ok(()));
    }

    #[test]
    fn the_limiter_memory_is_bounded() {
        let mut l = RateLimiter::new(60, 1, 100);
        for i in 0..1000 {
            l.charge(&device(i), 10);
            assert!(l.len() <= 100);
        }
        assert!(l.order.len() <= 2 * 100 + 16);
        // The most recent devices are still limited; the oldest were evicted.
        assert!(l.check(&device(999), 20).is_err());
        assert!(l.check(&device(0), 20).is_ok());
        // Repeated charges of one device (burst) do not grow the ring unboundedly.
        let mut l = RateLimiter::new(1, 1000, 4);
        for t in 0..10_000 {
            l.charge(&device(1), t);
        }
        assert!(l.order.len() <= 2 * 4 + 16);
    }

    #[test]
    fn configs_are_validated() {
        assert_eq!(SyncConfig::default().validate(), Ok(()));
        let bad = |f: fn(&mut SyncConfig)| {
            let mut c = SyncConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.next_sync_secs = (10, 5)));
        assert!(bad(|c| c.next_sync_secs = (0, 5)));
        assert!(bad(|c| c.catalog_page_items = 0));
        assert!(bad(|c| c.catalog_page_items = MAX_CATALOG_PAGE_ITEMS + 1));
        assert!(bad(|c| c.rate_burst = 0));
        assert!(bad(|c| c.allowed_regions = BTreeSet::new()));
        assert!(bad(|c| c.max_pattern_samples = 0));
        assert!(SyncConfig::default()
            .allowed_regions
            .contains(&Region::new(omega_protocol::DEFAULT_REGION).expect("valid")));
        let _ = (embedding(1), region(1));
    }
}
