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
    /// The README's main job: a node with fresh certificates and the
    /// MovieLens catalog, one TV daemon and a fleet of simulated TVs replaying
    /// MovieLens users; one private aggregation round; the TV's
    /// recommendations before and after, and the figures.
    Demo {
        /// all-MiniLM-L6-v2 directory (config.json, tokenizer.json,
        /// model.safetensors), as fetched by scripts/fetch-model.sh.
        #[arg(
            long,
            env = "OMEGA_MODEL_DIR",
            default_value = "models/all-MiniLM-L6-v2"
        )]
        model_dir: PathBuf,
        /// MovieLens directory (u.item + u.data, or movies.csv +
        /// ratings.csv); a generated catalog and users when it is absent.
        #[arg(
            long,
            env = "OMEGA_DATASET",
            default_value = "../shared/data/movielens/ml-100k"
        )]
        dataset: PathBuf,
        /// Keep certificates, stores and demo.log here instead of a
        /// temporary directory.
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Simulated TVs besides the daemon's (at least 10).
        #[arg(long, default_value_t = 300)]
        fleet: usize,
    },
    /// Recommendation quality on a MovieLens data set (../shared/EVALUATION.md):
    /// HR@10 and NDCG@10 of each method, hit rate by confidence band.
    Eval {
        /// MovieLens directory: u.data + u.item (ml-100k), or ratings.csv +
        /// movies.csv.
        #[arg(
            long,
            env = "OMEGA_DATASET",
            default_value = "../shared/data/movielens/ml-100k"
        )]
        dataset: PathBuf,
        /// loo-full (rank every item not watched in training) or loo-100.
        #[arg(long, value_enum, default_value = "loo-full")]
        protocol: omega_sim::eval::Protocol,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Evaluate a seeded sample of this many users (default: all).
        #[arg(long)]
        users: Option<usize>,
        /// Seed of the user sample.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Methods, comma-separated: pop, itemknn, local, federated.
        #[arg(long, value_delimiter = ',', default_values_t = omega_sim::eval::DEFAULT_METHODS.map(String::from))]
        methods: Vec<String>,
        /// all-MiniLM-L6-v2 directory (for local).
        #[arg(
            long,
            env = "OMEGA_MODEL_DIR",
            default_value = "models/all-MiniLM-L6-v2"
        )]
        model_dir: PathBuf,
        /// Where catalog embeddings are cached between runs.
        #[arg(long, env = "OMEGA_EVAL_CACHE", default_value = "target/eval-cache")]
        cache: PathBuf,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// federated: days from the end of an aggregation round to the
        /// opening of the next.
        #[arg(long, env = "OMEGA_EVAL_ROUND_INTERVAL_DAYS", default_value_t = omega_sim::eval::federated::FederatedOptions::default().round_interval_days)]
        round_interval_days: f64,
        /// federated: most TVs in a round (at most 822: the signed member list
        /// fills an answer frame).
        #[arg(long, env = "OMEGA_EVAL_COHORT", default_value_t = omega_sim::eval::federated::FederatedOptions::default().cohort)]
        cohort: u16,
        /// federated: answers every round phase needs (more than half the
        /// cohort).
        #[arg(long, env = "OMEGA_EVAL_THRESHOLD", default_value_t = omega_sim::eval::federated::FederatedOptions::default().threshold)]
        threshold: u16,
        /// federated, ablation: after each folded round, replace the node's
        /// totals with the exact counts over every TV's watches so far (no
        /// noise, nothing hidden), to measure what the privacy mechanisms
        /// cost.
        #[arg(long)]
        exact_fleet: bool,
    },
    /// Benchmarks (BENCHMARKS.md); release builds only.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// The TV brain's actors in process: recommend, observe, embed, boot, RSS.
    Brain {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Catalog items.
        #[arg(long, default_value_t = 10_000)]
        items: usize,
        /// Local patterns.
        #[arg(long, default_value_t = 10_000)]
        patterns: usize,
        /// all-MiniLM-L6-v2 directory.
        #[arg(
            long,
            env = "OMEGA_MODEL_DIR",
            default_value = "models/all-MiniLM-L6-v2"
        )]
        model_dir: PathBuf,
        /// Where built data directories are cached between runs.
        #[arg(long, default_value = "target/bench-brain")]
        cache_dir: PathBuf,
        /// Only build the cached data directory (the benchmark runs this in a
        /// child process, so the build's memory stays out of rss_mb).
        #[arg(long, hide = true)]
        build_only: bool,
    },
}

fn main() -> Result<()> {
    // Before any other thread exists (omega-embed docs).
    omega_embed::configure_candle_threads(None);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Eval {
            dataset,
            protocol,
            json,
            users,
            seed,
            methods,
            model_dir,
            cache,
            quiet,
            round_interval_days,
            cohort,
            threshold,
            exact_fleet,
        } => {
            let opts = omega_sim::eval::EvalOptions {
                dataset,
                protocol,
                users,
                seed,
                methods,
                model_dir,
                cache_dir: cache,
                progress: !quiet,
                federated: omega_sim::eval::federated::FederatedOptions {
                    round_interval_days,
                    cohort,
                    threshold,
                    seed,
                    exact_fleet,
                    ..Default::default()
                },
            };
            // CPU-bound: off the async executor.
            let report = tokio::task::spawn_blocking(move || omega_sim::eval::run(&opts)).await??;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", omega_sim::eval::render(&report));
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Brain {
                    json,
                    items,
                    patterns,
                    model_dir,
                    cache_dir,
                    build_only,
                },
        } => {
            let opts = omega_sim::bench::BrainBenchOptions {
                model_dir,
                items,
                patterns,
                cache_dir,
            };
            if build_only {
                return omega_sim::bench::build_brain_data(opts).await;
            }
            let report = omega_sim::bench::run_brain(opts).await?;
            if json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        Command::Demo {
            model_dir,
            dataset,
            work_dir,
            fleet,
        } => {
            omega_sim::demo::run(omega_sim::demo::DemoOptions {
                model_dir,
                dataset,
                work_dir,
                fleet,
            })
            .await
        }
    }
}
