//! The recommender: `recommend(context) → ranked, explained titles`, the hot path.
//!
//! Sans-IO and allocation-light: it reads a [`BrainState`] and a
//! [`CandidateSearch`] (omega-brain's usearch index) and never runs the
//! transformer (a mood arrives as a vector the caller embedded).
//!
//! [`RecommendRequest`] and [`RecommendResponse`] are also the socket's
//! `recommend` request and answer: serde types whose field names are the
//! JSON fields, parsed and written by the daemon as they are.
//!
//! 1. **Query**: a weighted mean of the embeddings of recent watches (the
//!    request's `recent` first, then the episode ring's, finished or not;
//!    newest weigh most, and each by its watch fraction),
//!    the best local patterns of the context bucket (by success rate × log
//!    samples) and the mood vector if given.
//! 2. **Candidates**: the `k × candidate_factor` (at least `min_candidates`)
//!    nearest items, plus the bucket's trending items and the neighbours of its
//!    strongest global pattern, the fleet's partners of the recent watches
//!    and its most watched titles ([`crate::fleet`]). Excluded: every title watched, finished or
//!    abandoned (while its episode is in the ring), and the request's `recent`;
//!    when that leaves fewer than `k`, the index is searched once more past as
//!    many neighbours as titles were left out.
//! 3. **Score** = w_sim·cos(query, item) + w_local·(best cos to a bucket
//!    pattern × its success rate) + w_global·(best cos to a bucket global
//!    pattern × success × support weight) + w_trend·(regional trend score) +
//!    w_together·(the fleet's watched-together weight with the recent
//!    watches, weighted like the query, at most 1) + w_popular·(the fleet's
//!    regional popularity), on the items' int8 embeddings (see
//!    [`crate::CatalogRecord`]) against f32 query and pattern vectors.
//! 4. **Diversify** with MMR (λ = `mmr_lambda`) over the best candidates; a
//!    result's `score` is the MMR value it was picked with (relevance minus
//!    the diversity penalty), which never rises down the list.
//! 5. **Explain**: each result names its strongest signal ([`Reason`]); the
//!    fleet's (watched together, then popular in the region) when its part is
//!    at least a quarter of the score.
//! 6. **Confidence** (0–1): where the title's relevance stands between the
//!    median scored candidate (0) and the best one (1), times how much the TV
//!    knows of the viewer's taste — (recent watches + 1) / (window + 1), 1
//!    with a full window. A cold start knows nothing of the viewer: its
//!    confidence is at most 0.2 (the region's popularity). It orders titles
//!    within an answer and across answers by how much evidence backs them;
//!    it is not a calibrated probability (`omega-sim eval` reports hit rate
//!    by confidence band).
//!
//! Cold start (no recent watch, no local pattern in the bucket, no mood):
//! the fleet's most watched titles in the region, then trends of the bucket (then of other buckets), then items nearest the
//! bucket's global patterns (cosine ≥ [`COLD_GLOBAL_MIN_COSINE`]), then the
//! catalog in insertion order.
//!
//! Determinism: equal scores are broken by content id (ascending), so the same
//! state and request give the same answer. Bounds: `k` is clamped to
//! [`RecommenderConfig::max_k`] (default 100); fewer results come back when the
//! catalog has fewer eligible titles.

use std::collections::HashMap;

use omega_protocol::embedding::dot;
use omega_protocol::{
    ContentId, ContextBucket, Embedding, I8Embedding, TrendSignal, ViewingContext,
};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::patterns::PatternInfo;
use crate::state::BrainState;

/// In cold start, an item is offered as "popular with viewers like you" only
/// when this close (cosine) to a global pattern of the bucket.
pub const COLD_GLOBAL_MIN_COSINE: f32 = 0.3;

/// Candidate search over catalog keys: what the recommender needs from a
/// vector index.
pub trait CandidateSearch {
    /// Up to `count` catalog keys nearest to `query` (a unit vector), nearest first.
    fn nearest(&self, query: &[f32], count: usize) -> Result<Vec<u64>, CoreError>;
}

fn default_k() -> usize {
    10
}

/// A recommendation request, as the socket's `recommend` carries it (the
/// serde field names are the JSON fields; unknown fields are refused).
///
/// The mood travels as text: the caller embeds it (or finds it cached) and
/// passes the vector to [`recommend`] next to the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    /// Local hour, 0–23 (checked by [`Self::context`]).
    pub hour: u8,
    /// Day of week, 0 = Monday … 6 (checked by [`Self::context`]).
    pub weekday: u8,
    /// What the app says was watched recently, newest first (may be empty).
    #[serde(default)]
    pub recent: Vec<ContentId>,
    /// Free-text mood, if any.
    #[serde(default)]
    pub mood: Option<String>,
    /// How many titles to return (default 10; clamped to
    /// [`RecommenderConfig::max_k`]).
    #[serde(default = "default_k")]
    pub k: usize,
}

impl RecommendRequest {
    /// A request for `k` titles in `context`, with no recent watches or mood.
    pub fn new(context: ViewingContext, k: usize) -> Self {
        Self {
            hour: context.hour,
            weekday: context.weekday,
            recent: Vec::new(),
            mood: None,
            k,
        }
    }

    /// When the viewer is watching (validated).
    pub fn context(&self) -> Result<ViewingContext, CoreError> {
        Ok(ViewingContext::new(self.hour, self.weekday)?)
    }

    /// The mood text worth embedding: trimmed, `None` when blank.
    pub fn mood_text(&self) -> Option<&str> {
        self.mood
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
    }
}

/// The answer to a [`RecommendRequest`], as the socket returns it:
/// `{"items": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecommendResponse {
    /// The titles, best first.
    pub items: Vec<Recommendation>,
}

/// Weights and sizes of the recommender.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecommenderConfig {
    /// Largest `k` served.
    pub max_k: usize,
    /// Nearest neighbours fetched per requested title.
    pub candidate_factor: usize,
    /// Least neighbours fetched.
    pub min_candidates: usize,
    /// Recent successful watches in the query.
    pub recent_window: usize,
    /// Local patterns of the bucket used (the best ones).
    pub bucket_patterns: usize,
    /// Global patterns of the bucket used (the best ones).
    pub global_patterns: usize,
    /// Weight of the similarity to the query.
    pub w_similarity: f32,
    /// Weight of local pattern success.
    pub w_local: f32,
    /// Weight of global pattern support.
    pub w_global: f32,
    /// Weight of regional trends.
    pub w_trend: f32,
    /// Weight of the fleet's "watched together" signal: for each recent
    /// watch, the pair total over the two titles' totals (see
    /// [`crate::fleet`]), weighted like the query (newest most, by watch
    /// fraction).
    pub w_together: f32,
    /// Weight of the fleet's regional popularity (0–1).
    pub w_popular: f32,
    /// Most popular fleet titles added to the candidates.
    pub popular_candidates: usize,
    /// Share of the local patterns in the query, next to recent watches (1.0).
    pub pattern_query_weight: f32,
    /// Weight of the mood in the query, next to recent watches (1.0).
    pub mood_query_weight: f32,
    /// MMR trade-off: 1.0 = pure relevance, 0.0 = pure diversity.
    pub mmr_lambda: f32,
}

impl Default for RecommenderConfig {
    fn default() -> Self {
        Self {
            max_k: 100,
            candidate_factor: 10,
            min_candidates: 50,
            recent_window: 5,
            bucket_patterns: 8,
            global_patterns: 16,
            w_similarity: 1.0,
            w_local: 0.3,
            w_global: 0.3,
            w_trend: 0.25,
            w_together: 2.0,
            w_popular: 0.3,
            popular_candidates: 50,
            pattern_query_weight: 0.5,
            mood_query_weight: 1.5,
            mmr_lambda: 0.75,
        }
    }
}

/// Why a title is recommended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Closest to a recent watch, named here.
    BecauseYouWatched {
        /// The recent watch.
        content_id: ContentId,
        /// Its title.
        title: String,
    },
    /// Supported by global patterns of viewers in the same context.
    PopularWithViewersLikeYou,
    /// A regional trend.
    TrendingInYourRegion,
    /// Closest to the mood given.
    MatchesYourMood,
    /// Matches the viewer's own habits at this time of day / week.
    FitsYourHabits,
    /// Viewers of the region who watched a recent watch (named here) also
    /// watched this one (the fleet's private pair totals).
    WatchedTogether {
        /// The recent watch.
        content_id: ContentId,
        /// Its title.
        title: String,
    },
    /// Among the most watched titles in the region (the fleet's private
    /// totals).
    PopularInYourRegion,
    /// Cold start with nothing else known: the catalog's own order (said as
    /// "From the catalog": nothing claims the title is new).
    FromTheCatalog,
}

impl Reason {
    /// The sentence shown to the viewer.
    pub fn text(&self) -> String {
        match self {
            Reason::BecauseYouWatched { title, .. } => format!("Because you watched {title}"),
            Reason::PopularWithViewersLikeYou => "Popular with viewers like you".into(),
            Reason::TrendingInYourRegion => "Trending in your region".into(),
            Reason::MatchesYourMood => "Matches your mood".into(),
            Reason::FitsYourHabits => "Fits what you usually watch now".into(),
            Reason::WatchedTogether { title, .. } => {
                format!("Viewers who watched {title} also watched this")
            }
            Reason::PopularInYourRegion => "Popular in your region".into(),
            Reason::FromTheCatalog => "From the catalog".into(),
        }
    }
}

/// One recommended title. Serialized with its fields plus `reason_text`
/// ([`Reason::text`]), the sentence shown to the viewer.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The title's id.
    pub content_id: ContentId,
    /// Its title.
    pub title: String,
    /// The value the title was ranked with: never higher than the previous
    /// title's (not comparable across requests).
    pub score: f32,
    /// 0–1: how well the title is supported (see the module docs, step 6).
    pub confidence: f32,
    /// Why.
    pub reason: Reason,
}

impl Serialize for Recommendation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Recommendation", 6)?;
        st.serialize_field("content_id", &self.content_id)?;
        st.serialize_field("title", &self.title)?;
        st.serialize_field("score", &self.score)?;
        st.serialize_field("confidence", &self.confidence)?;
        st.serialize_field("reason_text", &self.reason.text())?;
        st.serialize_field("reason", &self.reason)?;
        st.end()
    }
}

/// A recent watch as the query sees it.
struct Recent<'a> {
    id: &'a ContentId,
    title: &'a str,
    emb: Vec<f32>,
    fraction: f32,
}

/// A candidate's strongest signal; made into a [`Reason`] (which owns the
/// named watch's id and title) only for the titles returned.
#[derive(Debug, Clone, Copy)]
enum Why {
    Mood,
    Recent(usize),
    Together(usize),
    Popular,
    Trend,
    Global,
    Habits,
}

impl Why {
    fn reason(self, recent: &[Recent<'_>]) -> Reason {
        match self {
            Why::Mood => Reason::MatchesYourMood,
            Why::Recent(i) => match recent.get(i) {
                Some(r) => Reason::BecauseYouWatched {
                    content_id: r.id.clone(),
                    title: r.title.to_owned(),
                },
                None => Reason::FitsYourHabits,
            },
            Why::Together(i) => match recent.get(i) {
                Some(r) => Reason::WatchedTogether {
                    content_id: r.id.clone(),
                    title: r.title.to_owned(),
                },
                None => Reason::PopularInYourRegion,
            },
            Why::Popular => Reason::PopularInYourRegion,
            Why::Trend => Reason::TrendingInYourRegion,
            Why::Global => Reason::PopularWithViewersLikeYou,
            Why::Habits => Reason::FitsYourHabits,
        }
    }
}

struct Cand<'a> {
    id: &'a ContentId,
    title: &'a str,
    emb: Vec<f32>,
    score: f32,
    confidence: f32,
    why: Why,
}

/// Answers one request; `mood` is the embedded [`RecommendRequest::mood`]
/// (`None`: no mood). See the module docs. Refused when the request's hour
/// or weekday is out of range or the candidate search fails.
pub fn recommend(
    state: &BrainState,
    index: &dyn CandidateSearch,
    req: &RecommendRequest,
    mood: Option<&Embedding>,
    cfg: &RecommenderConfig,
) -> Result<Vec<Recommendation>, CoreError> {
    recommend_among(state, index, req, mood, cfg, &|_| true)
}

/// [`recommend`] restricted to the titles `allowed` accepts: the same steps,
/// scores and order, with every other title left out wherever candidates are
/// gathered (index neighbours, trends, cold start). An evaluation ranks a
/// fixed candidate set this way (`omega-sim eval`, LOO-100), with `index`
/// searching only those candidates.
pub fn recommend_among(
    state: &BrainState,
    index: &dyn CandidateSearch,
    req: &RecommendRequest,
    mood: Option<&Embedding>,
    cfg: &RecommenderConfig,
    allowed: &dyn Fn(&ContentId) -> bool,
) -> Result<Vec<Recommendation>, CoreError> {
    let bucket = req.context()?.bucket();
    let k = req.k.min(cfg.max_k);
    if k == 0 || state.catalog.is_empty() {
        return Ok(Vec::new());
    }

    // Recent watches with embeddings and watch fractions, newest first,
    // distinct: the app's `recent` (taken as finished), then the ring's
    // watches, finished or not (an abandoned title still says what the viewer
    // chose; its fraction weighs it down in the query).
    let mut recent: Vec<Recent<'_>> = Vec::with_capacity(cfg.recent_window);
    let from_app = req.recent.iter().map(|id| (id, 1.0f32));
    for (id, fraction) in from_app.chain(state.recent_watches(cfg.recent_window)) {
        if recent.len() == cfg.recent_window {
            break;
        }
        if recent.iter().any(|r| r.id == id) {
            continue;
        }
        if let Some(rec) = state.catalog.get(id) {
            recent.push(Recent {
                id: &rec.item.id,
                title: rec.item.title.as_str(),
                emb: rec.vector(),
                fraction,
            });
        }
    }

    // The bucket's best local patterns: (centroid, success rate, quality).
    let mut best_locals: Vec<(&PatternInfo, &I8Embedding, f32)> = state
        .patterns
        .in_bucket(bucket)
        .map(|(p, c)| (p, c, p.success_rate() * (1.0 + p.views as f32).ln()))
        .collect();
    top_by(&mut best_locals, cfg.bucket_patterns, |x| x.2);
    let locals: Vec<(Vec<f32>, f32, f32)> = best_locals
        .into_iter()
        .map(|(p, c, q)| (c.to_f32(), p.success_rate(), q))
        .collect();

    // The bucket's best global patterns: (embedding, weight).
    let max_support = state
        .globals
        .values()
        .filter(|g| g.bucket == bucket)
        .map(|g| g.support)
        .max()
        .unwrap_or(0);
    let norm = (1.0 + max_support as f32).ln().max(f32::MIN_POSITIVE);
    let mut globals: Vec<(&[f32], f32)> = state
        .globals
        .values()
        .filter(|g| g.bucket == bucket)
        .map(|g| {
            let w = g.success_rate * (1.0 + g.support as f32).ln() / norm;
            (g.embedding.as_slice(), w)
        })
        .collect();
    top_by(&mut globals, cfg.global_patterns, |x| x.1);

    // Nothing watched comes back, finished or abandoned (while its episode
    // is in the ring), nor what the app says was just watched.
    let excluded =
        |id: &ContentId| !allowed(id) || state.has_watched(id) || recent.iter().any(|r| r.id == id);

    let query = build_query(&recent, &locals, mood, cfg);
    let Some(query) = query else {
        return cold_start(state, index, bucket, &globals, k, &excluded);
    };

    // The fleet's "watched together" evidence per title: (weighted sum,
    // the recent watch giving most of it), weighted like the query.
    let mut together: HashMap<&ContentId, (f32, usize, f32)> = HashMap::new();
    for (i, r) in recent.iter().enumerate() {
        let w = 0.8f32.powi(i as i32) * r.fraction.max(0.1);
        for (c, v) in state.fleet.together(r.id) {
            let e = together.entry(c).or_insert((0.0, i, 0.0));
            e.0 += w * v;
            if w * v > e.2 {
                e.1 = i;
                e.2 = w * v;
            }
        }
    }

    // Candidate keys.
    let want = (k * cfg.candidate_factor).max(cfg.min_candidates);
    let mut keys = index.nearest(query.as_slice(), want)?;
    let nearest_full = keys.len() == want;
    for t in state.trends.iter().filter(|t| t.bucket == bucket) {
        if let Some(key) = state.catalog.key_of(&t.content_id) {
            keys.push(key);
        }
    }
    if let Some((g, _)) = globals.first() {
        keys.extend(index.nearest(g, k * 2)?);
    }
    // The fleet's evidence reaches titles the embedding space does not.
    keys.extend(together.keys().filter_map(|c| state.catalog.key_of(c)));
    let popular = state.fleet.order.iter().take(cfg.popular_candidates);
    keys.extend(popular.filter_map(|c| state.catalog.key_of(c)));
    keys.sort_unstable();
    keys.dedup();

    let score_key = |key: u64| -> Option<Cand<'_>> {
        let rec = state.catalog.by_key(key)?;
        let id = &rec.item.id;
        if excluded(id) {
            return None;
        }
        // Decoded once per candidate; MMR reuses it.
        let emb = rec.vector();
        let e = emb.as_slice();
        let sim = dot(query.as_slice(), e);
        let local = locals
            .iter()
            .map(|(c, s, _)| dot(c, e).max(0.0) * s)
            .fold(0.0f32, f32::max);
        let global = globals
            .iter()
            .map(|(g, w)| dot(g, e).max(0.0) * w)
            .fold(0.0f32, f32::max);
        let trend = trend_score(state, id, bucket);
        let (tog, tog_from, _) = together.get(id).copied().unwrap_or((0.0, 0, 0.0));
        let tog = tog.min(1.0);
        let pop = state.fleet.popularity(id);
        let score = cfg.w_similarity * sim
            + cfg.w_local * local
            + cfg.w_global * global
            + cfg.w_trend * trend
            + cfg.w_together * tog
            + cfg.w_popular * pop;
        // The strongest signal names the reason; ties go to the earlier one.
        let (best_recent, best_recent_cos) = recent
            .iter()
            .enumerate()
            .map(|(i, r)| (i, dot(&r.emb, e)))
            .fold((None, f32::MIN), |(b, bc), (i, c)| {
                if c > bc {
                    (Some(i), c)
                } else {
                    (b, bc)
                }
            });
        let mood = mood.map_or(f32::MIN, |m| dot(m.as_slice(), e));
        let signals = [
            (mood, 0u8),
            (best_recent_cos, 1),
            (trend * 0.9, 2),
            (global, 3),
            (local, 4),
        ];
        let top = signals
            .iter()
            .fold((f32::MIN, 5u8), |acc, s| if s.0 > acc.0 { *s } else { acc });
        let why = match top.1 {
            0 => Why::Mood,
            1 => best_recent.map_or(Why::Habits, Why::Recent),
            2 => Why::Trend,
            3 => Why::Global,
            _ => Why::Habits,
        };
        // The fleet names the reason when its part is a material share of
        // the score (a quarter): similarity is part of every candidate's
        // score, so the fleet's part is what lifted this one.
        let material = 0.25 * score.max(f32::MIN_POSITIVE);
        let why = if tog > 0.0 && cfg.w_together * tog >= material {
            Why::Together(tog_from)
        } else if pop > 0.0 && cfg.w_popular * pop >= material {
            Why::Popular
        } else {
            why
        };
        Some(Cand {
            id,
            title: rec.item.title.as_str(),
            emb,
            score,
            confidence: 0.0, // set once every candidate is scored
            why,
        })
    };
    let mut cands: Vec<Cand<'_>> = keys.iter().filter_map(|&key| score_key(key)).collect();
    // Watched titles are left out: a viewer who watched most of the query's
    // neighbourhood would get fewer than k. Then search once more, past as
    // many neighbours as titles are left out, and score only the new ones.
    if cands.len() < k && nearest_full {
        let past = want + state.watched_titles() + recent.len();
        for key in index.nearest(query.as_slice(), past)? {
            if keys.binary_search(&key).is_err() {
                cands.extend(score_key(key));
            }
        }
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(b.id)));
    set_confidence(&mut cands, recent.len(), cfg.recent_window);
    cands.truncate((k * 5).max(50));
    Ok(mmr(cands, k, cfg.mmr_lambda, &recent))
}

/// Each candidate's confidence (module docs, step 6), over `cands` sorted
/// by score, best first.
fn set_confidence(cands: &mut [Cand<'_>], recent: usize, window: usize) {
    let (Some(top), Some(median)) = (cands.first(), cands.get(cands.len() / 2)) else {
        return;
    };
    let (top, median) = (top.score, median.score);
    let known = (recent.min(window) as f32 + 1.0) / (window as f32 + 1.0);
    for c in cands.iter_mut() {
        let standing = if top > median {
            ((c.score - median) / (top - median)).clamp(0.0, 1.0)
        } else {
            1.0
        };
        c.confidence = standing * known;
    }
}

/// Keeps the `n` largest by `f` (ties: original order), in descending order.
fn top_by<T>(v: &mut Vec<T>, n: usize, f: impl Fn(&T) -> f32) {
    v.sort_by(|a, b| f(b).total_cmp(&f(a)));
    v.truncate(n);
}

/// A trend's strength in `bucket`: full in its own bucket, half elsewhere.
fn trend_weight(t: &TrendSignal, bucket: ContextBucket) -> f32 {
    if t.bucket == bucket {
        t.score
    } else {
        0.5 * t.score
    }
}

fn trend_score(state: &BrainState, id: &ContentId, bucket: ContextBucket) -> f32 {
    state
        .trends
        .iter()
        .filter(|t| &t.content_id == id)
        .map(|t| trend_weight(t, bucket))
        .fold(0.0f32, f32::max)
}

fn build_query(
    recent: &[Recent<'_>],
    locals: &[(Vec<f32>, f32, f32)],
    mood: Option<&Embedding>,
    cfg: &RecommenderConfig,
) -> Option<Embedding> {
    if recent.is_empty() && locals.is_empty() && mood.is_none() {
        return None;
    }
    let mut acc = vec![0.0f32; omega_protocol::EMBEDDING_DIM];
    let mut add = |v: &[f32], w: f32| acc.iter_mut().zip(v).for_each(|(a, x)| *a += w * x);
    // Newest weigh most (×0.8 a step), finished more than abandoned (×
    // the watch fraction, at least 0.1).
    let weights: Vec<f32> = recent
        .iter()
        .enumerate()
        .map(|(i, r)| 0.8f32.powi(i as i32) * r.fraction.max(0.1))
        .collect();
    let wsum: f32 = weights.iter().sum();
    for (r, w) in recent.iter().zip(&weights) {
        add(&r.emb, w / wsum);
    }
    let qsum: f32 = locals.iter().map(|l| l.2.max(0.0)).sum();
    if qsum > 0.0 {
        for (c, _, q) in locals {
            add(c, cfg.pattern_query_weight * q.max(0.0) / qsum);
        }
    }
    if let Some(m) = mood {
        add(m.as_slice(), cfg.mood_query_weight);
    }
    Embedding::new(acc).ok()
}

fn mmr(
    mut pool: Vec<Cand<'_>>,
    k: usize,
    lambda: f32,
    recent: &[Recent<'_>],
) -> Vec<Recommendation> {
    let mut out = Vec::with_capacity(k);
    let mut max_sim = vec![0.0f32; pool.len()];
    while out.len() < k && !pool.is_empty() {
        let mut best = 0usize;
        let mut best_v = f32::MIN;
        for (i, c) in pool.iter().enumerate() {
            let v = lambda * c.score - (1.0 - lambda) * max_sim[i];
            // Pool is sorted by (score desc, id asc): strict > keeps the id tie-break.
            if v > best_v || (v == best_v && c.id < pool[best].id) {
                best = i;
                best_v = v;
            }
        }
        let c = pool.swap_remove(best);
        max_sim.swap_remove(best);
        for (i, o) in pool.iter().enumerate() {
            max_sim[i] = max_sim[i].max(dot(&c.emb, &o.emb));
        }
        // The value it was picked with: each candidate's value only falls as
        // the picked set grows, so these never rise down the list.
        out.push(Recommendation {
            content_id: c.id.clone(),
            title: c.title.to_owned(),
            score: best_v,
            confidence: c.confidence,
            reason: c.why.reason(recent),
        });
    }
    out
}

fn cold_start(
    state: &BrainState,
    index: &dyn CandidateSearch,
    bucket: ContextBucket,
    globals: &[(&[f32], f32)],
    k: usize,
    excluded: &dyn Fn(&ContentId) -> bool,
) -> Result<Vec<Recommendation>, CoreError> {
    let mut out: Vec<Recommendation> = Vec::with_capacity(k);
    // Nothing is known of the viewer: confidence is a fifth of the score.
    let push = |out: &mut Vec<Recommendation>, id: &ContentId, score: f32, reason: Reason| {
        if out.len() >= k || excluded(id) || out.iter().any(|r| &r.content_id == id) {
            return;
        }
        if let Some(rec) = state.catalog.get(id) {
            out.push(Recommendation {
                content_id: id.clone(),
                title: rec.item.title.clone(),
                score,
                confidence: (0.2 * score).clamp(0.0, 0.2),
                reason,
            });
        }
    };
    // The region's most watched titles, when the fleet said so.
    for id in &state.fleet.order {
        if out.len() >= k {
            break;
        }
        let p = state.fleet.popularity(id);
        push(&mut out, id, 0.5 + 0.5 * p, Reason::PopularInYourRegion);
    }
    // Trends: this bucket first, then others at half strength.
    let mut trends: Vec<(f32, &ContentId)> = state
        .trends
        .iter()
        .map(|t| (trend_weight(t, bucket), &t.content_id))
        .collect();
    trends.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    for (s, id) in trends {
        push(&mut out, id, 0.8 * s, Reason::TrendingInYourRegion);
    }
    // Items nearest the bucket's global patterns, strongest pattern first.
    for (g, w) in globals {
        if out.len() >= k {
            break;
        }
        let mut near: Vec<(f32, &ContentId)> = index
            .nearest(g, k * 2)?
            .into_iter()
            .filter_map(|key| state.catalog.by_key(key))
            .map(|r| (r.embedding.dot(g), &r.item.id))
            .filter(|(cos, _)| *cos >= COLD_GLOBAL_MIN_COSINE)
            .map(|(cos, id)| (cos * w, id))
            .collect();
        near.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        for (s, id) in near {
            push(&mut out, id, s, Reason::PopularWithViewersLikeYou);
        }
    }
    // The catalog in insertion order.
    for rec in state.catalog.iter() {
        if out.len() >= k {
            break;
        }
        push(&mut out, &rec.item.id, 0.05, Reason::FromTheCatalog);
    }
    Ok(out)
}
