//! What the brain's plain logic can refuse.
//!
//! Nothing here touches a disk: a [`CoreError`] means a plan was refused
//! before anything was written, so the caller has changed nothing.

use omega_protocol::DomainError;

/// A refusal of the brain's plain logic (planning a catalog change or an
/// acknowledgement, searching candidates).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The catalog is at its configured maximum and the change would add items.
    /// Nothing was applied (neither the new items nor the rest of the page).
    #[error("catalog full: {current} items + {adding} new would exceed the limit of {max}")]
    CatalogFull {
        /// Items held now.
        current: usize,
        /// New items the change would add.
        adding: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An input value is invalid (bad fraction, bad embedding, bad id).
    #[error("invalid input: {0}")]
    Invalid(#[from] DomainError),
    /// The node acknowledged a pattern version the device never reached, or one
    /// older than the last acknowledgement.
    #[error("acknowledged version {acked} is outside {last_acked}..={current}")]
    BadAck {
        /// What the node acknowledged.
        acked: u64,
        /// The previous acknowledgement.
        last_acked: u64,
        /// The device's current pattern version.
        current: u64,
    },
    /// The candidate search behind [`crate::CandidateSearch`] failed (the
    /// vector index refused a query).
    #[error("candidate search: {0}")]
    Search(String),
}
