//! The TV's sync over real QUIC with certificates from omega-certs: the real
//! `omega-braind` against a real `omega-node` (in process), and against a test
//! node of our own (omega-transport's server) that decodes every request the
//! TV sent and answers as a malicious or refusing node would. Every wait polls
//! with a deadline; nothing sleeps to synchronize.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omega_certs::{CaKind, CertDir, SerialHex, Validity};
use omega_protocol::codec::{decode_request, encode_response};
use omega_protocol::{SyncAccepted, SyncError, SyncKind, SyncRequest, SyncResponse};
use omega_transport::quic::{
    accept_exchange, peer_chain, peer_device_id, respond, server_config, TlsIdentity, TrustAnchor,
};
use serde_json::{json, Value};
use support::{model_dir, Daemon, ADMIN_TOKEN, DEADLINE};

/// Runs blocking socket calls without stalling the in-process nodes.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

struct Pki {
    _dir: tempfile::TempDir,
    certs: CertDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut certs = CertDir::init(dir.path().join("certs")).unwrap();
        certs
            .issue_node("node-1", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        certs.issue_device("tv-1").unwrap();
        let pki = Pki { _dir: dir, certs };
        pki.export();
        pki
    }

    /// node-1's certificate directory (`omega-certs export-node`: no CA keys).
    fn node_certs(&self) -> std::path::PathBuf {
        self._dir.path().join("node-1")
    }

    /// Hands node-1 the store's current CRLs and certificate again.
    fn export(&self) {
        self.certs
            .export_node("node-1", &self.node_certs())
            .unwrap();
    }

    /// The daemon's `[sync]` section for `nodes` plus `extra` lines.
    fn sync_section(&self, nodes: &[SocketAddr], extra: &str) -> String {
        let nodes: Vec<String> = nodes.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[sync]\nnodes = [{}]\ndevice_cert = {:?}\ndevice_key = {:?}\nnode_ca = {:?}\ndevice_ca = {:?}\nregion = \"eu-west\"\n{extra}",
            nodes.join(", "),
            self.certs.device_cert_path("tv-1"),
            self.certs.device_key_path("tv-1"),
            self.certs.ca_cert_path(CaKind::Node),
            self.certs.ca_cert_path(CaKind::Device),
        )
    }
}

/// A node of the test's own: decodes every request and answers with
/// `answer`; keeps what it received, with the arrival time.
struct TestNode {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<(Instant, SyncRequest)>>>,
    /// Each connection's device id and certificate serial, in order.
    peers: Arc<Mutex<Vec<(String, SerialHex)>>>,
    _endpoint: quinn::Endpoint,
}

type Answer = Arc<dyn Fn(&SyncRequest, usize) -> SyncResponse + Send + Sync>;

impl TestNode {
    fn start(pki: &Pki, answer: Answer) -> TestNode {
        let dir = pki.certs.dir();
        let identity =
            TlsIdentity::from_files(&dir.join("nodes/node-1.crt"), &dir.join("nodes/node-1.key"))
                .unwrap();
        let anchor =
            TrustAnchor::from_files(&pki.certs.ca_cert_path(CaKind::Device), None).unwrap();
        let (cfg, _) = server_config(identity, &anchor).unwrap();
        let endpoint = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let log: Arc<Mutex<Vec<(Instant, SyncRequest)>>> = Arc::default();
        let peers: Arc<Mutex<Vec<(String, SerialHex)>>> = Arc::default();
        let (e, l, p) = (endpoint.clone(), log.clone(), peers.clone());
        tokio::spawn(async move {
            while let Some(incoming) = e.accept().await {
                let (l, p, answer) = (l.clone(), p.clone(), answer.clone());
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let id = peer_device_id(&conn).expect("a device id");
                    let leaf = peer_chain(&conn).expect("a chain").remove(0);
                    let serial = match omega_certs::inspect_pem(leaf.as_ref())
                        .expect("a certificate")
                        .remove(0)
                    {
                        omega_certs::Inspected::Certificate(c) => c.serial,
                        other => panic!("{other:?}"),
                    };
                    p.lock().unwrap().push((id.as_str().to_owned(), serial));
                    while let Ok((mut send, body)) = accept_exchange(&conn).await {
                        let req = decode_request(&body.expect("a whole frame"))
                            .expect("the TV sends valid requests");
                        let n = {
                            let mut l = l.lock().unwrap();
                            l.push((Instant::now(), req.clone()));
                            l.len() - 1
                        };
                        let frame = encode_response(&answer(&req, n)).unwrap();
                        let _ = respond(&mut send, &frame).await;
                    }
                });
            }
        });
        TestNode {
            addr,
            log,
            peers,
            _endpoint: endpoint,
        }
    }

    fn peers(&self) -> Vec<(String, SerialHex)> {
        self.peers.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<(Instant, SyncRequest)> {
        self.log.lock().unwrap().clone()
    }

    /// Every request carried no pattern data (the upload is empty until the
    /// private contribution lands) and no version that counts views.
    fn assert_nothing_uploaded(&self) {
        for (_, r) in self.requests() {
            assert!(r.delta.is_empty(), "the TV uploaded patterns: {r:?}");
            assert_eq!(r.pattern_version, 0, "{r:?}");
        }
    }
}

fn accept(next_sync_secs: u32) -> SyncResponse {
    Ok(SyncAccepted {
        next_sync_secs,
        ..SyncAccepted::default()
    })
}

fn start_daemon(dir: &Path, config: &str) -> Daemon {
    blocking(|| Daemon::start(dir, config))
}

fn ok(d: &Daemon, req: Value) -> Value {
    blocking(|| d.ok(req))
}

fn stats(d: &Daemon) -> Value {
    ok(d, json!({"id": 1, "op": "stats"}))
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (a) + (b): the TV's first configured address is dead (a UDP socket that
/// never answers); it moves on to a real node, syncs, pages the node's whole
/// catalog into its store and index, and reports it in `stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tv_syncs_with_a_real_node_past_a_dead_address() {
    let model = model_dir();
    assert!(
        model.join("model.safetensors").is_file(),
        "no model at {model:?}"
    );
    let pki = Pki::new();
    let node_dir = tempfile::tempdir().unwrap();
    let node = omega_node::RunningNode::start(omega_node::ServeOptions {
        data_dir: node_dir.path().to_owned(),
        model_dir: Some(model),
        certs_dir: pki.node_certs(),
        config: omega_node::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            rate_limit_interval_secs: 0,
            catalog_page_items: 2,
            ..omega_node::Config::default()
        },
        admin_token: Some(ADMIN_TOKEN.into()),
    })
    .await
    .expect("node starts");
    let items: String = (1..=5)
        .map(|i| {
            format!(
                "{{\"id\":\"film-{i}\",\"title\":\"Film number {i}\",\"genres\":[\"Drama\"]}}\n"
            )
        })
        .collect();
    let (status, body) = admin_post(node.admin_addr(), "/api/v1/content/import", &items).await;
    assert_eq!(status, 200, "{body}");

    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = pki.sync_section(
        &[dead.local_addr().unwrap(), node.quic_addr()],
        "connect_timeout_secs = 1\ninterval_min_secs = 3000\ninterval_max_secs = 3000\n",
    );
    let d = start_daemon(dir.path(), &cfg);
    let st = stats(&d);
    assert_eq!(st["sync"]["enabled"], json!(true));
    // The daily privacy budget, nothing spent: the TV uploads no viewing data.
    assert_eq!(st["privacy"]["budget"]["epsilon_budget"], json!(4.0));
    assert_eq!(st["privacy"]["budget"]["epsilon_spent"], json!(0.0));
    assert_eq!(st["privacy"]["pending"], json!(false));

    let r = ok(&d, json!({"id": 2, "op": "sync.now"}));
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(
        r["node"],
        json!(node.quic_addr().to_string()),
        "moved past the dead address"
    );
    assert!(r["bytes_up"].as_u64().unwrap() > 0);
    // 5 items, 2 per page: the schedule pages the rest right away.
    eventually("the node's catalog on the TV", || {
        stats(&d)["catalog_items"] == json!(5)
    })
    .await;
    let s = stats(&d);
    assert_eq!(s["index_items"], json!(5));
    let sync = &s["sync"];
    assert!(sync["syncs_ok"].as_u64().unwrap() >= 3, "{sync}");
    assert!(sync["bytes_up"].as_u64().unwrap() > 0, "{sync}");
    assert!(
        sync["bytes_down"].as_u64().unwrap() > 5 * 388,
        "five int8 embeddings came down: {sync}"
    );
    assert!(sync["last_success_ms"].as_u64().unwrap() > 0, "{sync}");
    assert!(sync["next_attempt_ms"].as_u64().unwrap() > sync["last_success_ms"].as_u64().unwrap());
    // The live connection is reused: no new handshake with the dead address.
    let t = Instant::now();
    let r = ok(&d, json!({"id": 3, "op": "sync.now"}));
    assert_eq!(r["outcome"], "ok", "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "no second connect timeout"
    );
    let recs = ok(&d, json!({"id": 4, "op": "recommend", "k": 5}));
    assert_eq!(recs["items"].as_array().unwrap().len(), 5, "{recs}");
    node.shutdown().await;
}

/// A TV given no address, only a DNS name (`localhost:PORT`: the resolver's
/// loopback addresses, one of which may be ::1 where nothing listens), finds
/// the real node behind it and syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tv_syncs_with_a_node_it_knows_by_a_dns_name() {
    let pki = Pki::new();
    let node_dir = tempfile::tempdir().unwrap();
    let node = omega_node::RunningNode::start(omega_node::ServeOptions {
        data_dir: node_dir.path().to_owned(),
        model_dir: None,
        certs_dir: pki.node_certs(),
        config: omega_node::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            rate_limit_interval_secs: 0,
            ..omega_node::Config::default()
        },
        admin_token: None,
    })
    .await
    .expect("node starts");
    let dir = tempfile::tempdir().unwrap();
    let dns = format!("localhost:{}", node.quic_addr().port());
    let cfg = pki.sync_section(
        &[],
        &format!(
            "dns = \"{dns}\"\nconnect_timeout_secs = 1\ninterval_min_secs = 3000\ninterval_max_secs = 3000\n"
        ),
    );
    let d = start_daemon(dir.path(), &cfg);
    assert_eq!(stats(&d)["sync"]["enabled"], json!(true));
    let r = ok(&d, json!({"id": 2, "op": "sync.now"}));
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["node"], json!(node.quic_addr().to_string()), "{r}");
    assert_eq!(stats(&d)["sync"]["syncs_ok"], json!(1));
    node.shutdown().await;
}

async fn admin_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, text)
}

/// (c): a node answering `ResyncRequired` to every delta and
/// `next_sync_secs = 0` to every snapshot cannot make the TV sync more often
/// than its minimum interval (1 s here) nor snapshot more than its daily cap
/// (2 here); nothing the TV sent carries a pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malicious_node_cannot_speed_up_the_tv() {
    let pki = Pki::new();
    let node = TestNode::start(
        &pki,
        Arc::new(|r: &SyncRequest, _| match r.kind {
            SyncKind::Delta => Err(SyncError::ResyncRequired { node_version: 0 }),
            _ => accept(0),
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = pki.sync_section(
        &[node.addr],
        "min_interval_secs = 1\ninterval_min_secs = 1\ninterval_max_secs = 2\nmax_interval_secs = 2\nmax_snapshots_per_day = 2\n",
    );
    let d = start_daemon(dir.path(), &cfg);
    let window = Duration::from_secs(8);
    let start = Instant::now();
    eventually("the measured window", || start.elapsed() >= window).await;
    let reqs = node.requests();
    let in_window: Vec<&(Instant, SyncRequest)> =
        reqs.iter().filter(|(t, _)| *t <= start + window).collect();
    assert!(
        in_window.len() >= 4,
        "the TV still syncs: {}",
        in_window.len()
    );
    assert!(
        in_window.len() <= 9,
        "at most one sync per second (and the first): {}",
        in_window.len()
    );
    for w in reqs.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= Duration::from_millis(950), "two syncs {gap:?} apart");
    }
    let snapshots = reqs
        .iter()
        .filter(|(_, r)| r.kind == SyncKind::Snapshot)
        .count();
    assert_eq!(snapshots, 2, "the daily cap");
    node.assert_nothing_uploaded();
    let sync = stats(&d)["sync"].clone();
    assert_eq!(sync["snapshots_today"], json!(2), "{sync}");
    assert!(sync["snapshots_refused"].as_u64().unwrap() >= 1, "{sync}");
    assert_eq!(sync["last_error"]["kind"], "resync_required", "{sync}");
}

/// (d): forget queues a tombstone: the next syncs send `Forget` (before
/// anything else) until a node accepts it, across a kill -9; then deltas
/// again. With a viewing history on the TV, no request carries a pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_is_sent_until_a_node_accepts_it() {
    let pki = Pki::new();
    let accept_forget = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = accept_forget.clone();
    let node = TestNode::start(
        &pki,
        Arc::new(move |r: &SyncRequest, _| match r.kind {
            SyncKind::Forget if !a.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(SyncError::Internal {
                    reason: "not now".into(),
                })
            }
            _ => accept(3000),
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = pki.sync_section(
        &[node.addr],
        "interval_min_secs = 3000\ninterval_max_secs = 3000\n",
    );
    let mut d = start_daemon(dir.path(), &cfg);

    // A history that could leak.
    let items: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("m{i}"), "title": format!("Space documentary {i}"), "genres": ["Documentary"]}))
        .collect();
    ok(&d, json!({"id": 1, "op": "catalog.upsert", "items": items}));
    for i in 0..6 {
        ok(
            &d,
            json!({"id": 2, "op": "observe", "content_id": format!("m{i}"), "fraction": 0.95, "hour": 20, "weekday": 2}),
        );
    }
    assert!(stats(&d)["local_patterns"].as_u64().unwrap() > 0);
    let r = ok(&d, json!({"id": 3, "op": "sync.now"}));
    assert_eq!(
        (r["outcome"].clone(), r["kind"].clone()),
        (json!("ok"), json!("delta")),
        "{r}"
    );

    ok(&d, json!({"id": 4, "op": "forget"}));
    assert_eq!(stats(&d)["forget_pending"], json!(true));
    let r = ok(&d, json!({"id": 5, "op": "sync.now"}));
    assert_eq!(
        (r["outcome"].clone(), r["kind"].clone()),
        (json!("refused"), json!("forget")),
        "{r}"
    );

    // The flag survives kill -9.
    blocking(|| d.kill9());
    let d = start_daemon(dir.path(), &cfg);
    assert_eq!(stats(&d)["forget_pending"], json!(true));
    let r = ok(&d, json!({"id": 6, "op": "sync.now"}));
    assert_eq!(r["kind"], "forget", "repeated: {r}");
    accept_forget.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = ok(&d, json!({"id": 7, "op": "sync.now"}));
    assert_eq!(
        (r["outcome"].clone(), r["kind"].clone()),
        (json!("ok"), json!("forget")),
        "{r}"
    );
    assert_eq!(r["forget_acknowledged"], json!(true));
    assert_eq!(stats(&d)["forget_pending"], json!(false));
    let r = ok(&d, json!({"id": 8, "op": "sync.now"}));
    assert_eq!(r["kind"], "delta", "{r}");

    let kinds: Vec<SyncKind> = node.requests().iter().map(|(_, r)| r.kind).collect();
    let first_forget = kinds.iter().position(|k| *k == SyncKind::Forget).unwrap();
    let last_forget = kinds.iter().rposition(|k| *k == SyncKind::Forget).unwrap();
    assert!(
        kinds[first_forget..=last_forget]
            .iter()
            .all(|k| *k == SyncKind::Forget),
        "{kinds:?}"
    );
    assert!(
        last_forget - first_forget >= 2,
        "sent until accepted: {kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&SyncKind::Delta));
    node.assert_nothing_uploaded();
}

/// A test node accepting everything and a TV that syncs with it only on
/// `sync.now` (its own interval is long).
fn tv_syncing_only_when_asked(pki: &Pki) -> (TestNode, tempfile::TempDir, Daemon) {
    let node = TestNode::start(pki, Arc::new(|_, _| accept(3000)));
    let dir = tempfile::tempdir().unwrap();
    let cfg = pki.sync_section(
        &[node.addr],
        "interval_min_secs = 3000\ninterval_max_secs = 3000\n",
    );
    let d = start_daemon(dir.path(), &cfg);
    (node, dir, d)
}

/// Issue 9, item 1 (TV side): `node-ca.crl` beside `node-ca.crt` (as
/// `omega-certs init` writes it) is required. An expired or missing one stops
/// every attempt before a connection is made; a CRL revoking the node fails
/// the handshake; a fresh one lets the TV sync again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tv_checks_the_node_against_the_node_crl_and_needs_a_fresh_one() {
    let mut pki = Pki::new();
    let (node, _dir, d) = tv_syncing_only_when_asked(&pki);
    let now = |id: u64| ok(&d, json!({"id": id, "op": "sync.now"}));
    let r = now(2);
    assert_eq!(r["outcome"], "ok", "{r}");
    let crl = pki.certs.crl_path(CaKind::Node);
    let fresh = std::fs::read(&crl).unwrap();

    // Signed 31 days ago: past its nextUpdate.
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(31);
    let expired = pki.certs.ca(CaKind::Node).crl(&[], old).unwrap();
    std::fs::write(&crl, expired).unwrap();
    let sent = node.requests().len();
    let r = now(3);
    assert_eq!(r["outcome"], "local", "{r}");
    assert!(r["message"].as_str().unwrap().contains("expired"), "{r}");
    assert_eq!(r["bytes_up"], json!(0), "nothing sent: {r}");
    // Missing: refused alike.
    std::fs::remove_file(&crl).unwrap();
    let r = now(4);
    assert_eq!(r["outcome"], "local", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("node-ca.crl"),
        "{r}"
    );
    assert_eq!(node.requests().len(), sent, "no request reached the node");

    // A fresh CRL revoking the node's certificate: the handshake fails.
    pki.certs.revoke("node-1").unwrap();
    let r = now(5);
    assert_eq!(r["outcome"], "unreachable", "{r}");
    assert!(r["message"].as_str().unwrap().contains("Revoked"), "{r}");
    assert_eq!(node.requests().len(), sent, "no request reached the node");

    // The fresh list from before (node not revoked): syncing again.
    std::fs::write(&crl, fresh).unwrap();
    let r = now(6);
    assert_eq!(r["outcome"], "ok", "{r}");
    assert!(node.requests().len() > sent);
}

/// Issue 9, item 2 (TV side): `omega-certs renew-device` replaces the TV's
/// certificate and key; the next sync uses them on a new connection, and the
/// node sees the same device id with the new serial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tv_syncs_with_its_renewed_certificate_on_the_next_sync() {
    let mut pki = Pki::new();
    let (node, _dir, d) = tv_syncing_only_when_asked(&pki);
    let r = ok(&d, json!({"id": 2, "op": "sync.now"}));
    assert_eq!(r["outcome"], "ok", "{r}");
    let first = pki.certs.find("tv-1").unwrap().serial.clone();
    assert_eq!(node.peers(), vec![("tv-1".to_owned(), first.clone())]);

    let renewed = pki
        .certs
        .renew(CaKind::Device, "tv-1", Validity::days_from_now(30))
        .unwrap();
    assert_ne!(renewed.serial, first);
    let r = ok(&d, json!({"id": 3, "op": "sync.now"}));
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(
        node.peers(),
        vec![
            ("tv-1".to_owned(), first),
            ("tv-1".to_owned(), renewed.serial)
        ],
        "a new connection with the renewed certificate, same device id"
    );
    assert_eq!(node.requests().len(), 2);
}
