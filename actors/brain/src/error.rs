//! The one error type of the brain's memory and index.
//!
//! Every variant says what failed and whether anything was changed: a write
//! that fails ([`BrainError::Storage`], [`BrainError::DiskFull`],
//! [`BrainError::Io`]) never leaves a half-applied change behind, in redb or
//! in memory.

use std::path::PathBuf;

use omega_brain_core::CoreError;
use omega_protocol::{ContentId, DomainError};

/// What went wrong in the brain's memory, index or recommender.
#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    /// redb failed to read or commit (I/O error, lock held by another
    /// process). The transaction was rolled back: the previous state is
    /// intact, on disk and in memory.
    #[error("brain store: {0}")]
    Storage(redb::Error),
    /// redb could not write for lack of space (`ENOSPC`). Rolled back like
    /// [`BrainError::Storage`]; it succeeds again once space is freed.
    #[error("brain store: disk full: {0}")]
    DiskFull(redb::Error),
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
    /// The plain logic refused the change (catalog full, invalid input, bad
    /// acknowledgement, failed candidate search); nothing was written.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A content id is not in the catalog (for operations that need it to be).
    #[error("unknown content id {0}")]
    UnknownContent(ContentId),
    /// usearch refused an operation (allocation failure, bad dimensions).
    #[error("vector index: {0}")]
    Index(String),
    /// The privacy configuration is unusable (bounds of the aggregation
    /// rounds the TV takes part in).
    #[error("privacy configuration: {0}")]
    PrivacyConfig(#[from] omega_brain_core::round_client::RoundConfigError),
    /// The privacy accountant could not report (an invalid stored budget).
    #[error("privacy: {0}")]
    Privacy(#[from] omega_brain_core::round_client::RoundClientError),
}

impl From<DomainError> for BrainError {
    fn from(e: DomainError) -> Self {
        BrainError::Core(CoreError::Invalid(e))
    }
}

impl From<redb::Error> for BrainError {
    fn from(e: redb::Error) -> Self {
        let full = matches!(&e, redb::Error::Io(io)
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(ENOSPC));
        if full {
            BrainError::DiskFull(e)
        } else {
            BrainError::Storage(e)
        }
    }
}

/// `ENOSPC` on Linux, for an I/O error whose kind the standard library did
/// not map.
const ENOSPC: i32 = 28;

impl BrainError {
    /// A redb failure, typed ([`BrainError::DiskFull`] when the disk is full).
    pub(crate) fn storage(e: impl Into<redb::Error>) -> Self {
        Self::from(e.into())
    }

    pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> Self {
        BrainError::Corrupt {
            table,
            detail: detail.to_string(),
        }
    }
}
