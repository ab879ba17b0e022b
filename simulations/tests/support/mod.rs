//! What the simulator's integration tests share.

/// The model directory (`OMEGA_MODEL_DIR` or the workspace's `models/`).
pub use omega_embed::default_model_dir as model_dir;
