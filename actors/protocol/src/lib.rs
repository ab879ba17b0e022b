//! omega-protocol: what the TV and the constellation say to each other.
//!
//! * [`domain`]: validated domain types (ids, contexts, patterns, catalog,
//!   sync request and response, typed sync errors).
//! * [`embedding`]: the 384-d [`Embedding`] and its wire quantizations.
//! * [`wire`]: the compact, bounded mirror postcard writes; explicit
//!   conversions to and from the domain types.
//! * [`codec`]: versioned, length-prefixed frames with hard size limits.
//! * [`limits`]: every bound the protocol enforces.
//! * [`catalog_import`]: the formats catalog items arrive in (JSON lines,
//!   MovieLens `u.item` and `movies.csv`).
//!
//! This crate is sans-IO: no sockets, no async runtime, no TLS (those are in
//! `omega-transport`), and nothing in it reads a clock.

pub mod catalog_import;
pub mod codec;
pub mod domain;
pub mod embedding;
pub mod hash;
pub mod limits;
pub mod wire;

pub use codec::CodecError;
pub use domain::*;
pub use embedding::{Embedding, EmbeddingError, I8Embedding, TernaryEmbedding, EMBEDDING_DIM};
pub use wire::{I8Form, TernaryForm, PROTOCOL_VERSION};
