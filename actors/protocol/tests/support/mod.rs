//! Shared test data: real MiniLM vectors from ../shared/reference and sample messages.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use omega_protocol::*;
use std::path::PathBuf;

/// `../shared` beside the repository (or `OMEGA_SHARED_DIR`).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("OMEGA_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")))
}

/// The 21 reference embeddings (all-MiniLM-L6-v2, independent float64 implementation).
pub fn reference_embeddings() -> Vec<(String, Embedding)> {
    let path = shared_dir().join("reference/minilm_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference json");
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let e: Vec<f32> = c["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("float") as f32)
                .collect();
            (
                c["text"].as_str().expect("text").to_owned(),
                Embedding::new(e).expect("valid reference embedding"),
            )
        })
        .collect()
}

/// Pattern-like vectors: the normalized mean of every 3-subset of the references.
pub fn pattern_embeddings() -> Vec<Embedding> {
    let r: Vec<Embedding> = reference_embeddings().into_iter().map(|(_, e)| e).collect();
    let mut out = Vec::new();
    for i in 0..r.len() {
        for j in i + 1..r.len() {
            for k in j + 1..r.len() {
                out.extend(Embedding::weighted_mean([
                    (&r[i], 1.0),
                    (&r[j], 1.0),
                    (&r[k], 1.0),
                ]));
            }
        }
    }
    out
}

pub fn bucket(i: usize) -> ContextBucket {
    ContextBucket::from_index((i % 8) as u8).expect("bucket")
}

/// A delta-sync request with `n` updated patterns built from real embeddings,
/// with realistic ids and counts (a TV some months in).
pub fn request_with_patterns(n: usize) -> SyncRequest {
    let p = pattern_embeddings();
    let patterns = (0..n)
        .map(|i| PatternSummary {
            id: PatternId(1000 + i as u64 * 37),
            bucket: bucket(i),
            embedding: p[i * 7 % p.len()].clone(),
            success_rate: 0.83,
            samples: 120 + i as u32,
        })
        .collect();
    SyncRequest {
        kind: SyncKind::Delta,
        base_version: 41_234,
        pattern_version: 41_254,
        global_version: 1_234_567,
        catalog_version: 98_765,
        region: Region::new("eu-west").unwrap(),
        delta: PatternDelta {
            added: Vec::new(),
            updated: patterns,
            removed: Vec::new(),
        },
        round: None,
        fleet: Default::default(),
    }
}

/// A response with `g` global patterns and `t` trend signals, no catalog page.
pub fn response_with(g: usize, t: usize) -> SyncResponse {
    let p = pattern_embeddings();
    Ok(SyncAccepted {
        acked_version: 41_254,
        global_version: 1_234_599,
        global_reset: false,
        global_patterns: (0..g)
            .map(|i| GlobalPattern {
                id: 10_000 + i as u64,
                bucket: bucket(i),
                embedding: p[i * 11 % p.len()].clone(),
                success_rate: 0.77,
                support: 4_000 + i as u32,
                samples: 250_000 + i as u32,
            })
            .collect(),
        global_removed: Vec::new(),
        trends: (0..t)
            .map(|i| TrendSignal {
                content_id: ContentId::new(format!("ml100k:{}", 1000 + i)).unwrap(),
                bucket: bucket(i),
                score: 0.5,
            })
            .collect(),
        catalog: None,
        next_sync_secs: 600,
        round: None,
        fleet: None,
    })
}
