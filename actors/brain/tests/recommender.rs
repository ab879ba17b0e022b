//! The recommender: exclusions, reasons, diversity, cold start, determinism.
#![allow(clippy::unwrap_used)]

mod support;

use omega_brain::recommender::{recommend, Reason, RecommendRequest, RecommenderConfig};
use omega_brain::state::{BrainState, Episode};
use std::cell::RefCell;
use std::collections::HashMap;

use omega_brain::patterns::PatternOp;
use omega_brain::{CatalogIndex, IndexConfig, LocalPattern, PatternConfig};
use omega_protocol::{GlobalPattern, PatternId, TrendSignal, ViewingEvent};
use support::*;

fn state(
    clusters: usize,
    per: usize,
) -> (BrainState, CatalogIndex, Vec<omega_protocol::Embedding>) {
    let (catalog, centres) = clustered_catalog(clusters, per, 31);
    FULL.with(|f| f.borrow_mut().clear());
    let mut st = BrainState::default();
    for e in catalog {
        st.catalog.upsert(&e);
    }
    let idx = CatalogIndex::build(&st.catalog, IndexConfig::default()).unwrap();
    (st, idx, centres)
}

thread_local! {
    /// The full patterns, which the store would keep (memory has only their info).
    static FULL: RefCell<HashMap<PatternId, LocalPattern>> = RefCell::new(HashMap::new());
}

fn watch(st: &mut BrainState, id: &str, fraction: f32, seq: u64) {
    let ev: ViewingEvent = event(id, fraction, seq);
    // Fold into patterns like the store does.
    let rec = st.catalog.get(&ev.content_id).unwrap().clone();
    let ops = st
        .patterns
        .plan_view(
            ev.context.bucket(),
            &rec.embedding().unwrap(),
            omega_brain::patterns::item_fingerprint(&ev.content_id),
            ev.is_success(),
            seq + 1,
            &PatternConfig::default(),
            |id| FULL.with(|f| f.borrow().get(&id).cloned().ok_or(id)),
        )
        .unwrap();
    FULL.with(|f| {
        for op in &ops {
            if let PatternOp::Upsert(p) = op {
                f.borrow_mut().insert(p.id, p.clone());
            }
        }
    });
    st.patterns.apply(&ops);
    st.push_episode(Episode { seq, event: ev });
}

/// An evening trend on `trend.0` (score `trend.1`) and an evening global
/// pattern (id, embedding, success rate, support, samples).
fn add_evening_signals(
    st: &mut BrainState,
    trend: (&str, f32),
    global: (u64, &omega_protocol::Embedding, f32, u32, u32),
) {
    st.trends.push(TrendSignal {
        content_id: cid(trend.0),
        bucket: evening().bucket(),
        score: trend.1,
    });
    let (id, embedding, success_rate, support, samples) = global;
    st.globals.insert(
        id,
        GlobalPattern {
            id,
            bucket: evening().bucket(),
            embedding: embedding.clone(),
            success_rate,
            support,
            samples,
        },
    );
}

fn req(k: usize) -> RecommendRequest {
    RecommendRequest {
        context: evening(),
        recent: vec![],
        mood: None,
        k,
    }
}

#[test]
fn recommends_near_history_excludes_watched_and_names_the_watch() {
    let (mut st, idx, _) = state(6, 15);
    watch(&mut st, "c2-0", 0.95, 0);
    watch(&mut st, "c2-1", 0.92, 1);
    watch(&mut st, "c2-2", 0.5, 2); // partly watched: may be recommended
    let cfg = RecommenderConfig {
        mmr_lambda: 1.0,
        ..RecommenderConfig::default()
    };
    let out = recommend(&st, &idx, &req(8), &cfg).unwrap();
    assert_eq!(out.len(), 8);
    for r in &out {
        assert!(
            r.content_id.as_str().starts_with("c2-"),
            "{:?}",
            r.content_id
        );
        assert!(
            r.content_id.as_str() != "c2-0" && r.content_id.as_str() != "c2-1",
            "watched title recommended"
        );
        assert!((0.0..=1.0).contains(&r.confidence));
        match &r.reason {
            Reason::BecauseYouWatched { content_id, title } => {
                assert!(["c2-0", "c2-1"].contains(&content_id.as_str()));
                assert!(title.starts_with("Title 2/"));
                assert!(r.reason.text().starts_with("Because you watched Title 2/"));
            }
            other => panic!("unexpected reason {other:?}"),
        }
    }
    let scores: Vec<f32> = out.iter().map(|r| r.score).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "pure relevance ranks by score"
    );
}

#[test]
fn mood_trend_and_global_reasons() {
    let (mut st, idx, centres) = state(6, 10);
    watch(&mut st, "c0-0", 0.95, 0);
    // Mood pointing at cluster 4.
    let mut r = req(5);
    r.mood = Some(centres[4].clone());
    let out = recommend(&st, &idx, &r, &RecommenderConfig::default()).unwrap();
    assert!(out
        .iter()
        .any(|x| x.reason == Reason::MatchesYourMood && x.content_id.as_str().starts_with("c4-")));
    // A strong regional trend on an unrelated title is surfaced and explained.
    add_evening_signals(&mut st, ("c5-3", 1.0), (1, &centres[3], 1.0, 50, 500));
    let cfg = RecommenderConfig {
        w_trend: 1.5,
        w_global: 1.5,
        ..RecommenderConfig::default()
    };
    let out = recommend(&st, &idx, &req(10), &cfg).unwrap();
    let trend = out
        .iter()
        .find(|x| x.content_id.as_str() == "c5-3")
        .expect("trend missing");
    assert_eq!(trend.reason, Reason::TrendingInYourRegion);
    assert!(
        out.iter()
            .any(|x| x.reason == Reason::PopularWithViewersLikeYou),
        "{out:?}"
    );
}

#[test]
fn mmr_diversifies() {
    let (mut st, idx, centres) = state(4, 20);
    watch(&mut st, "c0-0", 0.95, 0);
    watch(&mut st, "c1-0", 0.95, 1);
    let mut r = req(10);
    // Query dominated by cluster 0, a little of cluster 1.
    r.mood = Some(centres[0].clone());
    let pure = recommend(
        &st,
        &idx,
        &r,
        &RecommenderConfig {
            mmr_lambda: 1.0,
            ..Default::default()
        },
    )
    .unwrap();
    let diverse = recommend(
        &st,
        &idx,
        &r,
        &RecommenderConfig {
            mmr_lambda: 0.3,
            ..Default::default()
        },
    )
    .unwrap();
    let clusters = |v: &[omega_brain::Recommendation]| {
        let mut c: Vec<&str> = v
            .iter()
            .map(|x| x.content_id.as_str().split('-').next().unwrap())
            .collect();
        c.sort_unstable();
        c.dedup();
        c.len()
    };
    assert!(
        clusters(&diverse) > clusters(&pure),
        "pure {pure:?}\ndiverse {diverse:?}"
    );
}

#[test]
fn cold_start_uses_trends_then_globals_then_catalog_order() {
    let (mut st, idx, centres) = state(3, 5);
    // Nothing known: catalog order.
    let out = recommend(&st, &idx, &req(3), &RecommenderConfig::default()).unwrap();
    let ids: Vec<&str> = out.iter().map(|r| r.content_id.as_str()).collect();
    assert_eq!(ids, vec!["c0-0", "c0-1", "c0-2"]);
    assert!(out.iter().all(|r| r.reason == Reason::FromTheCatalog));
    // Trends first, then a global pattern's neighbours, then the catalog.
    add_evening_signals(&mut st, ("c1-4", 0.9), (7, &centres[2], 0.9, 20, 100));
    let out = recommend(&st, &idx, &req(12), &RecommenderConfig::default()).unwrap();
    assert_eq!(out[0].content_id.as_str(), "c1-4");
    assert_eq!(out[0].reason, Reason::TrendingInYourRegion);
    assert!(out[1..6]
        .iter()
        .all(|r| r.reason == Reason::PopularWithViewersLikeYou
            && r.content_id.as_str().starts_with("c2-")));
    assert!(out[6..].iter().all(|r| r.reason == Reason::FromTheCatalog));
    assert_eq!(out.len(), 12);
}

#[test]
fn answers_are_deterministic_and_bounded() {
    let (mut st, idx, _) = state(5, 10);
    for (i, id) in ["c0-0", "c1-1", "c0-2", "c3-3"].iter().enumerate() {
        watch(&mut st, id, 0.95, i as u64);
    }
    let cfg = RecommenderConfig::default();
    let a = recommend(&st, &idx, &req(10), &cfg).unwrap();
    // The same state through a rebuilt index gives the same answer.
    let idx2 = CatalogIndex::build(&st.catalog, IndexConfig::default()).unwrap();
    let b = recommend(&st, &idx2, &req(10), &cfg).unwrap();
    assert_eq!(a, b);
    // Ties break by content id: identical embeddings.
    let (mut st2, _, _) = state(1, 1);
    let e = unit(4242);
    for id in ["tie-b", "tie-a", "tie-c"] {
        st2.catalog.upsert(&entry(id, id, "g", e.clone()));
    }
    let idx3 = CatalogIndex::build(&st2.catalog, IndexConfig::default()).unwrap();
    let mut r = req(3);
    r.mood = Some(e.clone());
    let out = recommend(
        &st2,
        &idx3,
        &r,
        &RecommenderConfig {
            mmr_lambda: 1.0,
            ..cfg
        },
    )
    .unwrap();
    let ids: Vec<&str> = out.iter().map(|r| r.content_id.as_str()).collect();
    assert_eq!(ids, vec!["tie-a", "tie-b", "tie-c"]);
    // k is clamped.
    let out = recommend(&st, &idx, &req(10_000), &cfg).unwrap();
    assert!(out.len() <= cfg.max_k);
    assert!(recommend(&st, &idx, &req(0), &cfg).unwrap().is_empty());
}
