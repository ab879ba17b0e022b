//! The stores' record encoding: postcard, and a record that does not decode
//! is [`StoreError::Corrupt`] (never a panic).

use omega_constellation_core::store::StoreError;
use serde::{de::DeserializeOwned, Serialize};

/// `v` as postcard bytes.
pub(crate) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(v).map_err(|e| StoreError::backend("encode", e))
}

/// A `what` record from postcard `bytes`.
pub(crate) fn dec<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    })
}
