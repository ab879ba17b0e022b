//! Sentence embeddings with all-MiniLM-L6-v2 on candle: the one embedder both the TV
//! daemon and the constellation node use, so that vectors from either side compare.
//!
//! ```no_run
//! use omega_embed::{Embedder, EmbedderOptions};
//! # fn main() -> Result<(), omega_embed::EmbedError> {
//! let embedder = Embedder::load("models/all-MiniLM-L6-v2".as_ref(), EmbedderOptions::default())?;
//! let one: [f32; omega_embed::DIM] = embedder.embed("a funny animated movie for kids")?;
//! let many = embedder.embed_batch(&["Toy Story (1995)", "Heat (1995). Action, Crime"])?;
//! # Ok(()) }
//! ```
//!
//! # What it computes
//!
//! The model directory holds `config.json`, `tokenizer.json` and `model.safetensors`
//! (`scripts/fetch-model.sh`). Text is tokenized with `tokenizer.json` as shipped,
//! except that its fixed padding to 128 is turned off (it made every text cost as much
//! as a 128-token one) and truncation is at [`EmbedderOptions::max_tokens`]. The
//! embedding is the mean of the last hidden states over all tokens, `[CLS]` and
//! `[SEP]` included, L2-normalized: a `[f32; DIM]` of norm 1, so cosine similarity is a
//! dot product. `tests/reference.rs` checks every text of an independent float64
//! reference (`../shared/reference`) to cosine >= 0.999, one at a time and in
//! mixed-length batches: the measured minimum is 1 - 9e-13 (the forward pass is plain
//! f32; nothing is quantized).
//!
//! # Binaries: allocator and threads
//!
//! A library cannot choose the global allocator or safely set the environment, so the
//! binaries that use this crate (daemon, node, simulator, the `embed_bench` example)
//! must do two things at the top of `main`, before any other thread starts:
//!
//! ```text
//! #[global_allocator]
//! static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
//!
//! fn main() {
//!     omega_embed::configure_candle_threads(None); // before tokio or anything spawns
//!     // ...
//! }
//! ```
//!
//! - mimalloc: 2.1–2.3 ms and 750–1000 texts/s against 2.4–2.8 ms and 690–790/s with
//!   glibc's allocator, which keeps less resident: with the current loader (two runs
//!   each, `embed_bench`, see Memory below) 50.2 vs 63.0–66.6 MiB anonymous after
//!   load, 52.7 vs 77–82 after the short texts, peak 68–72 vs 96–103 MiB, for
//!   2.28–2.30 vs 2.03–2.06 ms and 910–915 vs 960–1027 texts/s in the same session:
//!   a trade-off to weigh for a memory-starved TV. With candle's own BERT the
//!   prototype saw glibc slower and erratic. (Those mimalloc figures are with its
//!   default transparent huge pages; the workspace now builds mimalloc with
//!   `no_thp`, which closes most of the gap: `omega-sim bench brain` peaks at
//!   107–110 MiB instead of 133–135, at unchanged speed.)
//! - `RAYON_NUM_THREADS`: candle reads it on every matrix product, and when it is
//!   unset counts physical cores instead, parsing `/proc/cpuinfo` each time: 24 times
//!   per text, 2.1–2.3 ms -> 3.3–3.8 ms. [`configure_candle_threads`] sets it;
//!   [`Embedder::load`] logs a warning when it is missing.
//!
//! # Speed
//!
//! Release build, 2-core AMD EPYC (Zen 5, AVX-512) shared with other builds (runs under
//! `chrt -f 10`), `examples/embed_bench.rs`: 300 distinct ~16-token texts one at a
//! time, then 10 batches of 32. Ranges over 3–6 runs.
//!
//! | engine (mimalloc, `RAYON_NUM_THREADS` set, 2 threads) | p50 | p99 | batch 32 |
//! | --- | --- | --- | --- |
//! | ONNX Runtime fp32 (anchor, measured earlier; side by side below) | 5.6 ms | 7.5–9.5 ms | 172/s |
//! | candle-transformers `BertModel` | 7.5–7.8 ms | 9.9–15 ms | 250–267/s |
//! | own forward on candle ops, fused QKV, weights `(in, out)` | 5.8–6.0 ms | 6.9–7.9 ms | 283–287/s |
//! | + AVX-512 gemm kernels | 3.6–4.1 ms | 5.3–7.9 ms | 392–416/s |
//! | + fused kernels, packed batches (this crate) | **2.1–2.3 ms** | 2.4–3.8 ms | **750–1000/s** |
//! | this crate, 1 thread | 2.7–3.0 ms | 3.3–5.0 ms | 470–525/s |
//!
//! Side by side with ONNX Runtime 1.31 fp32 (`scripts/compare-ort.sh`: same
//! safetensors, same texts, embeddings equal to cosine 0.9999999, 2 threads each,
//! three alternating rounds under `chrt -f 10` on a 2-core AMD EPYC (AVX-512) at load
//! average ~16; medians): this crate p50 1.46 ms, p99 1.65 ms, 1,152 texts/s in batches
//! of 32; ONNX Runtime with its BERT fusions p50 1.98 ms (1.92 in `session.run`
//! alone), 921 texts/s; with the standard-op graph 1.88 ms (1.82), 901 texts/s.
//!
//! A 125-token text takes ~13 ms; batches of such texts run at ~95 texts/s. Loading
//! takes 22–45 ms with the files in the page cache (some starts 90–240 ms).
//!
//! # Memory
//!
//! `examples/embed_bench.rs` (mimalloc, 2 threads), MiB from `/proc/self/status`;
//! `VmHWM` is the peak of `VmRSS`, file-backed pages included. Ranges over 4–6 runs.
//!
//! | point | VmRSS | RssAnon | RssFile | VmHWM |
//! | --- | --- | --- | --- | --- |
//! | before load (the benchmark itself) | 14–15 | 10.6 | 3.4–4.5 | 14–15 |
//! | after load | 68.4–72.1 | 63.0–66.6 | 4.7–5.5 | 68.4–72.1 |
//! | after ~680 short texts, one at a time and in batches of 32 | 85.6–92.2 | 77–82 | 7.9–10.1 | 95.8–102.6 |
//! | after 1,000 more texts spread over the whole vocabulary | 121.7–128.6 | 75.7–82.2 | 45.6–46.5 | 122.5–132.1 |
//! | the same, word-embedding rows read with `pread` (this crate) | 81.1 | 76.1 | 5.0 | 87.6 |
//!
//! (The first three rows were measured with the word-embedding table still mapped;
//! reading its rows with `pread` changes only what the vocabulary in use adds to
//! `RssFile`.)
//!
//! With the whole file mapped and the layer weights read through the mapping (the
//! loader before this one), the same points were 104.9–106.1 / 58.6 / 46.2–47.4 /
//! = VmRSS after load, 126–132 / 75–81 / 51–52 / 130–142 after the short texts and
//! 163–169 / 75–81 / 87.4–88.5 / 166–171 after the 1,000: the layer weights' ~41 MiB
//! of file pages stayed resident. Now `RssFile` does not grow with the vocabulary
//! either (the 1,000 texts use 20,003 distinct tokens of 30,522).
//!
//! What is anonymous after load, measured exactly (transparent huge pages off for the
//! process, `MIMALLOC_PURGE_DELAY=0` so freed memory leaves at once): 48.4 MiB (48.5
//! with the old loader), of
//! which 1.8 were there before load, 41.3 the weights (40.5 in the six layers' transposed
//! matrices, 0.75 the position embeddings), ~5.8 the tokenizer (its vocabulary held
//! both ways; parsing `tokenizer.json` briefly takes ~12 MiB) and ~0.1 the thread
//! pool. With mimalloc's defaults (before the workspace turned on its `no_thp`
//! feature), its arena sits on 2 MiB huge pages and returns freed memory later, so `RssAnon` right after load depends on layout and
//! timing (58.6 with the old loader, 63–66.6 with this one, 48.4–48.5 for both with
//! the settings above); from the first texts on, both sit at 75–82.
//!
//! Tried and dropped (numbers from one session, where f32 gave 2.9 ms and 800–900/s):
//! candle's quantized matmuls (`QMatMul`). q8_0 misses the bar (min cosine 0.9985) and
//! is slower (6.7 ms, 136/s: activations are quantized on every call, and `k = 384` is
//! not a multiple of 256, so candle's AVX-512-VNNI path does not apply); q8_1 scrapes
//! 0.9990 at 39 ms; q8k and q6k fit only the 1536-wide layer (q8k: 0.9993, 4.0 ms,
//! 480/s). f16 and bf16 weights: 1.2–5x slower than f32 in a gemm microbenchmark
//! (gemm converts to f32 as it goes; this CPU has no AVX-512 FP16).
//! `model.rs` (the forward pass) and `kernels.rs` (the fused kernels) say what was
//! changed from candle's stock BERT and why.

/// The model directory tools and tests default to: `OMEGA_MODEL_DIR`, else
/// `models/all-MiniLM-L6-v2` at the workspace root (where
/// `scripts/fetch-model.sh` puts it).
pub fn default_model_dir() -> PathBuf {
    std::env::var_os("OMEGA_MODEL_DIR").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/all-MiniLM-L6-v2"
            ))
        },
        PathBuf::from,
    )
}

mod kernels;
mod model;

use std::path::{Path, PathBuf};

/// Embedding dimension of all-MiniLM-L6-v2.
pub const DIM: usize = 384;

/// One sentence embedding: L2-normalized (norm 1), so cosine similarity is a dot product.
pub type Embedding = [f32; DIM];

/// Errors from loading the model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory does not exist (or is not a directory).
    #[error("model directory not found: {}", path.display())]
    ModelDirNotFound {
        /// The directory that was given.
        path: PathBuf,
    },
    /// `config.json`, `tokenizer.json` or `model.safetensors` is missing from the model
    /// directory.
    #[error("model file missing: {} (scripts/fetch-model.sh fetches the model)", path.display())]
    MissingFile {
        /// The file that was expected.
        path: PathBuf,
    },
    /// A model file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON, lacks a field, or describes a model this crate
    /// does not run (hidden size other than [`DIM`], activation other than GELU, ...).
    #[error("bad model config {}: {reason}", path.display())]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `model.safetensors` cannot be parsed, or a tensor is missing or has
    /// the wrong shape or dtype.
    #[error("bad model weights {}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The options cannot work: zero threads, `max_tokens` outside
    /// `2..=max_position_embeddings`, `max_batch_tokens < max_tokens`.
    #[error("invalid embedder options: {0}")]
    InvalidOptions(String),
    /// The thread pool could not be started.
    #[error("cannot start the embedder's thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// `tokenizer.json` could not be loaded or configured, or tokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(#[source] tokenizers::Error),
    /// The tokenizer produced a token id outside the model's vocabulary (a tokenizer
    /// that does not belong to the model).
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The token id.
        id: usize,
        /// The vocabulary size in `config.json`.
        vocab: usize,
    },
    /// A tensor operation failed in candle.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// [`Embedder::embed_batch`] was given no texts.
    #[error("empty batch: embed_batch needs at least one text")]
    EmptyBatch,
}

/// How to load and run the model.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Threads of the embedder's own pool, which runs the forward pass. `None`:
    /// `RAYON_NUM_THREADS` if set, else every core the process may use. On 2 cores,
    /// 2 threads take a short text from 2.7–3.0 ms to 2.1–2.3 ms and batches of 32
    /// from 470–525 to 750–1000 texts/s. candle's matrix products split their work
    /// by `RAYON_NUM_THREADS`: keep the two equal ([`configure_candle_threads`]).
    pub threads: Option<usize>,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are
    /// truncated. 128 by default, as the model was trained.
    pub max_tokens: usize,
    /// [`Embedder::embed_batch`] packs texts into forward passes of at most this many
    /// tokens (and splits larger batches), bounding memory: the largest activation is
    /// `max_batch_tokens * 1536 * 4` bytes (6 MiB at the default 1024). Larger passes
    /// measured no faster (512, 2048, 4096 tokens: 95, 92, 98 texts/s of 125 tokens)
    /// but peaked higher (147, 172, 204 MiB).
    pub max_batch_tokens: usize,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            threads: None,
            max_tokens: 128,
            max_batch_tokens: 1024,
        }
    }
}

/// Sets `RAYON_NUM_THREADS` (to `threads`, else to the cores available) unless it is
/// already set, and returns its value.
///
/// candle reads this variable on every matrix product; unset, it parses
/// `/proc/cpuinfo` each time, which made a short text 50–70% slower (2.2 -> 3.3–3.8 ms). Call this at
/// the top of `main`, before any other thread exists: changing the environment while
/// another thread may read it is undefined behaviour on Linux (which is why
/// [`Embedder::load`] does not do it itself).
pub fn configure_candle_threads(threads: Option<usize>) -> usize {
    if let Some(n) = env_threads() {
        return n;
    }
    let n = threads.unwrap_or_else(available_cores).max(1);
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    n
}

/// The instruction set the encoder's fused kernels (attention, bias + GELU,
/// LayerNorm) are dispatched to on this CPU, detected at run time: `avx512` or
/// `avx2+fma` on x86-64, `neon` on aarch64, else `scalar`. The matrix products are
/// candle's (gemm, which does its own run-time detection) and are not covered.
pub fn kernel_isa() -> &'static str {
    kernels::dispatched_isa()
}

fn env_threads() -> Option<usize> {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The all-MiniLM-L6-v2 sentence embedder. `Send + Sync`: share it through an `Arc`
/// and call it from blocking threads; concurrent calls share its thread pool.
pub struct Embedder {
    tokenizer: tokenizers::Tokenizer,
    model: model::MiniLm,
    pool: rayon::ThreadPool,
    max_batch_tokens: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("threads", &self.threads())
            .field("max_batch_tokens", &self.max_batch_tokens)
            .finish_non_exhaustive()
    }
}

fn model_file(dir: &Path, name: &str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(EmbedError::MissingFile { path })
    }
}

fn read_config(path: &Path) -> Result<model::Config, EmbedError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| EmbedError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let cfg: model::Config = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if cfg.hidden_size != DIM {
        return Err(bad(format!(
            "hidden_size is {}, not {DIM}",
            cfg.hidden_size
        )));
    }
    if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            cfg.hidden_size, cfg.num_attention_heads
        )));
    }
    if cfg.hidden_act != "gelu" {
        return Err(bad(format!(
            "hidden_act is {:?}, only \"gelu\" is supported",
            cfg.hidden_act
        )));
    }
    if cfg.vocab_size == 0 || cfg.type_vocab_size == 0 || cfg.num_hidden_layers == 0 {
        return Err(bad(
            "vocab_size, type_vocab_size and num_hidden_layers must be > 0".into(),
        ));
    }
    Ok(cfg)
}

/// `tokenizer.json` without its fixed padding, truncating at `max_tokens`.
fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<tokenizers::Tokenizer, EmbedError> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(EmbedError::Tokenizer)?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        }))
        .map_err(EmbedError::Tokenizer)?;
    Ok(tokenizer)
}

impl Embedder {
    /// Loads the model from `model_dir` (`config.json`, `tokenizer.json`,
    /// `model.safetensors`, read with positioned reads) and starts the thread pool.
    pub fn load(model_dir: &Path, opts: EmbedderOptions) -> Result<Self, EmbedError> {
        if !model_dir.is_dir() {
            return Err(EmbedError::ModelDirNotFound {
                path: model_dir.to_path_buf(),
            });
        }
        let config_path = model_file(model_dir, "config.json")?;
        let tokenizer_path = model_file(model_dir, "tokenizer.json")?;
        let weights_path = model_file(model_dir, "model.safetensors")?;
        let cfg = read_config(&config_path)?;

        if opts.max_tokens < 2 || opts.max_tokens > cfg.max_position_embeddings {
            return Err(EmbedError::InvalidOptions(format!(
                "max_tokens is {}, must be in 2..={}",
                opts.max_tokens, cfg.max_position_embeddings
            )));
        }
        if opts.max_batch_tokens < opts.max_tokens {
            return Err(EmbedError::InvalidOptions(format!(
                "max_batch_tokens {} is below max_tokens {}",
                opts.max_batch_tokens, opts.max_tokens
            )));
        }
        if opts.threads == Some(0) {
            return Err(EmbedError::InvalidOptions("threads is 0".into()));
        }
        if env_threads().is_none() {
            tracing::warn!(
                "RAYON_NUM_THREADS is not set: candle re-reads /proc/cpuinfo on every matrix \
                 product (+50–70% time per text); call omega_embed::configure_candle_threads \
                 at the start of main"
            );
        }

        let tokenizer = load_tokenizer(&tokenizer_path, opts.max_tokens)?;
        let model = model::MiniLm::load(&weights_path, &cfg)?;
        let threads = opts
            .threads
            .or_else(env_threads)
            .unwrap_or_else(available_cores);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("omega-embed-{i}"))
            .build()?;
        Ok(Self {
            tokenizer,
            model,
            pool,
            max_batch_tokens: opts.max_batch_tokens,
        })
    }

    /// Token ids of `text`, with `[CLS]`/`[SEP]`, truncated to `max_tokens`.
    fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, true)
            .map_err(EmbedError::Tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds one text. The empty string works (it is `[CLS] [SEP]`).
    pub fn embed(&self, text: &str) -> Result<Embedding, EmbedError> {
        let ids = self.token_ids(text)?;
        let mut out = self.pool.install(|| self.model.embed_ids(&[ids]))?;
        out.pop().ok_or(EmbedError::EmptyBatch)
    }

    /// Embeds several texts, in order; the same vectors as [`Embedder::embed`] one by
    /// one, faster. There is no padding: the texts are packed into forward passes of
    /// at most `max_batch_tokens` tokens and each attends only to its own tokens.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Embedding>, EmbedError> {
        if texts.is_empty() {
            return Err(EmbedError::EmptyBatch);
        }
        let ids = texts
            .iter()
            .map(|t| self.token_ids(t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < ids.len() {
            // Greedy: as many texts as fit; one text always fits (max_tokens <= max_batch_tokens).
            let mut end = start + 1;
            let mut tokens = ids[start].len();
            while end < ids.len() && tokens + ids[end].len() <= self.max_batch_tokens {
                tokens += ids[end].len();
                end += 1;
            }
            let chunk = &ids[start..end];
            out.extend(self.pool.install(|| self.model.embed_ids(chunk))?);
            start = end;
        }
        Ok(out)
    }

    /// Number of tokens `text` becomes: `[CLS]` and `[SEP]` included, after truncation.
    pub fn token_count(&self, text: &str) -> Result<usize, EmbedError> {
        Ok(self.token_ids(text)?.len())
    }

    /// Threads in the embedder's pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// What runs the model, for logs and benchmarks.
    pub fn engine(&self) -> &'static str {
        "candle-0.11 f32 gemm + omega fused kernels"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No scalar fallback by accident: on aarch64 NEON is always there, on x86-64
    /// with AVX2 and FMA the kernels must use them (or AVX-512).
    #[test]
    fn kernels_use_the_cpus_simd() {
        let isa = kernel_isa();
        #[cfg(target_arch = "aarch64")]
        assert_eq!(isa, "neon");
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            assert!(isa == "avx2+fma" || isa == "avx512", "{isa}");
        }
        assert!(!isa.is_empty());
    }

    #[test]
    fn embedder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Embedder>();
    }
}
