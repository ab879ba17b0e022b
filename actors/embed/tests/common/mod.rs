//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The real model: `OMEGA_MODEL_DIR`, else `models/all-MiniLM-L6-v2` at the workspace
/// root (where `scripts/fetch-model.sh` puts it). Fails loudly when it is missing, so
/// that a machine without the model does not pass the tests by skipping them.
pub fn model_dir() -> PathBuf {
    let dir = omega_embed::default_model_dir();
    assert!(
        dir.join("model.safetensors").is_file(),
        "model not found in {}: run scripts/fetch-model.sh (or set OMEGA_MODEL_DIR)",
        dir.display()
    );
    dir
}

/// Cosine similarity in f64.
#[allow(dead_code)] // not every test file uses it
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
