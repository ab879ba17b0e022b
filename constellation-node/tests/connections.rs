//! The bounded connection layer (issue 9, item 3), over real QUIC with
//! certificates from omega-certs: at most `max_connections_per_device`
//! connections per device certificate; a connection slot is taken only after
//! the handshake, so a stalled handshake holds none; QUIC Retry above
//! `retry_above_pending` handshakes in progress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use omega_node::listener::CLOSE_DEVICE_LIMIT;
use support::*;

/// The value of the metric line starting with `series` (name and labels),
/// 0 when the node has not recorded it yet.
async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (status, body) = http(admin, "GET", "/metrics", Some(TOKEN), b"").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Connects and syncs once; `true` when the node answered the sync.
async fn connects_and_syncs(
    endpoint: &quinn::Endpoint,
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
    version: u64,
) -> bool {
    let Ok(Ok(conn)) =
        tokio::time::timeout(WAIT, endpoint.connect_with(cfg, addr, "localhost").unwrap()).await
    else {
        return false;
    };
    let req = omega_protocol::codec::encode_request(&snapshot(version, 0)).unwrap();
    omega_transport::quic::exchange(&conn, &req, WAIT)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_connection_of_one_device_is_closed_after_its_handshake() {
    let pki = Pki::new();
    let device = pki.device("tv-many");
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let addr = node.quic_addr();
    let endpoint = client_endpoint();
    let first = connect(&endpoint, &pki, &device, addr).await;
    let second = connect(&endpoint, &pki, &device, addr).await;
    accepted(sync(&first, &snapshot(1, 0)).await);

    // TLS 1.3: the client may finish its side of the handshake before the
    // node closes the connection.
    let third = endpoint
        .connect_with(pki.client_config(&device), addr, "localhost")
        .unwrap();
    let reason = tokio::time::timeout(WAIT, async {
        match third.await {
            Ok(c) => c.closed().await,
            Err(e) => e,
        }
    })
    .await
    .expect("the third connection ends in time");
    assert_closed_with(reason, CLOSE_DEVICE_LIMIT);
    let admin = node.admin_addr();
    let series = r#"omega_connections_refused_total{reason="device_limit"}"#;
    assert!(metric(admin, series).await >= 1.0);

    // The first two keep working; another device is not affected.
    accepted(sync(&second, &snapshot(2, 0)).await);
    accepted(sync(&first, &snapshot(3, 0)).await);
    let other = pki.device("tv-other");
    let other = connect(&endpoint, &pki, &other, addr).await;
    accepted(sync(&other, &snapshot(1, 1)).await);

    // Closing one gives its place back.
    first.close(0u32.into(), b"done");
    let mut version = 4;
    eventually("the device connecting again", || {
        version += 1;
        connects_and_syncs(&endpoint, pki.client_config(&device), addr, version)
    })
    .await;
    assert!(node.shutdown().await);
}

/// A UDP relay that forwards the client's datagrams to `node` and drops the
/// node's answers: the handshake never completes. `answered` turns true when
/// the node has answered (it is handshaking).
async fn black_hole(node: SocketAddr, answered: Arc<AtomicBool>) -> SocketAddr {
    let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut from_client = vec![0u8; 65_536];
        let mut from_node = vec![0u8; 65_536];
        loop {
            tokio::select! {
                r = front.recv_from(&mut from_client) => {
                    let Ok((n, _)) = r else { return };
                    let _ = back.send_to(&from_client[..n], node).await;
                }
                r = back.recv_from(&mut from_node) => {
                    if r.is_ok() {
                        answered.store(true, Ordering::Release);
                    }
                }
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_holds_no_connection_slot() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.max_connections = 1;
    let node = start(&pki, data.path(), config, None).await;
    let addr = node.quic_addr();

    let answered = Arc::new(AtomicBool::new(false));
    let relay = black_hole(addr, Arc::clone(&answered)).await;
    let stalled_endpoint = client_endpoint();
    let stalled = stalled_endpoint
        .connect_with(
            pki.client_config(&pki.device("tv-stalled")),
            relay,
            "localhost",
        )
        .unwrap();
    eventually("the node handshaking with the stalled client", || {
        let answered = Arc::clone(&answered);
        async move { answered.load(Ordering::Acquire) }
    })
    .await;

    // The only slot is still free for a device that completes its handshake.
    let endpoint = client_endpoint();
    let conn = connect(&endpoint, &pki, &pki.device("tv-real"), addr).await;
    accepted(sync(&conn, &snapshot(1, 0)).await);
    // The stalled handshake does not hold up shutdown either.
    drop(stalled);
    assert!(node.shutdown().await);
    stalled_endpoint.close(0u32.into(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_always_on_devices_still_connect() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.retry_above_pending = 0;
    let node = start(&pki, data.path(), config, None).await;
    let endpoint = client_endpoint();
    let conn = connect(&endpoint, &pki, &pki.device("tv-retried"), node.quic_addr()).await;
    accepted(sync(&conn, &snapshot(1, 0)).await);
    // Only this test's node retries (the others keep the default threshold).
    assert!(metric(node.admin_addr(), "omega_handshake_retries_total").await >= 1.0);
    assert!(node.shutdown().await);
}
