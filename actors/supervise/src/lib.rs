//! omega-supervise: the supervision pieces that the TV's actor tree
//! (omega-brain) and the node's (omega-constellation) share.
//!
//! * [`RestartPolicy`]: the restart policy as data (a backoff and an optional
//!   budget), and [`RestartTracker`], the sans-IO bookkeeping that turns a
//!   child's failure at `now` into a [`RestartDecision`]. A supervisor's
//!   `handle_supervisor_evt` asks the tracker and acts on the answer.
//! * [`failure`]: what a [`SupervisionEvent`] says about a child that must be
//!   replaced (failed, or stopped by itself), in one place.
//! * [`Slot`]: a typed, shared place for one child's [`ActorRef`] (the route
//!   table both trees keep): the supervisor fills it on spawn and empties it
//!   when the child dies, callers take a clone or fail fast while it is empty.
//! * [`blocking`]: runs blocking work (redb, candle, a sync) on tokio's
//!   blocking pool with state taken out of the actor and put back, so the
//!   actor's task never blocks and a panic there stays the actor's panic.
//! * [`log`]: how the daemons log (stderr, text or JSON, colour only on a
//!   terminal).

pub mod log;

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use ractor::{ActorCell, ActorRef, SupervisionEvent};

/// Exponential backoff between restarts of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay (zero: restart at once).
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// A child quiet for this long since its last failure starts again at
    /// `initial`.
    pub reset_after: Duration,
}

impl Backoff {
    /// No delay at all: every restart happens at once.
    pub const IMMEDIATE: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        reset_after: Duration::ZERO,
    };
}

/// A bound on restarts across all children of one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBudget {
    /// Restarts allowed within `window`; one more gives up.
    pub max_restarts: usize,
    /// The sliding window.
    pub window: Duration,
}

/// How a supervisor restarts its children: one-for-one, with a backoff per
/// child and, optionally, a budget across children past which it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before each restart.
    pub backoff: Backoff,
    /// `None`: restart forever.
    pub budget: Option<RestartBudget>,
}

/// What a supervisor does about one failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this delay (zero: now).
    RestartAfter(Duration),
    /// The budget is spent: stop supervising (the caller stops its children
    /// and itself; the process reports not ready).
    GiveUp,
}

#[derive(Debug, Clone, Copy, Default)]
struct ChildBackoff {
    next: Option<Duration>,
    last_failure: Option<Instant>,
}

/// Restart bookkeeping of one supervisor (sans-IO: time comes in as `now`).
///
/// Memory is bounded by the number of distinct child keys (a supervisor has a
/// fixed set of children) plus `budget.max_restarts` timestamps.
#[derive(Debug)]
pub struct RestartTracker<K> {
    policy: RestartPolicy,
    children: HashMap<K, ChildBackoff>,
    recent: VecDeque<Instant>,
}

impl<K: Eq + Hash + Copy> RestartTracker<K> {
    /// A tracker applying `policy`.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            children: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// The policy applied.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Records that `child` failed at `now` and says what to do. The delay
    /// starts at `initial`, doubles per consecutive failure up to `max`, and
    /// resets once the child has been quiet for `reset_after`. Past the
    /// budget, the answer is [`RestartDecision::GiveUp`] (and stays so while
    /// the window is full).
    pub fn on_failure(&mut self, child: K, now: Instant) -> RestartDecision {
        if let Some(budget) = self.policy.budget {
            while self
                .recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > budget.window)
            {
                self.recent.pop_front();
            }
            if self.recent.len() >= budget.max_restarts {
                return RestartDecision::GiveUp;
            }
            self.recent.push_back(now);
        }
        let b = self.policy.backoff;
        let c = self.children.entry(child).or_default();
        let quiet = c
            .last_failure
            .is_none_or(|t| now.saturating_duration_since(t) >= b.reset_after);
        let delay = match (quiet, c.next) {
            (false, Some(d)) => d,
            _ => b.initial,
        };
        c.next = Some(delay.saturating_mul(2).min(b.max));
        c.last_failure = Some(now);
        RestartDecision::RestartAfter(delay)
    }
}

/// The child a supervision event asks to replace, with a reason for the log:
/// `ActorFailed` (a handler returned an error or panicked) and
/// `ActorTerminated` (it stopped by itself). Other events need nothing.
pub fn failure(evt: &SupervisionEvent) -> Option<(ActorCell, String)> {
    match evt {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell.clone(), format!("failed: {err}"))),
        SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.clone(),
            format!("stopped: {}", reason.as_deref().unwrap_or("no reason")),
        )),
        _ => None,
    }
}

/// A shared place for one child's [`ActorRef`]; clones share it.
///
/// Empty while the child is down, so callers fail fast instead of queueing.
#[derive(Debug)]
pub struct Slot<M>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M> Default for Slot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M> Slot<M> {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current child, if it is up.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().clone()
    }

    /// Records a (re)spawned child.
    pub fn set(&self, actor: ActorRef<M>) {
        *self.0.write() = Some(actor);
    }

    /// Empties the slot (the child died or is being stopped); returns what
    /// was there.
    pub fn clear(&self) -> Option<ActorRef<M>> {
        self.0.write().take()
    }

    /// Whether a child is in the slot.
    pub fn is_up(&self) -> bool {
        self.0.read().is_some()
    }
}

/// Why [`blocking`] could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// The state was not there: an earlier blocking task did not return it
    /// (it can only happen after a cancelled call).
    #[error("the actor's {0} is gone (an earlier blocking task did not return it)")]
    Lost(&'static str),
    /// The blocking task was cancelled (the runtime is shutting down).
    #[error("blocking task cancelled: {0}")]
    Cancelled(String),
}

/// Takes the state out of `slot`, runs `f` on it on tokio's blocking pool,
/// puts it back and returns `f`'s result. A panic inside `f` resumes on the
/// caller's task, so it fails the actor like a panic in its handler would
/// (and the supervisor restarts it with fresh state). `what` names the state
/// in errors.
pub async fn blocking<T, R>(
    slot: &mut Option<T>,
    what: &'static str,
    f: impl FnOnce(&mut T) -> R + Send + 'static,
) -> Result<R, BlockingError>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let mut state = slot.take().ok_or(BlockingError::Lost(what))?;
    let joined = tokio::task::spawn_blocking(move || {
        let r = f(&mut state);
        (state, r)
    })
    .await;
    match joined {
        Ok((state, r)) => {
            *slot = Some(state);
            Ok(r)
        }
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(BlockingError::Cancelled(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_per_child_and_resets_after_quiet() {
        let mut t = RestartTracker::new(RestartPolicy {
            backoff: backoff(),
            budget: None,
        });
        let t0 = Instant::now();
        let ms = |n| RestartDecision::RestartAfter(Duration::from_millis(n));
        assert_eq!(t.on_failure('a', t0), ms(100));
        assert_eq!(t.on_failure('a', t0 + Duration::from_secs(1)), ms(200));
        assert_eq!(t.on_failure('a', t0 + Duration::from_secs(2)), ms(400));
        assert_eq!(t.on_failure('a', t0 + Duration::from_secs(3)), ms(400));
        // Another child has its own backoff.
        assert_eq!(t.on_failure('b', t0 + Duration::from_secs(3)), ms(100));
        // Quiet for reset_after: back to the start.
        assert_eq!(t.on_failure('a', t0 + Duration::from_secs(63)), ms(100));
    }

    #[test]
    fn the_budget_gives_up_past_its_window_count() {
        let mut t = RestartTracker::new(RestartPolicy {
            backoff: Backoff::IMMEDIATE,
            budget: Some(RestartBudget {
                max_restarts: 2,
                window: Duration::from_secs(10),
            }),
        });
        let t0 = Instant::now();
        let now = RestartDecision::RestartAfter(Duration::ZERO);
        assert_eq!(t.on_failure(1, t0), now);
        assert_eq!(t.on_failure(2, t0 + Duration::from_secs(1)), now);
        assert_eq!(
            t.on_failure(1, t0 + Duration::from_secs(2)),
            RestartDecision::GiveUp
        );
        // Once the window has slid past the first restarts, restarts resume.
        assert_eq!(t.on_failure(1, t0 + Duration::from_secs(12)), now);
    }

    #[tokio::test]
    async fn blocking_puts_the_state_back_and_reports_a_lost_one() {
        let mut slot = Some(vec![1, 2]);
        let n = blocking(&mut slot, "list", |v| {
            v.push(3);
            v.len()
        })
        .await
        .expect("ran");
        assert_eq!(n, 3);
        assert_eq!(slot.as_deref(), Some(&[1, 2, 3][..]));
        let mut empty: Option<Vec<i32>> = None;
        let err = blocking(&mut empty, "list", |v| v.len()).await;
        assert!(matches!(err, Err(BlockingError::Lost("list"))));
    }

    struct Echo;

    impl ractor::Actor for Echo {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(
            &self,
            _: ActorRef<()>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_slot_is_shared_by_its_clones_and_empties_on_clear() {
        let slot: Slot<()> = Slot::new();
        let seen_by_caller = slot.clone();
        assert!(seen_by_caller.get().is_none());
        let (actor, handle) = ractor::Actor::spawn(None, Echo, ()).await.expect("spawn");
        slot.set(actor.clone());
        assert!(seen_by_caller.is_up());
        assert_eq!(
            seen_by_caller.get().map(|a| a.get_id()),
            Some(actor.get_id())
        );
        assert_eq!(slot.clear().map(|a| a.get_id()), Some(actor.get_id()));
        assert!(seen_by_caller.get().is_none());
        actor.stop(None);
        handle.await.expect("stopped");
    }

    #[tokio::test]
    async fn a_panic_in_blocking_work_resumes_on_the_caller() {
        let task = tokio::spawn(async {
            let mut slot = Some(0u8);
            let _ = blocking(&mut slot, "n", |_| -> u8 { panic!("boom") }).await;
        });
        let err = task.await.expect_err("the panic reaches the caller's task");
        assert!(err.is_panic());
    }
}
