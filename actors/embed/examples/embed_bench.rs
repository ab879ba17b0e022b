//! Embedding benchmark: prints one JSON line.
//!
//! ```text
//! cargo run --release -p omega-embed --example embed_bench -- <model_dir> [threads] [--no-thread-env] [--dump=<file>] [--texts=<file>]
//! ```
//!
//! Measures: `load_ms` (Embedder::load), `embed_p50_us` / `embed_p99_us` over 300
//! distinct short texts (~16 tokens each) embedded one at a time after a warm-up, and
//! `embed_batch32_per_s` over 10 batches of 32 distinct texts. Then 1,000 texts of 20
//! words drawn across the whole vocabulary (`vocab_rows`: distinct token ids they use),
//! one at a time, to touch many rows of the word-embedding table. Memory (`mem`, MiB,
//! from /proc/self/status, Linux only): `VmRSS`, `RssAnon`, `RssFile` and `VmHWM`
//! (peak, file-backed pages included) before load, after load, after the benchmark and
//! after the 1,000 texts. `--dump=<file>` writes every embedding computed (raw
//! little-endian f32) to compare builds bit for bit: the 300 short texts in order,
//! then the 320 batched ones, then the 1,000 varied ones. `--texts=<file>` writes the
//! texts measured as JSON (`warmup`, `single`, `batch`: lists of strings), so that
//! another engine can measure the same (`scripts/compare-ort.sh`).
//!
//! Sets mimalloc as the global allocator and calls `configure_candle_threads` first, as
//! the daemon and the node do (see the crate docs); `--no-thread-env` skips the latter
//! to measure what it is worth. Build with `--features bench-system-alloc` to measure
//! glibc's allocator instead. On a shared machine, `chrt -f 10` (as root) keeps other
//! processes from preempting the run.

#[cfg(not(feature = "bench-system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use omega_embed::{Embedder, EmbedderOptions};
use std::path::PathBuf;
use std::time::Instant;

/// `n` distinct movie-like titles of ~16 tokens; `salt` picks another set.
fn texts(n: usize, salt: usize) -> Vec<String> {
    const ADJ: [&str; 16] = [
        "quiet", "broken", "golden", "hidden", "last", "silent", "wild", "frozen", "lost", "dark",
        "bright", "secret", "little", "great", "strange", "lonely",
    ];
    const NOUN: [&str; 16] = [
        "river", "city", "garden", "kingdom", "island", "mountain", "forest", "harbor", "station",
        "castle", "desert", "valley", "bridge", "tower", "ocean", "village",
    ];
    const GENRE: [&str; 12] = [
        "Drama",
        "Comedy",
        "Thriller",
        "Romance",
        "Horror",
        "Action",
        "Adventure",
        "Documentary",
        "Animation",
        "Western",
        "Mystery",
        "Fantasy",
    ];
    (0..n)
        .map(|i| {
            let j = i + salt * 7919;
            format!(
                "The {} {} of {} ({}). {}, {}, {}",
                ADJ[j % 16],
                NOUN[(j / 16) % 16],
                NOUN[(j / 3 + 5) % 16],
                1950 + (j / 256 + j) % 70,
                GENRE[j % 12],
                GENRE[(j / 12 + 3) % 12],
                GENRE[(j / 5 + 7) % 12]
            )
        })
        .collect()
}

/// `n` texts of 20 whole-word vocabulary entries each, spread over the vocabulary.
/// `tokenizer.json`'s vocabulary is scanned by hand rather than parsed into a
/// `serde_json::Value`, whose megabytes the allocator would keep resident before load.
fn vocab_texts(dir: &std::path::Path, n: usize) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let json = std::fs::read_to_string(dir.join("tokenizer.json"))?;
    let start = json
        .find("\"vocab\":")
        .ok_or("no vocab in tokenizer.json")?;
    let mut rest = &json[start + 8..];
    rest = &rest[rest.find('{').ok_or("no vocab object")? + 1..];
    let mut words = Vec::new();
    // Entries are `"word":id`; stop at the first that is not.
    while let Some(r) = rest.trim_start_matches([',', ' ', '\n']).strip_prefix('"') {
        let end = r.find("\":").ok_or("bad vocab entry")?;
        let word = &r[..end];
        let digits = r[end + 2..].trim_start();
        let id_len = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        if word.len() > 1 && word.chars().all(|c| c.is_ascii_lowercase()) {
            words.push(word);
        }
        rest = &digits[id_len..];
        if id_len == 0 {
            break;
        }
    }
    Ok((0..n)
        .map(|i| {
            (0..20)
                .map(|k| words[(i * 20 + k) * 7919 % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect())
}

/// A field of /proc/self/status (`VmRSS`, `VmHWM`, `RssAnon`, `RssFile`) in MiB, as JSON.
fn status_mib(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "null".to_string(), |kb| format!("{:.1}", kb / 1024.0))
}

fn proc_status() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap_or_default()
}

/// `{"VmRSS": .., "RssAnon": .., "RssFile": .., "VmHWM": ..}` in MiB.
fn mem() -> String {
    let s = proc_status();
    let fields: Vec<String> = ["VmRSS", "RssAnon", "RssFile", "VmHWM"]
        .iter()
        .map(|f| format!("\"{f}\": {}", status_mib(&s, f)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_thread_env = args.iter().any(|a| a == "--no-thread-env");
    let dump_path = args.iter().find_map(|a| a.strip_prefix("--dump="));
    let texts_path = args.iter().find_map(|a| a.strip_prefix("--texts="));
    let mut dump: Vec<u8> = Vec::new();
    let mut keep = |e: &omega_embed::Embedding| {
        if dump_path.is_some() {
            dump.extend(e.iter().flat_map(|v| v.to_le_bytes()));
        }
    };
    let mut args = args.iter().filter(|a| !a.starts_with("--"));
    let usage = "usage: embed_bench <model_dir> [threads] [--no-thread-env] [--dump=<file>] \
                 [--texts=<file>]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let threads = args.next().map(|t| t.parse::<usize>()).transpose()?;
    if !no_thread_env {
        omega_embed::configure_candle_threads(threads);
    }
    let opts = EmbedderOptions {
        threads,
        ..EmbedderOptions::default()
    };

    let varied = vocab_texts(&dir, 1000)?;
    let mem_before_load = mem();
    let start = Instant::now();
    let embedder = Embedder::load(&dir, opts)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let mem_after_load = mem();

    let warmup = texts(30, 99);
    for t in &warmup {
        embedder.embed(t)?;
    }
    let single = texts(300, 0);
    let distinct: std::collections::HashSet<&String> = single.iter().collect();
    assert_eq!(
        distinct.len(),
        single.len(),
        "the short texts must be distinct"
    );
    let tokens: usize = single
        .iter()
        .map(|t| embedder.token_count(t))
        .sum::<Result<_, _>>()?;
    let mut lat_us = Vec::with_capacity(single.len());
    for t in &single {
        let start = Instant::now();
        let e = embedder.embed(t)?;
        lat_us.push(start.elapsed().as_secs_f64() * 1e6);
        keep(&e);
    }
    lat_us.sort_by(f64::total_cmp);
    let pct = |p: f64| lat_us[((lat_us.len() - 1) as f64 * p).round() as usize];

    let batch_texts = texts(320, 1);
    let refs: Vec<&str> = batch_texts.iter().map(String::as_str).collect();
    embedder.embed_batch(&refs[..32])?; // warm-up at this size
    let start = Instant::now();
    let mut batched = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(32) {
        batched.extend(embedder.embed_batch(chunk)?);
    }
    let batch_per_s = refs.len() as f64 / start.elapsed().as_secs_f64();
    batched.iter().for_each(&mut keep);
    let mem_after_bench = mem();

    for t in &varied {
        keep(&embedder.embed(t)?);
    }
    let mem_after_varied = mem();
    // Counted after the measurements, with a tokenizer of its own.
    let tokenizer =
        tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| e.to_string())?;
    let mut vocab_rows = std::collections::HashSet::new();
    for t in &varied {
        let ids = tokenizer
            .encode_fast(t.as_str(), true)
            .map_err(|e| e.to_string())?;
        vocab_rows.extend(ids.get_ids().to_vec());
    }
    if let Some(path) = dump_path {
        std::fs::write(path, &dump)?;
    }
    if let Some(path) = texts_path {
        let json = serde_json::json!({"warmup": warmup, "single": single, "batch": batch_texts});
        std::fs::write(path, json.to_string())?;
    }

    println!(
        "{{\"embed_p50_us\": {:.0}, \"embed_p99_us\": {:.0}, \"embed_batch32_per_s\": {:.1}, \
         \"load_ms\": {:.1}, \"threads\": {}, \"engine\": \"{}\", \"kernel_isa\": \"{}\", \
         \"thread_env\": {}, \
         \"short_tokens_avg\": {:.1}, \"vocab_rows\": {}, \"mem\": {{\"before_load\": {}, \
         \"after_load\": {}, \"after_bench\": {}, \"after_1000_varied\": {}}}}}",
        pct(0.50),
        pct(0.99),
        batch_per_s,
        load_ms,
        embedder.threads(),
        embedder.engine(),
        omega_embed::kernel_isa(),
        std::env::var("RAYON_NUM_THREADS").is_ok(),
        tokens as f64 / single.len() as f64,
        vocab_rows.len(),
        mem_before_load,
        mem_after_load,
        mem_after_bench,
        mem_after_varied,
    );
    Ok(())
}
