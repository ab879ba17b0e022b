//! Helpers shared by the integration tests: PEM decoding and rustls/webpki
//! verifiers built exactly the way a node would build them.

#![allow(dead_code)]

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

/// The DER contents of the first PEM block, checking its label.
pub fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    assert_eq!(block.label, label);
    block.contents
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verify `leaf` as a TLS client certificate against `ca_der`, honoring `crl_pem`.
pub fn verify_client(
    ca_der: CertificateDer<'static>,
    crl_pem: Option<&str>,
    leaf: &CertificateDer<'static>,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).expect("CA is a valid trust anchor");
    let crls = crl_pem
        .map(|pem| vec![CertificateRevocationListDer::from(pem_der(pem, "X509 CRL"))])
        .unwrap_or_default();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls(crls)
            .build()
            .expect("client verifier");
    verifier
        .verify_client_cert(leaf, &[], UnixTime::now())
        .map(|_| ())
}

/// Verify `leaf` as a TLS server certificate for `host` against `ca_der`.
pub fn verify_server(
    ca_der: CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    host: &str,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).expect("CA is a valid trust anchor");
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .expect("server verifier");
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
}
