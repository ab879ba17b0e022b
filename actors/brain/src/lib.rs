//! omega-brain: the TV's memory and actors, the IO shell around
//! omega-brain-core's plain logic.
//!
//! * [`store`]: [`BrainStore`], the redb-backed source of truth (episodes,
//!   local and global patterns, trends, catalog, versions), durable per call,
//!   self-healing on a damaged file. It writes what omega-brain-core plans.
//! * [`index`]: [`CatalogIndex`], the usearch HNSW index over catalog
//!   embeddings: a cache persisted next to the redb file, rebuilt when
//!   missing, stale or damaged; the recommender's [`CandidateSearch`].
//! * [`state`]: [`SharedState`], the one in-memory [`BrainState`] the store
//!   mirrors and every `recommend` reads, behind a read-write lock.
//! * [`error`]: the typed [`BrainError`] of every fallible call.
//! * [`actors`]: the supervised ractor actors (inference, memory, and sync
//!   when a node is configured) and
//!   [`actors::Brain`], the handle the daemon and the benchmarks talk to; it
//!   runs `recommend` itself, concurrently, over the shared state and index.
//!
//! Patterns, uploads, the recommender and the sync plans live in
//! omega-brain-core; the types callers need are re-exported here.

pub mod actors;
pub mod error;
pub mod index;
pub mod state;
pub mod store;

pub use error::BrainError;
pub use index::{CatalogIndex, IndexConfig, IndexFile, IndexLoad, IndexScalar};
pub use omega_brain_core::{
    recommend, BrainState, CandidateSearch, Catalog, CatalogChange, CatalogRecord, CoreError,
    DeltaConfig, DeltaPlan, LocalPattern, PatternBook, PatternConfig, PatternInfo, Reason,
    RecommendRequest, RecommendResponse, Recommendation, RecommenderConfig, ScheduleConfig,
    UploadKind, Versions,
};
pub use state::SharedState;
pub use store::{
    BrainStore, ObserveOutcome, OpenOutcome, PreparedSync, RoundCredentials, StoreConfig,
    SyncApplied, SyncFinished,
};
