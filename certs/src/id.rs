//! Device ids and node names, and reading the device id back out of a verified
//! client certificate.
//!
//! The naming rule is omega-protocol's [`DeviceId`] (ids become file names and
//! certificate CNs, so they must be safe for both); this module only maps its
//! refusal to [`CertError`]. [`device_id_from_cert`] is the one place a
//! certificate's common name is read: the CA loader here and omega-transport
//! (the node's and the TV's handshake) both go through it.

use omega_protocol::limits::MAX_DEVICE_ID_LEN;
use omega_protocol::{DeviceId, DomainError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::CertError;

/// Longest accepted device id or node name.
pub const MAX_ID_LEN: usize = MAX_DEVICE_ID_LEN;

/// Check a device id (the same rule applies to node names).
///
/// An id is 1..=64 characters of `[A-Za-z0-9._-]` and does not start with `.` or
/// `-` ([`DeviceId`]'s rule). This keeps ids usable as file names (no `/`, no
/// `..`, no hidden files, no option-like names) and as printable certificate CNs.
pub fn validate_device_id(id: &str) -> Result<(), CertError> {
    device_id(id).map(drop)
}

fn device_id(id: &str) -> Result<DeviceId, CertError> {
    DeviceId::new(id).map_err(|e| match e {
        _ if id.is_empty() => CertError::EmptyId,
        DomainError::InvalidId { why, .. } => CertError::InvalidId {
            id: id.to_owned(),
            reason: why,
        },
        _ => CertError::InvalidId {
            id: id.to_owned(),
            reason: "not a valid device id",
        },
    })
}

/// The device id of a DER-encoded leaf certificate: its subject common name,
/// checked against [`validate_device_id`].
///
/// This does not verify the certificate; call it on a certificate the TLS layer
/// has already verified against the device CA.
pub fn device_id_from_cert(der: &[u8]) -> Result<DeviceId, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::InvalidCertificate {
        reason: format!("cannot parse certificate: {e}"),
    })?;
    device_id(&common_name(cert.subject())?)
}

/// The names a client can dial a DER-encoded certificate's holder by: its
/// DNS and IP subject alternative names, in the certificate's order (other
/// kinds of name are left out).
///
/// This does not verify the certificate.
pub fn server_names_from_cert(der: &[u8]) -> Result<Vec<String>, CertError> {
    let bad = |reason: String| CertError::InvalidCertificate { reason };
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| bad(format!("cannot parse certificate: {e}")))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("bad subjectAltName: {e}")))?;
    Ok(sans
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(s) => Some((*s).to_owned()),
                    GeneralName::IPAddress(bytes) => san_ip(bytes).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// An IP address subject alternative name's bytes (4 or 16 of them).
pub(crate) fn san_ip(bytes: &[u8]) -> Option<IpAddr> {
    match *bytes {
        [a, b, c, d] => Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        _ => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|v6| IpAddr::V6(Ipv6Addr::from(v6))),
    }
}

/// The single common name of an X.509 name: with two, which one names the
/// device would be a guess.
pub(crate) fn common_name(name: &X509Name<'_>) -> Result<String, CertError> {
    let mut cns = name.iter_common_name();
    let first = cns.next().ok_or_else(|| CertError::InvalidCertificate {
        reason: "subject has no common name".to_owned(),
    })?;
    if cns.next().is_some() {
        return Err(CertError::InvalidCertificate {
            reason: "subject has more than one common name".to_owned(),
        });
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|e| CertError::InvalidCertificate {
            reason: format!("common name is not a string: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_ids() {
        for id in ["tv-00001", "a", "A.b_c-d", "0", &"x".repeat(64), "a..b"] {
            assert!(validate_device_id(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(matches!(validate_device_id(""), Err(CertError::EmptyId)));
        for id in [
            "..",
            ".",
            ".hidden",
            "-rf",
            "a/b",
            "../etc",
            "a b",
            "tv\n",
            "é",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(validate_device_id(id), Err(CertError::InvalidId { .. })),
                "{id:?}"
            );
        }
    }
}
