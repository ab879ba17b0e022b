//! Quick loopback figures for the node on each store (not a benchmark;
//! `omega-sim load` is): N devices, each on its own reused mTLS connection,
//! sync back to back for D seconds against an in-process node (the devices
//! are `omega_sim::load::drive`'s); prints syncs/s and latency percentiles.
//! Then, if the model and ml-100k are present, imports ml-100k's `u.item`
//! through the catalog actor and prints items/s.
//!
//! `cargo run --release -p omega-sim --example quick_load -- [DEVICES] [SECS]
//! [--store redb|scylla|both]` (defaults 64 devices, 10 s, redb). `both` runs
//! the same load on a redb node, then on a node whose store is a fresh
//! keyspace (dropped afterwards) of the Cassandra or ScyllaDB at
//! `OMEGA_TEST_CQL` (default 127.0.0.1:9042; `scripts/cassandra.sh start`).
//! `OMEGA_MODEL_DIR` and `OMEGA_ML100K` override the model and data set
//! locations; the catalog import runs on the first store's node only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use omega_certs::CertDir;
use omega_constellation::actors::{catalog::parse_import, ImportFormat};
use omega_constellation::store::{fresh_test_options, ScyllaStore};
use omega_node::config::StoreKind;
use omega_node::{Config, RunningNode, ServeOptions};
use omega_protocol::Region;
use omega_sim::load::drive::{drive, Behaviour, Connections, Device, DriveOptions, Live};
use omega_sim::load::pki;

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

/// Which store the node under load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Redb,
    Scylla,
}

struct Args {
    devices: usize,
    secs: u64,
    stores: Vec<Store>,
}

fn parse_args() -> Result<Args, String> {
    let (mut positional, mut stores) = (Vec::new(), vec![Store::Redb]);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = match a.strip_prefix("--store=") {
            Some(v) => Some(v.to_owned()),
            None if a == "--store" => Some(args.next().ok_or("--store needs a value")?),
            None => None,
        };
        match value.as_deref() {
            Some("redb") => stores = vec![Store::Redb],
            Some("scylla") => stores = vec![Store::Scylla],
            Some("both") => stores = vec![Store::Redb, Store::Scylla],
            Some(v) => return Err(format!("--store {v}: expected redb, scylla or both")),
            None => positional.push(a),
        }
    }
    let number = |i: usize, default: u64| -> Result<u64, String> {
        positional.get(i).map_or(Ok(default), |a| {
            a.parse().map_err(|_| format!("{a}: not a number"))
        })
    };
    Ok(Args {
        devices: number(0, 64)? as usize,
        secs: number(1, 10)?,
        stores,
    })
}

async fn async_main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quick_load: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut certs = CertDir::init(tmp.path().join("certs")).unwrap();
    certs
        .issue_node("node-1", &["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    // The node's own directory, as `omega-certs export-node` makes it.
    let node_certs = tmp.path().join("node-1");
    certs.export_node("node-1", &node_certs).unwrap();
    let model = omega_embed::default_model_dir();
    let model = model.join("model.safetensors").is_file().then_some(model);
    for (i, store) in args.stores.iter().enumerate() {
        // The catalog import runs once, on the first store's node (the
        // others start without the model).
        let import = i == 0;
        let model = model.clone().filter(|_| import);
        load(*store, &args, &certs, tmp.path(), model, import).await;
    }
}

/// One node on `store`: the sync figures, then (`import`) the catalog
/// import's, which needs `model`.
async fn load(
    store: Store,
    args: &Args,
    certs: &CertDir,
    tmp: &std::path::Path,
    model: Option<PathBuf>,
    import: bool,
) {
    let devices = args.devices;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        rate_limit_interval_secs: 0,
        in_flight: 4096,
        regions: vec!["eu".into()],
        ..Config::default()
    };
    // A fresh keyspace on the Cassandra/ScyllaDB at OMEGA_TEST_CQL (or
    // 127.0.0.1:9042), dropped afterwards.
    let keyspace = match store {
        Store::Redb => None,
        Store::Scylla => {
            let addr = std::env::var("OMEGA_TEST_CQL")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "127.0.0.1:9042".into());
            let opts = fresh_test_options(addr.trim());
            config.store.kind = StoreKind::Scylla;
            config.store.contact_points = opts.contact_points.clone();
            config.store.keyspace = opts.keyspace.clone();
            Some(opts)
        }
    };
    let node = RunningNode::start(ServeOptions {
        data_dir: tmp.join(format!("data-{store:?}")),
        model_dir: model.clone(),
        certs_dir: tmp.join("node-1"),
        config,
        admin_token: None,
    })
    .await
    .unwrap();
    let mut certs = CertDir::open(certs.dir()).unwrap();
    let ids = pki::device_batch(&mut certs, "tv", devices, |_| {}).unwrap();
    let anchor = pki::node_anchor(&certs).unwrap();
    let devices: Vec<Device> = pki::client_configs(&certs, &ids, &anchor)
        .unwrap()
        .into_iter()
        .map(|config| Device {
            config,
            behaviour: Behaviour::Good,
        })
        .collect();
    let n = devices.len();
    let opts = DriveOptions {
        addr: node.quic_addr(),
        server_name: "localhost".into(),
        connections: Connections::Reused,
        duration: Duration::from_secs(args.secs),
        ramp_up: Duration::ZERO,
        rate: None,
        endpoints: 1,
        handshakes: 128,
        timeout: Duration::from_secs(30),
        hold: false,
        region: Region::new("eu").unwrap(),
    };
    let report = drive(devices, opts, Arc::new(Live::default()))
        .await
        .unwrap();
    let (all, elapsed) = (report.all(), report.elapsed.as_secs_f64());
    println!(
        "sync ({store:?} store): {n} devices, reused connections, {elapsed:.1} s: {} syncs, {:.0} syncs/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} refused",
        all.ok,
        all.ok as f64 / elapsed,
        all.quantile_ms(0.5),
        all.quantile_ms(0.99),
        all.max_ms(),
        all.errors.values().sum::<u64>(),
    );

    let ml = std::env::var_os("OMEGA_ML100K")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/data/movielens/ml-100k"));
    match (model, std::fs::read(ml.join("u.item"))) {
        _ if !import => {}
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
    if let Some(opts) = keyspace {
        let dropped = tokio::task::spawn_blocking(move || {
            ScyllaStore::open(&opts).map(|s| drop(s.dropping_keyspace()))
        })
        .await;
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("quick_load: the test keyspace was not dropped");
        }
    }
}
