//! The supervisor's scheduler: one thread that fires what layers leave for later (a retry
//! after its backoff, a limit's wake-up, a task's deadline), and the state the layers
//! share with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use executor_core::Job;

use crate::layer::limiter::Limiter;
use crate::timers::Timers;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Something a layer asked the scheduler thread to do, now or at an instant.
pub(crate) trait Timed: Send {
    /// Does it (on the scheduler thread).
    fn fire(self: Box<Self>);
    /// False once it has nothing left to do (swept from a growing timer heap).
    fn alive(&self) -> bool {
        true
    }
    /// The supervisor is closing and it will never fire: end what it holds.
    fn abandon(self: Box<Self>) {}
}

// `Timers` takes a `fn(&T)`, and `T` here is the box itself.
#[allow(clippy::borrowed_box)]
fn alive(item: &Box<dyn Timed>) -> bool {
    item.alive()
}

/// What the layers of every route share: the scheduler's timers, the shutdown flag, and
/// what the supervisor must sweep or count at shutdown.
pub(crate) struct Core {
    timers: Timers<Box<dyn Timed>>,
    /// Set at shutdown: failed attempts are no longer retried.
    closing: AtomicBool,
    /// Retries waiting out their backoff.
    pub(crate) retries_pending: AtomicU64,
    /// Every limiter made so far (their queues are swept at shutdown).
    limiters: Mutex<Vec<Arc<Limiter<Job>>>>,
}

impl Core {
    pub(crate) fn new() -> Self {
        Core {
            timers: Timers::new(alive),
            closing: AtomicBool::new(false),
            retries_pending: AtomicU64::new(0),
            limiters: Mutex::new(Vec::new()),
        }
    }

    /// Runs `item` on the scheduler thread at `at`; gives it back once the supervisor is
    /// closing.
    pub(crate) fn at(&self, at: Instant, item: Box<dyn Timed>) -> Result<(), Box<dyn Timed>> {
        self.timers.at(at, item)
    }

    /// Runs `item` on the scheduler thread as soon as it can.
    pub(crate) fn soon(&self, item: Box<dyn Timed>) -> Result<(), Box<dyn Timed>> {
        self.timers.now(item)
    }

    /// True once the supervisor is shutting down.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Called by a layer right after it queued a job: true when a shutdown may already
    /// have swept the queues, so the layer must end what it queued itself. With the fence
    /// here and the one in [`close`](Self::close), either the shutdown's sweep sees the
    /// job, or this sees the shutdown (the store-buffering case cannot happen).
    pub(crate) fn closed_after_queueing(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.is_closing()
    }

    /// Remembers a limiter so its queue is swept at shutdown (once per limiter).
    pub(crate) fn add_limiter(&self, limiter: &Arc<Limiter<Job>>) {
        let mut all = lock(&self.limiters);
        if !all.iter().any(|l| Arc::ptr_eq(l, limiter)) {
            all.push(limiter.clone());
        }
    }

    /// Jobs waiting for a limit, over every limiter.
    pub(crate) fn waiting(&self) -> u64 {
        lock(&self.limiters)
            .iter()
            .map(|l| l.waiting() as u64)
            .sum()
    }

    /// Takes every job waiting for a limit.
    pub(crate) fn sweep_limiters(&self) -> Vec<Job> {
        let limiters = lock(&self.limiters).clone();
        limiters.iter().flat_map(|l| l.take_all()).collect()
    }

    /// Stops retries and the timers; ends what the timers held. The scheduler thread
    /// returns after its current batch.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        for item in self.timers.close() {
            item.abandon();
        }
    }

    /// The scheduler thread's loop: fires each item when it is due.
    pub(crate) fn run_scheduler(self: Arc<Self>) {
        while let Some(batch) = self.timers.next_batch() {
            for item in batch {
                // A panic here (in a backend's `execute`, say) must not stop the thread
                // every pending retry, wake-up and deadline depends on.
                let run = std::panic::AssertUnwindSafe(|| item.fire());
                if let Err(payload) = std::panic::catch_unwind(run) {
                    tracing::error!(
                        panic = executor_core::panic_message(&*payload),
                        "the supervisor's scheduler caught a panic"
                    );
                }
            }
        }
    }
}
