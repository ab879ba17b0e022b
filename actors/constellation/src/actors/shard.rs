//! The shard actor: owns one [`SyncCore`] and serializes the syncs of the
//! devices that hash to it.
//!
//! Each sync runs [`sync::run`] (the store reads, the core's decision, the
//! write) on tokio's blocking pool (the store is blocking and durable writes
//! fsync), one at a time per actor: the core and its RNG move into the
//! blocking task and come back with the answer. If that task
//! panics the core is lost, the handler fails, and the supervisor restarts
//! the shard with a fresh core (only the in-memory rate limiter is lost; the
//! store is the truth).
//!
//! The [`Permit`] travels with the job and is dropped after the answer is
//! sent, so the in-flight bound covers the time a job waits in the mailbox.

use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::rngs::StdRng;
use rand::SeedableRng;

use omega_protocol::{DeviceId, PackedSyncRequest};

use crate::store::PatternStore;
use crate::sync::{self, Learning, Permit, SyncConfig, SyncCore};

use super::SyncResult;

/// One sync to process.
#[derive(Debug)]
pub struct SyncJob {
    /// The device, from its verified certificate.
    pub device: DeviceId,
    /// The decoded request.
    pub request: PackedSyncRequest,
    /// Unix milliseconds at arrival.
    pub now_ms: u64,
    /// The in-flight slot this job occupies; freed when the job is answered.
    pub permit: Permit,
}

/// Messages of a shard actor.
#[derive(Debug)]
pub enum ShardMsg {
    /// Process one sync and reply with the response and its outcome.
    Sync(Box<SyncJob>, RpcReplyPort<SyncResult>),
    /// Fail on purpose (fault injection for tests: exercises the restart
    /// policy).
    #[cfg(feature = "testing")]
    Fail(String),
}

/// Start-up arguments of a shard actor.
#[derive(Debug, Clone)]
pub struct ShardArgs {
    /// The shard's index among the node's shard actors.
    pub index: u32,
    /// The node's store.
    pub store: Arc<dyn PatternStore>,
    /// The sync core's configuration.
    pub sync: SyncConfig,
    /// What the node learns, shared by every shard (`None`: it learns
    /// nothing).
    pub learning: Option<Arc<Mutex<Learning>>>,
}

/// The core, the store and the RNG, moved to the blocking pool for each sync.
#[derive(Debug)]
struct Engine {
    core: SyncCore,
    store: Arc<dyn PatternStore>,
    learning: Option<Arc<Mutex<Learning>>>,
    rng: StdRng,
}

/// A shard actor's state.
#[derive(Debug)]
pub struct ShardState {
    /// Read only by the `testing` failure hook.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    index: u32,
    /// `None` only while a sync runs on the blocking pool.
    engine: Option<Box<Engine>>,
}

/// The shard actor (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardActor;

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        let core = SyncCore::new(args.sync)?;
        Ok(ShardState {
            index: args.index,
            engine: Some(Box::new(Engine {
                core,
                store: args.store,
                learning: args.learning,
                rng: StdRng::from_os_rng(),
            })),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Sync(job, reply) => {
                let SyncJob {
                    device,
                    request,
                    now_ms,
                    permit,
                } = *job;
                let result =
                    omega_supervise::blocking(&mut state.engine, "sync core", move |engine| {
                        let Engine {
                            core,
                            store,
                            learning,
                            rng,
                        } = &mut **engine;
                        let learning = learning.as_deref();
                        sync::run(core, &**store, learning, &device, request, now_ms, rng)
                    })
                    .await?;
                // The caller may have given up waiting; that is not an error.
                let _ = reply.send(result);
                drop(permit);
                Ok(())
            }
            #[cfg(feature = "testing")]
            ShardMsg::Fail(reason) => {
                tracing::warn!(shard = state.index, %reason, "shard actor failing on request");
                Err(format!("shard {} failed on request: {reason}", state.index).into())
            }
        }
    }
}
