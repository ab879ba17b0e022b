//! Tests of the in-memory CA: generation, loading, issuing, CRLs, and that what it
//! produces verifies with x509-parser and with rustls/webpki as the node uses it.

mod common;

use common::{pem_der, verify_client, verify_server};
use omega_certs::{
    device_id_from_cert, CaKind, CertError, CertificateAuthority, SerialHex, Validity,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

#[test]
fn generated_cas_are_named_and_reload_from_pem() {
    for kind in CaKind::ALL {
        let ca = CertificateAuthority::generate(kind).unwrap();
        assert_eq!(ca.kind(), kind);
        let der = ca.cert_der();
        let (_, x509) = X509Certificate::from_der(&der).unwrap();
        assert!(x509.is_ca());
        assert_eq!(
            x509.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            kind.common_name()
        );
        // Self-signed, valid for about ten years.
        x509.verify_signature(None).unwrap();
        let days =
            (x509.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days();
        assert!((3649..=3650).contains(&days), "{days}");

        let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.kind(), kind);
        assert_eq!(again.cert_der(), ca.cert_der());
    }
}

#[test]
fn from_pem_rejects_mismatched_key() {
    let device = CertificateAuthority::generate(CaKind::Device).unwrap();
    let node = CertificateAuthority::generate(CaKind::Node).unwrap();
    let err = CertificateAuthority::from_pem(device.cert_pem(), &node.key_pem()).unwrap_err();
    assert!(matches!(err, CertError::CaKeyMismatch), "{err}");
}

#[test]
fn from_pem_rejects_a_leaf_certificate() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let leaf = ca.issue_device("tv-1", Validity::days_from_now(1)).unwrap();
    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(matches!(err, CertError::NotCa { .. }), "{err}");
}

#[test]
fn from_pem_rejects_garbage() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let err = CertificateAuthority::from_pem("not a pem", &ca.key_pem()).unwrap_err();
    assert!(
        matches!(
            err,
            CertError::InvalidCa {
                what: "certificate",
                ..
            }
        ),
        "{err}"
    );
    let err = CertificateAuthority::from_pem(
        ca.cert_pem(),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::InvalidCa {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn device_cert_chains_to_device_ca_and_round_trips_its_id() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let cert = ca
        .issue_device("living-room.tv_42", Validity::days_from_now(30))
        .unwrap();
    assert_eq!(cert.subject, "living-room.tv_42");

    let der = cert.cert_der();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let ca_der = ca.cert_der();
    let (_, ca_x509) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(leaf.issuer(), ca_x509.subject());
    leaf.verify_signature(Some(ca_x509.public_key())).unwrap();
    assert!(!leaf.is_ca());
    assert_eq!(SerialHex::from_bytes(leaf.raw_serial()), cert.serial);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(leaf.validity().not_after.to_datetime(), cert.not_after);

    assert_eq!(
        device_id_from_cert(&der).unwrap().as_str(),
        "living-room.tv_42"
    );
    verify_client(ca.cert_der(), None, &der).unwrap();

    // The key belongs to the certificate.
    let key = rcgen_key(&cert.key_pem);
    assert_eq!(leaf.public_key().subject_public_key.data.as_ref(), key);
    assert!(matches!(
        cert.key_der(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(_)
    ));
}

fn rcgen_key(pem: &str) -> Vec<u8> {
    // The uncompressed P-256 point is the last 65 bytes of the PKCS#8 document.
    let der = pem_der(pem, "PRIVATE KEY");
    der[der.len() - 65..].to_vec()
}

#[test]
fn device_cert_from_another_ca_does_not_verify() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let other = CertificateAuthority::generate(CaKind::Device).unwrap();
    let cert = other
        .issue_device("tv-1", Validity::days_from_now(1))
        .unwrap();
    assert!(verify_client(ca.cert_der(), None, &cert.cert_der()).is_err());
}

#[test]
fn node_ca_refuses_to_issue_device_certs_and_vice_versa() {
    let node = CertificateAuthority::generate(CaKind::Node).unwrap();
    let err = node
        .issue_device("tv-1", Validity::days_from_now(1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            CertError::WrongCaKind {
                expected: CaKind::Device,
                actual: CaKind::Node
            }
        ),
        "{err}"
    );
    let device = CertificateAuthority::generate(CaKind::Device).unwrap();
    let err = device
        .issue_node("n1", &["localhost".to_owned()], Validity::days_from_now(1))
        .unwrap_err();
    assert!(matches!(err, CertError::WrongCaKind { .. }), "{err}");
}

#[test]
fn node_cert_serves_its_sans_and_can_dial() {
    let ca = CertificateAuthority::generate(CaKind::Node).unwrap();
    let sans = ["node-1.omega.example".to_owned(), "10.1.2.3".to_owned()];
    let cert = ca
        .issue_node("node-1", &sans, Validity::days_from_now(30))
        .unwrap();
    let der = cert.cert_der();
    verify_server(ca.cert_der(), &der, "node-1.omega.example").unwrap();
    verify_server(ca.cert_der(), &der, "10.1.2.3").unwrap();
    assert!(verify_server(ca.cert_der(), &der, "other.example").is_err());
    // Nodes also dial each other with the same certificate.
    verify_client(ca.cert_der(), None, &der).unwrap();
}

#[test]
fn node_cert_needs_valid_sans() {
    let ca = CertificateAuthority::generate(CaKind::Node).unwrap();
    let v = Validity::days_from_now(1);
    assert!(matches!(
        ca.issue_node("n1", &[], v),
        Err(CertError::NoSans)
    ));
    assert!(matches!(
        ca.issue_node("n1", &["bad host".to_owned()], v),
        Err(CertError::InvalidSan { .. })
    ));
    assert!(matches!(
        ca.issue_node("../n1", &["localhost".to_owned()], v),
        Err(CertError::InvalidId { .. })
    ));
}

#[test]
fn bad_ids_and_validity_are_rejected() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let v = Validity::days_from_now(1);
    assert!(matches!(ca.issue_device("", v), Err(CertError::EmptyId)));
    for id in ["a/b", "..", "../etc/passwd", ".hidden", "-x", "a b"] {
        assert!(
            matches!(ca.issue_device(id, v), Err(CertError::InvalidId { .. })),
            "{id}"
        );
    }
    let now = OffsetDateTime::now_utc();
    let inverted = Validity {
        not_before: now,
        not_after: now - Duration::days(1),
    };
    assert!(matches!(
        ca.issue_device("tv-1", inverted),
        Err(CertError::InvalidValidity { .. })
    ));
}

#[test]
fn leaf_never_outlives_its_ca() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let cert = ca
        .issue_device("tv-1", Validity::days_from_now(100 * 365))
        .unwrap();
    assert_eq!(cert.not_after, ca.not_after());
}

#[test]
fn crl_lists_revoked_serials_and_webpki_refuses_them() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let revoked = ca
        .issue_device("tv-bad", Validity::days_from_now(1))
        .unwrap();
    let good = ca
        .issue_device("tv-good", Validity::days_from_now(1))
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let crl_pem = ca.crl(std::slice::from_ref(&revoked.serial), now).unwrap();

    let der = pem_der(&crl_pem, "X509 CRL");
    let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
    let ca_der = ca.cert_der();
    let (_, ca_x509) = X509Certificate::from_der(&ca_der).unwrap();
    crl.verify_signature(ca_x509.public_key()).unwrap();
    let serials: Vec<SerialHex> = crl
        .iter_revoked_certificates()
        .map(|r| SerialHex::from_bytes(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![revoked.serial.clone()]);
    let next = crl.next_update().unwrap().to_datetime();
    assert_eq!((next - crl.last_update().to_datetime()).whole_days(), 30);

    let err = verify_client(ca.cert_der(), Some(&crl_pem), &revoked.cert_der()).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        "{err:?}"
    );
    verify_client(ca.cert_der(), Some(&crl_pem), &good.cert_der()).unwrap();

    // An empty CRL is valid too, and later CRLs carry larger numbers.
    let empty = ca.crl(&[], now + Duration::seconds(1)).unwrap();
    let der2 = pem_der(&empty, "X509 CRL");
    let (_, crl2) = CertificateRevocationList::from_der(&der2).unwrap();
    assert_eq!(crl2.iter_revoked_certificates().count(), 0);
    assert!(crl2.crl_number().unwrap() > crl.crl_number().unwrap());
    verify_client(ca.cert_der(), Some(&empty), &revoked.cert_der()).unwrap();
}

#[test]
fn device_id_from_cert_rejects_garbage() {
    assert!(matches!(
        device_id_from_cert(b"not der"),
        Err(CertError::InvalidCertificate { .. })
    ));
}

#[test]
fn validity_allows_an_hour_of_clock_skew() {
    let v = Validity::days_from_now(10);
    let now = OffsetDateTime::now_utc();
    let skew = now - v.not_before;
    assert!(skew >= Duration::minutes(59) && skew <= Duration::minutes(61));
    assert_eq!((v.not_after - now + Duration::minutes(1)).whole_days(), 10);
}
