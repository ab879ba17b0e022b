//! Human-readable inspection of certificates and CRLs (the `inspect` command):
//! parse PEM (or DER) with x509-parser into plain structs that print nicely.

use std::fmt;
use std::path::Path;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::{CertError, SerialHex};

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number.
    pub serial: SerialHex,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Subject alternative names, as `DNS:name` / `IP:addr` / other.
    pub sans: Vec<String>,
    /// Key usage flags (e.g. "Digital Signature").
    pub key_usage: Vec<String>,
    /// Extended key usages (e.g. "serverAuth", "clientAuth").
    pub extended_key_usage: Vec<String>,
    /// Whether basicConstraints says CA=true.
    pub is_ca: bool,
}

/// What a CRL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// Issuer DN.
    pub issuer: String,
    /// When it was issued.
    pub this_update: OffsetDateTime,
    /// When the next one is due.
    pub next_update: Option<OffsetDateTime>,
    /// The CRL number, decimal.
    pub crl_number: Option<String>,
    /// Revoked serials with their revocation times.
    pub revoked: Vec<(SerialHex, OffsetDateTime)>,
}

/// One inspected PEM block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspected {
    /// An X.509 certificate.
    Certificate(CertInfo),
    /// An X.509 CRL.
    Crl(CrlInfo),
}

/// Inspect every certificate and CRL in `data` (PEM, possibly several blocks, or a
/// single DER certificate or CRL).
///
/// Fails with [`CertError::MalformedPem`] if nothing parseable is found or a block
/// is not a certificate or CRL.
pub fn inspect_pem(data: &[u8]) -> Result<Vec<Inspected>, CertError> {
    let malformed = |reason: String| CertError::MalformedPem { reason };
    if data.first() == Some(&0x30) {
        return inspect_der(data).map(|i| vec![i]);
    }
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(data) {
        let block = block.map_err(|e| malformed(format!("{e}")))?;
        match block.label.as_str() {
            "CERTIFICATE" => out.push(Inspected::Certificate(cert_info(&block.contents)?)),
            "X509 CRL" => out.push(Inspected::Crl(crl_info(&block.contents)?)),
            other => {
                return Err(malformed(format!(
                    "{other:?} block: only CERTIFICATE and X509 CRL can be inspected"
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(malformed("no PEM block found".to_owned()));
    }
    Ok(out)
}

/// Read `path` and [`inspect_pem`] it.
pub fn inspect_file(path: &Path) -> Result<Vec<Inspected>, CertError> {
    let data = std::fs::read(path).map_err(|e| CertError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    inspect_pem(&data)
}

fn inspect_der(der: &[u8]) -> Result<Inspected, CertError> {
    if let Ok(info) = cert_info(der) {
        return Ok(Inspected::Certificate(info));
    }
    crl_info(der)
        .map(Inspected::Crl)
        .map_err(|_| CertError::MalformedPem {
            reason: "neither PEM nor a DER certificate or CRL".to_owned(),
        })
}

fn cert_info(der: &[u8]) -> Result<CertInfo, CertError> {
    let bad = |what: &str, e: &dyn fmt::Display| CertError::MalformedPem {
        reason: format!("{what}: {e}"),
    };
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad("bad certificate", &e))?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| bad("bad subjectAltName", &e))?
        .map(|ext| ext.value.general_names.iter().map(general_name).collect())
        .unwrap_or_default();
    let key_usage = cert
        .key_usage()
        .map_err(|e| bad("bad keyUsage", &e))?
        .map(|ext| {
            ext.value
                .to_string()
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let extended_key_usage = cert
        .extended_key_usage()
        .map_err(|e| bad("bad extendedKeyUsage", &e))?
        .map(|ext| {
            let eku = ext.value;
            let mut v: Vec<String> = [
                (eku.any, "any"),
                (eku.server_auth, "serverAuth"),
                (eku.client_auth, "clientAuth"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_owned())
            .collect();
            v.extend(eku.other.iter().map(|oid| oid.to_id_string()));
            v
        })
        .unwrap_or_default();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: SerialHex::from_bytes(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        sans,
        key_usage,
        extended_key_usage,
        is_ca: cert.is_ca(),
    })
}

fn crl_info(der: &[u8]) -> Result<CrlInfo, CertError> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| CertError::MalformedPem {
            reason: format!("bad CRL: {e}"),
        })?;
    Ok(CrlInfo {
        issuer: crl.issuer().to_string(),
        this_update: crl.last_update().to_datetime(),
        next_update: crl.next_update().map(|t| t.to_datetime()),
        crl_number: crl.crl_number().map(|n| n.to_string()),
        revoked: crl
            .iter_revoked_certificates()
            .map(|r| {
                (
                    SerialHex::from_bytes(r.raw_serial()),
                    r.revocation_date.to_datetime(),
                )
            })
            .collect(),
    })
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(s) => format!("DNS:{s}"),
        GeneralName::IPAddress(bytes) => match crate::id::san_ip(bytes) {
            Some(ip) => format!("IP:{ip}"),
            None => format!("{name}"),
        },
        GeneralName::URI(s) => format!("URI:{s}"),
        GeneralName::RFC822Name(s) => format!("email:{s}"),
        other => format!("{other}"),
    }
}

/// RFC 3339 (`2031-11-20T09:57:49Z`), falling back to the debug form.
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

impl fmt::Display for Inspected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inspected::Certificate(c) => {
                writeln!(f, "Certificate")?;
                writeln!(f, "  subject:      {}", c.subject)?;
                writeln!(f, "  issuer:       {}", c.issuer)?;
                writeln!(f, "  serial:       {}", c.serial)?;
                writeln!(f, "  not before:   {}", rfc3339(c.not_before))?;
                writeln!(f, "  not after:    {}", rfc3339(c.not_after))?;
                writeln!(f, "  CA:           {}", if c.is_ca { "yes" } else { "no" })?;
                writeln!(f, "  SANs:         {}", list(&c.sans))?;
                writeln!(f, "  key usage:    {}", list(&c.key_usage))?;
                write!(f, "  ext key use:  {}", list(&c.extended_key_usage))
            }
            Inspected::Crl(c) => {
                writeln!(f, "Certificate revocation list")?;
                writeln!(f, "  issuer:       {}", c.issuer)?;
                writeln!(f, "  this update:  {}", rfc3339(c.this_update))?;
                match c.next_update {
                    Some(t) => writeln!(f, "  next update:  {}", rfc3339(t))?,
                    None => writeln!(f, "  next update:  (none)")?,
                }
                if let Some(n) = &c.crl_number {
                    writeln!(f, "  CRL number:   {n}")?;
                }
                write!(f, "  revoked:      {}", c.revoked.len())?;
                for (serial, at) in &c.revoked {
                    write!(f, "\n    {serial}  revoked {}", rfc3339(*at))?;
                }
                Ok(())
            }
        }
    }
}
