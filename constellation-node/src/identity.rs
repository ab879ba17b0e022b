//! The node's own certificate and key, replaced without a restart.
//!
//! [`IdentityReload`] reads `CERTS/nodes/<name>.crt|.key` on the CRL's poll
//! and on SIGHUP ([`crate::revocation::watch`] drives both). When their bytes
//! changed, the key must still be private ([`crate::secrets::check_private`])
//! and must match the certificate, and the certificate must be this node's
//! and one a TV would accept ([`check_own_certificate`], also run at start);
//! then the listener presents the new pair from the next handshake on
//! (omega-transport's `IdentityHandle`), and open connections keep theirs. A pair that does not load (a renewal read
//! half-way, an exposed key) is logged and read again at the next poll; the
//! pair in force stays.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use omega_transport::quic::{check_server_identity, IdentityHandle, TlsIdentity, TrustAnchor};

use crate::secrets;

/// Why a new certificate and key were not installed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file gives group or others access.
    #[error(transparent)]
    Secret(#[from] secrets::SecretError),
    /// The pair does not parse, or the key is not the certificate's, or a
    /// TV would refuse the certificate (another CA's, expired, not yet
    /// valid, revoked in the node CRL).
    #[error("the node certificate and key: {0}")]
    Tls(#[from] omega_transport::quic::TlsError),
    /// The certificate names another node (its common name is not this
    /// node's `node_name`): a file copied from the wrong directory.
    #[error("the node certificate is {found:?}'s, not this node's ({expected:?})")]
    WrongNode {
        /// This node's name.
        expected: String,
        /// The certificate's common name.
        found: String,
    },
    /// The certificate's subject or names cannot be read (no single common
    /// name, no subject alternative name TVs could dial it by).
    #[error("the node certificate: {0}")]
    Cert(#[from] omega_certs::CertError),
}

/// The node's certificate and key files in `certs_dir`:
/// `nodes/<node_name>.crt|.key`.
pub fn node_files(certs_dir: &Path, node_name: &str) -> (PathBuf, PathBuf) {
    let nodes = certs_dir.join("nodes");
    (
        nodes.join(format!("{node_name}.crt")),
        nodes.join(format!("{node_name}.key")),
    )
}

/// Checks that `identity` is node `node_name`'s and that
/// a TV trusting this directory's node CA and node CRL would accept it at
/// `now`, dialling it by its first subject alternative name: chained to the
/// node CA, within its validity, not revoked (a node CRL past its nextUpdate
/// is the TVs' concern, not a reason to refuse the certificate). A node CA
/// certificate must be in `certs_dir` (`omega-certs export-node` puts it
/// there); the node CRL is used when present.
pub fn check_own_certificate(
    identity: &TlsIdentity,
    node_name: &str,
    certs_dir: &Path,
    now: SystemTime,
) -> Result<(), IdentityError> {
    let leaf = identity
        .chain
        .first()
        .map(|c| c.as_ref())
        .unwrap_or_default();
    let found = omega_certs::device_id_from_cert(leaf)?;
    if found.as_str() != node_name {
        return Err(IdentityError::WrongNode {
            expected: node_name.to_owned(),
            found: found.as_str().to_owned(),
        });
    }
    let names = omega_certs::server_names_from_cert(leaf)?;
    let name = names
        .first()
        .ok_or_else(|| omega_certs::CertError::InvalidCertificate {
            reason: "no DNS or IP subject alternative name to be dialled by".to_owned(),
        })?;
    // The layout `omega-certs export-node` writes (as the device CA beside it).
    let crl = certs_dir.join("node-ca.crl");
    let crl = crl.exists().then_some(crl);
    let anchor = TrustAnchor::from_files(&certs_dir.join("node-ca.crt"), crl.as_deref())?;
    check_server_identity(identity, &anchor, name, now)?;
    Ok(())
}

/// The node's certificate and key files and the bytes in force.
#[derive(Debug)]
pub struct IdentityReload {
    cert: PathBuf,
    key: PathBuf,
    node_name: String,
    certs_dir: PathBuf,
    last: (Vec<u8>, Vec<u8>),
    handle: IdentityHandle,
}

impl IdentityReload {
    /// `loaded` is the (certificate, key) content the listener started with,
    /// read from `certs_dir`'s `nodes/<node_name>.crt|.key`.
    pub fn new(
        certs_dir: &Path,
        node_name: &str,
        loaded: (Vec<u8>, Vec<u8>),
        handle: IdentityHandle,
    ) -> Self {
        let (cert, key) = node_files(certs_dir, node_name);
        Self {
            cert,
            key,
            node_name: node_name.to_owned(),
            certs_dir: certs_dir.to_owned(),
            last: loaded,
            handle,
        }
    }

    async fn read(&self) -> Result<(Vec<u8>, Vec<u8>), IdentityError> {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| IdentityError::Read { path, source })
        };
        Ok((
            read(self.cert.clone()).await?,
            read(self.key.clone()).await?,
        ))
    }

    /// Installs the files' pair when it changed since the last install
    /// (`forced`: whether it changed or not). `Ok(true)`: installed.
    pub async fn reload(&mut self, forced: bool) -> Result<bool, IdentityError> {
        let (cert, key) = self.read().await?;
        if !forced && (&cert, &key) == (&self.last.0, &self.last.1) {
            return Ok(false);
        }
        secrets::check_private(&self.key, "node private key")?;
        let identity = TlsIdentity::from_pem(&cert, &key)?;
        check_own_certificate(
            &identity,
            &self.node_name,
            &self.certs_dir,
            SystemTime::now(),
        )?;
        self.handle.reload(&identity)?;
        self.last = (cert, key);
        Ok(true)
    }

    /// [`IdentityReload::reload`], logged.
    pub async fn reload_logged(&mut self, forced: bool) {
        match self.reload(forced).await {
            Ok(true) => {
                tracing::info!(cert = %self.cert.display(), signal = forced,
                    "node certificate and key reloaded: presented from the next handshake on")
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e,
                "node certificate not reloaded; the one in force stays (read again at the next poll)"),
        }
    }
}
