//! Failover on loopback: three `omega-node` processes (the built binary) on
//! one Cassandra keyspace (`OMEGA_TEST_CQL`; skipped with a message when
//! unset, a failure with `OMEGA_REQUIRE_CQL=1`), and 300 simulated devices,
//! each with its own device certificate, syncing over real QUIC with mutual
//! TLS, each starting at a random node and moving to another one when a sync
//! fails. The federation lease holder is killed with SIGKILL; the test
//! measures and asserts that every device syncs again within 30 s, that at
//! least 99 % of the syncs after that succeed, that another node takes the
//! lease and federation keeps publishing, that nothing any node
//! acknowledged is missing from the store, and that the node, restarted,
//! rejoins the cluster. In its own test binary: it runs its own processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omega_constellation::store::{cql_test_target, fresh_test_store, PatternStore, ScyllaStore};
use omega_protocol::codec::{decode_response, encode_request};
use omega_protocol::*;
use omega_transport::quic::exchange;
use rand::{Rng, SeedableRng};
use support::*;

const DEVICES: usize = 300;
const NODES: usize = 3;
/// The lease lasts one federation interval; every node tries it each heartbeat.
const FEDERATION_SECS: u64 = 3;
const HEARTBEAT_SECS: u64 = 1;
/// A device gives up on a handshake or a sync after this and moves on.
/// (With 3 s, 15 of 1,388 syncs after the window failed, 98.9 %, on a
/// 2-core machine also running two evaluations and a build.)
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// What the issue asks: every device synced again within this after the kill.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);
/// Syncs counted after the failover window (the 99 % rule) at least.
const SYNCS_AFTER_WINDOW: u64 = 1_000;

/// One `omega-node` child process with fixed ports, so that a restart
/// serves the addresses the devices know.
struct NodeProc {
    name: String,
    quic: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    data: PathBuf,
    /// Its certificate directory, from `export-node` (no CA keys).
    certs: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    fn spawn(&mut self, model: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_omega-node"));
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--model-dir")
            .arg(model)
            .arg("--certs")
            .arg(&self.certs)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // Only the configuration file speaks.
        for var in [
            "OMEGA_LISTEN",
            "OMEGA_ADMIN",
            "OMEGA_NODE_NAME",
            "OMEGA_ADMIN_TOKEN",
            "OMEGA_ADMIN_TOKEN_FILE",
            "OMEGA_FEDERATION_KEY_FILE",
            "OMEGA_FEDERATION_INTERVAL_SECS",
            "OMEGA_CONFIG",
        ] {
            cmd.env_remove(var);
        }
        self.child = Some(cmd.spawn().expect("omega-node starts"));
    }

    /// SIGKILL (`Child::kill`) and reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ports nothing listens on now: a UDP one for QUIC, a TCP one for the admin
/// API (all held until every pair is chosen, so they differ).
fn free_ports(n: usize) -> Vec<(SocketAddr, SocketAddr)> {
    let held: Vec<_> = (0..n)
        .map(|_| {
            (
                std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
                std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            )
        })
        .collect();
    held.iter()
        .map(|(u, t)| (u.local_addr().unwrap(), t.local_addr().unwrap()))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn node_config(
    name: &str,
    quic: SocketAddr,
    admin: SocketAddr,
    cql: &str,
    keyspace: &str,
    token_file: &Path,
    key_file: &Path,
) -> String {
    format!(
        r#"listen = "{quic}"
admin = "{admin}"
node_name = "{name}"
shards = 2
rate_limit_interval_secs = 0
federation_interval_secs = {FEDERATION_SECS}
regions = ["eu"]
drain_timeout_secs = 2
admin_token_file = "{token}"
federation_key_file = "{key}"

[store]
kind = "scylla"
contact_points = ["{cql}"]
keyspace = "{keyspace}"

[cluster]
heartbeat_secs = {HEARTBEAT_SECS}

[learning]
enabled = false
"#,
        token = token_file.display(),
        key = key_file.display(),
    )
}

/// What the test reads of a device while it runs.
#[derive(Default)]
struct Seen {
    /// Milliseconds since the test's epoch at which the device's latest
    /// successful sync started, plus one (0: none yet).
    last_ok_start_ms: AtomicU64,
}

/// What a device did, returned when it stops.
struct DeviceRun {
    id: String,
    /// The last version a node acknowledged (0: none).
    acked: u64,
    /// Every sync: when it started (since the epoch) and whether it succeeded.
    syncs: Vec<(Duration, bool)>,
}

enum Failure {
    /// No handshake, no answer in time, a broken connection.
    Unreachable,
    /// A typed refusal.
    Refused(SyncError),
}

async fn attempt(
    endpoint: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    conn: &mut Option<quinn::Connection>,
    addr: SocketAddr,
    req: &SyncRequest,
) -> Result<SyncAccepted, Failure> {
    let c = match conn {
        Some(c) => c.clone(),
        None => {
            let connecting = endpoint
                .connect_with(cfg.clone(), addr, "localhost")
                .map_err(|_| Failure::Unreachable)?;
            let c = tokio::time::timeout(SYNC_TIMEOUT, connecting)
                .await
                .map_err(|_| Failure::Unreachable)?
                .map_err(|_| Failure::Unreachable)?;
            *conn = Some(c.clone());
            c
        }
    };
    let body = exchange(&c, &encode_request(req).unwrap(), SYNC_TIMEOUT)
        .await
        .map_err(|_| Failure::Unreachable)?;
    match decode_response(&body) {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(Failure::Refused(e)),
        Err(_) => Err(Failure::Unreachable),
    }
}

/// One device: starts at a random node, syncs every 1.5–3 s (its schedule),
/// and after any failure moves to another node at once. Its pattern's
/// success rate follows its version, so each federation run has something
/// new to publish.
#[allow(clippy::too_many_arguments)]
async fn device(
    i: usize,
    cfg: quinn::ClientConfig,
    endpoint: quinn::Endpoint,
    nodes: Arc<Vec<SocketAddr>>,
    seen: Arc<Seen>,
    done: Arc<AtomicU64>,
    epoch: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> DeviceRun {
    let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
    let mut at = rng.random_range(0..NODES);
    let mut conn = None;
    let (mut acked, mut snapshot_at) = (0u64, Some(1u64));
    let mut syncs = Vec::new();
    // Devices do not all start at once.
    let mut pause = Duration::from_millis(rng.random_range(0..3_000));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let req = match snapshot_at {
            Some(v) => snapshot(v, i as u32),
            None => {
                let v = acked + 1;
                let p = PatternSummary {
                    success_rate: 0.5 + 0.04 * (v % 10) as f32,
                    ..pattern(1, i as u32)
                };
                delta(acked, v, vec![p])
            }
        };
        let started = epoch.elapsed();
        let result = attempt(&endpoint, &cfg, &mut conn, nodes[at], &req).await;
        done.fetch_add(1, Ordering::Relaxed);
        syncs.push((started, result.is_ok()));
        match result {
            Ok(a) => {
                acked = a.acked_version;
                snapshot_at = None;
                seen.last_ok_start_ms
                    .store(started.as_millis() as u64 + 1, Ordering::Release);
                pause = Duration::from_millis(rng.random_range(1_500..3_000));
            }
            Err(f) => {
                if let Failure::Refused(SyncError::ResyncRequired { node_version }) = f {
                    snapshot_at = Some(node_version + 1);
                }
                if let Some(c) = conn.take() {
                    c.close(0u32.into(), b"moving on");
                }
                at = (at + rng.random_range(1..NODES)) % NODES;
                pause = Duration::from_millis(100);
            }
        }
    }
    if let Some(c) = conn {
        c.close(0u32.into(), b"done");
    }
    DeviceRun {
        id: format!("tv-{i:05}"),
        acked,
        syncs,
    }
}

async fn cluster_status(admin: SocketAddr) -> Option<serde_json::Value> {
    let (status, body) = try_http(admin, "GET", "/api/v1/cluster", Some(TOKEN), b"").await?;
    (status == 200).then(|| serde_json::from_str(&body).unwrap())
}

fn member_names(c: &serde_json::Value) -> Vec<String> {
    c["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["node"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn global_version(store: &Arc<ScyllaStore>) -> u64 {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.region_globals(&region()).map(|g| g.version))
        .await
        .unwrap()
        .unwrap_or(0)
}

/// Polls `check` every 100 ms until it holds (the time from `from` to
/// then) or `limit` has passed since `from` (the nodes' log tails printed,
/// then a panic naming `what`).
async fn within<F, Fut>(
    nodes: &[NodeProc],
    what: &str,
    from: Instant,
    limit: Duration,
    mut check: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return from.elapsed();
        }
        if from.elapsed() >= limit {
            for n in nodes {
                eprintln!("--- {} log tail:\n{}", n.name, n.log_tail());
            }
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_the_lease_holder_to_kill_9_and_it_rejoins() {
    let Some(cql) = cql_test_target() else {
        return;
    };
    // The keyspace and schema once, here; the nodes then find them.
    let (opts, store) = fresh_test_store(&cql).await.expect("keyspace created");
    let store = Arc::new(store);

    let mut pki = Pki::new();
    for n in 2..=NODES {
        pki.certs
            .issue_node(
                &format!("node-{n}"),
                &["localhost".into(), "127.0.0.1".into()],
            )
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // The node refuses a token file others may read.
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let key_file = dir.path().join("federation-key");
    std::fs::write(&key_file, "000102030405060708090a0b0c0d0e0f\n").unwrap();
    let model = omega_embed::default_model_dir();

    let mut nodes: Vec<NodeProc> = free_ports(NODES)
        .into_iter()
        .enumerate()
        .map(|(i, (quic, admin))| {
            let name = format!("node-{}", i + 1);
            let config = dir.path().join(format!("{name}.toml"));
            let text = node_config(
                &name,
                quic,
                admin,
                &cql,
                &opts.keyspace,
                &token_file,
                &key_file,
            );
            std::fs::write(&config, text).unwrap();
            let certs = dir.path().join(format!("{name}-certs"));
            pki.certs.export_node(&name, &certs).unwrap();
            NodeProc {
                data: dir.path().join(&name),
                certs,
                log: dir.path().join(format!("{name}.log")),
                name,
                quic,
                admin,
                config,
                child: None,
            }
        })
        .collect();
    for n in &mut nodes {
        n.spawn(&model);
    }
    let admins: Vec<SocketAddr> = nodes.iter().map(|n| n.admin).collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let started = Instant::now();
    let all_members = || {
        let (admins, names) = (admins.clone(), names.clone());
        async move {
            for a in &admins {
                match cluster_status(*a).await {
                    Some(c) if member_names(&c) == names => {}
                    _ => return false,
                }
            }
            true
        }
    };
    within(
        &nodes,
        "three members on every node",
        started,
        Duration::from_secs(90),
        &all_members,
    )
    .await;
    eprintln!("three nodes up in {:.1} s", started.elapsed().as_secs_f64());

    // The devices.
    let endpoint = client_endpoint();
    let addrs = Arc::new(nodes.iter().map(|n| n.quic).collect::<Vec<_>>());
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let done = Arc::new(AtomicU64::new(0));
    let seen: Vec<Arc<Seen>> = (0..DEVICES).map(|_| Arc::default()).collect();
    let mut devices = tokio::task::JoinSet::new();
    for (i, s) in seen.iter().enumerate() {
        let cfg = pki.client_config(&pki.device(&format!("tv-{i:05}")));
        devices.spawn(device(
            i,
            cfg,
            endpoint.clone(),
            Arc::clone(&addrs),
            Arc::clone(s),
            Arc::clone(&done),
            epoch,
            stop_rx.clone(),
        ));
    }
    let synced_since = |t: Duration| {
        let ms = t.as_millis() as u64;
        seen.iter()
            .all(|s| s.last_ok_start_ms.load(Ordering::Acquire) > ms)
    };

    // Every device synced once, and the lease holder published.
    let warm = Instant::now();
    let store_has_globals = || {
        let (ok, store) = (synced_since(Duration::ZERO), Arc::clone(&store));
        async move { ok && global_version(&store).await >= 1 }
    };
    let limit = Duration::from_secs(60);
    let what = "every device synced and a global published";
    within(&nodes, what, warm, limit, store_has_globals).await;
    let c = cluster_status(admins[0]).await.expect("cluster status");
    let holder = c["lease"]["holder"]
        .as_str()
        .expect("a lease holder")
        .to_owned();
    let dead = names.iter().position(|n| *n == holder).expect("a member");
    let survivor = admins[(dead + 1) % NODES];
    eprintln!(
        "warm after {:.1} s; killing {holder}, the lease holder",
        warm.elapsed().as_secs_f64()
    );

    // kill -9 the lease holder.
    nodes[dead].kill();
    let killed = Instant::now();
    let killed_at = epoch.elapsed();
    let v0 = global_version(&store).await;

    let taken_over = || {
        let holder = holder.clone();
        async move {
            cluster_status(survivor)
                .await
                .is_some_and(|c| c["lease"]["holder"].as_str().is_some_and(|h| h != holder))
        }
    };
    let published = || {
        let store = Arc::clone(&store);
        async move { global_version(&store).await > v0 }
    };
    let resynced = || {
        let ok = synced_since(killed_at);
        async move { ok }
    };
    // Its heartbeat lapses: the survivors no longer list it.
    let gone = || {
        let holder = holder.clone();
        async move {
            cluster_status(survivor)
                .await
                .is_some_and(|c| !member_names(&c).contains(&holder))
        }
    };
    // Measured side by side. The lease's bound is the design's: within two
    // federation intervals (plus polling); a heartbeat lives three periods.
    let (lease_taken, republished, failover, left) = tokio::join!(
        within(
            &nodes,
            "another node takes the lease",
            killed,
            Duration::from_secs(2 * FEDERATION_SECS + 2),
            taken_over,
        ),
        within(
            &nodes,
            "federation publishes after the kill",
            killed,
            FAILOVER_BOUND,
            published,
        ),
        within(
            &nodes,
            "every device syncs again",
            killed,
            FAILOVER_BOUND,
            resynced,
        ),
        within(
            &nodes,
            "the killed node leaves the members",
            killed,
            Duration::from_secs(4 * HEARTBEAT_SECS + 2),
            gone,
        ),
    );
    // The failover window ends when the last device synced again.
    let window_end = killed_at + failover;
    let done_at_window = done.load(Ordering::Relaxed);

    // Restart: it rejoins, on its own view and on a survivor's.
    let restarted = Instant::now();
    nodes[dead].spawn(&model);
    let what = "the restarted node rejoins";
    let limit = Duration::from_secs(60);
    let rejoined = within(&nodes, what, restarted, limit, &all_members).await;
    // The restarted node read its token from its file and federates on the
    // shared store.
    let body = federate(nodes[dead].admin).await;
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        summary["regions"][0]["global_version"].as_u64().unwrap() > v0,
        "{summary}"
    );

    // Enough syncs after the failover window for the 99 % rule.
    // (Syncs still in flight at the window's end finish after it.)
    let counted = || {
        let n = done.load(Ordering::Relaxed) - done_at_window;
        async move { n >= SYNCS_AFTER_WINDOW + DEVICES as u64 }
    };
    let limit = Duration::from_secs(120);
    within(&nodes, "syncs after the window", killed, limit, counted).await;
    stop_tx.send(true).unwrap();
    let mut runs = Vec::new();
    while let Some(r) = devices.join_next().await {
        runs.push(r.expect("device task"));
    }
    let after: Vec<bool> = runs
        .iter()
        .flat_map(|r| r.syncs.iter())
        .filter(|(t, _)| *t >= window_end)
        .map(|(_, ok)| *ok)
        .collect();
    let ok_after = after.iter().filter(|ok| **ok).count();
    let total: usize = runs.iter().map(|r| r.syncs.len()).sum();

    // Nothing acknowledged is missing: each device's stored version is at
    // least the last one a node acknowledged (at most one more: a sync
    // applied whose answer was lost).
    let acked: Vec<(String, u64)> = runs.iter().map(|r| (r.id.clone(), r.acked)).collect();
    let checked = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            acked
                .into_iter()
                .map(|(id, acked)| {
                    let stored = store
                        .device_state(&DeviceId::new(&id).unwrap())
                        .unwrap()
                        .map_or(0, |i| i.state.pattern_version);
                    (id, acked, stored)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    for (id, acked, stored) in &checked {
        assert!(*acked >= 1, "{id} never synced");
        assert!(
            stored >= acked && *stored <= acked + 1,
            "{id}: acknowledged {acked}, stored {stored}"
        );
    }

    eprintln!(
        "failover: kill -9 of {holder} -> lease taken over in {:.1} s, federation published \
         again in {:.1} s, every device synced again in {:.1} s, the members dropped it in {:.1} s; {} of {} \
         syncs after that succeeded ({:.2} %), {total} syncs in all; {holder} restarted and \
         rejoined in {:.1} s",
        lease_taken.as_secs_f64(),
        republished.as_secs_f64(),
        failover.as_secs_f64(),
        left.as_secs_f64(),
        ok_after,
        after.len(),
        100.0 * ok_after as f64 / after.len().max(1) as f64,
        rejoined.as_secs_f64(),
    );
    assert!(failover <= FAILOVER_BOUND);
    assert!(
        after.len() as u64 >= SYNCS_AFTER_WINDOW,
        "{} syncs",
        after.len()
    );
    assert!(
        ok_after * 100 >= after.len() * 99,
        "{ok_after} of {} syncs succeeded after the window",
        after.len()
    );

    drop(nodes);
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();
}
