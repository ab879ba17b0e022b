//! `omega-certs`: the certificate authority of Omega.
//!
//! Two CAs (ECDSA P-256): the *device CA* signs TV client certificates (CN = device
//! id, EKU clientAuth) and the *node CA* signs constellation node certificates
//! (CN = node name, SANs, EKU serverAuth + clientAuth). Each CA publishes an X.509
//! CRL the nodes load at the TLS handshake.
//!
//! - [`CertificateAuthority`]: in-memory CA (generate, load, issue, sign CRLs).
//! - [`CertDir`]: the on-disk store the `omega-certs` CLI manages; its file layout
//!   ([`CertPaths`]) is a contract the node and the simulator rely on.
//! - [`device_id_from_cert`]: the device id of a verified client certificate.
//! - [`inspect_pem`]: a readable summary of a certificate or CRL.

//!
//! Everything but the id rule and [`device_id_from_cert`] is behind the default
//! `ca` feature, so the transport reads device ids without rcgen.

#[cfg(feature = "ca")]
mod ca;
mod error;
#[cfg(feature = "ca")]
mod fsutil;
mod id;
#[cfg(feature = "ca")]
mod inspect;
#[cfg(feature = "ca")]
mod serial;
#[cfg(feature = "ca")]
mod store;

#[cfg(feature = "ca")]
pub use ca::{
    CaKind, CertificateAuthority, IssuedCert, Validity, CA_VALIDITY_DAYS, CRL_VALIDITY_DAYS,
};
pub use error::CertError;
pub use id::{device_id_from_cert, server_names_from_cert, validate_device_id, MAX_ID_LEN};
#[cfg(feature = "ca")]
pub use inspect::{inspect_file, inspect_pem, CertInfo, CrlInfo, Inspected};
#[cfg(feature = "ca")]
pub use serial::SerialHex;
#[cfg(feature = "ca")]
pub use store::{
    CertDir, CertPaths, LedgerEntry, Revocation, DEFAULT_DEVICE_DAYS, DEFAULT_NODE_DAYS,
};
