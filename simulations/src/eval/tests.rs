//! The protocol on tiny hand-made data sets: split, candidates, metrics,
//! tie-breaking, the reference methods.
#![allow(clippy::unwrap_used)]

use super::baselines::{ItemKnn, Pop};
use super::*;
use crate::movielens::read_dataset;

/// Writes `movies.csv` with items `ids` and `ratings.csv` with `rows`
/// (user, item, rating, timestamp) to a temporary directory.
fn fixture(ids: &[u64], rows: &[(u64, u64, f32, u64)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut movies = String::from("movieId,title,genres\n");
    for i in ids {
        movies.push_str(&format!("{i},Film {i} (1990),Drama\n"));
    }
    std::fs::write(dir.path().join("movies.csv"), movies).unwrap();
    let mut ratings = String::from("userId,movieId,rating,timestamp\n");
    for (u, i, r, t) in rows {
        ratings.push_str(&format!("{u},{i},{r},{t}\n"));
    }
    std::fs::write(dir.path().join("ratings.csv"), ratings).unwrap();
    dir
}

fn split_of(ids: &[u64], rows: &[(u64, u64, f32, u64)]) -> Split {
    let dir = fixture(ids, rows);
    Split::new(read_dataset(dir.path()).unwrap()).unwrap()
}

fn items(r: &[Ranked]) -> Vec<u32> {
    r.iter().map(|x| x.item).collect()
}

#[test]
fn the_last_interaction_by_time_then_item_id_is_the_test_item() {
    // User 1: two interactions at t=50 (items 30 and 20): item 30 is last.
    // User 2: rated out of order in the file.
    let s = split_of(
        &[10, 20, 30],
        &[
            (1, 30, 4.0, 50),
            (1, 10, 5.0, 10),
            (1, 20, 3.0, 50),
            (2, 10, 1.0, 300),
            (2, 30, 2.0, 100),
        ],
    );
    assert_eq!(s.users.len(), 2);
    let u1 = &s.users[0];
    assert_eq!(u1.id, 1);
    // Item indices: 10 → 0, 20 → 1, 30 → 2.
    assert_eq!(u1.test.item, 2);
    assert_eq!(u1.train.iter().map(|x| x.item).collect::<Vec<_>>(), [0, 1]);
    assert!(u1.trained_on(0) && u1.trained_on(1) && !u1.trained_on(2));
    let u2 = &s.users[1];
    assert_eq!((u2.test.item, u2.test.timestamp), (0, 300));
    assert_eq!(u2.train_items(), [2]);
}

#[test]
fn ties_are_broken_by_item_id_and_training_items_are_left_out() {
    let s = split_of(&[1, 2, 3, 4, 5], &[(1, 3, 5.0, 1), (1, 5, 5.0, 2)]);
    let u = &s.users[0]; // trained on item index 2, test index 4
    let scores = [1.0, 2.0, 9.0, 2.0, 1.0];
    // Index 2 (score 9) is a training item: left out. 1 and 3 tie at 2.0, 0
    // and 4 at 1.0: lower id first.
    let top = top_k_by_score(&scores, u, Candidates::Unseen, 10);
    assert_eq!(items(&top), [1, 3, 0, 4]);
    assert!(top.iter().all(|r| r.confidence.is_none()));
    assert_eq!(
        items(&top_k_by_score(&scores, u, Candidates::Unseen, 3)),
        [1, 3, 0]
    );
    // Given candidates: only those, training items included if given.
    let only = [0, 2, 4];
    assert_eq!(
        items(&top_k_by_score(&scores, u, Candidates::Only(&only), 2)),
        [2, 0]
    );
    // All equal: id order.
    let flat = [0.0; 5];
    assert_eq!(
        items(&top_k_by_score(&flat, u, Candidates::Unseen, 10)),
        [0, 1, 3, 4]
    );
}

#[test]
fn hit_rate_and_ndcg_by_hand() {
    let mut m = Metrics::default();
    m.add(Some(1)); // 1 / log2(2) = 1
    m.add(Some(3)); // 1 / log2(4) = 0.5
    m.add(Some(10)); // 1 / log2(11)
    m.add(Some(11)); // outside the top 10: a miss
    m.add(None);
    assert!((m.hr() - 3.0 / 5.0).abs() < 1e-12);
    let want = (1.0 + 0.5 + 1.0 / 11f64.log2()) / 5.0;
    assert!((m.ndcg() - want).abs() < 1e-12, "{}", m.ndcg());
    assert_eq!(Metrics::default().hr(), 0.0);
}

#[test]
fn confidence_bands_of_point_two() {
    assert_eq!(ConfidenceBands::band(0.0), 0);
    assert_eq!(ConfidenceBands::band(0.19), 0);
    assert_eq!(ConfidenceBands::band(0.2), 1);
    assert_eq!(ConfidenceBands::band(0.55), 2);
    assert_eq!(ConfidenceBands::band(1.0), 4);
    assert_eq!(ConfidenceBands::band(f32::NAN), 0);
    let mut b = ConfidenceBands::default();
    b.add(0.5, true);
    b.add(0.45, false);
    b.add(0.9, false);
    let r = b.report();
    assert_eq!(r.len(), BANDS);
    assert_eq!((r[2].recommended, r[2].hits), (2, 1));
    assert!((r[2].hit_rate - 0.5).abs() < 1e-12);
    assert_eq!((r[4].recommended, r[4].hits, r[4].hit_rate), (1, 0, 0.0));
    assert_eq!(r[0].hit_rate, 0.0);
}

#[test]
fn pop_counts_training_interactions_only() {
    // Item 1 is everyone's test item (last), so it has no training count;
    // item 2 is watched by 3 users in training, item 3 by 2, 4 by 1.
    let s = split_of(
        &[1, 2, 3, 4, 5],
        &[
            (1, 2, 4.0, 1),
            (1, 3, 4.0, 2),
            (1, 1, 4.0, 9),
            (2, 2, 4.0, 1),
            (2, 3, 4.0, 2),
            (2, 1, 4.0, 9),
            (3, 2, 4.0, 1),
            (3, 4, 4.0, 2),
            (3, 1, 4.0, 9),
        ],
    );
    let mut pop = Pop::default();
    pop.train(&s, &ProgressBar::hidden()).unwrap();
    // User 3 trained on items 2 and 4 (indices 1, 3): left are 3, 1, 5
    // by count (2, 0, 0; ties by id).
    let top = pop.top_k(&s, 2, Candidates::Unseen, 10).unwrap();
    assert_eq!(items(&top), [2, 0, 4]);
    // So the test item (index 0) is at rank 2 for user 3.
}

#[test]
fn itemknn_scores_by_cosine_of_co_watches() {
    // Cosine similarities computed by hand from the training matrix.
    let s = split_of(
        &[1, 2, 3, 4],
        &[
            (1, 1, 5.0, 1),
            (1, 2, 5.0, 2),
            (1, 4, 5.0, 3),
            (2, 1, 5.0, 1),
            (2, 2, 5.0, 2),
            (2, 4, 5.0, 3),
            (3, 1, 5.0, 1),
            (3, 3, 5.0, 2),
            (3, 4, 5.0, 3),
            (4, 2, 5.0, 1),
            (4, 1, 5.0, 2),
        ],
    );
    // Training: u1 {1,2}, u2 {1,2}, u3 {1,3}, u4 {2}; tests 4, 4, 4, 1.
    let nb = ItemKnn::neighbours(&s, 100).unwrap();
    // Item 1 (index 0): users 1,2,3; item 2 (index 1): users 1,2,4; item 3: user 3.
    let cos12 = 2.0 / (3.0f32 * 3.0).sqrt();
    let cos13 = 1.0 / (3.0f32 * 1.0).sqrt();
    assert_eq!(nb[0].len(), 2);
    assert_eq!(
        (nb[0][0].0, nb[0][1].0),
        (1, 2),
        "item 2 is nearer item 1 than item 3"
    );
    assert!((nb[0][0].1 - cos12).abs() < 1e-6);
    assert!((nb[0][1].1 - cos13).abs() < 1e-6);
    assert!(nb[3].is_empty(), "item 4 has no training interactions");
    // Keeping one neighbour per item keeps the most similar.
    let one = ItemKnn::neighbours(&s, 1).unwrap();
    assert_eq!(one[1], vec![(0, cos12)]);
    // User 4 trained on item 2: its score for item 1 is cos12, for item 3 0.
    let mut knn = ItemKnn::default();
    knn.train(&s, &ProgressBar::hidden()).unwrap();
    let top = knn.top_k(&s, 3, Candidates::Unseen, 10).unwrap();
    assert_eq!(items(&top), [0, 2, 3]);
}

#[test]
fn loo100_draws_unseen_items_reproducibly() {
    let ids: Vec<u64> = (1..=300).collect();
    let mut rows = Vec::new();
    for u in 1..=4u64 {
        for (t, i) in (u * 10..u * 10 + 20).enumerate() {
            rows.push((u, i, 4.0, t as u64));
        }
    }
    let s = split_of(&ids, &rows);
    let a = loo100_candidates(&s);
    let b = loo100_candidates(&s);
    assert_eq!(a, b, "one seeded generator");
    for (u, c) in s.users.iter().zip(&a) {
        assert_eq!(c.len(), LOO100_NEGATIVES + 1);
        assert!(c.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        assert!(c.contains(&u.test.item));
        let negatives: Vec<u32> = c.iter().copied().filter(|&i| i != u.test.item).collect();
        assert_eq!(negatives.len(), LOO100_NEGATIVES);
        assert!(negatives.iter().all(|&i| !u.trained_on(i)));
    }
    assert_ne!(a[0], a[1], "each user gets its own draw");
    // Too few unseen items: all of them.
    let small = split_of(&[1, 2, 3, 4], &[(1, 1, 4.0, 1), (1, 2, 4.0, 2)]);
    assert_eq!(loo100_candidates(&small), vec![vec![1, 2, 3]]);
}

#[test]
fn user_samples_are_seeded_sorted_and_bounded() {
    let a = sample_users(100, Some(10), 7);
    assert_eq!(a, sample_users(100, Some(10), 7));
    assert_ne!(a, sample_users(100, Some(10), 8));
    assert_eq!(a.len(), 10);
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(sample_users(5, Some(10), 7), [0, 1, 2, 3, 4]);
    assert_eq!(sample_users(3, None, 7), [0, 1, 2]);
}

#[test]
fn unknown_methods_are_refused_with_a_reason() {
    let opts = EvalOptions {
        dataset: PathBuf::new(),
        protocol: Protocol::LooFull,
        users: None,
        seed: 42,
        methods: vec![],
        model_dir: PathBuf::new(),
        cache_dir: PathBuf::new(),
        progress: false,
        federated: federated::FederatedOptions::default(),
    };
    let err = method_by_name("bpr", &opts).err().unwrap().to_string();
    assert!(err.contains("unknown method"), "{err}");
    for m in DEFAULT_METHODS {
        assert_eq!(method_by_name(m, &opts).unwrap().name(), m);
    }
}
