//! Device ids and node names: the naming rule (they become file names and
//! certificate CNs, so they must be safe for both) and reading the device id back
//! out of a verified client certificate.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::CertError;

/// Longest accepted device id or node name.
pub const MAX_ID_LEN: usize = 64;

/// Check a device id (the same rule applies to node names).
///
/// An id is 1..=64 characters of `[A-Za-z0-9._-]` and does not start with `.` or
/// `-`. This keeps ids usable as file names (no `/`, no `..`, no hidden files, no
/// option-like names) and as printable certificate CNs.
pub fn validate_device_id(id: &str) -> Result<(), CertError> {
    let invalid = |reason| CertError::InvalidId {
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(CertError::EmptyId);
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid("longer than 64 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid("only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"));
    }
    if id.starts_with('.') || id.starts_with('-') {
        return Err(invalid("must not start with '.' or '-'"));
    }
    Ok(())
}

/// The device id of a DER-encoded leaf certificate: its subject common name,
/// checked against [`validate_device_id`].
///
/// This does not verify the certificate; call it on a certificate the TLS layer
/// has already verified against the device CA.
pub fn device_id_from_cert(der: &[u8]) -> Result<String, CertError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertError::InvalidCertificate {
        reason: format!("cannot parse certificate: {e}"),
    })?;
    let cn = common_name(cert.subject())?;
    validate_device_id(&cn)?;
    Ok(cn)
}

/// The single common name of an X.509 name.
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
