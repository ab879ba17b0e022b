//! Round attestations with real certificates from omega-certs: a device's
//! signed keys verify against the device CA and name the device; another
//! CA's device, a node certificate, an expired or revoked device, a
//! signature over other keys and a damaged certificate are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_certs::{CaKind, CertificateAuthority, IssuedCert, Validity};
use omega_privacy::secagg::{attest, AttestError, Attestor, ClientId, Verifier};
use omega_transport::attest::{DeviceAttestor, DeviceVerifier};
use omega_transport::quic::TrustAnchor;

fn attestor(c: &IssuedCert) -> DeviceAttestor {
    DeviceAttestor::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
}

fn verifier(ca: &CertificateAuthority, crl: Option<&str>) -> std::sync::Arc<DeviceVerifier> {
    let crls: Vec<&[u8]> = crl.map(str::as_bytes).into_iter().collect();
    DeviceVerifier::new(&TrustAnchor::from_pem(ca.cert_pem().as_bytes(), &crls).unwrap()).unwrap()
}

fn statement(session: u64) -> Vec<u8> {
    attest::statement(session, ClientId(3), &[1; 32], &[2; 32])
}

fn credential_refused(r: Result<String, AttestError>) -> bool {
    matches!(r, Err(AttestError::Credential(_)))
}

#[test]
fn a_device_attestation_verifies_and_names_the_device() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let tv = ca
        .issue_device("tv-0042", Validity::days_from_now(30))
        .unwrap();
    let a = attestor(&tv).attest(&statement(1)).unwrap();
    assert!(a.signature.len() <= attest::MAX_SIGNATURE_BYTES);
    assert!(
        a.credential.len() <= attest::MAX_CREDENTIAL_BYTES,
        "{}",
        a.credential.len()
    );
    let v = verifier(&ca, None);
    assert_eq!(v.verify(&statement(1), &a).unwrap(), "tv-0042");
    // Remembered, and the same answer.
    assert_eq!(v.verify(&statement(1), &a).unwrap(), "tv-0042");
    // Another statement (another session) with that signature: refused,
    // remembered or not.
    assert_eq!(v.verify(&statement(2), &a), Err(AttestError::Signature));
    let fresh = verifier(&ca, None);
    assert_eq!(fresh.verify(&statement(2), &a), Err(AttestError::Signature));
}

#[test]
fn untrusted_credentials_are_refused() {
    let ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let v = verifier(&ca, None);

    let other_ca = CertificateAuthority::generate(CaKind::Device).unwrap();
    let stranger = other_ca
        .issue_device("tv-0042", Validity::days_from_now(30))
        .unwrap();
    assert!(credential_refused(v.verify(
        &statement(1),
        &attestor(&stranger).attest(&statement(1)).unwrap()
    )));

    let node_ca = CertificateAuthority::generate(CaKind::Node).unwrap();
    let node = node_ca
        .issue_node("node-1", &["localhost".into()], Validity::days_from_now(30))
        .unwrap();
    let a = attestor(&node).attest(&statement(1)).unwrap();
    assert!(credential_refused(v.verify(&statement(1), &a)));

    let expired = Validity {
        not_before: time::OffsetDateTime::now_utc() - time::Duration::days(10),
        not_after: time::OffsetDateTime::now_utc() - time::Duration::days(1),
    };
    let old = ca.issue_device("tv-old", expired).unwrap();
    assert!(credential_refused(v.verify(
        &statement(1),
        &attestor(&old).attest(&statement(1)).unwrap()
    )));

    let stolen = ca
        .issue_device("tv-stolen", Validity::days_from_now(30))
        .unwrap();
    let crl = ca
        .crl(
            std::slice::from_ref(&stolen.serial),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let a = attestor(&stolen).attest(&statement(1)).unwrap();
    assert_eq!(
        verifier(&ca, None).verify(&statement(1), &a).unwrap(),
        "tv-stolen"
    );
    assert!(credential_refused(
        verifier(&ca, Some(&crl)).verify(&statement(1), &a)
    ));

    let tv = ca
        .issue_device("tv-1", Validity::days_from_now(30))
        .unwrap();
    let mut damaged = attestor(&tv).attest(&statement(1)).unwrap();
    let mid = damaged.credential.len() / 2;
    damaged.credential[mid] ^= 0x40;
    assert!(v.verify(&statement(1), &damaged).is_err());
    damaged.credential.truncate(10);
    assert!(credential_refused(v.verify(&statement(1), &damaged)));
}
