//! `omega-braind` configuration: a TOML file (`--config`), every field
//! optional with the default shown.
//!
//! ```toml
//! # Unix socket; default <data-dir>/brain.sock (the --socket flag wins).
//! # The socket is created 0660 (owner and group may connect); the data
//! # directory is 0700, so apps of other users need a socket outside it.
//! # socket = "/run/omega/brain.sock"
//! max_connections = 64            # past it: accept, send too_many_connections, close
//! max_in_flight_per_connection = 8 # past it: the connection is not read (backpressure)
//! max_in_flight = 256             # all connections; past it: busy error
//! max_request_bytes = 65536       # per request line; past it: request_too_large
//! shutdown_grace_secs = 10        # SIGTERM/SIGINT: time to finish in-flight work
//! debug_ops = false               # enables debug.* ops (only in a `testing` build)
//! mood_cache = 256                # mood vectors kept (LRU)
//! log = "info"                    # tracing filter (RUST_LOG wins)
//! # catalog_import_dir = "/var/lib/omega/import" # catalog.import `path`s must be regular
//! #                               # files inside it; default none: `path` is refused
//! catalog_import_max_bytes = 268435456 # largest file catalog.import reads
//!
//! [access]                        # roles from the peer's SO_PEERCRED (server docs)
//! system_uids = []                # every op; the daemon's own uid and root are
//! system_gids = []                # system unless listed as app
//! app_uids = []                   # recommend, observe, stats, health
//! app_gids = []                   # anyone unlisted: every op answered `forbidden`
//! observe_per_sec = 5.0           # per connection: token bucket refill ...
//! observe_burst = 100             # ... and size; past it: rate_limited
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
//!
//! [sync]                          # off while neither nodes nor dns is set
//! nodes = []                      # node addresses "host:port", tried in order
//! # dns = "nodes.example.net:4433" # a name resolving to several nodes, tried after `nodes`
//! # server_name = "node-1"        # name in the node certificate; default: each address's host
//! device_cert = "certs/device.crt" # relative paths are under the data directory
//! device_key = "certs/device.key"
//! node_ca = "certs/node-ca.crt"
//! # crl = "certs/node-ca.crl"     # the node CA's revocation list; default: node_ca's
//!                                 # name with .crl when that file exists at start.
//!                                 # Once in use it is required: missing or expired, no sync.
//!                                 # The certificate, key and CRL are re-read before each sync.
//! device_ca = "certs/device-ca.crt" # checks the other members of aggregation rounds
//! region = "eu-west"              # sent with each sync (the node must allow it; omega_protocol::DEFAULT_REGION)
//! interval_min_secs = 300         # the TV's own interval: random in [min, max]
//! interval_max_secs = 900
//! min_interval_secs = 60          # a node's next_sync_secs / RetryAfter: never sooner ...
//! max_interval_secs = 3600        # ... and never later than these
//! backoff_base_secs = 10          # unreachable: full-jitter backoff from base ...
//! backoff_cap_secs = 1800         # ... doubling up to cap
//! max_snapshots_per_day = 4       # ResyncRequired past it: a delta at the own interval
//! max_catalog_pages = 20          # exchanges per cycle while catalog pages say `more`
//! connect_timeout_secs = 10       # handshake per address
//! exchange_timeout_secs = 30      # one request and its answer
//!
//! [privacy]
//! epsilon_per_day = 4.0           # differential privacy per viewing event over any 24 h, (0, 10]
//! delta = 1e-6                    # (0, 1e-5]
//!
//! [privacy.rounds]                 # the aggregation rounds the TV takes part in
//! min_threshold = 10               # declines rounds a node runs with fewer members
//! max_cohort = 1000
//! min_share_sigma = 1.0            # declines rounds where its own noise share is smaller
//! release_share = 1.0              # share of the daily budget one release spends
//! ```
//!
//! Offline (no node reachable, for days): recommendations keep using what
//! the store holds; the sync keeps one timer, its last error and counters,
//! and backs off to at most `backoff_cap_secs` between attempts; nothing is
//! queued (each request is built from the store when it is sent).
//!
//! Unknown keys are refused (a typo should not silently mean "default").

use std::path::{Path, PathBuf};
use std::time::Duration;

use omega_brain::actors::{BrainConfig, InferenceConfig, SyncConfig};
use omega_brain::ScheduleConfig;
use omega_protocol::Region;
use serde::{Deserialize, Serialize};

use crate::access::AccessPolicy;
use crate::server::ServerConfig;

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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// The directory `catalog.import` may read `path`s from (relative
    /// paths are taken inside it; symlinks are resolved and must stay
    /// inside; only regular files). Default none: `path` imports answer
    /// `not_available` (`lines` works).
    pub catalog_import_dir: Option<PathBuf>,
    /// Largest file `catalog.import` reads, bytes. Default 256 MiB.
    pub catalog_import_max_bytes: u64,
    /// Who may do what on the socket.
    pub access: AccessSection,
    /// Store limits.
    pub store: StoreSection,
    /// Inference limits.
    pub inference: InferenceSection,
    /// Sync with constellation nodes.
    pub sync: SyncSection,
    /// The daily privacy budget.
    pub privacy: PrivacySection,
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
            catalog_import_dir: None,
            catalog_import_max_bytes: 256 * 1024 * 1024,
            access: AccessSection::default(),
            store: StoreSection::default(),
            inference: InferenceSection::default(),
            sync: SyncSection::default(),
            privacy: PrivacySection::default(),
        }
    }
}

/// `[access]`: the roles of the socket's peers by uid and gid (see
/// [`crate::access`]) and the per-connection observe rate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSection {
    /// Uids with every op. Default empty (the daemon's own uid and root
    /// are system anyway, unless listed in `app_uids`).
    pub system_uids: Vec<u32>,
    /// Uids with `recommend`, `observe`, `stats`, `health`. Default empty.
    pub app_uids: Vec<u32>,
    /// Gids (the peer's primary group) with every op. Default empty.
    pub system_gids: Vec<u32>,
    /// Gids with the app ops. Default empty.
    pub app_gids: Vec<u32>,
    /// Observes a connection gets per second once its burst is spent
    /// (> 0). Default 5.
    pub observe_per_sec: f64,
    /// Observes a connection may send back to back (≥ 1). Default 100.
    pub observe_burst: u32,
}

impl Default for AccessSection {
    fn default() -> Self {
        Self {
            system_uids: Vec::new(),
            app_uids: Vec::new(),
            system_gids: Vec::new(),
            app_gids: Vec::new(),
            observe_per_sec: 5.0,
            observe_burst: 100,
        }
    }
}

impl AccessSection {
    /// The policy, with `own_uid` the daemon's effective uid.
    pub fn policy(&self, own_uid: u32) -> AccessPolicy {
        AccessPolicy {
            system_uids: self.system_uids.iter().copied().collect(),
            app_uids: self.app_uids.iter().copied().collect(),
            system_gids: self.system_gids.iter().copied().collect(),
            app_gids: self.app_gids.iter().copied().collect(),
            own_uid,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("access: {m}"));
        if !(self.observe_per_sec.is_finite() && self.observe_per_sec > 0.0) {
            return Err(bad("observe_per_sec must be above 0".into()));
        }
        if self.observe_burst == 0 {
            return Err(bad("observe_burst must be at least 1".into()));
        }
        for (list, other, what) in [
            (&self.system_uids, &self.app_uids, "uid"),
            (&self.system_gids, &self.app_gids, "gid"),
        ] {
            if let Some(id) = list.iter().find(|id| other.contains(id)) {
                return Err(bad(format!("{what} {id} is listed as both system and app")));
            }
        }
        Ok(())
    }
}

/// `[privacy]`: the daily differential-privacy budget of everything the TV
/// uploads (per viewing event, over any 24 hours; omega-privacy's docs say
/// what it means).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySection {
    /// ε per viewing event per 24 hours, in (0, 10].
    pub epsilon_per_day: f64,
    /// δ alongside, in (0, 1e-5].
    pub delta: f64,
    /// The bounds of the aggregation rounds the TV takes part in, whatever
    /// a node asks (omega-brain-core's `RoundClientConfig`; every field has
    /// a default).
    pub rounds: omega_brain_core::RoundClientConfig,
}

impl Default for PrivacySection {
    fn default() -> Self {
        let b = omega_privacy::Budget::default();
        Self {
            epsilon_per_day: b.epsilon,
            delta: b.delta,
            rounds: omega_brain_core::RoundClientConfig::default(),
        }
    }
}

impl PrivacySection {
    fn budget(&self) -> Result<omega_privacy::Budget, ConfigError> {
        omega_privacy::Budget::new(self.epsilon_per_day, self.delta)
            .map_err(|e| ConfigError::Invalid(format!("privacy: {e}")))
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
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

/// `[sync]` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSection {
    /// Node addresses, `host:port`.
    pub nodes: Vec<String>,
    /// A `name:port` resolving to several nodes.
    pub dns: Option<String>,
    /// The name the node certificates carry (default: each address's host).
    pub server_name: Option<String>,
    /// Device certificate (relative: under the data directory).
    pub device_cert: PathBuf,
    /// Device key.
    pub device_key: PathBuf,
    /// Node CA certificate.
    pub node_ca: PathBuf,
    /// Node CA revocation list, required when set. Unset: `node_ca` with
    /// the extension `crl` (`node-ca.crl` beside `node-ca.crt`, as
    /// `omega-certs init` writes them) when that file exists at start,
    /// required from then on; otherwise node certificates are checked
    /// against the CA only (warned at start).
    pub crl: Option<PathBuf>,
    /// Device CA certificate: every member of an aggregation round must
    /// hold a device certificate it issued.
    pub device_ca: PathBuf,
    /// Region sent with each sync.
    pub region: String,
    /// Own interval, lower end.
    pub interval_min_secs: u64,
    /// Own interval, upper end.
    pub interval_max_secs: u64,
    /// Soonest a node may ask for.
    pub min_interval_secs: u64,
    /// Latest a node may push to.
    pub max_interval_secs: u64,
    /// Backoff base.
    pub backoff_base_secs: u64,
    /// Backoff cap.
    pub backoff_cap_secs: u64,
    /// Snapshots per 24 hours.
    pub max_snapshots_per_day: u32,
    /// Exchanges per cycle while paging the catalog.
    pub max_catalog_pages: u32,
    /// Handshake bound per address.
    pub connect_timeout_secs: u64,
    /// Exchange bound.
    pub exchange_timeout_secs: u64,
}

impl Default for SyncSection {
    fn default() -> Self {
        let s = ScheduleConfig::default();
        Self {
            nodes: Vec::new(),
            dns: None,
            server_name: None,
            device_cert: "certs/device.crt".into(),
            device_key: "certs/device.key".into(),
            node_ca: "certs/node-ca.crt".into(),
            crl: None,
            device_ca: "certs/device-ca.crt".into(),
            region: omega_protocol::DEFAULT_REGION.into(),
            interval_min_secs: s.interval_min_secs,
            interval_max_secs: s.interval_max_secs,
            min_interval_secs: s.min_interval_secs,
            max_interval_secs: s.max_interval_secs,
            backoff_base_secs: s.backoff_base_secs,
            backoff_cap_secs: s.backoff_cap_secs,
            max_snapshots_per_day: s.max_snapshots_per_day,
            max_catalog_pages: s.max_catalog_pages,
            connect_timeout_secs: 10,
            exchange_timeout_secs: 30,
        }
    }
}

impl SyncSection {
    /// Whether a node is configured.
    pub fn enabled(&self) -> bool {
        !self.nodes.is_empty() || self.dns.is_some()
    }

    fn schedule(&self) -> ScheduleConfig {
        ScheduleConfig {
            interval_min_secs: self.interval_min_secs,
            interval_max_secs: self.interval_max_secs,
            min_interval_secs: self.min_interval_secs,
            max_interval_secs: self.max_interval_secs,
            backoff_base_secs: self.backoff_base_secs,
            backoff_cap_secs: self.backoff_cap_secs,
            max_snapshots_per_day: self.max_snapshots_per_day,
            max_catalog_pages: self.max_catalog_pages,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("sync: {m}"));
        self.schedule().validate().map_err(|e| bad(e.to_string()))?;
        Region::new(self.region.as_str()).map_err(|e| bad(e.to_string()))?;
        if self.nodes.len() > omega_brain::actors::MAX_ADDRESSES {
            return Err(bad(format!(
                "at most {} nodes",
                omega_brain::actors::MAX_ADDRESSES
            )));
        }
        if self.connect_timeout_secs == 0 || self.exchange_timeout_secs == 0 {
            return Err(bad("timeouts must be at least 1 s".into()));
        }
        Ok(())
    }

    /// The actor's configuration (`None` when no node is configured);
    /// relative paths are taken under `data_dir`.
    fn sync_config(&self, data_dir: &Path) -> Option<SyncConfig> {
        if !self.enabled() {
            return None;
        }
        let region = Region::new(self.region.as_str()).ok()?;
        Some(SyncConfig {
            nodes: self.nodes.clone(),
            dns: self.dns.clone(),
            server_name: self.server_name.clone(),
            device_cert: data_dir.join(&self.device_cert),
            device_key: data_dir.join(&self.device_key),
            node_ca: data_dir.join(&self.node_ca),
            crl: self.crl.as_ref().map(|c| data_dir.join(c)),
            device_ca: data_dir.join(&self.device_ca),
            region,
            schedule: self.schedule(),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            exchange_timeout: Duration::from_secs(self.exchange_timeout_secs),
        })
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
        self.sync.validate()?;
        self.access.validate()?;
        if self.catalog_import_max_bytes == 0 {
            return Err(ConfigError::Invalid(
                "catalog_import_max_bytes must be at least 1".into(),
            ));
        }
        self.privacy.budget()?;
        self.privacy
            .rounds
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("privacy.rounds: {e}")))?;
        if self.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_request_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// The socket server's configuration: the socket at `socket`, the
    /// import directory taken under `data_dir` when relative, the access
    /// policy with the daemon's effective uid.
    pub fn server_config(&self, socket: PathBuf, data_dir: &Path) -> ServerConfig {
        ServerConfig {
            socket,
            max_connections: self.max_connections,
            max_in_flight_per_connection: self.max_in_flight_per_connection,
            max_in_flight: self.max_in_flight,
            max_request_bytes: self.max_request_bytes,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            debug_ops: self.debug_ops,
            access: self.access.policy(rustix::process::geteuid().as_raw()),
            observe_per_sec: self.access.observe_per_sec,
            observe_burst: self.access.observe_burst,
            import_dir: self.catalog_import_dir.as_ref().map(|d| data_dir.join(d)),
            import_max_bytes: self.catalog_import_max_bytes,
        }
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
        b.sync = self.sync.sync_config(data_dir);
        // Checked by `validate`; an unchecked bad value falls back to the
        // default budget rather than to no budget.
        b.store.privacy_budget = self.privacy.budget().unwrap_or_default();
        b.store.rounds = self.privacy.rounds;
        b
    }
}

#[cfg(test)]
#[path = "../../docs/config_reference.rs"]
mod config_reference;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_configuration_reference_names_every_key_and_its_default() {
        let block = config_reference::defaults_block("<!-- omega-braind defaults -->");
        let parsed: DaemonConfig = toml::from_str(block).expect("the reference's defaults parse");
        assert_eq!(
            parsed,
            DaemonConfig::default(),
            "docs/configuration.md's omega-braind defaults differ from DaemonConfig::default()"
        );
        let defaults = serde_json::to_value(DaemonConfig::default()).expect("serializes");
        config_reference::assert_documented(&config_reference::key_paths(&defaults, &[]), block);
    }

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

    #[test]
    fn access_lists_and_rates_are_checked() {
        let c: DaemonConfig = toml::from_str(
            "catalog_import_dir = \"import\"\n[access]\napp_uids = [1000]\nsystem_gids = [20]\nobserve_per_sec = 0.5\nobserve_burst = 3\n",
        )
        .unwrap();
        c.validate().unwrap();
        let s = c.server_config("/s".into(), Path::new("/d"));
        assert_eq!(s.import_dir, Some(PathBuf::from("/d/import")));
        assert_eq!((s.observe_per_sec, s.observe_burst), (0.5, 3));
        assert_eq!(s.access.role(1000, 20), crate::access::Role::App);
        assert_eq!(s.access.role(1001, 20), crate::access::Role::System);
        for broken in [
            "[access]\nobserve_per_sec = 0\n",
            "[access]\nobserve_per_sec = -1\n",
            "[access]\nobserve_burst = 0\n",
            "[access]\napp_uids = [5]\nsystem_uids = [5]\n",
            "[access]\napp_gids = [5]\nsystem_gids = [5]\n",
            "catalog_import_max_bytes = 0\n",
        ] {
            let c: DaemonConfig = toml::from_str(broken).unwrap();
            assert!(c.validate().is_err(), "{broken}");
        }
        assert!(toml::from_str::<DaemonConfig>("[access]\nuids = [1]\n").is_err());
    }

    #[test]
    fn sync_is_off_without_a_node_and_checks_its_bounds() {
        let d = DaemonConfig::default();
        assert!(d
            .brain_config(Path::new("d"), Path::new("m"))
            .sync
            .is_none());
        let c: DaemonConfig = toml::from_str(
            "[sync]\nnodes = [\"127.0.0.1:4433\"]\nnode_ca = \"/etc/ca.crt\"\nregion = \"eu\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let s = c
            .brain_config(Path::new("/d"), Path::new("m"))
            .sync
            .unwrap();
        assert_eq!(s.node_ca, PathBuf::from("/etc/ca.crt"));
        assert_eq!(s.device_cert, PathBuf::from("/d/certs/device.crt"));
        assert_eq!(s.schedule, ScheduleConfig::default());
        for broken in [
            "[sync]\nmin_interval_secs = 0\n",
            "[sync]\ninterval_min_secs = 10\n",
            "[sync]\nregion = \"EU\"\n",
            "[sync]\nmax_catalog_pages = 0\n",
        ] {
            let c: DaemonConfig = toml::from_str(broken).unwrap();
            assert!(c.validate().is_err(), "{broken}");
        }
        assert!(toml::from_str::<DaemonConfig>("[sync]\nnode = []\n").is_err());
    }

    #[test]
    fn the_privacy_budget_is_configured_and_checked() {
        let d = DaemonConfig::default().brain_config(Path::new("d"), Path::new("m"));
        assert_eq!(d.store.privacy_budget, omega_privacy::Budget::default());
        let c: DaemonConfig =
            toml::from_str("[privacy]\nepsilon_per_day = 2.5\ndelta = 1e-7\n").unwrap();
        c.validate().unwrap();
        let b = c
            .brain_config(Path::new("d"), Path::new("m"))
            .store
            .privacy_budget;
        assert_eq!((b.epsilon, b.delta), (2.5, 1e-7));
        for broken in [
            "[privacy]\nepsilon_per_day = 0\n",
            "[privacy]\nepsilon_per_day = 11\n",
            "[privacy]\ndelta = 0.01\n",
        ] {
            let c: DaemonConfig = toml::from_str(broken).unwrap();
            assert!(c.validate().is_err(), "{broken}");
        }
        assert!(toml::from_str::<DaemonConfig>("[privacy]\nepsilon = 4\n").is_err());
    }
}
