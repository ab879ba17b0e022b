//! Revocation fails closed (issue 9, item 1), over real QUIC with
//! certificates and CRLs from omega-certs: no CRL or an expired one stops
//! the node at start; a device revoked while connected is cut off when the
//! CRL file changes or on SIGHUP, and cannot connect again; the other
//! devices stay connected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use omega_certs::CaKind;
use omega_node::revocation::{CrlError, CLOSE_REVOKED};
use omega_node::{RunningNode, ServeError, ServeOptions};
use support::*;

async fn start_error(pki: &Pki) -> ServeError {
    let data = tempfile::tempdir().unwrap();
    RunningNode::start(ServeOptions {
        data_dir: data.path().to_owned(),
        model_dir: None,
        certs_dir: pki.certs_dir(),
        config: test_config(),
        admin_token: Some(TOKEN.into()),
    })
    .await
    .expect_err("the node must refuse to start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_crl_or_an_expired_one_stops_the_node_at_start() {
    let pki = Pki::new();
    let crl = pki.node_paths().crl_path(CaKind::Device);
    let fresh = std::fs::read(&crl).unwrap();
    std::fs::remove_file(&crl).unwrap();
    let e = start_error(&pki).await;
    assert!(matches!(e, ServeError::Crl(CrlError::Missing(_))), "{e}");
    assert!(e.to_string().contains("refresh-crl"), "{e}");
    // Signed 31 days ago: its nextUpdate (30 days) has passed.
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    let expired = pki.certs.ca(CaKind::Device).crl(&[], old).unwrap();
    std::fs::write(&crl, expired).unwrap();
    let e = start_error(&pki).await;
    assert!(
        matches!(&e, ServeError::Crl(CrlError::Expired { secs_ago, .. }) if *secs_ago >= 86_000),
        "{e}"
    );
    // The fresh one starts.
    std::fs::write(&crl, fresh).unwrap();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    assert!(node.shutdown().await);
}

/// Connects `ids`, each syncing once; revokes the first; `reload` makes the
/// node notice; then: the first is closed with `CLOSE_REVOKED` and cannot
/// connect again, the others still sync.
async fn revoked_while_connected(poll_ms: u64, reload: impl FnOnce()) {
    let mut pki = Pki::new();
    let ids = ["tv-revoked", "tv-kept"];
    let certs: Vec<_> = ids
        .iter()
        .map(|id| pki.certs.issue_device(id).unwrap())
        .collect();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.crl_poll_ms = poll_ms;
    let node = start(&pki, data.path(), config, None).await;
    let endpoint = client_endpoint();
    let mut conns = Vec::new();
    for (i, cert) in certs.iter().enumerate() {
        let conn = connect(&endpoint, &pki, cert, node.quic_addr()).await;
        accepted(sync(&conn, &snapshot(1, i as u32)).await);
        conns.push(conn);
    }

    pki.certs.revoke(ids[0]).unwrap();
    pki.export();
    reload();
    let reason = tokio::time::timeout(WAIT, conns[0].closed())
        .await
        .expect("the revoked device's connection is closed");
    assert_closed_with(reason, CLOSE_REVOKED);
    // The other device keeps its connection and syncs on it.
    let a = accepted(sync(&conns[1], &delta(1, 1, Vec::new())).await);
    assert_eq!(a.acked_version, 1);
    // A new handshake with the revoked certificate fails.
    let again = endpoint
        .connect_with(pki.client_config(&certs[0]), node.quic_addr(), "localhost")
        .unwrap();
    let synced = tokio::time::timeout(WAIT, async {
        match again.await {
            Err(_) => false,
            // TLS 1.3: the client may finish its side of the handshake
            // before the node refuses its certificate; no sync gets through.
            Ok(c) => {
                let req = omega_protocol::codec::encode_request(&snapshot(2, 0)).unwrap();
                omega_transport::quic::exchange(&c, &req, WAIT)
                    .await
                    .is_ok()
            }
        }
    })
    .await
    .expect("the attempt ends in time");
    assert!(!synced, "a revoked device must not sync");
    assert!(node.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_while_connected_is_cut_off_when_the_crl_file_changes() {
    revoked_while_connected(50, || {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_while_connected_is_cut_off_on_sighup() {
    // An hour between file reads: only the signal can reload in time.
    revoked_while_connected(3_600_000, sighup_self).await;
}
