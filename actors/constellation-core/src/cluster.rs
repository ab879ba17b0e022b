//! Cluster membership and the federation lease, for nodes that share one
//! store (DESIGN.md, "Constellation: Cluster"): the [`ClusterStore`]
//! interface, the lease timing rules ([`LeaseTiming`]) and [`MemoryCluster`],
//! the in-memory reference model.
//!
//! * **Membership**: each node writes a heartbeat row with a TTL
//!   ([`ClusterStore::heartbeat`]); the members are the rows whose TTL has not
//!   run out at `now` ([`ClusterStore::members`]).
//! * **The lease**: one named row with a holder and an expiry, taken with a
//!   conditional write ([`ClusterStore::try_lease`]): free, expired or
//!   already ours → ours until `now + ttl`; otherwise the current holder is
//!   returned. Only the holder runs the cluster's federation. A holder that
//!   loses the lease in the middle of a run cannot publish a version twice:
//!   publication is conditional on the region's version
//!   ([`crate::store::StoreError::StaleVersion`] or `Conflict` for the
//!   loser).
//!
//! Every time is Unix milliseconds passed in by the caller; nothing here
//! reads a clock. Clocks of the nodes are assumed to agree to well within a
//! TTL (a lease is judged expired by the clock of the node that takes it).

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::Serialize;

use crate::store::StoreError;

/// The federation's lease name.
pub const FEDERATION_LEASE: &str = "federation";
/// Live members [`ClusterStore::members`] returns at most (a heartbeat of a
/// new node past it is refused with [`StoreError::LimitExceeded`] by the
/// memory model; the ScyllaDB store reads no more than this many rows).
pub const MAX_MEMBERS: usize = 1024;
/// Distinct lease names a store holds at most.
pub const MAX_LEASES: usize = 16;
/// Longest node name, address or lease name, bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Shortest TTL of a heartbeat or lease (stores with TTLs in whole seconds
/// round up).
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest TTL of a heartbeat or lease.
pub const MAX_TTL_MS: u64 = 86_400_000;

/// A live node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The node's name (unique in the cluster).
    pub node: String,
    /// Where devices reach it (`host:port`), as it announced.
    pub addr: String,
    /// Unix milliseconds of its last heartbeat.
    pub heartbeat_ms: u64,
    /// When it stops counting as a member without another heartbeat.
    pub expires_ms: u64,
}

/// A lease as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The lease's name.
    pub name: String,
    /// The node holding it.
    pub holder: String,
    /// Unix milliseconds at which it lapses unless renewed.
    pub expires_ms: u64,
}

impl Lease {
    /// Whether `node` holds it at `now_ms`.
    pub fn held_by(&self, node: &str, now_ms: u64) -> bool {
        self.holder == node && now_ms < self.expires_ms
    }
}

/// Membership and leases in a store several nodes share. Blocking, like
/// [`crate::store::PatternStore`].
pub trait ClusterStore: Send + Sync {
    /// Records that `node` (reachable at `addr`) is alive at `now_ms`, until
    /// `now_ms + ttl_ms`.
    fn heartbeat(&self, node: &str, addr: &str, now_ms: u64, ttl_ms: u64)
        -> Result<(), StoreError>;

    /// The members whose heartbeat has not expired at `now_ms`, by name (at
    /// most [`MAX_MEMBERS`]).
    fn members(&self, now_ms: u64) -> Result<Vec<Member>, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `now_ms + ttl_ms`
    /// when it is free, expired at `now_ms` or already `holder`'s; returns the
    /// lease as it stands after the attempt (another holder's when taken).
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, StoreError>;

    /// The lease `name` if it is held at `now_ms`.
    fn lease(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError>;

    /// Gives the lease `name` up if `holder` holds it; returns whether it did.
    fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError>;
}

/// Lets states that hold an `Arc<dyn ClusterStore>` derive `Debug`.
impl std::fmt::Debug for dyn ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn ClusterStore")
    }
}

/// Checks a node name, address or lease name and a TTL; shared by the
/// implementations.
pub fn check_args(names: &[&str], ttl_ms: Option<u64>) -> Result<(), StoreError> {
    for n in names {
        if n.is_empty() || n.len() > MAX_NAME_LEN || n.chars().any(char::is_control) {
            return Err(StoreError::InvalidInput {
                reason: format!("{n:?} is not a name of 1 to {MAX_NAME_LEN} printable bytes"),
            });
        }
    }
    if let Some(ttl) = ttl_ms {
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl) {
            return Err(StoreError::InvalidInput {
                reason: format!("a TTL of {ttl} ms is outside {MIN_TTL_MS}..={MAX_TTL_MS}"),
            });
        }
    }
    Ok(())
}

/// When a node renews its heartbeat and the federation lease, and for how
/// long, from the federation interval and the heartbeat period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The lease's TTL: one federation interval.
    pub lease_ttl_ms: u64,
    /// How often every node renews its heartbeat and tries the lease.
    pub renew_every_ms: u64,
    /// A heartbeat's TTL: three renewals, so one lost renewal does not drop
    /// a node from the members.
    pub member_ttl_ms: u64,
}

/// Why a [`LeaseTiming`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The heartbeat period is zero or more than a third of the federation
    /// interval: a holder would not renew at least twice per lease.
    #[error("heartbeat every {heartbeat_ms} ms must be 1..={max_ms} ms (a third of the federation interval)")]
    Heartbeat {
        /// The period given.
        heartbeat_ms: u64,
        /// The largest allowed.
        max_ms: u64,
    },
    /// The federation interval is outside the TTLs a store accepts.
    #[error("federation interval {interval_ms} ms is outside {MIN_TTL_MS}..={MAX_TTL_MS} ms")]
    Interval {
        /// The interval given.
        interval_ms: u64,
    },
}

impl LeaseTiming {
    /// The timing for a federation run every `interval_ms` and a heartbeat
    /// every `heartbeat_ms` (at most a third of the interval).
    ///
    /// A live holder renews at least three times per TTL, so it keeps the
    /// lease through two failed renewals. When the holder dies right after a
    /// renewal the lease lapses one interval later and another node, trying
    /// every `heartbeat_ms`, takes it within [`Self::takeover_bound_ms`]
    /// (at most 4/3 of an interval, under the two the design asks for).
    pub fn new(interval_ms: u64, heartbeat_ms: u64) -> Result<Self, TimingError> {
        if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&interval_ms) {
            return Err(TimingError::Interval { interval_ms });
        }
        let max_ms = interval_ms / 3;
        if heartbeat_ms == 0 || heartbeat_ms > max_ms {
            return Err(TimingError::Heartbeat {
                heartbeat_ms,
                max_ms,
            });
        }
        Ok(Self {
            lease_ttl_ms: interval_ms,
            renew_every_ms: heartbeat_ms,
            member_ttl_ms: (heartbeat_ms * 3).clamp(MIN_TTL_MS, MAX_TTL_MS),
        })
    }

    /// The longest time from a holder's last renewal to another live node
    /// holding the lease.
    pub fn takeover_bound_ms(&self) -> u64 {
        self.lease_ttl_ms + self.renew_every_ms
    }
}

#[derive(Debug, Default)]
struct Inner {
    members: BTreeMap<String, Member>,
    leases: BTreeMap<String, Lease>,
}

/// The in-memory reference model of [`ClusterStore`] (one process; the
/// single-node stores use it too). Expired members are dropped at each
/// heartbeat, so it holds at most [`MAX_MEMBERS`] members and
/// [`MAX_LEASES`] leases.
#[derive(Debug, Default)]
pub struct MemoryCluster {
    inner: Mutex<Inner>,
}

impl MemoryCluster {
    /// An empty membership with no lease held.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The refusal of one more entry past a limit of `max` (`len` held).
fn one_too_many(what: &'static str, len: usize, max: usize) -> StoreError {
    StoreError::LimitExceeded {
        what,
        len: len + 1,
        max,
    }
}

impl ClusterStore for MemoryCluster {
    fn heartbeat(
        &self,
        node: &str,
        addr: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<(), StoreError> {
        check_args(&[node, addr], Some(ttl_ms))?;
        let mut g = self.inner.lock();
        g.members.retain(|_, m| m.expires_ms > now_ms);
        if !g.members.contains_key(node) && g.members.len() >= MAX_MEMBERS {
            return Err(one_too_many(
                "cluster members",
                g.members.len(),
                MAX_MEMBERS,
            ));
        }
        let member = Member {
            node: node.to_owned(),
            addr: addr.to_owned(),
            heartbeat_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        g.members.insert(node.to_owned(), member);
        Ok(())
    }

    fn members(&self, now_ms: u64) -> Result<Vec<Member>, StoreError> {
        let g = self.inner.lock();
        Ok(g.members
            .values()
            .filter(|m| m.expires_ms > now_ms)
            .take(MAX_MEMBERS)
            .cloned()
            .collect())
    }

    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, StoreError> {
        check_args(&[name, holder], Some(ttl_ms))?;
        let mut g = self.inner.lock();
        if let Some(l) = g.leases.get(name) {
            if l.holder != holder && now_ms < l.expires_ms {
                return Ok(l.clone());
            }
        } else if g.leases.len() >= MAX_LEASES {
            return Err(one_too_many("leases", g.leases.len(), MAX_LEASES));
        }
        let lease = Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        g.leases.insert(name.to_owned(), lease.clone());
        Ok(lease)
    }

    fn lease(&self, name: &str, now_ms: u64) -> Result<Option<Lease>, StoreError> {
        let g = self.inner.lock();
        Ok(g.leases
            .get(name)
            .filter(|l| now_ms < l.expires_ms)
            .cloned())
    }

    fn release(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        let mut g = self.inner.lock();
        if g.leases.get(name).is_some_and(|l| l.holder == holder) {
            g.leases.remove(name);
            return Ok(true);
        }
        Ok(false)
    }
}

/// The shared [`ClusterStore`] checks: each takes two handles on one empty
/// store (two "nodes"; for a single process, the same store twice) and a
/// base time `t0` near the wall clock (stores with real TTLs expire rows by
/// it), staying within a minute of it.
#[cfg(any(test, feature = "testing"))]
pub mod suite {
    use super::{ClusterStore, FEDERATION_LEASE};

    const TTL: u64 = 10_000;

    /// Heartbeats make members; a member drops out once its TTL passes and
    /// comes back with the next heartbeat; bad names are refused.
    pub fn membership<S: ClusterStore + ?Sized>(a: &S, b: &S, t0: u64) {
        assert!(a.members(t0).expect("members").is_empty(), "empty at start");
        a.heartbeat("node-a", "10.0.0.1:4433", t0, TTL)
            .expect("hb a");
        b.heartbeat("node-b", "10.0.0.2:4433", t0 + 1, TTL)
            .expect("hb b");
        let m = b.members(t0 + 2).expect("members");
        let names: Vec<&str> = m.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(names, ["node-a", "node-b"], "both nodes see both");
        assert_eq!(m[0].addr, "10.0.0.1:4433");
        assert_eq!(m[0].heartbeat_ms, t0);
        assert_eq!(m[0].expires_ms, t0 + TTL);
        b.heartbeat("node-b", "10.0.0.2:4433", t0 + 5_000, TTL)
            .expect("hb b again");
        let later = a.members(t0 + TTL + 1).expect("members");
        let names: Vec<&str> = later.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(names, ["node-b"], "node-a expired, node-b renewed");
        assert!(
            a.heartbeat("", "x:1", t0, TTL).is_err(),
            "an empty name is refused"
        );
        assert!(
            a.heartbeat("n", "x:1", t0, 1).is_err(),
            "a TTL below the minimum is refused"
        );
    }

    /// One holder at a time; renewals keep it; another node takes it only
    /// once it expired; release frees it for the other at once.
    pub fn lease_is_exclusive<S: ClusterStore + ?Sized>(a: &S, b: &S, t0: u64) {
        let name = FEDERATION_LEASE;
        assert_eq!(a.lease(name, t0).expect("lease"), None, "free at start");
        let la = a.try_lease(name, "node-a", t0, TTL).expect("a takes");
        assert!(la.held_by("node-a", t0), "a holds it: {la:?}");
        assert_eq!(la.expires_ms, t0 + TTL);
        let lb = b.try_lease(name, "node-b", t0 + 1, TTL).expect("b tries");
        assert_eq!(lb.holder, "node-a", "b sees a's lease");
        assert!(!lb.held_by("node-b", t0 + 1));
        let renewed = a
            .try_lease(name, "node-a", t0 + 3_000, TTL)
            .expect("a renews");
        assert_eq!(renewed.expires_ms, t0 + 3_000 + TTL, "renewal extends it");
        let still = b
            .try_lease(name, "node-b", t0 + TTL + 1, TTL)
            .expect("b tries again");
        assert_eq!(still.holder, "node-a", "a's renewal still runs");
        let taken = b
            .try_lease(name, "node-b", t0 + 3_000 + TTL, TTL)
            .expect("b takes over");
        assert!(
            taken.held_by("node-b", t0 + 3_000 + TTL),
            "b took the expired lease: {taken:?}"
        );
        let t1 = t0 + 3_000 + TTL + 1;
        assert_eq!(
            a.try_lease(name, "node-a", t1, TTL).expect("a").holder,
            "node-b",
            "the old holder cannot take it back while b's runs"
        );
        assert_eq!(
            a.lease(name, t1).expect("lease").map(|l| l.holder),
            Some("node-b".to_owned())
        );
        assert!(!a.release(name, "node-a").expect("release"), "not a's");
        assert!(b.release(name, "node-b").expect("release"), "b's");
        let back = a.try_lease(name, "node-a", t1 + 1, TTL).expect("a");
        assert!(back.held_by("node-a", t1 + 1), "free again after release");
    }

    /// Every check, on handles from `make` (called once per check; it
    /// returns two handles on one fresh store) with base time `t0()`.
    pub fn run_all<S: ClusterStore + ?Sized, H: std::ops::Deref<Target = S>>(
        mut make: impl FnMut() -> (H, H),
        mut t0: impl FnMut() -> u64,
    ) {
        let (a, b) = make();
        membership(&*a, &*b, t0());
        let (a, b) = make();
        lease_is_exclusive(&*a, &*b, t0());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn memory_cluster_passes_the_suite() {
        suite::run_all(
            || {
                let s = Arc::new(MemoryCluster::new());
                (Arc::clone(&s), s)
            },
            || 1_700_000_000_000,
        );
    }

    #[test]
    fn timing_bounds_takeover_within_two_intervals() {
        let t = LeaseTiming::new(60_000, 20_000).expect("valid");
        assert_eq!(t.lease_ttl_ms, 60_000);
        assert_eq!(t.member_ttl_ms, 60_000);
        assert!(t.takeover_bound_ms() <= 2 * 60_000);
        assert!(matches!(
            LeaseTiming::new(60_000, 20_001),
            Err(TimingError::Heartbeat { max_ms: 20_000, .. })
        ));
        assert!(LeaseTiming::new(60_000, 0).is_err());
        assert!(matches!(
            LeaseTiming::new(10, 1),
            Err(TimingError::Interval { .. })
        ));
    }

    /// A virtual clock: the holder renews every `renew_every_ms` until it
    /// dies; the other node tries on the same cadence, offset; it holds the
    /// lease within the bound after the holder's last renewal, never before
    /// the lease expired.
    #[test]
    fn takeover_after_the_holder_dies_in_virtual_time() {
        let t = LeaseTiming::new(30_000, 10_000).expect("valid");
        let store = MemoryCluster::new();
        let mut now = 1_000_000u64;
        let mut last_renewal = 0;
        let dies_at = now + 95_000;
        let mut taken_at = None;
        while taken_at.is_none() && now < dies_at + 10 * t.lease_ttl_ms {
            if now < dies_at {
                let l = store
                    .try_lease(FEDERATION_LEASE, "a", now, t.lease_ttl_ms)
                    .expect("a");
                assert!(l.held_by("a", now), "a live holder keeps it");
                last_renewal = now;
            }
            let other = now + 3_333;
            let l = store
                .try_lease(FEDERATION_LEASE, "b", other, t.lease_ttl_ms)
                .expect("b");
            if l.held_by("b", other) {
                taken_at = Some(other);
            }
            now += t.renew_every_ms;
        }
        let taken_at = taken_at.expect("b took over");
        assert!(
            taken_at >= last_renewal + t.lease_ttl_ms,
            "not before expiry"
        );
        assert!(
            taken_at <= last_renewal + t.takeover_bound_ms(),
            "within the bound"
        );
    }

    #[test]
    fn membership_is_bounded() {
        let s = MemoryCluster::new();
        for i in 0..MAX_MEMBERS {
            s.heartbeat(&format!("n{i}"), "h:1", 0, MIN_TTL_MS)
                .expect("room");
        }
        assert!(matches!(
            s.heartbeat("one-more", "h:1", 0, MIN_TTL_MS),
            Err(StoreError::LimitExceeded { .. })
        ));
        s.heartbeat("one-more", "h:1", MIN_TTL_MS, MIN_TTL_MS)
            .expect("room once the others expired");
        assert_eq!(s.members(MIN_TTL_MS).expect("members").len(), 1);
    }
}
