//! `omega-braind` configuration: a TOML file (`--config`), every field
//! optional with the default shown.
//!
//! ```toml
//! # Unix socket; default <data-dir>/brain.sock (the --socket flag wins).
//! # socket = "/run/omega/brain.sock"
//! max_connections = 64            # past it: accept, send too_many_connections, close
//! max_in_flight_per_connection = 8 # past it: the connection is not read (backpressure)
//! max_in_flight = 256             # all connections; past it: busy error
//! max_request_bytes = 65536       # per request line; past it: request_too_large
//! shutdown_grace_secs = 10        # SIGTERM/SIGINT: time to finish in-flight work
//! debug_ops = false               # enables debug.* ops (only in a `testing` build)
//! mood_cache = 256                # mood vectors kept (LRU)
//! log = "info"                    # tracing filter (RUST_LOG wins)
//!
//! [store]
//! max_episodes = 1000
//! max_catalog_items = 50000
//! max_global_patterns = 500
//! max_patterns = 10000
//! cache_mb = 4                    # redb page cache (the state is mirrored in memory)
//!
//! [inference]
//! max_batch = 32
//! max_pending_texts = 1024
//! # threads = 2                   # default: RAYON_NUM_THREADS or all cores
//! ```
//!
//! Unknown keys are refused (a typo should not silently mean "default").

use std::path::{Path, PathBuf};

use omega_brain::actors::{BrainConfig, InferenceConfig};
use serde::Deserialize;

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("parsing config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
}

/// The daemon's configuration (see the module docs for the file format).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Socket path (default `<data-dir>/brain.sock`).
    pub socket: Option<PathBuf>,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Requests in flight per connection.
    pub max_in_flight_per_connection: usize,
    /// Requests in flight in total.
    pub max_in_flight: usize,
    /// Longest request line in bytes.
    pub max_request_bytes: usize,
    /// Grace period at shutdown.
    pub shutdown_grace_secs: u64,
    /// Enables `debug.*` ops; they exist only in a build with the `testing`
    /// feature (the tests'), elsewhere this is ignored.
    pub debug_ops: bool,
    /// Mood vectors cached.
    pub mood_cache: usize,
    /// Default tracing filter.
    pub log: String,
    /// Store limits.
    pub store: StoreSection,
    /// Inference limits.
    pub inference: InferenceSection,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: None,
            max_connections: 64,
            max_in_flight_per_connection: 8,
            max_in_flight: 256,
            max_request_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
            debug_ops: false,
            mood_cache: 256,
            log: "info".into(),
            store: StoreSection::default(),
            inference: InferenceSection::default(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Episode ring size.
    pub max_episodes: usize,
    /// Catalog limit.
    pub max_catalog_items: usize,
    /// Global patterns kept.
    pub max_global_patterns: usize,
    /// Local patterns kept.
    pub max_patterns: usize,
    /// redb page cache, MiB.
    pub cache_mb: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        let d = omega_brain::StoreConfig::default();
        Self {
            max_episodes: d.max_episodes,
            max_catalog_items: d.max_catalog_items,
            max_global_patterns: d.max_global_patterns,
            max_patterns: d.patterns.max_patterns,
            cache_mb: d.cache_bytes >> 20,
        }
    }
}

/// `[inference]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceSection {
    /// Texts per batch.
    pub max_batch: usize,
    /// Texts waiting at most.
    pub max_pending_texts: usize,
    /// Embedder threads.
    pub threads: Option<usize>,
}

impl Default for InferenceSection {
    fn default() -> Self {
        let d = InferenceConfig::default();
        Self {
            max_batch: d.max_batch,
            max_pending_texts: d.max_pending_texts,
            threads: d.threads,
        }
    }
}

impl DaemonConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let pos = [
            ("max_connections", self.max_connections),
            (
                "max_in_flight_per_connection",
                self.max_in_flight_per_connection,
            ),
            ("max_in_flight", self.max_in_flight),
            ("store.max_episodes", self.store.max_episodes),
            ("store.max_patterns", self.store.max_patterns),
            ("store.cache_mb", self.store.cache_mb),
            ("inference.max_batch", self.inference.max_batch),
            (
                "inference.max_pending_texts",
                self.inference.max_pending_texts,
            ),
        ];
        for (name, v) in pos {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        // Upper bounds: tokio's semaphores panic past their permit limit and
        // the shutdown drain acquires a connection's slots as one u32.
        let capped = [
            ("max_connections", self.max_connections, 65_536),
            (
                "max_in_flight_per_connection",
                self.max_in_flight_per_connection,
                1_024,
            ),
            ("max_in_flight", self.max_in_flight, 65_536),
        ];
        for (name, v, max) in capped {
            if v > max {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at most {max}"
                )));
            }
        }
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_request_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// The actors' configuration.
    pub fn brain_config(&self, data_dir: &Path, model_dir: &Path) -> BrainConfig {
        let mut b = BrainConfig::new(data_dir, model_dir);
        b.store.max_episodes = self.store.max_episodes;
        b.store.max_catalog_items = self.store.max_catalog_items;
        b.store.max_global_patterns = self.store.max_global_patterns;
        b.store.patterns.max_patterns = self.store.max_patterns;
        b.store.cache_bytes = self.store.cache_mb.saturating_mul(1 << 20);
        b.inference = InferenceConfig {
            max_batch: self.inference.max_batch,
            max_pending_texts: self.inference.max_pending_texts,
            threads: self.inference.threads,
        };
        b.mood_cache = self.mood_cache;
        b.debug_ops = self.debug_ops;
        b
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: DaemonConfig =
            toml::from_str("debug_ops = true\n[store]\nmax_episodes = 5\n").unwrap();
        assert!(c.debug_ops);
        assert_eq!(c.store.max_episodes, 5);
        let zero: DaemonConfig = toml::from_str("[store]\ncache_mb = 0\n").unwrap();
        assert!(zero.validate().is_err());
        let huge: DaemonConfig =
            toml::from_str("max_in_flight_per_connection = 4294967296\n").unwrap();
        assert!(huge.validate().is_err());
        assert_eq!(
            DaemonConfig::default()
                .brain_config(Path::new("d"), Path::new("m"))
                .store
                .cache_bytes,
            4 << 20
        );
        assert_eq!(c.max_request_bytes, 65536);
        assert!(toml::from_str::<DaemonConfig>("max_conections = 3").is_err());
    }
}
