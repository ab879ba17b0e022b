//! Shared test fixtures: clustered unit vectors, catalog entries, events.
#![allow(dead_code, clippy::unwrap_used)]

use omega_protocol::{
    CatalogEntry, CatalogItem, ContentId, Embedding, ViewingContext, ViewingEvent, EMBEDDING_DIM,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A random unit vector.
pub fn unit(seed: u64) -> Embedding {
    let mut rng = StdRng::seed_from_u64(seed);
    Embedding::new((0..EMBEDDING_DIM).map(|_| gaussian(&mut rng)).collect()).unwrap()
}

/// A unit vector near `centre` (cosine about 0.9 for spread 0.5).
pub fn near(centre: &Embedding, seed: u64, spread: f32) -> Embedding {
    let mut rng = StdRng::seed_from_u64(seed);
    let s = spread / (EMBEDDING_DIM as f32).sqrt();
    Embedding::new(
        centre
            .as_slice()
            .iter()
            .map(|x| x + s * gaussian(&mut rng))
            .collect(),
    )
    .unwrap()
}

pub fn cid(s: &str) -> ContentId {
    ContentId::new(s).unwrap()
}

pub fn entry(id: &str, title: &str, genre: &str, emb: Embedding) -> CatalogEntry {
    CatalogEntry {
        item: CatalogItem {
            id: cid(id),
            title: title.to_string(),
            genres: vec![genre.to_string()],
            year: Some(2000),
            description: String::new(),
        },
        embedding: emb,
    }
}

/// `clusters` × `per` items `c{c}-{i}`, with the cluster centres.
pub fn clustered_catalog(
    clusters: usize,
    per: usize,
    seed: u64,
) -> (Vec<CatalogEntry>, Vec<Embedding>) {
    let centres: Vec<Embedding> = (0..clusters)
        .map(|c| unit(seed * 1000 + c as u64))
        .collect();
    let mut out = Vec::new();
    for (c, centre) in centres.iter().enumerate() {
        for i in 0..per {
            let e = near(centre, seed * 1_000_000 + (c * per + i) as u64, 0.5);
            out.push(entry(
                &format!("c{c}-{i}"),
                &format!("Title {c}/{i}"),
                &format!("g{c}"),
                e,
            ));
        }
    }
    (out, centres)
}

pub fn evening() -> ViewingContext {
    ViewingContext::new(20, 2).unwrap()
}

pub fn event(id: &str, fraction: f32, ts: u64) -> ViewingEvent {
    ViewingEvent::new(cid(id), fraction, ts, evening()).unwrap()
}
