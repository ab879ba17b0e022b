//! `omega-sim bench sync [--json]`: the sizes of what a TV sends when it
//! syncs (BENCHMARKS.md), from a MovieLens run of the real code.
//!
//! The run is `eval`'s `federated` method ([`Federated`]): every MovieLens
//! user as a TV (omega-brain's store, privacy layer and secure-aggregation
//! client) syncing with the node's sync code in simulated time, rounds
//! included, asked to keep every request frame of every TV. The upload
//! figures are those frames' lengths (header included: what goes on the
//! wire). Without a MovieLens directory a generated data set (the demo's)
//! is used; the JSON names which.
//!
//! The download figures are the lengths of the answer frames those TVs
//! received that carried no catalog page (BENCHMARKS.md: catalog pages
//! aside); fleet pages and round messages are in them.

use std::path::PathBuf;

use anyhow::Result;
use indicatif::ProgressBar;
use serde_json::{json, Value};

use crate::eval::federated::{Federated, FederatedOptions};
use crate::eval::{Method, Protocol, Split};
use crate::movielens::{self, Dataset};

/// Options of `bench sync`.
#[derive(Debug, Clone)]
pub struct SyncBenchOptions {
    /// MovieLens directory; a generated data set when it is absent.
    pub dataset: PathBuf,
    /// all-MiniLM-L6-v2 directory (the TVs' catalog embeddings).
    pub model_dir: PathBuf,
    /// Where catalog embeddings are cached between runs.
    pub cache_dir: PathBuf,
    /// Seed of the run's schedules and keys.
    pub seed: u64,
    /// Show progress bars.
    pub progress: bool,
}

/// The `p`-quantile (nearest rank) of sorted `v`.
fn quantile(v: &[usize], p: f64) -> Option<usize> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied()
}

/// Runs the fleet and returns BENCHMARKS.md's object.
pub fn run_sync(opts: &SyncBenchOptions) -> Result<Value> {
    let (dataset, source) = if opts.dataset.is_dir() {
        (movielens::read_dataset(&opts.dataset)?, "movielens")
    } else {
        let (items, users) = movielens::generated(600, 300, opts.seed);
        let dataset = Dataset {
            name: "generated".into(),
            items,
            users,
            dropped_ratings: 0,
            dropped_users: 0,
        };
        (dataset, "generated")
    };
    let name = dataset.name.clone();
    let split = Split::new(dataset)?;
    let tvs = split.users.len();
    let mut fleet = Federated::new(
        opts.model_dir.clone(),
        opts.cache_dir.clone(),
        Protocol::LooFull,
        FederatedOptions {
            seed: opts.seed,
            keep_frames: tvs,
            ..Default::default()
        },
    );
    let progress = if opts.progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    fleet.train(&split, &progress)?;
    progress.finish_and_clear();
    let (mut up, mut down): (Vec<usize>, Vec<usize>) = fleet
        .result()
        .map(|r| {
            (
                r.frames.iter().flatten().map(Vec::len).collect(),
                r.answers.iter().flatten().copied().collect(),
            )
        })
        .unwrap_or_default();
    up.sort_unstable();
    down.sort_unstable();
    Ok(json!({
        "upload_bytes_p50": quantile(&up, 0.5),
        "upload_bytes_max": up.last(),
        "download_bytes_p50": quantile(&down, 0.5),
        "download_bytes_max": down.last(),
        "dataset": name,
        "source": source,
        "tvs": tvs,
        "syncs": up.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.5), Some(7));
        assert_eq!(quantile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.5), Some(3));
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 1.0), Some(5));
    }
}
