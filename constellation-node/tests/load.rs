//! 1,000 concurrent mTLS connections, each with its own device certificate,
//! against a node with a small in-flight bound: every sync gets a typed
//! answer (accepted or `RetryAfter`), the node stays healthy and its memory
//! stays bounded. In its own test binary so VmRSS is not disturbed by other
//! tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use omega_protocol::SyncError;
use support::*;

const CONNECTIONS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_each_get_a_typed_answer() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let config = omega_node::Config {
        in_flight: 8,
        busy_retry_secs: 2,
        max_connections: 2 * CONNECTIONS,
        shards: 4,
        ..test_config()
    };
    let node = start(&pki, data.path(), config, None).await;
    let addr = node.quic_addr();
    let configs: Vec<quinn::ClientConfig> = (0..CONNECTIONS)
        .map(|i| pki.client_config(&pki.device(&format!("tv-{i:05}"))))
        .collect();
    let endpoint = client_endpoint();
    let rss_before = rss_kib();

    // At most 100 handshakes in progress at once: 1,000 simultaneous QUIC
    // Initials overflow the loopback socket buffers on a loaded 2-core machine
    // and the retransmission backoff then dominates. Every connection still
    // stays open to the end, and syncs overlap with later handshakes.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, cfg) in configs.into_iter().enumerate() {
        let endpoint = endpoint.clone();
        let handshakes = handshakes.clone();
        tasks.spawn(async move {
            let permit = handshakes.acquire_owned().await.expect("semaphore open");
            let conn =
                tokio::time::timeout(WAIT, endpoint.connect_with(cfg, addr, "localhost").unwrap())
                    .await
                    .expect("handshake in time")
                    .expect("handshake succeeds");
            drop(permit);
            let r = sync(&conn, &snapshot(1, i as u32)).await;
            (conn, r)
        });
    }
    let (mut ok, mut retry) = (0usize, 0usize);
    let mut conns = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (conn, r) = joined.expect("client task");
        match r {
            Ok(a) => {
                assert_eq!(a.acked_version, 1);
                ok += 1;
            }
            Err(SyncError::RetryAfter { secs }) => {
                assert_eq!(secs, 2);
                retry += 1;
            }
            Err(other) => panic!("untyped or unexpected answer: {other:?}"),
        }
        conns.push(conn);
    }
    assert_eq!(ok + retry, CONNECTIONS);
    assert!(ok >= 1);
    eprintln!("{ok} accepted, {retry} RetryAfter");
    let rss_after = rss_kib();
    eprintln!("VmRSS {rss_before} KiB -> {rss_after} KiB with {CONNECTIONS} connections open");
    // Client and server share this process: 1,000 connections on both sides.
    assert!(
        rss_after.saturating_sub(rss_before) < 400 * 1024,
        "memory grew by {} KiB",
        rss_after.saturating_sub(rss_before)
    );

    // Healthy: readiness, and a retried sync goes through.
    assert_eq!(
        http(node.admin_addr(), "GET", "/ready", None, b"").await.0,
        200
    );
    let conns = Arc::new(conns);
    let r = sync(&conns[0], &snapshot(1, 0)).await;
    assert!(r.is_ok(), "{r:?}");
    for c in conns.iter() {
        c.close(0u32.into(), b"done");
    }
    assert!(node.shutdown().await);
}
