//! The node's actors: a thin, supervised shell around the sans-IO core.
//!
//! ```text
//! NodeSupervisor                       (restart policy in handle_supervisor_evt)
//! ├── ShardActor #0 … #N-1             (one SyncCore each, shared Arc<dyn PatternStore>)
//! ├── FederationActor                  (timer + on-demand trigger, records duration)
//! └── CatalogActor                     (imports, embeds in batches off the executor)
//! ```
//!
//! * A device belongs to shard actor [`shard_of`](crate::shard::shard_of)`(device, N)`,
//!   so one actor serializes all syncs of a device (and its rate limiter sees
//!   all of them). Its store calls run on tokio's blocking pool.
//! * The logic stays in [`crate::sync`], [`crate::federation`] and
//!   [`crate::store`]; actors own state, timers, threads and logs.
//! * Mailboxes are bounded in effect: [`Node::try_admit`] hands out an
//!   [`InFlight`] permit per sync; the permit travels inside the message and is
//!   released once the shard has answered, so at most `in_flight` sync
//!   messages exist across all shard mailboxes. Without a permit the caller
//!   answers [`Node::busy`] (`RetryAfter`). Federation triggers and catalog
//!   imports are gated by one-slot semaphores ([`ActorsError::Busy`] past
//!   them), and the federation timer re-arms itself only after a run, so at
//!   most one tick is ever queued.
//! * Restart policy ([`supervisor`]): a child that fails (error or panic) or
//!   stops on its own is restarted with fresh state from the store (a shard
//!   loses only its in-memory rate limiter); at most
//!   [`NodeConfig::max_restarts`] restarts per [`NodeConfig::restart_window`],
//!   past which the supervisor stops and the node reports not ready.
//!
//! [`Node`] is the handle the listener and the admin API use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::Duration;

use omega_supervise::Slot;
use ractor::{Actor, ActorRef, ActorStatus};
use tokio::sync::Semaphore;

use omega_protocol::{CatalogItem, DeviceId, PackedSyncRequest, PackedSyncResponse, SyncError};

use crate::federation::{FederationConfig, FederationError};
use crate::store::{PatternStore, StoreError};
use crate::sync::{InFlight, Learning, LearningConfig, Permit, SyncConfig, SyncOutcome};
use omega_constellation_core::learning::RegionLearningStats;
use omega_privacy::secagg::Verifier;

pub mod catalog;
pub mod federation;
pub mod shard;
pub mod supervisor;

pub use catalog::{
    CatalogActor, CatalogError, CatalogMsg, CatalogOptions, ImportFormat, ImportReport,
    TextEmbedder,
};
pub use federation::{
    ClusterMembership, FederationActor, FederationMsg, FederationSummary, RegionSummary,
};
pub use shard::{ShardActor, ShardMsg, SyncJob};
pub use supervisor::{NodeSupervisor, SupervisorMsg};

/// Metric names recorded by the actors (the node binary exports them).
pub mod names {
    /// Histogram: seconds one federation run took.
    pub const FEDERATION_DURATION: &str = "omega_federation_duration_seconds";
    /// Counter: federation runs, label `result` = `ok` | `error` |
    /// `standby` (a timer run skipped: another node holds the lease).
    pub const FEDERATION_RUNS: &str = "omega_federation_runs_total";
    /// `result` of [`FEDERATION_RUNS`]: the run published.
    pub const FEDERATION_OK: &str = "ok";
    /// `result` of [`FEDERATION_RUNS`]: the run failed.
    pub const FEDERATION_ERROR: &str = "error";
    /// `result` of [`FEDERATION_RUNS`]: skipped, another node holds the lease.
    pub const FEDERATION_STANDBY: &str = "standby";
    /// Every `result` of [`FEDERATION_RUNS`].
    pub const FEDERATION_RESULTS: [&str; 3] = [FEDERATION_OK, FEDERATION_ERROR, FEDERATION_STANDBY];
    /// Gauge: when this node's last successful federation run (`result` =
    /// `ok`) finished, Unix seconds; 0 until one has (a standby node's stays
    /// 0 until it runs one: the cluster's age is `time()` minus the largest).
    pub const FEDERATION_LAST_SUCCESS: &str = "omega_federation_last_success_timestamp_seconds";
    /// Histogram: seconds one store call of a sync took, label `op` (one
    /// of [`STORE_OPS`]); the learning part's reads and writes are not in it.
    pub const STORE_DURATION: &str = "omega_store_duration_seconds";
    /// Every `op` of [`STORE_DURATION`]: the sync's reads in their order,
    /// then its one write (a pattern change or a forget).
    pub const STORE_OPS: [&str; 5] = [
        "device_state",
        "globals_since",
        "catalog_version",
        "catalog_page",
        "write",
    ];
    /// Gauge: devices holding patterns (as of the last federation run, or
    /// on a standby node the last count of the shared store).
    pub const DEVICES: &str = "omega_devices";
    /// Gauge: device patterns held (as [`DEVICES`]).
    pub const PATTERNS: &str = "omega_patterns";
    /// Gauge: a region's global version, label `region` (as [`DEVICES`]).
    pub const GLOBAL_VERSION: &str = "omega_global_version";
    /// Counter: cluster heartbeats or federation lease attempts that failed
    /// (the store did not answer or refused).
    pub const CLUSTER_ATTEMPTS_FAILED: &str = "omega_cluster_attempts_failed_total";
    /// Gauge: live catalog items.
    pub const CATALOG_ITEMS: &str = "omega_catalog_items";
    /// Counter: catalog items embedded.
    pub const CATALOG_EMBEDDED: &str = "omega_catalog_embedded_total";
    /// Counter: child actors restarted, label `child`.
    pub const ACTOR_RESTARTS: &str = "omega_actor_restarts_total";
    /// `child` of [`ACTOR_RESTARTS`]: a shard actor.
    pub const CHILD_SHARD: &str = "shard";
    /// `child` of [`ACTOR_RESTARTS`]: the federation actor.
    pub const CHILD_FEDERATION: &str = "federation";
    /// `child` of [`ACTOR_RESTARTS`]: the catalog actor.
    pub const CHILD_CATALOG: &str = "catalog";
    /// Every `child` of [`ACTOR_RESTARTS`].
    pub const RESTARTED_CHILDREN: [&str; 3] = [CHILD_SHARD, CHILD_FEDERATION, CHILD_CATALOG];
}

/// Shard actors a node may run.
pub const MAX_SHARD_ACTORS: u32 = 1024;

/// Why an actor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActorsError {
    /// The configuration is out of range.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// An actor could not be spawned.
    #[error("could not start the {what} actor: {message}")]
    Spawn {
        /// Which actor.
        what: &'static str,
        /// The spawn error.
        message: String,
    },
    /// The actor is not running (being restarted, or the node is stopping).
    #[error("the {0} actor is not running")]
    Unavailable(&'static str),
    /// The actor did not answer in time.
    #[error("the {what} actor did not answer within {timeout:?}")]
    Timeout {
        /// Which actor.
        what: &'static str,
        /// The wait.
        timeout: Duration,
    },
    /// One operation of this kind is already running.
    #[error("busy: a {0} is already running")]
    Busy(&'static str),
    /// The catalog import failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The federation run failed.
    #[error(transparent)]
    Federation(#[from] FederationError),
    /// A store read failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a node's actors behave. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Shard actors (1..=[`MAX_SHARD_ACTORS`]); default 4.
    pub shards: u32,
    /// The sync core's configuration (rate limit, next-sync range, …).
    pub sync: SyncConfig,
    /// Syncs in flight at once across all shards (≥ 1); default 1024.
    pub in_flight: usize,
    /// `RetryAfter` seconds for a sync refused for lack of a permit; default 5.
    pub busy_retry_secs: u32,
    /// How long a caller waits for a shard's answer before answering
    /// `RetryAfter` (the sync may still be applied); default 10 s.
    pub sync_timeout: Duration,
    /// Federation parameters (k, thresholds, caps).
    pub federation: FederationConfig,
    /// Time between timer-driven federation runs (≥ 1 s); default 15 min.
    pub federation_interval: Duration,
    /// Catalog import parameters.
    pub catalog: CatalogOptions,
    /// Restarts allowed per `restart_window` before the supervisor gives up;
    /// default 20.
    pub max_restarts: usize,
    /// The window of `max_restarts`; default 60 s.
    pub restart_window: Duration,
    /// What the node learns from the fleet's private aggregation rounds.
    pub learning: LearningConfig,
    /// Membership and the federation lease when nodes share the store;
    /// default `None` (alone on its store: federation always runs here).
    pub cluster: Option<ClusterMembership>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            shards: 4,
            sync: SyncConfig::default(),
            in_flight: 1024,
            busy_retry_secs: 5,
            sync_timeout: Duration::from_secs(10),
            federation: FederationConfig::default(),
            federation_interval: Duration::from_secs(15 * 60),
            catalog: CatalogOptions::default(),
            max_restarts: 20,
            restart_window: Duration::from_secs(60),
            learning: LearningConfig::default(),
            cluster: None,
        }
    }
}

impl NodeConfig {
    /// Checks ranges (including the sync and federation configurations).
    pub fn validate(&self) -> Result<(), ActorsError> {
        let bad = |m: String| Err(ActorsError::Config(m));
        if self.shards == 0 || self.shards > MAX_SHARD_ACTORS {
            return bad(format!(
                "shards {} outside 1..={MAX_SHARD_ACTORS}",
                self.shards
            ));
        }
        if self.in_flight == 0 {
            return bad("in_flight must be at least 1".into());
        }
        if self.federation_interval < Duration::from_secs(1) {
            return bad("the federation interval must be at least 1 s".into());
        }
        if self.sync_timeout.is_zero() {
            return bad("the sync timeout must be positive".into());
        }
        if self.max_restarts == 0 || self.restart_window.is_zero() {
            return bad("max_restarts and restart_window must be positive".into());
        }
        self.catalog.validate()?;
        self.sync
            .validate()
            .map_err(|e| ActorsError::Config(e.to_string()))?;
        self.federation.validate()?;
        if let Some(c) = &self.cluster {
            let interval = u64::try_from(self.federation_interval.as_millis()).unwrap_or(u64::MAX);
            if c.timing.lease_ttl_ms != interval {
                return bad(format!(
                    "the lease TTL ({} ms) must be the federation interval ({interval} ms)",
                    c.timing.lease_ttl_ms
                ));
            }
        }
        Ok(())
    }
}

/// Where the live children are: one typed slot per child, filled by the
/// supervisor on each spawn and emptied when the child dies, so callers clone
/// the `ActorRef` (cheap) or fail fast while it is down.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) shards: Vec<Slot<ShardMsg>>,
    pub(crate) federation: Slot<FederationMsg>,
    pub(crate) catalog: Slot<CatalogMsg>,
}

impl Routes {
    fn new(shards: u32) -> Self {
        Self {
            shards: (0..shards).map(|_| Slot::new()).collect(),
            federation: Slot::new(),
            catalog: Slot::new(),
        }
    }

    fn shard(&self, index: usize) -> Option<ActorRef<ShardMsg>> {
        self.shards.get(index).and_then(Slot::get)
    }
}

pub(crate) type SharedRoutes = Arc<Routes>;

/// Unix milliseconds now (the one clock read of the sync path).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A running node's actor tree and the handle to talk to it.
#[derive(Debug)]
pub struct Node {
    supervisor: ActorRef<SupervisorMsg>,
    join: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    routes: SharedRoutes,
    stopping: Arc<AtomicBool>,
    in_flight: InFlight,
    store: Arc<dyn PatternStore>,
    config: NodeConfig,
    has_embedder: bool,
    import_gate: Semaphore,
    federation_gate: Semaphore,
    restarts: Arc<std::sync::atomic::AtomicU64>,
    learning: Option<Arc<parking_lot::Mutex<Learning>>>,
}

/// A cheap store read's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoreHealth {
    /// The read succeeded.
    pub ok: bool,
    /// How long it took, milliseconds.
    pub latency_ms: f64,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// What [`Node::cluster_status`] reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterStatus {
    /// This node's cluster name (`None`: alone on its store).
    pub node: Option<String>,
    /// Whether the node shares its store with a cluster.
    pub clustered: bool,
    /// Live members, by name (empty when alone or unreadable).
    pub members: Vec<crate::cluster::Member>,
    /// The federation lease, if held.
    pub lease: Option<crate::cluster::Lease>,
    /// Why the membership or lease could not be read.
    pub cluster_error: Option<String>,
    /// This node's last federation run since it started.
    pub last_federation: Option<FederationSummary>,
    /// The store's health.
    pub store: StoreHealth,
}

/// Answer of a shard: the response and what happened.
pub type SyncResult = (PackedSyncResponse, SyncOutcome);

impl Node {
    /// Starts the actor tree over `store`. Catalog imports need `embedder`
    /// (without one they fail with [`CatalogError::NoModel`]); the learning
    /// rounds check the members' signed keys with `verifier` (the device
    /// CA, see `omega_transport::attest::DeviceVerifier`).
    pub async fn start(
        store: Arc<dyn PatternStore>,
        embedder: Option<Arc<dyn TextEmbedder>>,
        verifier: Arc<dyn Verifier>,
        config: NodeConfig,
    ) -> Result<Self, ActorsError> {
        config.validate()?;
        let routes: SharedRoutes = Arc::new(Routes::new(config.shards));
        let stopping = Arc::new(AtomicBool::new(false));
        let has_embedder = embedder.is_some();
        let restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // The stored totals are read off the executor (the store blocks).
        let learning = {
            let (config, store) = (config.clone(), Arc::clone(&store));
            tokio::task::spawn_blocking(move || Self::learning(&config, store.as_ref(), verifier))
                .await
                .map_err(|e| ActorsError::Config(format!("reading the learned totals: {e}")))??
        };
        let args = supervisor::SupervisorArgs {
            learning: learning.clone(),
            store: Arc::clone(&store),
            embedder,
            config: config.clone(),
            routes: Arc::clone(&routes),
            stopping: Arc::clone(&stopping),
            restarts: Arc::clone(&restarts),
        };
        let (supervisor, join) = Actor::spawn(None, NodeSupervisor, args)
            .await
            .map_err(|e| ActorsError::Spawn {
                what: "supervisor",
                message: e.to_string(),
            })?;
        if let Ok(len) = store.catalog_len() {
            metrics::gauge!(names::CATALOG_ITEMS).set(len as f64);
        }
        Ok(Self {
            supervisor,
            join: tokio::sync::Mutex::new(Some(join)),
            routes,
            stopping,
            in_flight: InFlight::new(config.in_flight, config.busy_retry_secs),
            store,
            config,
            has_embedder,
            import_gate: Semaphore::new(1),
            federation_gate: Semaphore::new(1),
            restarts,
            learning,
        })
    }

    /// The learner for the configured regions, from the totals stored
    /// (`None` when learning is disabled).
    fn learning(
        config: &NodeConfig,
        store: &dyn PatternStore,
        verifier: Arc<dyn Verifier>,
    ) -> Result<Option<Arc<parking_lot::Mutex<Learning>>>, ActorsError> {
        if !config.learning.enabled {
            return Ok(None);
        }
        let regions: Vec<_> = config.sync.allowed_regions.iter().cloned().collect();
        let mut stored = Vec::new();
        for r in &regions {
            match store.region_totals(r) {
                Ok(Some(t)) => stored.push((r.clone(), t)),
                Ok(None) => {}
                Err(e) => {
                    return Err(ActorsError::Config(format!(
                        "reading the learned totals of {r}: {e}"
                    )))
                }
            }
        }
        let learning = Learning::new(config.learning, &regions, stored, verifier)
            .map_err(|e| ActorsError::Config(format!("learning: {e}")))?;
        Ok(Some(Arc::new(parking_lot::Mutex::new(learning))))
    }

    /// `region`'s learned totals (`None`: learning is off or the region is
    /// not served).
    pub fn learned_totals(
        &self,
        region: &omega_protocol::Region,
    ) -> Option<omega_constellation_core::aggregate::RegionTotals> {
        self.learning.as_ref()?.lock().totals(region).cloned()
    }

    /// What the node has learned, per region (empty when learning is off).
    pub fn learning_stats(&self) -> Vec<RegionLearningStats> {
        self.learning
            .as_ref()
            .map(|l| l.lock().stats())
            .unwrap_or_default()
    }

    /// The store the node serves from.
    pub fn store(&self) -> &Arc<dyn PatternStore> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Whether catalog imports can embed.
    pub fn has_embedder(&self) -> bool {
        self.has_embedder
    }

    /// The in-flight bound (for metrics and stats).
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// A permit for one sync, `None` when `in_flight` syncs are out (answer
    /// [`Node::busy`] then).
    pub fn try_admit(&self) -> Option<Permit> {
        self.in_flight.try_acquire()
    }

    /// The answer to a sync refused for lack of a permit.
    pub fn busy(&self) -> SyncError {
        self.in_flight.busy()
    }

    /// Child actors restarted since start.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Acquire)
    }

    /// Whether every child runs and the node is not stopping.
    pub fn is_ready(&self) -> bool {
        if self.stopping.load(Ordering::Acquire)
            || !matches!(
                self.supervisor.get_status(),
                ActorStatus::Running | ActorStatus::Upgrading
            )
        {
            return false;
        }
        let r = &self.routes;
        r.shards.iter().all(Slot::is_up) && r.federation.is_up() && r.catalog.is_up()
    }

    /// Hands one sync of `device` to its shard actor and waits for the answer.
    /// The permit is released once the shard is done with it. A shard being
    /// restarted, or one that does not answer within the sync timeout, yields
    /// `RetryAfter` (nothing, or possibly the sync in the timeout case, was
    /// applied; a retry is then acknowledged as a replay).
    pub async fn sync(
        &self,
        permit: Permit,
        device: DeviceId,
        request: PackedSyncRequest,
        now_ms: u64,
    ) -> SyncResult {
        let index = crate::shard::shard_of(&device, self.config.shards) as usize;
        let shard = self.routes.shard(index);
        let retry = || (Err(self.busy()), SyncOutcome::Refused);
        let Some(shard) = shard else {
            return retry();
        };
        let job = SyncJob {
            device,
            request,
            now_ms,
            permit,
        };
        match shard
            .call(
                |reply| ShardMsg::Sync(Box::new(job), reply),
                Some(self.config.sync_timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(_) | Err(_) => retry(),
        }
    }

    /// Runs federation now and returns its summary. One trigger at a time:
    /// a second concurrent one gets [`ActorsError::Busy`].
    pub async fn trigger_federation(
        &self,
        timeout: Duration,
    ) -> Result<FederationSummary, ActorsError> {
        let _gate = self
            .federation_gate
            .try_acquire()
            .map_err(|_| ActorsError::Busy("federation run"))?;
        let actor = self
            .routes
            .federation
            .get()
            .ok_or(ActorsError::Unavailable("federation"))?;
        match actor
            .call(|reply| FederationMsg::Trigger(Some(reply)), Some(timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r?),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ActorsError::Timeout {
                what: "federation",
                timeout,
            }),
            Ok(_) | Err(_) => Err(ActorsError::Unavailable("federation")),
        }
    }

    /// The cluster as the store holds it (members, the federation lease),
    /// this node's last federation run and a cheap store read's health,
    /// read off the executor. Store failures are reported in the answer.
    pub async fn cluster_status(&self) -> ClusterStatus {
        let last_federation = self.last_federation().await;
        let store = Arc::clone(&self.store);
        let cluster = self.config.cluster.clone();
        let read = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let health = match store.catalog_version() {
                Ok(_) => StoreHealth {
                    ok: true,
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    error: None,
                },
                Err(e) => StoreHealth {
                    ok: false,
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    error: Some(e.to_string()),
                },
            };
            let now = now_ms();
            let (members, lease, error) = match &cluster {
                None => (Vec::new(), None, None),
                Some(c) => match (
                    c.store.members(now),
                    c.store.lease(crate::cluster::FEDERATION_LEASE, now),
                ) {
                    (Ok(m), Ok(l)) => (m, l, None),
                    (Err(e), _) | (_, Err(e)) => (Vec::new(), None, Some(e.to_string())),
                },
            };
            (health, members, lease, error)
        })
        .await;
        let (store, members, lease, cluster_error) = read.unwrap_or_else(|e| {
            let health = StoreHealth {
                ok: false,
                latency_ms: 0.0,
                error: Some(e.to_string()),
            };
            (health, Vec::new(), None, Some(e.to_string()))
        });
        ClusterStatus {
            node: self.config.cluster.as_ref().map(|c| c.node.clone()),
            clustered: self.config.cluster.is_some(),
            members,
            lease,
            cluster_error,
            last_federation,
            store,
        }
    }

    /// The last federation run's summary, if any ran since start.
    pub async fn last_federation(&self) -> Option<FederationSummary> {
        let actor = self.routes.federation.get()?;
        match actor
            .call(FederationMsg::Last, Some(Duration::from_secs(5)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => None,
        }
    }

    /// Validates, embeds and stores catalog items. One import at a time: a
    /// second concurrent one gets [`ActorsError::Busy`].
    pub async fn import_catalog(
        &self,
        items: Vec<CatalogItem>,
        timeout: Duration,
    ) -> Result<ImportReport, ActorsError> {
        if !self.has_embedder {
            return Err(CatalogError::NoModel.into());
        }
        let max = self.config.catalog.max_items_per_import;
        if items.len() > max {
            return Err(CatalogError::TooMany {
                len: items.len(),
                max,
            }
            .into());
        }
        for (i, item) in items.iter().enumerate() {
            item.validate().map_err(|e| CatalogError::Invalid {
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
        let _gate = self
            .import_gate
            .try_acquire()
            .map_err(|_| ActorsError::Busy("catalog import"))?;
        let actor = self
            .routes
            .catalog
            .get()
            .ok_or(ActorsError::Unavailable("catalog"))?;
        match actor
            .call(|reply| CatalogMsg::Import(items, reply), Some(timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r?),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ActorsError::Timeout {
                what: "catalog",
                timeout,
            }),
            Ok(_) | Err(_) => Err(ActorsError::Unavailable("catalog")),
        }
    }

    /// Fault injection for tests (feature `testing`): makes shard actor
    /// `index` fail, so the supervisor's restart policy runs. Returns whether
    /// the shard was running.
    #[cfg(feature = "testing")]
    pub fn fail_shard(&self, index: usize) -> bool {
        let shard = self.routes.shard(index);
        shard.is_some_and(|s| s.cast(ShardMsg::Fail("injected".into())).is_ok())
    }

    /// Stops the tree: children first (each finishes the message it is
    /// processing, within `timeout`), then the supervisor. Nothing is
    /// restarted during shutdown. Afterwards no actor holds the store.
    pub async fn shutdown(&self, timeout: Duration) {
        self.stopping.store(true, Ordering::Release);
        self.supervisor
            .stop_children_and_wait(Some("node shutdown".into()), Some(timeout))
            .await;
        let _ = self
            .supervisor
            .stop_and_wait(Some("node shutdown".into()), Some(timeout))
            .await;
        if let Some(join) = self.join.lock().await.take() {
            let _ = tokio::time::timeout(timeout, join).await;
        }
        // A child restarted while the stop was under way is still in the
        // routes (the supervisor records every spawn there): stop it too.
        let r = &self.routes;
        let shards: Vec<_> = r.shards.iter().filter_map(Slot::clear).collect();
        let (federation, catalog) = (r.federation.clear(), r.catalog.clear());
        for cell in shards
            .iter()
            .map(ActorRef::get_cell)
            .chain(federation.iter().map(ActorRef::get_cell))
            .chain(catalog.iter().map(ActorRef::get_cell))
        {
            let _ = cell
                .stop_and_wait(Some("node shutdown".into()), Some(timeout))
                .await;
        }
    }
}
