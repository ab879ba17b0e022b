//! omega-protocol: what the TV and the constellation say to each other.
//!
//! * [`domain`]: validated domain types (ids, contexts, patterns, catalog,
//!   sync request and response, typed sync errors).
//! * [`embedding`]: the 384-d [`Embedding`] and its wire quantizations.
//! * [`wire`]: the compact, bounded mirror postcard writes; explicit
//!   conversions to and from the domain types.
//! * [`codec`]: versioned, length-prefixed frames with hard size limits.
//! * [`quic`]: quinn + rustls with mutual TLS, ALPN `omega/1`, revocation,
//!   device identity from the certificate.
//! * [`limits`]: every bound the protocol enforces.
//!
//! This crate is sans-IO except for [`quic`] and the async frame reader in
//! [`codec`]; nothing in it reads a clock.

pub mod codec;
pub mod domain;
pub mod embedding;
pub mod hash;
pub mod limits;
pub mod quic;
pub mod wire;

pub use codec::CodecError;
pub use domain::*;
pub use embedding::{Embedding, EmbeddingError, I8Embedding, TernaryEmbedding, EMBEDDING_DIM};
pub use wire::{I8Form, TernaryForm, PROTOCOL_VERSION};
