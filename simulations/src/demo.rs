//! `omega-sim demo`: the README's main job.
//!
//! Today it walks through the foundation end to end with real parts:
//! certificates from a fresh CA, real MiniLM embeddings of MovieLens titles,
//! a quantized 20-pattern delta in a real frame, and a sync exchange over QUIC
//! with mutual TLS on loopback, including a revoked TV refused at the
//! handshake. The sync is answered by a real `omega-node` (its library,
//! `RunningNode`, started in process on loopback with the demo's certificates
//! and an embedded redb store); `omega-braind` joins when the sync issue lands.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omega_certs::{CaKind, CertDir};
use omega_constellation::store::PatternStore;
use omega_protocol::codec::{decode_response, encode_request};
use omega_protocol::*;
use omega_transport::quic::{self, HandshakeFailure, TlsIdentity, TrustAnchor};

use crate::movielens;

/// Options of `omega-sim demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// all-MiniLM-L6-v2 directory.
    pub model_dir: PathBuf,
    /// MovieLens directory (u.item or movies.csv).
    pub dataset: PathBuf,
    /// Where certificates go; a temporary directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// Titles to embed.
    pub titles: usize,
}

const WAIT: Duration = Duration::from_secs(10);

/// Runs the demo, printing as it goes.
pub async fn run(opts: DemoOptions) -> Result<()> {
    let tmp;
    let work = match &opts.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };

    println!("== 1. certificates (omega-certs, ECDSA P-256)");
    let certs_dir = work.join("certs");
    let mut certs = CertDir::init(&certs_dir)
        .with_context(|| format!("omega-certs init in {}", certs_dir.display()))?;
    certs.issue_node(
        "node-1",
        &["localhost".to_string(), "127.0.0.1".to_string()],
    )?;
    certs.issue_device("tv-living-room")?;
    certs.issue_device("tv-stolen")?;
    certs.revoke("tv-stolen")?;
    println!(
        "   device CA, node CA, node-1, tv-living-room, tv-stolen (revoked) in {}",
        certs_dir.display()
    );

    println!("== 2. embeddings (all-MiniLM-L6-v2 on candle)");
    let t = Instant::now();
    let embedder =
        omega_embed::Embedder::load(&opts.model_dir, omega_embed::EmbedderOptions::default())
            .with_context(|| {
                format!(
                    "loading the model from {} (run scripts/fetch-model.sh)",
                    opts.model_dir.display()
                )
            })?;
    println!(
        "   model loaded in {} ms ({})",
        t.elapsed().as_millis(),
        embedder.engine()
    );
    let movies = movielens::read_movies(&opts.dataset)
        .with_context(|| format!("reading MovieLens items from {}", opts.dataset.display()))?;
    let titles: Vec<String> = movies
        .iter()
        .take(opts.titles.max(3))
        .map(|m| format!("{}. {}", m.title, m.genres.join(", ")))
        .collect();
    if titles.len() < 3 {
        anyhow::bail!(
            "{} has {} titles; the demo needs at least 3 (patterns aggregate 3 titles)",
            opts.dataset.display(),
            titles.len()
        );
    }
    let t = Instant::now();
    let mut vectors = Vec::with_capacity(titles.len());
    for chunk in titles.chunks(32) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for v in embedder.embed_batch(&refs)? {
            vectors.push(Embedding::new(v.to_vec())?);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "   {} titles embedded in {:.2} s ({:.0} texts/s)",
        vectors.len(),
        secs,
        vectors.len() as f64 / secs
    );
    let (a, b) = (&vectors[0], &vectors[1]);
    println!(
        "   cosine({:?}, {:?}) = {:.3}",
        titles[0],
        titles[1],
        a.cosine(b)
    );

    println!(
        "== 3. a pattern delta (the wire format only: a real TV uploads no patterns, they leak what was watched; the private upload replaces them)"
    );
    let patterns: Vec<PatternSummary> = (0..20)
        .map(|i| {
            let trio: Vec<(&Embedding, f32)> = (0..3)
                .map(|j| (&vectors[(i * 3 + j) % vectors.len()], 1.0))
                .collect();
            Ok(PatternSummary {
                id: PatternId(i as u64 + 1),
                bucket: ContextBucket::from_index((i % 8) as u8)?,
                embedding: Embedding::weighted_mean(trio).context("degenerate pattern")?,
                success_rate: 0.8,
                samples: 3,
            })
        })
        .collect::<Result<_>>()?;
    let cos: f32 = patterns
        .iter()
        .map(|p| {
            p.embedding.cosine(
                &p.embedding
                    .to_ternary()
                    .decode()
                    .unwrap_or_else(|_| p.embedding.clone()),
            )
        })
        .sum::<f32>()
        / patterns.len() as f32;
    let request = SyncRequest {
        kind: SyncKind::Snapshot,
        base_version: 0,
        pattern_version: 20,
        global_version: 0,
        catalog_version: 0,
        region: Region::new("eu-west")?,
        delta: PatternDelta {
            added: patterns,
            ..Default::default()
        },
        round: None,
        fleet: Default::default(),
    };
    let frame = encode_request(&request)?;
    println!(
        "   20 patterns -> {} bytes on the wire (budget 2048); ternary quantization cosine {:.3}",
        frame.len(),
        cos
    );

    println!("== 4. sync with omega-node over QUIC with mutual TLS (loopback)");
    let node = omega_node::RunningNode::start(omega_node::ServeOptions {
        data_dir: work.join("node"),
        model_dir: None,
        certs_dir: certs_dir.clone(),
        config: omega_node::Config {
            listen: "127.0.0.1:0".parse()?,
            admin: "127.0.0.1:0".parse()?,
            ..omega_node::Config::default()
        },
        admin_token: None,
    })
    .await
    .context("starting omega-node")?;
    let addr = node.quic_addr();
    let tv = client(&certs, "tv-living-room")?;
    let t = Instant::now();
    let answer = sync(tv, addr, &frame).await?;
    let stored = node
        .node()
        .store()
        .device_state(&DeviceId::new("tv-living-room")?)?
        .map_or(0, |d| d.pattern_count);
    println!(
        "   tv-living-room: {:?} in {:.1} ms; the node stored {stored} patterns under the id in its certificate",
        answer.map(|a| format!("accepted, acked version {}", a.acked_version)),
        t.elapsed().as_secs_f64() * 1e3,
    );
    let stolen = client(&certs, "tv-stolen")?;
    match sync(stolen, addr, &frame).await {
        Ok(r) => anyhow::bail!("a revoked device was served: {r:?}"),
        Err(e) => println!(
            "   tv-stolen: refused at the handshake ({:?})",
            handshake_reason(&e)
        ),
    }
    node.shutdown().await;
    println!("== done: certificates, model, codec and mTLS QUIC work end to end");
    Ok(())
}

fn handshake_reason(e: &anyhow::Error) -> HandshakeFailure {
    e.downcast_ref::<quic::ExchangeError>()
        .map(quic::ExchangeError::handshake_failure)
        .or_else(|| {
            e.downcast_ref::<quinn::ConnectionError>()
                .map(HandshakeFailure::of)
        })
        .unwrap_or(HandshakeFailure::NotTls)
}

fn client(certs: &CertDir, id: &str) -> Result<quinn::ClientConfig> {
    let identity =
        TlsIdentity::from_files(&certs.device_cert_path(id), &certs.device_key_path(id))?;
    let anchor = TrustAnchor::from_files(&certs.ca_cert_path(CaKind::Node), None)?;
    Ok(quic::client_config(identity, &anchor)?)
}

async fn sync(
    cfg: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    frame: &[u8],
) -> Result<SyncResponse> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(cfg);
    let conn = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost")?)
        .await
        .context("handshake timed out")??;
    let body = quic::exchange(&conn, frame, WAIT).await?;
    conn.close(0u32.into(), b"done");
    Ok(decode_response(&body)?)
}
