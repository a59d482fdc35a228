//! The timeout layer: a deadline counted from when the task passes it, after which the
//! task's handle resolves as timed out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor_core::{Job, SubmitError, WeakCancelToken};

use super::{Layer, LayerContext, Service};
use crate::clock::CoarseClock;
use crate::scheduler::{Core, Timed, lock};

/// Resolves a task's handle as timed out `after` it passes this layer; the task's context
/// reports the deadline and the cancellation. Deadlines are read from the kernel's coarse
/// clock (a few nanoseconds per task instead of about twenty): never early, and at most
/// two of its ticks (2 to 8 ms on Linux) late. Outside the retry layer (as the policy file
/// places it) the deadline covers every attempt: a timed-out task is not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout {
    after: Duration,
}

impl Timeout {
    /// A deadline `after` from submission.
    pub fn new(after: Duration) -> Self {
        Timeout { after }
    }

    /// How long a task may take.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl Layer for Timeout {
    fn layer(&self, inner: Arc<dyn Service>, cx: &LayerContext<'_>) -> Arc<dyn Service> {
        Arc::new(TimeoutService {
            inner,
            after: self.after,
            clock: CoarseClock::new(),
            deadlines: Arc::new(Deadlines {
                core: cx.core.clone(),
                pending: Mutex::new(Pending {
                    queue: VecDeque::new(),
                    armed: false,
                    sweep_at: SWEEP_MIN,
                }),
            }),
        })
    }
}

struct TimeoutService {
    inner: Arc<dyn Service>,
    after: Duration,
    /// Deadlines need no nanoseconds: the coarse clock is read in a fraction of the time.
    clock: CoarseClock,
    deadlines: Arc<Deadlines>,
}

impl Service for TimeoutService {
    fn dispatch(&self, mut job: Job) -> Result<(), SubmitError> {
        let mut arm = None;
        {
            let mut pending = lock(&self.deadlines.pending);
            // Read under the lock, so the queue's deadlines never go down.
            let deadline = self.clock.now() + self.after;
            // An earlier deadline (a timeout layer further out) stays.
            if job.deadline().is_none_or(|d| deadline < d) {
                job.set_deadline(Some(deadline));
                // Weak: a task that ends long before its deadline frees its state at once.
                pending.pop_ended();
                pending.queue.push_back((deadline, job.weak_cancel_token()));
                if !pending.armed {
                    pending.armed = true;
                    arm = Some(deadline);
                }
                pending.sweep_if_large();
            }
        }
        if let Some(at) = arm {
            self.deadlines.arm(at);
        }
        self.inner.dispatch(job)
    }
}

/// Below this many queued deadlines the queue is never swept of ended tasks.
const SWEEP_MIN: usize = 4096;

/// The deadlines of one timeout layer's tasks. Every task gets the same `after`, so
/// deadlines arrive in order: a FIFO queue does what a timer heap would, and the scheduler
/// holds one timer for the whole queue (its earliest deadline), not one per task.
struct Deadlines {
    core: Arc<Core>,
    pending: Mutex<Pending>,
}

struct Pending {
    queue: VecDeque<(Instant, WeakCancelToken)>,
    /// A scheduler timer is set for the queue's front (or is about to be).
    armed: bool,
    /// The queue length at which ended tasks are swept out of it.
    sweep_at: usize,
}

impl Pending {
    /// Drops the ended tasks at the front of the queue. Tasks mostly end in the order they
    /// came, so this frees each one's state soon after it ends (while it is still in
    /// cache), rather than in bulk at a sweep or its deadline.
    fn pop_ended(&mut self) {
        while self
            .queue
            .front()
            .is_some_and(|(_, token)| !token.is_alive())
        {
            self.queue.pop_front();
        }
    }

    /// Drops the entries of tasks whose state is gone, once the queue has doubled since
    /// the last sweep: memory stays in proportion to the tasks alive, for any timeout.
    fn sweep_if_large(&mut self) {
        if self.queue.len() >= self.sweep_at {
            self.queue.retain(|(_, token)| token.is_alive());
            self.sweep_at = (self.queue.len() * 2).max(SWEEP_MIN);
        }
    }
}

impl Deadlines {
    /// Sets the scheduler's timer for `at`. Refused only while the supervisor shuts
    /// down, which ends the tasks anyway.
    fn arm(self: &Arc<Self>, at: Instant) {
        let _ = self.core.at(at, Box::new(Due(self.clone())));
    }
}

/// The scheduler's timer for a queue's earliest deadline: expires every task that is due
/// (its handle resolves as timed out), then sets itself for the next.
struct Due(Arc<Deadlines>);

impl Timed for Due {
    fn fire(self: Box<Self>) {
        let deadlines = self.0;
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut pending = lock(&deadlines.pending);
            while let Some((at, _)) = pending.queue.front()
                && *at <= now
            {
                if let Some((_, token)) = pending.queue.pop_front() {
                    due.push(token);
                }
            }
            let next = pending.queue.front().map(|(at, _)| *at);
            pending.armed = next.is_some();
            next
        };
        // Outside the lock: expiring a token runs the task's observers.
        for token in due {
            if let Some(token) = token.upgrade()
                && !token.is_finished()
            {
                token.expire();
            }
        }
        if let Some(at) = next {
            deadlines.arm(at);
        }
    }
}
