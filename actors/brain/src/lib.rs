//! omega-brain: the TV's memory and recommender (the actors and the daemon
//! wiring come on top of these).
//!
//! * [`store`]: [`BrainStore`], the redb-backed source of truth (episodes,
//!   local and global patterns, trends, catalog, versions), durable per call,
//!   self-healing on a damaged file.
//! * [`index`]: [`CatalogIndex`], the usearch HNSW index over catalog
//!   embeddings: a cache persisted next to the redb file, rebuilt when
//!   missing, stale or damaged.
//! * [`patterns`]: sans-IO folding of watches into local patterns per context.
//! * [`delta`]: sans-IO delta / snapshot building under the privacy rules.
//! * [`recommender`]: sans-IO `recommend`, the hot path.
//! * [`state`]: the in-memory state the store mirrors and the recommender reads.
//! * [`error`]: the typed [`BrainError`] of every fallible call.
//! * [`actors`]: the supervised ractor actors (inference, memory,
//!   recommender; sync to come) and [`actors::Brain`], the handle the daemon
//!   and the benchmarks talk to.

pub mod actors;
pub mod delta;
pub mod error;
pub mod index;
pub mod patterns;
pub mod recommender;
pub mod state;
pub mod store;

pub use delta::{DeltaConfig, DeltaPlan};
pub use error::BrainError;
pub use index::{CandidateSearch, CatalogIndex, IndexConfig, IndexLoad, IndexScalar};
pub use patterns::{LocalPattern, PatternBook, PatternConfig, PatternInfo};
pub use recommender::{recommend, Reason, RecommendRequest, Recommendation, RecommenderConfig};
pub use state::{BrainState, Catalog, CatalogRecord, SharedState, Versions};
pub use store::{BrainStore, CatalogChange, ObserveOutcome, OpenOutcome, StoreConfig, SyncApplied};
