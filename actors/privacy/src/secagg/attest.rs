//! Who is behind an advertised key pair: each member signs its round-0 keys
//! with a credential the server cannot forge (on a TV, its device
//! certificate's key, issued by the device CA), and every client checks every
//! other member's signature before it shares anything.
//!
//! Without this a malicious server could invent cohort members whose keys
//! are its own: with t of them it receives t shares of every honest member's
//! secrets and unmasks any one input. With it, a member the server lists is a
//! device that holds a certificate, and one certificate counts once in a
//! cohort. What is left to a malicious server is to run real devices of its
//! own (Sybils): with c of them among the t members that survive, an honest
//! member's input is hidden by the noise of t − c others instead of t − 1
//! (see `omega_brain_core::round_client` for what a TV accepts).
//!
//! The crate stays free of X.509 and signature code: [`Attestor`] and
//! [`Verifier`] are implemented by the caller (omega-transport implements
//! them with the device's certificate and key and the device CA). What is
//! signed is [`statement`]: a domain tag, the session, the member id and both
//! public keys, so a signature cannot be moved to another session, member id
//! or key.

use serde::{Deserialize, Serialize};

use super::messages::AdvertiseKeys;
use super::ClientId;

/// Largest credential (a DER certificate) a member may attach.
pub const MAX_CREDENTIAL_BYTES: usize = 1024;
/// Largest signature a member may attach (an ECDSA P-256 signature in DER
/// is at most 72 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 96;

/// A member's proof that it advertised its keys: its credential and its
/// signature over [`statement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The credential (for a TV: its DER device certificate).
    pub credential: Vec<u8>,
    /// The signature over the statement, made with the credential's key.
    pub signature: Vec<u8>,
}

/// Why a member's keys are not vouched for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The credential or signature is longer than its limit.
    #[error("attestation too large: {0} bytes")]
    TooLarge(usize),
    /// The credential does not chain to a trusted issuer, is expired,
    /// revoked, or is not a device credential.
    #[error("credential not trusted: {0}")]
    Credential(String),
    /// The signature does not verify over the statement with the
    /// credential's key.
    #[error("signature does not verify")]
    Signature,
    /// The signer could not sign (its key is unusable).
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Signs statements with this member's credential.
pub trait Attestor: Send + Sync {
    /// The attestation of `statement`.
    fn attest(&self, statement: &[u8]) -> Result<Attestation, AttestError>;
}

/// Checks other members' attestations.
pub trait Verifier: Send + Sync {
    /// The identity (for a TV: its device id) the attestation vouches for, if
    /// its credential is trusted and its signature verifies over `statement`.
    fn verify(&self, statement: &[u8], attestation: &Attestation) -> Result<String, AttestError>;
}

const DOMAIN: &[u8; 24] = b"omega secagg keys v1\0\0\0\0";

/// What member `id` of `session` signs: the domain tag, the session, the id
/// and both public keys (96 bytes).
pub fn statement(session: u64, id: ClientId, channel_pk: &[u8; 32], mask_pk: &[u8; 32]) -> Vec<u8> {
    let mut s = Vec::with_capacity(DOMAIN.len() + 8 + 4 + 64);
    s.extend_from_slice(DOMAIN);
    s.extend_from_slice(&session.to_le_bytes());
    s.extend_from_slice(&id.0.to_le_bytes());
    s.extend_from_slice(channel_pk);
    s.extend_from_slice(mask_pk);
    s
}

/// The identity behind member `id`'s advertised `keys` in `session`, checked
/// by `verifier` (sizes first, so an oversized attestation costs nothing).
pub fn verify_keys(
    session: u64,
    id: ClientId,
    keys: &AdvertiseKeys,
    verifier: &dyn Verifier,
) -> Result<String, AttestError> {
    let a = &keys.attestation;
    if a.credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(AttestError::TooLarge(a.credential.len()));
    }
    if a.signature.len() > MAX_SIGNATURE_BYTES {
        return Err(AttestError::TooLarge(a.signature.len()));
    }
    verifier.verify(&statement(session, id, &keys.channel_pk, &keys.mask_pk), a)
}

/// A self-contained credential scheme for tests: each identity has an ECDSA
/// P-256 key pair, the credential is the identity and its public key, and the
/// verifier trusts the identities registered with it (a stand-in for a CA).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::collections::HashMap;
    use std::sync::{Arc, RwLock};

    use ring::rand::SystemRandom;
    use ring::signature::{
        EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
        ECDSA_P256_SHA256_ASN1_SIGNING,
    };

    use super::{AttestError, Attestation, Attestor, Verifier};

    /// An identity's key: PKCS#8 and the public key.
    type Keys = (Vec<u8>, Vec<u8>);

    /// The trusted identities and their keys.
    #[derive(Debug, Clone, Default)]
    pub struct Registry {
        keys: Arc<RwLock<HashMap<String, Keys>>>,
    }

    /// One identity's signer.
    pub struct TestAttestor {
        identity: String,
        key: EcdsaKeyPair,
    }

    impl std::fmt::Debug for TestAttestor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TestAttestor")
                .field("identity", &self.identity)
                .finish_non_exhaustive()
        }
    }

    fn key_pair(pkcs8: &[u8]) -> EcdsaKeyPair {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &SystemRandom::new())
            .expect("generated key parses")
    }

    impl Registry {
        /// An empty registry.
        pub fn new() -> Self {
            Self::default()
        }

        /// The signer of `identity`: when `trusted`, its registered key (made
        /// and registered on first use, so one registry can serve parallel
        /// tests); otherwise a fresh key nobody trusts.
        pub fn attestor(&self, identity: &str, trusted: bool) -> TestAttestor {
            let fresh = || {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                    .expect("P-256 key generation")
                    .as_ref()
                    .to_vec()
            };
            let pkcs8 = if trusted {
                let mut keys = self.keys.write().expect("registry lock");
                let (pkcs8, _) = keys.entry(identity.to_owned()).or_insert_with(|| {
                    let pkcs8 = fresh();
                    let public = key_pair(&pkcs8).public_key().as_ref().to_vec();
                    (pkcs8, public)
                });
                pkcs8.clone()
            } else {
                fresh()
            };
            TestAttestor {
                identity: identity.to_owned(),
                key: key_pair(&pkcs8),
            }
        }
    }

    impl Attestor for TestAttestor {
        fn attest(&self, statement: &[u8]) -> Result<Attestation, AttestError> {
            let sig = self
                .key
                .sign(&SystemRandom::new(), statement)
                .map_err(|e| AttestError::Sign(e.to_string()))?;
            let mut credential = self.key.public_key().as_ref().to_vec();
            credential.extend_from_slice(self.identity.as_bytes());
            Ok(Attestation {
                credential,
                signature: sig.as_ref().to_vec(),
            })
        }
    }

    impl Verifier for Registry {
        fn verify(&self, statement: &[u8], a: &Attestation) -> Result<String, AttestError> {
            // P-256 uncompressed public key: 65 bytes, then the identity.
            let (pk, id) = a
                .credential
                .split_at_checked(65)
                .ok_or_else(|| AttestError::Credential("too short".into()))?;
            let id = std::str::from_utf8(id)
                .map_err(|_| AttestError::Credential("identity is not UTF-8".into()))?;
            let keys = self.keys.read().expect("registry lock");
            if keys.get(id).map(|(_, public)| public.as_slice()) != Some(pk) {
                return Err(AttestError::Credential(format!("{id} is not registered")));
            }
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pk)
                .verify(statement, &a.signature)
                .map_err(|_| AttestError::Signature)?;
            Ok(id.to_owned())
        }
    }
}
