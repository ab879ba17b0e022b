//! omega-node over real QUIC on loopback with certificates from omega-certs:
//! federation end to end, restart durability, typed answers to bad frames,
//! identity from the certificate only, the rate limit, shard restarts, the
//! admin API and the catalog import with the real model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use omega_node::Config;

use omega_protocol::codec::encode_request;
use omega_protocol::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_receive_global_patterns_built_from_the_others_uploads() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let addr = node.quic_addr();
    let admin = node.admin_addr();
    let endpoint = client_endpoint();

    let mut conns = Vec::new();
    for d in 0..6u32 {
        let cert = pki.device(&format!("tv-{d:03}"));
        let conn = connect(&endpoint, &pki, &cert, addr).await;
        let a = accepted(sync(&conn, &snapshot(1, d)).await);
        assert_eq!(a.acked_version, 1);
        assert!(a.global_patterns.is_empty(), "nothing federated yet");
        conns.push(conn);
    }

    // Mutating endpoints need the token.
    let (status, _) = http(admin, "POST", "/api/v1/federation/trigger", None, b"").await;
    assert_eq!(status, 401);
    let (status, _) = http(
        admin,
        "POST",
        "/api/v1/federation/trigger",
        Some("wrong"),
        b"",
    )
    .await;
    assert_eq!(status, 401);
    let body = federate(admin).await;
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["devices"], 6, "{summary}");
    assert_eq!(summary["regions"][0]["region"], "eu");
    assert!(summary["regions"][0]["global_version"].as_u64().unwrap() >= 1);

    // Device 0 syncs again and gets globals built from everyone's uploads.
    let a = accepted(sync(&conns[0], &delta(1, 1, Vec::new())).await);
    assert!(a.global_version >= 1);
    assert!(!a.global_patterns.is_empty(), "globals arrive");
    assert!(
        a.global_patterns.iter().all(|g| g.support >= 5),
        "k-threshold"
    );
    assert!(a.global_patterns[0].embedding.cosine(&embedding(0)) > 0.9);

    // The admin API reflects it.
    let (status, body) = http(
        admin,
        "GET",
        "/api/v1/patterns/global?region=eu",
        Some(TOKEN),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let g: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!g["patterns"].as_array().unwrap().is_empty());
    let (status, _) = http(
        admin,
        "GET",
        "/api/v1/patterns/global?region=BAD",
        Some(TOKEN),
        b"",
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = http(admin, "GET", "/api/v1/stats", Some(TOKEN), b"").await;
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["devices"], 6, "{stats}");
    assert_eq!(stats["node"], "node-1");
    let (status, body) = http(admin, "GET", "/api/v1/cluster", Some(TOKEN), b"").await;
    assert_eq!(status, 200, "{body}");
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["clustered"], false, "a redb node is alone: {c}");
    assert_eq!(c["store"]["ok"], true, "{c}");
    assert_eq!(c["last_federation"]["devices"], 6, "{c}");
    let (status, metrics) = http(admin, "GET", "/metrics", Some(TOKEN), b"").await;
    assert_eq!(status, 200);
    for name in [
        "omega_syncs_total",
        "omega_sync_duration_seconds",
        "omega_federation_duration_seconds",
        "omega_devices",
        "omega_patterns",
        "omega_global_version",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    assert_eq!(http(admin, "GET", "/health", None, b"").await.0, 200);
    assert_eq!(http(admin, "GET", "/ready", None, b"").await.0, 200);
    assert!(node.shutdown().await, "clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_every_acknowledged_state() {
    restart_keeps_acknowledged_state(test_config()).await;
}

/// The same with the node's store in ScyllaDB (a Cassandra at
/// `OMEGA_TEST_CQL`, a fresh keyspace): the second node reads what the first
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_scylla_keeps_every_acknowledged_state_across_restart() {
    use omega_constellation::store::{cql_test_target, fresh_test_options, ScyllaStore};
    let Some(addr) = cql_test_target() else {
        return;
    };
    let opts = fresh_test_options(&addr);
    let mut config = test_config();
    config.store.kind = omega_node::config::StoreKind::Scylla;
    config.store.contact_points = opts.contact_points.clone();
    config.store.keyspace = opts.keyspace.clone();
    restart_keeps_acknowledged_state(config).await;
    tokio::task::spawn_blocking(move || {
        drop(ScyllaStore::open(&opts).unwrap().dropping_keyspace())
    })
    .await
    .unwrap();
}

/// Two nodes on one keyspace: both appear in `/api/v1/cluster` on either,
/// with the one lease holder (the first node: it took the lease at start and
/// renews it; the lease lasts the federation interval).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_scylla_see_each_other_and_one_lease_holder() {
    use omega_constellation::store::{cql_test_target, fresh_test_options, ScyllaStore};
    let Some(addr) = cql_test_target() else {
        return;
    };
    let mut pki = Pki::new();
    pki.certs
        .issue_node("node-2", &["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    let opts = fresh_test_options(&addr);
    let mut config = test_config();
    config.store.kind = omega_node::config::StoreKind::Scylla;
    config.store.contact_points = opts.contact_points.clone();
    config.store.keyspace = opts.keyspace.clone();
    config.cluster.heartbeat_secs = 1;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n1 = start(&pki, d1.path(), config.clone(), None).await;
    let admin1 = n1.admin_addr();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = |admin| async move {
        let (status, body) = http(admin, "GET", "/api/v1/cluster", Some(TOKEN), b"").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    while status(admin1).await["lease"]["holder"] != "node-1" {
        assert!(
            std::time::Instant::now() < deadline,
            "node-1 never took the lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    config.node_name = "node-2".into();
    // node-2 gets its own export (each node holds only its own key).
    let node2_certs = pki.dir.path().join("node-2");
    pki.certs.export_node("node-2", &node2_certs).unwrap();
    let n2 = omega_node::RunningNode::start(omega_node::ServeOptions {
        data_dir: d2.path().to_owned(),
        model_dir: None,
        certs_dir: node2_certs,
        config,
        admin_token: Some(TOKEN.into()),
    })
    .await
    .expect("node-2 starts");
    let admin2 = n2.admin_addr();
    let c = loop {
        let c = status(admin2).await;
        if c["members"].as_array().is_some_and(|m| m.len() == 2) {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "members never reached 2: {c}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(c["clustered"], true);
    assert_eq!(c["node"], "node-2");
    assert_eq!(c["members"][0]["node"], "node-1", "{c}");
    assert_eq!(c["members"][1]["node"], "node-2", "{c}");
    assert_eq!(c["lease"]["holder"], "node-1", "one holder: {c}");
    assert_eq!(c["store"]["ok"], true, "{c}");
    assert_eq!(status(admin1).await["lease"]["holder"], "node-1");
    assert!(n2.shutdown().await, "clean shutdown");
    assert!(n1.shutdown().await, "clean shutdown");
    tokio::task::spawn_blocking(move || {
        drop(ScyllaStore::open(&opts).unwrap().dropping_keyspace())
    })
    .await
    .unwrap();
}

async fn restart_keeps_acknowledged_state(config: Config) {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let cert = pki.device("tv-restart");
    let endpoint = client_endpoint();

    let node = start(&pki, data.path(), config.clone(), None).await;
    let conn = connect(&endpoint, &pki, &cert, node.quic_addr()).await;
    assert_eq!(
        accepted(sync(&conn, &snapshot(1, 1)).await).acked_version,
        1
    );
    let a = accepted(sync(&conn, &delta(1, 2, vec![pattern(1, 2)])).await);
    assert_eq!(a.acked_version, 2);
    conn.close(0u32.into(), b"bye");
    assert!(node.shutdown().await, "clean shutdown closes the store");

    // Same data directory (or keyspace), new process state.
    let node = start(&pki, data.path(), config, None).await;
    let conn = connect(&endpoint, &pki, &cert, node.quic_addr()).await;
    let a = accepted(sync(&conn, &delta(2, 3, vec![pattern(1, 3)])).await);
    assert_eq!(a.acked_version, 3, "the acked base survived the restart");
    assert!(node.shutdown().await);
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_typed_answers_and_the_node_stays_healthy() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let endpoint = client_endpoint();
    let cert = pki.device("tv-fuzz");
    let conn = connect(&endpoint, &pki, &cert, node.quic_addr()).await;

    // Malformed: right version, garbage after it.
    let r = raw(
        &conn,
        &frame(&[PROTOCOL_VERSION as u8, 0xff, 0xff, 0xff, 0xff, 0xff]),
    )
    .await;
    assert!(
        matches!(r, Ok(Err(SyncError::BadRequest { .. }))),
        "malformed: {r:?}"
    );

    // Oversized: the length prefix claims more than the request limit.
    let mut big = ((limits::MAX_REQUEST_FRAME + 1) as u32)
        .to_be_bytes()
        .to_vec();
    big.extend_from_slice(&[0u8; 16]);
    let r = raw(&conn, &big).await;
    assert!(
        matches!(r, Ok(Err(SyncError::BadRequest { .. }))),
        "oversized: {r:?}"
    );

    // Cut mid-way: 100 bytes announced, 10 sent, stream finished.
    let mut cut = 100u32.to_be_bytes().to_vec();
    cut.extend_from_slice(&[1u8; 10]);
    let r = raw(&conn, &cut).await;
    assert!(
        matches!(r, Ok(Err(SyncError::BadRequest { .. })) | Err(_)),
        "cut: {r:?}"
    );

    // Wrong protocol version (varint 99 first).
    let r = raw(&conn, &frame(&[99, 0, 0, 0])).await;
    assert_eq!(
        r,
        Ok(Err(SyncError::UnsupportedVersion {
            got: 99,
            min: omega_protocol::wire::MIN_PROTOCOL_VERSION,
            max: PROTOCOL_VERSION
        }))
    );

    // A request that decodes but breaks a rule.
    let mut bad = snapshot(1, 1);
    bad.delta.removed.push(PatternId(9));
    let r = raw(&conn, &encode_request(&bad).unwrap()).await;
    assert!(matches!(r, Ok(Err(SyncError::BadRequest { .. }))), "{r:?}");

    // The connection and the node are fine.
    assert_eq!(
        accepted(sync(&conn, &snapshot(1, 1)).await).acked_version,
        1
    );
    let admin = node.admin_addr();
    assert_eq!(http(admin, "GET", "/ready", None, b"").await.0, 200);
    let (_, metrics) = http(admin, "GET", "/metrics", Some(TOKEN), b"").await;
    assert!(metrics.contains("omega_sync_errors_total"), "{metrics}");
    assert!(node.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_is_the_certificate_not_the_payload() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let endpoint = client_endpoint();
    let (a, b) = (pki.device("tv-a"), pki.device("tv-b"));
    let conn_a = connect(&endpoint, &pki, &a, node.quic_addr()).await;
    let conn_b = connect(&endpoint, &pki, &b, node.quic_addr()).await;
    assert_eq!(
        accepted(sync(&conn_b, &snapshot(1, 7)).await).acked_version,
        1
    );

    // B's exact request bytes (a snapshot at version 5), sent from A's connection.
    let b_bytes = encode_request(&snapshot(5, 8)).unwrap();
    let r = raw(&conn_a, &b_bytes).await.unwrap();
    assert_eq!(accepted(r).acked_version, 5);

    let store = node.node().store();
    let ida = DeviceId::new("tv-a").unwrap();
    let idb = DeviceId::new("tv-b").unwrap();
    assert_eq!(
        store
            .device_state(&ida)
            .unwrap()
            .unwrap()
            .state
            .pattern_version,
        5,
        "written to the certificate's device"
    );
    let b_state = store.device_state(&idb).unwrap().unwrap();
    assert_eq!(b_state.state.pattern_version, 1, "B untouched");
    assert_eq!(store.device_patterns(&idb).unwrap().len(), 1);
    assert!(node.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_rate_limit_gets_retry_after() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let config = omega_node::Config {
        rate_limit_interval_secs: 60,
        rate_limit_burst: 1,
        ..test_config()
    };
    let node = start(&pki, data.path(), config, None).await;
    let endpoint = client_endpoint();
    let cert = pki.device("tv-burst");
    let conn = connect(&endpoint, &pki, &cert, node.quic_addr()).await;
    assert!(sync(&conn, &snapshot(1, 1)).await.is_ok());
    for _ in 0..4 {
        match sync(&conn, &delta(1, 1, Vec::new())).await {
            Err(SyncError::RetryAfter { secs }) => assert!((1..=60).contains(&secs)),
            other => panic!("expected RetryAfter, got {other:?}"),
        }
    }
    assert!(node.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shard_actor_is_restarted() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let endpoint = client_endpoint();
    let cert = pki.device("tv-crash");
    let conn = connect(&endpoint, &pki, &cert, node.quic_addr()).await;
    assert!(sync(&conn, &snapshot(1, 1)).await.is_ok());
    for shard in 0..3 {
        assert!(node.node().fail_shard(shard));
    }
    let n = node.node().clone();
    eventually("the shards to be restarted", || {
        let n = n.clone();
        async move { n.restarts() >= 3 && n.is_ready() }
    })
    .await;
    drop(n);
    // State is in the store, so the device carries on.
    let a = accepted(sync(&conn, &delta(1, 2, vec![pattern(1, 2)])).await);
    assert_eq!(a.acked_version, 2);
    let (_, metrics) = http(node.admin_addr(), "GET", "/metrics", Some(TOKEN), b"").await;
    assert!(metrics.contains("omega_actor_restarts_total"));
    assert!(node.shutdown().await);
}

use omega_embed::default_model_dir as model_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_content_is_embedded_and_paged_to_tvs() {
    let model = model_dir();
    // The model is a precondition, not an option: CI fetches it, and a
    // machine without it must fail here rather than pass without testing.
    assert!(
        model.join("model.safetensors").is_file(),
        "no model at {} (run scripts/fetch-model.sh or set OMEGA_MODEL_DIR)",
        model.display()
    );
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), Some(model)).await;
    let admin = node.admin_addr();

    let one = br#"{"id":"film-1","title":"A quiet space documentary","genres":["Documentary"],"year":2019}"#;
    let (status, _) = http(admin, "POST", "/api/v1/content", None, one).await;
    assert_eq!(status, 401);
    let (status, body) = http(admin, "POST", "/api/v1/content", Some(TOKEN), one).await;
    assert_eq!(status, 200, "{body}");

    let jl = b"{\"id\":\"film-2\",\"title\":\"Laugh out loud\",\"genres\":[\"Comedy\"]}\n\
               {\"id\":\"film-3\",\"title\":\"Dark alley\",\"genres\":[\"Thriller\"],\"description\":\"A detective at night.\"}\n";
    let (status, body) = http(admin, "POST", "/api/v1/content/import", Some(TOKEN), jl).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["items"], 2);
    assert_eq!(report["catalog_items"], 3);

    let u_item = b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n\
                   2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0\n";
    let (status, body) = http(
        admin,
        "POST",
        "/api/v1/content/import?format=movielens-u-item",
        Some(TOKEN),
        u_item,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        admin,
        "POST",
        "/api/v1/content/import",
        Some(TOKEN),
        b"{oops\n",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        admin,
        "POST",
        "/api/v1/content/import?format=xml",
        Some(TOKEN),
        b"",
    )
    .await;
    assert_eq!(status, 400);

    // A TV gets the catalog by version.
    let endpoint = client_endpoint();
    let cert = pki.device("tv-catalog");
    let conn = connect(&endpoint, &pki, &cert, node.quic_addr()).await;
    let a = accepted(sync(&conn, &snapshot(1, 1)).await);
    let page = a.catalog.expect("a catalog page");
    assert_eq!(page.upserts.len(), 5);
    assert!(!page.more);
    let toy = page
        .upserts
        .iter()
        .find(|e| e.item.id.as_str() == "ml100k:1")
        .expect("u.item import");
    assert_eq!(toy.item.year, Some(1995));
    let goldeneye = page
        .upserts
        .iter()
        .find(|e| e.item.id.as_str() == "ml100k:2")
        .unwrap();
    assert!(
        toy.embedding.cosine(&goldeneye.embedding) < 0.999,
        "real embeddings differ"
    );
    let mut again = delta(1, 1, Vec::new());
    again.catalog_version = page.version;
    assert!(
        accepted(sync(&conn, &again).await).catalog.is_none(),
        "up to date"
    );
    assert!(node.shutdown().await);
}
