//! The federation actor: runs [`crate::federation::run`] on a timer and on
//! demand, off the async executor, and records what each run did.
//!
//! The timer is one `send_after` re-armed after each timer-driven run, so at
//! most one tick is ever queued however long a run takes (a run longer than
//! the interval delays the next one instead of piling ticks up). On-demand
//! triggers are serialized by the actor; [`super::Node::trigger_federation`]
//! lets one wait at a time.
//!
//! In a cluster ([`FederationArgs::cluster`]) the actor also keeps the
//! node's membership: every [`LeaseTiming::renew_every_ms`] a second timer
//! writes the node's heartbeat and takes or renews the federation lease
//! ([`FEDERATION_LEASE`]); a timer-driven run happens only while this node
//! holds it, so the cluster federates once per interval. On-demand runs
//! (an operator's trigger) run on any node. A holder that loses the lease
//! in the middle of a run cannot publish a global version twice: each
//! publication is conditional on the region's version. A holder that stops
//! releases the lease.
//!
//! A run's reports carry the devices and patterns held and the regions'
//! global versions, for the node's gauges and stats. A standby node (a
//! timer tick while another node holds the lease) reads the same from the
//! shared store instead ([`count_held`]: one paged pass over each region,
//! memory independent of its size, once per interval), so every node's
//! gauges show the cluster's state. A failed heartbeat or lease attempt is
//! counted ([`names::CLUSTER_ATTEMPTS_FAILED`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use omega_protocol::Region;

use crate::cluster::{ClusterStore, Lease, LeaseTiming, FEDERATION_LEASE};
use crate::federation::{run, FederationConfig, FederationError};
use crate::store::{PatternCursor, PatternStore, StoreError, MAX_SCAN_PAGE};

use super::names;

/// What one region looks like after a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionSummary {
    /// The region.
    pub region: Region,
    /// The version this run published, `None` when nothing changed.
    pub published_version: Option<u64>,
    /// The region's current global version.
    pub global_version: u64,
    /// Global patterns published (or kept).
    pub globals: usize,
    /// Trend signals published (or kept).
    pub trends: usize,
    /// Device patterns in the region.
    pub patterns: u64,
    /// Devices with patterns in the region.
    pub devices: u64,
}

/// What one federation run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FederationSummary {
    /// `timer` or `on-demand`.
    pub trigger: &'static str,
    /// Unix milliseconds at the start.
    pub started_at_ms: u64,
    /// How long the run took (federation and counting), seconds.
    pub duration_secs: f64,
    /// Per region.
    pub regions: Vec<RegionSummary>,
    /// Devices with patterns, all regions.
    pub devices: u64,
    /// Device patterns, all regions.
    pub patterns: u64,
}

/// Messages of the federation actor.
#[derive(Debug)]
pub enum FederationMsg {
    /// The timer fired: run, then re-arm.
    Tick,
    /// Run now; reply with the result when asked to.
    Trigger(Option<RpcReplyPort<Result<FederationSummary, FederationError>>>),
    /// The last run's summary.
    Last(RpcReplyPort<Option<FederationSummary>>),
    /// The cluster timer fired: heartbeat, take or renew the lease, re-arm.
    Heartbeat,
    /// The lease as this node saw it at its last attempt (`None`: not in a
    /// cluster, or no attempt succeeded yet).
    Lease(RpcReplyPort<Option<Lease>>),
}

/// How a node takes part in a cluster sharing one store.
#[derive(Debug, Clone)]
pub struct ClusterMembership {
    /// The shared membership and lease.
    pub store: Arc<dyn ClusterStore>,
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Where devices reach this node (`host:port`).
    pub addr: String,
    /// Heartbeat period and TTLs.
    pub timing: LeaseTiming,
}

/// Start-up arguments of the federation actor.
#[derive(Debug, Clone)]
pub struct FederationArgs {
    /// The node's store.
    pub store: Arc<dyn PatternStore>,
    /// Aggregation parameters.
    pub config: FederationConfig,
    /// Time between timer-driven runs.
    pub interval: Duration,
    /// Membership and the lease; `None` for a node alone on its store (it
    /// always runs).
    pub cluster: Option<ClusterMembership>,
}

/// The federation actor's state.
#[derive(Debug)]
pub struct FederationState {
    args: FederationArgs,
    last: Option<FederationSummary>,
    lease: Option<Lease>,
}

/// The federation actor (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct FederationActor;

fn run_once(
    store: &Arc<dyn PatternStore>,
    config: &FederationConfig,
    trigger: &'static str,
) -> Result<FederationSummary, FederationError> {
    let started = Instant::now();
    let started_at_ms = super::now_ms();
    // One pass over the store: the run's own reports carry the counts.
    let reports = run(store, config)?;
    let mut regions = Vec::new();
    let (mut all_patterns, mut all_devices) = (0, 0);
    for r in reports {
        let (patterns, devices) = (r.stats.input_patterns as u64, r.devices as u64);
        all_patterns += patterns;
        all_devices += devices;
        regions.push(RegionSummary {
            published_version: r.published_version,
            global_version: r.global_version,
            globals: r.globals,
            trends: r.trends,
            patterns,
            devices,
            region: r.region,
        });
    }
    Ok(FederationSummary {
        trigger,
        started_at_ms,
        duration_secs: started.elapsed().as_secs_f64(),
        regions,
        devices: all_devices,
        patterns: all_patterns,
    })
}

/// What the store holds, for the gauges: devices and patterns in all
/// regions, and each region's global version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldCounts {
    /// Devices with patterns, all regions.
    pub devices: u64,
    /// Device patterns, all regions.
    pub patterns: u64,
    /// Per region, its global version.
    pub versions: Vec<(Region, u64)>,
}

/// Counts what `store` holds (a standby node's gauges): one paged pass over
/// each region's patterns (rows come in device order, so devices are
/// counted as the device changes) and each region's global version.
pub fn count_held(store: &dyn PatternStore) -> Result<HeldCounts, StoreError> {
    let mut out = HeldCounts::default();
    for region in store.regions()? {
        let mut after: Option<PatternCursor> = None;
        let mut last_device = None;
        loop {
            let page = store.region_patterns(&region, after.as_ref(), MAX_SCAN_PAGE)?;
            for row in &page.rows {
                out.patterns += 1;
                if last_device.as_ref() != Some(&row.device) {
                    out.devices += 1;
                    last_device = Some(row.device.clone());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let version = store.region_globals(&region)?.version;
        out.versions.push((region, version));
    }
    Ok(out)
}

fn set_gauges(devices: u64, patterns: u64, versions: impl Iterator<Item = (Region, u64)>) {
    metrics::gauge!(names::DEVICES).set(devices as f64);
    metrics::gauge!(names::PATTERNS).set(patterns as f64);
    for (region, version) in versions {
        metrics::gauge!(names::GLOBAL_VERSION, "region" => region.as_str().to_owned())
            .set(version as f64);
    }
}

fn record(result: &Result<FederationSummary, FederationError>) {
    match result {
        Ok(s) => {
            metrics::counter!(names::FEDERATION_RUNS, "result" => names::FEDERATION_OK)
                .increment(1);
            metrics::histogram!(names::FEDERATION_DURATION).record(s.duration_secs);
            metrics::gauge!(names::FEDERATION_LAST_SUCCESS).set(super::now_ms() as f64 / 1000.0);
            set_gauges(
                s.devices,
                s.patterns,
                s.regions
                    .iter()
                    .map(|r| (r.region.clone(), r.global_version)),
            );
            let published = s
                .regions
                .iter()
                .filter(|r| r.published_version.is_some())
                .count();
            tracing::info!(
                trigger = s.trigger,
                secs = s.duration_secs,
                regions = s.regions.len(),
                published,
                devices = s.devices,
                patterns = s.patterns,
                "federation run finished"
            );
        }
        Err(e) => {
            metrics::counter!(names::FEDERATION_RUNS, "result" => names::FEDERATION_ERROR)
                .increment(1);
            tracing::error!(error = %e, "federation run failed");
        }
    }
}

impl FederationActor {
    async fn run(
        state: &mut FederationState,
        trigger: &'static str,
    ) -> Result<Result<FederationSummary, FederationError>, ActorProcessingErr> {
        let store = Arc::clone(&state.args.store);
        let config = state.args.config.clone();
        let result =
            tokio::task::spawn_blocking(move || run_once(&store, &config, trigger)).await?;
        record(&result);
        if let Ok(s) = &result {
            state.last = Some(s.clone());
        }
        Ok(result)
    }
}

impl FederationActor {
    /// Whether a timer-driven run may start: alone on the store, or holding
    /// the lease now.
    fn may_run(state: &FederationState) -> bool {
        match &state.args.cluster {
            None => true,
            Some(c) => state
                .lease
                .as_ref()
                .is_some_and(|l| l.held_by(&c.node, super::now_ms())),
        }
    }

    /// One heartbeat and one lease attempt, off the executor. A failure is
    /// logged; the lease as last seen stays and lapses by its expiry.
    async fn heartbeat(
        state: &mut FederationState,
        c: &ClusterMembership,
    ) -> Result<(), ActorProcessingErr> {
        let c = c.clone();
        let result = tokio::task::spawn_blocking(move || {
            let now = super::now_ms();
            c.store
                .heartbeat(&c.node, &c.addr, now, c.timing.member_ttl_ms)?;
            c.store
                .try_lease(FEDERATION_LEASE, &c.node, now, c.timing.lease_ttl_ms)
        })
        .await?;
        match result {
            Ok(lease) => {
                let was = state.lease.as_ref().map(|l| l.holder.clone());
                if was.as_deref() != Some(lease.holder.as_str()) {
                    tracing::info!(holder = %lease.holder, "federation lease holder");
                }
                state.lease = Some(lease);
            }
            Err(e) => {
                metrics::counter!(names::CLUSTER_ATTEMPTS_FAILED).increment(1);
                tracing::warn!(error = %e, "cluster heartbeat or lease attempt failed");
            }
        }
        Ok(())
    }
}

impl Actor for FederationActor {
    type Msg = FederationMsg;
    type State = FederationState;
    type Arguments = FederationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: FederationArgs,
    ) -> Result<FederationState, ActorProcessingErr> {
        args.config.validate()?;
        Ok(FederationState {
            args,
            last: None,
            lease: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut FederationState,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_after(state.args.interval, || FederationMsg::Tick);
        if state.args.cluster.is_some() {
            myself.send_message(FederationMsg::Heartbeat)?;
        }
        Ok(())
    }

    /// A stopping holder gives the lease up, so another node takes it at
    /// its next attempt instead of after the TTL (a failure is logged: the
    /// lease then lapses by its expiry).
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut FederationState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(c) = state.args.cluster.clone() else {
            return Ok(());
        };
        if !Self::may_run(state) {
            return Ok(());
        }
        let released =
            tokio::task::spawn_blocking(move || c.store.release(FEDERATION_LEASE, &c.node)).await?;
        if let Err(e) = released {
            tracing::warn!(error = %e, "the federation lease was not released");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: FederationMsg,
        state: &mut FederationState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FederationMsg::Tick => {
                if Self::may_run(state) {
                    // A failed run is logged and counted; the next tick retries.
                    let _ = Self::run(state, "timer").await?;
                } else {
                    metrics::counter!(names::FEDERATION_RUNS, "result" => names::FEDERATION_STANDBY).increment(1);
                    tracing::debug!(lease = ?state.lease, "federation: another node holds the lease");
                    let store = Arc::clone(&state.args.store);
                    match tokio::task::spawn_blocking(move || count_held(store.as_ref())).await? {
                        Ok(c) => set_gauges(c.devices, c.patterns, c.versions.into_iter()),
                        Err(e) => {
                            tracing::warn!(error = %e, "counting the store for the gauges failed")
                        }
                    }
                }
                myself.send_after(state.args.interval, || FederationMsg::Tick);
            }
            FederationMsg::Trigger(reply) => {
                let result = Self::run(state, "on-demand").await?;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            FederationMsg::Last(reply) => {
                let _ = reply.send(state.last.clone());
            }
            FederationMsg::Heartbeat => {
                if let Some(c) = state.args.cluster.clone() {
                    Self::heartbeat(state, &c).await?;
                    let every = Duration::from_millis(c.timing.renew_every_ms);
                    myself.send_after(every, || FederationMsg::Heartbeat);
                }
            }
            FederationMsg::Lease(reply) => {
                let _ = reply.send(state.lease.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemoryCluster;
    use crate::store::MemoryStore;
    use std::time::Instant;

    const INTERVAL_MS: u64 = 3_000;

    async fn start(
        node: &str,
        store: &Arc<MemoryStore>,
        cluster: &Arc<MemoryCluster>,
    ) -> ActorRef<FederationMsg> {
        let args = FederationArgs {
            store: Arc::clone(store) as Arc<dyn PatternStore>,
            config: FederationConfig::default(),
            interval: Duration::from_millis(INTERVAL_MS),
            cluster: Some(ClusterMembership {
                store: Arc::clone(cluster) as Arc<dyn ClusterStore>,
                node: node.to_owned(),
                addr: format!("{node}:4433"),
                timing: LeaseTiming::new(INTERVAL_MS, 1_000).expect("timing"),
            }),
        };
        Actor::spawn(None, FederationActor, args)
            .await
            .expect("spawn")
            .0
    }

    async fn lease(actor: &ActorRef<FederationMsg>) -> Option<Lease> {
        match actor.call(FederationMsg::Lease, None).await {
            Ok(ractor::rpc::CallResult::Success(l)) => l,
            other => panic!("no answer: {other:?}"),
        }
    }

    async fn last(actor: &ActorRef<FederationMsg>) -> Option<FederationSummary> {
        match actor.call(FederationMsg::Last, None).await {
            Ok(ractor::rpc::CallResult::Success(l)) => l,
            other => panic!("no answer: {other:?}"),
        }
    }

    /// Polls `f` every 50 ms until it is true or `secs` pass.
    async fn until<F: std::future::Future<Output = bool>>(secs: u64, mut f: impl FnMut() -> F) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f().await {
            assert!(
                Instant::now() < deadline,
                "condition not met within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A standby node's gauges: devices and patterns over every region (the
    /// scan pages), and each region's global version.
    #[test]
    fn count_held_counts_devices_patterns_and_versions_per_region() {
        use crate::store::suite::{device, global, pattern, region, state};
        use crate::store::DeviceSync;
        let store = MemoryStore::new();
        for (d, r, n) in [(1, 1, 3), (2, 1, 2), (3, 2, 1)] {
            let ps: Vec<_> = (1..=n).map(|i| pattern(i, i, 1, 0)).collect();
            let st = state(1, r, 0);
            store
                .apply_device_sync(
                    &device(d),
                    DeviceSync {
                        state: &st,
                        reset: false,
                        upserts: &ps,
                        removals: &[],
                    },
                )
                .expect("sync");
        }
        store
            .publish_globals(&region(1), 4, &[global(1, 1)], &[])
            .expect("publish");
        let c = count_held(&store).expect("count");
        assert_eq!((c.devices, c.patterns), (3, 6));
        assert_eq!(c.versions, vec![(region(1), 4), (region(2), 0)]);
    }

    /// Two nodes on one store: one holds the lease and runs on its timer, the
    /// other stands by; when the holder stops, the other takes the lease
    /// within the timing's bound and runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_lease_holder_runs_and_another_takes_over() {
        let store = Arc::new(MemoryStore::new());
        let cluster = Arc::new(MemoryCluster::new());
        let a = start("node-a", &store, &cluster).await;
        until(5, || async {
            lease(&a).await.is_some_and(|l| l.holder == "node-a")
        })
        .await;
        let b = start("node-b", &store, &cluster).await;
        until(5, || async { lease(&b).await.is_some() }).await;
        assert_eq!(lease(&b).await.map(|l| l.holder).as_deref(), Some("node-a"));
        until(10, || async { last(&a).await.is_some() }).await;
        assert_eq!(last(&b).await, None, "the standby node did not run");
        let members = cluster.members(super::super::now_ms()).expect("members");
        assert_eq!(members.len(), 2, "both heartbeat: {members:?}");

        let stopped = Instant::now();
        a.stop(None);
        // Released at stop: gone within 1 s, while a lease renewed at most
        // 1 s before the stop still had 2 s of its 3 s TTL to run.
        until(1, || async {
            let l = cluster.lease(FEDERATION_LEASE, super::super::now_ms());
            l.expect("lease").is_none_or(|l| l.holder != "node-a")
        })
        .await;
        until(15, || async {
            lease(&b).await.is_some_and(|l| l.holder == "node-b")
        })
        .await;
        let bound = LeaseTiming::new(INTERVAL_MS, 1_000)
            .expect("t")
            .takeover_bound_ms();
        assert!(
            stopped.elapsed() <= Duration::from_millis(bound + 1_000),
            "took over after {:?}",
            stopped.elapsed()
        );
        until(10, || async {
            last(&b).await.is_some_and(|s| s.trigger == "timer")
        })
        .await;
        b.stop(None);
    }
}
