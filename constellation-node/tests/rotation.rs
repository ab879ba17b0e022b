//! Certificate rotation without a restart (issue 9, item 2), over real QUIC
//! with certificates from omega-certs: the node's certificate renewed and
//! exported again is presented to new connections (its serial checked on
//! the client side) while open connections keep syncing; a CA private key
//! in the node's certificate directory stops it unless `allow_ca_keys`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use omega_certs::{CaKind, SerialHex, Validity};
use omega_node::revocation::CrlError;
use omega_node::{RunningNode, ServeError, ServeOptions};
use support::*;

/// The serial of the certificate the node presented on `conn`.
fn node_serial(conn: &quinn::Connection) -> SerialHex {
    let chain = omega_transport::quic::peer_chain(conn).unwrap();
    match omega_certs::inspect_pem(chain[0].as_ref())
        .unwrap()
        .remove(0)
    {
        omega_certs::Inspected::Certificate(c) => c.serial,
        other => panic!("not a certificate: {other:?}"),
    }
}

async fn rotation(poll_ms: u64, reload: impl FnOnce()) {
    let mut pki = Pki::new();
    let first = pki.certs.find("node-1").unwrap().serial.clone();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.crl_poll_ms = poll_ms;
    let node = start(&pki, data.path(), config, None).await;
    let endpoint = client_endpoint();
    let tv = pki.device("tv-open");
    let open = connect(&endpoint, &pki, &tv, node.quic_addr()).await;
    assert_eq!(node_serial(&open), first);
    accepted(sync(&open, &snapshot(1, 0)).await);

    let renewed = pki
        .certs
        .renew(CaKind::Node, "node-1", Validity::days_from_now(30))
        .unwrap();
    assert_ne!(renewed.serial, first);
    pki.export();
    reload();
    // New connections (each with a device of its own, so the per-device
    // limit does not count the probes) see the new certificate.
    let probes = AtomicUsize::new(0);
    eventually("a new connection presented the renewed certificate", || {
        let n = probes.fetch_add(1, Ordering::Relaxed);
        let (endpoint, pki, addr) = (&endpoint, &pki, node.quic_addr());
        let want = renewed.serial.clone();
        async move {
            let c = connect(endpoint, pki, &pki.device(&format!("tv-probe-{n}")), addr).await;
            let fresh = node_serial(&c) == want;
            if fresh {
                accepted(sync(&c, &snapshot(1, 7)).await);
            }
            c.close(0u32.into(), b"probe");
            fresh
        }
    })
    .await;
    // The connection made before the rotation keeps its certificate and
    // keeps syncing.
    assert_eq!(node_serial(&open), first);
    let a = accepted(sync(&open, &delta(1, 1, Vec::new())).await);
    assert_eq!(a.acked_version, 1);
    assert!(node.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_node_certificate_is_presented_to_new_connections_when_the_files_change() {
    rotation(50, || {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_node_certificate_is_presented_after_sighup() {
    // An hour between file reads: only the signal can reload in time.
    rotation(3_600_000, sighup_self).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_private_key_in_the_certificate_directory_stops_the_node_unless_allowed() {
    let pki = Pki::new();
    let key = pki.node_paths().ca_key_path(CaKind::Device);
    std::fs::copy(pki.certs.ca_key_path(CaKind::Device), &key).unwrap();
    let data = tempfile::tempdir().unwrap();
    let options = |config| ServeOptions {
        data_dir: data.path().to_owned(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config,
        admin_token: Some(TOKEN.into()),
    };
    let e = RunningNode::start(options(test_config()))
        .await
        .expect_err("a CA key in the directory");
    assert!(
        matches!(&e, ServeError::Crl(CrlError::CaKeys(keys)) if keys == &vec![key.clone()]),
        "{e}"
    );
    assert!(e.to_string().contains("export-node"), "{e}");
    let mut config = test_config();
    config.allow_ca_keys = true;
    let node = RunningNode::start(options(config)).await.expect("allowed");
    assert!(node.shutdown().await);
    // The whole CA store (as the README once said to give a node) is refused too.
    let e = RunningNode::start(ServeOptions {
        certs_dir: pki.certs.dir().to_owned(),
        ..options(test_config())
    })
    .await
    .expect_err("the CA store itself");
    assert!(
        matches!(e, ServeError::Crl(CrlError::CaKeys(ref k)) if k.len() == 2),
        "{e}"
    );
}

/// The node checks its own certificate at start and at every reload: one
/// for another node, from another node CA or revoked in the node CRL is
/// refused (TVs would refuse it) and the pair in force stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_node_another_ca_expired_revoked_or_with_a_foreign_key_is_refused_at_start_and_reload(
) {
    use omega_certs::CertificateAuthority;
    use omega_node::identity::{IdentityError, IdentityReload};
    use omega_transport::quic::{server_config_with_identity, TlsError, TrustAnchor};

    let mut pki = Pki::new();
    let sans = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    let node2 = pki.certs.issue_node("node-2", &sans).unwrap();
    let other_ca = CertificateAuthority::generate(CaKind::Node).unwrap();
    let foreign = other_ca
        .issue_node("node-1", &sans, Validity::days_from_now(30))
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .certs
        .ca(CaKind::Node)
        .issue_node(
            "node-1",
            &sans,
            Validity {
                not_before: now - time::Duration::days(10),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    let paths = pki.node_paths();
    let (cert, key) = (
        paths.node_cert_path("node-1"),
        paths.node_key_path("node-1"),
    );
    let write_pems = |c: &str, k: &str| {
        std::fs::write(&cert, c).unwrap();
        std::fs::write(&key, k).unwrap();
    };
    let write = |c: &omega_certs::IssuedCert| write_pems(&c.cert_pem, &c.key_pem);
    // Its own certificate with node-2's key (a renewal copied half-way).
    let own_cert = std::fs::read_to_string(&cert).unwrap();
    let mismatched = || write_pems(&own_cert, &node2.key_pem);
    let data = tempfile::tempdir().unwrap();
    let options = || ServeOptions {
        data_dir: data.path().to_owned(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config: test_config(),
        admin_token: Some(TOKEN.into()),
    };

    // At start.
    write(&node2);
    let e = RunningNode::start(options())
        .await
        .expect_err("node-2's files");
    assert!(
        matches!(&e, ServeError::Identity(IdentityError::WrongNode { expected, found })
            if expected == "node-1" && found == "node-2"),
        "{e}"
    );
    write(&foreign);
    let e = RunningNode::start(options())
        .await
        .expect_err("another CA's");
    assert!(
        matches!(
            &e,
            ServeError::Identity(IdentityError::Tls(TlsError::NotAccepted(_)))
        ),
        "{e}"
    );
    write(&expired);
    let e = RunningNode::start(options()).await.expect_err("expired");
    assert!(
        matches!(&e, ServeError::Identity(IdentityError::Tls(TlsError::NotAccepted(r)))
            if format!("{r:?}").contains("Expired")),
        "{e}"
    );
    mismatched();
    let e = RunningNode::start(options())
        .await
        .expect_err("a key not the certificate's");
    assert!(matches!(&e, ServeError::Tls(_)), "{e}");

    // At reload: the files the node started with, then bad ones.
    pki.export();
    let loaded = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let identity = omega_transport::quic::TlsIdentity::from_pem(&loaded.0, &loaded.1).unwrap();
    let anchor =
        TrustAnchor::from_pem(pki.certs.ca(CaKind::Device).cert_pem().as_bytes(), &[]).unwrap();
    let (_, _, handle) = server_config_with_identity(identity, &anchor).unwrap();
    let mut reload = IdentityReload::new(&pki.certs_dir(), "node-1", loaded, handle);
    assert!(!reload.reload(false).await.unwrap(), "unchanged files");
    write(&node2);
    let e = reload.reload(false).await.expect_err("node-2's files");
    assert!(matches!(e, IdentityError::WrongNode { .. }), "{e}");
    write(&foreign);
    let e = reload.reload(false).await.expect_err("another CA's");
    assert!(
        matches!(e, IdentityError::Tls(TlsError::NotAccepted(_))),
        "{e}"
    );
    write(&expired);
    let e = reload.reload(false).await.expect_err("expired");
    assert!(
        matches!(&e, IdentityError::Tls(TlsError::NotAccepted(r)) if format!("{r:?}").contains("Expired")),
        "{e}"
    );
    mismatched();
    let e = reload
        .reload(false)
        .await
        .expect_err("a key not the certificate's");
    assert!(matches!(e, IdentityError::Tls(_)), "{e}");
    // A renewed certificate of its own: installed.
    pki.certs
        .renew(CaKind::Node, "node-1", Validity::days_from_now(30))
        .unwrap();
    pki.export();
    assert!(reload.reload(false).await.unwrap(), "the renewed pair");
    // Revoked in the node CRL the node holds: refused too.
    pki.certs.revoke("node-1").unwrap();
    pki.export();
    let e = reload.reload(true).await.expect_err("revoked");
    assert!(
        matches!(&e, IdentityError::Tls(TlsError::NotAccepted(r)) if format!("{r:?}").contains("Revoked")),
        "{e}"
    );
}
