//! omega-constellation: the constellation node's logic, kept sans-IO so it
//! can be tested without sockets or clocks (DESIGN.md, "Constellation").
//!
//! * [`store`]: the [`store::PatternStore`] interface (shaped for ScyllaDB as
//!   well as redb), the embedded [`store::RedbStore`], the in-memory reference
//!   model, a fault-injecting wrapper and the shared store test suite.
//! * [`shard`]: devices → virtual shards (stable hash) → owning node
//!   (rendezvous hashing over the membership).
//! * [`sync`]: the sync core: validation, per-device rate limit, idempotent
//!   application by device version, the response (globals, trends, catalog
//!   page, randomized next sync), and the in-flight permit counter.
//! * [`federation`]: device patterns → global patterns and trends per region.
//! * [`actors`]: the thin actor shell over the above (ractor): a node
//!   supervisor, shard actors, the federation timer and the catalog importer.
//!
//! Outside [`actors`], nothing here reads a clock, opens a socket or draws
//! randomness except through an injected RNG; the actors and the node binary
//! own all IO.

pub mod actors;
pub mod federation;
pub mod shard;
pub mod store;
pub mod sync;
