//! The device revocation list, failing closed.
//!
//! * At start ([`load_anchor`]): `CERTS/device-ca.crl` must exist and must
//!   not be past its `nextUpdate`; otherwise the node refuses to start
//!   (`omega-certs refresh-crl` re-signs it). While the node runs, the
//!   handshake verifier enforces `nextUpdate` too (omega-transport): a CRL
//!   that expires without a successor makes every handshake fail.
//! * While running ([`watch`]): the file is read every `crl_poll_ms` and
//!   reloaded when its bytes change, and reloaded on SIGHUP. A file that does
//!   not parse or is expired is refused (logged) and the list in force stays.
//! * A CA private key in the certificate directory stops the node at start
//!   ([`ca_keys_in`], [`CrlError::CaKeys`]) unless `allow_ca_keys` is set
//!   (development), which logs a loud warning instead.
//! * After each reload every open connection's certificate is verified again
//!   ([`close_revoked`]); a connection that fails (its device was revoked)
//!   is closed with [`CLOSE_REVOKED`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use omega_transport::quic::{
    crl_next_update, parse_crls, peer_chain, RevocationHandle, TlsError, TrustAnchor,
};

use crate::identity::IdentityReload;
use crate::listener::ListenerContext;

/// Close code of a connection whose certificate was revoked while it was open.
pub const CLOSE_REVOKED: u32 = 2;

/// Why a revocation list was refused.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// There is no revocation list: devices cannot be checked.
    #[error(
        "no device revocation list at {0}: the node refuses to accept devices it cannot check \
         (omega-certs init writes one; omega-certs refresh-crl re-signs it)"
    )]
    Missing(PathBuf),
    /// The list's `nextUpdate` has passed.
    #[error(
        "the device revocation list {path} expired {secs_ago} s ago (nextUpdate); \
         re-sign it with omega-certs refresh-crl"
    )]
    Expired {
        /// The file.
        path: PathBuf,
        /// Seconds since its `nextUpdate`.
        secs_ago: u64,
    },
    /// The file could not be read.
    #[error("reading the device revocation list {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// CA private keys lie in the node's certificate directory.
    #[error(
        "CA private keys in the node's certificate directory: {}. Whoever takes this node \
         could mint devices and nodes. Give the node a directory made by `omega-certs \
         export-node` (CA certificates, CRLs and its own key only); `allow_ca_keys` \
         (--allow-ca-keys) starts it anyway, for development",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    CaKeys(Vec<PathBuf>),
    /// The CA certificate or the list does not parse.
    #[error("the device CA or its revocation list: {0}")]
    Tls(#[from] TlsError),
}

/// The CA private keys (`device-ca.key`, `node-ca.key`) lying in `certs`:
/// a node needs only the CA certificates, the CRLs and its own key, and one
/// compromised node holding a CA key could mint devices and nodes. The node
/// refuses to start with any (unless `allow_ca_keys`).
pub fn ca_keys_in(certs: &Path) -> Vec<PathBuf> {
    ["device-ca.key", "node-ca.key"]
        .iter()
        .map(|name| certs.join(name))
        .filter(|p| p.exists())
        .collect()
}

/// Refuses a list whose (earliest) `nextUpdate` is at or before now.
fn check_fresh(next_update: Option<SystemTime>, crl: &Path) -> Result<(), CrlError> {
    let now = SystemTime::now();
    match next_update {
        Some(next) if next <= now => Err(CrlError::Expired {
            path: crl.to_owned(),
            secs_ago: now.duration_since(next).map_or(0, |d| d.as_secs()),
        }),
        _ => Ok(()),
    }
}

/// The device CA with its revocation list, which must exist and be fresh.
pub fn load_anchor(ca: &Path, crl: &Path) -> Result<TrustAnchor, CrlError> {
    if !crl.is_file() {
        return Err(CrlError::Missing(crl.to_owned()));
    }
    let anchor = TrustAnchor::from_files(ca, Some(crl))?;
    let next = anchor.crl_next_update()?;
    check_fresh(next, crl)?;
    record_next_update(next);
    Ok(anchor)
}

/// Exports the installed list's `nextUpdate` (Unix seconds; 0 when the list
/// names none) for the "CRL close to expiry" alert.
fn record_next_update(next: Option<SystemTime>) {
    let secs = next
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(crate::telemetry::CRL_NEXT_UPDATE).set(secs);
}

/// Installs `pem` if it parses and is fresh, then closes the connections
/// whose certificate no longer verifies. Returns how many were closed.
fn install(
    handle: &RevocationHandle,
    ctx: &ListenerContext,
    crl: &Path,
    pem: &[u8],
) -> Result<usize, CrlError> {
    let crls = parse_crls(&[pem])?;
    if crls.is_empty() {
        return Err(CrlError::Tls(TlsError::Crl(
            "the file holds no revocation list".into(),
        )));
    }
    let next = crl_next_update(&crls)?;
    check_fresh(next, crl)?;
    handle.reload(&[pem])?;
    record_next_update(next);
    Ok(close_revoked(ctx, handle))
}

/// Closes every open connection whose certificate chain fails the current
/// verifier (revoked since its handshake). Returns how many were closed.
pub fn close_revoked(ctx: &ListenerContext, handle: &RevocationHandle) -> usize {
    let mut closed = 0;
    for conn in ctx.open_connections() {
        if let Err(e) = peer_chain(&conn).and_then(|chain| handle.check(&chain)) {
            tracing::warn!(remote = %conn.remote_address(), error = %e,
                "closing a connection whose certificate no longer verifies");
            conn.close(CLOSE_REVOKED.into(), b"certificate revoked");
            closed += 1;
        }
    }
    closed
}

/// Reloads `crl` into `handle` when its bytes change (read every `poll`)
/// and on each `hup` signal (SIGHUP), until `shutdown` turns true; the node's
/// own certificate and key likewise (`identity`). `loaded` is the CRL content
/// in force at start.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    mut hup: Option<tokio::signal::unix::Signal>,
    crl: PathBuf,
    loaded: Vec<u8>,
    handle: RevocationHandle,
    mut identity: IdentityReload,
    ctx: Arc<ListenerContext>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = loaded;
    loop {
        let forced = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(poll) => false,
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        reload_crl(&crl, &mut last, forced, &handle, &ctx).await;
        identity.reload_logged(forced).await;
    }
}

/// One CRL check of [`watch`]: reads `crl`, installs it when it differs from
/// `last` (or `forced`).
async fn reload_crl(
    crl: &Path,
    last: &mut Vec<u8>,
    forced: bool,
    handle: &RevocationHandle,
    ctx: &ListenerContext,
) {
    let pem = match tokio::fs::read(crl).await {
        Ok(p) => p,
        Err(source) => {
            let e = CrlError::Read {
                path: crl.to_owned(),
                source,
            };
            tracing::error!(error = %e, "CRL not reloaded; the list in force stays");
            return;
        }
    };
    if !forced && pem == *last {
        return;
    }
    match install(handle, ctx, crl, &pem) {
        Ok(closed) => {
            tracing::info!(path = %crl.display(), closed, signal = forced, "device CRL reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "CRL refused; the list in force stays");
        }
    }
    // A refused file is not retried until it changes again (or SIGHUP).
    *last = pem;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_keys_in_the_certificate_directory_are_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(ca_keys_in(dir.path()).is_empty());
        std::fs::write(dir.path().join("device-ca.crt"), "x").expect("write");
        std::fs::write(dir.path().join("device-ca.key"), "x").expect("write");
        assert_eq!(
            ca_keys_in(dir.path()),
            vec![dir.path().join("device-ca.key")]
        );
    }
}
