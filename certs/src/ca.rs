//! In-memory certificate authorities: generating or loading the device and node
//! CAs, issuing device and node certificates, and signing revocation lists.
//! No file IO here; the on-disk store lives in `store`.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::id::{common_name, validate_device_id};
use crate::{CertError, SerialHex};

/// Lifetime of a generated CA certificate.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a CRL is valid after its `this_update`.
pub const CRL_VALIDITY_DAYS: i64 = 30;
/// Organization written into every subject.
const ORGANIZATION: &str = "Omega";

/// Which of the two CAs: the device CA signs TV client certificates, the node CA
/// signs constellation node certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaKind {
    /// The CA for TV (device) client certificates.
    Device,
    /// The CA for constellation node certificates.
    Node,
}

impl CaKind {
    /// Both kinds, device first.
    pub const ALL: [CaKind; 2] = [CaKind::Device, CaKind::Node];

    /// The CN of a CA of this kind: "Omega Device CA" or "Omega Node CA".
    pub fn common_name(self) -> &'static str {
        match self {
            CaKind::Device => "Omega Device CA",
            CaKind::Node => "Omega Node CA",
        }
    }

    /// "device" or "node".
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Device => "device",
            CaKind::Node => "node",
        }
    }
}

impl fmt::Display for CaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (tolerates clock skew between issuer and verifier) to
    /// `days` days from now.
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// Whole seconds (what X.509 stores), checked to be non-empty.
    fn normalized(self) -> Result<Self, CertError> {
        let not_before = self
            .not_before
            .replace_nanosecond(0)
            .unwrap_or(self.not_before);
        let not_after = self
            .not_after
            .replace_nanosecond(0)
            .unwrap_or(self.not_after);
        if not_after <= not_before {
            return Err(CertError::InvalidValidity {
                reason: format!("not_after {not_after} is not after not_before {not_before}"),
            });
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }
}

/// A certificate and private key issued by a [`CertificateAuthority`].
#[derive(Clone)]
pub struct IssuedCert {
    /// The subject CN: the device id or node name.
    pub subject: String,
    /// The certificate's serial number.
    pub serial: SerialHex,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// End of validity (may be earlier than asked: never later than the CA's).
    pub not_after: OffsetDateTime,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl IssuedCert {
    /// The certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The private key, PKCS#8 DER.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("subject", &self.subject)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("key_pem", &"[secret key elided]")
            .finish_non_exhaustive()
    }
}

/// A CA held in memory: its certificate and its signing key.
#[derive(Debug)]
pub struct CertificateAuthority {
    kind: CaKind,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    subject_key_id: Option<Vec<u8>>,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A new self-signed CA of `kind` with a fresh P-256 key, valid for 10 years,
    /// CN "Omega Device CA" or "Omega Node CA".
    pub fn generate(kind: CaKind) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let validity = Validity::days_from_now(CA_VALIDITY_DAYS).normalized()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(kind.common_name());
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialHex::random().to_rcgen());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        Self::from_parts(Some(kind), cert.pem(), cert.der().clone(), key)
    }

    /// Load a CA from its certificate and private key (PEM). The kind is read from
    /// the CN ("Omega Device CA" / "Omega Node CA").
    ///
    /// Fails if the certificate is not a CA certificate or the key does not belong
    /// to it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        Self::load(cert_pem, key_pem, None)
    }

    /// Like [`from_pem`](Self::from_pem), for a CA whose CN does not name its kind.
    pub fn from_pem_with_kind(
        cert_pem: &str,
        key_pem: &str,
        kind: CaKind,
    ) -> Result<Self, CertError> {
        Self::load(cert_pem, key_pem, Some(kind))
    }

    fn load(cert_pem: &str, key_pem: &str, kind: Option<CaKind>) -> Result<Self, CertError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| {
            CertError::InvalidCa {
                what: "certificate",
                reason: format!("not PEM: {e}"),
            }
        })?;
        if pem.label != "CERTIFICATE" {
            return Err(CertError::InvalidCa {
                what: "certificate",
                reason: format!("PEM block is {:?}, expected CERTIFICATE", pem.label),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::InvalidCa {
            what: "private key",
            reason: e.to_string(),
        })?;
        Self::from_parts(kind, cert_pem.to_owned(), pem.contents.into(), key)
    }

    fn from_parts(
        kind: Option<CaKind>,
        cert_pem: String,
        cert_der: CertificateDer<'static>,
        key: KeyPair,
    ) -> Result<Self, CertError> {
        let (_, x509) = X509Certificate::from_der(&cert_der).map_err(|e| CertError::InvalidCa {
            what: "certificate",
            reason: e.to_string(),
        })?;
        let subject = x509.subject().to_string();
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| CertError::InvalidCa {
                what: "certificate",
                reason: e.to_string(),
            })?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CertError::NotCa { subject });
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertError::CaKeyMismatch);
        }
        let kind = match kind {
            Some(kind) => kind,
            None => {
                let cn = common_name(x509.subject()).map_err(|_| CertError::UnknownCaKind {
                    subject: subject.clone(),
                })?;
                CaKind::ALL
                    .into_iter()
                    .find(|k| k.common_name() == cn)
                    .ok_or(CertError::UnknownCaKind { subject })?
            }
        };
        let not_after = x509.validity().not_after.to_datetime();
        let subject_key_id = x509
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            });
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(CertificateAuthority {
            kind,
            cert_pem,
            cert_der,
            not_after,
            subject_key_id,
            issuer,
        })
    }

    /// Device CA or node CA.
    pub fn kind(&self) -> CaKind {
        self.kind
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA certificate, DER (a trust anchor for rustls).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// End of the CA certificate's validity; issued certificates never outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issue a TV client certificate: CN = `device_id`, EKU clientAuth, fresh P-256 key.
    ///
    /// Fails with [`CertError::WrongCaKind`] if this is the node CA.
    pub fn issue_device(
        &self,
        device_id: &str,
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        self.expect_kind(CaKind::Device)?;
        validate_device_id(device_id)?;
        self.issue(
            device_id,
            Vec::new(),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    /// Issue a node certificate: CN = `name`, the given SANs (each an IP address or a
    /// DNS name), EKU serverAuth and clientAuth (nodes also dial each other).
    ///
    /// Fails with [`CertError::WrongCaKind`] if this is the device CA, and with
    /// [`CertError::NoSans`] if `sans` is empty.
    pub fn issue_node(
        &self,
        name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        self.expect_kind(CaKind::Node)?;
        validate_device_id(name)?;
        if sans.is_empty() {
            return Err(CertError::NoSans);
        }
        let sans = sans
            .iter()
            .map(|s| parse_san(s))
            .collect::<Result<Vec<_>, _>>()?;
        self.issue(
            name,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )
    }

    fn expect_kind(&self, expected: CaKind) -> Result<(), CertError> {
        if self.kind == expected {
            Ok(())
        } else {
            Err(CertError::WrongCaKind {
                expected,
                actual: self.kind,
            })
        }
    }

    fn issue(
        &self,
        cn: &str,
        sans: Vec<SanType>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        let mut validity = validity.normalized()?;
        if validity.not_after > self.not_after {
            validity.not_after = self.not_after;
        }
        let validity = validity.normalized()?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let serial = SerialHex::random();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(cn);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.serial_number = Some(serial.to_rcgen());
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            subject: cn.to_owned(),
            serial,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: validity.not_after,
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// A PEM X.509 CRL signed by this CA listing `revoked_serials` (each with
    /// revocation time `this_update`), valid until `this_update` + 30 days.
    ///
    /// The CRL number is `this_update` in nanoseconds since the epoch, so later
    /// CRLs carry larger numbers.
    pub fn crl(
        &self,
        revoked_serials: &[SerialHex],
        this_update: OffsetDateTime,
    ) -> Result<String, CertError> {
        let entries: Vec<(SerialHex, OffsetDateTime)> = revoked_serials
            .iter()
            .map(|s| (s.clone(), this_update))
            .collect();
        self.crl_with_dates(&entries, this_update)
    }

    /// Like [`crl`](Self::crl), with each serial's own revocation time.
    pub fn crl_with_dates(
        &self,
        revoked: &[(SerialHex, OffsetDateTime)],
        this_update: OffsetDateTime,
    ) -> Result<String, CertError> {
        // Nanoseconds since the epoch: increases with every CRL, even within a second.
        let crl_number = u64::try_from(this_update.unix_timestamp_nanos()).unwrap_or(0);
        let this_update = this_update.replace_nanosecond(0).unwrap_or(this_update);
        let params = CertificateRevocationListParams {
            this_update,
            next_update: this_update + Duration::days(CRL_VALIDITY_DAYS),
            crl_number: rcgen::SerialNumber::from_slice(&positive_be_bytes(crl_number)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: serial.to_rcgen(),
                    revocation_time: at.replace_nanosecond(0).unwrap_or(*at),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: match &self.subject_key_id {
                Some(id) => KeyIdMethod::PreSpecified(id.clone()),
                None => KeyIdMethod::Sha256,
            },
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Big-endian bytes of `n` with no leading zeros but a leading 0 byte if the top
/// bit is set, so the DER INTEGER stays positive.
fn positive_be_bytes(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut out = bytes[start..].to_vec();
    if out[0] & 0x80 != 0 {
        out.insert(0, 0);
    }
    out
}

fn subject(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, cn);
    dn
}

/// An IP address, or a DNS name (labels of letters, digits and '-', optionally a
/// leading `*.` wildcard, at most 253 characters).
fn parse_san(san: &str) -> Result<SanType, CertError> {
    let invalid = |reason: &str| CertError::InvalidSan {
        san: san.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if san.is_empty() {
        return Err(invalid("empty"));
    }
    if san.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    let name = san.strip_prefix("*.").unwrap_or(san);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each DNS label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "not an IP address, and a DNS name allows only letters, digits, '-' and '.'",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a DNS label must not start or end with '-'"));
        }
    }
    let ia5 = san
        .to_owned()
        .try_into()
        .map_err(|e: rcgen::Error| invalid(&e.to_string()))?;
    Ok(SanType::DnsName(ia5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_bytes() {
        assert_eq!(positive_be_bytes(0), vec![0]);
        assert_eq!(positive_be_bytes(0x7f), vec![0x7f]);
        assert_eq!(positive_be_bytes(0x80), vec![0, 0x80]);
        assert_eq!(positive_be_bytes(0x0100), vec![1, 0]);
    }

    #[test]
    fn sans() {
        assert!(matches!(parse_san("10.0.0.1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(parse_san("::1"), Ok(SanType::IpAddress(_))));
        assert!(matches!(
            parse_san("node-1.omega.example"),
            Ok(SanType::DnsName(_))
        ));
        assert!(matches!(
            parse_san("*.omega.example"),
            Ok(SanType::DnsName(_))
        ));
        for bad in ["", "a..b", "a b", "-a.example", "a/b", "exa_mple.com"] {
            assert!(
                matches!(parse_san(bad), Err(CertError::InvalidSan { .. })),
                "{bad:?}"
            );
        }
    }
}
