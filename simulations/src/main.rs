//! `omega-sim`: simulate TVs against the constellation. See `--help`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Omega simulator: demo, and (as the node and daemon land) load tests,
/// fleet simulations, benchmarks and quality evaluation.
#[derive(Debug, Parser)]
#[command(name = "omega-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The README's main job: certificates, real embeddings, a quantized
    /// pattern delta and a sync over QUIC with mutual TLS, end to end.
    Demo {
        /// all-MiniLM-L6-v2 directory (config.json, tokenizer.json,
        /// model.safetensors), as fetched by scripts/fetch-model.sh.
        #[arg(
            long,
            env = "OMEGA_MODEL_DIR",
            default_value = "models/all-MiniLM-L6-v2"
        )]
        model_dir: PathBuf,
        /// MovieLens directory (u.item, or movies.csv of newer releases).
        #[arg(
            long,
            env = "OMEGA_DATASET",
            default_value = "../shared/data/movielens/ml-100k"
        )]
        dataset: PathBuf,
        /// Keep certificates here instead of a temporary directory.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// How many titles to embed.
        #[arg(long, default_value_t = 256)]
        titles: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Demo {
            model_dir,
            dataset,
            work_dir,
            titles,
        } => {
            omega_sim::demo::run(omega_sim::demo::DemoOptions {
                model_dir,
                dataset,
                work_dir,
                titles,
            })
            .await
        }
    }
}
