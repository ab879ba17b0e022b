//! Memory: owns the [`BrainStore`] (redb, the truth) and the [`CatalogIndex`]
//! (usearch, a cache), and shares both, read-only, with `recommend`.
//!
//! * Every redb call (open, commit) runs in `spawn_blocking`: the store is
//!   moved into the blocking task and back. A panic there fails the actor; the
//!   supervisor restarts it and the new incarnation reopens the file.
//! * Sync: Memory builds each request ([`BrainStore::prepare_sync`]: a
//!   pending forget first, else the upload) and applies each accepted answer
//!   ([`BrainStore::finish_sync`]), catalog pages included (to the index as
//!   below).
//! * `observe` replies after the commit (durable). A failed commit (disk full)
//!   replies with the error and changes nothing.
//! * Catalog changes are applied to the index under its write lock; then the
//!   index is serialized under the read lock (recommends keep searching) and
//!   the file written and synced with no lock held. A failed save is logged:
//!   the file is a cache and is rebuilt at the next start if stale.
//! * Sharing: the store's in-memory state is a [`crate::SharedState`]; the
//!   store mirrors each commit into it under the write lock before the call
//!   returns, so a `recommend` sent after any reply of this actor sees that
//!   write. At start (and after a restart, with the reopened store) the actor
//!   publishes a [`MemoryView`] of the state and the index on the shared
//!   `watch` channel, which every `recommend` reads; nothing is copied per
//!   write.

use std::sync::Arc;

use parking_lot::RwLock;

use omega_brain_core::{CatalogChange, UploadKind};
use omega_protocol::{CatalogEntry, Region, SyncAccepted, ViewingEvent};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{
    ActorError, CatalogUpdate, HistoryEntry, MemoryView, Reply, Shared, Stats, StoreRecovery,
};
use crate::index::{CatalogIndex, IndexLoad};
use crate::store::{
    BrainStore, ObserveOutcome, OpenOutcome, PreparedSync, RoundCredentials, SyncFinished,
};

pub(crate) enum MemoryMsg {
    Observe(ViewingEvent, Reply<ObserveOutcome>),
    /// The next sync request (see [`BrainStore::prepare_sync`]).
    PrepareSync(UploadKind, Region, RoundCredentials, Reply<PreparedSync>),
    /// A node's acceptance of a prepared request (see
    /// [`BrainStore::finish_sync`]); catalog changes go to the index.
    FinishSync(Box<PreparedSync>, Box<SyncAccepted>, Reply<SyncFinished>),
    UpsertCatalog(Vec<CatalogEntry>, Reply<CatalogUpdate>),
    Stats(Reply<Stats>),
    History(usize, Reply<Vec<HistoryEntry>>),
    Forget(Reply<()>),
}

pub(crate) struct Memory;

struct Inner {
    store: BrainStore,
    index: Arc<RwLock<CatalogIndex>>,
}

impl Inner {
    /// Applies a committed catalog change to the index, then saves the index.
    /// Locks in recommend's order: state, then index. Serialized under the
    /// index's read lock, written and synced with none: recommends never wait
    /// on the disk. A failed save is logged (the file is a cache).
    fn index_catalog_change(&mut self, change: &CatalogChange) -> Result<(), crate::BrainError> {
        if change.is_empty() {
            return Ok(());
        }
        let file = {
            let state = self.store.state();
            self.index.write().apply(&state.catalog, change)?;
            let rev = state.versions.catalog_rev;
            self.index.read().snapshot(&state.catalog, rev)
        };
        if let Err(e) = file.and_then(|f| f.write(&self.store.index_path())) {
            tracing::warn!(error = %e, "saving the index failed; it is rebuilt at the next start");
        }
        Ok(())
    }
}

pub(crate) struct MemoryState {
    inner: Option<Inner>,
}

/// Runs `f` on the store in a blocking task (omega-supervise's take/put-back
/// helper); a panic there is this actor's.
async fn blocking<R: Send + 'static>(
    st: &mut MemoryState,
    f: impl FnOnce(&mut Inner) -> R + Send + 'static,
) -> Result<R, ActorProcessingErr> {
    Ok(omega_supervise::blocking(&mut st.inner, "store", f).await?)
}

impl Actor for Memory {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cfg = shared.cfg.clone();
        let opened = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&cfg.data_dir)
                .map_err(|e| format!("creating data directory {}: {e}", cfg.data_dir.display()))?;
            let (store, outcome) =
                BrainStore::open(cfg.store_path(), cfg.store).map_err(|e| e.to_string())?;
            let rev = store.state().versions.catalog_rev;
            let (index, load) = CatalogIndex::open_or_rebuild(
                &store.index_path(),
                &store.state().catalog,
                rev,
                cfg.index,
            )
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((store, outcome, index, load))
        })
        .await
        .map_err(|e| format!("store open task: {e}"))?;
        let (store, outcome, index, load) = opened?;
        {
            let mut s = shared.status();
            match outcome {
                OpenOutcome::Opened => s.store = Some("opened".into()),
                OpenOutcome::Created => s.store = Some("created".into()),
                OpenOutcome::Recovered { moved_to, reason } => {
                    tracing::error!(moved_to = %moved_to.display(), %reason,
                        "THE BRAIN STORE WAS DAMAGED: moved aside, starting with an empty memory");
                    s.store = Some("recovered".into());
                    s.store_recovered = Some(StoreRecovery { moved_to, reason });
                }
            }
            s.index = Some(match load {
                IndexLoad::Loaded => ("loaded".into(), None),
                IndexLoad::Rebuilt { reason } => ("rebuilt".into(), Some(reason)),
            });
            let isa = index.isa();
            tracing::info!(%isa, "catalog index distance kernel");
            s.index_isa = Some(isa);
        }
        let index = Arc::new(RwLock::new(index));
        shared.view_tx.send_replace(Arc::new(MemoryView {
            state: store.shared_state(),
            index: index.clone(),
        }));
        Ok(MemoryState {
            inner: Some(Inner { store, index }),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MemoryMsg::Observe(ev, reply) => {
                let r = blocking(st, move |i| i.store.observe(ev)).await?;
                let _ = reply.send(r.map_err(ActorError::from));
            }
            MemoryMsg::UpsertCatalog(entries, reply) => {
                let r = blocking(st, move |i| {
                    let change = i.store.update_catalog(&entries, &[])?;
                    i.index_catalog_change(&change)?;
                    Ok::<_, crate::BrainError>(CatalogUpdate {
                        upserted: change.upserted.len(),
                        catalog_items: i.store.state().catalog.len(),
                    })
                })
                .await?;
                let _ = reply.send(r.map_err(ActorError::from));
            }
            MemoryMsg::PrepareSync(kind, region, credentials, reply) => {
                // Blocking: answering a round message may store the privacy
                // state (a redb commit) and check a member list's signatures
                // before the request leaves.
                let r = blocking(st, move |i| {
                    let now = super::sync::now_ms();
                    i.store
                        .prepare_sync(kind, region, now, &credentials, &mut rand::rng())
                })
                .await?;
                let _ = reply.send(r.map_err(ActorError::from));
            }
            MemoryMsg::FinishSync(sent, accepted, reply) => {
                let r = blocking(st, move |i| {
                    let f = i.store.finish_sync(&sent, &accepted)?;
                    i.index_catalog_change(&f.applied.catalog)?;
                    Ok::<_, crate::BrainError>(f)
                })
                .await?;
                let _ = reply.send(r.map_err(ActorError::from));
            }
            MemoryMsg::Forget(reply) => {
                let r = blocking(st, |i| i.store.forget()).await?;
                let _ = reply.send(r.map_err(ActorError::from));
            }
            MemoryMsg::Stats(reply) => {
                let i = st
                    .inner
                    .as_ref()
                    .ok_or(omega_supervise::BlockingError::Lost("store"))?;
                let s = i.store.state();
                let index_items = i.index.read().len();
                let _ = reply.send(Ok(Stats {
                    episodes: s.episodes.len(),
                    last_episode_seq: s.episodes.back().map(|e| e.seq),
                    local_patterns: s.patterns.len(),
                    global_patterns: s.globals.len(),
                    trends: s.trends.len(),
                    catalog_items: s.catalog.len(),
                    index_items,
                    pattern_version: s.versions.pattern,
                    acked_version: s.versions.acked,
                    global_version: s.versions.global,
                    catalog_version: s.versions.catalog,
                    catalog_rev: s.versions.catalog_rev,
                    forget_pending: i.store.forget_pending().is_some(),
                    fleet_version: s.fleet.version,
                    fleet_titles: s.fleet.order.len(),
                    sync: super::sync::SyncStatus::default(),
                    privacy: i
                        .store
                        .privacy_status(super::sync::now_ms())
                        .inspect_err(|e| tracing::error!(error = %e, "privacy status"))
                        .ok(),
                }));
            }
            MemoryMsg::History(limit, reply) => {
                let i = st
                    .inner
                    .as_ref()
                    .ok_or(omega_supervise::BlockingError::Lost("store"))?;
                let out = i
                    .store
                    .state()
                    .episodes
                    .iter()
                    .rev()
                    .take(limit)
                    .map(|e| HistoryEntry {
                        seq: e.seq,
                        content_id: e.event.content_id.clone(),
                        fraction: e.event.watched_fraction,
                        at: e.event.timestamp_secs,
                        hour: e.event.context.hour,
                        weekday: e.event.context.weekday,
                    })
                    .collect();
                let _ = reply.send(Ok(out));
            }
        }
        Ok(())
    }
}
