//! The node's configuration file (TOML). Every field has a default, so an
//! empty file (or none) is a valid configuration; command-line options and
//! `OMEGA_*` environment variables override the file (see `main.rs`).
//!
//! ```toml
//! listen = "0.0.0.0:4433"          # QUIC (UDP) address devices sync with
//! admin = "127.0.0.1:9090"         # admin HTTP API
//! node_name = "node-1"             # certificate nodes/<node_name>.crt|.key
//! shards = 4                       # shard actors
//! max_connections = 16384          # concurrent QUIC connections
//! in_flight = 1024                 # syncs processed at once, RetryAfter past it
//! busy_retry_secs = 5              # RetryAfter given past in_flight
//! rate_limit_interval_secs = 60    # one sync per device per interval (0: off)
//! rate_limit_burst = 1             # back-to-back syncs allowed
//! next_sync_secs = [300, 900]      # range of next_sync_secs in answers
//! catalog_page_items = 100         # catalog entries per sync answer
//! federation_interval_secs = 900   # timer-driven federation period
//! k_min_devices = 5                # privacy rule 3
//! regions = []                     # allowed regions, empty = any
//! admin_token_file = "/etc/omega/admin-token"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use omega_constellation::actors::{CatalogOptions, NodeConfig};
use omega_constellation::federation::FederationConfig;
use omega_constellation::sync::SyncConfig;
use omega_protocol::Region;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The node's configuration (see the module docs for the file layout).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// QUIC address devices sync with. Default `0.0.0.0:4433`.
    pub listen: SocketAddr,
    /// Admin HTTP address. Default `127.0.0.1:9090` (loopback: put a proxy
    /// in front to expose it).
    pub admin: SocketAddr,
    /// This node's name: its certificate is `CERTS/nodes/<name>.crt|.key`.
    /// Default `node-1`.
    pub node_name: String,
    /// Shard actors (1..=1024). Default 4.
    pub shards: u32,
    /// Concurrent QUIC connections; past it new connections are refused at
    /// once (the device retries with backoff). Default 16,384.
    pub max_connections: usize,
    /// Syncs processed at once; past it a sync is answered `RetryAfter`.
    /// Default 1,024.
    pub in_flight: usize,
    /// `RetryAfter` seconds given past `in_flight`. Default 5.
    pub busy_retry_secs: u32,
    /// One charged sync per device per this many seconds (0 disables the
    /// limit). Default 60.
    pub rate_limit_interval_secs: u32,
    /// Syncs a device may make back to back before the interval applies.
    /// Default 1.
    pub rate_limit_burst: u32,
    /// Devices the rate limiter remembers per shard. Default 131,072.
    pub rate_limit_capacity: usize,
    /// `[min, max]` of the `next_sync_secs` handed to devices. Default
    /// `[300, 900]`.
    pub next_sync_secs: [u32; 2],
    /// Catalog entries per sync answer (1..=300). Default 100.
    pub catalog_page_items: usize,
    /// Seconds between timer-driven federation runs (≥ 1). Default 900.
    pub federation_interval_secs: u64,
    /// Distinct devices a global pattern needs (privacy rule 3). Default 5.
    pub k_min_devices: u32,
    /// Regions devices may declare; empty allows any. Default empty.
    pub regions: Vec<String>,
    /// File holding the admin bearer token (first line). Default none: then
    /// `OMEGA_ADMIN_TOKEN` is used, and without either mutating admin
    /// endpoints are refused.
    pub admin_token_file: Option<PathBuf>,
    /// Milliseconds a device has to send its request once it opened a
    /// stream. Default 10,000.
    pub request_timeout_ms: u64,
    /// Seconds to let in-flight syncs finish at shutdown. Default 10.
    pub drain_timeout_secs: u64,
    /// Catalog items per model call. Default 32.
    pub catalog_batch_size: usize,
    /// A catalog progress log line every this many items. Default 256.
    pub catalog_progress_every: usize,
    /// Items one catalog import may carry. Default 100,000.
    pub catalog_max_items: usize,
    /// Largest admin request body in bytes (imports). Default 64 MiB.
    pub admin_body_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        let node = NodeConfig::default();
        let sync = &node.sync;
        let catalog = &node.catalog;
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9090)),
            node_name: "node-1".into(),
            shards: node.shards,
            max_connections: 16_384,
            in_flight: node.in_flight,
            busy_retry_secs: node.busy_retry_secs,
            rate_limit_interval_secs: sync.min_sync_interval_secs,
            rate_limit_burst: sync.rate_burst,
            rate_limit_capacity: sync.rate_limiter_capacity,
            next_sync_secs: [sync.next_sync_secs.0, sync.next_sync_secs.1],
            catalog_page_items: sync.catalog_page_items,
            federation_interval_secs: node.federation_interval.as_secs(),
            k_min_devices: node.federation.k_min_devices,
            regions: Vec::new(),
            admin_token_file: None,
            request_timeout_ms: 10_000,
            drain_timeout_secs: 10,
            catalog_batch_size: catalog.batch_size,
            catalog_progress_every: catalog.progress_every,
            catalog_max_items: catalog.max_items_per_import,
            admin_body_limit: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })
    }

    /// How long a device has to send its request.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// How long shutdown waits for in-flight syncs.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// The actor tree's configuration (validated).
    pub fn node_config(&self) -> Result<NodeConfig, ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be at least 1".into(),
            ));
        }
        let allowed_regions = if self.regions.is_empty() {
            None
        } else {
            Some(
                self.regions
                    .iter()
                    .map(|r| {
                        Region::new(r.clone())
                            .map_err(|e| ConfigError::Invalid(format!("region {r:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        let config = NodeConfig {
            shards: self.shards,
            sync: SyncConfig {
                allowed_regions,
                min_sync_interval_secs: self.rate_limit_interval_secs,
                rate_burst: self.rate_limit_burst,
                rate_limiter_capacity: self.rate_limit_capacity,
                next_sync_secs: (self.next_sync_secs[0], self.next_sync_secs[1]),
                catalog_page_items: self.catalog_page_items,
            },
            in_flight: self.in_flight,
            busy_retry_secs: self.busy_retry_secs,
            federation: FederationConfig {
                k_min_devices: self.k_min_devices,
                ..FederationConfig::default()
            },
            federation_interval: Duration::from_secs(self.federation_interval_secs),
            catalog: CatalogOptions {
                batch_size: self.catalog_batch_size,
                progress_every: self.catalog_progress_every,
                max_items_per_import: self.catalog_max_items,
            },
            ..NodeConfig::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_fields_override() {
        assert_eq!(Config::from_toml("").expect("empty"), Config::default());
        let c = Config::from_toml("shards = 2\nregions = [\"eu\"]\nnext_sync_secs = [10, 20]\n")
            .expect("parse");
        assert_eq!(c.shards, 2);
        let n = c.node_config().expect("valid");
        assert_eq!(n.sync.next_sync_secs, (10, 20));
        assert!(
            Config::from_toml("shard = 2").is_err(),
            "unknown fields are refused"
        );
        let c = Config::from_toml("shards = 0").expect("parse");
        assert!(c.node_config().is_err());
        assert!(Config::default().node_config().is_ok());
    }
}
