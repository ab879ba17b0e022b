//! The TV brain's supervised actors (ractor) and [`Brain`], the handle to them.
//!
//! # Actor tree
//!
//! ```text
//! Supervisor (root, spawned by Brain::start)
//! ├── Inference    owns Arc<Embedder>; model runs in spawn_blocking; batches
//! ├── Memory       owns BrainStore (redb) + CatalogIndex (usearch); shares both read-only
//! └── Sync         owns the QUIC client; syncs on its schedule (only with a node configured)
//! ```
//!
//! `recommend` has no actor: [`Brain::recommend`] runs it itself (see below).
//!
//! Children are `spawn_linked` to the supervisor. Its `handle_supervisor_evt`
//! restarts a child that failed (panic or error) or stopped unexpectedly, after
//! an exponential backoff ([`RestartPolicy`]: 100 ms doubling to 5 s, back to
//! 100 ms once the child has been quiet for a minute). A failing child never
//! stops the supervisor, so it never takes the daemon down; while a child is
//! down, calls to it fail fast with [`ActorError::Unavailable`].
//!
//! # Data flow
//!
//! * `observe`, catalog changes, `forget`, `stats`: [`Brain`] → Memory. Memory
//!   commits to redb (durable before the reply), then mirrors the commit into
//!   the one in-memory [`crate::BrainState`] under its write lock (microseconds), so
//!   a `recommend` started after a write's reply sees it. Memory publishes a
//!   [`MemoryView`] (the [`SharedState`] and the shared index) on a
//!   `tokio::sync::watch` channel when it (re)starts; nothing is copied per
//!   write (the state is tens of MB at 10K items × 10K patterns).
//! * `recommend`: [`Brain::recommend`] runs it on a blocking-pool thread of
//!   the caller's own, over the current [`MemoryView`] under the read locks:
//!   one per core computes at once (they are CPU-bound; the others wait for
//!   a permit, bounded by the socket layer), none waits on a redb write (only
//!   on the mirror update after one). A mood text is looked up in the shared mood cache
//!   ([`BrainConfig::mood_cache`] vectors, least recently used evicted); only
//!   a miss goes to Inference.
//! * sync: Sync → Memory for the request, the node over QUIC, Memory again to
//!   apply the answer (see [`sync`](self::sync) module docs); `sync_now`:
//!   [`Brain`] → Sync. Nothing on the recommend path waits for it.
//! * `embed`: [`Brain`] → Inference. Requests that wait while a batch runs are
//!   drained into the next `embed_batch` (up to [`InferenceConfig::max_batch`]
//!   texts).
//!
//! # Bounds
//!
//! ractor mailboxes are unbounded, so work is bounded *in front of* them: the
//! socket layer (omega-brain-daemon) limits connections and in-flight requests
//! per connection and in total, and Inference refuses texts past
//! [`InferenceConfig::max_pending_texts`] with [`ActorError::Busy`] instead of
//! queueing them. The mood cache holds [`BrainConfig::mood_cache`] vectors
//! (least recently used evicted; the `lru` crate behind a mutex).
//!
//! # Failure semantics
//!
//! A caller whose request is in flight when its actor dies gets
//! [`ActorError::Crashed`] (the reply port is dropped with the actor's state),
//! never a hang. A restarted Memory reopens redb (and rebuilds the index if
//! needed); a restarted Inference reuses the already loaded model.

mod inference;
mod memory;
mod supervisor;
mod sync;
mod sync_tls;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use parking_lot::{Mutex, MutexGuard, RwLock};

use omega_protocol::{CatalogEntry, CatalogItem, ContentId, Embedding, ViewingEvent};
use omega_supervise::Slot;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::sync::watch;

use crate::error::BrainError;
use crate::index::{CatalogIndex, IndexConfig};
use crate::state::SharedState;
use crate::store::{ObserveOutcome, StoreConfig};
use omega_brain_core::{recommend, RecommendRequest, Recommendation, RecommenderConfig};

pub use inference::InferenceConfig;
pub use supervisor::{RestartPolicy, DEFAULT_RESTART};
pub use sync::{SyncConfig, SyncFailure, SyncReport, SyncStatus, MAX_ADDRESSES};

use inference::InferenceMsg;
use memory::MemoryMsg;
use supervisor::{Supervisor, SupervisorMsg};
use sync::{SyncBook, SyncMsg};

/// File name of the redb store inside the data directory (the index file is
/// `brain.redb.index` next to it).
pub const STORE_FILE: &str = "brain.redb";

/// Everything the actors need to start.
#[derive(Debug, Clone)]
pub struct BrainConfig {
    /// Data directory (holds [`STORE_FILE`] and its index).
    pub data_dir: PathBuf,
    /// all-MiniLM-L6-v2 directory.
    pub model_dir: PathBuf,
    /// Store limits.
    pub store: StoreConfig,
    /// Vector index parameters.
    pub index: IndexConfig,
    /// Recommender weights.
    pub recommender: RecommenderConfig,
    /// Inference batching and bounds.
    pub inference: InferenceConfig,
    /// Mood vectors cached for `recommend` (LRU); 0 disables the cache.
    pub mood_cache: usize,
    /// Restart backoff of failed children.
    pub restart: RestartPolicy,
    /// Sync with constellation nodes; `None`: no node configured, sync off.
    pub sync: Option<SyncConfig>,
    /// Enables the test hooks (`Brain::debug_panic_inference`), which exist
    /// only with the `testing` cargo feature; without it this has no effect.
    pub debug_ops: bool,
}

impl BrainConfig {
    /// Defaults for a data and a model directory.
    pub fn new(data_dir: impl Into<PathBuf>, model_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            model_dir: model_dir.into(),
            store: StoreConfig::default(),
            index: IndexConfig::default(),
            recommender: RecommenderConfig::default(),
            inference: InferenceConfig::default(),
            mood_cache: 256,
            restart: supervisor::DEFAULT_RESTART,
            sync: None,
            debug_ops: false,
        }
    }

    /// The redb file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join(STORE_FILE)
    }
}

/// Which actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    /// The model.
    Inference,
    /// redb + index.
    Memory,
    /// The QUIC client to the nodes.
    Sync,
}

impl ChildKind {
    /// All children, in start order (Sync only runs with a node configured).
    pub const ALL: [ChildKind; 3] = [ChildKind::Memory, ChildKind::Inference, ChildKind::Sync];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ChildKind::Inference => "inference",
            ChildKind::Memory => "memory",
            ChildKind::Sync => "sync",
        }
    }
}

/// Errors of the actor layer.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The actor is down (restarting after a failure, or shutting down).
    #[error("{} is unavailable (restarting or stopped)", .0.name())]
    Unavailable(ChildKind),
    /// The actor died while handling this request.
    #[error("{} failed while handling the request", .0.name())]
    Crashed(ChildKind),
    /// A bounded queue is full; retry later.
    #[error("{0} is busy: queue full")]
    Busy(&'static str),
    /// The model could not be loaded (the daemon keeps serving without it).
    #[error("model unavailable: {0}")]
    ModelUnavailable(String),
    /// The model failed on this input.
    #[error("embedding failed: {0}")]
    Embed(String),
    /// The store, index or recommender refused or failed.
    #[error(transparent)]
    Brain(#[from] BrainError),
    /// A `recommend` panicked (a bug); nothing was changed.
    #[error("recommend failed: {0}")]
    RecommendPanicked(String),
    /// The request is invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A debug hook was used without `debug_ops`.
    #[cfg(feature = "testing")]
    #[error("debug operations are disabled (set debug_ops = true in the config)")]
    DebugDisabled,
    /// No node is configured: sync is off.
    #[error("sync is off: no node is configured")]
    SyncDisabled,
    /// The actor system could not start.
    #[error("cannot start the actors: {0}")]
    Spawn(String),
}

/// A reply port carrying a result.
pub(crate) type Reply<T> = RpcReplyPort<Result<T, ActorError>>;

/// Calls an actor and maps every failure of the call itself to a typed error.
pub(crate) async fn ask<M, T>(
    actor: Option<ActorRef<M>>,
    kind: ChildKind,
    msg: impl FnOnce(Reply<T>) -> M,
) -> Result<T, ActorError>
where
    M: ractor::Message,
    T: Send + 'static,
{
    let actor = actor.ok_or(ActorError::Unavailable(kind))?;
    match actor.call(msg, None).await {
        Ok(CallResult::Success(r)) => r,
        Ok(CallResult::Timeout) | Ok(CallResult::SenderError) => Err(ActorError::Crashed(kind)),
        Err(_) => Err(ActorError::Unavailable(kind)),
    }
}

/// What `recommend` reads: Memory's state and index, in place.
#[derive(Debug)]
pub struct MemoryView {
    /// The committed state (Memory write-locks it only to mirror a commit).
    pub state: SharedState,
    /// The vector index, shared with Memory (read-locked per search; Memory
    /// write-locks it only to apply a catalog change).
    pub index: Arc<RwLock<CatalogIndex>>,
}

/// Counters of the memory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Episodes in the ring.
    pub episodes: usize,
    /// Sequence number of the newest episode (None when empty).
    pub last_episode_seq: Option<u64>,
    /// Local patterns.
    pub local_patterns: usize,
    /// Global patterns.
    pub global_patterns: usize,
    /// Trend signals.
    pub trends: usize,
    /// Catalog items.
    pub catalog_items: usize,
    /// Vectors in the index.
    pub index_items: usize,
    /// Pattern version.
    pub pattern_version: u64,
    /// Acknowledged pattern version.
    pub acked_version: u64,
    /// Global version held.
    pub global_version: u64,
    /// Catalog version held.
    pub catalog_version: u64,
    /// Local catalog revision.
    pub catalog_rev: u64,
    /// A forget waits for a node's acceptance (sent first at the next sync).
    pub forget_pending: bool,
    /// The sync's counters.
    pub sync: SyncStatus,
    /// The privacy budget over the last 24 hours and the last release's cost
    /// (`None` only if the stored budget cannot be read).
    pub privacy: Option<omega_brain_core::round_client::PrivacyStatus>,
    /// The fleet knowledge version held (0: none yet).
    pub fleet_version: u64,
    /// Titles of fleet knowledge held.
    pub fleet_titles: usize,
}

/// One stored viewing event.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// Episode sequence number.
    pub seq: u64,
    /// What.
    pub content_id: ContentId,
    /// Share watched.
    pub fraction: f32,
    /// Unix seconds.
    pub at: u64,
    /// Local hour.
    pub hour: u8,
    /// Day of week (0 = Monday).
    pub weekday: u8,
}

/// What a catalog change did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CatalogUpdate {
    /// Items written (new or changed).
    pub upserted: usize,
    /// Items in the catalog afterwards.
    pub catalog_items: usize,
}

/// Health as reported by `health`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `loading`, `ready` or `failed: ...`.
    pub model: String,
    /// How the store was opened: `opened`, `created`, `recovered`, or `down`.
    pub store: String,
    /// Set when the store file was damaged and moved aside (loud).
    pub store_recovered: Option<StoreRecovery>,
    /// How the index was loaded: `loaded` or `rebuilt`.
    pub index: String,
    /// Why the index was rebuilt.
    pub index_rebuilt_reason: Option<String>,
    /// The instruction set of the index's distance kernel (usearch's name:
    /// `neon`, `haswell`, ...; `serial` is the scalar fallback), once open.
    pub index_isa: Option<String>,
    /// Children running now.
    pub running: Vec<ChildKind>,
    /// Restarts per child since start.
    pub restarts: Vec<(ChildKind, u32)>,
    /// Last failure per child, if any.
    pub last_failures: Vec<(ChildKind, String)>,
}

/// A damaged store moved aside.
#[derive(Debug, Clone, Serialize)]
pub struct StoreRecovery {
    /// Where the damaged file went.
    pub moved_to: PathBuf,
    /// What was wrong.
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct Status {
    pub model: ModelStatus,
    pub store: Option<String>,
    pub store_recovered: Option<StoreRecovery>,
    pub index: Option<(String, Option<String>)>,
    pub index_isa: Option<String>,
    pub restarts: [u32; 3],
    pub last_failure: [Option<String>; 3],
}

#[derive(Debug, Default, Clone)]
pub(crate) enum ModelStatus {
    #[default]
    Loading,
    Ready,
    Failed(String),
}

fn slot(kind: ChildKind) -> usize {
    match kind {
        ChildKind::Inference => 0,
        ChildKind::Memory => 1,
        ChildKind::Sync => 2,
    }
}

/// State shared by the handle, the supervisor and the children.
pub(crate) struct Shared {
    pub cfg: BrainConfig,
    pub inference: Slot<InferenceMsg>,
    pub memory: Slot<MemoryMsg>,
    pub sync: Slot<SyncMsg>,
    /// The sync schedule and counters (outlive a Sync restart).
    pub sync_book: Mutex<SyncBook>,
    pub view_tx: watch::Sender<Arc<MemoryView>>,
    /// Mood text (trimmed) → vector; `None` when the cache is disabled.
    pub moods: Option<Mutex<LruCache<String, Embedding>>>,
    /// Recommends computing at once: one per core. They are CPU-bound, so
    /// more would only add blocking-pool threads (and their memory), not
    /// throughput; past it a recommend waits for a permit.
    pub recommending: Arc<tokio::sync::Semaphore>,
    pub model: tokio::sync::OnceCell<Result<Arc<omega_embed::Embedder>, String>>,
    pub status: Mutex<Status>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock()
    }

    pub(crate) fn clear(&self, kind: ChildKind) {
        match kind {
            ChildKind::Inference => drop(self.inference.clear()),
            ChildKind::Memory => drop(self.memory.clear()),
            ChildKind::Sync => drop(self.sync.clear()),
        }
    }
}

/// The handle to a running brain: cheap to clone, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Brain {
    shared: Arc<Shared>,
    supervisor: ActorRef<SupervisorMsg>,
}

/// The supervisor's task: await it after [`Brain::shutdown`].
pub type BrainTask = ractor::concurrency::JoinHandle<()>;

impl Brain {
    /// Starts the supervisor and its children. Returns once Memory has opened
    /// the store (or failed to and is being retried); the model loads in the
    /// background, so `recommend` without a mood answers right away.
    pub async fn start(cfg: BrainConfig) -> Result<(Brain, BrainTask), ActorError> {
        let empty = MemoryView {
            state: SharedState::default(),
            index: Arc::new(RwLock::new(CatalogIndex::empty(cfg.index)?)),
        };
        let (view_tx, _) = watch::channel(Arc::new(empty));
        let cfg_moods = cfg.mood_cache;
        let shared = Arc::new(Shared {
            cfg,
            inference: Slot::new(),
            memory: Slot::new(),
            sync: Slot::new(),
            sync_book: Mutex::new(SyncBook::default()),
            view_tx,
            moods: NonZeroUsize::new(cfg_moods).map(|n| Mutex::new(LruCache::new(n))),
            recommending: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
            model: tokio::sync::OnceCell::new(),
            status: Mutex::new(Status::default()),
        });
        let (supervisor, task) = Actor::spawn(None, Supervisor, shared.clone())
            .await
            .map_err(|e| ActorError::Spawn(e.to_string()))?;
        Ok((Brain { shared, supervisor }, task))
    }

    /// Recommends; see [`RecommendRequest`]. Runs here, on a blocking-pool
    /// thread, over Memory's current state and index (read-locked), so
    /// recommends run concurrently (one per core) and see every write whose
    /// reply came before. A mood text is taken from the mood cache or, on a miss,
    /// embedded by Inference (waiting while the model loads;
    /// `ModelUnavailable` if it failed to load).
    pub async fn recommend(&self, q: RecommendRequest) -> Result<Vec<Recommendation>, ActorError> {
        let mood = match q.mood_text() {
            Some(text) => Some(self.mood(text).await?),
            None => None,
        };
        let cfg = self.shared.cfg.recommender;
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.shared.recommending)
            .acquire_owned()
            .await
            .map_err(|_| ActorError::Unavailable(ChildKind::Memory))?;
        // The view is taken once the permit is held: a request that waited
        // reads what Memory publishes now, not what it published before.
        let view = self.shared.view_tx.borrow().clone();
        let run = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let state = view.state.read();
            let index = view.index.read();
            recommend(&state, &*index, &q, mood.as_ref(), &cfg)
        });
        match run.await {
            Ok(r) => r.map_err(|e| ActorError::Brain(e.into())),
            Err(e) => Err(ActorError::RecommendPanicked(e.to_string())),
        }
    }

    /// The vector of a (trimmed) mood text: cached, else embedded and cached.
    async fn mood(&self, text: &str) -> Result<Embedding, ActorError> {
        if let Some(v) = self
            .shared
            .moods
            .as_ref()
            .and_then(|m| m.lock().get(text).cloned())
        {
            return Ok(v);
        }
        let v = self.embed(text.to_string()).await?;
        if let Some(m) = &self.shared.moods {
            m.lock().put(text.to_string(), v.clone());
        }
        Ok(v)
    }

    /// Records a viewing event; returns after the durable commit.
    pub async fn observe(&self, ev: ViewingEvent) -> Result<ObserveOutcome, ActorError> {
        ask(self.shared.memory.get(), ChildKind::Memory, |r| {
            MemoryMsg::Observe(ev, r)
        })
        .await
    }

    /// Embeds texts (batched with other waiting requests).
    pub async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Embedding>, ActorError> {
        ask(self.shared.inference.get(), ChildKind::Inference, |r| {
            InferenceMsg::Embed(texts, r)
        })
        .await
    }

    /// Embeds one text.
    pub async fn embed(&self, text: String) -> Result<Embedding, ActorError> {
        let mut v = self.embed_batch(vec![text]).await?;
        v.pop()
            .ok_or_else(|| ActorError::Embed("no vector returned".into()))
    }

    /// Validates, embeds (Inference, in batches) and stores catalog items, then
    /// updates and saves the index. All or nothing per call.
    pub async fn upsert_catalog(
        &self,
        items: Vec<CatalogItem>,
    ) -> Result<CatalogUpdate, ActorError> {
        for (i, it) in items.iter().enumerate() {
            it.validate()
                .map_err(|e| ActorError::Invalid(format!("item {i} ({}): {e}", it.id)))?;
        }
        let max = self.shared.cfg.inference.max_batch.max(1);
        let mut entries = Vec::with_capacity(items.len());
        for chunk in items.chunks(max) {
            let texts = chunk.iter().map(CatalogItem::embedding_text).collect();
            let vecs = self.embed_batch(texts).await?;
            for (item, v) in chunk.iter().zip(vecs) {
                entries.push(CatalogEntry {
                    item: item.clone(),
                    embedding: v,
                });
            }
        }
        self.upsert_entries(entries).await
    }

    /// Stores catalog entries that already carry embeddings.
    pub async fn upsert_entries(
        &self,
        entries: Vec<CatalogEntry>,
    ) -> Result<CatalogUpdate, ActorError> {
        ask(self.shared.memory.get(), ChildKind::Memory, |r| {
            MemoryMsg::UpsertCatalog(entries, r)
        })
        .await
    }

    /// Counters, the sync's included.
    pub async fn stats(&self) -> Result<Stats, ActorError> {
        let mut s = ask(
            self.shared.memory.get(),
            ChildKind::Memory,
            MemoryMsg::Stats,
        )
        .await?;
        s.sync = self.sync_status();
        Ok(s)
    }

    /// The sync's counters (`enabled` false when no node is configured).
    pub fn sync_status(&self) -> SyncStatus {
        let mut s = self.shared.sync_book.lock().status(sync::now_ms());
        s.enabled = self.shared.cfg.sync.is_some();
        s
    }

    /// Runs a sync attempt now and returns what it did; the schedule goes on
    /// from there. [`ActorError::SyncDisabled`] without a configured node.
    pub async fn sync_now(&self) -> Result<SyncReport, ActorError> {
        if self.shared.cfg.sync.is_none() {
            return Err(ActorError::SyncDisabled);
        }
        ask(self.shared.sync.get(), ChildKind::Sync, SyncMsg::Now).await
    }

    /// The episode ring, newest first, at most `limit`.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, ActorError> {
        ask(self.shared.memory.get(), ChildKind::Memory, |r| {
            MemoryMsg::History(limit, r)
        })
        .await
    }

    /// Privacy rule 4: erases the viewing history and local patterns.
    pub async fn forget(&self) -> Result<(), ActorError> {
        ask(
            self.shared.memory.get(),
            ChildKind::Memory,
            MemoryMsg::Forget,
        )
        .await
    }

    /// Health: model, store, index, children, restarts.
    pub fn health(&self) -> Health {
        let running: Vec<ChildKind> = ChildKind::ALL
            .into_iter()
            .filter(|k| match k {
                ChildKind::Inference => self.shared.inference.get().is_some(),
                ChildKind::Memory => self.shared.memory.get().is_some(),
                ChildKind::Sync => self.shared.sync.get().is_some(),
            })
            .collect();
        let st = self.shared.status();
        Health {
            model: match &st.model {
                ModelStatus::Loading => "loading".into(),
                ModelStatus::Ready => "ready".into(),
                ModelStatus::Failed(e) => format!("failed: {e}"),
            },
            store: st.store.clone().unwrap_or_else(|| "down".into()),
            store_recovered: st.store_recovered.clone(),
            index: st
                .index
                .as_ref()
                .map_or_else(|| "down".into(), |i| i.0.clone()),
            index_rebuilt_reason: st.index.as_ref().and_then(|i| i.1.clone()),
            index_isa: st.index_isa.clone(),
            running,
            restarts: ChildKind::ALL
                .iter()
                .map(|k| (*k, st.restarts[slot(*k)]))
                .collect(),
            last_failures: ChildKind::ALL
                .iter()
                .filter_map(|k| st.last_failure[slot(*k)].clone().map(|f| (*k, f)))
                .collect(),
        }
    }

    /// Test hook (`testing` feature): makes the Inference actor panic in the middle of its next
    /// batch (requests in that batch and queued get [`ActorError::Crashed`]).
    /// Refused unless [`BrainConfig::debug_ops`].
    #[cfg(feature = "testing")]
    pub fn debug_panic_inference(&self) -> Result<(), ActorError> {
        if !self.shared.cfg.debug_ops {
            return Err(ActorError::DebugDisabled);
        }
        let a = self
            .shared
            .inference
            .get()
            .ok_or(ActorError::Unavailable(ChildKind::Inference))?;
        a.cast(InferenceMsg::ArmPanic)
            .map_err(|_| ActorError::Unavailable(ChildKind::Inference))
    }

    /// Stops the children (Memory last, so its redb handle closes after every
    /// write it accepted) and the supervisor. Waits at most `timeout` per actor.
    pub async fn shutdown(&self, timeout: Duration) {
        let _ = self
            .supervisor
            .call(SupervisorMsg::Shutdown, Some(timeout * 4))
            .await;
        self.supervisor.stop(None);
    }
}
