//! The supervisor's scheduler: one thread that fires what layers leave for later (a retry
//! after its backoff, a limit's wake-up, a task's deadline), and the state the layers
//! share with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use executor_core::Job;
use executor_core::backend::Ranked;

use crate::layer::limiter::Limiter;
use crate::timers::Timers;

pub(crate) use executor_core::backend::lock;

/// Something a layer asked the scheduler thread to do, now or at an instant.
pub(crate) trait Timed: Send {
    /// Does it (on the scheduler thread).
    fn fire(self: Box<Self>);
    /// The supervisor is closing and it will never fire: end what it holds.
    fn abandon(self: Box<Self>) {}
    /// `Some` for a task waiting for its turn once due (a retry): due items with a
    /// priority are fired one at a time, higher priority first with aging; `None` (the
    /// default: wake-ups, deadlines) fires as soon as it is due, before them.
    fn priority(&self) -> Option<i8> {
        None
    }
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
            timers: Timers::new(),
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

    /// The scheduler thread's loop: fires each item when it is due. Due items with a
    /// priority (retries) wait in a [`Ranked`] queue and go one at a time, looking for
    /// newly due items between two: a retry's hand-off can block (a full bounded queue),
    /// and the retries due meanwhile then go by priority, with aging.
    pub(crate) fn run_scheduler(self: Arc<Self>) {
        let mut turns: Ranked<Box<dyn Timed>> = Ranked::new();
        loop {
            let batch = if turns.is_empty() {
                self.timers.next_batch()
            } else {
                self.timers.due_now()
            };
            let Some(batch) = batch else { break };
            for item in batch {
                match item.priority() {
                    Some(p) => turns.push(p, item),
                    None => fire(item),
                }
            }
            if let Some(item) = turns.pop() {
                fire(item);
            }
        }
        // Closed: what still waits for its turn will never fire.
        for item in turns.drain() {
            item.abandon();
        }
    }
}

/// Fires one item. A panic here (in a backend's `execute`, say) must not stop the thread
/// every pending retry, wake-up and deadline depends on.
fn fire(item: Box<dyn Timed>) {
    let run = std::panic::AssertUnwindSafe(|| item.fire());
    if let Err(payload) = std::panic::catch_unwind(run) {
        tracing::error!(
            panic = executor_core::panic_message(&*payload),
            "the supervisor's scheduler caught a panic"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A retry-like item: records its firing; a "high" one queues another high one until
    /// the low one has fired (a stream that would starve it without aging).
    struct Turn {
        name: &'static str,
        priority: i8,
        core: Arc<Core>,
        log: mpsc::Sender<&'static str>,
        low_fired: Arc<AtomicBool>,
    }

    impl Timed for Turn {
        fn fire(self: Box<Self>) {
            if self.name == "low" {
                self.low_fired.store(true, Ordering::SeqCst);
            } else if !self.low_fired.load(Ordering::SeqCst) {
                let next = Turn {
                    name: self.name,
                    priority: self.priority,
                    core: self.core.clone(),
                    log: self.log.clone(),
                    low_fired: self.low_fired.clone(),
                };
                let _ = self.core.soon(Box::new(next));
            }
            let _ = self.log.send(self.name);
        }
        fn priority(&self) -> Option<i8> {
            Some(self.priority)
        }
    }

    /// Holds the scheduler thread (as a hand-off blocked on a full queue would).
    struct Hold(mpsc::Receiver<()>);

    impl Timed for Hold {
        fn fire(self: Box<Self>) {
            let _ = self.0.recv_timeout(Duration::from_secs(20));
        }
    }

    #[test]
    fn due_retries_go_by_priority_and_aging_bounds_a_low_ones_wait() {
        let core = Arc::new(Core::new());
        let thread = std::thread::spawn({
            let core = core.clone();
            move || core.run_scheduler()
        });
        let (release, held) = mpsc::channel();
        let (log, fired) = mpsc::channel();
        let low_fired = Arc::new(AtomicBool::new(false));
        let turn = |name, priority| {
            Box::new(Turn {
                name,
                priority,
                core: core.clone(),
                log: log.clone(),
                low_fired: low_fired.clone(),
            })
        };
        core.soon(Box::new(Hold(held))).ok().unwrap();
        // Due while the scheduler is held: the low one first, then two high ones.
        core.soon(turn("low", -5)).ok().unwrap();
        core.soon(turn("high", 5)).ok().unwrap();
        core.soon(turn("high", 5)).ok().unwrap();
        release.send(()).unwrap();
        let bound = 2 + 10 * executor_core::backend::AGING as usize;
        let mut order = Vec::new();
        while order.last() != Some(&"low") {
            let name = fired
                .recv_timeout(Duration::from_secs(20))
                .expect("the low one never fired");
            order.push(name);
            assert!(order.len() <= bound + 1, "the low one starved");
        }
        assert_eq!(&order[..2], ["high", "high"], "higher priority first");
        assert!(order.len() > 3, "fresh high ones go before the low one");
        core.close();
        thread.join().unwrap();
    }
}
