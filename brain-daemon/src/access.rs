//! Who may do what on the socket: a role per connection from the peer's
//! credentials (`SO_PEERCRED`, read once when the connection is accepted),
//! the role each op needs, and the per-connection `observe` rate limit.
//!
//! | role | ops |
//! | --- | --- |
//! | `app` | `recommend`, `observe`, `stats`, `health` |
//! | `system` | all of `app`'s, and `history`, `forget`, `catalog.upsert`, `catalog.import`, `sync.now` (and the `debug.*` ops of a test build) |
//! | none | nothing: every request is answered `forbidden` |
//!
//! A peer's role ([`AccessPolicy::role`]), first match wins:
//! 1. its uid in `[access] system_uids` or `app_uids`;
//! 2. its gid (the primary group `SO_PEERCRED` reports; supplementary groups
//!    are not seen) in `system_gids` or `app_gids`;
//! 3. the daemon's own effective uid, and root: `system`;
//! 4. anyone else: none.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{ProtoError, Request};

/// What a connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Nothing.
    None,
    /// Recommendations, observes, stats, health.
    App,
    /// Everything.
    System,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::App => "app",
            Role::System => "system",
        }
    }
}

/// The uid and gid lists of `[access]` and the daemon's own uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Uids with every op.
    pub system_uids: BTreeSet<u32>,
    /// Uids with the app ops.
    pub app_uids: BTreeSet<u32>,
    /// Gids with every op.
    pub system_gids: BTreeSet<u32>,
    /// Gids with the app ops.
    pub app_gids: BTreeSet<u32>,
    /// The daemon's effective uid (system unless listed otherwise).
    pub own_uid: u32,
}

impl AccessPolicy {
    /// The role of a peer with this uid and gid (see the module docs).
    pub fn role(&self, uid: u32, gid: u32) -> Role {
        if self.system_uids.contains(&uid) {
            Role::System
        } else if self.app_uids.contains(&uid) {
            Role::App
        } else if self.system_gids.contains(&gid) {
            Role::System
        } else if self.app_gids.contains(&gid) {
            Role::App
        } else if uid == self.own_uid || uid == 0 {
            Role::System
        } else {
            Role::None
        }
    }
}

/// The least role `req` needs.
pub fn needed(req: &Request) -> Role {
    match req {
        Request::Recommend(_) | Request::Observe { .. } | Request::Stats | Request::Health => {
            Role::App
        }
        _ => Role::System,
    }
}

/// `Ok` when `role` may run `req`, else the `forbidden` error to answer.
pub fn check(role: Role, req: &Request, peer: &str) -> Result<(), ProtoError> {
    let need = needed(req);
    if role >= need {
        Ok(())
    } else {
        Err(ProtoError::new(
            "forbidden",
            format!(
                "this op needs the {} role; this connection ({peer}) has {}",
                need.name(),
                role.name()
            ),
        ))
    }
}

/// A token bucket: `burst` observes at once, refilled at `per_sec`.
#[derive(Debug, Clone)]
pub struct ObserveBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl ObserveBucket {
    /// A full bucket.
    pub fn new(per_sec: f64, burst: u32, now: Instant) -> Self {
        Self {
            per_sec,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Takes one token at `now`; past the limit the `rate_limited` error.
    pub fn take(&mut self, now: Instant) -> Result<(), ProtoError> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec);
            Err(ProtoError::new(
                "rate_limited",
                format!(
                    "at most {} observes per second per connection (burst {}); retry in {} ms",
                    self.per_sec,
                    self.burst,
                    wait.as_millis().max(1)
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy {
            system_uids: [1001].into(),
            app_uids: [1002, 500].into(),
            system_gids: [2001].into(),
            app_gids: [2002].into(),
            own_uid: 500,
        }
    }

    #[test]
    fn roles_come_from_uids_then_gids_then_the_defaults() {
        let p = policy();
        assert_eq!(p.role(1001, 2002), Role::System, "uid before gid");
        assert_eq!(p.role(1002, 2001), Role::App, "uid before gid");
        assert_eq!(p.role(3000, 2001), Role::System);
        assert_eq!(p.role(3000, 2002), Role::App);
        assert_eq!(p.role(0, 0), Role::System, "root");
        assert_eq!(
            p.role(500, 500),
            Role::App,
            "the own uid listed as app is app"
        );
        assert_eq!(p.role(3000, 3000), Role::None);
        let mut d = p.clone();
        d.app_uids.clear();
        assert_eq!(d.role(500, 500), Role::System, "the own uid by default");
    }

    fn req(line: &str) -> Request {
        crate::protocol::parse(line.as_bytes(), 1_700_000_000)
            .1
            .unwrap()
    }

    #[test]
    fn ops_need_their_role() {
        let app = [
            r#"{"op":"stats"}"#,
            r#"{"op":"health"}"#,
            r#"{"op":"recommend"}"#,
            r#"{"op":"observe","content_id":"a","fraction":0.5}"#,
        ];
        let system = [
            r#"{"op":"forget"}"#,
            r#"{"op":"history"}"#,
            r#"{"op":"sync.now"}"#,
            r#"{"op":"catalog.upsert","items":[]}"#,
            r#"{"op":"catalog.import","lines":""}"#,
            r#"{"op":"catalog.import","path":"x"}"#,
        ];
        for line in app {
            let r = req(line);
            assert!(check(Role::App, &r, "uid 1").is_ok(), "{line}");
            assert_eq!(
                check(Role::None, &r, "uid 1").unwrap_err().code,
                "forbidden"
            );
        }
        for line in system {
            let r = req(line);
            assert!(check(Role::System, &r, "uid 1").is_ok(), "{line}");
            let e = check(Role::App, &r, "uid 1").unwrap_err();
            assert_eq!(e.code, "forbidden", "{line}");
            assert!(e.message.contains("system"), "{}", e.message);
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills() {
        let t0 = Instant::now();
        let mut b = ObserveBucket::new(2.0, 3, t0);
        for _ in 0..3 {
            b.take(t0).unwrap();
        }
        assert_eq!(b.take(t0).unwrap_err().code, "rate_limited");
        b.take(t0 + Duration::from_millis(500)).unwrap();
        assert!(b.take(t0 + Duration::from_millis(500)).is_err());
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            b.take(later).unwrap();
        }
        assert!(b.take(later).is_err());
    }
}
