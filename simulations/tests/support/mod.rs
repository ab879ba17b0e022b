//! What the simulator's integration tests share.

use std::path::PathBuf;

/// The model directory (`OMEGA_MODEL_DIR` or the workspace's `models/`).
pub fn model_dir() -> PathBuf {
    std::env::var_os("OMEGA_MODEL_DIR").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/all-MiniLM-L6-v2"
            ))
        },
        PathBuf::from,
    )
}
