//! Quick loopback figures for the node (not a benchmark suite; `omega-sim
//! bench` is): N devices, each on its own reused mTLS connection, sync back
//! to back for D seconds against an in-process node; prints syncs/s and
//! latency percentiles. Then, if the model and ml-100k are present, imports
//! ml-100k's `u.item` through the catalog actor and prints items/s.
//!
//! `cargo run --release -p omega-node --example quick_load -- [DEVICES] [SECS]`
//! (defaults 64 devices, 10 s). `OMEGA_MODEL_DIR` and `OMEGA_ML100K` override
//! the model and data set locations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omega_certs::{CaKind, CertDir, Validity};
use omega_constellation::actors::{catalog::parse_import, ImportFormat};
use omega_node::{Config, RunningNode, ServeOptions};
use omega_protocol::codec::{decode_response, encode_request};
use omega_protocol::*;
use omega_transport::quic::{client_config, exchange, TlsIdentity, TrustAnchor};

fn pattern(seed: u32) -> PatternSummary {
    let v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|i| ((i as f32 * 0.37 + seed as f32) * 1.3).sin())
        .collect();
    PatternSummary {
        id: PatternId(1),
        bucket: ContextBucket {
            day_part: DayPart::Evening,
            day_kind: DayKind::Weekday,
        },
        embedding: Embedding::new(v).unwrap(),
        success_rate: 0.8,
        samples: 10,
    }
}

fn request(kind: SyncKind, base: u64, version: u64, seed: u32) -> SyncRequest {
    let p = pattern(seed);
    let delta = match kind {
        SyncKind::Snapshot => PatternDelta {
            added: vec![p],
            ..Default::default()
        },
        _ => PatternDelta {
            updated: vec![p],
            ..Default::default()
        },
    };
    SyncRequest {
        kind,
        base_version: base,
        pattern_version: version,
        global_version: 0,
        catalog_version: u64::MAX,
        region: Region::new("eu").unwrap(),
        delta,
        round: None,
        fleet: Default::default(),
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    omega_embed::configure_candle_threads(None);
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => eprintln!("quick_load: starting the runtime: {e}"),
    }
}

async fn async_main() {
    let mut args = std::env::args().skip(1);
    let devices: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);

    let tmp = tempfile::tempdir().unwrap();
    let mut certs = CertDir::init(tmp.path().join("certs")).unwrap();
    certs
        .issue_node("node-1", &["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    let model = omega_embed::default_model_dir();
    let model = model.join("model.safetensors").is_file().then_some(model);
    let node = RunningNode::start(ServeOptions {
        data_dir: tmp.path().join("data"),
        model_dir: model.clone(),
        certs_dir: certs.dir().to_owned(),
        config: Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            rate_limit_interval_secs: 0,
            in_flight: 4096,
            regions: vec!["eu".into()],
            ..Config::default()
        },
        admin_token: None,
    })
    .await
    .unwrap();
    let addr = node.quic_addr();
    let anchor = TrustAnchor::from_pem(certs.ca(CaKind::Node).cert_pem().as_bytes(), &[]).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

    let mut conns = Vec::new();
    for i in 0..devices {
        let cert = certs
            .ca(CaKind::Device)
            .issue_device(&format!("tv-{i:05}"), Validity::days_from_now(1))
            .unwrap();
        let id = TlsIdentity::from_pem(cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap();
        let cfg = client_config(id, &anchor).unwrap();
        let conn = endpoint
            .connect_with(cfg, addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let body = exchange(
            &conn,
            &encode_request(&request(SyncKind::Snapshot, 0, 1, i as u32)).unwrap(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        decode_response(&body).unwrap().unwrap();
        conns.push(conn);
    }

    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            let (mut version, mut errors) = (1u64, 0u64);
            while Instant::now() < deadline {
                let req = request(
                    SyncKind::Delta,
                    version,
                    version + 1,
                    i as u32 + version as u32,
                );
                let t = Instant::now();
                let body = exchange(
                    &conn,
                    &encode_request(&req).unwrap(),
                    Duration::from_secs(30),
                )
                .await
                .unwrap();
                hist.record(t.elapsed().as_micros() as u64).unwrap();
                match decode_response(&body).unwrap() {
                    Ok(a) => version = a.acked_version,
                    Err(_) => errors += 1,
                }
            }
            (hist, errors)
        });
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, e) = r.unwrap();
        all.add(h).unwrap();
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "sync: {devices} devices, reused connections, {elapsed:.1} s: {} syncs, {:.0} syncs/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {errors} refused",
        all.len(),
        all.len() as f64 / elapsed,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.max() as f64 / 1000.0,
    );

    let ml = std::env::var_os("OMEGA_ML100K")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/movielens/ml-100k"));
    match (model, std::fs::read(ml.join("u.item"))) {
        (Some(_), Ok(bytes)) => {
            let items = parse_import(ImportFormat::MovieLensUItem, &bytes, 100_000).unwrap();
            let n = items.len();
            let node_actors = Arc::clone(node.node());
            let report = node_actors
                .import_catalog(items, Duration::from_secs(3600))
                .await
                .unwrap();
            println!(
                "catalog: {n} ml-100k items embedded and stored in {:.1} s: {:.0} items/s ({} batches)",
                report.duration_secs, report.items_per_sec, report.batches
            );
        }
        _ => println!("catalog: skipped (no model or no ml-100k u.item)"),
    }
    node.shutdown().await;
}
