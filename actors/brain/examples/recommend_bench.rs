//! `cargo run --release -p omega-brain --example recommend_bench`
//!
//! Builds 10,000 clustered random items, 10,000 local patterns (spread over the
//! 8 context buckets), 500 global patterns, 100 trends and a full episode ring,
//! then times `recommend` (k = 10) for f32 and i8 indexes and prints p50/p99 in
//! µs as JSON. Random vectors are a worst case for HNSW; real MiniLM embeddings
//! cluster more.

use std::time::Instant;

use omega_brain::{CatalogIndex, IndexConfig, IndexScalar};
use omega_brain_core::patterns::LocalPattern;
use omega_brain_core::recommender::{recommend, RecommendRequest, RecommenderConfig};
use omega_brain_core::state::{BrainState, Episode};
use omega_protocol::{
    CatalogEntry, CatalogItem, ContentId, ContextBucket, Embedding, GlobalPattern, PatternId,
    TrendSignal, ViewingContext, ViewingEvent, EMBEDDING_DIM,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ITEMS: usize = 10_000;
const PATTERNS: u64 = 10_000;
const CLUSTERS: usize = 200;

fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn unit_near(
    rng: &mut StdRng,
    centre: Option<&Embedding>,
    spread: f32,
) -> Result<Embedding, Box<dyn std::error::Error>> {
    let s = spread / (EMBEDDING_DIM as f32).sqrt();
    let v: Vec<f32> = match centre {
        Some(c) => c.as_slice().iter().map(|x| x + s * gaussian(rng)).collect(),
        None => (0..EMBEDDING_DIM).map(|_| gaussian(rng)).collect(),
    };
    Ok(Embedding::new(v)?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = StdRng::seed_from_u64(7);
    let centres: Vec<Embedding> = (0..CLUSTERS)
        .map(|_| unit_near(&mut rng, None, 0.0))
        .collect::<Result<_, _>>()?;
    let mut st = BrainState::default();
    for i in 0..ITEMS {
        let c = &centres[i % CLUSTERS];
        st.catalog.upsert(&CatalogEntry {
            item: CatalogItem {
                id: ContentId::new(format!("item:{i}"))?,
                title: format!("Item {i}"),
                genres: vec![format!("g{}", i % 20)],
                year: Some(2000),
                description: String::new(),
            },
            embedding: unit_near(&mut rng, Some(c), 0.6)?,
        });
    }
    for p in 0..PATTERNS {
        let bucket = ContextBucket::from_index((p % 8) as u8)?;
        let c = rng.random_range(0..CLUSTERS);
        let e = unit_near(&mut rng, Some(&centres[c]), 0.4)?;
        let mut lp = LocalPattern::new(PatternId(p), bucket, &e, p, p + 1);
        lp.views = rng.random_range(1..50);
        lp.successes = rng.random_range(0..=lp.views);
        lp.items = (0..rng.random_range(1..10u64)).collect();
        st.patterns.insert(&lp);
    }
    for g in 0..500u64 {
        let c = rng.random_range(0..CLUSTERS);
        let embedding = unit_near(&mut rng, Some(&centres[c]), 0.4)?;
        st.globals.insert(
            g,
            GlobalPattern {
                id: g,
                bucket: ContextBucket::from_index((g % 8) as u8)?,
                embedding,
                success_rate: rng.random_range(0.3..1.0),
                support: rng.random_range(5..500),
                samples: 1000,
            },
        );
    }
    for t in 0..100usize {
        st.trends.push(TrendSignal {
            content_id: ContentId::new(format!("item:{}", t * 97))?,
            bucket: ContextBucket::from_index((t % 8) as u8)?,
            score: rng.random_range(0.1..1.0),
        });
    }
    for s in 0..1000u64 {
        let ev = ViewingEvent::new(
            ContentId::new(format!("item:{}", rng.random_range(0..ITEMS)))?,
            rng.random_range(0.0..1.0),
            s,
            ViewingContext::new(rng.random_range(0..24), rng.random_range(0..7))?,
        )?;
        st.push_episode(Episode { seq: s, event: ev });
    }

    let mut report = Vec::new();
    for scalar in [IndexScalar::F32, IndexScalar::I8] {
        let t0 = Instant::now();
        let idx = CatalogIndex::build(
            &st.catalog,
            IndexConfig {
                scalar,
                ..IndexConfig::default()
            },
        )?;
        let build_ms = t0.elapsed().as_secs_f64() * 1e3;
        let cfg = RecommenderConfig::default();
        let mut times = Vec::new();
        for i in 0..3000usize {
            let req = RecommendRequest {
                recent: vec![ContentId::new(format!("item:{}", (i * 31) % ITEMS))?],
                ..RecommendRequest::new(ViewingContext::new((i % 24) as u8, (i % 7) as u8)?, 10)
            };
            let mood = (i % 5 == 0).then(|| &centres[i % CLUSTERS]);
            let t = Instant::now();
            let out = recommend(&st, &idx, &req, mood, &cfg)?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            if i >= 200 {
                times.push(us);
            }
            assert!(!out.is_empty());
        }
        times.sort_by(f64::total_cmp);
        report.push(format!(
            "{{\"scalar\":\"{scalar:?}\",\"items\":{ITEMS},\"patterns\":{PATTERNS},\"k\":10,\"index_build_ms\":{build_ms:.0},\"recommend_p50_us\":{:.0},\"recommend_p99_us\":{:.0},\"recommend_max_us\":{:.0}}}",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0)
        ));
    }
    println!("[{}]", report.join(","));
    Ok(())
}
