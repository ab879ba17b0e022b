//! The node's own certificate and key, replaced without a restart.
//!
//! [`IdentityReload`] reads `CERTS/nodes/<name>.crt|.key` on the CRL's poll
//! and on SIGHUP ([`crate::revocation::watch`] drives both). When their bytes
//! changed, the key must still be private ([`crate::secrets::check_private`])
//! and must match the certificate; then the listener presents the new pair
//! from the next handshake on (omega-transport's `IdentityHandle`), and open
//! connections keep theirs. A pair that does not load (a renewal read
//! half-way, an exposed key) is logged and read again at the next poll; the
//! pair in force stays.

use std::path::PathBuf;

use omega_transport::quic::{IdentityHandle, TlsIdentity};

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
    /// The pair does not parse, or the key is not the certificate's.
    #[error("the node certificate and key: {0}")]
    Tls(#[from] omega_transport::quic::TlsError),
}

/// The node's certificate and key files and the bytes in force.
#[derive(Debug)]
pub struct IdentityReload {
    cert: PathBuf,
    key: PathBuf,
    last: (Vec<u8>, Vec<u8>),
    handle: IdentityHandle,
}

impl IdentityReload {
    /// `loaded` is the (certificate, key) content the listener started with.
    pub fn new(
        cert: PathBuf,
        key: PathBuf,
        loaded: (Vec<u8>, Vec<u8>),
        handle: IdentityHandle,
    ) -> Self {
        Self {
            cert,
            key,
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
