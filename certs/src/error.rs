//! The one error type of the library: every way certificate work can fail, typed,
//! so callers (the CLI, the node, the simulator) can react to each case.

use std::io;
use std::path::PathBuf;

#[cfg(feature = "ca")]
use crate::CaKind;

/// Everything that can go wrong in `omega-certs`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A device id or node name was empty.
    #[error("empty id: a device id or node name needs at least one character")]
    EmptyId,

    /// A device id or node name broke the naming rule
    /// (1..=64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`).
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },

    /// The id or name is already in the ledger (ids are unique across devices and nodes),
    /// or its certificate files already exist.
    #[error("duplicate id {id:?}: a certificate with this id was already issued")]
    DuplicateId {
        /// The id that already exists.
        id: String,
    },

    /// `revoke` was given something that is neither a known serial nor a known id.
    #[error("unknown serial or id {target:?}: nothing in the ledger matches")]
    UnknownRevocationTarget {
        /// What was asked to be revoked.
        target: String,
    },

    /// A serial number string was not hexadecimal (optionally `:`-separated) of 1..=20 bytes.
    #[error("invalid serial {input:?}: expected 1 to 20 bytes of hex")]
    InvalidSerial {
        /// The text that failed to parse.
        input: String,
    },

    /// A CA file (certificate, key or CRL) expected in the store does not exist.
    #[error("CA file missing: {path} (run `omega-certs init --dir DIR` first)")]
    CaMissing {
        /// The missing file.
        path: PathBuf,
    },

    /// A CA file exists but could not be read.
    #[error("cannot read CA file {path}: {source}")]
    CaUnreadable {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying io error.
        #[source]
        source: io::Error,
    },

    /// A CA certificate or key could not be parsed (malformed PEM/DER, unsupported key).
    #[error("invalid CA {what}: {reason}")]
    InvalidCa {
        /// Which part was bad ("certificate", "private key", ...).
        what: &'static str,
        /// What the parser said.
        reason: String,
    },

    /// The certificate given as a CA does not have `basicConstraints: CA=true`.
    #[error("certificate {subject:?} is not a CA certificate")]
    NotCa {
        /// Subject of the offending certificate.
        subject: String,
    },

    /// The CA certificate's CN is neither "Omega Device CA" nor "Omega Node CA",
    /// so its kind cannot be inferred (use `from_pem_with_kind`).
    #[error("cannot tell the CA kind from subject {subject:?}; expected \"Omega Device CA\" or \"Omega Node CA\"")]
    UnknownCaKind {
        /// Subject of the certificate.
        subject: String,
    },

    /// The CA private key does not belong to the CA certificate.
    #[error("CA certificate and private key do not match")]
    CaKeyMismatch,

    #[cfg(feature = "ca")]
    /// A CA of one kind was asked to do the other kind's job
    /// (e.g. the node CA issuing a device certificate).
    #[error("wrong CA: this operation needs the {expected:?} CA, but got the {actual:?} CA")]
    WrongCaKind {
        /// The kind the operation needs.
        expected: CaKind,
        /// The kind that was used.
        actual: CaKind,
    },

    /// A renewal or export named a subject the ledger does not hold (as a
    /// certificate of that kind).
    #[cfg(feature = "ca")]
    #[error("no {kind} certificate {subject:?} in the ledger")]
    UnknownSubject {
        /// The CA kind asked for.
        kind: CaKind,
        /// The device id or node name.
        subject: String,
    },

    /// A renewal named a subject whose latest certificate is revoked.
    #[error("{subject} is revoked: refusing to renew it")]
    RevokedSubject {
        /// The device id or node name.
        subject: String,
    },

    /// An export was asked to write into the store it reads from.
    #[error("{path} is the certificate store itself: export into another directory")]
    ExportIntoStore {
        /// The directory given.
        path: PathBuf,
    },

    /// `init` found CA material already present and refused to overwrite it.
    #[error("{path} already exists: refusing to overwrite an existing certificate store")]
    AlreadyInitialized {
        /// The first existing file found.
        path: PathBuf,
    },

    /// A file that would be created already exists; nothing is ever silently overwritten.
    #[error("{path} already exists: refusing to overwrite it")]
    FileExists {
        /// The existing file.
        path: PathBuf,
    },

    /// The store directory (or a file in it) could not be created or written.
    #[error("cannot write {path}: {source}")]
    NotWritable {
        /// The path that could not be written.
        path: PathBuf,
        /// The underlying io error.
        #[source]
        source: io::Error,
    },

    /// A node certificate was requested without any subject alternative name.
    #[error("a node certificate needs at least one SAN (DNS name or IP address)")]
    NoSans,

    /// A SAN is neither an IP address nor a valid DNS name.
    #[error("invalid SAN {san:?}: {reason}")]
    InvalidSan {
        /// The SAN as given.
        san: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The validity period is empty or inverted, or the number of days is out of range.
    #[error("invalid validity: {reason}")]
    InvalidValidity {
        /// What is wrong with it.
        reason: String,
    },

    /// A certificate (not a CA one) could not be parsed, or lacks what was asked of it
    /// (e.g. a common name).
    #[error("invalid certificate: {reason}")]
    InvalidCertificate {
        /// What is wrong with it.
        reason: String,
    },

    /// A file given to `inspect` holds no parseable certificate or CRL.
    #[error("malformed PEM: {reason}")]
    MalformedPem {
        /// What the parser said.
        reason: String,
    },

    /// The ledger (`index.json`) exists but is unreadable or not valid.
    #[error("ledger {path} is corrupt or unreadable: {reason}")]
    Ledger {
        /// Path of the ledger.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Any other io failure while reading the store (e.g. taking the store lock).
    #[error("io error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying io error.
        #[source]
        source: io::Error,
    },

    #[cfg(feature = "ca")]
    /// rcgen failed to generate a key, build or sign a certificate or CRL.
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
}
