//! omega-constellation: the constellation node's IO shell around
//! [`omega_constellation_core`]: the actors, the durable redb store, the
//! text embedder and the catalog importer (DESIGN.md, "Constellation").
//!
//! * [`store`]: the core's [`store::PatternStore`] interface and types, and
//!   the embedded [`store::RedbStore`].
//! * [`sync`]: the core's sync decisions and [`sync::run`], the shell that
//!   performs the reads and the write they name against a store.
//! * [`shard`], [`federation`]: the core's shard map and federation.
//! * [`actors`]: the thin actor shell (ractor): a node supervisor, shard
//!   actors, the federation timer and the catalog importer.

pub mod actors;
mod redb_store;
pub mod sync;

pub use omega_constellation_core::{federation, shard};

/// The node's storage: the core's interface and types, and the redb store.
pub mod store {
    pub use crate::redb_store::RedbStore;
    pub use omega_constellation_core::store::*;
}
