//! Delta building: privacy floor, noise, cap, acknowledgement, snapshots.
#![allow(clippy::unwrap_used)]

mod support;

use omega_brain_core::delta::{add_noise, build_delta, DeltaConfig};
use omega_protocol::{Embedding, SyncKind, EMBEDDING_DIM};
use rand::rngs::StdRng;
use rand::SeedableRng;
use support::*;

fn store(clusters: usize) -> Device {
    let (catalog, _) = clustered_catalog(clusters, 4, 21);
    Device::with_catalog(&catalog)
}

#[test]
fn a_pattern_of_fewer_than_three_items_never_leaves() {
    let mut s = store(2);
    let mut rng = StdRng::seed_from_u64(1);
    // One title watched many times: one pattern, one distinct item.
    for t in 0..10 {
        s.observe(event("c0-0", 0.95, t));
    }
    // Two distinct titles in another cluster.
    s.observe(event("c1-0", 0.95, 20));
    s.observe(event("c1-1", 0.95, 21));
    let plan = s.build_delta(&DeltaConfig::default(), &mut rng);
    assert!(plan.delta.is_empty(), "{:?}", plan.delta);
    // Even asking for a lower floor keeps 3.
    let plan = s.build_delta(
        &DeltaConfig {
            min_distinct_items: 1,
            ..DeltaConfig::default()
        },
        &mut rng,
    );
    assert!(plan.delta.is_empty());
    let snap = s.build_snapshot(&DeltaConfig::default(), &mut rng);
    assert!(snap.delta.is_empty());
    // A third distinct title: now the cluster-1 pattern may go, the single-title one still not.
    s.observe(event("c1-2", 0.95, 22));
    let plan = s.build_delta(&DeltaConfig::default(), &mut rng);
    assert_eq!(plan.delta.added.len(), 1);
    assert!(plan.delta.updated.is_empty());
    let p = &plan.delta.added[0];
    assert_eq!(p.samples, 3);
    let single = s.state.patterns.iter().find(|p| p.views == 10).unwrap().id;
    assert_ne!(p.id, single);
    assert_eq!(plan.upto_version, s.state.versions.pattern);
    assert!(!plan.more);
}

#[test]
fn acknowledged_patterns_come_back_as_updates_and_removals_only_if_known() {
    let mut s = store(1);
    let mut rng = StdRng::seed_from_u64(2);
    for (i, id) in ["c0-0", "c0-1", "c0-2"].iter().enumerate() {
        s.observe(event(id, 0.95, i as u64));
    }
    let plan = s.build_delta(&DeltaConfig::default(), &mut rng);
    assert_eq!(plan.delta.added.len(), 1);
    s.acknowledge(plan.kind, plan.upto_version, 3).unwrap();
    assert!(s
        .build_delta(&DeltaConfig::default(), &mut rng)
        .delta
        .is_empty());
    // An unsuccessful view lowers the success rate: an update.
    s.observe(event("c0-3", 0.1, 10));
    let plan = s.build_delta(&DeltaConfig::default(), &mut rng);
    assert_eq!(plan.delta.updated.len(), 1);
    assert!(plan.delta.added.is_empty());
    assert!((plan.delta.updated[0].success_rate - 0.75).abs() < 1e-6);
    assert_eq!(plan.base_version, s.state.versions.acked);
}

#[test]
fn deltas_are_capped_and_continue_where_they_stopped() {
    let mut s = store(30);
    let mut rng = StdRng::seed_from_u64(3);
    for c in 0..30 {
        for i in 0..3 {
            s.observe(event(&format!("c{c}-{i}"), 0.95, (c * 3 + i) as u64));
        }
    }
    let eligible = s
        .state
        .patterns
        .iter()
        .filter(|p| p.distinct_items >= 3)
        .count();
    assert!(eligible >= 25, "{eligible}");
    let cfg = DeltaConfig {
        max_patterns: 10,
        ..DeltaConfig::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut rounds = 0;
    loop {
        let plan = s.build_delta(&cfg, &mut rng);
        assert!(plan.delta.added.len() + plan.delta.updated.len() <= 10);
        for p in &plan.delta.added {
            assert!(seen.insert(p.id), "sent twice");
        }
        s.acknowledge(plan.kind, plan.upto_version, 3).unwrap();
        rounds += 1;
        if !plan.more {
            break;
        }
    }
    assert_eq!(seen.len(), eligible);
    assert!(rounds >= 3);
    // The real protocol cap.
    assert_eq!(DeltaConfig::default().max_patterns, 256);
    // A snapshot resends everything as added.
    let snap = s.build_snapshot(&DeltaConfig::default(), &mut rng);
    assert_eq!(snap.kind, SyncKind::Snapshot);
    assert_eq!(snap.delta.added.len(), eligible);
    s.acknowledge(SyncKind::Snapshot, snap.upto_version, 3)
        .unwrap();
    let plan = build_delta(
        &s.state.patterns,
        s.state.versions.acked,
        s.state.versions.pattern,
        &DeltaConfig::default(),
        &mut rng,
    );
    assert!(plan.delta.is_empty());
}

#[test]
fn noise_moves_the_embedding_by_the_configured_amount() {
    let mut rng = StdRng::seed_from_u64(4);
    let e = unit(77);
    assert_eq!(add_noise(&e, 0.0, &mut rng), e);
    for sigma in [0.01f32, 0.02, 0.05] {
        let expected = 1.0 / (1.0 + EMBEDDING_DIM as f32 * sigma * sigma).sqrt();
        let n = 200;
        let mean: f32 = (0..n)
            .map(|_| add_noise(&e, sigma, &mut rng).cosine(&e))
            .sum::<f32>()
            / n as f32;
        assert!(
            (mean - expected).abs() < 0.02,
            "sigma {sigma}: mean cosine {mean}, expected {expected}"
        );
    }
    // And the delta carries the noised embedding.
    let mut s = store(1);
    for (i, id) in ["c0-0", "c0-1", "c0-2"].iter().enumerate() {
        s.observe(event(id, 0.95, i as u64));
    }
    let exact: Embedding = s
        .state
        .patterns
        .iter()
        .next()
        .unwrap()
        .summary()
        .unwrap()
        .embedding;
    let plan = s.build_delta(
        &DeltaConfig {
            noise_sigma: 0.05,
            ..DeltaConfig::default()
        },
        &mut rng,
    );
    let cos = plan.delta.added[0].embedding.cosine(&exact);
    assert!(cos < 0.9 && cos > 0.5, "{cos}");
}
