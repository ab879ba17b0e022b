//! `omega-braind --data-dir DIR --model-dir DIR [--socket PATH] [--config FILE]`:
//! the TV daemon. See the `omega_brain_daemon` crate docs for the socket API.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use omega_brain::actors::Brain;
use omega_brain_daemon::config::DaemonConfig;
use omega_brain_daemon::server;
use omega_supervise::log::LogFormat;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Omega TV daemon: local recommendations over a Unix socket.
///
/// Files: the data directory is kept 0700 and everything in it 0600; the
/// socket is created 0660. Who may do what on the socket comes from the
/// peer's uid and gid (SO_PEERCRED) and the config's [access] section: the
/// `app` role may recommend, observe, and read stats and health; the
/// `system` role may also read history, forget, import the catalog and
/// sync. The daemon's own user and root are `system`; anyone unlisted is
/// answered `forbidden`. `catalog.import` reads files only inside
/// `catalog_import_dir`. Observes are rate-limited per connection
/// ([access] observe_per_sec, observe_burst).
#[derive(Debug, Parser)]
#[command(name = "omega-braind", version, about, long_about)]
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
    /// Log format on stderr: text (colour only on a terminal) or json (one
    /// object per line). RUST_LOG overrides the config's `log` filter.
    #[arg(long, env = "OMEGA_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn main() -> Result<()> {
    // Everything the daemon writes (store, index, moved-aside copies) is
    // private to its user: 0600 files, 0700 directories. Set before any
    // thread exists (the umask is process-wide); the socket gets its own
    // mode in `server::bind`.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Parsing flags and the config starts no thread; candle's thread count
    // must be set before any other thread exists (omega-embed docs) and
    // match the embedder's (`inference.threads`).
    let cli = Cli::parse();
    let cfg = match &cli.config {
        Some(p) => DaemonConfig::load(p)?,
        None => DaemonConfig::default(),
    };
    omega_embed::configure_candle_threads(cfg.inference.threads);
    omega_supervise::log::init(cli.log_format, &cfg.log);
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
    // The data directory holds the viewing history: 0700, also when an
    // older daemon left it wider.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cli.data_dir)
        .and_then(|()| {
            std::fs::set_permissions(&cli.data_dir, std::fs::Permissions::from_mode(0o700))
        })
        .with_context(|| format!("creating {} (mode 0700)", cli.data_dir.display()))?;
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
    tracing::info!(socket = %socket.display(), store = %health.store,
        cpu = %omega_brain_daemon::cpu::CpuReport::detect().line(),
        index_isa = health.index_isa.as_deref().unwrap_or("-"), "omega-braind ready");
    let server_cfg = cfg.server_config(socket, &cli.data_dir);
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

#[cfg(test)]
#[path = "../../../docs/config_reference.rs"]
mod config_reference;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{config_reference, Cli};

    #[test]
    fn every_flag_and_variable_is_in_the_configuration_reference() {
        let flags = config_reference::assert_cli_documented(&Cli::command());
        assert_eq!(flags, 5, "every flag of omega-braind");
    }
}
