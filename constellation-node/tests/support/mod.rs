//! Shared test harness: a certificate directory from omega-certs, an
//! in-process node on loopback, device clients over real QUIC with mTLS, a
//! minimal HTTP/1.1 client for the admin API, and polling with a deadline.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use omega_certs::{CaKind, CertDir, CertPaths, IssuedCert, Validity};
use omega_node::{Config, RunningNode, ServeOptions};
use omega_protocol::codec::{decode_response, encode_request};
use omega_protocol::*;
use omega_transport::quic::{client_config, exchange, TlsIdentity, TrustAnchor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const WAIT: Duration = Duration::from_secs(60);
/// The admin token the in-process nodes take (at least 32 bytes).
pub const TOKEN: &str = "test-admin-token-0123456789abcdef";

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub certs: CertDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut certs = CertDir::init(dir.path().join("certs")).unwrap();
        certs
            .issue_node("node-1", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let pki = Self { dir, certs };
        pki.export();
        pki
    }

    /// The node's certificate directory: what `omega-certs export-node`
    /// gives node-1 (CA certificates, CRLs, its own key; no CA key).
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("node-1")
    }

    /// The node's copy of a file of the CA store's layout.
    pub fn node_paths(&self) -> CertPaths {
        CertPaths::new(self.certs_dir())
    }

    /// Hands node-1 the store's current CRLs and its certificate again (after
    /// a revocation or a renewal), as an operator runs `export-node`.
    pub fn export(&self) {
        self.certs.export_node("node-1", &self.certs_dir()).unwrap();
    }

    /// A device certificate issued in memory (not written to disk).
    pub fn device(&self, id: &str) -> IssuedCert {
        self.certs
            .ca(CaKind::Device)
            .issue_device(id, Validity::days_from_now(30))
            .unwrap()
    }

    pub fn client_config(&self, device: &IssuedCert) -> quinn::ClientConfig {
        let identity =
            TlsIdentity::from_pem(device.cert_pem.as_bytes(), device.key_pem.as_bytes()).unwrap();
        let anchor =
            TrustAnchor::from_pem(self.certs.ca(CaKind::Node).cert_pem().as_bytes(), &[]).unwrap();
        client_config(identity, &anchor).unwrap()
    }
}

/// A configuration for tests: ephemeral ports, no rate limit, a federation
/// timer that does not interfere.
pub fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        rate_limit_interval_secs: 0,
        federation_interval_secs: 3600,
        in_flight: 64,
        shards: 3,
        drain_timeout_secs: 5,
        regions: vec!["eu".into()],
        ..Config::default()
    }
}

pub async fn start(
    pki: &Pki,
    data_dir: &Path,
    config: Config,
    model: Option<PathBuf>,
) -> RunningNode {
    RunningNode::start(ServeOptions {
        data_dir: data_dir.to_owned(),
        model_dir: model,
        certs_dir: pki.certs_dir(),
        config,
        admin_token: Some(TOKEN.into()),
    })
    .await
    .expect("node starts")
}

pub fn client_endpoint() -> quinn::Endpoint {
    quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap()
}

pub async fn connect(
    endpoint: &quinn::Endpoint,
    pki: &Pki,
    device: &IssuedCert,
    addr: SocketAddr,
) -> quinn::Connection {
    tokio::time::timeout(
        WAIT,
        endpoint
            .connect_with(pki.client_config(device), addr, "localhost")
            .unwrap(),
    )
    .await
    .expect("handshake in time")
    .expect("handshake succeeds")
}

pub async fn sync(conn: &quinn::Connection, req: &SyncRequest) -> SyncResponse {
    let body = exchange(conn, &encode_request(req).unwrap(), WAIT)
        .await
        .expect("exchange");
    decode_response(&body).expect("typed response")
}

/// Sends raw bytes on a new stream (finishing it) and reads the answer:
/// `Ok(response)` or `Err(description)` when the node reset the stream.
pub async fn raw(conn: &quinn::Connection, bytes: &[u8]) -> Result<SyncResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    // The node may stop the stream early (oversized frame): ignore write errors.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let body = tokio::time::timeout(
        WAIT,
        omega_transport::read_frame(&mut recv, limits::MAX_RESPONSE_FRAME),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|e| e.to_string())?;
    decode_response(&body).map_err(|e| e.to_string())
}

/// A unit embedding close to a shared direction (ternary quantization maps
/// the small per-device noise to 0, so the patterns cluster).
pub fn embedding(seed: u32) -> Embedding {
    let v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|i| {
            let base = if i < 96 { 1.0 } else { 0.0 };
            base + 0.01 * ((i as f32 * 1.7 + seed as f32).sin())
        })
        .collect();
    Embedding::new(v).unwrap()
}

pub fn pattern(id: u64, seed: u32) -> PatternSummary {
    PatternSummary {
        id: PatternId(id),
        bucket: ContextBucket {
            day_part: DayPart::Evening,
            day_kind: DayKind::Weekday,
        },
        embedding: embedding(seed),
        success_rate: 0.9,
        samples: 12,
    }
}

pub fn region() -> Region {
    Region::new("eu").unwrap()
}

pub fn snapshot(version: u64, seed: u32) -> SyncRequest {
    SyncRequest {
        kind: SyncKind::Snapshot,
        base_version: 0,
        pattern_version: version,
        global_version: 0,
        catalog_version: 0,
        region: region(),
        delta: PatternDelta {
            added: vec![pattern(1, seed)],
            ..PatternDelta::default()
        },
        round: None,
        fleet: Default::default(),
    }
}

pub fn delta(base: u64, version: u64, updated: Vec<PatternSummary>) -> SyncRequest {
    SyncRequest {
        kind: SyncKind::Delta,
        base_version: base,
        pattern_version: version,
        global_version: 0,
        catalog_version: 0,
        region: region(),
        delta: PatternDelta {
            updated,
            ..PatternDelta::default()
        },
        round: None,
        fleet: Default::default(),
    }
}

pub fn accepted(r: SyncResponse) -> SyncAccepted {
    match r {
        Ok(a) => a,
        Err(e) => panic!("sync refused: {e}"),
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    try_http(addr, method, path, token, body)
        .await
        .expect("admin API reachable")
}

/// [`http`], or `None` when nothing accepts the connection (a node not
/// started yet, or killed).
pub async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(body).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http answer in time")
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Triggers a federation run through the admin API (with the token); the
/// run's summary as JSON text.
pub async fn federate(admin: SocketAddr) -> String {
    let (status, body) = http(
        admin,
        "POST",
        "/api/v1/federation/trigger",
        Some(TOKEN),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Asserts that the node closed a connection with application close `code`.
pub fn assert_closed_with(reason: quinn::ConnectionError, code: u32) {
    match reason {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, code.into(), "{c:?}")
        }
        other => panic!("closed for another reason: {other}"),
    }
}

/// Sends SIGHUP to this process (the in-process nodes reload).
pub fn sighup_self() {
    let st = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Polls `check` until it holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
