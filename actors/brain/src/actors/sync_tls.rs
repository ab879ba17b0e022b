//! The sync's TLS material, read again before every attempt.
//!
//! * Files: the device certificate and key, the node CA, the node CA's
//!   revocation list and the device CA (round members). Each attempt reads
//!   them (a few KB); when their bytes changed since the last build, the
//!   client configuration and the round credentials are built again and the
//!   caller drops its open connection, so a renewed device certificate (or a
//!   new CRL) is used from that attempt on with a new connection.
//! * The node CRL fails closed. It is required when [`SyncConfig::crl`]
//!   names it, or else when the node CA's directory holds `<stem>.crl` beside
//!   it at start (`omega-certs init` writes `node-ca.crl` beside
//!   `node-ca.crt`). A required CRL that is missing, does not parse or is past
//!   its `nextUpdate` stops every attempt before a connection is made (the
//!   handshake verifier enforces `nextUpdate` as well). Without one, node
//!   certificates are checked against the CA only, and a warning says so at
//!   start.
//! * Files that do not build (a key that does not match its certificate —
//!   a renewal read half-way —, a CRL that does not parse) stop the attempt
//!   with the reason; the next attempt reads them again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use omega_transport::attest::{DeviceAttestor, DeviceVerifier};
use omega_transport::quic::{client_config, TlsIdentity, TrustAnchor};

use super::sync::SyncConfig;
use crate::store::RoundCredentials;

/// What one build used: the bytes of each file, in [`ClientTls::paths`] order.
type Seen = Vec<Vec<u8>>;

/// A built client configuration and the round credentials of the same
/// device certificate.
#[derive(Clone)]
pub(crate) struct Built {
    /// The QUIC client configuration.
    pub client: quinn::ClientConfig,
    /// Signs this TV's round keys, checks the other members'.
    pub credentials: RoundCredentials,
}

/// The files a sync's TLS is built from.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    node_ca: PathBuf,
    crl: Option<PathBuf>,
    device_ca: PathBuf,
}

/// The TLS files of a sync and what was last built from them.
pub(crate) struct ClientTls {
    files: Files,
    seen: Seen,
    built: Built,
    crl_next_update: Option<SystemTime>,
}

/// The node CRL a sync requires, by the rule of the module docs.
pub(crate) fn node_crl(cfg: &SyncConfig) -> Option<PathBuf> {
    if let Some(crl) = &cfg.crl {
        return Some(crl.clone());
    }
    let beside = cfg.node_ca.with_extension("crl");
    beside.is_file().then_some(beside)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn tls_err(what: &str, e: &dyn std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Files {
    /// In [`Seen`] order: certificate, key, node CA, device CA, then the CRL.
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [&self.cert, &self.key, &self.node_ca, &self.device_ca]
            .into_iter()
            .chain(self.crl.as_ref())
            .map(PathBuf::as_path)
    }

    fn read_all(&self) -> Result<Seen, String> {
        self.paths().map(read).collect()
    }

    fn crl_name(&self) -> String {
        self.crl
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string())
    }

    /// The client and credentials of `seen`, and the CRL's `nextUpdate`.
    fn build(&self, seen: &Seen) -> Result<(Built, Option<SystemTime>), String> {
        let identity = TlsIdentity::from_pem(&seen[0], &seen[1])
            .map_err(|e| tls_err(&self.cert.display().to_string(), &e))?;
        identity
            .check_pair()
            .map_err(|e| tls_err("device certificate and key", &e))?;
        let crls: Vec<&[u8]> = seen.get(4).map(Vec::as_slice).into_iter().collect();
        let anchor =
            TrustAnchor::from_pem(&seen[2], &crls).map_err(|e| tls_err("node CA or CRL", &e))?;
        if self.crl.is_some() && anchor.crls.is_empty() {
            return Err(format!(
                "{}: no revocation list in the file",
                self.crl_name()
            ));
        }
        let next_update = anchor
            .crl_next_update()
            .map_err(|e| tls_err("node CRL", &e))?;
        let device_ca =
            TrustAnchor::from_pem(&seen[3], &[]).map_err(|e| tls_err("device CA", &e))?;
        let credentials = RoundCredentials {
            attestor: Arc::new(
                DeviceAttestor::new(&identity).map_err(|e| tls_err("round attestor", &e))?,
            ),
            verifier: DeviceVerifier::new(&device_ca).map_err(|e| tls_err("device CA", &e))?,
        };
        let client = client_config(identity, &anchor).map_err(|e| tls_err("TLS client", &e))?;
        Ok((
            Built {
                client,
                credentials,
            },
            next_update,
        ))
    }
}

impl ClientTls {
    /// Reads and builds everything; fails on anything missing or unusable
    /// (an expired CRL loads: [`ClientTls::refresh`] refuses it per attempt).
    pub(crate) fn load(cfg: &SyncConfig) -> Result<Self, String> {
        let crl = node_crl(cfg);
        if crl.is_none() {
            tracing::warn!(
                node_ca = %cfg.node_ca.display(),
                "no node revocation list (sync.crl, or node-ca.crl beside the node CA): \
                 node certificates are checked against the CA only"
            );
        }
        let files = Files {
            cert: cfg.device_cert.clone(),
            key: cfg.device_key.clone(),
            node_ca: cfg.node_ca.clone(),
            crl,
            device_ca: cfg.device_ca.clone(),
        };
        let seen = files.read_all()?;
        let (built, crl_next_update) = files.build(&seen)?;
        Ok(Self {
            files,
            seen,
            built,
            crl_next_update,
        })
    }

    /// Before an attempt: reads the files again and rebuilds when they
    /// changed. `Ok(true)`: rebuilt (drop the open connection). `Err`: no
    /// attempt may be made (unreadable or unusable files, an expired CRL).
    pub(crate) fn refresh(&mut self, now: SystemTime) -> Result<bool, String> {
        let seen = self.files.read_all()?;
        let changed = seen != self.seen;
        if changed {
            let (built, next) = self.files.build(&seen)?;
            self.built = built;
            self.crl_next_update = next;
            self.seen = seen;
        }
        if let Some(next) = self.crl_next_update.filter(|n| *n <= now) {
            let ago = now.duration_since(next).map_or(0, |d| d.as_secs());
            return Err(format!(
                "the node revocation list {} expired {ago} s ago (nextUpdate): \
                 no sync until a fresh one is installed",
                self.files.crl_name()
            ));
        }
        Ok(changed)
    }

    /// What the last successful build made.
    pub(crate) fn built(&self) -> &Built {
        &self.built
    }
}
