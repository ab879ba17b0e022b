//! `omega-node`: runs a constellation node. Thin: command line, logging,
//! signals; the rest is the `omega_node` library.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use omega_supervise::log::LogFormat;

use omega_node::{Config, RunningNode, ServeOptions};

// candle is markedly faster and steadier with mimalloc (MEASUREMENTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A constellation node of Omega: TVs sync their pattern deltas with it over
/// QUIC with mutual TLS; it federates them into regional global patterns and
/// serves the content catalog.
#[derive(Debug, Parser)]
#[command(name = "omega-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text (colour only on a terminal) or json (one
    /// object per line). RUST_LOG sets the filter (default info).
    #[arg(long, global = true, env = "OMEGA_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve devices (QUIC) and operators (admin HTTP) until SIGTERM/SIGINT.
    ///
    /// Files: the store is DATA_DIR/constellation.redb; the node presents
    /// CERTS/nodes/<node_name>.crt|.key and accepts devices whose
    /// certificates chain to CERTS/device-ca.crt and are not revoked in
    /// CERTS/device-ca.crl (CERTS: from `omega-certs export-node`; a CA
    /// private key in it stops the node). The CRL and the node's
    /// certificate and key are reloaded when they change and on SIGHUP.
    /// The admin API (all but /health and /ready)
    /// needs a bearer token of at least 32 bytes read from a file
    /// (--admin-token-file, OMEGA_ADMIN_TOKEN_FILE or admin_token_file);
    /// without one it is refused. The node refuses to start when its
    /// private key or a token file gives group or others any access. On
    /// SIGTERM/SIGINT the node stops
    /// accepting, lets in-flight syncs finish (drain_timeout_secs), and
    /// closes the store.
    Serve(Box<ServeArgs>),
    /// Copies the embedded store (DATA_DIR/constellation.redb) into the
    /// ScyllaDB store that --config names (`[store] kind = "scylla"`),
    /// which must be empty. Stop every node first. Prints what was copied
    /// as JSON (omega_node::migrate says what moves and what does not).
    Migrate(MigrateArgs),
    /// Checks a TOML configuration as `serve` reads it, before it opens
    /// anything: unknown keys are refused and the values validated (the
    /// federation key file it names is read; token, key and password files
    /// are not). Prints the file's name and exits 0 when `serve` would take
    /// it (docs/configuration.md lists every key).
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, clap::Args)]
struct CheckConfigArgs {
    /// The TOML configuration file.
    #[arg(long, env = "OMEGA_CONFIG")]
    config: PathBuf,
}

fn check_config(args: CheckConfigArgs) -> Result<()> {
    let config = Config::from_file(&args.config)?;
    config.node_config()?;
    // The store's options without the login (its password file is not
    // read here): the consistency level and the timeout are checked.
    let mut store = config.store.clone();
    store.username = None;
    store.password_file = None;
    store.scylla_options()?;
    println!("{}: valid", args.config.display());
    Ok(())
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Directory of the embedded store to copy from.
    #[arg(long, env = "OMEGA_DATA_DIR")]
    data_dir: PathBuf,
    /// The nodes' TOML configuration: its `[store]` section is the target,
    /// its `regions` are looked up for learned totals.
    #[arg(long, env = "OMEGA_CONFIG")]
    config: PathBuf,
}

fn migrate(args: MigrateArgs) -> Result<()> {
    use omega_constellation::store::{RedbStore, ScyllaStore};
    let config = Config::from_file(&args.config)?;
    if config.store.kind != omega_node::config::StoreKind::Scylla {
        bail!(
            "{}: [store] kind must be \"scylla\" (the target)",
            args.config.display()
        );
    }
    let regions = config
        .regions
        .iter()
        .map(|r| omega_protocol::Region::new(r).with_context(|| format!("region {r:?}")))
        .collect::<Result<Vec<_>>>()?;
    let source = args.data_dir.join(omega_node::server::STORE_FILE);
    if !source.is_file() {
        bail!("no embedded store at {}", source.display());
    }
    let from = RedbStore::open(&source)
        .with_context(|| format!("opening {} (is a node still running?)", source.display()))?;
    let to = ScyllaStore::open(&config.store.scylla_options()?).context("opening the target")?;
    let report = omega_node::migrate::copy_store(&from, &to, &regions)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "OMEGA_DATA_DIR")]
    data_dir: PathBuf,
    /// all-MiniLM-L6-v2 directory (config.json, tokenizer.json,
    /// model.safetensors) used to embed the catalog.
    #[arg(long, env = "OMEGA_MODEL_DIR")]
    model_dir: PathBuf,
    /// Certificate directory made by `omega-certs export-node`: the CA
    /// certificates, the CRLs and nodes/<name>.crt|.key. A directory
    /// holding a CA private key is refused (see --allow-ca-keys).
    #[arg(long = "certs", env = "OMEGA_CERTS_DIR")]
    certs: PathBuf,
    /// Development only: start although CERTS holds a CA private key (a
    /// loud warning instead of a refusal) [config: allow_ca_keys].
    #[arg(long, env = "OMEGA_ALLOW_CA_KEYS")]
    allow_ca_keys: bool,
    /// QUIC (UDP) address devices sync with [config: listen; default 0.0.0.0:4433].
    #[arg(long, env = "OMEGA_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Admin HTTP address [config: admin; default 127.0.0.1:9090].
    #[arg(long, env = "OMEGA_ADMIN")]
    admin: Option<std::net::SocketAddr>,
    /// TOML configuration file (every field optional; see omega_node::config).
    #[arg(long, env = "OMEGA_CONFIG")]
    config: Option<PathBuf>,
    /// Node name: selects CERTS/nodes/<name>.crt [config: node_name; default node-1].
    #[arg(long, env = "OMEGA_NODE_NAME")]
    node_name: Option<String>,
    /// File holding the admin bearer token, at least 32 bytes on its first
    /// line, mode 0600 or stricter [config: admin_token_file].
    #[arg(long, env = "OMEGA_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// File holding the federation order key, 32 hex digits [config:
    /// federation_key_file; default: random per start].
    #[arg(long, env = "OMEGA_FEDERATION_KEY_FILE")]
    federation_key_file: Option<PathBuf>,
    /// Seconds between federation runs [config: federation_interval_secs; default 900].
    #[arg(long, env = "OMEGA_FEDERATION_INTERVAL_SECS")]
    federation_interval_secs: Option<u64>,
}

async fn shutdown_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").context("waiting for SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}

async fn serve(args: Box<ServeArgs>) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(a) = args.listen {
        config.listen = a;
    }
    if let Some(a) = args.admin {
        config.admin = a;
    }
    if let Some(n) = args.node_name {
        config.node_name = n;
    }
    if let Some(f) = args.admin_token_file {
        config.admin_token_file = Some(f);
    }
    if let Some(f) = args.federation_key_file {
        config.federation_key_file = Some(f);
    }
    if let Some(s) = args.federation_interval_secs {
        config.federation_interval_secs = s;
    }
    if args.allow_ca_keys {
        config.allow_ca_keys = true;
    }
    let node = RunningNode::start(ServeOptions {
        data_dir: args.data_dir,
        model_dir: Some(args.model_dir),
        certs_dir: args.certs,
        config,
        admin_token: None,
    })
    .await
    .context("starting the node")?;
    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    if !node.shutdown().await {
        bail!("shutdown was not clean (see the log)");
    }
    Ok(())
}

fn main() -> Result<()> {
    // Before any other thread exists: candle's thread count (omega-embed docs).
    omega_embed::configure_candle_threads(None);
    let cli = Cli::parse();
    // Logs go to stderr (a migration's report goes to stdout).
    omega_supervise::log::init(cli.log_format, "info");
    let args = match cli.command {
        Command::Migrate(args) => return migrate(args),
        Command::CheckConfig(args) => return check_config(args),
        Command::Serve(args) => args,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

#[cfg(test)]
#[path = "../../docs/config_reference.rs"]
mod config_reference;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{check_config, config_reference, CheckConfigArgs, Cli};

    #[test]
    fn check_config_accepts_what_serve_would_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = |text: &str| {
            let config = dir.path().join("node.toml");
            std::fs::write(&config, text).expect("write");
            check_config(CheckConfigArgs { config }).map_err(|e| format!("{e:#}"))
        };
        check("").expect("an empty file is the defaults");
        // A login's password file is not read: it exists only where the
        // node runs.
        check(
            "regions = [\"eu-west\", \"eu-north\"]\n[store]\nkind = \"scylla\"\n\
             username = \"omega\"\npassword_file = \"/nonexistent/password\"\n",
        )
        .expect("valid");
        for (text, expected) in [
            ("shard = 2", "unknown field `shard`"),
            ("k_min_devices = 3", "k_min_devices"),
            ("regions = []", "region"),
            ("[store]\nconsistency = \"SERIAL\"", "consistency"),
            (
                "federation_interval_secs = 60\n[store]\nkind = \"scylla\"\n[cluster]\nheartbeat_secs = 30",
                "[cluster]",
            ),
        ] {
            let err = check(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn every_flag_and_variable_is_in_the_configuration_reference() {
        let flags = config_reference::assert_cli_documented(&Cli::command());
        assert!(flags >= 13, "{flags} flags: did the subcommands move?");
    }
}
