//! The catalog actor: imports content, embeds it with the node's model off
//! the executor, and upserts it so TVs receive it page by page by catalog
//! version.
//!
//! Import formats: [`ImportFormat`], parsed by [`parse_import`]
//! (`omega_protocol::catalog_import`, shared with the TV and the simulator).
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

pub use omega_protocol::catalog_import::ImportFormat;
use omega_protocol::catalog_import::{self, ImportError};
use omega_protocol::{CatalogEntry, CatalogItem, Embedding, PackedCatalogEntry};

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

/// Parses an import body (see `omega_protocol::catalog_import`); its
/// errors become [`CatalogError::Parse`] and [`CatalogError::TooMany`].
pub fn parse_import(
    format: ImportFormat,
    body: &[u8],
    max_items: usize,
) -> Result<Vec<CatalogItem>, CatalogError> {
    catalog_import::parse_import(format, body, max_items).map_err(|e| match e {
        ImportError::Parse { line, reason } => CatalogError::Parse { line, reason },
        ImportError::TooMany { len, max } => CatalogError::TooMany { len, max },
    })
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
    fn import_errors_keep_their_line_and_limit() {
        // The formats themselves are tested in omega_protocol::catalog_import.
        let jl = "{\"id\":\"x-1\",\"title\":\"A\"}\n{\"id\":\"x-2\",\"title\":\"B\"}\n";
        assert_eq!(
            parse_import(ImportFormat::JsonLines, jl.as_bytes(), 10).map(|v| v.len()),
            Ok(2)
        );
        assert!(matches!(
            parse_import(ImportFormat::JsonLines, b"\n{\"id\":1}\n", 10),
            Err(CatalogError::Parse { line: 2, .. })
        ));
        assert!(matches!(
            parse_import(ImportFormat::JsonLines, jl.as_bytes(), 1),
            Err(CatalogError::TooMany { max: 1, .. })
        ));
    }
}
