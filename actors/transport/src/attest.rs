//! Device certificates as secure-aggregation credentials: a TV signs its
//! round keys with its device certificate's key ([`DeviceAttestor`]), and
//! TVs and nodes check every member's signature and certificate against the
//! device CA ([`DeviceVerifier`]). The traits are omega-privacy's
//! ([`Attestor`], [`Verifier`]); the identity vouched for is the device id of
//! the certificate's common name, as at the TLS handshake.
//!
//! The signature is ECDSA P-256 with SHA-256 (ASN.1 DER), the algorithm of
//! omega-certs' keys. The certificate must chain to the device CA, be valid
//! at the time of the check and carry the client-authentication usage; with
//! revocation lists, a revoked certificate is refused.
//!
//! The verifier remembers up to [`CACHE_ENTRIES`] attestations it accepted
//! (by a SHA-256 of the statement, credential and signature), so that many
//! round members in one process (the simulator) verify each member once; a
//! TV checks each member once per round anyway. Past the bound the memory
//! is cleared. A remembered answer outlives a later revocation list until it
//! is cleared, which is at most one round's worth of members later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use omega_privacy::secagg::{AttestError, Attestation, Attestor, Verifier};
use parking_lot::Mutex;
use ring::digest::{Context, SHA256};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, TrustAnchor as PkiTrustAnchor, UnixTime,
};
use rustls::sign::{Signer, SigningKey};
use rustls::SignatureScheme;
use webpki::{
    anchor_from_trusted_cert, CertRevocationList, EndEntityCert, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

use crate::quic::{TlsError, TlsIdentity, TrustAnchor};

/// Accepted attestations the verifier remembers before it clears them.
pub const CACHE_ENTRIES: usize = 4096;

/// Signs with the device's certificate key.
pub struct DeviceAttestor {
    cert: Vec<u8>,
    signer: Box<dyn Signer>,
}

impl std::fmt::Debug for DeviceAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAttestor")
            .field("cert_bytes", &self.cert.len())
            .finish_non_exhaustive()
    }
}

impl DeviceAttestor {
    /// From the device's TLS identity (leaf certificate and its ECDSA P-256
    /// key).
    pub fn new(identity: &TlsIdentity) -> Result<Self, TlsError> {
        let leaf = identity.chain.first().ok_or(TlsError::NoPeerCertificate)?;
        let key = rustls::crypto::ring::sign::any_ecdsa_type(&identity.key)
            .map_err(|e| TlsError::Attest(format!("device key: {e}")))?;
        Self::from_parts(leaf.as_ref().to_vec(), key.as_ref())
    }

    fn from_parts(cert: Vec<u8>, key: &dyn SigningKey) -> Result<Self, TlsError> {
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .ok_or_else(|| TlsError::Attest("the device key is not ECDSA P-256".into()))?;
        Ok(Self { cert, signer })
    }

    /// From PEM certificate and key (for tools and tests).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Self::new(&TlsIdentity::from_pem(cert_pem, key_pem)?)
    }
}

impl Attestor for DeviceAttestor {
    fn attest(&self, statement: &[u8]) -> Result<Attestation, AttestError> {
        let signature = self
            .signer
            .sign(statement)
            .map_err(|e| AttestError::Sign(e.to_string()))?;
        Ok(Attestation {
            credential: self.cert.clone(),
            signature,
        })
    }
}

/// Checks attestations against the device CA (and its revocation lists).
pub struct DeviceVerifier {
    anchors: Vec<PkiTrustAnchor<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    accepted: Mutex<HashMap<[u8; 32], String>>,
}

impl std::fmt::Debug for DeviceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceVerifier")
            .field("cas", &self.anchors.len())
            .field("crls", &self.crls.len())
            .finish_non_exhaustive()
    }
}

impl DeviceVerifier {
    /// Trusting the device CA `anchor` (its CRLs included).
    pub fn new(anchor: &TrustAnchor) -> Result<Arc<Self>, TlsError> {
        // Parsed once: every check chains to these.
        let anchors = anchor
            .cas
            .iter()
            .map(|ca| anchor_from_trusted_cert(ca).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Attest(format!("device CA: {e}")))?;
        let crls = anchor
            .crls
            .iter()
            .map(|c: &CertificateRevocationListDer<'static>| {
                OwnedCertRevocationList::from_der(c.as_ref())
                    .map(CertRevocationList::from)
                    .map_err(|e| TlsError::Attest(format!("device CRL: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            anchors,
            crls,
            accepted: Mutex::new(HashMap::new()),
        }))
    }

    fn key(statement: &[u8], a: &Attestation) -> [u8; 32] {
        let mut h = Context::new(&SHA256);
        for part in [statement, &a.credential, &a.signature] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        out
    }

    fn check(&self, statement: &[u8], a: &Attestation) -> Result<String, AttestError> {
        let bad = |e: webpki::Error| AttestError::Credential(e.to_string());
        let der = CertificateDer::from(a.credential.as_slice());
        let cert = EndEntityCert::try_from(&der).map_err(bad)?;
        let crls: Vec<&CertRevocationList<'static>> = self.crls.iter().collect();
        let revocation = match RevocationOptionsBuilder::new(&crls) {
            Ok(b) => Some(
                b.with_depth(RevocationCheckDepth::EndEntity)
                    .with_status_policy(UnknownStatusPolicy::Allow)
                    .build(),
            ),
            Err(_) => None, // no CRLs
        };
        let now = UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        cert.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &self.anchors,
            &[],
            now,
            KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map_err(bad)?;
        cert.verify_signature(webpki::ring::ECDSA_P256_SHA256, statement, &a.signature)
            .map_err(|_| AttestError::Signature)?;
        omega_certs::device_id_from_cert(&a.credential)
            .map(|id| id.as_str().to_owned())
            .map_err(|e| AttestError::Credential(e.to_string()))
    }
}

impl Verifier for DeviceVerifier {
    fn verify(&self, statement: &[u8], a: &Attestation) -> Result<String, AttestError> {
        let key = Self::key(statement, a);
        if let Some(id) = self.accepted.lock().get(&key) {
            return Ok(id.clone());
        }
        let id = self.check(statement, a)?;
        let mut accepted = self.accepted.lock();
        if accepted.len() >= CACHE_ENTRIES {
            accepted.clear();
        }
        accepted.insert(key, id.clone());
        Ok(id)
    }
}
