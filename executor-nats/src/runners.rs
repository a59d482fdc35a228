//! The threads a worker runs its tasks on, woken sparingly: a task is queued, and a
//! sleeping thread is woken only when no thread is awake to take it, or when a queued
//! task was left waiting (its runner is stuck in a long task; the worker nudges after
//! [`NUDGE_AFTER`]). Short tasks then run back to back on an awake thread instead of
//! costing a thread wake-up each, as a blocking pool's hand-off per task does.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a task may go unfinished before its worker wakes another thread for what
/// waits in the queue.
pub(crate) const NUDGE_AFTER: Duration = Duration::from_millis(1);

/// An idle thread exits after this long.
const IDLE_EXIT: Duration = Duration::from_secs(5);

type Work = Box<dyn FnOnce() + Send>;

/// A pool of at most `max` threads with one queue.
#[derive(Clone)]
pub(crate) struct Runners {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    max: usize,
    name: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Work>,
    /// Threads alive.
    threads: usize,
    /// Threads waiting for work and not yet woken.
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a thread.
    woken: usize,
}

impl Runners {
    /// A pool of at most `max` threads called `name`, started as needed.
    pub(crate) fn new(name: &str, max: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                max: max.max(1),
                name: name.to_owned(),
            }),
        }
    }

    /// Runs `f` on a runner thread; its panic (if any) drops the receiver's sender.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work: Work = Box::new(move || {
            if let Ok(out) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = tx.send(out);
            }
        });
        let mut st = self.inner.lock();
        st.queue.push_back(work);
        if st.threads - st.sleeping == 0 {
            self.inner.wake_one(st);
        }
        rx
    }

    /// Wakes (or starts) one more thread if work waits in the queue.
    pub(crate) fn nudge(&self) {
        let st = self.inner.lock();
        if !st.queue.is_empty() {
            self.inner.wake_one(st);
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_one(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        if st.sleeping > 0 {
            st.sleeping -= 1;
            st.woken += 1;
            drop(st);
            self.wake.notify_one();
        } else if st.threads < self.max {
            st.threads += 1;
            drop(st);
            let inner = self.clone();
            let started = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || inner.serve());
            if started.is_err() {
                self.lock().threads -= 1;
            }
        }
    }

    /// A runner thread: takes work from the queue until it has been idle for
    /// [`IDLE_EXIT`].
    fn serve(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            if let Some(work) = st.queue.pop_front() {
                drop(st);
                work();
                st = self.lock();
                continue;
            }
            st.sleeping += 1;
            let (guard, waited) = self
                .wake
                .wait_timeout(st, IDLE_EXIT)
                .unwrap_or_else(|e| e.into_inner());
            st = guard;
            if st.woken > 0 {
                // Woken (`sleeping` was counted down by the waker).
                st.woken -= 1;
            } else {
                st.sleeping -= 1;
                if waited.timed_out() && st.queue.is_empty() {
                    st.threads -= 1;
                    return;
                }
            }
        }
    }
}
