//! The one error type of the brain's memory and recommender.
//!
//! Every variant says what failed and whether anything was changed: a write
//! that fails ([`BrainError::Storage`], [`BrainError::Io`]) never leaves a
//! half-applied change behind, in redb or in memory.

use std::path::PathBuf;

use omega_protocol::{ContentId, DomainError};

/// What went wrong in the brain's memory, index or recommender.
#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    /// redb failed to read or commit (disk full, I/O error, lock held by another
    /// process). The transaction was rolled back: the previous state is intact,
    /// on disk and in memory.
    #[error("brain store: {0}")]
    Storage(#[from] redb::Error),
    /// A file operation outside redb failed (moving a damaged file aside,
    /// writing the index file).
    #[error("{what} {path:?}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record in the store does not decode. On open this triggers recovery
    /// (the file is moved aside); later it is returned as is.
    #[error("damaged record in table {table}: {detail}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// What is wrong with it.
        detail: String,
    },
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
    /// A content id is not in the catalog (for operations that need it to be).
    #[error("unknown content id {0}")]
    UnknownContent(ContentId),
    /// usearch refused an operation (allocation failure, bad dimensions).
    #[error("vector index: {0}")]
    Index(String),
}

impl BrainError {
    pub(crate) fn storage(e: impl Into<redb::Error>) -> Self {
        BrainError::Storage(e.into())
    }

    pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> Self {
        BrainError::Corrupt {
            table,
            detail: detail.to_string(),
        }
    }
}
