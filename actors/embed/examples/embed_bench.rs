//! Embedding benchmark: prints one JSON line.
//!
//! ```text
//! cargo run --release -p omega-embed --example embed_bench -- <model_dir> [threads] [--no-thread-env]
//! ```
//!
//! Measures: `load_ms` (Embedder::load), `embed_p50_us` / `embed_p99_us` over 300
//! distinct short texts (~16 tokens each) embedded one at a time after a warm-up, and
//! `embed_batch32_per_s` over 10 batches of 32 distinct texts. Also the resident memory
//! right after load and its peak (from /proc/self/status, Linux only).
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let no_thread_env = args.iter().any(|a| a == "--no-thread-env");
    let mut args = args.iter().filter(|a| !a.starts_with("--"));
    let usage = "usage: embed_bench <model_dir> [threads] [--no-thread-env]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let threads = args.next().map(|t| t.parse::<usize>()).transpose()?;
    if !no_thread_env {
        omega_embed::configure_candle_threads(threads);
    }
    let opts = EmbedderOptions {
        threads,
        ..EmbedderOptions::default()
    };

    let start = Instant::now();
    let embedder = Embedder::load(&dir, opts)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let after_load = proc_status();

    for t in texts(30, 99) {
        embedder.embed(&t)?;
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
        embedder.embed(t)?;
        lat_us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    lat_us.sort_by(f64::total_cmp);
    let pct = |p: f64| lat_us[((lat_us.len() - 1) as f64 * p).round() as usize];

    let batch_texts = texts(320, 1);
    let refs: Vec<&str> = batch_texts.iter().map(String::as_str).collect();
    embedder.embed_batch(&refs[..32])?; // warm-up at this size
    let start = Instant::now();
    for chunk in refs.chunks(32) {
        embedder.embed_batch(chunk)?;
    }
    let batch_per_s = refs.len() as f64 / start.elapsed().as_secs_f64();
    let at_end = proc_status();

    println!(
        "{{\"embed_p50_us\": {:.0}, \"embed_p99_us\": {:.0}, \"embed_batch32_per_s\": {:.1}, \
         \"load_ms\": {:.1}, \"threads\": {}, \"engine\": \"{}\", \"thread_env\": {}, \
         \"short_tokens_avg\": {:.1}, \"rss_after_load_mib\": {}, \"rss_anon_after_load_mib\": {}, \
         \"rss_file_after_load_mib\": {}, \"peak_rss_mib\": {}}}",
        pct(0.50),
        pct(0.99),
        batch_per_s,
        load_ms,
        embedder.threads(),
        embedder.engine(),
        std::env::var("RAYON_NUM_THREADS").is_ok(),
        tokens as f64 / single.len() as f64,
        status_mib(&after_load, "VmRSS"),
        status_mib(&after_load, "RssAnon"),
        status_mib(&after_load, "RssFile"),
        status_mib(&at_end, "VmHWM"),
    );
    Ok(())
}
