//! The bounded connection layer (issue 9, item 3), over real QUIC with
//! certificates from omega-certs: at most `max_connections_per_device`
//! connections per device certificate; a connection slot is taken only after
//! the handshake, so a stalled handshake holds none; QUIC Retry above
//! `retry_above_pending` handshakes in progress; an attempt past
//! `max_pending_handshakes` refused at once; a handshake that completes after
//! the last slot was taken closed with `CLOSE_CONNECTION_LIMIT`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use omega_node::listener::{CLOSE_CONNECTION_LIMIT, CLOSE_DEVICE_LIMIT};
use support::*;

/// An in-process node with the test configuration changed by `change`
/// (and the data directory to keep while it runs).
async fn node_with(
    pki: &Pki,
    change: impl FnOnce(&mut omega_node::Config),
) -> (tempfile::TempDir, omega_node::RunningNode) {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config();
    change(&mut config);
    let node = start(pki, data.path(), config, None).await;
    (data, node)
}

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

/// A UDP relay between one client and `node`. The client's datagrams go to
/// the node; the node's are held while `open` is false (the handshake cannot
/// complete) and delivered once it turns true. `answered`: the node has sent
/// something; `retry`: one of its datagrams was a QUIC Retry (a long header
/// whose type bits are 0b11).
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
    retry: Arc<AtomicBool>,
}

impl Relay {
    async fn start(node: SocketAddr, open: bool) -> Relay {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: front.local_addr().unwrap(),
            open: Arc::new(AtomicBool::new(open)),
            answered: Arc::default(),
            retry: Arc::default(),
        };
        let (open, answered, retry) = (
            Arc::clone(&relay.open),
            Arc::clone(&relay.answered),
            Arc::clone(&relay.retry),
        );
        tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut held: Vec<Vec<u8>> = Vec::new();
            let mut from_client = vec![0u8; 65_536];
            let mut from_node = vec![0u8; 65_536];
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
            loop {
                tokio::select! {
                    r = front.recv_from(&mut from_client) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = back.send_to(&from_client[..n], node).await;
                    }
                    r = back.recv_from(&mut from_node) => {
                        let Ok((n, _)) = r else { return };
                        answered.store(true, Ordering::Release);
                        if from_node[0] & 0xf0 == 0xf0 {
                            retry.store(true, Ordering::Release);
                        }
                        held.push(from_node[..n].to_vec());
                    }
                    _ = tick.tick() => {}
                }
                if let (true, Some(to)) = (open.load(Ordering::Acquire), client) {
                    for d in held.drain(..) {
                        let _ = front.send_to(&d, to).await;
                    }
                }
            }
        });
        relay
    }

    /// Waits until the node has answered through the relay.
    async fn answered(&self) {
        eventually("the node answering through the relay", || {
            let answered = Arc::clone(&self.answered);
            async move { answered.load(Ordering::Acquire) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_holds_no_connection_slot() {
    let pki = Pki::new();
    let (_data, node) = node_with(&pki, |c| c.max_connections = 1).await;
    let addr = node.quic_addr();

    let stalled = Stalled::start(&pki, addr).await;

    // The only slot is still free for a device that completes its handshake.
    let endpoint = client_endpoint();
    let conn = connect(&endpoint, &pki, &pki.device("tv-real"), addr).await;
    accepted(sync(&conn, &snapshot(1, 0)).await);
    stalled.shut_down(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retry_always_on_devices_still_connect() {
    let pki = Pki::new();
    let (_data, node) = node_with(&pki, |c| c.retry_above_pending = 0).await;
    let endpoint = client_endpoint();
    let conn = connect(&endpoint, &pki, &pki.device("tv-retried"), node.quic_addr()).await;
    accepted(sync(&conn, &snapshot(1, 0)).await);
    // Only this test's node retries (the others keep the default threshold).
    assert!(metric(node.admin_addr(), "omega_handshake_retries_total").await >= 1.0);
    assert!(node.shutdown().await);
}

/// A handshake held in progress (through a [`Relay`] that stays shut until
/// the test opens it).
struct Stalled {
    endpoint: quinn::Endpoint,
    attempt: quinn::Connecting,
    relay: Relay,
}

impl Stalled {
    /// A fresh client's attempt, once the node is handshaking with it.
    async fn start(pki: &Pki, node: SocketAddr) -> Stalled {
        let relay = Relay::start(node, false).await;
        let endpoint = client_endpoint();
        let attempt = endpoint
            .connect_with(
                pki.client_config(&pki.device("tv-stalled")),
                relay.addr,
                "localhost",
            )
            .unwrap();
        relay.answered().await;
        Stalled {
            endpoint,
            attempt,
            relay,
        }
    }

    /// Shuts `node` down with the handshake still pending (it must not hold
    /// shutdown up), then ends the client.
    async fn shut_down(self, node: omega_node::RunningNode) {
        drop(self.attempt);
        assert!(node.shutdown().await);
        self.endpoint.close(0u32.into(), b"");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_pending_handshakes_an_attempt_is_refused_at_once() {
    let pki = Pki::new();
    let (_data, node) = node_with(&pki, |c| {
        c.max_pending_handshakes = 1;
        c.retry_above_pending = 1_000;
    })
    .await;
    let addr = node.quic_addr();
    let stalled = Stalled::start(&pki, addr).await;

    let endpoint = client_endpoint();
    let refused = tokio::time::timeout(
        WAIT,
        endpoint
            .connect_with(pki.client_config(&pki.device("tv-late")), addr, "localhost")
            .unwrap(),
    )
    .await
    .expect("refused in time, not left to time out")
    .expect_err("no handshake permit left");
    assert!(
        matches!(&refused, quinn::ConnectionError::ConnectionClosed(c)
            if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED),
        "{refused}"
    );
    let series = r#"omega_connections_refused_total{reason="pending"}"#;
    assert!(metric(node.admin_addr(), series).await >= 1.0);
    stalled.shut_down(node).await;
}

/// Connects through a fresh open [`Relay`] and syncs; whether the node
/// answered the attempt with a QUIC Retry.
async fn syncs_through_a_relay(pki: &Pki, node: SocketAddr, device: &str) -> bool {
    let relay = Relay::start(node, true).await;
    let endpoint = client_endpoint();
    let conn = connect(&endpoint, pki, &pki.device(device), relay.addr).await;
    accepted(sync(&conn, &snapshot(1, 0)).await);
    conn.close(0u32.into(), b"done");
    relay.retry.load(Ordering::Acquire)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_retry_above_pending_handshakes_a_new_address_is_validated_first() {
    let pki = Pki::new();
    let (_data, node) = node_with(&pki, |c| c.retry_above_pending = 1).await;
    let addr = node.quic_addr();
    // No handshake in progress: no Retry.
    assert!(!syncs_through_a_relay(&pki, addr, "tv-direct").await);
    // One in progress: the next address gets a Retry first, which a real
    // client answers, and then connects and syncs.
    let stalled = Stalled::start(&pki, addr).await;
    assert!(syncs_through_a_relay(&pki, addr, "tv-validated").await);
    stalled.shut_down(node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_completing_after_the_last_slot_was_taken_is_closed_with_code_3() {
    let pki = Pki::new();
    let (_data, node) = node_with(&pki, |c| c.max_connections = 1).await;
    let addr = node.quic_addr();

    // B's attempt is accepted (a slot was free) and its handshake held.
    let late = Stalled::start(&pki, addr).await;
    // Meanwhile A completes its handshake and takes the only slot.
    let endpoint = client_endpoint();
    let first = connect(&endpoint, &pki, &pki.device("tv-first"), addr).await;
    accepted(sync(&first, &snapshot(1, 0)).await);
    // B's handshake completes now: no slot is left for it.
    late.relay.open.store(true, Ordering::Release);
    let reason = tokio::time::timeout(WAIT, async {
        match late.attempt.await {
            Ok(c) => c.closed().await,
            Err(e) => e,
        }
    })
    .await
    .expect("the late connection ends in time");
    assert_closed_with(reason, CLOSE_CONNECTION_LIMIT);
    let series = r#"omega_connections_refused_total{reason="limit"}"#;
    assert!(metric(node.admin_addr(), series).await >= 1.0);
    // A keeps its connection.
    accepted(sync(&first, &snapshot(2, 0)).await);
    assert!(node.shutdown().await);
    late.endpoint.close(0u32.into(), b"");
}
