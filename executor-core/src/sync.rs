//! The primitives of the hand-made synchronisation (the submit/shutdown gate, a handle's
//! resolve/cancel/observe handshake, cancel flags): std's, or loom's under `--cfg loom`,
//! so that `loom` can model-check every interleaving of them (see `loom_models`).
//!
//! `Arc` stays std's everywhere: loom's cannot coerce to `Arc<dyn Trait>`, and reference
//! counting is not what the models check.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering, fence};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

/// Waits a moment before looking again at something another thread will change (a spin
/// that backs off to sleeping). Under loom a yield: loom has no clock, and a yield lets
/// the model run the thread being waited for.
pub(crate) fn back_off(spins: u32) {
    #[cfg(not(loom))]
    if spins >= 1000 {
        std::thread::sleep(std::time::Duration::from_micros(100));
        return;
    }
    let _ = spins;
    yield_now();
}

/// A cell that only a task's job writes (its body, running future and value), beside the
/// state the task shares with its handle in one allocation. Under loom, loom's cell, so the
/// models check that no two threads ever reach it at once.
pub(crate) struct TaskCell<T> {
    #[cfg(not(loom))]
    inner: std::cell::UnsafeCell<T>,
    #[cfg(loom)]
    inner: loom::cell::UnsafeCell<T>,
}

impl<T> TaskCell<T> {
    pub(crate) fn new(value: T) -> Self {
        TaskCell {
            #[cfg(not(loom))]
            inner: std::cell::UnsafeCell::new(value),
            #[cfg(loom)]
            inner: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Calls `f` with a pointer to the value; the caller proves its access exclusive.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.inner.get());
        #[cfg(loom)]
        return self.inner.with_mut(f);
    }
}
