//! `omega-sim eval` end to end through the real binary and the real model, on
//! a tiny generated MovieLens-format data set (ratings.csv / movies.csv)
//! whose `pop` figures are computed by hand.
#![allow(clippy::unwrap_used)]

mod support;

use support::model_dir;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const USERS: u64 = 20;
const ITEMS: u64 = 40;
const GENRES: [&str; 5] = ["Comedy", "Drama", "Horror", "Western", "Animation"];

/// 20 users, 40 items. Every user trains on items 1–3 and on an item of
/// their own (10 + user); users 11–20 also train on item 4. The test item
/// (the last watch) is item 4 for users 1–10 and item 35 for users 11–20.
///
/// Training counts: items 1–3: 20, item 4: 10, items 11–30: 1, others 0.
/// So `pop` ranks item 4 first for users 1–10 (hit at rank 1) and item 35
/// (count 0) after 19 items of count 1 for users 11–20 (miss): HR@10 =
/// NDCG@10 = 0.5, under LOO-full and under LOO-100 alike (each user has
/// fewer than 99 unseen items, so LOO-100 ranks all of them).
fn write_dataset(dir: &Path) {
    let mut movies = String::from("movieId,title,genres\n");
    for i in 1..=ITEMS {
        let g = GENRES[(i % 5) as usize];
        movies.push_str(&format!(
            "{i},\"Film number {i}, the {g} one (19{:02})\",{g}\n",
            50 + i
        ));
    }
    std::fs::write(dir.join("movies.csv"), movies).unwrap();
    let mut ratings = String::from("userId,movieId,rating,timestamp\n");
    let day = 86_400u64;
    for u in 1..=USERS {
        let mut train = vec![1, 2, 3, 10 + u];
        if u > 10 {
            train.push(4);
        }
        let t0 = 1_000_000_000 + u * day;
        for (j, i) in train.iter().enumerate() {
            let rating = if j % 2 == 0 { 5 } else { 4 };
            ratings.push_str(&format!("{u},{i},{rating},{}\n", t0 + j as u64 * 3_600));
        }
        let test = if u <= 10 { 4 } else { 35 };
        ratings.push_str(&format!("{u},{test},4,{}\n", t0 + 20 * 3_600));
    }
    std::fs::write(dir.join("ratings.csv"), ratings).unwrap();
}

fn eval(dataset: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_omega-sim"))
        .arg("eval")
        .arg("--dataset")
        .arg(dataset)
        .args(extra)
        .arg("--model-dir")
        .arg(model_dir())
        .arg("--cache")
        .arg(cache)
        .arg("--quiet")
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(text.trim()).unwrap()
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

#[test]
fn eval_reports_every_method_in_the_contracted_json_with_pop_as_computed_by_hand() {
    let data = tempfile::tempdir().unwrap();
    let dataset = data.path().join("tiny-ml");
    std::fs::create_dir(&dataset).unwrap();
    write_dataset(&dataset);
    let cache = data.path().join("cache");

    let full = json_of(&eval(
        &dataset,
        &cache,
        &["--protocol", "loo-full", "--json"],
    ));
    assert_eq!(full["dataset"], "tiny-ml");
    assert_eq!(full["users"], USERS);
    assert_eq!(full["items"], ITEMS);
    assert_eq!(full["protocol"], "loo-full");
    assert!(full["seconds"].as_f64().unwrap() > 0.0);
    let methods = full["methods"].as_object().unwrap();
    let names: Vec<&str> = methods.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 4);
    for name in ["pop", "itemknn", "local", "federated"] {
        let m = &methods[name];
        for key in ["hr10", "ndcg10", "seconds"] {
            let x = m[key].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1e6).contains(&x), "{name}.{key} = {}", m[key]);
        }
        assert!(m["hr10"].as_f64().unwrap() <= 1.0);
    }
    // With federated: the privacy and bytes figures EVALUATION.md lists.
    for key in [
        "epsilon_per_day",
        "delta",
        "attack_hit_rate",
        "prior_hit_rate",
        "attack_ratio",
    ] {
        assert!(full["privacy"][key].is_number(), "privacy.{key}: {full}");
    }
    for key in ["up_per_device", "down_per_device"] {
        assert!(
            full["bytes"][key].as_f64().unwrap_or(0.0) > 0.0,
            "bytes.{key}"
        );
    }
    let pop = &methods["pop"];
    assert!(close(&pop["hr10"], 0.5), "pop {pop}");
    assert!(close(&pop["ndcg10"], 0.5), "pop {pop}");
    assert!(pop["confidence_bands"].is_null());
    // itemknn: item 4 co-occurs with 1–3 in the training data of users
    // 11–20, so it leads for users 1–10 too; item 35 has no interactions.
    assert!(
        close(&methods["itemknn"]["hr10"], 0.5),
        "{}",
        methods["itemknn"]
    );

    // local: the TV's confidence of every recommended slot is banded, and
    // the bands' hits are the users with a hit.
    let local = &methods["local"];
    let bands = local["confidence_bands"].as_array().unwrap();
    assert_eq!(bands.len(), 5);
    let (mut slots, mut hits) = (0, 0);
    for (b, band) in bands.iter().enumerate() {
        assert!((band["from"].as_f64().unwrap() - b as f64 * 0.2).abs() < 1e-6);
        slots += band["recommended"].as_u64().unwrap();
        hits += band["hits"].as_u64().unwrap();
    }
    assert!(slots > 0 && slots <= 10 * USERS, "slots {slots}");
    let local_hr = local["hr10"].as_f64().unwrap();
    assert!(
        (hits as f64 / USERS as f64 - local_hr).abs() < 1e-9,
        "{local}"
    );

    // The embeddings were cached: one file, reused by the next run, which
    // gives the same figures.
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(files.len(), 1);

    let l100 = json_of(&eval(
        &dataset,
        &cache,
        &["--protocol", "loo-100", "--json", "--methods", "pop,local"],
    ));
    assert_eq!(l100["protocol"], "loo-100");
    let m = l100["methods"].as_object().unwrap();
    assert_eq!(m.keys().collect::<Vec<_>>(), ["local", "pop"]);
    assert!(close(&m["pop"]["hr10"], 0.5), "{}", m["pop"]);
    assert!((0.0..=1.0).contains(&m["local"]["hr10"].as_f64().unwrap()));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    // A sample of users, and the table for people.
    let sampled = json_of(&eval(
        &dataset,
        &cache,
        &["--json", "--methods", "pop", "--users", "5", "--seed", "3"],
    ));
    assert_eq!(sampled["users"], 5);
    let table = eval(&dataset, &cache, &["--methods", "pop"]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("HR@10") && text.contains("pop"), "{text}");
}
