//! Shared test fixtures: clustered unit vectors, catalog entries, events, a
//! store-less device and exact candidate search. omega-brain's tests include
//! this file too (`#[path]`).
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

/// Exact nearest neighbours over the catalog (the tests' stand-in for the
/// usearch index, which lives in omega-brain).
pub struct ExactSearch<'a>(pub &'a omega_brain_core::Catalog);

impl omega_brain_core::CandidateSearch for ExactSearch<'_> {
    fn nearest(
        &self,
        query: &[f32],
        count: usize,
    ) -> Result<Vec<u64>, omega_brain_core::CoreError> {
        let mut all: Vec<(f32, u64)> = self
            .0
            .iter()
            .map(|r| (r.embedding.dot(query), r.key))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(all.into_iter().take(count).map(|(_, k)| k).collect())
    }
}

/// A device's state without a store: the in-memory state plus the full
/// patterns the store would keep, changed the way the store changes them.
#[derive(Default)]
pub struct Device {
    pub state: omega_brain_core::BrainState,
    full: std::collections::HashMap<omega_protocol::PatternId, omega_brain_core::LocalPattern>,
}

impl Device {
    /// A device holding `catalog`.
    pub fn with_catalog(catalog: &[CatalogEntry]) -> Self {
        let mut d = Self::default();
        for e in catalog {
            d.state.catalog.upsert(e);
        }
        d
    }

    /// Records a viewing event and folds it into the patterns (as the
    /// store's `observe`: the pattern version moves when patterns change).
    pub fn observe(&mut self, ev: ViewingEvent) {
        use omega_brain_core::patterns::{item_fingerprint, PatternOp};
        let version = self.state.versions.pattern + 1;
        let ops = match self.state.catalog.get(&ev.content_id) {
            Some(rec) => self
                .state
                .patterns
                .plan_view(
                    ev.context.bucket(),
                    &rec.embedding().unwrap(),
                    item_fingerprint(&ev.content_id),
                    ev.is_success(),
                    version,
                    &omega_brain_core::PatternConfig::default(),
                    |id| self.full.get(&id).cloned().ok_or(id),
                )
                .unwrap(),
            None => Vec::new(),
        };
        for op in &ops {
            match op {
                PatternOp::Upsert(p) => {
                    self.full.insert(p.id, p.clone());
                }
                PatternOp::Remove { id, .. } => {
                    self.full.remove(id);
                }
            }
        }
        if !ops.is_empty() {
            self.state.versions.pattern = version;
        }
        self.state.patterns.apply(&ops);
        let seq = self.state.episodes.back().map_or(0, |e| e.seq + 1);
        self.state
            .push_episode(omega_brain_core::state::Episode { seq, event: ev });
    }

    /// Records the node's acknowledgement (as the store's `acknowledge`).
    pub fn acknowledge(
        &mut self,
        kind: omega_protocol::SyncKind,
        acked: u64,
        min_distinct: u32,
    ) -> Result<(), omega_brain_core::CoreError> {
        let plan = omega_brain_core::plan_ack(&self.state, kind, acked, min_distinct)?;
        for (id, known) in &plan.changed {
            if let Some(p) = self.full.get_mut(id) {
                p.known_to_node = *known;
            }
        }
        plan.apply(&mut self.state);
        Ok(())
    }

    /// The delta since the acknowledged version.
    pub fn build_delta(
        &self,
        cfg: &omega_brain_core::DeltaConfig,
        rng: &mut StdRng,
    ) -> omega_brain_core::DeltaPlan {
        omega_brain_core::delta::build_delta(
            &self.state.patterns,
            self.state.versions.acked,
            self.state.versions.pattern,
            cfg,
            rng,
        )
    }

    /// The first chunk of a full snapshot.
    pub fn build_snapshot(
        &self,
        cfg: &omega_brain_core::DeltaConfig,
        rng: &mut StdRng,
    ) -> omega_brain_core::DeltaPlan {
        omega_brain_core::delta::build_snapshot(
            &self.state.patterns,
            self.state.versions.pattern,
            cfg,
            rng,
        )
    }
}
