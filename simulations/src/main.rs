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
        #[command(flatten)]
        model: ModelDir,
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
        #[command(flatten)]
        embeddings: CatalogEmbeddings,
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
    /// Many TVs through the real node code in virtual time, no sockets
    /// (BENCHMARKS.md, `fleet`): syncs per second by hour, bytes per device
    /// per day, how fast a taste spreads in a region, the federation job's
    /// cost by fleet size, and the nodes a 400-million-TV fleet needs.
    Fleet {
        #[command(flatten)]
        opts: omega_sim::fleet::FleetOptions,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Load a node with many devices over real QUIC with mutual TLS, each
    /// with its own certificate (BENCHMARKS.md, `load`).
    ///
    /// --local starts an omega-node in a child process (this binary
    /// re-executed) with a fresh temporary data directory (the embedded
    /// redb store), the per-device rate limit off and room for every
    /// device's connection; its certificates (CAs, node certificate, device
    /// batches) are made on first use under --cache-dir and reused. --node
    /// ADDR --certs DIR loads a running node; device certificates are
    /// bulk-issued into DIR (it must hold the CA keys) once per count and
    /// reused. Exits non-zero when the well-behaved devices' failure share
    /// (RetryAfter is not a failure) passes --max-failure-rate.
    Load {
        /// Start a node for the run (see above).
        #[arg(long, conflicts_with_all = ["node", "certs"], required_unless_present = "node")]
        local: bool,
        /// A running node's QUIC address.
        #[arg(long, env = "OMEGA_LOAD_NODE", requires = "certs")]
        node: Option<std::net::SocketAddr>,
        /// The certificate directory of --node's CAs (omega-certs init).
        #[arg(long, env = "OMEGA_CERTS_DIR")]
        certs: Option<PathBuf>,
        /// The name --node's certificate is checked against.
        #[arg(long, env = "OMEGA_LOAD_SERVER_NAME", default_value = "localhost")]
        server_name: String,
        /// Devices, each with its own certificate (faulty ones included).
        #[arg(long, env = "OMEGA_LOAD_DEVICES", default_value_t = 100)]
        devices: usize,
        /// Seconds of the timed window (--hold: of holding the connections).
        #[arg(long, env = "OMEGA_LOAD_DURATION", default_value_t = 10.0)]
        duration: f64,
        /// Seconds over which devices start, within the window.
        #[arg(long, env = "OMEGA_LOAD_RAMP_UP", default_value_t = 0.0)]
        ramp_up: f64,
        /// Syncs per second over all devices (default: as fast as possible).
        #[arg(long, env = "OMEGA_LOAD_RATE")]
        rate: Option<f64>,
        /// A new QUIC connection with a full mTLS handshake for every sync
        /// (default: each device reuses one connection).
        #[arg(long)]
        fresh: bool,
        /// Share of devices (0 to 1) that misbehave: malformed frames,
        /// a wrong CA, a revoked certificate, bursts past the rate limit,
        /// connections dropped mid-stream (in turn).
        #[arg(long, env = "OMEGA_LOAD_FAULTS", default_value_t = 0.0)]
        faults: f64,
        /// Connect every device (uploading its snapshot), keep the
        /// connections open for --duration and report connected_max and the
        /// node's RSS then.
        #[arg(long)]
        hold: bool,
        /// Exit non-zero past this failure share of well-behaved devices.
        #[arg(long, env = "OMEGA_LOAD_MAX_FAILURE_RATE", default_value_t = 0.01)]
        max_failure_rate: f64,
        /// Client endpoints (UDP sockets) devices are spread over (default:
        /// one per 5,000 devices, at least 2).
        #[arg(long, env = "OMEGA_LOAD_ENDPOINTS")]
        endpoints: Option<usize>,
        /// Handshakes in progress at once while devices connect.
        #[arg(long, env = "OMEGA_LOAD_HANDSHAKES", default_value_t = 128)]
        handshakes: usize,
        /// Seconds before a handshake or an exchange counts as Timeout.
        #[arg(long, env = "OMEGA_LOAD_TIMEOUT", default_value_t = 10.0)]
        timeout: f64,
        /// Where --local's certificates are kept between runs.
        #[arg(long, env = "OMEGA_LOAD_CACHE", default_value = "target/omega-load")]
        cache_dir: PathBuf,
        /// Print one JSON object (BENCHMARKS.md's keys) instead of a table.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// --local's node (run by `load` in a child process).
    #[command(hide = true)]
    LoadNode {
        #[arg(long)]
        certs: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
    /// Benchmarks (BENCHMARKS.md); release builds only.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

/// The model every command that embeds text loads.
#[derive(Debug, clap::Args)]
struct ModelDir {
    /// all-MiniLM-L6-v2 directory (config.json, tokenizer.json,
    /// model.safetensors), as fetched by scripts/fetch-model.sh.
    #[arg(
        long,
        env = "OMEGA_MODEL_DIR",
        default_value = "models/all-MiniLM-L6-v2"
    )]
    model_dir: PathBuf,
}

/// The model and the embedding cache of runs that embed a MovieLens
/// catalog (`eval`'s TVs, `bench sync`'s fleet).
#[derive(Debug, clap::Args)]
struct CatalogEmbeddings {
    #[command(flatten)]
    model: ModelDir,
    /// Where catalog embeddings are cached between runs.
    #[arg(long, env = "OMEGA_EVAL_CACHE", default_value = "target/eval-cache")]
    cache: PathBuf,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Sizes of the sync frames a TV sends, from a MovieLens run of the
    /// real TV and node code (eval's federated fleet).
    Sync {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// MovieLens directory; a generated data set when it is absent.
        #[arg(
            long,
            env = "OMEGA_DATASET",
            default_value = "../shared/data/movielens/ml-100k"
        )]
        dataset: PathBuf,
        #[command(flatten)]
        embeddings: CatalogEmbeddings,
        /// Seed of the fleet's schedules and keys.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
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
        #[command(flatten)]
        model: ModelDir,
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

fn seconds(name: &str, secs: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(secs)
        .map_err(|_| anyhow::anyhow!("{name}: {secs} is not a number of seconds"))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Fleet {
            mut opts,
            json,
            quiet,
        } => {
            opts.progress = !quiet;
            let node_syncs_per_sec = opts.node_syncs_per_sec;
            eprintln!("fleet: one node at {node_syncs_per_sec:.0} syncs/s (--node-syncs-per-sec)");
            // CPU-bound: off the async executor.
            let report =
                tokio::task::spawn_blocking(move || omega_sim::fleet::run(&opts)).await??;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", omega_sim::fleet::render(&report));
            }
            Ok(())
        }
        Command::Load {
            local,
            node,
            certs,
            server_name,
            devices,
            duration,
            ramp_up,
            rate,
            fresh,
            faults,
            hold,
            max_failure_rate,
            endpoints,
            handshakes,
            timeout,
            cache_dir,
            json,
            quiet,
        } => {
            use omega_sim::load::{drive::Connections, LoadOptions, Target};
            let target = match (local, node, certs) {
                (true, _, _) => Target::Local,
                (false, Some(addr), Some(certs)) => Target::Node {
                    addr,
                    certs,
                    server_name,
                },
                _ => anyhow::bail!("give --local, or --node ADDR with --certs DIR"),
            };
            if !(0.0..=1.0).contains(&faults) {
                anyhow::bail!("--faults is a share between 0 and 1");
            }
            if !(0.0..=1.0).contains(&max_failure_rate) {
                anyhow::bail!("--max-failure-rate is a share between 0 and 1");
            }
            let timeout = seconds("--timeout", timeout)?;
            if timeout.is_zero() {
                anyhow::bail!("--timeout must be more than 0 seconds");
            }
            let outcome = omega_sim::load::run(LoadOptions {
                target,
                devices,
                duration: seconds("--duration", duration)?,
                ramp_up: seconds("--ramp-up", ramp_up)?,
                rate,
                connections: if fresh {
                    Connections::Fresh
                } else {
                    Connections::Reused
                },
                faults,
                hold,
                endpoints,
                handshakes,
                timeout,
                cache_dir,
                exe: std::env::current_exe()?,
                progress: !quiet,
            })
            .await?;
            if json {
                println!("{}", outcome.json);
            } else {
                print!("{}", omega_sim::load::render(&outcome.json));
            }
            if outcome.failure_rate > max_failure_rate {
                anyhow::bail!(
                    "failure share {:.4} above --max-failure-rate {max_failure_rate}",
                    outcome.failure_rate
                );
            }
            Ok(())
        }
        Command::LoadNode {
            certs,
            data_dir,
            config,
        } => {
            omega_sim::load::local::serve_child(omega_sim::load::local::ChildArgs {
                certs,
                data_dir,
                config,
            })
            .await
        }
        Command::Eval {
            dataset,
            protocol,
            json,
            users,
            seed,
            methods,
            embeddings:
                CatalogEmbeddings {
                    model: ModelDir { model_dir },
                    cache,
                },
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
                BenchWhat::Sync {
                    json,
                    dataset,
                    embeddings:
                        CatalogEmbeddings {
                            model: ModelDir { model_dir },
                            cache,
                        },
                    seed,
                    quiet,
                },
        } => {
            let opts = omega_sim::bench_sync::SyncBenchOptions {
                dataset,
                model_dir,
                cache_dir: cache,
                seed,
                progress: !quiet,
            };
            // CPU-bound: off the async executor.
            let report =
                tokio::task::spawn_blocking(move || omega_sim::bench_sync::run_sync(&opts))
                    .await??;
            if json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Brain {
                    json,
                    items,
                    patterns,
                    model: ModelDir { model_dir },
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
            model: ModelDir { model_dir },
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
