//! The constellation node's actors: shards, federation, catalog, pattern store.
//! Filled in by the "Constellation node" issue; this crate only reserves the
//! place in the workspace so the dependency layering is fixed from the start.
