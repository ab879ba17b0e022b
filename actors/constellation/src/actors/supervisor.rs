//! The node supervisor: starts the shard, federation and catalog actors
//! linked to itself and restarts them when they fail.
//!
//! Restart policy (in [`NodeSupervisor::handle_supervisor_evt`]):
//!
//! * a child that fails (handler error or panic) or stops by itself is
//!   restarted at once, one-for-one, with fresh state built from its start-up
//!   arguments (the store holds everything durable; a shard loses only its
//!   in-memory rate limiter, a federation actor its last summary and timer,
//!   which is re-armed);
//! * while it is down, its route is empty: syncs for that shard get
//!   `RetryAfter`, triggers and imports get `Unavailable`;
//! * at most `max_restarts` restarts in any `restart_window`; one more means
//!   something is persistently wrong, so the supervisor logs, stops its
//!   children and itself, and the node reports not ready (an operator or the
//!   service manager restarts the process);
//! * during shutdown (the shared `stopping` flag) nothing is restarted.
//!
//! Every restart is logged with the child and the reason and counted in
//! `omega_actor_restarts_total{child}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use omega_supervise::{
    failure, Backoff, RestartBudget, RestartDecision, RestartPolicy, RestartTracker,
};
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::store::PatternStore;

use super::catalog::{CatalogActor, CatalogArgs};
use super::federation::{FederationActor, FederationArgs};
use super::shard::{ShardActor, ShardArgs};
use super::{names, NodeConfig, SharedRoutes, TextEmbedder};

/// The supervisor takes no messages besides supervision events.
#[derive(Debug)]
pub enum SupervisorMsg {}

/// Start-up arguments of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    pub(crate) store: Arc<dyn PatternStore>,
    pub(crate) embedder: Option<Arc<dyn TextEmbedder>>,
    pub(crate) config: NodeConfig,
    pub(crate) routes: SharedRoutes,
    pub(crate) stopping: Arc<AtomicBool>,
    pub(crate) restarts: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) learning: Option<Arc<parking_lot::Mutex<crate::sync::Learning>>>,
}

/// Which child an actor id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Child {
    Shard(u32),
    Federation,
    Catalog,
}

impl Child {
    fn label(self) -> String {
        match self {
            Child::Shard(i) => format!("shard-{i}"),
            Child::Federation => "federation".into(),
            Child::Catalog => "catalog".into(),
        }
    }
}

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, Child>,
    restarts: RestartTracker<Child>,
}

/// The node's restart policy: at once, one-for-one, within the budget.
fn policy(config: &NodeConfig) -> RestartPolicy {
    RestartPolicy {
        backoff: Backoff::IMMEDIATE,
        budget: Some(RestartBudget {
            max_restarts: config.max_restarts,
            window: config.restart_window,
        }),
    }
}

/// The node supervisor (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSupervisor;

async fn spawn_child(
    child: Child,
    args: &SupervisorArgs,
    supervisor: ActorCell,
) -> Result<ActorId, ActorProcessingErr> {
    match child {
        Child::Shard(index) => {
            let (actor, _) = Actor::spawn_linked(
                None,
                ShardActor,
                ShardArgs {
                    index,
                    store: Arc::clone(&args.store),
                    sync: args.config.sync.clone(),
                    learning: args.learning.clone(),
                },
                supervisor,
            )
            .await?;
            let id = actor.get_id();
            if let Some(slot) = args.routes.shards.get(index as usize) {
                slot.set(actor);
            }
            Ok(id)
        }
        Child::Federation => {
            let (actor, _) = Actor::spawn_linked(
                None,
                FederationActor,
                FederationArgs {
                    store: Arc::clone(&args.store),
                    config: args.config.federation.clone(),
                    interval: args.config.federation_interval,
                    cluster: args.config.cluster.clone(),
                },
                supervisor,
            )
            .await?;
            let id = actor.get_id();
            args.routes.federation.set(actor);
            Ok(id)
        }
        Child::Catalog => {
            let (actor, _) = Actor::spawn_linked(
                None,
                CatalogActor,
                CatalogArgs {
                    store: Arc::clone(&args.store),
                    embedder: args.embedder.clone(),
                    options: args.config.catalog.clone(),
                },
                supervisor,
            )
            .await?;
            let id = actor.get_id();
            args.routes.catalog.set(actor);
            Ok(id)
        }
    }
}

fn clear_route(args: &SupervisorArgs, child: Child) {
    let r = &args.routes;
    match child {
        Child::Shard(i) => {
            if let Some(slot) = r.shards.get(i as usize) {
                slot.clear();
            }
        }
        Child::Federation => drop(r.federation.clear()),
        Child::Catalog => drop(r.catalog.clear()),
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut children = HashMap::new();
        let all = (0..args.config.shards)
            .map(Child::Shard)
            .chain([Child::Federation, Child::Catalog]);
        for child in all {
            let id = spawn_child(child, &args, myself.get_cell()).await?;
            children.insert(id, child);
        }
        tracing::info!(
            shards = args.config.shards,
            federation_interval_secs = args.config.federation_interval.as_secs(),
            "node actors started"
        );
        let restarts = RestartTracker::new(policy(&args.config));
        Ok(SupervisorState {
            args,
            children,
            restarts,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = failure(&event) else {
            return Ok(());
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        clear_route(&state.args, child);
        if state.args.stopping.load(Ordering::Acquire) {
            tracing::debug!(child = %child.label(), %why, "child stopped during shutdown");
            return Ok(());
        }

        // Restart budget: at most max_restarts in the window; restarts are
        // immediate (the policy's backoff is zero).
        if state.restarts.on_failure(child, Instant::now()) == RestartDecision::GiveUp {
            let config = &state.args.config;
            tracing::error!(
                child = %child.label(),
                %why,
                max_restarts = config.max_restarts,
                window_secs = config.restart_window.as_secs(),
                "restart budget exhausted; stopping the node's actors"
            );
            state.args.stopping.store(true, Ordering::Release);
            myself.stop_children(Some("restart budget exhausted".into()));
            myself.stop(Some("restart budget exhausted".into()));
            return Ok(());
        }

        tracing::warn!(child = %child.label(), %why, "restarting child actor");
        let kind = match child {
            Child::Shard(_) => names::CHILD_SHARD,
            Child::Federation => names::CHILD_FEDERATION,
            Child::Catalog => names::CHILD_CATALOG,
        };
        metrics::counter!(names::ACTOR_RESTARTS, "child" => kind).increment(1);
        match spawn_child(child, &state.args, myself.get_cell()).await {
            Ok(id) => {
                state.children.insert(id, child);
                state.args.restarts.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                tracing::error!(child = %child.label(), error = %e, "restart failed; stopping");
                state.args.stopping.store(true, Ordering::Release);
                myself.stop_children(Some("restart failed".into()));
                Err(e)
            }
        }
    }
}
