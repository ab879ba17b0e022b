//! Wiring: store, model, actors, QUIC listener and admin API, started
//! together by [`RunningNode::start`] and stopped by
//! [`RunningNode::shutdown`].
//!
//! Files: the store is `DATA_DIR/constellation.redb` (created 0600, and
//! made 0600 if an older node left it wider; a new data directory is
//! created 0700), or the ScyllaDB keyspace of the configuration's `[store]`
//! section; the node identity is `CERTS/nodes/<node_name>.crt|.key`;
//! devices are checked against `CERTS/device-ca.crt` and its revocation
//! list `CERTS/device-ca.crl`, which must exist and be unexpired and is
//! reloaded while the node runs ([`crate::revocation`]). The node refuses
//! to start when
//! its private key or a token file gives group or others any access
//! ([`crate::secrets`]), and when a CA private key is in the certificate
//! directory (unless `allow_ca_keys`). The node's certificate and key are
//! reloaded on the CRL's poll and on SIGHUP ([`crate::identity`]).
//!
//! Shutdown order: the listener stops accepting connections and streams;
//! in-flight syncs finish (at most the drain timeout); connections close;
//! the admin server stops; the actors stop; the store is closed (the last
//! reference dropped) before `shutdown` returns, so the data directory can
//! be reopened at once.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Semaphore};

use omega_constellation::actors::{ClusterMembership, Node, TextEmbedder};
use omega_constellation::cluster::ClusterStore;
use omega_constellation::store::{PatternStore, RedbStore, ScyllaStore};
use omega_transport::attest::DeviceVerifier;
use omega_transport::quic::{server_config_with_identity, TlsIdentity};

use crate::admin::{self, AdminState, HostAllowList};
use crate::config::{Config, ConfigError, StoreKind};
use crate::identity::{self, check_own_certificate, IdentityError, IdentityReload};
use crate::listener::{self, ConnectionLimits, ListenerContext};
use crate::revocation::{self, CrlError};
use crate::secrets::{self, BearerToken, SecretError};
use crate::telemetry;

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "constellation.redb";

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or directory problem.
    #[error("{what} {path}: {message}")]
    Path {
        /// What it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The problem.
        message: String,
    },
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] omega_constellation::store::StoreError),
    /// The model could not be loaded.
    #[error("loading the model from {path}: {message}")]
    Model {
        /// The model directory.
        path: PathBuf,
        /// The loader's error.
        message: String,
    },
    /// A private key or token file is exposed, unreadable, or a token too
    /// short.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The device revocation list is missing, expired or unreadable, or CA
    /// private keys are in the certificate directory.
    #[error(transparent)]
    Crl(#[from] CrlError),
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] omega_transport::quic::TlsError),
    /// The node certificate is another node's, or one a TV would refuse.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The actors could not start.
    #[error(transparent)]
    Actors(#[from] omega_constellation::actors::ActorsError),
}

/// What [`RunningNode::start`] needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the store lives (created if missing).
    pub data_dir: PathBuf,
    /// The MiniLM model directory; `None` runs without catalog imports.
    pub model_dir: Option<PathBuf>,
    /// The certificate directory (omega-certs layout).
    pub certs_dir: PathBuf,
    /// The configuration (file values already overridden by the command line).
    pub config: Config,
    /// The admin bearer token given in-process (tests, embedding programs;
    /// at least [`secrets::MIN_TOKEN_BYTES`] bytes). `None`: the token of
    /// `config.admin_token_file`, and without that file every admin
    /// endpoint except `/health` and `/ready` is refused.
    pub admin_token: Option<String>,
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    node: Arc<Node>,
    store: Weak<dyn PatternStore>,
    quic_addr: SocketAddr,
    admin_addr: SocketAddr,
    endpoint: quinn::Endpoint,
    shutdown_tx: watch::Sender<bool>,
    listening: Arc<AtomicBool>,
    accept_task: tokio::task::JoinHandle<()>,
    crl_task: tokio::task::JoinHandle<()>,
    admin_task: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
}

fn load_model(dir: &Path) -> Result<Arc<dyn TextEmbedder>, ServeError> {
    let e =
        omega_embed::Embedder::load(dir, omega_embed::EmbedderOptions::default()).map_err(|e| {
            ServeError::Model {
                path: dir.to_owned(),
                message: e.to_string(),
            }
        })?;
    Ok(Arc::new(e))
}

/// Creates `path` with mode 0600 if missing (redb initializes an empty
/// file), and narrows an existing file to 0600.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl RunningNode {
    /// Opens the store, loads the model, starts the actors, binds the QUIC
    /// and admin sockets and starts serving.
    pub async fn start(opts: ServeOptions) -> Result<Self, ServeError> {
        let config = &opts.config;
        let node_config = config.node_config()?;
        let prometheus = telemetry::prometheus();
        telemetry::register_regions(&config.regions);

        let admin_token = match (&opts.admin_token, &config.admin_token_file) {
            (Some(t), _) => Some(BearerToken::new(t, "admin token")?),
            (None, Some(path)) => Some(secrets::read_token_file(path, "admin token file")?),
            (None, None) => None,
        };
        let metrics_token = config
            .metrics_token_file
            .as_deref()
            .map(|path| secrets::read_token_file(path, "metrics token file"))
            .transpose()?;

        let path_error = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |e: std::io::Error| ServeError::Path {
                what,
                path,
                message: e.to_string(),
            }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.data_dir)
            .map_err(path_error("data directory", &opts.data_dir))?;
        let store_path = match config.store.kind {
            StoreKind::Redb => {
                let path = opts.data_dir.join(STORE_FILE);
                create_private_file(&path).map_err(path_error("store", &path))?;
                path
            }
            StoreKind::Scylla => PathBuf::from(format!(
                "scylla:{}/{}",
                config.store.contact_points.join(","),
                config.store.keyspace
            )),
        };
        // A shared store is also the cluster's membership and lease.
        type Opened = (Arc<dyn PatternStore>, Option<Arc<dyn ClusterStore>>);
        let (store, cluster): Opened = {
            let path = store_path.clone();
            let scylla = match config.store.kind {
                StoreKind::Redb => None,
                StoreKind::Scylla => Some(config.store.scylla_options()?),
            };
            let group = config.store.group_options();
            let joined = tokio::task::spawn_blocking(move || match scylla {
                None => RedbStore::open_with(path, group)
                    .map(|s| (Arc::new(s) as Arc<dyn PatternStore>, None)),
                Some(o) => ScyllaStore::open(&o).map(|s| {
                    let s = Arc::new(s);
                    (
                        Arc::clone(&s) as Arc<dyn PatternStore>,
                        Some(s as Arc<dyn ClusterStore>),
                    )
                }),
            })
            .await;
            joined.map_err(|e| ServeError::Path {
                what: "store",
                path: store_path.clone(),
                message: e.to_string(),
            })??
        };
        let mut node_config = node_config;
        if let Some(cluster) = cluster {
            node_config.cluster = Some(ClusterMembership {
                store: cluster,
                node: config.node_name.clone(),
                addr: config
                    .cluster
                    .advertise
                    .clone()
                    .unwrap_or_else(|| config.listen.to_string()),
                timing: config.lease_timing()?,
            });
        }

        let embedder = match &opts.model_dir {
            Some(dir) => {
                let dir = dir.clone();
                let started = Instant::now();
                let e = tokio::task::spawn_blocking(move || load_model(&dir))
                    .await
                    .map_err(|e| ServeError::Model {
                        path: opts.model_dir.clone().unwrap_or_default(),
                        message: e.to_string(),
                    })??;
                tracing::info!(secs = started.elapsed().as_secs_f64(), "model loaded");
                Some(e)
            }
            None => {
                tracing::warn!("no model directory: catalog imports are disabled");
                None
            }
        };

        // TLS before the actors, so a missing certificate fails fast.
        let (node_cert, node_key) = identity::node_files(&opts.certs_dir, &config.node_name);
        secrets::check_private(&node_key, "node private key")?;
        let identity_loaded = (
            std::fs::read(&node_cert).map_err(path_error("node certificate", &node_cert))?,
            std::fs::read(&node_key).map_err(path_error("node private key", &node_key))?,
        );
        let identity = TlsIdentity::from_pem(&identity_loaded.0, &identity_loaded.1)?;
        identity.check_pair()?;
        check_own_certificate(
            &identity,
            &config.node_name,
            &opts.certs_dir,
            SystemTime::now(),
        )?;
        let ca = opts.certs_dir.join("device-ca.crt");
        let crl = opts.certs_dir.join("device-ca.crl");
        let ca_keys = revocation::ca_keys_in(&opts.certs_dir);
        if !ca_keys.is_empty() && !config.allow_ca_keys {
            return Err(CrlError::CaKeys(ca_keys).into());
        }
        for key in ca_keys {
            tracing::warn!(
                key = %key.display(),
                "A CA PRIVATE KEY IS IN THIS NODE'S CERTIFICATE DIRECTORY (allow_ca_keys): \
                 whoever takes this node can mint devices or nodes. Give the node only the CA \
                 certificates, the CRLs and its own key (omega-certs export-node); keep CA \
                 keys offline."
            );
        }
        let anchor = revocation::load_anchor(&ca, &crl)?;
        let crl_loaded = std::fs::read(&crl).map_err(|source| CrlError::Read {
            path: crl.clone(),
            source,
        })?;
        let (server_cfg, revocation_handle, identity_handle) =
            server_config_with_identity(identity, &anchor)?;
        let identity_reload = IdentityReload::new(
            &opts.certs_dir,
            &config.node_name,
            identity_loaded,
            identity_handle,
        );
        // The same device CA vouches for the round members' signed keys.
        let verifier = DeviceVerifier::new(&anchor)?;

        let node =
            Arc::new(Node::start(Arc::clone(&store), embedder, verifier, node_config).await?);
        let weak_store = Arc::downgrade(&store);
        drop(store);

        let endpoint = match quinn::Endpoint::server(server_cfg, config.listen) {
            Ok(e) => e,
            Err(source) => {
                node.shutdown(Duration::from_secs(5)).await;
                return Err(ServeError::Bind {
                    addr: config.listen,
                    source,
                });
            }
        };
        let quic_addr = endpoint.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let admin_listener = match tokio::net::TcpListener::bind(config.admin).await {
            Ok(l) => l,
            Err(source) => {
                endpoint.close(0u32.into(), b"startup failed");
                node.shutdown(Duration::from_secs(5)).await;
                return Err(ServeError::Bind {
                    addr: config.admin,
                    source,
                });
            }
        };
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| ServeError::Bind {
                addr: config.admin,
                source,
            })?;

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(config.max_connections));
        metrics::gauge!(telemetry::CONNECTIONS_MAX).set(config.max_connections as f64);
        let listening = Arc::new(AtomicBool::new(true));
        let ctx = Arc::new(ListenerContext::new(
            Arc::clone(&node),
            Arc::clone(&connections),
            config.request_timeout(),
            ConnectionLimits {
                per_device: config.max_connections_per_device,
                max_pending_handshakes: config.max_pending_handshakes,
                retry_above_pending: config.retry_above_pending,
            },
        ));
        let accept_task = tokio::spawn(listener::accept_loop(
            endpoint.clone(),
            Arc::clone(&ctx),
            shutdown_rx.clone(),
        ));
        // Registered before `start` returns: a SIGHUP from then on reloads
        // (an unhandled SIGHUP would end the process).
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: the CRL and the node certificate are reloaded on file change only");
                None
            }
        };
        let crl_task = tokio::spawn(revocation::watch(
            hangup,
            crl,
            crl_loaded,
            revocation_handle,
            identity_reload,
            ctx,
            config.crl_poll(),
            shutdown_rx.clone(),
        ));

        if admin_token.is_none() {
            tracing::warn!(
                "no admin token configured (--admin-token-file, OMEGA_ADMIN_TOKEN_FILE or \
                 admin_token_file): every admin endpoint but /health and /ready is refused"
            );
        }
        let state = AdminState {
            node: Arc::clone(&node),
            token: admin_token,
            metrics_token,
            hosts: Arc::new(HostAllowList::new(admin_addr, &config.admin_allowed_hosts)),
            import_limit: config.admin_import_limit,
            import_gate: Arc::new(Semaphore::new(1)),
            prometheus,
            listening: Arc::clone(&listening),
            node_name: Arc::from(config.node_name.as_str()),
            started: Instant::now(),
            connections,
            max_connections: config.max_connections,
        };
        let app = admin::router(state, config.admin_body_limit);
        let mut admin_shutdown = shutdown_rx;
        let admin_task = tokio::spawn(async move {
            let serve = axum::serve(admin_listener, app).with_graceful_shutdown(async move {
                let _ = admin_shutdown.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        tracing::info!(
            node = %config.node_name,
            quic = %quic_addr,
            admin = %admin_addr,
            store = %store_path.display(),
            "omega-node serving"
        );
        Ok(Self {
            node,
            store: weak_store,
            quic_addr,
            admin_addr,
            endpoint,
            shutdown_tx,
            listening,
            accept_task,
            crl_task,
            admin_task,
            drain_timeout: config.drain_timeout(),
        })
    }

    /// The QUIC address devices sync with.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The actor tree (tests and embedding programs).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Stops serving (see the module docs for the order) and closes the
    /// store. Returns whether everything finished within the drain timeout.
    pub async fn shutdown(self) -> bool {
        let deadline = Instant::now() + self.drain_timeout;
        self.listening.store(false, Ordering::Release);
        let _ = self.shutdown_tx.send(true);
        let mut clean = true;
        let mut accept = self.accept_task;
        if tokio::time::timeout_at(deadline.into(), &mut accept)
            .await
            .is_err()
        {
            tracing::warn!("in-flight syncs did not finish within the drain timeout");
            accept.abort();
            clean = false;
        }
        self.crl_task.abort();
        self.endpoint.close(0u32.into(), b"node shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        let mut admin = self.admin_task;
        if tokio::time::timeout(Duration::from_secs(5), &mut admin)
            .await
            .is_err()
        {
            admin.abort();
        }
        self.node
            .shutdown(self.drain_timeout.max(Duration::from_secs(1)))
            .await;
        drop(self.node);
        // Wait (bounded) for the blocking pool to release the store.
        let closed_by = Instant::now() + Duration::from_secs(10);
        while self.store.strong_count() > 0 && Instant::now() < closed_by {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if self.store.strong_count() > 0 {
            tracing::warn!("the store is still referenced after shutdown");
            clean = false;
        }
        tracing::info!(clean, "omega-node stopped");
        clean
    }
}
