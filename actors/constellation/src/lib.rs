//! omega-constellation: the constellation node's IO shell around
//! [`omega_constellation_core`]: the actors, the durable redb store, the
//! text embedder and the catalog importer (DESIGN.md, "Constellation").
//!
//! * [`store`]: the core's [`store::PatternStore`] interface and types, the
//!   embedded [`store::RedbStore`] and the shared [`store::ScyllaStore`].
//! * [`sync`]: the core's sync decisions and [`sync::run`], the shell that
//!   performs the reads and the write they name against a store.
//! * [`shard`], [`federation`], [`cluster`]: the core's shard map, federation,
//!   and cluster membership and lease (implemented by [`store::ScyllaStore`]).
//! * [`actors`]: the thin actor shell (ractor): a node supervisor, shard
//!   actors, the federation timer and the catalog importer.

pub mod actors;
mod group_commit;
mod record;
mod redb_store;
mod scylla_store;
pub mod sync;

pub use omega_constellation_core::{cluster, federation, shard};

/// The node's storage: the core's interface and types, the redb store and
/// the ScyllaDB/Cassandra store.
pub mod store {
    pub use crate::redb_store::{GroupOptions, RedbStore};
    #[cfg(feature = "testing")]
    pub use crate::scylla_store::{cql_test_target, fresh_test_options, fresh_test_store};
    pub use crate::scylla_store::{
        parse_consistency, schema_statements, Credentials, ScyllaOptions, ScyllaStore, SCHEMA_CQL,
        SCYLLA_FORMAT,
    };
    pub use omega_constellation_core::store::*;
}
