//! `omega-braind --data-dir DIR --model-dir DIR [--socket PATH] [--config FILE]`:
//! the TV daemon. See the `omega_brain_daemon` crate docs for the socket API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use omega_brain::actors::Brain;
use omega_brain_daemon::config::DaemonConfig;
use omega_brain_daemon::server::{self, ServerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Omega TV daemon: local recommendations over a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "omega-braind", version, about)]
struct Cli {
    /// Data directory (redb store, index, default socket).
    #[arg(long, env = "OMEGA_DATA_DIR")]
    data_dir: PathBuf,
    /// all-MiniLM-L6-v2 directory (config.json, tokenizer.json, model.safetensors).
    #[arg(long, env = "OMEGA_MODEL_DIR")]
    model_dir: PathBuf,
    /// Unix socket (default: DATA_DIR/brain.sock, or `socket` in the config).
    #[arg(long, env = "OMEGA_SOCKET")]
    socket: Option<PathBuf>,
    /// TOML configuration file (see the crate docs: config module).
    #[arg(long, env = "OMEGA_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> Result<()> {
    // Parsing flags and the config starts no thread; candle's thread count
    // must be set before any other thread exists (omega-embed docs) and
    // match the embedder's (`inference.threads`).
    let cli = Cli::parse();
    let cfg = match &cli.config {
        Some(p) => DaemonConfig::load(p)?,
        None => DaemonConfig::default(),
    };
    omega_embed::configure_candle_threads(cfg.inference.threads);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run(cli, cfg))
}

async fn run(cli: Cli, cfg: DaemonConfig) -> Result<()> {
    let socket = cli
        .socket
        .clone()
        .or_else(|| cfg.socket.clone())
        .unwrap_or_else(|| cli.data_dir.join("brain.sock"));
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating {}", cli.data_dir.display()))?;
    // Refuse early if another daemon is live on the socket (before touching redb).
    if cfg.debug_ops && !cfg!(feature = "testing") {
        tracing::warn!(
            "debug_ops is set but this build has no debug ops (the `testing` feature): ignored"
        );
    }
    let listener = server::bind(&socket).await?;
    let (brain, _task) = Brain::start(cfg.brain_config(&cli.data_dir, &cli.model_dir)).await?;
    let health = brain.health();
    if let Some(r) = &health.store_recovered {
        eprintln!(
            "omega-braind: WARNING: the brain store was damaged ({}); it was moved to {} and the daemon starts with an EMPTY memory",
            r.reason,
            r.moved_to.display()
        );
    }
    if let Some(why) = &health.index_rebuilt_reason {
        tracing::warn!(reason = %why, "catalog index rebuilt from the store");
    }
    tracing::info!(socket = %socket.display(), store = %health.store, "omega-braind ready");
    let server_cfg = ServerConfig {
        socket,
        max_connections: cfg.max_connections,
        max_in_flight_per_connection: cfg.max_in_flight_per_connection,
        max_in_flight: cfg.max_in_flight,
        max_request_bytes: cfg.max_request_bytes,
        shutdown_grace: Duration::from_secs(cfg.shutdown_grace_secs),
        debug_ops: cfg.debug_ops,
    };
    server::serve(listener, brain, server_cfg, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
