//! [`TaskHandle`]: one handle for sync and async callers, and the shared slot behind it.

use crate::backend::MetaRef;
use crate::cancel::{self, CancelFlag, CancelReason, CancelSource, Wakers};
use crate::sync::{AtomicU8, Condvar, Mutex, MutexGuard, Ordering, fence, yield_now};
use crate::{CancelToken, Status, TaskError, TaskId};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub(crate) const QUEUED: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const DONE: u8 = 2;

/// How often `wait` yields its thread before it sleeps on the condition variable (not
/// under loom, where more yields only multiply the interleavings to explore).
const YIELDS_BEFORE_SLEEP: u32 = if cfg!(loom) { 1 } else { 32 };

/// How long a helping worker with nothing to run sleeps before it looks at its queue again.
const HELP_POLL: Duration = Duration::from_millis(1);

/// Told once how each task it watches ended, with no allocation per task: a ledger or a
/// metrics sink registered with [`Job::observe_with`](crate::Job::observe_with). One
/// shared instance watches many tasks; [`Job::observe`](crate::Job::observe) takes a
/// closure instead, boxed per task.
pub trait EndObserver: Send + Sync + 'static {
    /// Task `id`, described by `meta`, ended with `status`. Called wherever the task
    /// resolved (a worker, a canceller, a timer), before its result is visible to the
    /// caller, and (when it is the task's first observer) while the task's state is
    /// locked: keep it short, do not block, and do not use the task's handle or token.
    /// Nor cancel other tasks from here: a cancel takes the cancelled task's lock, and two
    /// tasks' observers cancelling each other would each wait for the other's.
    fn ended(&self, status: Status, id: TaskId, meta: &MetaRef);
}

/// A shared observer, with what it is told of the task.
pub(crate) struct Sink {
    pub(crate) observer: Arc<dyn EndObserver>,
    pub(crate) id: TaskId,
    pub(crate) meta: MetaRef,
}

impl Sink {
    #[inline]
    fn tell(&self, status: Status) {
        self.observer.ended(status, self.id, &self.meta);
    }
}

/// Called once with the final status when a task's handle resolves.
pub(crate) enum Observer {
    /// A closure, boxed per task.
    Call(Box<dyn FnOnce(Status) + Send>),
    /// A shared observer.
    Sink(Sink),
}

impl Observer {
    /// Tells the observer; a shared one comes back, to be dropped later (see
    /// [`Shared::resolve`]).
    fn notify(self, status: Status) -> Option<Observer> {
        match self {
            Observer::Call(f) => {
                f(status);
                None
            }
            Observer::Sink(sink) => {
                sink.tell(status);
                Some(Observer::Sink(sink))
            }
        }
    }
}

/// The state a task shares with its handle: lifecycle, cancellation and the result slot.
pub(crate) struct Shared<T> {
    lifecycle: AtomicU8,
    cancel: CancelFlag,
    slot: Mutex<Slot<T>>,
    cond: Condvar,
}

pub(crate) struct Slot<T> {
    /// The first resolution has been decided (its observers may still be running).
    resolved: bool,
    /// The result was handed to the caller.
    taken: bool,
    status: Status,
    result: Option<Result<T, TaskError>>,
    waker: Option<Waker>,
    sync_waiters: u32,
    observers: Observers,
    /// The futures waiting on the task's cancel flag (see [`CancelSource::with_wakers`]).
    cancel_wakers: Option<Box<Wakers>>,
}

/// A task's observers, in one field: every task's state holds it, and most tasks have
/// none, a ledger alone or one closure, which are kept inline; anything more is boxed.
pub(crate) enum Observers {
    None,
    /// The first observer, a shared one (a ledger): told at the first resolution under
    /// the lock, so resolving takes the lock once, and kept until the state drops.
    Sink(Sink),
    /// The observers, with no shared one first: told at the first resolution, without
    /// the lock.
    Call(Box<dyn FnOnce(Status) + Send>),
    /// A shared first observer and others after it, or a spent shared observer kept.
    Many(Box<Many>),
}

/// The observers of a task that has more than the common cases of [`Observers`].
pub(crate) struct Many {
    /// As [`Observers::Sink`].
    sink: Option<Sink>,
    /// Told at the first resolution, after `sink` and without the lock; after it, only a
    /// spent shared observer, kept until the state drops.
    observer: Option<Observer>,
}

impl Observers {
    /// The first observer when it is a shared one, told under the lock.
    fn first(&self) -> Option<&Sink> {
        match self {
            Observers::Sink(sink) => Some(sink),
            Observers::Many(many) => many.sink.as_ref(),
            Observers::None | Observers::Call(_) => None,
        }
    }

    /// [`take_rest`](Self::take_rest), with the common cases (none, or a ledger alone)
    /// decided inline.
    #[inline]
    fn take_rest_if_any(&mut self) -> Option<Observer> {
        match self {
            Observers::None | Observers::Sink(_) => None,
            Observers::Call(_) | Observers::Many(_) => self.take_rest(),
        }
    }

    /// Takes the observers told without the lock.
    fn take_rest(&mut self) -> Option<Observer> {
        match self {
            Observers::Call(_) => match std::mem::replace(self, Observers::None) {
                Observers::Call(f) => Some(Observer::Call(f)),
                _ => unreachable!("matched as a call"),
            },
            Observers::Many(many) => many.observer.take(),
            Observers::None | Observers::Sink(_) => None,
        }
    }

    /// Keeps a spent shared observer until the state drops (see [`Shared::resolve`]).
    fn keep(&mut self, spent: Observer) {
        if let Observers::Many(many) = self {
            many.observer = Some(spent);
            return;
        }
        let sink = match std::mem::replace(self, Observers::None) {
            Observers::Sink(sink) => Some(sink),
            _ => None,
        };
        *self = Observers::Many(Box::new(Many {
            sink,
            observer: Some(spent),
        }));
    }

    /// Adds an observer after the others; the first, when shared, is told under the lock.
    fn add(&mut self, observer: Observer) {
        *self = match (std::mem::replace(self, Observers::None), observer) {
            (Observers::None, Observer::Sink(sink)) => Observers::Sink(sink),
            (Observers::None, Observer::Call(f)) => Observers::Call(f),
            (Observers::Sink(sink), observer) => Observers::Many(Box::new(Many {
                sink: Some(sink),
                observer: Some(observer),
            })),
            (Observers::Call(f), observer) => Observers::Call(chain(Observer::Call(f), observer)),
            (Observers::Many(mut many), observer) => {
                many.observer = Some(match many.observer.take() {
                    None => observer,
                    Some(first) => Observer::Call(chain(first, observer)),
                });
                Observers::Many(many)
            }
        };
    }
}

/// One observer calling `first`, then `then`, each guarded on its own: one observer's
/// panic must not starve the next.
fn chain(first: Observer, then: Observer) -> Box<dyn FnOnce(Status) + Send> {
    Box::new(move |status| {
        drop(report_observer(first, status));
        drop(report_observer(then, status));
    })
}

impl<T> Shared<T> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::unshared())
    }

    /// The state of a task not yet resolved, to place in an allocation of the caller's.
    pub(crate) fn unshared() -> Self {
        Shared {
            lifecycle: AtomicU8::new(QUEUED),
            cancel: CancelFlag::default(),
            slot: Mutex::new(Slot {
                resolved: false,
                taken: false,
                status: Status::NotStarted,
                result: None,
                waker: None,
                sync_waiters: 0,
                observers: Observers::None,
                cancel_wakers: None,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A poisoned slot only means a waiter panicked; the data is still consistent.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the result if none is stored yet; false when the handle had resolved already.
    pub(crate) fn resolve(&self, result: Result<T, TaskError>) -> bool {
        let status = match &result {
            Ok(_) => Status::Completed,
            Err(e) => e.status(),
        };
        let mut slot = self.lock();
        if slot.resolved {
            return false;
        }
        slot.resolved = true;
        slot.status = status;
        self.lifecycle.store(DONE, Ordering::Release);
        // Observers (ledgers) run before the result is visible, so whoever the result
        // wakes sees them updated. A first shared observer runs under the lock (it is
        // short and never reaches the handle: see `EndObserver`), so the common case, a
        // supervisor's ledger alone, takes the lock once; the others run without it.
        if let Some(sink) = slot.observers.first() {
            report(|| sink.tell(status));
        }
        if let Some(obs) = slot.observers.take_rest_if_any() {
            drop(slot);
            let spent = report_observer(obs, status);
            slot = self.lock();
            // A shared observer's reference is dropped with the task's state, not here:
            // it was taken where the task was submitted, and the state usually goes with
            // the handle, on that same thread, so the observer's reference count (one
            // count for every task of a supervisor) does not move between cores twice
            // per task. It is never called again: `observe` reports a late observer
            // itself, and only the first resolution calls this.
            if let Some(spent) = spent {
                slot.observers.keep(spent);
            }
        }
        slot.result = Some(result);
        let waker = slot.waker.take();
        let notify = slot.sync_waiters > 0;
        drop(slot);
        if notify {
            self.cond.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// True once the result is there (or was taken).
    pub(crate) fn is_finished(&self) -> bool {
        let slot = self.lock();
        slot.result.is_some() || slot.taken
    }

    pub(crate) fn is_resolved(&self) -> bool {
        self.lock().resolved
    }

    /// The status the handle resolved with (meaningful once resolved).
    pub(crate) fn status(&self) -> Status {
        self.lock().status
    }

    /// Moves a queued task to running; false when it was resolved before it could start.
    pub(crate) fn try_start(&self) -> bool {
        self.lifecycle
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Puts a task whose attempt failed back to queued, for a retry. A cancel that came
    /// while the attempt ran (too late to resolve a queued task) resolves it now: the task
    /// is not running, and its next attempt may be a long backoff away.
    pub(crate) fn requeue(&self) {
        // A SeqCst fence here and in `on_fired`, each between writing its own variable and
        // reading the other's: either this sees the cancel or the canceller sees the task
        // queued, never neither (model-checked in `loom_models`).
        if self
            .lifecycle
            .compare_exchange(RUNNING, QUEUED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && {
                fence(Ordering::SeqCst);
                self.cancel.reason_now() == Some(CancelReason::Cancelled)
            }
            && self
                .lifecycle
                .compare_exchange(QUEUED, DONE, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.resolve(Err(TaskError::cancelled()));
        }
    }

    pub(crate) fn flag(&self) -> &CancelFlag {
        &self.cancel
    }

    /// Adds a shared observer, as [`observe`](Self::observe) does; the common case (the
    /// first observer of a task not yet resolved: a ledger's) takes the lock once and
    /// stores it.
    #[inline]
    pub(crate) fn observe_sink(&self, sink: Sink) {
        let mut slot = self.lock();
        if !slot.resolved && matches!(slot.observers, Observers::None) {
            slot.observers = Observers::Sink(sink);
            return;
        }
        drop(slot);
        self.observe(Observer::Sink(sink));
    }

    /// Adds an observer, run after any set before it.
    #[inline(never)]
    pub(crate) fn observe(&self, observer: Observer) {
        let mut slot = self.lock();
        if slot.resolved {
            let status = slot.status;
            drop(slot);
            // Resolved already: nothing else will call it, so report now.
            drop(report_observer(observer, status));
            return;
        }
        // The first observer, when a shared one, gets the place told under the lock.
        slot.observers.add(observer);
    }
}

/// Calls an observer. Observers are layer code that runs wherever a task resolves (a
/// worker, a canceller, a timer); a panic in one must not unwind into that thread, where
/// it would skip the worker's bookkeeping, so it is caught and reported here.
/// Returns what [`Observer::notify`] gives back.
fn report_observer(observer: Observer, status: Status) -> Option<Observer> {
    let call = std::panic::AssertUnwindSafe(|| observer.notify(status));
    std::panic::catch_unwind(call).unwrap_or_else(|payload| {
        observer_panicked(&*payload);
        None
    })
}

/// Calls an observer that stays where it is (a task's first shared observer), catching a
/// panic as [`report_observer`] does; under the slot's lock, which a caught panic does
/// not poison.
#[inline]
fn report(tell: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(tell)) {
        observer_panicked(&*payload);
    }
}

#[cold]
fn observer_panicked(payload: &(dyn std::any::Any + Send)) {
    eprintln!(
        "switchyard: a task observer panicked: {}",
        crate::panic_message(payload)
    );
}

impl<T> Shared<T> {
    /// What a fired token does to the task: see [`CancelSource::fired`].
    fn on_fired(&self, reason: CancelReason) {
        match reason {
            // Cancelling resolves at once only a task that has not started; a running
            // task resolves when it stops.
            CancelReason::Cancelled => {
                // Pairs with the fence in `requeue` (the flag was set just before).
                fence(Ordering::SeqCst);
                if self
                    .lifecycle
                    .compare_exchange(QUEUED, DONE, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    self.resolve(Err(TaskError::cancelled()));
                }
            }
            // A deadline is a promise to the caller: the handle resolves now, whatever runs.
            CancelReason::TimedOut => {
                self.resolve(Err(TaskError::timed_out()));
            }
        }
    }

    /// Fires the task's token as cancelled (what `CancelToken::cancel` does).
    pub(crate) fn cancel(&self) -> bool {
        // What `cancel::fire` does, for a `Shared` of any `T`.
        let fired = self.cancel.set(CancelReason::Cancelled);
        if fired {
            // Woken without the lock: a waker may poll a future that reaches this task.
            let wakers = self.lock().cancel_wakers.take();
            cancel::wake_all(wakers);
            self.on_fired(CancelReason::Cancelled);
        }
        fired
    }
}

impl<T: Send + 'static> CancelSource for Shared<T> {
    fn flag(&self) -> &CancelFlag {
        &self.cancel
    }

    fn with_wakers(&self, f: &mut dyn FnMut(&mut Option<Box<Wakers>>)) {
        f(&mut self.lock().cancel_wakers);
    }

    fn fired(&self, reason: CancelReason) {
        self.on_fired(reason);
    }

    fn is_done(&self) -> bool {
        self.lifecycle.load(Ordering::Acquire) == DONE
    }
}

/// What a handle holds of its task: the shared state, inside whatever allocation carries
/// it (a job's single allocation, with its body beside it, or a bare `Shared` for a
/// handle made resolved).
pub(crate) trait State<T>: CancelSource {
    fn shared(&self) -> &Shared<T>;
}

impl<T: Send + 'static> State<T> for Shared<T> {
    fn shared(&self) -> &Shared<T> {
        self
    }
}

/// The handle of a submitted task: wait for it (`wait`, `wait_timeout`), `.await` it, or
/// cancel it. Dropping the handle detaches the task; it still runs.
///
/// ```
/// use executor_core::{ExecutorExt, InlineExecutor};
/// let exec = InlineExecutor::new("inline");
/// let handle = exec.submit(|| 6 * 7);
/// assert_eq!(handle.wait().unwrap(), 42);
/// ```
pub struct TaskHandle<T> {
    id: TaskId,
    state: Arc<dyn State<T>>,
}

impl<T> TaskHandle<T> {
    fn shared(&self) -> &Shared<T> {
        self.state.shared()
    }
}

impl<T: Send + 'static> TaskHandle<T> {
    pub(crate) fn new(id: TaskId, state: Arc<dyn State<T>>) -> Self {
        Self { id, state }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Blocks until the task ends and returns its result.
    ///
    /// # Waiting inside a task
    /// On a worker of the threads or rayon backends, `wait` does not just sleep: while the
    /// result is not there it runs jobs queued on the worker's own pool (as rayon's `join`
    /// does). So a task may wait for a task it submitted to its own pool, even when the
    /// pool has a single worker, without deadlocking it. Waiting elsewhere blocks the
    /// thread: from a tokio runtime worker prefer `.await`, and a wait for a task that
    /// can only run after the waiting one ends (it holds a limit's only slot, say) never
    /// returns; use [`wait_timeout`](Self::wait_timeout) where that can happen. Neither
    /// `wait_timeout` (a helped job could outlast the timeout) nor `.await` inside an
    /// async task on those backends (its worker parks) helps.
    ///
    /// # Panics
    /// When the handle was polled as a future to completion already.
    pub fn wait(self) -> Result<T, TaskError> {
        let mut slot = self.shared().lock();
        let mut polite = 0;
        loop {
            if let Some(r) = slot.result.take() {
                slot.taken = true;
                return r;
            }
            assert!(!slot.taken, "the task's result was already taken");
            // A result that is moments away is cheaper to wait for by yielding a few times
            // than by sleeping: a sleeping waiter costs the worker a wake-up system call.
            if polite < YIELDS_BEFORE_SLEEP {
                polite += 1;
                drop(slot);
                yield_now();
                slot = self.shared().lock();
                continue;
            }
            // On a pool's worker: run a queued job of the pool (perhaps the awaited one)
            // instead of sleeping. Without the lock: the job may resolve this very handle.
            drop(slot);
            let helped = crate::help::help_once();
            slot = self.shared().lock();
            if helped == Some(true) || slot.result.is_some() {
                continue;
            }
            slot.sync_waiters += 1;
            slot = match helped {
                None => self
                    .shared()
                    .cond
                    .wait(slot)
                    .unwrap_or_else(|e| e.into_inner()),
                // Nothing queued yet: look again soon, the awaited job may still come.
                Some(_) => {
                    self.shared()
                        .cond
                        .wait_timeout(slot, HELP_POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            slot.sync_waiters -= 1;
        }
    }

    /// Waits at most `timeout`. `Ok(result)` when the task ended in time; `Err(handle)`
    /// when it is still going: the same handle comes back, to wait again, cancel or drop.
    /// The handle is never left spent.
    ///
    /// ```
    /// use executor_core::{ExecutorExt, InlineExecutor};
    /// use std::time::Duration;
    /// let exec = InlineExecutor::new("inline");
    /// let handle = exec.submit(|| 6 * 7);
    /// match handle.wait_timeout(Duration::from_secs(1)) {
    ///     Ok(result) => assert_eq!(result.unwrap(), 42),
    ///     Err(still_running) => drop(still_running.cancel()),
    /// }
    /// ```
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, TaskError>, TaskHandle<T>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.shared().lock();
        loop {
            if let Some(r) = slot.result.take() {
                slot.taken = true;
                return Ok(r);
            }
            assert!(!slot.taken, "the task's result was already taken");
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(slot);
                return Err(self);
            }
            slot.sync_waiters += 1;
            slot = self
                .shared()
                .cond
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            slot.sync_waiters -= 1;
        }
    }

    /// True once the task has ended (its result may be taken already).
    pub fn is_finished(&self) -> bool {
        self.shared().is_finished()
    }

    /// Asks the task to stop. A task that has not started never runs and resolves as
    /// cancelled at once; a running async task is dropped at its next poll; a running
    /// blocking task sees [`TaskContext::is_cancelled`](crate::TaskContext::is_cancelled).
    /// Returns true when the task has ended as cancelled by the time this returns.
    pub fn cancel(&self) -> bool {
        self.cancel_token().cancel();
        let slot = self.shared().lock();
        matches!(&slot.result, Some(Err(e)) if e.is_cancelled())
    }

    /// The task's cancellation token.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken::from_source(self.state.clone())
    }
}

impl<T: Send + 'static> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared().lock();
        if let Some(r) = slot.result.take() {
            slot.taken = true;
            return Poll::Ready(r);
        }
        assert!(!slot.taken, "a TaskHandle was polled after it completed");
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> TaskHandle<T> {
    /// Cancels the task without needing `T: Send` bounds (for `TaskSet`'s `Drop`).
    pub(crate) fn cancel_on_drop(&self) {
        self.shared().cancel();
    }
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id).finish()
    }
}

impl<T: Send + 'static> TaskHandle<T> {
    /// A handle that is already resolved with `result`.
    pub(crate) fn ready(id: TaskId, result: Result<T, TaskError>) -> Self {
        let shared = Shared::new();
        shared.resolve(result);
        TaskHandle { id, state: shared }
    }
}
