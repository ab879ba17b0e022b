//! When the TV syncs next, and what kind of request it sends: a sans-IO state
//! machine fed with each attempt's outcome, `now` (milliseconds on any
//! monotonic or wall clock the caller picks, the same one throughout) and a
//! random source.
//!
//! The node is not trusted to pace the TV (DESIGN.md, privacy rules: it
//! chooses `next_sync_secs` and may answer `ResyncRequired` at will). So:
//!
//! * after a successful sync the next one comes after the node's
//!   `next_sync_secs` clamped to `[min_interval, max_interval]`
//!   ([`ScheduleConfig`]); with no node answer yet (the first attempt) the TV
//!   uses its own randomized interval, `interval_min..=interval_max`
//!   (default 5–15 minutes);
//! * `RetryAfter{secs}` is clamped the same way;
//! * `ResyncRequired` makes the next request a snapshot, sent no sooner than
//!   `min_interval`, and only while fewer than `max_snapshots_per_day`
//!   snapshots were *sent* in the last 24 hours; past the cap the next
//!   request is an ordinary delta at the TV's own interval and the refusal is
//!   counted ([`Schedule::snapshots_refused`]). The cap is checked again when
//!   an attempt starts ([`Schedule::begin`]), so no path sends a snapshot past
//!   it;
//! * when a node cannot be reached (every address failed, a transport error,
//!   a timeout) the delay is exponential backoff with full jitter: uniform in
//!   `[0, min(backoff_cap, backoff_base · 2^(n-1))]` after the n-th
//!   consecutive failure, and at least one second;
//! * other refusals (`BadRequest`, `Unauthorized`, `Internal`, an unsupported
//!   version) back off the same way but never sooner than `min_interval`: they
//!   are answers of the node, which does not pace the TV;
//! * a successful answer whose catalog page says `more` is followed at once by
//!   another request, for at most `max_catalog_pages` exchanges per cycle;
//!   the cycle then ends with the ordinary delay.
//!
//! So a node answering `next_sync_secs = 0` and `ResyncRequired` every time
//! gets at most one attempt per `min_interval` (catalog continuations aside,
//! and it sent no `more`) and at most `max_snapshots_per_day` snapshots per 24
//! hours. State is a handful of numbers and at most `max_snapshots_per_day`
//! timestamps.

use std::collections::VecDeque;

use rand::Rng;

/// Milliseconds in a day: the window of the snapshot cap.
pub const DAY_MS: u64 = 24 * 3600 * 1000;

/// Shortest delay after a transport failure: full jitter may draw 0.
pub const MIN_BACKOFF_MS: u64 = 1000;

/// The TV-side bounds of the sync schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// The TV's own interval, lower end (seconds; default 300).
    pub interval_min_secs: u64,
    /// The TV's own interval, upper end (seconds; default 900).
    pub interval_max_secs: u64,
    /// The soonest a node may make the TV sync again (seconds; default 60).
    pub min_interval_secs: u64,
    /// The latest a node may push the next sync (seconds; default 3600).
    pub max_interval_secs: u64,
    /// First backoff step while unreachable (seconds; default 10).
    pub backoff_base_secs: u64,
    /// Largest backoff step (seconds; default 1800).
    pub backoff_cap_secs: u64,
    /// Snapshots sent per 24 hours at most (default 4).
    pub max_snapshots_per_day: u32,
    /// Exchanges per cycle while the catalog pages say `more` (default 20;
    /// at least 1).
    pub max_catalog_pages: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            interval_min_secs: 300,
            interval_max_secs: 900,
            min_interval_secs: 60,
            max_interval_secs: 3600,
            backoff_base_secs: 10,
            backoff_cap_secs: 1800,
            max_snapshots_per_day: 4,
            max_catalog_pages: 20,
        }
    }
}

/// Why a schedule configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleConfigError {
    /// The bounds are out of order or zero.
    #[error("sync schedule: {0}")]
    Invalid(&'static str),
}

impl ScheduleConfig {
    /// Checks that the bounds are ordered:
    /// `1 <= min_interval <= interval_min <= interval_max <= max_interval`,
    /// `1 <= backoff_base <= backoff_cap`, `max_catalog_pages >= 1`.
    pub fn validate(&self) -> Result<(), ScheduleConfigError> {
        let bad = ScheduleConfigError::Invalid;
        if self.min_interval_secs == 0 {
            return Err(bad("min_interval_secs must be at least 1"));
        }
        if !(self.min_interval_secs <= self.interval_min_secs
            && self.interval_min_secs <= self.interval_max_secs
            && self.interval_max_secs <= self.max_interval_secs)
        {
            return Err(bad(
                "need min_interval_secs <= interval_min_secs <= interval_max_secs <= max_interval_secs",
            ));
        }
        if self.backoff_base_secs == 0 || self.backoff_base_secs > self.backoff_cap_secs {
            return Err(bad("need 1 <= backoff_base_secs <= backoff_cap_secs"));
        }
        if self.max_catalog_pages == 0 {
            return Err(bad("max_catalog_pages must be at least 1"));
        }
        Ok(())
    }
}

/// The kind of upload the next request carries (a pending forget goes first
/// whatever this says; the store decides that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// Changes since the node's acknowledged version.
    Delta,
    /// Everything again, after `ResyncRequired`.
    Snapshot,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The node accepted the sync.
    Accepted {
        /// The node's wish for the next sync, in seconds.
        next_sync_secs: u32,
        /// The answer's catalog page said more pages follow.
        catalog_more: bool,
    },
    /// `RetryAfter{secs}`.
    RetryAfter {
        /// The node's wish, in seconds.
        secs: u32,
    },
    /// `ResyncRequired`.
    ResyncRequired,
    /// No node answered: every address failed, a transport error, a timeout
    /// or an undecodable answer.
    Unreachable,
    /// Any other typed refusal.
    Refused,
}

/// The next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// When (the caller's clock, milliseconds).
    pub at_ms: u64,
    /// What the request carries.
    pub kind: UploadKind,
}

/// The sync schedule. See the module docs.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: ScheduleConfig,
    next: Next,
    /// Consecutive failed attempts (unreachable or refused).
    failures: u32,
    /// Exchanges in the current catalog-paging run.
    pages: u32,
    /// When snapshots were sent (the last 24 h, at most the cap).
    snapshots: VecDeque<u64>,
    snapshots_refused: u64,
}

fn secs(s: u64) -> u64 {
    s.saturating_mul(1000)
}

impl Schedule {
    /// A schedule whose first attempt is a delta at a random time in
    /// `[now, now + interval_min]` (TVs switched on together do not sync
    /// together). `cfg` should have passed [`ScheduleConfig::validate`]; a
    /// `max_catalog_pages` of 0 counts as 1.
    pub fn new(cfg: ScheduleConfig, now_ms: u64, rng: &mut impl Rng) -> Self {
        let first = rng.random_range(0..=secs(cfg.interval_min_secs));
        Self {
            cfg,
            next: Next {
                at_ms: now_ms.saturating_add(first),
                kind: UploadKind::Delta,
            },
            failures: 0,
            pages: 0,
            snapshots: VecDeque::new(),
            snapshots_refused: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ScheduleConfig {
        &self.cfg
    }

    /// The next attempt as planned.
    pub fn next(&self) -> Next {
        self.next
    }

    /// Whether the next attempt is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        now_ms >= self.next.at_ms
    }

    fn prune(&mut self, now_ms: u64) {
        while self
            .snapshots
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) >= DAY_MS)
        {
            self.snapshots.pop_front();
        }
    }

    /// Snapshots sent in the 24 hours before `now_ms`.
    pub fn snapshots_today(&mut self, now_ms: u64) -> usize {
        self.prune(now_ms);
        self.snapshots.len()
    }

    /// `ResyncRequired` answers that did not lead to a snapshot because the
    /// daily cap was reached.
    pub fn snapshots_refused(&self) -> u64 {
        self.snapshots_refused
    }

    fn snapshot_allowed(&mut self, now_ms: u64) -> bool {
        self.prune(now_ms);
        self.snapshots.len() < self.cfg.max_snapshots_per_day as usize
    }

    /// An attempt starts at `now_ms` (scheduled or asked for): returns the
    /// kind to send. A snapshot past the daily cap becomes a delta (and
    /// counts as refused); a snapshot sent is recorded against the cap.
    pub fn begin(&mut self, now_ms: u64) -> UploadKind {
        let mut kind = self.next.kind;
        if kind == UploadKind::Snapshot {
            if self.snapshot_allowed(now_ms) {
                self.snapshots.push_back(now_ms);
            } else {
                self.snapshots_refused += 1;
                kind = UploadKind::Delta;
                self.next.kind = UploadKind::Delta;
            }
        }
        kind
    }

    /// The TV's own randomized interval.
    fn own_interval(&self, rng: &mut impl Rng) -> u64 {
        rng.random_range(secs(self.cfg.interval_min_secs)..=secs(self.cfg.interval_max_secs))
    }

    /// A delay the node asked for, inside the TV's bounds.
    fn bounded(&self, node_secs: u32) -> u64 {
        secs(u64::from(node_secs)).clamp(
            secs(self.cfg.min_interval_secs),
            secs(self.cfg.max_interval_secs),
        )
    }

    /// Exponential backoff with full jitter after `self.failures` failures.
    fn backoff(&self, rng: &mut impl Rng) -> u64 {
        let exp = self.failures.saturating_sub(1).min(32);
        let step = secs(self.cfg.backoff_base_secs)
            .saturating_mul(1u64 << exp)
            .min(secs(self.cfg.backoff_cap_secs));
        rng.random_range(0..=step).max(MIN_BACKOFF_MS)
    }

    /// Records how the attempt begun with [`Self::begin`] (which sent `sent`)
    /// ended at `now_ms`; returns the next attempt.
    pub fn on_outcome(
        &mut self,
        sent: UploadKind,
        outcome: Outcome,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Next {
        let (delay, kind) = match outcome {
            Outcome::Accepted {
                next_sync_secs,
                catalog_more,
            } => {
                self.failures = 0;
                self.pages += 1;
                if catalog_more && self.pages < self.cfg.max_catalog_pages {
                    (0, UploadKind::Delta)
                } else {
                    self.pages = 0;
                    (self.bounded(next_sync_secs), UploadKind::Delta)
                }
            }
            Outcome::RetryAfter { secs } => {
                self.failures = 0;
                self.pages = 0;
                (self.bounded(secs), sent)
            }
            Outcome::ResyncRequired => {
                self.failures = 0;
                self.pages = 0;
                if self.snapshot_allowed(now_ms) {
                    (secs(self.cfg.min_interval_secs), UploadKind::Snapshot)
                } else {
                    self.snapshots_refused += 1;
                    (self.own_interval(rng), UploadKind::Delta)
                }
            }
            Outcome::Unreachable => {
                self.failures = self.failures.saturating_add(1);
                self.pages = 0;
                (self.backoff(rng), sent)
            }
            Outcome::Refused => {
                self.failures = self.failures.saturating_add(1);
                self.pages = 0;
                (
                    self.backoff(rng).max(secs(self.cfg.min_interval_secs)),
                    sent,
                )
            }
        };
        self.next = Next {
            at_ms: now_ms.saturating_add(delay),
            kind,
        };
        self.next
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const S: u64 = 1000;

    fn cfg() -> ScheduleConfig {
        ScheduleConfig::default()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn accepted(next: u32, more: bool) -> Outcome {
        Outcome::Accepted {
            next_sync_secs: next,
            catalog_more: more,
        }
    }

    #[test]
    fn validation_orders_the_bounds() {
        assert!(cfg().validate().is_ok());
        for broken in [
            ScheduleConfig {
                min_interval_secs: 0,
                ..cfg()
            },
            ScheduleConfig {
                interval_min_secs: 30,
                ..cfg()
            },
            ScheduleConfig {
                interval_max_secs: 200,
                ..cfg()
            },
            ScheduleConfig {
                max_interval_secs: 600,
                ..cfg()
            },
            ScheduleConfig {
                backoff_base_secs: 0,
                ..cfg()
            },
            ScheduleConfig {
                backoff_cap_secs: 5,
                ..cfg()
            },
            ScheduleConfig {
                max_catalog_pages: 0,
                ..cfg()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn the_first_attempt_is_a_delta_within_the_own_interval() {
        let mut r = rng();
        for _ in 0..200 {
            let s = Schedule::new(cfg(), 1_000, &mut r);
            assert_eq!(s.next().kind, UploadKind::Delta);
            assert!((1_000..=1_000 + 300 * S).contains(&s.next().at_ms));
            assert!(s.due(1_000 + 300 * S) && !s.due(999));
        }
    }

    #[test]
    fn next_sync_secs_and_retry_after_are_clamped() {
        let mut r = rng();
        let mut s = Schedule::new(cfg(), 0, &mut r);
        for (node, want) in [(0, 60), (1, 60), (59, 60), (600, 600), (3600, 3600)] {
            let n = s.on_outcome(UploadKind::Delta, accepted(node, false), 0, &mut r);
            assert_eq!(n.at_ms, want * S, "next_sync_secs {node}");
            let n = s.on_outcome(
                UploadKind::Delta,
                Outcome::RetryAfter { secs: node },
                0,
                &mut r,
            );
            assert_eq!(n.at_ms, want * S, "retry after {node}");
        }
        let n = s.on_outcome(UploadKind::Delta, accepted(u32::MAX, false), 5, &mut r);
        assert_eq!(n.at_ms, 5 + 3600 * S);
        // RetryAfter keeps the kind that was refused.
        let n = s.on_outcome(
            UploadKind::Snapshot,
            Outcome::RetryAfter { secs: 0 },
            0,
            &mut r,
        );
        assert_eq!(n.kind, UploadKind::Snapshot);
    }

    #[test]
    fn resync_leads_to_a_snapshot_within_the_daily_cap() {
        let mut r = rng();
        let c = ScheduleConfig {
            max_snapshots_per_day: 2,
            ..cfg()
        };
        let mut s = Schedule::new(c, 0, &mut r);
        let mut now = 0;
        let mut sent = Vec::new();
        for _ in 0..10 {
            now = now.max(s.next().at_ms);
            let kind = s.begin(now);
            sent.push(kind);
            s.on_outcome(kind, Outcome::ResyncRequired, now, &mut r);
        }
        let snaps = sent.iter().filter(|k| **k == UploadKind::Snapshot).count();
        assert_eq!(snaps, 2, "{sent:?}");
        assert!(s.snapshots_refused() >= 1);
        assert_eq!(s.snapshots_today(now), 2);
        // Past the cap: a delta at the TV's own interval.
        let n = s.on_outcome(UploadKind::Delta, Outcome::ResyncRequired, now, &mut r);
        assert_eq!(n.kind, UploadKind::Delta);
        assert!(n.at_ms >= now + 300 * S && n.at_ms <= now + 900 * S);
        // A day after the first snapshot, one is allowed again.
        assert_eq!(s.snapshots_today(now + DAY_MS), 0);
        let n = s.on_outcome(
            UploadKind::Delta,
            Outcome::ResyncRequired,
            now + DAY_MS,
            &mut r,
        );
        assert_eq!(n.kind, UploadKind::Snapshot);
        assert_eq!(n.at_ms, now + DAY_MS + 60 * S);
    }

    #[test]
    fn begin_downgrades_a_snapshot_past_the_cap() {
        let mut r = rng();
        let c = ScheduleConfig {
            max_snapshots_per_day: 1,
            ..cfg()
        };
        let mut s = Schedule::new(c, 0, &mut r);
        s.on_outcome(UploadKind::Delta, Outcome::ResyncRequired, 0, &mut r);
        assert_eq!(s.begin(60 * S), UploadKind::Snapshot);
        // The snapshot attempt failed in transit: retried as a snapshot ...
        let n = s.on_outcome(UploadKind::Snapshot, Outcome::Unreachable, 61 * S, &mut r);
        assert_eq!(n.kind, UploadKind::Snapshot);
        // ... but the cap is spent: it goes as a delta.
        assert_eq!(s.begin(n.at_ms), UploadKind::Delta);
        assert_eq!(s.snapshots_refused(), 1);
        assert_eq!(s.snapshots_today(n.at_ms), 1);
    }

    #[test]
    fn unreachable_backs_off_exponentially_with_full_jitter() {
        let c = ScheduleConfig {
            backoff_base_secs: 10,
            backoff_cap_secs: 80,
            ..cfg()
        };
        let mut r = rng();
        let mut s = Schedule::new(c, 0, &mut r);
        let mut maxima = [0u64; 6];
        let mut minima = [u64::MAX; 6];
        for _ in 0..300 {
            for i in 0..6 {
                let n = s.on_outcome(UploadKind::Delta, Outcome::Unreachable, 0, &mut r);
                maxima[i] = maxima[i].max(n.at_ms);
                minima[i] = minima[i].min(n.at_ms);
            }
            s.on_outcome(UploadKind::Delta, accepted(600, false), 0, &mut r);
        }
        // Steps 10, 20, 40, 80, 80, 80 s: every draw within the step and at
        // least a second; the jitter reaches most of the range.
        for (i, step) in [10u64, 20, 40, 80, 80, 80].into_iter().enumerate() {
            assert!(maxima[i] <= step * S, "step {i}: {}", maxima[i]);
            assert!(maxima[i] > step * S * 3 / 4, "step {i}: {}", maxima[i]);
            assert!(minima[i] >= MIN_BACKOFF_MS);
            assert!(minima[i] < step * S / 4, "step {i}: {}", minima[i]);
        }
        // Success resets the backoff.
        s.on_outcome(UploadKind::Delta, Outcome::Unreachable, 0, &mut r);
        s.on_outcome(UploadKind::Delta, accepted(600, false), 0, &mut r);
        let n = s.on_outcome(UploadKind::Delta, Outcome::Unreachable, 0, &mut r);
        assert!(n.at_ms <= 10 * S);
    }

    #[test]
    fn refusals_back_off_but_never_below_the_minimum_interval() {
        let mut r = rng();
        let mut s = Schedule::new(cfg(), 0, &mut r);
        for _ in 0..50 {
            let n = s.on_outcome(UploadKind::Delta, Outcome::Refused, 0, &mut r);
            assert!(n.at_ms >= 60 * S && n.at_ms <= 1800 * S);
        }
    }

    #[test]
    fn catalog_paging_is_immediate_for_a_bounded_number_of_pages() {
        let mut r = rng();
        let c = ScheduleConfig {
            max_catalog_pages: 3,
            ..cfg()
        };
        let mut s = Schedule::new(c, 0, &mut r);
        let mut immediate = 0;
        for _ in 0..10 {
            let n = s.on_outcome(UploadKind::Delta, accepted(0, true), 1_000, &mut r);
            if n.at_ms == 1_000 {
                immediate += 1;
            } else {
                assert_eq!(n.at_ms, 1_000 + 60 * S);
                break;
            }
        }
        assert_eq!(immediate, 2, "3 exchanges per cycle: 2 continuations");
        // The next cycle pages again.
        let n = s.on_outcome(UploadKind::Delta, accepted(0, true), 2_000, &mut r);
        assert_eq!(n.at_ms, 2_000);
        // A page without `more` ends the run.
        let n = s.on_outcome(UploadKind::Delta, accepted(300, false), 3_000, &mut r);
        assert_eq!(n.at_ms, 3_000 + 300 * S);
    }

    /// Drives a schedule against a node that answers `outcome(i)` to the i-th
    /// attempt, each at its planned time, over `window_ms`; returns the
    /// attempt times and kinds.
    fn drive(
        c: ScheduleConfig,
        seed: u64,
        window_ms: u64,
        mut outcome: impl FnMut(usize) -> Outcome,
    ) -> Vec<(u64, UploadKind)> {
        let mut r = StdRng::seed_from_u64(seed);
        let mut s = Schedule::new(c, 0, &mut r);
        let mut out = Vec::new();
        loop {
            let now = s.next().at_ms;
            if now > window_ms {
                return out;
            }
            let kind = s.begin(now);
            out.push((now, kind));
            s.on_outcome(kind, outcome(out.len() - 1), now, &mut r);
        }
    }

    proptest! {
        /// A node answering `next_sync_secs = 0` or `RetryAfter 0` or
        /// `ResyncRequired` (no catalog `more`), in any mix, cannot make the
        /// TV sync more often than the minimum interval nor snapshot more than
        /// the daily cap (per 24 h window).
        #[test]
        fn a_malicious_node_cannot_speed_up_the_tv(
            seed in any::<u64>(),
            answers in prop::collection::vec(0u8..3, 1..64),
            min_interval in 1u64..120,
            cap in 0u32..6,
            days in 1u64..3,
        ) {
            let c = ScheduleConfig {
                min_interval_secs: min_interval,
                interval_min_secs: min_interval.max(300),
                interval_max_secs: min_interval.max(900),
                max_snapshots_per_day: cap,
                ..cfg()
            };
            let window = days * DAY_MS;
            let attempts = drive(c, seed, window, |i| match answers[i % answers.len()] {
                0 => accepted(0, false),
                1 => Outcome::RetryAfter { secs: 0 },
                _ => Outcome::ResyncRequired,
            });
            for w in attempts.windows(2) {
                prop_assert!(w[1].0 - w[0].0 >= min_interval * S, "{:?}", w);
            }
            prop_assert!(attempts.len() as u64 <= window / (min_interval * S) + 1);
            let snaps: Vec<u64> = attempts
                .iter()
                .filter(|a| a.1 == UploadKind::Snapshot)
                .map(|a| a.0)
                .collect();
            for (i, t) in snaps.iter().enumerate() {
                let in_day = snaps[i..].iter().take_while(|u| **u < t + DAY_MS).count();
                prop_assert!(in_day <= cap as usize, "{} snapshots within a day of {}", in_day, t);
            }
        }

        /// Whatever the node answers, the next attempt is never later than the
        /// largest bound (max interval or backoff cap).
        #[test]
        fn the_tv_never_waits_past_its_bounds(
            seed in any::<u64>(),
            answers in prop::collection::vec((0u8..5, any::<u32>(), any::<bool>()), 1..64),
        ) {
            let c = cfg();
            let mut r = StdRng::seed_from_u64(seed);
            let mut s = Schedule::new(c, 0, &mut r);
            let mut now = 0;
            for (a, n, more) in answers {
                let kind = s.begin(now);
                let o = match a {
                    0 => accepted(n, more),
                    1 => Outcome::RetryAfter { secs: n },
                    2 => Outcome::ResyncRequired,
                    3 => Outcome::Unreachable,
                    _ => Outcome::Refused,
                };
                let next = s.on_outcome(kind, o, now, &mut r);
                let limit = c.max_interval_secs.max(c.backoff_cap_secs) * S;
                prop_assert!(next.at_ms >= now && next.at_ms - now <= limit);
                now = next.at_ms;
            }
        }
    }

    #[test]
    fn next_sync_zero_and_resync_every_time_is_bounded() {
        // The plain-value form of the property above: 1 s minimum interval,
        // 2 snapshots a day, one simulated hour.
        let c = ScheduleConfig {
            min_interval_secs: 1,
            interval_min_secs: 1,
            interval_max_secs: 2,
            max_snapshots_per_day: 2,
            ..cfg()
        };
        let attempts = drive(c, 1, 3600 * S, |i| {
            if i % 2 == 0 {
                accepted(0, false)
            } else {
                Outcome::ResyncRequired
            }
        });
        assert!(attempts.len() <= 3601, "{}", attempts.len());
        assert!(
            attempts.len() > 1000,
            "the TV still syncs: {}",
            attempts.len()
        );
        let snaps = attempts
            .iter()
            .filter(|a| a.1 == UploadKind::Snapshot)
            .count();
        assert_eq!(snaps, 2);
    }
}
