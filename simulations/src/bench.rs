//! `omega-sim bench brain [--json]`: the TV brain's figures (BENCHMARKS.md).
//!
//! The daemon's actors run in process ([`omega_brain::actors::Brain`], the
//! same calls the socket server dispatches to) with the real model and redb.
//!
//! Data: `--items` synthetic catalog items (titles, genres and descriptions
//! from word lists, ≈ 16 tokens, embedded by the real model through the
//! Inference actor) and `--patterns` local patterns (one successful watch per
//! pattern, formed with a join threshold above 1 so every watch starts its own
//! pattern), leaving the last 1,000 episodes in the ring. Building that takes
//! a while (the embeddings), so the built data directory is cached under
//! `--cache-dir` (default `target/bench-brain/items-N-patterns-M`) and copied
//! to a temporary directory for each run; the JSON says whether the cache was
//! `built` or `reused`. The build runs in a child process (`omega-sim bench
//! brain --build-only`), so its memory never counts in `rss_mb`.
//!
//! Measured, in order: `boot_ms` (Brain::start on the copied directory to the
//! first answered `recommend`, the model loading in the background), the
//! model (`embed_*` after it is loaded: 200 short texts one by one, 20 batches
//! of 32), `recommend` without a mood (200 warm-up + 2,000 timed calls),
//! `recommend` with 200 moods never seen before, `observe` (1,000 catalog
//! items, each until its durable commit), and the peak RSS (VmHWM).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use omega_brain::actors::{Brain, BrainConfig};
use omega_brain::RecommendRequest;
use omega_protocol::{CatalogItem, ContentId, ViewingContext, ViewingEvent};
use serde_json::json;

/// Options of `bench brain`.
#[derive(Debug, Clone)]
pub struct BrainBenchOptions {
    /// Model directory.
    pub model_dir: PathBuf,
    /// Catalog items.
    pub items: usize,
    /// Local patterns.
    pub patterns: usize,
    /// Where built data directories are cached.
    pub cache_dir: PathBuf,
}

const ADJ: [&str; 24] = [
    "quiet", "dark", "funny", "brave", "lost", "golden", "silent", "wild", "broken", "hidden",
    "last", "first", "frozen", "burning", "secret", "little", "endless", "electric", "haunted",
    "gentle", "royal", "distant", "savage", "lucky",
];
const NOUN: [&str; 24] = [
    "river",
    "city",
    "detective",
    "kingdom",
    "summer",
    "robot",
    "island",
    "family",
    "heist",
    "voyage",
    "garden",
    "planet",
    "witness",
    "orchestra",
    "mountain",
    "village",
    "empire",
    "doctor",
    "stranger",
    "forest",
    "champion",
    "engine",
    "harbor",
    "letter",
];
const GENRE: [&str; 12] = [
    "Comedy",
    "Drama",
    "Horror",
    "Documentary",
    "Animation",
    "Thriller",
    "Romance",
    "Sci-Fi",
    "Western",
    "Musical",
    "Crime",
    "Adventure",
];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as usize
    }
}

fn item(i: usize, rng: &mut Lcg) -> Result<CatalogItem> {
    let a = ADJ[rng.next() % ADJ.len()];
    let n = NOUN[rng.next() % NOUN.len()];
    let g = GENRE[rng.next() % GENRE.len()];
    let n2 = NOUN[rng.next() % NOUN.len()];
    Ok(CatalogItem {
        id: ContentId::new(format!("item-{i}"))?,
        title: format!("The {a} {n} {i}"),
        genres: vec![g.to_string()],
        year: Some(1950 + (i % 70) as u16),
        description: format!("a {a} {g} about a {n2}"),
    })
}

fn ctx(i: usize) -> Result<ViewingContext> {
    Ok(ViewingContext::new(
        ((i * 7) % 24) as u8,
        ((i / 24) % 7) as u8,
    )?)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

fn vm_hwm_mb() -> f64 {
    proc_status_mb("VmHWM:")
}

/// A `/proc/self/status` memory line (`VmHWM:`, `VmRSS:`, `RssAnon:` …) in MiB.
fn proc_status_mb(key: &str) -> f64 {
    crate::load::local::proc_status_mb("/proc/self/status", key).unwrap_or(0.0)
}

/// Logs the process's memory on stderr at a stage of the run (the profile
/// behind `rss_mb`).
fn memory_stage(stage: &str) {
    eprintln!(
        "  memory after {stage}: VmRSS {:.1} MiB (anon {:.1}, file {:.1}), VmHWM {:.1} MiB",
        proc_status_mb("VmRSS:"),
        proc_status_mb("RssAnon:"),
        proc_status_mb("RssFile:"),
        proc_status_mb("VmHWM:")
    );
}

/// The limits both the build and the run use: large enough for the sizes
/// asked for, so the timed observes do not evict patterns past a default.
fn brain_config(opts: &BrainBenchOptions, dir: &Path) -> BrainConfig {
    let mut cfg = BrainConfig::new(dir, &opts.model_dir);
    cfg.store.patterns.max_patterns = cfg.store.patterns.max_patterns.max(opts.patterns);
    cfg.store.max_catalog_items = cfg.store.max_catalog_items.max(opts.items);
    cfg
}

async fn build(opts: &BrainBenchOptions, dir: &Path) -> Result<()> {
    eprintln!(
        "bench brain: building {} items (real embeddings) and {} patterns in {} (cached for next runs)",
        opts.items,
        opts.patterns,
        dir.display()
    );
    let _ = std::fs::remove_dir_all(dir);
    let mut cfg = brain_config(opts, dir);
    cfg.store.patterns.assign_threshold = 1.01; // every successful watch starts a pattern
    let (brain, _task) = Brain::start(cfg).await?;
    let mut rng = Lcg(42);
    let items: Vec<CatalogItem> = (0..opts.items)
        .map(|i| item(i, &mut rng))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    for (n, chunk) in items.chunks(512).enumerate() {
        brain.upsert_catalog(chunk.to_vec()).await?;
        eprintln!(
            "  {} / {} items ({:.0} s)",
            ((n + 1) * 512).min(opts.items),
            opts.items,
            t.elapsed().as_secs_f64()
        );
    }
    // One successful watch per pattern; 16 in flight so snapshot publication coalesces.
    let mut set = tokio::task::JoinSet::new();
    for p in 0..opts.patterns {
        if set.len() >= 16 {
            if let Some(r) = set.join_next().await {
                r??;
            }
        }
        let b = brain.clone();
        let ev = ViewingEvent::new(
            ContentId::new(format!("item-{}", p % opts.items.max(1)))?,
            0.95,
            1_700_000_000 + p as u64,
            ctx(p)?,
        )?;
        set.spawn(async move { b.observe(ev).await.map(|_| ()) });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let st = brain.stats().await?;
    eprintln!(
        "  built: {} items, {} patterns, {} episodes ({:.0} s)",
        st.catalog_items,
        st.local_patterns,
        st.episodes,
        t.elapsed().as_secs_f64()
    );
    brain.shutdown(Duration::from_secs(30)).await;
    std::fs::write(dir.join("READY"), format!("{}\n", st.local_patterns))?;
    Ok(())
}

fn cache_path(opts: &BrainBenchOptions) -> PathBuf {
    opts.cache_dir
        .join(format!("items-{}-patterns-{}", opts.items, opts.patterns))
}

/// Builds the cached data directory (`bench brain --build-only`).
pub async fn build_brain_data(opts: BrainBenchOptions) -> Result<()> {
    build(&opts, &cache_path(&opts)).await
}

/// Runs `omega-sim bench brain --build-only` with the same sizes and waits.
fn build_in_child(opts: &BrainBenchOptions) -> Result<()> {
    let exe = std::env::current_exe().context("locating omega-sim")?;
    let status = std::process::Command::new(exe)
        .args(["bench", "brain", "--build-only"])
        .arg("--items")
        .arg(opts.items.to_string())
        .arg("--patterns")
        .arg(opts.patterns.to_string())
        .arg("--model-dir")
        .arg(&opts.model_dir)
        .arg("--cache-dir")
        .arg(&opts.cache_dir)
        .status()
        .context("starting the data build")?;
    if !status.success() {
        bail!("building the benchmark data failed ({status})");
    }
    Ok(())
}

/// Runs the benchmark and returns the JSON report.
pub async fn run_brain(opts: BrainBenchOptions) -> Result<serde_json::Value> {
    let cached = cache_path(&opts);
    let reused = cached.join("READY").exists();
    if !reused {
        build_in_child(&opts)?;
    }
    let tmp = tempfile::tempdir()?;
    copy_dir(&cached, tmp.path()).context("copying the cached data directory")?;
    std::fs::remove_file(tmp.path().join("READY")).ok();

    // Boot: construction to the first answered recommend.
    let t0 = Instant::now();
    let (brain, _task) = Brain::start(brain_config(&opts, tmp.path())).await?;
    let first = brain.recommend(RecommendRequest::new(ctx(3)?, 10)).await?;
    let boot_ms = t0.elapsed().as_secs_f64() * 1e3;
    if first.is_empty() && opts.items > 0 {
        bail!("the first recommend returned nothing");
    }
    memory_stage("boot");
    let stats = brain.stats().await?;

    // Model (waits for the background load on the first call).
    brain.embed("warm up".into()).await?;
    let mut rng = Lcg(7);
    let mut embed_t = Vec::new();
    for i in 0..200 {
        let text = format!(
            "a {} {} about the {} {} {i}",
            ADJ[rng.next() % 24],
            GENRE[rng.next() % 12],
            ADJ[rng.next() % 24],
            NOUN[rng.next() % 24]
        );
        let t = Instant::now();
        brain.embed(text).await?;
        embed_t.push(us(t.elapsed()));
    }
    let mut batch_texts = 0usize;
    let tb = Instant::now();
    for b in 0..20 {
        let texts: Vec<String> = (0..32)
            .map(|i| {
                format!(
                    "the {} {} of {} batch {b} text {i}",
                    ADJ[rng.next() % 24],
                    NOUN[rng.next() % 24],
                    GENRE[rng.next() % 12]
                )
            })
            .collect();
        batch_texts += brain.embed_batch(texts).await?.len();
    }
    let embed_batch32_per_s = batch_texts as f64 / tb.elapsed().as_secs_f64();
    memory_stage("model load and embedding");

    // recommend without a mood.
    let n_items = opts.items.max(1);
    let mut rec_t = Vec::new();
    for i in 0..2200usize {
        let q = RecommendRequest {
            recent: vec![ContentId::new(format!("item-{}", (i * 31) % n_items))?],
            ..RecommendRequest::new(ctx(i)?, 10)
        };
        let t = Instant::now();
        let out = brain.recommend(q).await?;
        if i >= 200 {
            rec_t.push(us(t.elapsed()));
        }
        if out.is_empty() && opts.items > 0 {
            bail!("recommend returned nothing");
        }
    }
    memory_stage("recommend");
    // recommend with moods never seen before.
    let mut mood_t = Vec::new();
    for i in 0..200usize {
        let q = RecommendRequest {
            mood: Some(format!(
                "something {} and {} like a {} {i}",
                ADJ[rng.next() % 24],
                ADJ[rng.next() % 24],
                NOUN[rng.next() % 24]
            )),
            ..RecommendRequest::new(ctx(i)?, 10)
        };
        let t = Instant::now();
        brain.recommend(q).await?;
        mood_t.push(us(t.elapsed()));
    }
    // observe until durable.
    let mut obs_t = Vec::new();
    for i in 0..1000usize {
        let ev = ViewingEvent::new(
            ContentId::new(format!("item-{}", (i * 17) % n_items))?,
            if i % 3 == 0 { 0.4 } else { 0.9 },
            1_800_000_000 + i as u64,
            ctx(i)?,
        )?;
        let t = Instant::now();
        brain.observe(ev).await?;
        obs_t.push(us(t.elapsed()));
    }
    memory_stage("observe");
    brain.shutdown(Duration::from_secs(30)).await;

    Ok(json!({
        "items": stats.catalog_items,
        "patterns": stats.local_patterns,
        "episodes": stats.episodes,
        "recommend_p50_us": pct(&mut rec_t, 0.5).round(),
        "recommend_p99_us": pct(&mut rec_t, 0.99).round(),
        "recommend_mood_p99_us": pct(&mut mood_t, 0.99).round(),
        "observe_p50_us": pct(&mut obs_t, 0.5).round(),
        "observe_p99_us": pct(&mut obs_t, 0.99).round(),
        "embed_p50_us": pct(&mut embed_t, 0.5).round(),
        "embed_p99_us": pct(&mut embed_t, 0.99).round(),
        "embed_batch32_per_s": embed_batch32_per_s.round(),
        "boot_ms": (boot_ms * 10.0).round() / 10.0,
        "rss_mb": (vm_hwm_mb() * 10.0).round() / 10.0,
        "data": if reused { "reused" } else { "built" },
        "data_cache": cached,
    }))
}
