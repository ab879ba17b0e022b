//! [`SharedState`]: the one in-memory [`BrainState`] (omega-brain-core), shared
//! by the store that mirrors its commits into it and the recommend path that
//! reads it.

use std::sync::Arc;

use omega_brain_core::BrainState;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The one in-memory [`BrainState`], shared by its single writer (the
/// [`crate::store::BrainStore`], which takes the write lock only to mirror a
/// commit that already succeeded: microseconds) and its readers (every
/// `recommend`, for its length, concurrently). A reader therefore sees every
/// commit acknowledged before it started, and never a half-applied one.
///
/// The lock does not poison: a panic while the write lock is held (a bug)
/// releases it; the owning actor, which failed with the panic, is restarted
/// and reloads the state from redb into a fresh `SharedState`.
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<RwLock<BrainState>>);

impl SharedState {
    /// Shares a state.
    pub fn new(state: BrainState) -> Self {
        Self(Arc::new(RwLock::new(state)))
    }

    /// Read access (blocks only while the store mirrors a commit).
    pub fn read(&self) -> RwLockReadGuard<'_, BrainState> {
        self.0.read()
    }

    /// Write access, for the store.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, BrainState> {
        self.0.write()
    }
}
