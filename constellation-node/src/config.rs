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
//! max_connections_per_device = 2   # per device certificate; past it closed after the handshake
//! max_pending_handshakes = 1024    # handshakes in progress; past it refused at once
//! retry_above_pending = 256        # QUIC Retry (address validation) past this many (0: always)
//! in_flight = 1024                 # syncs processed at once, RetryAfter past it
//! busy_retry_secs = 5              # RetryAfter given past in_flight
//! rate_limit_interval_secs = 60    # one sync per device per interval (0: off)
//! rate_limit_burst = 1             # back-to-back syncs allowed
//! next_sync_secs = [300, 900]      # range of next_sync_secs in answers
//! catalog_page_items = 100         # catalog entries per sync answer
//! federation_interval_secs = 900   # timer-driven federation period
//! k_min_devices = 5                # privacy rule 3 (at least 5)
//! regions = ["eu-west"]            # allowed regions (omega_protocol::DEFAULT_REGION)
//! max_pattern_samples = 1000       # a pattern's samples are clamped to this
//! max_device_share = 0.2           # largest share of a global's weight one device carries
//! federation_key_file = "/etc/omega/federation-key"  # 32 hex digits; default: random per start
//! crl_poll_ms = 10000              # re-read CERTS/device-ca.crl and the node's certificate
//!                                  # and key (SIGHUP: at once)
//! allow_ca_keys = false            # dev only: start although CERTS holds a CA private key
//! admin_token_file = "/etc/omega/admin-token"     # >= 32 bytes, mode 0600 (or 0400)
//! metrics_token_file = "/etc/omega/metrics-token" # optional: a token good for /metrics only
//! admin_allowed_hosts = ["admin.example.net"]     # Host names besides loopback and `admin`'s IP
//! admin_body_limit = 65536         # request bodies, except the import's
//! admin_import_limit = 67108864    # the body of POST /api/v1/content/import
//!
//! [store]                          # where the node keeps its data
//! kind = "redb"                    # "redb": DATA_DIR/constellation.redb (default);
//!                                  # "scylla": a shared ScyllaDB/Cassandra cluster
//! redb_max_batch = 256             # redb: device syncs sharing one commit (fsync)
//! redb_max_queue = 1024            # redb: syncs waiting for a commit; past it they wait
//! contact_points = ["127.0.0.1:9042"]
//! keyspace = "omega"
//! replication = { class = "NetworkTopologyStrategy", dc1 = "3" }  # on ScyllaDB 6+, create the
//!                                  # keyspace first with tablets off (docs/runbook.md)
//! consistency = "LOCAL_QUORUM"
//! request_timeout_ms = 5000
//! username = "omega"               # optional login; the password is read
//! password_file = "/etc/omega/scylla-password"  # from this file (first line)
//!
//! [cluster]                        # nodes sharing a kind = "scylla" store
//! heartbeat_secs = 5               # heartbeat and lease attempt period
//!                                  # (at most federation_interval_secs / 3)
//! advertise = "10.0.0.5:4433"      # address announced to members (default: listen)
//!
//! [learning]                       # private aggregation rounds (issue 14)
//! enabled = true
//! interval_ms = 86400000           # from a region's round end to its next
//! pair_titles = 256                # titles taking part in pairs
//! window = 5                       # watches before a watch that pair with it
//! k = 5                            # contributors a round needs (>= 5)
//! z = 3.0                          # publication threshold, in noise units
//! refresh_ms = 5000                # re-read the stored totals (other nodes' rounds)
//! [learning.rounds]
//! cohort = 200                     # TVs per round (at most 822: the signed member list fits an answer)
//! threshold = 105                  # answers each phase needs (> cohort / 2)
//! join_ms = 2400000                # each phase's deadline (also shares_ms,
//!                                  # inputs_ms, unmask_ms)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use omega_constellation::actors::{CatalogOptions, NodeConfig};
use omega_constellation::cluster::LeaseTiming;
use omega_constellation::federation::{FederationConfig, FederationError, OrderKey};
use omega_constellation::store::{parse_consistency, Credentials, GroupOptions, ScyllaOptions};
use omega_constellation::sync::{LearningConfig, SyncConfig};
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
    /// The federation settings are refused (e.g. `k_min_devices` below 5).
    #[error("invalid federation configuration: {0}")]
    Federation(#[from] FederationError),
}

/// The node's configuration (see the module docs for the file layout).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Connections one device certificate may hold at once (at least 1); a
    /// connection past it is closed right after its handshake with
    /// `listener::CLOSE_DEVICE_LIMIT`. Default 2.
    pub max_connections_per_device: usize,
    /// Handshakes in progress at once (at least 1); past it a new attempt is
    /// refused at once. They hold no connection slot: a slot is taken when
    /// the handshake has completed. Default 1,024.
    pub max_pending_handshakes: usize,
    /// With at least this many handshakes in progress, an attempt from an
    /// address not yet validated is answered with a QUIC Retry first (the
    /// client proves it receives at its source address; clients follow it
    /// transparently, at the cost of one round trip). 0: always. Default 256.
    pub retry_above_pending: usize,
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
    /// Distinct devices a global pattern needs (privacy rule 3); values
    /// below 5 are refused. Default 5.
    pub k_min_devices: u32,
    /// The largest share of a published global's weight one device may
    /// carry, in `[1 / k_min_devices, 1]`; heavier devices are capped before
    /// aggregating. Default 0.2 (= 1/5).
    pub max_device_share: f32,
    /// File holding the secret key of federation's canonical order (which
    /// patterns a large region samples, which seed the clusters): 32 hex
    /// digits on the first line. Default none: a random key per node start
    /// (the order then changes at each restart; give every node of a
    /// cluster the same file for runs that order alike).
    pub federation_key_file: Option<PathBuf>,
    /// Regions devices may declare; a sync naming another is refused
    /// (`BadRequest`, charged to the rate limit). Must not be empty.
    /// Default `["eu-west"]` ([`omega_protocol::DEFAULT_REGION`], the
    /// region a TV declares unless configured otherwise).
    pub regions: Vec<String>,
    /// A stored pattern's `samples` is clamped to this on arrival (≥ 1).
    /// Default 1,000.
    pub max_pattern_samples: u32,
    /// File holding the admin bearer token (first line, at least 32 bytes;
    /// the file must give group and others no access, or the node refuses to
    /// start). Default none: every admin endpoint except `/health` and
    /// `/ready` is then refused. Tokens come only from files (an environment
    /// variable is readable in `/proc`).
    pub admin_token_file: Option<PathBuf>,
    /// File holding a second token, good for `GET /metrics` only (same
    /// rules as `admin_token_file`), for a scraper that must not administer
    /// the node. Default none: `/metrics` takes the admin token.
    pub metrics_token_file: Option<PathBuf>,
    /// Host names (the `Host` header without its port) the admin API
    /// answers besides `localhost`, `127.0.0.1`, `::1` and the IP of
    /// `admin`; any other `Host` gets 421 (against DNS rebinding; `/health`
    /// and `/ready` answer any). Default empty.
    pub admin_allowed_hosts: Vec<String>,
    /// Milliseconds a device has to send its request once it opened a
    /// stream. Default 10,000.
    pub request_timeout_ms: u64,
    /// Seconds to let in-flight syncs finish at shutdown. Default 10.
    pub drain_timeout_secs: u64,
    /// Milliseconds between reads of the device CRL file and of the node's
    /// certificate and key; a changed CRL is reloaded and the open
    /// connections of newly revoked devices are closed; a changed
    /// certificate and key pair is presented from the next handshake on
    /// (SIGHUP reloads both at once). Default 10,000.
    pub crl_poll_ms: u64,
    /// Start even though the certificate directory holds a CA private key
    /// (`device-ca.key`, `node-ca.key`): for development only. Without it
    /// such a node refuses to start; give it a directory made by
    /// `omega-certs export-node` instead. Default false.
    pub allow_ca_keys: bool,
    /// Catalog items per model call. Default 32.
    pub catalog_batch_size: usize,
    /// A catalog progress log line every this many items. Default 256.
    pub catalog_progress_every: usize,
    /// Items one catalog import may carry. Default 100,000.
    pub catalog_max_items: usize,
    /// Largest admin request body in bytes, on every route except the
    /// content import; past it 413. Default 64 KiB.
    pub admin_body_limit: usize,
    /// Largest body of `POST /api/v1/content/import` in bytes; past it 413
    /// (the body is read as it arrives and refused once over). One import
    /// body is read at a time. Default 64 MiB.
    pub admin_import_limit: usize,
    /// The `[learning]` section: what the node learns from the fleet's
    /// private aggregation rounds (omega-constellation-core's
    /// `LearningConfig`; every field has a default).
    pub learning: LearningConfig,
    /// The `[store]` section: redb (default) or ScyllaDB.
    pub store: StoreConfig,
    /// The `[cluster]` section: membership and the federation lease, used
    /// with `kind = "scylla"` (a redb node is alone on its store).
    pub cluster: ClusterConfig,
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Seconds between a node's heartbeats and federation lease attempts;
    /// at most a third of `federation_interval_secs`. A member's heartbeat
    /// lives three periods; the lease one federation interval. Default 5.
    pub heartbeat_secs: u64,
    /// The `host:port` announced to the other members. Default none: the
    /// QUIC `listen` address.
    pub advertise: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 5,
            advertise: None,
        }
    }
}

/// Which store the node opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded redb file `DATA_DIR/constellation.redb` (one per node).
    #[default]
    Redb,
    /// A ScyllaDB or Cassandra cluster the nodes share.
    Scylla,
}

/// The `[store]` section (the ScyllaDB fields matter for `kind = "scylla"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `redb` or `scylla`. Default `redb`.
    pub kind: StoreKind,
    /// redb: device syncs one group commit (one transaction, one fsync)
    /// takes at most (raised to 1). Default 256.
    pub redb_max_batch: usize,
    /// redb: device syncs waiting for a commit at most (raised to 1); past
    /// it a sync's blocking task waits for room. Default 1,024.
    pub redb_max_queue: usize,
    /// `host:port` of some cluster nodes. Default `["127.0.0.1:9042"]`.
    pub contact_points: Vec<String>,
    /// The keyspace, created with the schema at first start. Default `omega`.
    pub keyspace: String,
    /// The keyspace's replication map (used when it is created). Default
    /// `{ class = "SimpleStrategy", replication_factor = "1" }`, for a
    /// single development node; production clusters name
    /// NetworkTopologyStrategy and a factor per datacenter.
    pub replication: BTreeMap<String, String>,
    /// Consistency of reads and writes (`LOCAL_QUORUM`, `QUORUM`,
    /// `LOCAL_ONE`, …). Default `LOCAL_QUORUM`.
    pub consistency: String,
    /// Timeout of every database request, in milliseconds. Default 5,000.
    pub request_timeout_ms: u64,
    /// Login role; `None` for a cluster without authentication. Default none.
    pub username: Option<String>,
    /// File holding the password (first line); required with `username`.
    /// Default none.
    pub password_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let defaults = ScyllaOptions::new(vec!["127.0.0.1:9042".into()], "omega");
        let group = GroupOptions::default();
        Self {
            kind: StoreKind::Redb,
            redb_max_batch: group.max_batch,
            redb_max_queue: group.max_queue,
            contact_points: defaults.contact_points,
            keyspace: defaults.keyspace,
            replication: defaults.replication,
            consistency: "LOCAL_QUORUM".into(),
            request_timeout_ms: defaults.request_timeout.as_millis() as u64,
            username: None,
            password_file: None,
        }
    }
}

impl StoreConfig {
    /// How the redb store group-commits device syncs.
    pub fn group_options(&self) -> GroupOptions {
        GroupOptions {
            max_batch: self.redb_max_batch.max(1),
            max_queue: self.redb_max_queue.max(1),
        }
    }

    /// The ScyllaDB store's options, the password read from `password_file`.
    pub fn scylla_options(&self) -> Result<ScyllaOptions, ConfigError> {
        let mut opts = ScyllaOptions::new(self.contact_points.clone(), self.keyspace.clone());
        opts.replication = self.replication.clone();
        opts.consistency = parse_consistency(&self.consistency).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "store.consistency {:?} is not a consistency level",
                self.consistency
            ))
        })?;
        opts.request_timeout = Duration::from_millis(self.request_timeout_ms.max(1));
        opts.credentials = match (&self.username, &self.password_file) {
            (None, None) => None,
            (Some(username), Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(Credentials {
                    username: username.clone(),
                    password: text.lines().next().unwrap_or("").to_owned(),
                })
            }
            _ => {
                return Err(ConfigError::Invalid(
                    "store.username and store.password_file go together".into(),
                ))
            }
        };
        Ok(opts)
    }
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
            max_connections_per_device: 2,
            max_pending_handshakes: 1024,
            retry_above_pending: 256,
            in_flight: node.in_flight,
            busy_retry_secs: node.busy_retry_secs,
            rate_limit_interval_secs: sync.min_sync_interval_secs,
            rate_limit_burst: sync.rate_burst,
            rate_limit_capacity: sync.rate_limiter_capacity,
            next_sync_secs: [sync.next_sync_secs.0, sync.next_sync_secs.1],
            catalog_page_items: sync.catalog_page_items,
            federation_interval_secs: node.federation_interval.as_secs(),
            k_min_devices: node.federation.k_min_devices,
            max_device_share: node.federation.max_device_share,
            federation_key_file: None,
            regions: sync
                .allowed_regions
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            max_pattern_samples: sync.max_pattern_samples,
            admin_token_file: None,
            metrics_token_file: None,
            admin_allowed_hosts: Vec::new(),
            request_timeout_ms: 10_000,
            drain_timeout_secs: 10,
            crl_poll_ms: 10_000,
            allow_ca_keys: false,
            catalog_batch_size: catalog.batch_size,
            catalog_progress_every: catalog.progress_every,
            catalog_max_items: catalog.max_items_per_import,
            admin_body_limit: 64 * 1024,
            admin_import_limit: 64 * 1024 * 1024,
            learning: node.learning,
            store: StoreConfig::default(),
            cluster: ClusterConfig::default(),
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

    /// How often the CRL file is read.
    pub fn crl_poll(&self) -> Duration {
        Duration::from_millis(self.crl_poll_ms.max(1))
    }

    /// How long shutdown waits for in-flight syncs.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// The federation order key: read from `federation_key_file`, or a
    /// fresh random one without it.
    fn order_key(&self) -> Result<OrderKey, ConfigError> {
        let Some(path) = &self.federation_key_file else {
            return Ok(OrderKey::random(&mut rand::rng()));
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        parse_order_key(text.lines().next().unwrap_or("")).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{}: the federation key must be 32 hex digits on the first line",
                path.display()
            ))
        })
    }

    /// The cluster's heartbeat and lease timing, from
    /// `federation_interval_secs` and `[cluster] heartbeat_secs`.
    pub fn lease_timing(&self) -> Result<LeaseTiming, ConfigError> {
        LeaseTiming::new(
            self.federation_interval_secs.saturating_mul(1000),
            self.cluster.heartbeat_secs.saturating_mul(1000),
        )
        .map_err(|e| ConfigError::Invalid(format!("[cluster]: {e}")))
    }

    /// The actor tree's configuration (validated; the cluster membership,
    /// which needs the opened store, is left for the caller).
    pub fn node_config(&self) -> Result<NodeConfig, ConfigError> {
        if self.store.kind == StoreKind::Scylla {
            self.lease_timing()?;
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_device",
                self.max_connections_per_device,
            ),
            ("max_pending_handshakes", self.max_pending_handshakes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        let allowed_regions = self
            .regions
            .iter()
            .map(|r| {
                Region::new(r.clone())
                    .map_err(|e| ConfigError::Invalid(format!("region {r:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let federation = FederationConfig {
            k_min_devices: self.k_min_devices,
            max_device_share: self.max_device_share,
            order_key: self.order_key()?,
            ..FederationConfig::default()
        };
        federation.validate()?;
        let config = NodeConfig {
            shards: self.shards,
            sync: SyncConfig {
                allowed_regions,
                min_sync_interval_secs: self.rate_limit_interval_secs,
                rate_burst: self.rate_limit_burst,
                rate_limiter_capacity: self.rate_limit_capacity,
                next_sync_secs: (self.next_sync_secs[0], self.next_sync_secs[1]),
                catalog_page_items: self.catalog_page_items,
                max_pattern_samples: self.max_pattern_samples,
            },
            in_flight: self.in_flight,
            busy_retry_secs: self.busy_retry_secs,
            federation,
            federation_interval: Duration::from_secs(self.federation_interval_secs),
            catalog: CatalogOptions {
                batch_size: self.catalog_batch_size,
                progress_every: self.catalog_progress_every,
                max_items_per_import: self.catalog_max_items,
            },
            learning: self.learning,
            ..NodeConfig::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }
}

/// 32 hex digits (surrounding blanks ignored) as a key.
fn parse_order_key(line: &str) -> Option<OrderKey> {
    let hex = line.trim().as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let mut key = [0u8; 16];
    for (k, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        *k = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(OrderKey(key))
}

#[cfg(test)]
#[path = "../../docs/config_reference.rs"]
mod config_reference;

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/compose's node.toml is a valid ScyllaDB cluster configuration
    /// whose admin API answers the names Prometheus scrapes.
    #[test]
    fn the_compose_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose/node.toml");
        let c = Config::from_file(&path).expect("deploy/compose/node.toml");
        assert_eq!(c.store.kind, StoreKind::Scylla);
        let opts = c.store.scylla_options().expect("store options");
        assert_eq!(opts.contact_points.len(), 3);
        c.node_config().expect("node configuration");
        c.lease_timing().expect("cluster timing");
        for node in ["node-1", "node-2", "node-3"] {
            assert!(c.admin_allowed_hosts.iter().any(|h| h == node), "{node}");
        }
        assert!(c.metrics_token_file.is_some());
    }

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
        // The default allow-list serves the TV's default region; an empty
        // one is refused.
        let n = Config::default().node_config().expect("valid");
        assert!(n
            .sync
            .allowed_regions
            .contains(&Region::new(omega_protocol::DEFAULT_REGION).expect("valid")));
        assert!(Config::from_toml("regions = []")
            .expect("parse")
            .node_config()
            .is_err());
    }

    #[test]
    fn the_cluster_heartbeat_must_fit_the_federation_interval() {
        let c = Config::from_toml(
            "federation_interval_secs = 60\n[store]\nkind = \"scylla\"\n\
             [cluster]\nheartbeat_secs = 20\nadvertise = \"10.0.0.5:4433\"\n",
        )
        .expect("parse");
        assert_eq!(c.cluster.advertise.as_deref(), Some("10.0.0.5:4433"));
        let t = c.lease_timing().expect("valid");
        assert_eq!((t.lease_ttl_ms, t.renew_every_ms), (60_000, 20_000));
        assert!(c.node_config().is_ok());
        let mut slow = c.clone();
        slow.cluster.heartbeat_secs = 21;
        assert!(
            slow.node_config().is_err(),
            "more than a third of the interval"
        );
        slow.store.kind = StoreKind::Redb;
        assert!(slow.node_config().is_ok(), "a redb node has no cluster");
        assert_eq!(Config::default().cluster.heartbeat_secs, 5);
    }

    #[test]
    fn the_store_is_redb_by_default_and_scylla_when_configured() {
        let c = Config::default();
        assert_eq!(c.store.kind, StoreKind::Redb);
        assert_eq!(c.store.group_options(), GroupOptions::default());
        let c =
            Config::from_toml("[store]\nredb_max_batch = 64\nredb_max_queue = 0\n").expect("parse");
        assert_eq!(
            c.store.group_options(),
            GroupOptions {
                max_batch: 64,
                max_queue: 1
            }
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\nignored\n").expect("write");
        let c = Config::from_toml(&format!(
            "[store]\nkind = \"scylla\"\ncontact_points = [\"10.0.0.1:9042\"]\nkeyspace = \"omega_eu\"\n\
             replication = {{ class = \"NetworkTopologyStrategy\", dc1 = \"3\" }}\n\
             consistency = \"quorum\"\nrequest_timeout_ms = 250\nusername = \"omega\"\npassword_file = {:?}\n",
            secret.display().to_string()
        ))
        .expect("parse");
        assert_eq!(c.store.kind, StoreKind::Scylla);
        let o = c.store.scylla_options().expect("valid");
        assert_eq!(o.contact_points, vec!["10.0.0.1:9042".to_string()]);
        assert_eq!(o.keyspace, "omega_eu");
        assert_eq!(o.replication.get("dc1").map(String::as_str), Some("3"));
        assert_eq!(
            o.consistency,
            omega_constellation::store::parse_consistency("QUORUM").expect("known")
        );
        assert_eq!(o.request_timeout, Duration::from_millis(250));
        let creds = o.credentials.expect("login");
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("omega", "s3cret")
        );
        assert!(
            !format!("{creds:?}").contains("s3cret"),
            "the password is not logged"
        );
        // A bad level, a user without a password file, an unknown key.
        let bad = Config::from_toml("[store]\nconsistency = \"SERIAL\"").expect("parse");
        assert!(matches!(
            bad.store.scylla_options(),
            Err(ConfigError::Invalid(_))
        ));
        let bad = Config::from_toml("[store]\nusername = \"omega\"").expect("parse");
        assert!(matches!(
            bad.store.scylla_options(),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Config::from_toml("[store]\npassword = \"x\"").is_err());
        assert!(Config::from_toml("[store]\nkind = \"postgres\"").is_err());
    }

    #[test]
    fn the_configuration_reference_names_every_key_and_its_default() {
        let block = config_reference::defaults_block("<!-- omega-node defaults -->");
        assert_eq!(
            Config::from_toml(block).expect("the reference's defaults parse"),
            Config::default(),
            "docs/configuration.md's omega-node defaults differ from Config::default()"
        );
        let defaults = serde_json::to_value(Config::default()).expect("serializes");
        let keys = config_reference::key_paths(&defaults, &["store.replication"]);
        config_reference::assert_documented(&keys, block);
    }

    #[test]
    fn k_below_five_is_refused_with_a_typed_error() {
        for k in 1..5 {
            let c = Config::from_toml(&format!("k_min_devices = {k}")).expect("parse");
            assert!(
                matches!(
                    c.node_config(),
                    Err(ConfigError::Federation(FederationError::ThresholdTooLow {
                        min: 5,
                        ..
                    }))
                ),
                "k = {k}"
            );
        }
        let c = Config::from_toml("k_min_devices = 5").expect("parse");
        assert_eq!(c.node_config().expect("valid").federation.k_min_devices, 5);
        // A share too small for k devices is refused too.
        let c = Config::from_toml("max_device_share = 0.1").expect("parse");
        assert!(matches!(c.node_config(), Err(ConfigError::Federation(_))));
    }

    #[test]
    fn the_federation_key_comes_from_its_file_or_is_random() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "00112233445566778899aabbccddeeff\n").expect("write");
        let c = Config {
            federation_key_file: Some(path.clone()),
            ..Config::default()
        };
        let key = c.node_config().expect("valid").federation.order_key;
        assert_eq!(key.0[..3], [0x00, 0x11, 0x22]);
        assert_eq!(key, c.node_config().expect("valid").federation.order_key);
        for bad in ["0011", "zz112233445566778899aabbccddeeff", ""] {
            std::fs::write(&path, bad).expect("write");
            assert!(
                matches!(c.node_config(), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
        let missing = Config {
            federation_key_file: Some(dir.path().join("none")),
            ..Config::default()
        };
        assert!(matches!(
            missing.node_config(),
            Err(ConfigError::Read { .. })
        ));
        // Without a file: random, so two nodes do not share an order.
        let a = Config::default()
            .node_config()
            .expect("valid")
            .federation
            .order_key;
        let b = Config::default()
            .node_config()
            .expect("valid")
            .federation
            .order_key;
        assert_ne!(a, b);
    }
}
