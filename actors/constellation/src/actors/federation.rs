//! The federation actor: runs [`crate::federation::run`] on a timer and on
//! demand, off the async executor, and records what each run did.
//!
//! The timer is one `send_after` re-armed after each timer-driven run, so at
//! most one tick is ever queued however long a run takes (a run longer than
//! the interval delays the next one instead of piling ticks up). On-demand
//! triggers are serialized by the actor; [`super::Node::trigger_federation`]
//! lets one wait at a time.
//!
//! After a run the actor also counts the devices and patterns held (one
//! streaming pass over each region, memory independent of its size) and the
//! regions' global versions, for the node's gauges and stats.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use omega_protocol::Region;

use crate::federation::{run, FederationConfig, FederationError};
use crate::store::PatternStore;

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
}

/// The federation actor's state.
#[derive(Debug)]
pub struct FederationState {
    args: FederationArgs,
    last: Option<FederationSummary>,
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

fn record(result: &Result<FederationSummary, FederationError>) {
    match result {
        Ok(s) => {
            metrics::counter!(names::FEDERATION_RUNS, "result" => "ok").increment(1);
            metrics::histogram!(names::FEDERATION_DURATION).record(s.duration_secs);
            metrics::gauge!(names::DEVICES).set(s.devices as f64);
            metrics::gauge!(names::PATTERNS).set(s.patterns as f64);
            for r in &s.regions {
                metrics::gauge!(names::GLOBAL_VERSION, "region" => r.region.as_str().to_owned())
                    .set(r.global_version as f64);
            }
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
            metrics::counter!(names::FEDERATION_RUNS, "result" => "error").increment(1);
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
        Ok(FederationState { args, last: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut FederationState,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_after(state.args.interval, || FederationMsg::Tick);
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
                // A failed run is logged and counted; the next tick retries.
                let _ = Self::run(state, "timer").await?;
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
        }
        Ok(())
    }
}
