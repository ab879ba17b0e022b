//! Inference: owns the MiniLM embedder and turns texts into unit vectors.
//!
//! * The model is loaded once per brain in the background (a blocking task
//!   behind a `OnceCell` in the shared state), so the daemon answers
//!   `recommend` without a mood before it is ready; requests that arrive while
//!   it loads wait in the queue. A restarted actor reuses the loaded model.
//! * The forward pass runs in `spawn_blocking`, never on the async executor.
//! * Batching: an `Embed` request is queued and, if no flush is scheduled, the
//!   actor casts `Flush` to itself. That message lands behind every request
//!   already in the mailbox, so by the time it is handled they are all queued:
//!   the flush takes up to [`InferenceConfig::max_batch`] texts (whole
//!   requests; a single larger request is run in chunks) into one
//!   `embed_batch`, and schedules another flush if texts remain.
//! * Bound: at most [`InferenceConfig::max_pending_texts`] texts wait; past
//!   that a request is refused at once with `Busy`.
//! * A panic during a batch fails the actor; the reply ports of that batch and
//!   of the queue are dropped with its state, so those callers get `Crashed`.

use std::collections::VecDeque;
use std::sync::Arc;

use omega_embed::{Embedder, EmbedderOptions};
use omega_protocol::Embedding;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{ActorError, ModelStatus, Reply, Shared};

/// Batching and bounds of the Inference actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceConfig {
    /// Most texts per forward batch (and per chunk of a large request).
    pub max_batch: usize,
    /// Most texts waiting; more are refused with `Busy`.
    pub max_pending_texts: usize,
    /// Threads of the embedder's pool (`None`: `RAYON_NUM_THREADS` / cores).
    pub threads: Option<usize>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_pending_texts: 1024,
            threads: None,
        }
    }
}

pub(crate) enum InferenceMsg {
    Embed(Vec<String>, Reply<Vec<Embedding>>),
    Flush,
    ModelLoaded,
    #[cfg(feature = "testing")]
    ArmPanic,
}

struct Job {
    texts: Vec<String>,
    reply: Reply<Vec<Embedding>>,
}

pub(crate) struct Inference;

pub(crate) struct InferenceState {
    shared: Arc<Shared>,
    model: Option<Arc<Embedder>>,
    failed: Option<String>,
    queue: VecDeque<Job>,
    queued_texts: usize,
    flush_scheduled: bool,
    #[cfg(feature = "testing")]
    panic_armed: bool,
}

impl InferenceState {
    fn schedule_flush(&mut self, myself: &ActorRef<InferenceMsg>) {
        if self.model.is_some() && !self.flush_scheduled && !self.queue.is_empty() {
            self.flush_scheduled = myself.cast(InferenceMsg::Flush).is_ok();
        }
    }
}

fn load(shared: &Shared) -> Result<Arc<Embedder>, String> {
    let t = std::time::Instant::now();
    let opts = EmbedderOptions {
        threads: shared.cfg.inference.threads,
        ..EmbedderOptions::default()
    };
    match Embedder::load(&shared.cfg.model_dir, opts) {
        Ok(m) => {
            tracing::info!(ms = t.elapsed().as_millis() as u64, "model loaded");
            Ok(Arc::new(m))
        }
        Err(e) => {
            tracing::error!(error = %e, dir = %shared.cfg.model_dir.display(), "model failed to load; moods and catalog imports are unavailable");
            Err(e.to_string())
        }
    }
}

fn to_embeddings(raw: Vec<[f32; omega_embed::DIM]>) -> Result<Vec<Embedding>, ActorError> {
    raw.into_iter()
        .map(|v| Embedding::new(v.to_vec()).map_err(|e| ActorError::Embed(e.to_string())))
        .collect()
}

impl Actor for Inference {
    type Msg = InferenceMsg;
    type State = InferenceState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(InferenceState {
            shared,
            model: None,
            failed: None,
            queue: VecDeque::new(),
            queued_texts: 0,
            flush_scheduled: false,
            #[cfg(feature = "testing")]
            panic_armed: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let shared = st.shared.clone();
        tokio::spawn(async move {
            shared
                .model
                .get_or_init(|| async {
                    let sh = shared.clone();
                    tokio::task::spawn_blocking(move || load(&sh))
                        .await
                        .unwrap_or_else(|e| Err(format!("model loader panicked: {e}")))
                })
                .await;
            // The actor may have been replaced meanwhile; then this fails harmlessly.
            let _ = myself.cast(InferenceMsg::ModelLoaded);
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            InferenceMsg::ModelLoaded => {
                match st.shared.model.get() {
                    Some(Ok(m)) => {
                        st.model = Some(m.clone());
                        st.shared.status().model = ModelStatus::Ready;
                    }
                    Some(Err(e)) => {
                        st.failed = Some(e.clone());
                        st.shared.status().model = ModelStatus::Failed(e.clone());
                        for job in st.queue.drain(..) {
                            let _ = job.reply.send(Err(ActorError::ModelUnavailable(e.clone())));
                        }
                        st.queued_texts = 0;
                    }
                    None => {}
                }
                st.schedule_flush(&myself);
            }
            InferenceMsg::Embed(texts, reply) => {
                if let Some(e) = &st.failed {
                    let _ = reply.send(Err(ActorError::ModelUnavailable(e.clone())));
                } else if texts.is_empty() {
                    let _ = reply.send(Ok(Vec::new()));
                } else if st.queued_texts + texts.len() > st.shared.cfg.inference.max_pending_texts
                {
                    let _ = reply.send(Err(ActorError::Busy("inference")));
                } else {
                    st.queued_texts += texts.len();
                    st.queue.push_back(Job { texts, reply });
                    st.schedule_flush(&myself);
                }
            }
            #[cfg(feature = "testing")]
            InferenceMsg::ArmPanic => st.panic_armed = true,
            InferenceMsg::Flush => {
                st.flush_scheduled = false;
                let Some(model) = st.model.clone() else {
                    return Ok(());
                };
                let max = st.shared.cfg.inference.max_batch.max(1);
                let mut batch: Vec<Job> = Vec::new();
                let mut n = 0usize;
                while let Some(front) = st.queue.front() {
                    if !batch.is_empty() && n + front.texts.len() > max {
                        break;
                    }
                    n += front.texts.len();
                    if let Some(job) = st.queue.pop_front() {
                        batch.push(job);
                    }
                }
                st.queued_texts -= n;
                let texts: Vec<String> =
                    batch.iter().flat_map(|j| j.texts.iter().cloned()).collect();
                #[cfg(feature = "testing")]
                let panic = std::mem::take(&mut st.panic_armed);
                let run = tokio::task::spawn_blocking(move || {
                    #[cfg(feature = "testing")]
                    if panic {
                        panic!("debug.panic_inference: inference panicked on purpose");
                    }
                    let mut out = Vec::with_capacity(texts.len());
                    for chunk in texts.chunks(max) {
                        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                        out.extend(model.embed_batch(&refs)?);
                    }
                    Ok::<_, omega_embed::EmbedError>(out)
                })
                .await;
                let vecs = match run {
                    Ok(r) => r,
                    // A panic in the model is this actor's panic: the
                    // supervisor restarts it; dropped reply ports tell callers.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => return Err(Box::new(e)),
                };
                match vecs.map_err(|e| e.to_string()) {
                    Ok(vecs) => {
                        let mut it = vecs.into_iter();
                        for job in batch {
                            let mine: Vec<_> = it.by_ref().take(job.texts.len()).collect();
                            let _ = job.reply.send(to_embeddings(mine));
                        }
                    }
                    Err(e) => {
                        for job in batch {
                            let _ = job.reply.send(Err(ActorError::Embed(e.clone())));
                        }
                    }
                }
                st.schedule_flush(&myself);
            }
        }
        Ok(())
    }
}
