//! Helping while waiting: a pool's worker thread registers how to run one job of its own
//! queue, and [`TaskHandle::wait`](crate::TaskHandle::wait) on that thread runs queued
//! jobs instead of sleeping, as rayon's `join` does. A task that waits for a task it
//! submitted to its own pool then runs it itself rather than deadlock the pool.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

/// Runs one queued job of the current thread's pool; false when none was queued.
type Helper = Rc<dyn Fn() -> bool>;

thread_local! {
    static HELPER: RefCell<Option<Helper>> = const { RefCell::new(None) };
}

/// While this guard lives, `wait` on this thread helps with `helper`; dropping it
/// restores the helper before it. Not `Send`: it belongs to the thread that made it.
#[must_use = "the helper is unregistered when the guard drops"]
pub struct HelpGuard {
    previous: Option<Helper>,
    _thread_bound: PhantomData<Rc<()>>,
}

/// Registers `helper` for the current thread, a backend's worker: it runs one job from
/// the pool's queue (counted and guarded as the worker would) and returns true, or
/// returns false when nothing is queued. [`TaskHandle::wait`](crate::TaskHandle::wait)
/// calls it while its result is not there, so waiting on a task of one's own pool makes
/// progress. Keep the guard for the worker's life.
pub fn help_while_waiting(helper: impl Fn() -> bool + 'static) -> HelpGuard {
    let previous = HELPER.with(|h| h.borrow_mut().replace(Rc::new(helper)));
    HelpGuard {
        previous,
        _thread_bound: PhantomData,
    }
}

impl Drop for HelpGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        HELPER.with(|h| *h.borrow_mut() = previous);
    }
}

impl std::fmt::Debug for HelpGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelpGuard").finish_non_exhaustive()
    }
}

/// Runs one job of this thread's pool: `None` when this thread is no helping worker,
/// else whether a job ran. No borrow is held while the job runs (it may wait in turn).
pub(crate) fn help_once() -> Option<bool> {
    let helper = HELPER.with(|h| h.borrow().clone())?;
    Some(helper())
}
