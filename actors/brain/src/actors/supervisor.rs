//! The root supervisor: starts the children linked to it and restarts any that
//! fails, with exponential backoff; it never stops because a child failed.
//!
//! Restart policy ([`RestartPolicy`], written out in `handle_supervisor_evt`):
//! * a child that fails (panic or error in a handler: `ActorFailed`) or stops
//!   while the brain is not shutting down (`ActorTerminated`) is restarted;
//! * the delay starts at `initial` (100 ms) and doubles per consecutive
//!   failure up to `max` (5 s); a child that stayed up for `reset_after`
//!   (60 s) since its last failure starts again from `initial`;
//! * a restart that fails (e.g. redb cannot be opened) counts as a failure and
//!   is retried with the next delay, forever: the daemon keeps answering what
//!   it can (a `recommend` needs no actor, only the last view of the state).
//!
//! While a child is down its slot in the shared handles is empty, so calls to
//! it fail fast with `Unavailable` rather than queueing.
//!
//! Sync is one more [`Child`], started only when a node is configured; the
//! policy applies to it as is (a Sync that cannot read its certificates fails
//! its start and is retried with the backoff). At shutdown it stops first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use omega_supervise::{failure, Backoff, RestartDecision, RestartTracker, Slot};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::inference::Inference;
use super::memory::Memory;
use super::sync::SyncActor;
use super::{slot, ChildKind, Shared};

/// Backoff of restarts (omega-supervise's [`Backoff`]; the brain restarts
/// forever, without a budget). Default: 100 ms doubling to 5 s, reset after a
/// quiet minute.
pub type RestartPolicy = Backoff;

/// The brain's default backoff.
pub const DEFAULT_RESTART: RestartPolicy = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
    reset_after: Duration::from_secs(60),
};

/// The supervised children.
pub(crate) type Child = ChildKind;

/// Supervisor messages.
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Restart a child (sent to itself after the backoff delay).
    Restart(Child),
    /// Stop the children in order, then reply.
    Shutdown(RpcReplyPort<()>),
}

pub(crate) struct Supervisor;

pub(crate) struct SupervisorState {
    shared: Arc<Shared>,
    children: Vec<(ractor::ActorCell, Child)>,
    restarts: RestartTracker<Child>,
    stopping: bool,
}

/// Spawns `actor` linked to `sup` and puts its handle in `slot`.
async fn spawn_into<A>(
    actor: A,
    sh: &Arc<Shared>,
    slot: &Slot<A::Msg>,
    sup: ractor::ActorCell,
) -> Result<ractor::ActorCell, String>
where
    A: Actor<Arguments = Arc<Shared>>,
{
    let (a, _) = Actor::spawn_linked(None, actor, sh.clone(), sup)
        .await
        .map_err(|e| e.to_string())?;
    let id = a.get_cell();
    slot.set(a);
    Ok(id)
}

impl SupervisorState {
    async fn spawn_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        kind: Child,
    ) -> Result<(), String> {
        let sup = myself.get_cell();
        let sh = self.shared.clone();
        let id = match kind {
            ChildKind::Inference => spawn_into(Inference, &sh, &sh.inference, sup).await?,
            ChildKind::Memory => spawn_into(Memory, &sh, &sh.memory, sup).await?,
            ChildKind::Sync => spawn_into(SyncActor, &sh, &sh.sync, sup).await?,
        };
        self.children.retain(|(_, k)| *k != kind);
        self.children.push((id, kind));
        Ok(())
    }

    /// Records a failure and schedules the restart after the backoff delay.
    fn schedule_restart(&mut self, myself: &ActorRef<SupervisorMsg>, kind: Child, why: String) {
        // No budget: the tracker always answers RestartAfter.
        let delay = match self.restarts.on_failure(kind, Instant::now()) {
            RestartDecision::RestartAfter(d) => d,
            RestartDecision::GiveUp => self.restarts.policy().backoff.max,
        };
        {
            let mut st = self.shared.status();
            st.restarts[slot(kind)] += 1;
            st.last_failure[slot(kind)] = Some(why.clone());
        }
        tracing::error!(child = kind.name(), delay_ms = delay.as_millis() as u64, reason = %why,
            "actor failed; restarting after backoff");
        myself.send_after(delay, move || SupervisorMsg::Restart(kind));
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut st = SupervisorState {
            shared: Arc::clone(&shared),
            children: Vec::new(),
            restarts: RestartTracker::new(omega_supervise::RestartPolicy {
                backoff: shared.cfg.restart,
                budget: None,
            }),
            stopping: false,
        };
        // Memory first: recommend's view of the state comes from it.
        for kind in ChildKind::ALL {
            if kind == ChildKind::Sync && shared.cfg.sync.is_none() {
                continue;
            }
            if let Err(e) = st.spawn_child(&myself, kind).await {
                st.schedule_restart(&myself, kind, format!("start failed: {e}"));
            }
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(kind) => {
                if st.stopping {
                    return Ok(());
                }
                tracing::info!(child = kind.name(), "restarting actor");
                if let Err(e) = st.spawn_child(&myself, kind).await {
                    st.schedule_restart(&myself, kind, format!("restart failed: {e}"));
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                st.stopping = true;
                // Front to back: no more syncs, no new embeddings, then
                // Memory (its mailbox drains first: accepted writes finish).
                for kind in [ChildKind::Sync, ChildKind::Inference, ChildKind::Memory] {
                    st.shared.clear(kind);
                    if let Some((cell, _)) = st.children.iter().find(|(_, k)| *k == kind) {
                        let _ = cell.drain_and_wait(Some(Duration::from_secs(10))).await;
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The restart policy. Never returns an error: a child's failure must
        // not stop the supervisor (that would take the daemon down).
        let Some((cell, why)) = failure(&evt) else {
            return Ok(());
        };
        let id = cell.get_id();
        let Some(pos) = st.children.iter().position(|(c, _)| c.get_id() == id) else {
            return Ok(()); // an old incarnation already replaced
        };
        let (_, kind) = st.children.remove(pos);
        st.shared.clear(kind);
        if st.stopping {
            return Ok(());
        }
        st.schedule_restart(&myself, kind, why);
        Ok(())
    }
}
