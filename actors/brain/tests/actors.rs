//! The actors in process: what a caller sees through [`Brain`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../brain-core/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use omega_brain::actors::{Brain, BrainConfig};
use omega_brain::RecommendRequest;
use omega_protocol::ContentId;
use support::{cid, clustered_catalog, evening, event};

use omega_embed::default_model_dir as model_dir;

fn query(recent: &[&str], k: usize) -> RecommendRequest {
    RecommendRequest {
        recent: recent.iter().map(|s| cid(s)).collect(),
        ..RecommendRequest::new(evening(), k)
    }
}

/// Every write is visible to a `recommend` sent after its reply: nothing is
/// published later (the state is shared, not copied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recommend_after_a_write_reply_sees_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (brain, task) = Brain::start(BrainConfig::new(dir.path(), model_dir()))
        .await
        .unwrap();
    assert!(brain.recommend(query(&[], 10)).await.unwrap().is_empty());

    // A catalog change shows at once.
    let (catalog, _) = clustered_catalog(4, 10, 7);
    brain.upsert_entries(catalog).await.unwrap();
    let all = brain.recommend(query(&[], 40)).await.unwrap();
    assert_eq!(all.len(), 40, "the whole catalog is recommendable");

    // Each fully watched title disappears from the very next answer, while
    // recommends run concurrently from another task.
    let reader = {
        let brain = brain.clone();
        tokio::spawn(async move {
            let mut answered = 0u32;
            for _ in 0..200 {
                let out = brain.recommend(query(&["c1-0"], 10)).await.unwrap();
                assert!(!out.is_empty());
                answered += 1;
            }
            answered
        })
    };
    for i in 0..10 {
        let id = format!("c1-{i}");
        brain
            .observe(event(&id, 0.95, 1_700_000_000 + i))
            .await
            .unwrap();
        let out = brain.recommend(query(&[], 40)).await.unwrap();
        let ids: Vec<&ContentId> = out.iter().map(|r| &r.content_id).collect();
        assert!(
            !ids.contains(&&cid(&id)),
            "{id} was fully watched before this recommend and must be excluded"
        );
        assert_eq!(out.len(), 40 - (i as usize + 1));
    }
    assert_eq!(reader.await.unwrap(), 200);
    let stats = brain.stats().await.unwrap();
    assert_eq!(stats.episodes, 10);
    assert!(stats.local_patterns >= 1);

    // forget shows at once too: the titles come back.
    brain.forget().await.unwrap();
    assert_eq!(brain.recommend(query(&[], 40)).await.unwrap().len(), 40);

    brain.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap();
}
