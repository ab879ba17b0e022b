//! The embedder against reference embeddings from an independent float64
//! implementation (`../shared/reference/minilm_reference.json` beside the repository,
//! or `$OMEGA_SHARED_DIR/reference/...`: tokenizer.json without padding, truncation at
//! 128 tokens, mean pooling over all tokens including [CLS]/[SEP], L2 normalization).
//! Every text must reach cosine >= 0.999, one at a time and in mixed-length batches;
//! the minimum is printed (`cargo test -p omega-embed --test reference -- --nocapture`).

mod common;

use common::{cosine, model_dir};
use omega_embed::{Embedder, EmbedderOptions, DIM};
use std::path::PathBuf;

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let shared = std::env::var_os("OMEGA_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        PathBuf::from,
    );
    let path = shared.join("reference/minilm_reference.json");
    let text = std::fs::read_to_string(path).expect("read the reference file");
    serde_json::from_str(&text).expect("parse the reference file")
}

const MIN_COSINE: f64 = 0.999;

#[test]
fn matches_reference_one_at_a_time_and_batched() {
    let embedder = Embedder::load(&model_dir(), EmbedderOptions::default()).unwrap();
    let reference = reference();
    assert!(reference.cases.len() >= 20);

    let mut min_single = f64::INFINITY;
    for case in &reference.cases {
        assert_eq!(case.embedding.len(), DIM);
        assert_eq!(
            embedder.token_count(&case.text).unwrap(),
            case.tokens,
            "{:?}",
            case.text
        );
        let e = embedder.embed(&case.text).unwrap();
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not normalized: {norm}");
        let c = cosine(&e, &case.embedding);
        min_single = min_single.min(c);
        assert!(
            c >= MIN_COSINE,
            "{:?} ({} tokens): cosine {c}",
            case.text,
            case.tokens
        );
    }

    // All texts in one batch (3 to 42 tokens), then five in reverse order (longest
    // first), then pairs: whatever the neighbours, each text must embed the same.
    let texts: Vec<&str> = reference.cases.iter().map(|c| c.text.as_str()).collect();
    let reversed: Vec<&str> = texts.iter().rev().take(5).copied().collect();
    let mut batches = vec![texts.clone(), reversed];
    batches.extend(texts.chunks(2).map(<[&str]>::to_vec));
    let mut min_batch = f64::INFINITY;
    for batch in &batches {
        let out = embedder.embed_batch(batch).unwrap();
        assert_eq!(out.len(), batch.len());
        for (text, e) in batch.iter().zip(&out) {
            let case = reference.cases.iter().find(|c| c.text == *text).unwrap();
            let c = cosine(e, &case.embedding);
            min_batch = min_batch.min(c);
            assert!(c >= MIN_COSINE, "batched {text:?}: cosine {c}");
        }
    }
    println!(
        "min cosine to the reference over {} texts: one at a time {min_single:.9} \
         (1 - cos = {:.1e}), batched {min_batch:.9} (1 - cos = {:.1e})",
        reference.cases.len(),
        1.0 - min_single,
        1.0 - min_batch
    );
}
