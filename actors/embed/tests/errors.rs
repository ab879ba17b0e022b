//! Load errors are typed and name what is wrong.

mod common;

use omega_embed::{EmbedError, Embedder, EmbedderOptions};
use std::path::Path;

fn load(dir: &Path) -> Result<Embedder, EmbedError> {
    Embedder::load(dir, EmbedderOptions::default())
}

/// A model directory with the real files linked in, except those in `replace`,
/// which get the given contents (`None`: left out).
fn model_with(replace: &[(&str, Option<&[u8]>)]) -> tempfile::TempDir {
    let real = common::model_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = dir.path().join(name);
        match replace.iter().find(|(n, _)| *n == name) {
            Some((_, Some(bytes))) => std::fs::write(path, bytes).expect("write"),
            Some((_, None)) => {}
            None => std::os::unix::fs::symlink(real.join(name), path).expect("symlink"),
        }
    }
    dir
}

#[test]
fn missing_model_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    match load(&missing) {
        Err(EmbedError::ModelDirNotFound { path }) => assert_eq!(path, missing),
        other => panic!("expected ModelDirNotFound, got {other:?}"),
    }
}

#[test]
fn missing_files() {
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let dir = model_with(&[(name, None)]);
        match load(dir.path()) {
            Err(EmbedError::MissingFile { path }) => assert_eq!(path, dir.path().join(name)),
            other => panic!("{name}: expected MissingFile, got {other:?}"),
        }
    }
}

#[test]
fn corrupt_config() {
    let cases: [&[u8]; 4] = [
        b"{ not json",
        b"{}",
        br#"{"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
        br#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "relu",
            "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#,
    ];
    for bytes in cases {
        let dir = model_with(&[("config.json", Some(bytes))]);
        match load(dir.path()) {
            Err(e @ EmbedError::BadConfig { .. }) => {
                assert!(e.to_string().contains("config.json"), "{e}");
            }
            other => panic!("expected BadConfig, got {other:?}"),
        }
    }
}

#[test]
fn config_that_does_not_match_the_weights() {
    // Plausible config, wrong vocabulary: the weights check catches it.
    let config = std::fs::read_to_string(common::model_dir().join("config.json"))
        .unwrap()
        .replace("30522", "30000");
    let dir = model_with(&[("config.json", Some(config.as_bytes()))]);
    match load(dir.path()) {
        Err(e @ EmbedError::Weights { .. }) => {
            assert!(e.to_string().contains("word_embeddings"), "{e}")
        }
        other => panic!("expected Weights, got {other:?}"),
    }
}

#[test]
fn corrupt_weights() {
    let dir = model_with(&[("model.safetensors", Some(b"definitely not safetensors"))]);
    assert!(matches!(load(dir.path()), Err(EmbedError::Weights { .. })));

    // Valid safetensors without the model's tensors.
    let dir = model_with(&[("model.safetensors", None)]);
    let t =
        candle_core::Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("unrelated".to_string(), t)]),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    match load(dir.path()) {
        Err(e @ EmbedError::Weights { .. }) => assert!(e.to_string().contains("embeddings"), "{e}"),
        other => panic!("expected Weights, got {other:?}"),
    }
    // A truncated file: the header is whole, the tensors it lists are not.
    let real = std::fs::read(common::model_dir().join("model.safetensors")).unwrap();
    let dir = model_with(&[("model.safetensors", Some(&real[..1 << 20]))]);
    match load(dir.path()) {
        Err(e @ EmbedError::Weights { .. }) => {
            assert!(e.to_string().contains("past the end"), "{e}")
        }
        other => panic!("expected Weights, got {other:?}"),
    }
}

#[test]
fn corrupt_tokenizer() {
    let dir = model_with(&[("tokenizer.json", Some(b"{\"version\": "))]);
    assert!(matches!(load(dir.path()), Err(EmbedError::Tokenizer(_))));
}

#[test]
fn invalid_options() {
    let dir = common::model_dir();
    let bad = [
        EmbedderOptions {
            max_tokens: 1,
            ..EmbedderOptions::default()
        },
        EmbedderOptions {
            max_tokens: 513,
            max_batch_tokens: 4096,
            ..EmbedderOptions::default()
        },
        EmbedderOptions {
            max_batch_tokens: 100,
            ..EmbedderOptions::default()
        },
        EmbedderOptions {
            threads: Some(0),
            ..EmbedderOptions::default()
        },
    ];
    for opts in bad {
        let result = Embedder::load(&dir, opts.clone());
        assert!(
            matches!(result, Err(EmbedError::InvalidOptions(_))),
            "{opts:?}: {result:?}"
        );
    }
}
