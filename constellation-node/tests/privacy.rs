//! Privacy rules 3 and 4 through a real node over QUIC with certificates
//! from omega-certs: a device's forget takes its contribution out of the
//! next federation run, k − 1 Sybil certificates with tiny weights do not
//! get a victim's pattern published, and a region outside the allow-list is
//! refused and charged to the rate limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use omega_protocol::*;
use support::*;

/// The region's whole global set, as a device that holds none receives it.
async fn globals(conn: &quinn::Connection) -> Vec<GlobalPattern> {
    let a = accepted(sync(conn, &delta(0, 0, Vec::new())).await);
    a.global_patterns
}

fn forget() -> SyncRequest {
    SyncRequest {
        kind: SyncKind::Forget,
        base_version: 1,
        pattern_version: 2,
        global_version: 0,
        catalog_version: 0,
        region: region(),
        delta: PatternDelta::default(),
        round: None,
        fleet: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_device_is_gone_from_the_next_federation() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let (addr, admin) = (node.quic_addr(), node.admin_addr());
    let endpoint = client_endpoint();
    let mut conns = Vec::new();
    for d in 0..6u32 {
        let conn = connect(&endpoint, &pki, &pki.device(&format!("tv-{d:03}")), addr).await;
        assert_eq!(
            accepted(sync(&conn, &snapshot(1, d)).await).acked_version,
            1
        );
        conns.push(conn);
    }
    let reader = connect(&endpoint, &pki, &pki.device("tv-reader"), addr).await;
    federate(admin).await;
    let before = globals(&reader).await;
    // Device 2 takes the global (it will be told when it goes).
    let mut pull = delta(1, 1, Vec::new());
    pull.global_version = accepted(sync(&conns[2], &pull).await).global_version;
    assert_eq!(
        before.iter().map(|g| g.support).collect::<Vec<_>>(),
        vec![6]
    );

    // Device 0 forgets: acknowledged, and the next run no longer counts it.
    let a = accepted(sync(&conns[0], &forget()).await);
    assert_eq!(a.acked_version, 0);
    assert!(node
        .node()
        .store()
        .device_state(&DeviceId::new("tv-000").unwrap())
        .unwrap()
        .is_none());
    federate(admin).await;
    let after = globals(&reader).await;
    assert_eq!(after.iter().map(|g| g.support).collect::<Vec<_>>(), vec![5]);
    assert_eq!(after[0].id, before[0].id, "the same global, less support");

    // A second forget takes support below k: the global is withdrawn and
    // devices holding it are told to drop it.
    accepted(sync(&conns[1], &forget()).await);
    federate(admin).await;
    assert!(globals(&reader).await.is_empty());
    let a = accepted(sync(&conns[2], &pull).await);
    assert_eq!(a.global_removed, vec![before[0].id], "{a:?}");
    assert!(a.global_patterns.is_empty());
}

/// A unit embedding: a direction all devices share (96 coordinates) plus
/// four coordinates of the device's own, so that the devices' patterns
/// cluster in any order (cosine 0.96) yet each stays recognizable.
fn own_embedding(device: usize) -> Embedding {
    let v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|i| {
            let own = 96 + 4 * device..96 + 4 * (device + 1);
            if i < 96 || own.contains(&i) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Embedding::new(v).unwrap()
}

fn upload(device: usize, success_rate: f32, samples: u32) -> SyncRequest {
    let mut r = snapshot(1, 0);
    r.delta.added = vec![PatternSummary {
        embedding: own_embedding(device),
        success_rate,
        samples,
        ..pattern(1, 0)
    }];
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_do_not_get_a_victims_pattern_published() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let node = start(&pki, data.path(), test_config(), None).await;
    let (addr, admin) = (node.quic_addr(), node.admin_addr());
    let endpoint = client_endpoint();
    // The victim: a well-watched pattern, samples claimed huge.
    let victim = connect(&endpoint, &pki, &pki.device("tv-victim"), addr).await;
    accepted(sync(&victim, &upload(0, 1.0, u32::MAX)).await);
    // k − 1 = 4 attacker certificates with tiny weights near it (the
    // smallest success rate the wire carries is 1/255).
    let mut sybil_sum = vec![0.0f32; EMBEDDING_DIM];
    for d in 1..5usize {
        let conn = connect(&endpoint, &pki, &pki.device(&format!("tv-sybil-{d}")), addr).await;
        accepted(sync(&conn, &upload(d, 0.01, 1)).await);
        for (s, v) in sybil_sum.iter_mut().zip(own_embedding(d).as_slice()) {
            *s += v;
        }
    }
    let sybils = Embedding::new(sybil_sum).unwrap();
    federate(admin).await;
    let reader = connect(&endpoint, &pki, &pki.device("tv-reader"), addr).await;
    let published = globals(&reader).await;
    // Five distinct certificates: a global is published, but it is the
    // share-capped mix, not the victim's pattern with the victim's figures.
    assert_eq!(published.len(), 1, "{published:?}");
    let g = &published[0];
    assert_eq!(g.support, 5);
    let victim_e = own_embedding(0);
    assert!(
        g.embedding.cosine(&sybils) > g.embedding.cosine(&victim_e),
        "the published global is the victim's pattern"
    );
    assert!(g.success_rate < 0.5, "the victim's success rate: {g:?}");
    assert!(g.samples < 100, "the victim's samples: {g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_outside_the_allow_list_is_refused_and_charged() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let config = omega_node::Config {
        rate_limit_interval_secs: 60,
        ..test_config()
    };
    let node = start(&pki, data.path(), config, None).await;
    let endpoint = client_endpoint();
    let conn = connect(&endpoint, &pki, &pki.device("tv-roamer"), node.quic_addr()).await;
    let mut elsewhere = snapshot(1, 0);
    elsewhere.region = Region::new("us-east").unwrap();
    match sync(&conn, &elsewhere).await {
        Err(SyncError::BadRequest { reason }) => {
            assert!(reason.contains("region us-east is not served"), "{reason}");
            assert!(reason.contains("eu"), "names the allowed regions: {reason}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    // Charged: the same device's next sync, in an allowed region, waits.
    assert!(matches!(
        sync(&conn, &snapshot(1, 0)).await,
        Err(SyncError::RetryAfter { .. })
    ));
    assert!(node
        .node()
        .store()
        .device_state(&DeviceId::new("tv-roamer").unwrap())
        .unwrap()
        .is_none());
}
