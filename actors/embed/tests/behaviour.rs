//! Behaviour with the real model: edge-case inputs, truncation, batch splitting,
//! sharing across threads.

mod common;

use common::{cosine, model_dir};
use omega_embed::{EmbedError, Embedder, EmbedderOptions};
use std::sync::Arc;

fn embedder(opts: EmbedderOptions) -> Embedder {
    Embedder::load(&model_dir(), opts).expect("load the model")
}

#[test]
fn empty_string_is_cls_sep() {
    let e = embedder(EmbedderOptions::default());
    assert_eq!(e.token_count("").unwrap(), 2);
    let v = e.embed("").unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    // Also inside a batch, next to a long text.
    let long = "word ".repeat(300);
    let batch = e.embed_batch(&["", &long, ""]).unwrap();
    assert!(cosine(&batch[0], &v) > 0.99999);
    assert!(cosine(&batch[2], &v) > 0.99999);
}

#[test]
fn long_text_is_truncated_to_max_tokens() {
    let e = embedder(EmbedderOptions::default());
    let long = "the quick brown fox jumps over the lazy dog ".repeat(40);
    assert_eq!(e.token_count(&long).unwrap(), 128);
    // Only the first 126 word pieces count: text beyond them changes nothing.
    let longer = format!("{long} completely different ending about space ships");
    let (a, b) = (e.embed(&long).unwrap(), e.embed(&longer).unwrap());
    assert!(cosine(&a, &b) > 0.99999);

    let short = embedder(EmbedderOptions {
        max_tokens: 16,
        ..EmbedderOptions::default()
    });
    assert_eq!(short.token_count(&long).unwrap(), 16);
}

#[test]
fn empty_batch_is_an_error() {
    let e = embedder(EmbedderOptions::default());
    assert!(matches!(e.embed_batch(&[]), Err(EmbedError::EmptyBatch)));
}

#[test]
fn batches_split_by_max_batch_tokens_give_the_same_vectors() {
    let texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "movie number {i}: {}",
                "a story of friendship ".repeat(i % 7)
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let whole = embedder(EmbedderOptions::default())
        .embed_batch(&refs)
        .unwrap();
    let split = embedder(EmbedderOptions {
        max_tokens: 64,
        max_batch_tokens: 64,
        ..EmbedderOptions::default()
    });
    let parts = split.embed_batch(&refs).unwrap();
    assert_eq!(parts.len(), whole.len());
    for (a, b) in whole.iter().zip(&parts) {
        assert!(cosine(a, b) > 0.99999);
    }
}

#[test]
fn shared_across_threads() {
    let e = Arc::new(embedder(EmbedderOptions {
        threads: Some(2),
        ..EmbedderOptions::default()
    }));
    assert_eq!(e.threads(), 2);
    let expected = e.embed("a quiet evening film").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let e = Arc::clone(&e);
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| e.embed("a quiet evening film").unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for v in h.join().unwrap() {
            assert!(cosine(&v, &expected) > 0.999999);
        }
    }
}

#[test]
fn unusual_text_does_not_fail() {
    let e = embedder(EmbedderOptions::default());
    for text in [
        "\u{0}",
        "\u{200b}\u{200b}",
        "   ",
        "🙂",
        "\u{fffd}x",
        "a\tb\nc",
    ] {
        let v = e.embed(text).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{text:?}");
    }
}
