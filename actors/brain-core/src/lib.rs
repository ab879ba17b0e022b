//! omega-brain-core: the TV brain's plain logic, with no IO.
//!
//! Plain functions over plain data; the caller (omega-brain's store and
//! actors) does the reading and writing. Nothing here reads a clock, touches
//! a file or depends on tokio, ractor, redb, usearch or the model.
//!
//! * [`state`]: [`BrainState`], the in-memory state the store mirrors and the
//!   recommender reads (catalog, patterns, globals, trends, episodes, versions).
//! * [`patterns`]: folding of watches into local patterns per context.
//! * [`delta`]: building the pattern upload under the privacy rules.
//! * [`fleet`]: the region's fleet knowledge (the node's private aggregates)
//!   as fleet pages deliver it, and the signals the recommender draws from it.
//! * [`recommender`]: `recommend`, the hot path, over a [`CandidateSearch`];
//!   its request and response are the socket's serde types.
//! * [`release`]: the next private release's vector, before noise.
//! * [`round_client`]: the TV's side of an aggregation round: takes part or
//!   declines, noises and charges the release, answers each secagg step.
//! * [`schedule`]: when the TV syncs next and what it sends, within TV-side
//!   bounds a node cannot move.
//! * [`sync`]: the plans of what a sync, a catalog change and an
//!   acknowledgement change.
//! * [`error`]: [`CoreError`], what these plans and the recommender refuse.

pub mod delta;
pub mod error;
pub mod fleet;
pub mod patterns;
pub mod recommender;
pub mod release;
pub mod round_client;
pub mod schedule;
pub mod state;
pub mod sync;

pub use delta::{DeltaConfig, DeltaPlan};
pub use error::CoreError;
pub use fleet::{FleetKnowledge, PageApplied};
pub use patterns::{LocalPattern, PatternBook, PatternConfig, PatternInfo};
pub use recommender::{
    recommend, recommend_among, CandidateSearch, Reason, RecommendRequest, RecommendResponse,
    Recommendation, RecommenderConfig,
};
pub use round_client::{
    PrivacyState, PrivacyStatus, RoundClient, RoundClientConfig, RoundClientError,
};
pub use schedule::{Next, Outcome, Schedule, ScheduleConfig, ScheduleConfigError, UploadKind};
pub use state::{BrainState, Catalog, CatalogRecord, Episode, Versions};
pub use sync::{
    plan_ack, plan_catalog, plan_sync, AckPlan, CatalogChange, CatalogPlan, SyncLimits, SyncPlan,
};
