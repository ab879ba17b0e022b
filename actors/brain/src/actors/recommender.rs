//! Recommender: answers `recommend` from Memory's [`MemoryView`].
//!
//! * Without a mood: one call to [`omega_brain_core::recommend`] on the
//!   shared state, read-locked (no redb, no transformer), inline in the
//!   handler.
//! * With a mood: the text is looked up in a bounded LRU of mood vectors
//!   ([`super::BrainConfig::mood_cache`] entries, key = the trimmed text). On
//!   a miss the request moves to a task of its own, which asks Inference for
//!   the vector, answers, and casts the vector back for the cache, so the
//!   mailbox keeps serving other requests meanwhile. If the model is still
//!   loading the request waits for it; if it failed, the request gets
//!   `ModelUnavailable` (requests without a mood are unaffected).

use std::sync::Arc;

use omega_protocol::Embedding;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use super::inference::InferenceMsg;
use super::lru::Lru;
use super::{ask, read, ActorError, ChildKind, MemoryView, Reply, Shared};
use crate::error::BrainError;
use omega_brain_core::{recommend, RecommendRequest, Recommendation, RecommenderConfig};

pub(crate) enum RecommenderMsg {
    Recommend(RecommendRequest, Reply<Vec<Recommendation>>),
    MoodLearned(String, Embedding),
}

pub(crate) struct Recommender;

pub(crate) struct RecommenderState {
    shared: Arc<Shared>,
    view: watch::Receiver<Arc<MemoryView>>,
    moods: Lru<String, Embedding>,
}

fn run(
    view: &MemoryView,
    q: &RecommendRequest,
    mood: Option<&Embedding>,
    cfg: &RecommenderConfig,
) -> Result<Vec<Recommendation>, ActorError> {
    let state = view.state.read();
    let idx = match view.index.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    recommend(&state, &*idx, q, mood, cfg).map_err(|e| ActorError::Brain(BrainError::from(e)))
}

impl Actor for Recommender {
    type Msg = RecommenderMsg;
    type State = RecommenderState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let view = shared.view_tx.subscribe();
        let moods = Lru::new(shared.cfg.mood_cache);
        Ok(RecommenderState {
            shared,
            view,
            moods,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RecommenderMsg::MoodLearned(k, v) => st.moods.put(k, v),
            RecommenderMsg::Recommend(q, reply) => {
                let cfg = st.shared.cfg.recommender;
                let view = st.view.borrow().clone();
                let Some(key) = q.mood_text().map(str::to_string) else {
                    let _ = reply.send(run(&view, &q, None, &cfg));
                    return Ok(());
                };
                if let Some(v) = st.moods.get(&key) {
                    let _ = reply.send(run(&view, &q, Some(&v), &cfg));
                    return Ok(());
                }
                let inference = read(&st.shared.inference);
                let rx = st.view.clone();
                tokio::spawn(async move {
                    let got = ask(inference, ChildKind::Inference, |r| {
                        InferenceMsg::Embed(vec![key.clone()], r)
                    })
                    .await
                    .and_then(|mut v| v.pop().ok_or_else(|| ActorError::Embed("no vector".into())));
                    match got {
                        Ok(v) => {
                            // The current view: Memory may have restarted meanwhile.
                            let view = rx.borrow().clone();
                            let _ = reply.send(run(&view, &q, Some(&v), &cfg));
                            let _ = myself.cast(RecommenderMsg::MoodLearned(key, v));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                });
            }
        }
        Ok(())
    }
}
