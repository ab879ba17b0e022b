//! Group commit: concurrent callers' writes gathered into one batch that one
//! of them (the leader) applies and commits for all, so that many writes
//! share one transaction and one fsync. No thread of its own: the first
//! caller to find no leader leads; the others wait until their batch is
//! committed (or are handed the lead when their write is still queued).
//!
//! Bounds: a batch takes at most [`GroupOptions::max_batch`] writes from the
//! front of the queue; the queue holds at most [`GroupOptions::max_queue`]
//! writes, and a caller finding it full waits (blocking its thread) until a
//! leader takes a batch out of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use omega_constellation_core::store::StoreError;

/// How writes are gathered. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOptions {
    /// Writes one commit takes at most (≥ 1); default 256.
    pub max_batch: usize,
    /// Writes waiting for a commit at most (≥ 1); past it callers block
    /// until a batch leaves the queue; default 1024.
    pub max_queue: usize,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_queue: 1024,
        }
    }
}

/// What a waiting caller is told.
enum Turn {
    /// Its write's outcome (the batch was committed or failed).
    Done(Result<u32, StoreError>),
    /// Its write is still queued and nobody leads: it leads now.
    Lead,
}

#[derive(Default)]
struct Waiter {
    turn: Mutex<Option<Turn>>,
    cv: Condvar,
}

impl Waiter {
    fn tell(&self, turn: Turn) {
        *self.turn.lock() = Some(turn);
        self.cv.notify_one();
    }

    fn wait(&self) -> Turn {
        let mut turn = self.turn.lock();
        loop {
            if let Some(t) = turn.take() {
                return t;
            }
            self.cv.wait(&mut turn);
        }
    }
}

struct Entry<R> {
    req: R,
    waiter: Arc<Waiter>,
}

struct Queue<R> {
    pending: VecDeque<Entry<R>>,
    leading: bool,
}

/// The queue and its counters; `R` is one caller's prepared write.
pub(crate) struct Group<R> {
    queue: Mutex<Queue<R>>,
    space: Condvar,
    options: GroupOptions,
    batches: AtomicU64,
}

impl<R> std::fmt::Debug for Group<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("options", &self.options)
            .field("batches", &self.batches())
            .finish_non_exhaustive()
    }
}

/// Answers a taken batch's waiters if the leader unwinds before it does (a
/// bug in `run`): they get a backend error instead of waiting forever, and
/// the lead passes on.
struct Unanswered<'a, R> {
    group: &'a Group<R>,
    waiters: Vec<Arc<Waiter>>,
}

impl<R> Drop for Unanswered<'_, R> {
    fn drop(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        for w in self.waiters.drain(..) {
            w.tell(Turn::Done(Err(StoreError::backend(
                "group commit",
                "the committing thread panicked",
            ))));
        }
        self.group.pass_lead(&mut self.group.queue.lock());
    }
}

impl<R> Group<R> {
    /// An empty group; options below 1 are raised to 1.
    pub(crate) fn new(options: GroupOptions) -> Self {
        Self {
            queue: Mutex::new(Queue {
                pending: VecDeque::new(),
                leading: false,
            }),
            space: Condvar::new(),
            options: GroupOptions {
                max_batch: options.max_batch.max(1),
                max_queue: options.max_queue.max(1),
            },
            batches: AtomicU64::new(0),
        }
    }

    /// Batches `run` was called with since the group was made.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Writes queued and not yet taken into a batch.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().pending.len()
    }

    /// Queues `req` and returns its outcome once the batch holding it is
    /// done. `run` applies a batch in queue order and returns one outcome
    /// per write, in order (a failed commit: the error for each).
    pub(crate) fn submit(
        &self,
        req: R,
        run: impl Fn(Vec<R>) -> Vec<Result<u32, StoreError>>,
    ) -> Result<u32, StoreError> {
        let me = Arc::new(Waiter::default());
        {
            let mut q = self.queue.lock();
            while q.pending.len() >= self.options.max_queue {
                self.space.wait(&mut q);
            }
            q.pending.push_back(Entry {
                req,
                waiter: Arc::clone(&me),
            });
            if q.leading {
                drop(q);
                match me.wait() {
                    Turn::Done(r) => return r,
                    Turn::Lead => {}
                }
            } else {
                q.leading = true;
            }
        }
        self.lead(&me, run)
    }

    /// Commits batches from the front of the queue until one held `me`'s
    /// write, then hands the lead to the next queued writer, if any.
    fn lead(
        &self,
        me: &Arc<Waiter>,
        run: impl Fn(Vec<R>) -> Vec<Result<u32, StoreError>>,
    ) -> Result<u32, StoreError> {
        loop {
            let taken: Vec<Entry<R>> = {
                let mut q = self.queue.lock();
                let n = q.pending.len().min(self.options.max_batch);
                let taken = q.pending.drain(..n).collect();
                self.space.notify_all();
                taken
            };
            let (reqs, waiters): (Vec<R>, Vec<Arc<Waiter>>) =
                taken.into_iter().map(|e| (e.req, e.waiter)).unzip();
            let mut guard = Unanswered {
                group: self,
                waiters,
            };
            let n = reqs.len();
            let mut results = run(reqs);
            self.batches.fetch_add(1, Ordering::Relaxed);
            // A short answer is a bug in `run`; its writes are not known to
            // be durable.
            results.resize_with(n, || {
                Err(StoreError::backend(
                    "group commit",
                    "no outcome for a write",
                ))
            });
            let mut mine = None;
            for (w, r) in std::mem::take(&mut guard.waiters).into_iter().zip(results) {
                if Arc::ptr_eq(&w, me) {
                    mine = Some(r);
                } else {
                    w.tell(Turn::Done(r));
                }
            }
            if let Some(r) = mine {
                self.pass_lead(&mut self.queue.lock());
                return r;
            }
        }
    }

    /// Gives the lead to the first queued writer, or leaves it free.
    fn pass_lead(&self, q: &mut Queue<R>) {
        match q.pending.front() {
            Some(next) => next.waiter.tell(Turn::Lead),
            None => q.leading = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn concurrent_writes_share_batches_and_each_gets_its_own_outcome() {
        let group = Arc::new(Group::<u32>::new(GroupOptions {
            max_batch: 8,
            max_queue: 16,
        }));
        let threads = 32;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as u32)
            .map(|i| {
                let (group, start) = (Arc::clone(&group), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    group.submit(i, |batch| {
                        assert!(batch.len() <= 8, "batch of {}", batch.len());
                        // Long enough for the others to queue up.
                        std::thread::yield_now();
                        batch
                            .into_iter()
                            .map(|v| {
                                if v.is_multiple_of(5) {
                                    Err(StoreError::Conflict { op: "odd one out" })
                                } else {
                                    Ok(v * 10)
                                }
                            })
                            .collect()
                    })
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let got = h.join().expect("thread");
            let i = i as u32;
            if i.is_multiple_of(5) {
                assert_eq!(got, Err(StoreError::Conflict { op: "odd one out" }));
            } else {
                assert_eq!(got, Ok(i * 10));
            }
        }
        assert!(group.batches() >= 4, "32 writes, at most 8 a batch");
        assert_eq!(group.queued(), 0);
    }
}
