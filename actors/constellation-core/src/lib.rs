//! omega-constellation-core: the constellation node's plain logic, with no
//! runtime, socket, clock or database underneath (DESIGN.md, "Constellation").
//!
//! * [`store`]: the [`store::PatternStore`] interface (shaped for ScyllaDB as
//!   well as redb), its record types and errors, and [`store::MemoryStore`],
//!   the in-memory reference model. With the `testing` feature: the shared
//!   store test suite and a fault-injecting wrapper.
//! * [`cluster`]: membership and the federation lease of nodes sharing one
//!   store ([`cluster::ClusterStore`]), their timing and an in-memory model.
//! * [`shard`]: devices → virtual shards (stable hash) → owning node
//!   (rendezvous hashing over the membership).
//! * [`sync`]: the sync decisions: validation, the per-device rate limit
//!   (clock passed in), idempotence by device version and the response. The
//!   core names the store reads it needs and returns the write to make; the
//!   shell (omega-constellation) performs them.
//! * [`federation`]: device patterns → global patterns and trends per region.
//! * [`aggregate`]: sums of private contributions → regional title and pair
//!   totals, and what of them is published.
//! * [`rounds`]: one region's aggregation rounds: invitations on sync, the
//!   secure-aggregation phases and their deadlines, the sum folded into the
//!   region's totals.
//!
//! * [`learning`]: per region, when rounds open and over which layout, the
//!   rounds driven from syncs, sums folded and published as fleet pages.
//!
//! Nothing here reads a clock, opens a socket or a file, or draws randomness
//! except through an injected RNG.

pub mod aggregate;
pub mod cluster;
pub mod federation;
pub mod learning;
pub mod rounds;
pub mod shard;
pub mod store;
pub mod sync;
