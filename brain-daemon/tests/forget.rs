//! `forget` against the real `omega-braind` binary, the real model and a
//! real redb file: an answered forget survives `kill -9` straight after,
//! keeps the catalog, and leaves no file in the data directory that holds
//! the erased history (damaged store copies included).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::Daemon;

/// Unknown content ids are kept as episodes too: their bytes are unique in
/// the data directory, so finding them there means history was left behind.
const MARKER: &str = "secret-watch-7f3a";

fn items() -> Vec<Value> {
    (0..12)
        .map(|i| {
            json!({"id": format!("t{i}"), "title": format!("Film number {i}"),
                "genres": ["drama"], "year": 2001, "description": format!("a story, part {i}")})
        })
        .collect()
}

fn observe(d: &Daemon, id: &str, i: u64) {
    d.ok(
        json!({"id": i, "op": "observe", "content_id": id, "fraction": 0.95,
        "at": 1_700_000_000 + i * 60, "hour": 21, "weekday": 3}),
    );
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

fn damaged_copies(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".damaged-"))
        .collect()
}

#[test]
fn an_answered_forget_survives_kill_9_and_leaves_no_history_behind() {
    let tmp = tempfile::tempdir().unwrap();
    // A first store with history, damaged (its header overwritten) so that
    // the next start moves it aside: the copy still holds that history.
    let mut d = Daemon::start(tmp.path(), "");
    for i in 0..5 {
        observe(&d, &format!("{MARKER}-old-{i}"), i);
    }
    d.terminate();
    let db = tmp.path().join("data/brain.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..4096].fill(0xA5);
    std::fs::write(&db, bytes).unwrap();

    let mut d = Daemon::start(tmp.path(), "");
    let h = d.ok(json!({"id": 1, "op": "health"}));
    assert_eq!(h["store"], json!("recovered"), "{h}");
    assert_eq!(damaged_copies(&d.dir).len(), 1);
    assert!(!files_containing(&d.dir, MARKER.as_bytes()).is_empty());

    // The new store: a catalog, watches that form patterns, unknown titles.
    let r = d.ok(json!({"id": 2, "op": "catalog.upsert", "items": items()}));
    assert_eq!(r["catalog_items"], json!(12));
    for i in 0..30u64 {
        observe(&d, &format!("t{}", i % 6), 10 + i);
        observe(&d, &format!("{MARKER}-{i}"), 100 + i);
    }
    let s = d.ok(json!({"id": 3, "op": "stats"}));
    assert_eq!(s["episodes"], json!(60), "{s}");
    assert!(s["local_patterns"].as_u64().unwrap() > 0, "{s}");

    // Forget, and kill -9 as soon as the answer is in.
    let r = d.ok(json!({"id": 4, "op": "forget"}));
    assert_eq!(r["forgotten"], json!(true));
    d.kill9();

    let d = Daemon::start(tmp.path(), "");
    assert_eq!(
        d.ok(json!({"id": 5, "op": "health"}))["store"],
        json!("opened")
    );
    let hist = d.ok(json!({"id": 6, "op": "history", "limit": 1000}));
    assert_eq!(hist["episodes"], json!([]), "{hist}");
    let s = d.ok(json!({"id": 7, "op": "stats"}));
    assert_eq!(s["episodes"], json!(0), "{s}");
    assert_eq!(s["last_episode_seq"], Value::Null, "{s}");
    assert_eq!(s["local_patterns"], json!(0), "{s}");
    assert_eq!(s["catalog_items"], json!(12), "the catalog is kept: {s}");
    // The damaged copy went with the history, and no file of the data
    // directory (store, index, anything else) holds an erased title.
    assert_eq!(damaged_copies(&d.dir), Vec::<String>::new());
    assert_eq!(
        files_containing(&d.dir, MARKER.as_bytes()),
        Vec::<String>::new()
    );
    // A new watch starts the sequence afresh: nothing counts what was before.
    let r = d.ok(json!({"id": 8, "op": "observe", "content_id": "t1", "fraction": 1.0}));
    assert_eq!(r["seq"], json!(0), "{r}");
    // Recommendations still work from the kept catalog.
    let r = d.ok(json!({"id": 9, "op": "recommend", "hour": 21, "weekday": 3, "k": 5}));
    assert!(!r["items"].as_array().unwrap().is_empty());
}
