//! The catalog actor: imports content, embeds it with the node's model off
//! the executor, and upserts it so TVs receive it page by page by catalog
//! version.
//!
//! Import formats ([`ImportFormat`], parsed by [`parse_import`], plain code):
//!
//! * JSON lines: one [`CatalogItem`] object per line (`id`, `title`, and
//!   optional `genres`, `year`, `description`); blank lines are skipped.
//! * MovieLens `u.item` (ml-100k): Latin-1, `|`-separated
//!   `id|title|release date|video date|url|19 genre flags`; ids become
//!   `ml100k:<id>`, the year comes from the title's `(YYYY)` suffix, genres
//!   from the flags in ml-100k's fixed genre order (`unknown` is dropped).
//! * MovieLens `movies.csv` (ml-latest and later): a header line, then
//!   `movieId,title,genres` with an optionally quoted title and `|`-separated
//!   genres; ids become `ml:<id>`.
//!
//! A malformed line refuses the whole import with its line number. Items are
//! embedded in batches of [`CatalogOptions::batch_size`] (32 by default) on
//! tokio's blocking pool and each batch is upserted as soon as it is
//! embedded, so a long import becomes visible to TVs progressively; a failure
//! midway keeps the batches already stored (re-importing is idempotent: a
//! later upsert of an id replaces it). A progress line is logged every
//! [`CatalogOptions::progress_every`] items.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;

use omega_protocol::{CatalogEntry, CatalogItem, ContentId, Embedding, PackedCatalogEntry};

use crate::store::{PatternStore, StoreError};

use super::{names, ActorsError};

/// Turns texts into embeddings (the node's model; a fake in tests).
pub trait TextEmbedder: Send + Sync + Debug {
    /// One unit embedding per text, in order.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, String>;
}

impl TextEmbedder for omega_embed::Embedder {
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, String> {
        let raw = self.embed_batch(texts).map_err(|e| e.to_string())?;
        raw.iter()
            .map(|v| Embedding::new(v.to_vec()).map_err(|e| e.to_string()))
            .collect()
    }
}

/// Why an import failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The node runs without a model.
    #[error("this node has no embedding model loaded; catalog imports are disabled")]
    NoModel,
    /// More items than one import may carry.
    #[error("{len} items in one import, at most {max}")]
    TooMany {
        /// Items given (or counted so far).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A line could not be parsed.
    #[error("line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An item breaks a catalog rule (length, characters, year).
    #[error("item {index}: {reason}")]
    Invalid {
        /// 1-based position in the import.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The model failed; `stored` items were stored before.
    #[error("embedding failed after {stored} items were stored: {reason}")]
    Embed {
        /// Items stored before the failure.
        stored: usize,
        /// The model's error.
        reason: String,
    },
    /// The store failed; `stored` items were stored before.
    #[error("store failed after {stored} items were stored: {source}")]
    Store {
        /// Items stored before the failure.
        stored: usize,
        /// The store's error.
        source: StoreError,
    },
}

/// Import parameters. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogOptions {
    /// Items per model call (1..=256); default 32.
    pub batch_size: usize,
    /// A progress line every this many items (≥ 1); default 256.
    pub progress_every: usize,
    /// Items one import may carry (≥ 1); default 100,000.
    pub max_items_per_import: usize,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            progress_every: 256,
            max_items_per_import: 100_000,
        }
    }
}

impl CatalogOptions {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), ActorsError> {
        if !(1..=256).contains(&self.batch_size)
            || self.progress_every == 0
            || self.max_items_per_import == 0
        {
            return Err(ActorsError::Config(
                "catalog batch size must be in 1..=256, progress_every and max_items_per_import at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    /// Items embedded and stored.
    pub items: usize,
    /// Model calls.
    pub batches: usize,
    /// The catalog version after the import.
    pub catalog_version: u64,
    /// Live catalog items after the import.
    pub catalog_items: u64,
    /// Wall time, seconds.
    pub duration_secs: f64,
    /// Embedding (and storing) rate, items per second.
    pub items_per_sec: f64,
}

/// An import body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON [`CatalogItem`] per line.
    JsonLines,
    /// MovieLens ml-100k `u.item`.
    MovieLensUItem,
    /// MovieLens `movies.csv`.
    MoviesCsv,
}

impl ImportFormat {
    /// Parses the admin API's `format` parameter: `jsonl` (or `json-lines`),
    /// `movielens-u-item`, `movies-csv`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "jsonl" | "json-lines" | "ndjson" => Some(Self::JsonLines),
            "movielens-u-item" | "u-item" => Some(Self::MovieLensUItem),
            "movies-csv" | "movielens-movies-csv" => Some(Self::MoviesCsv),
            _ => None,
        }
    }
}

/// ml-100k's genre order (`u.genre`), which `u.item`'s flags follow.
pub const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

fn parse_err(line: usize, reason: impl Into<String>) -> CatalogError {
    CatalogError::Parse {
        line,
        reason: reason.into(),
    }
}

/// The year of a MovieLens title's `(YYYY)` suffix.
fn title_year(title: &str) -> Option<u16> {
    let t = title.trim_end();
    let inner = t.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let y: u16 = inner[open + 1..].trim().parse().ok()?;
    (1870..=2100).contains(&y).then_some(y)
}

fn content_id(prefix: &str, raw: &str, line: usize) -> Result<ContentId, CatalogError> {
    let n: u64 = raw
        .trim()
        .parse()
        .map_err(|_| parse_err(line, format!("item id {raw:?} is not a number")))?;
    ContentId::new(format!("{prefix}:{n}")).map_err(|e| parse_err(line, e.to_string()))
}

fn parse_u_item_line(line: &str, n: usize) -> Result<CatalogItem, CatalogError> {
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() < 5 + ML100K_GENRES.len() {
        return Err(parse_err(
            n,
            format!(
                "expected {} '|'-separated fields, found {}",
                5 + ML100K_GENRES.len(),
                fields.len()
            ),
        ));
    }
    let flags = &fields[fields.len() - ML100K_GENRES.len()..];
    let genres = flags
        .iter()
        .zip(ML100K_GENRES)
        .filter(|(f, g)| f.trim() == "1" && *g != "unknown")
        .map(|(_, g)| g.to_string())
        .collect();
    let title = fields[1].trim().to_string();
    Ok(CatalogItem {
        id: content_id("ml100k", fields[0], n)?,
        year: title_year(&title),
        title,
        genres,
        description: String::new(),
    })
}

fn parse_movies_csv_line(line: &str, n: usize) -> Result<CatalogItem, CatalogError> {
    let (id, rest) = line
        .split_once(',')
        .ok_or_else(|| parse_err(n, "missing title"))?;
    let (title, genres) = match rest.strip_prefix('"') {
        Some(q) => {
            let end = q
                .rfind('"')
                .ok_or_else(|| parse_err(n, "unterminated quoted title"))?;
            (
                q[..end].replace("\"\"", "\""),
                q[end + 1..].trim_start_matches(','),
            )
        }
        None => {
            let (t, g) = rest
                .rsplit_once(',')
                .ok_or_else(|| parse_err(n, "missing genres"))?;
            (t.to_owned(), g)
        }
    };
    let title = title.trim().to_string();
    Ok(CatalogItem {
        id: content_id("ml", id, n)?,
        year: title_year(&title),
        title,
        genres: genres
            .trim()
            .split('|')
            .filter(|g| !g.is_empty() && *g != "(no genres listed)")
            .map(str::to_owned)
            .collect(),
        description: String::new(),
    })
}

/// Parses an import body. Stops with [`CatalogError::TooMany`] past
/// `max_items`, so a huge body costs at most `max_items` parsed items.
pub fn parse_import(
    format: ImportFormat,
    body: &[u8],
    max_items: usize,
) -> Result<Vec<CatalogItem>, CatalogError> {
    let text: std::borrow::Cow<'_, str> = match format {
        // ml-100k's files are Latin-1: every byte is one char.
        ImportFormat::MovieLensUItem => body.iter().map(|&b| b as char).collect::<String>().into(),
        _ => std::str::from_utf8(body)
            .map_err(|e| parse_err(0, format!("not UTF-8: {e}")))?
            .into(),
    };
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (format == ImportFormat::MoviesCsv && n == 1) {
            continue;
        }
        let item = match format {
            ImportFormat::JsonLines => serde_json::from_str::<CatalogItem>(line)
                .map_err(|e| parse_err(n, e.to_string()))?,
            ImportFormat::MovieLensUItem => parse_u_item_line(line, n)?,
            ImportFormat::MoviesCsv => parse_movies_csv_line(line, n)?,
        };
        if items.len() == max_items {
            return Err(CatalogError::TooMany {
                len: items.len() + 1,
                max: max_items,
            });
        }
        items.push(item);
    }
    Ok(items)
}

/// Messages of the catalog actor.
#[derive(Debug)]
pub enum CatalogMsg {
    /// Embed and store these (already validated) items.
    Import(
        Vec<CatalogItem>,
        RpcReplyPort<Result<ImportReport, CatalogError>>,
    ),
}

/// Start-up arguments of the catalog actor.
#[derive(Debug, Clone)]
pub struct CatalogArgs {
    /// The node's store.
    pub store: Arc<dyn PatternStore>,
    /// The model, if the node has one.
    pub embedder: Option<Arc<dyn TextEmbedder>>,
    /// Import parameters.
    pub options: CatalogOptions,
}

/// The catalog actor (see the module docs). Its state is its arguments.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogActor;

fn embed_and_store(
    store: &dyn PatternStore,
    embedder: &dyn TextEmbedder,
    batch: Vec<CatalogItem>,
    stored: usize,
) -> Result<u64, CatalogError> {
    let texts: Vec<String> = batch.iter().map(CatalogItem::embedding_text).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embeddings = embedder
        .embed_texts(&refs)
        .map_err(|reason| CatalogError::Embed { stored, reason })?;
    if embeddings.len() != batch.len() {
        return Err(CatalogError::Embed {
            stored,
            reason: format!("{} embeddings for {} texts", embeddings.len(), batch.len()),
        });
    }
    // Quantized once, here: the store and every response keep the int8 form.
    let entries: Vec<PackedCatalogEntry> = batch
        .into_iter()
        .zip(embeddings)
        .map(|(item, embedding)| CatalogEntry {
            item,
            embedding: embedding.to_i8(),
        })
        .collect();
    store
        .upsert_catalog(&entries)
        .map_err(|source| CatalogError::Store { stored, source })
}

async fn import(
    args: &CatalogArgs,
    items: Vec<CatalogItem>,
) -> Result<Result<ImportReport, CatalogError>, ActorProcessingErr> {
    let Some(embedder) = args.embedder.clone() else {
        return Ok(Err(CatalogError::NoModel));
    };
    let started = Instant::now();
    let total = items.len();
    let mut done = 0usize;
    let mut batches = 0usize;
    let mut next_log = args.options.progress_every;
    let mut version = args.store.catalog_version().unwrap_or(0);
    let mut rest = items.into_iter();
    tracing::info!(items = total, "catalog import started");
    loop {
        let batch: Vec<CatalogItem> = rest.by_ref().take(args.options.batch_size).collect();
        if batch.is_empty() {
            break;
        }
        let n = batch.len();
        let store = Arc::clone(&args.store);
        let emb = Arc::clone(&embedder);
        let result = tokio::task::spawn_blocking(move || {
            embed_and_store(store.as_ref(), emb.as_ref(), batch, done)
        })
        .await?;
        match result {
            Ok(v) => version = v,
            Err(e) => {
                tracing::error!(error = %e, "catalog import failed");
                return Ok(Err(e));
            }
        }
        done += n;
        batches += 1;
        metrics::counter!(names::CATALOG_EMBEDDED).increment(n as u64);
        if done >= next_log || done == total {
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                done,
                total,
                items_per_sec = done as f64 / secs.max(1e-9),
                "catalog import progress"
            );
            while next_log <= done {
                next_log += args.options.progress_every;
            }
        }
    }
    let store = Arc::clone(&args.store);
    let len = tokio::task::spawn_blocking(move || store.catalog_len()).await?;
    let catalog_items = match len {
        Ok(l) => l,
        Err(source) => {
            return Ok(Err(CatalogError::Store {
                stored: done,
                source,
            }))
        }
    };
    metrics::gauge!(names::CATALOG_ITEMS).set(catalog_items as f64);
    let duration_secs = started.elapsed().as_secs_f64();
    Ok(Ok(ImportReport {
        items: done,
        batches,
        catalog_version: version,
        catalog_items,
        duration_secs,
        items_per_sec: done as f64 / duration_secs.max(1e-9),
    }))
}

impl Actor for CatalogActor {
    type Msg = CatalogMsg;
    type State = CatalogArgs;
    type Arguments = CatalogArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CatalogArgs,
    ) -> Result<CatalogArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: CatalogMsg,
        state: &mut CatalogArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CatalogMsg::Import(items, reply) => {
                let result = import(state, items).await?;
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_formats() {
        let u = b"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n\
                  2|Caf\xe9 (1994)|01-Jan-1994||http://x|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n";
        let items = parse_import(ImportFormat::MovieLensUItem, u, 10).expect("u.item");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id.as_str(), "ml100k:1");
        assert_eq!(items[0].year, Some(1995));
        assert_eq!(items[0].genres, ["Animation", "Children's", "Comedy"]);
        assert_eq!(items[1].title, "Café (1994)");
        assert!(items[1].genres.is_empty());

        let csv = "movieId,title,genres\n11,\"American President, The (1995)\",Comedy|Drama\n12,Heat (1995),(no genres listed)\n";
        let items = parse_import(ImportFormat::MoviesCsv, csv.as_bytes(), 10).expect("csv");
        assert_eq!(items[0].title, "American President, The (1995)");
        assert_eq!(items[0].genres, ["Comedy", "Drama"]);
        assert!(items[1].genres.is_empty());

        let jl =
            "{\"id\":\"x-1\",\"title\":\"A\"}\n\n{\"id\":\"x-2\",\"title\":\"B\",\"year\":2001}\n";
        let items = parse_import(ImportFormat::JsonLines, jl.as_bytes(), 10).expect("jsonl");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].year, Some(2001));

        assert!(matches!(
            parse_import(ImportFormat::JsonLines, b"{\"id\":1}\n", 10),
            Err(CatalogError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            parse_import(ImportFormat::JsonLines, jl.as_bytes(), 1),
            Err(CatalogError::TooMany { max: 1, .. })
        ));
        assert!(parse_import(ImportFormat::MovieLensUItem, b"garbage", 10).is_err());
        assert_eq!(
            ImportFormat::from_name("movies-csv"),
            Some(ImportFormat::MoviesCsv)
        );
        assert_eq!(ImportFormat::from_name("xml"), None);
    }
}
