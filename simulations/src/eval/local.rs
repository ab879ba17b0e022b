//! `local`: each user as a TV that never synced, running the TV brain's own
//! code in process: omega-brain's [`BrainStore`] (redb, on an in-memory
//! backend: no file, no fsync, same transactions) and omega-brain-core's
//! recommender, over one usearch [`CatalogIndex`] shared by all TVs (every TV
//! holds the same catalog under the same keys; checked per user).
//!
//! Per user: a fresh store gets the whole catalog (embedded once by the real
//! MiniLM, [`super::embeddings`]), then observes the training interactions
//! in time order as viewing events (watch fraction = rating / 5; hour and
//! weekday from the timestamp, UTC), then answers a `recommend` for 10
//! titles at the test interaction's hour and weekday, as an app would ask
//! (no `recent`, no mood).
//!
//! * LOO-full: the TV's answer as returned, in its order; a title the user
//!   already watched in it is a miss.
//! * LOO-100: the same pipeline restricted to the 100 candidates
//!   ([`omega_brain_core::recommend_among`], with a candidate search over
//!   those items only).
//!
//! Each title carries the TV's `confidence`, so the report has hit rate by
//! confidence band.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use omega_brain::{BrainStore, CatalogIndex, IndexConfig, StoreConfig};
use omega_brain_core::{
    recommend, recommend_among, BrainState, CandidateSearch, CoreError, RecommendRequest,
    Recommendation, RecommenderConfig,
};
use omega_protocol::embedding::dot;
use omega_protocol::{CatalogEntry, ContentId, ViewingContext, ViewingEvent};

use super::{Candidates, Method, Ranked, Split};
use crate::movielens::Interaction;

/// When a Unix timestamp falls, in UTC: (hour 0–23, weekday 0 = Monday).
pub fn utc_context(timestamp: u64) -> Result<ViewingContext> {
    let hour = ((timestamp % 86_400) / 3_600) as u8;
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    let weekday = ((timestamp / 86_400 + 3) % 7) as u8;
    Ok(ViewingContext::new(hour, weekday)?)
}

/// The watch fraction a rating stands for: rating / 5, in 0–1.
pub fn watch_fraction(rating: f32) -> f32 {
    (rating / 5.0).clamp(0.0, 1.0)
}

/// The viewing event of a training interaction.
pub(crate) fn event(id: &ContentId, x: &Interaction) -> Result<ViewingEvent> {
    Ok(ViewingEvent::new(
        id.clone(),
        watch_fraction(x.rating),
        x.timestamp,
        utc_context(x.timestamp)?,
    )?)
}

/// The catalog every TV holds (the data set's items with their MiniLM
/// embeddings) and one usearch index over it, shared by all TVs: every TV
/// holds the same catalog under the same keys (checked per user by the
/// catalog fingerprint).
pub(crate) struct SharedCatalog {
    /// The items in data-set order, with their embeddings.
    pub entries: Vec<CatalogEntry>,
    index: CatalogIndex,
    fingerprint: u64,
    item_of: HashMap<ContentId, u32>,
    /// The TVs' store configuration (room for the whole catalog).
    pub store: StoreConfig,
}

impl SharedCatalog {
    /// Embeds the data set's items (cached under `cache_dir`) and indexes
    /// them under the keys a TV gives them when it takes the catalog in
    /// data-set order in one update.
    pub fn build(
        split: &Split,
        model_dir: &std::path::Path,
        cache_dir: &std::path::Path,
        progress: &ProgressBar,
    ) -> Result<Self> {
        let items = &split.dataset.items;
        let (vectors, _) =
            super::embeddings::catalog_embeddings(items, model_dir, cache_dir, progress)?;
        let entries: Vec<CatalogEntry> = items
            .iter()
            .zip(vectors)
            .map(|(item, embedding)| CatalogEntry {
                item: item.clone(),
                embedding,
            })
            .collect();
        let store = StoreConfig {
            max_catalog_items: StoreConfig::default().max_catalog_items.max(entries.len()),
            ..StoreConfig::default()
        };
        let mut template = BrainStore::open_with_backend(
            redb::backends::InMemoryBackend::new(),
            "eval-template.redb",
            store,
        )?;
        template.update_catalog(&entries, &[])?;
        let mut me = Self {
            entries,
            index: CatalogIndex::build(&template.state().catalog, IndexConfig::default())
                .context("building the catalog index")?,
            fingerprint: 0,
            item_of: HashMap::new(),
            store,
        };
        me.reindex(&template.state())?;
        Ok(me)
    }

    /// Indexes the catalog as `st` holds it (its keys), for TVs that took
    /// the catalog in another order (from a node's pages).
    pub fn reindex(&mut self, st: &BrainState) -> Result<()> {
        self.index = CatalogIndex::build(&st.catalog, IndexConfig::default())
            .context("building the catalog index")?;
        self.fingerprint = st.catalog.fingerprint();
        self.item_of = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| Ok((e.item.id.clone(), u32::try_from(i)?)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// The data-set item of a content id.
    pub fn item_of(&self, id: &ContentId) -> Option<u32> {
        self.item_of.get(id).copied()
    }

    /// The TV's top `k` for a user whose test interaction is `test`, as
    /// [`Self::recommendations`] returns them, as data-set items.
    pub fn rank(
        &self,
        st: &BrainState,
        test: &Interaction,
        candidates: Candidates<'_>,
        k: usize,
        cfg: &RecommenderConfig,
    ) -> Result<Vec<Ranked>> {
        let recs = self.recommendations(st, test, candidates, k, cfg)?;
        self.ranked(&recs)
    }

    /// Recommendations as data-set items with the TV's confidence.
    pub fn ranked(&self, recs: &[Recommendation]) -> Result<Vec<Ranked>> {
        recs.iter()
            .map(|r| match self.item_of.get(&r.content_id) {
                Some(&item) => Ok(Ranked {
                    item,
                    confidence: Some(r.confidence),
                }),
                None => bail!("the TV recommended {}, not in the catalog", r.content_id),
            })
            .collect()
    }

    /// The TV's `recommend` for a user whose test interaction is `test`: at
    /// the test's hour and weekday (LOO-full), or the same pipeline
    /// restricted to `candidates` (LOO-100).
    pub fn recommendations(
        &self,
        st: &BrainState,
        test: &Interaction,
        candidates: Candidates<'_>,
        k: usize,
        cfg: &RecommenderConfig,
    ) -> Result<Vec<Recommendation>> {
        if st.catalog.fingerprint() != self.fingerprint {
            bail!("a TV's catalog keys differ from the shared index's");
        }
        let req = RecommendRequest::new(utc_context(test.timestamp)?, k);
        let recs = match candidates {
            Candidates::Unseen => recommend(st, &self.index, &req, None, cfg)?,
            Candidates::Only(items) => {
                let keys = items
                    .iter()
                    .filter_map(|&i| st.catalog.key_of(&self.entries[i as usize].item.id))
                    .collect();
                let search = Among { state: st, keys };
                let allowed = |id: &ContentId| {
                    self.item_of
                        .get(id)
                        .is_some_and(|i| items.binary_search(i).is_ok())
                };
                recommend_among(st, &search, &req, None, cfg, &allowed)?
            }
        };
        Ok(recs)
    }
}

/// The `local` method. See the module docs.
pub struct LocalTv {
    model_dir: PathBuf,
    cache_dir: PathBuf,
    recommender: RecommenderConfig,
    tvs: Option<SharedCatalog>,
}

impl std::fmt::Debug for LocalTv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTv")
            .field("model_dir", &self.model_dir)
            .field("cache_dir", &self.cache_dir)
            .field("trained", &self.tvs.is_some())
            .finish()
    }
}

impl LocalTv {
    /// A method that embeds the catalog with the model in `model_dir`,
    /// caching the vectors under `cache_dir`; the TVs use the daemon's
    /// default recommender configuration.
    pub fn new(model_dir: PathBuf, cache_dir: PathBuf) -> Self {
        Self {
            model_dir,
            cache_dir,
            recommender: RecommenderConfig::default(),
            tvs: None,
        }
    }

    /// One user's TV after replaying the training interactions.
    fn replay(tvs: &SharedCatalog, train: &[Interaction]) -> Result<BrainStore> {
        let mut store = BrainStore::open_with_backend(
            redb::backends::InMemoryBackend::new(),
            "eval-tv.redb",
            tvs.store,
        )?;
        store.update_catalog(&tvs.entries, &[])?;
        for x in train {
            let id = &tvs.entries[x.item as usize].item.id;
            store.observe(event(id, x)?)?;
        }
        Ok(store)
    }
}

/// Exact candidate search over a fixed set of catalog keys (LOO-100).
struct Among<'a> {
    state: &'a BrainState,
    keys: Vec<u64>,
}

impl CandidateSearch for Among<'_> {
    fn nearest(&self, query: &[f32], count: usize) -> Result<Vec<u64>, CoreError> {
        let mut all: Vec<(f32, u64)> = self
            .keys
            .iter()
            .filter_map(|&k| Some((dot(&self.state.catalog.by_key(k)?.vector(), query), k)))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(all.into_iter().take(count).map(|(_, k)| k).collect())
    }
}

impl Method for LocalTv {
    fn name(&self) -> &'static str {
        "local"
    }

    fn train(&mut self, split: &Split, progress: &ProgressBar) -> Result<()> {
        self.tvs = Some(SharedCatalog::build(
            split,
            &self.model_dir,
            &self.cache_dir,
            progress,
        )?);
        Ok(())
    }

    fn top_k(
        &self,
        split: &Split,
        user: usize,
        candidates: Candidates<'_>,
        k: usize,
    ) -> Result<Vec<Ranked>> {
        let Some(tvs) = &self.tvs else {
            bail!("local was not trained");
        };
        let u = &split.users[user];
        let store = Self::replay(tvs, &u.train)?;
        let st = store.state();
        tvs.rank(&st, &u.test, candidates, k, &self.recommender)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn context_and_fraction_follow_the_protocol() {
        // 1970-01-01 00:00 UTC was a Thursday.
        let c = utc_context(0).unwrap();
        assert_eq!((c.hour, c.weekday), (0, 3));
        // 881250949 (ml-100k's first line): 1997-12-04 15:55:49 UTC, a Thursday.
        let c = utc_context(881_250_949).unwrap();
        assert_eq!((c.hour, c.weekday), (15, 3));
        // 1997-12-08 was a Monday.
        let c = utc_context(881_539_200 + 23 * 3600).unwrap();
        assert_eq!((c.hour, c.weekday), (23, 0));
        assert_eq!(watch_fraction(4.0), 0.8);
        assert_eq!(watch_fraction(5.0), 1.0);
        assert_eq!(watch_fraction(0.5), 0.1);
    }
}
