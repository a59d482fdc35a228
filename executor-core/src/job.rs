//! [`Job`]: a type-erased task as executors receive it, and how a backend runs one.

use crate::backend::MetaRef;
use crate::cancel::{self, CancelFlag, CancelReason, CancelSource, Wakers};
use crate::handle::{EndObserver, Observer, Shared, Sink, State};
use crate::sync::TaskCell;
use crate::{
    CancelToken, Status, TaskContext, TaskError, TaskHandle, TaskId, TaskMeta, WeakCancelToken,
};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a layer does with a failed attempt: take the job (to retry it later) and return
/// `None`, or give the job and error back (to the next hook, or to end the task with that
/// error).
pub type FailureHook = Box<dyn FnOnce(Job, TaskError) -> Option<(Job, TaskError)> + Send>;

/// A failure hook shared by many jobs: a layer installs one handler (an `Arc` clone) on
/// each job instead of boxing a closure per job (see [`Job::on_failure_with`]). It does
/// what a [`FailureHook`] does: take the job to retry it later and return `None`, or give
/// the job and error back.
pub trait FailureHandler: Send + Sync + 'static {
    /// Handles a failed attempt of `job`, which failed with `err`.
    fn on_failure(&self, job: Job, err: TaskError) -> Option<(Job, TaskError)>;
}

/// One failure hook of a job: a closure of its own or a shared handler.
enum Failure {
    Once(FailureHook),
    Shared(Arc<dyn FailureHandler>),
}

impl Failure {
    fn call(self, job: Job, err: TaskError) -> Option<(Job, TaskError)> {
        match self {
            Failure::Once(hook) => hook(job, err),
            Failure::Shared(handler) => handler.on_failure(job, err),
        }
    }
}

/// Called once when an attempt ends, with how it ended (see [`Job::on_attempt_end`]).
pub type AttemptHook = Box<dyn FnOnce(Status) + Send>;

/// Runs around each run of an attempt's body: the call of a blocking body, or one poll of
/// a future. A layer uses it to enter a span, or to measure the CPU time the attempt uses
/// on its thread. See [`Job::on_run`].
pub trait RunHook: Send {
    /// Calls `run` exactly once, doing its own work before and after; `attempt` is the
    /// attempt being run (1-based). A hook that does not call `run` ends the attempt as
    /// panicked.
    fn around(&mut self, attempt: u32, run: &mut dyn FnMut());
}

/// The hooks layers installed for the current attempt, and the error of the previous one.
/// Boxed behind an `Option` so a job that no layer touched stays small and allocates
/// nothing for them.
#[derive(Default)]
struct Hooks {
    failure: List<Failure>,
    run: List<Box<dyn RunHook>>,
    /// Run hooks kept for every attempt (outside the per-attempt ones).
    run_always: List<Box<dyn RunHook>>,
    end: List<AttemptHook>,
    /// The error of the previous attempt: a job dropped before its next attempt starts
    /// ends with it, not as "not started".
    last_error: Option<TaskError>,
}

impl Hooks {
    fn runs(&self) -> bool {
        !self.run.is_empty() || !self.run_always.is_empty()
    }
}

/// Hooks in the order they were added. Most jobs carry one hook of a kind, which is kept
/// inline: no allocation beyond the hook itself on the layered hot path.
struct List<T> {
    first: Option<T>,
    rest: Vec<T>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            first: None,
            rest: Vec::new(),
        }
    }
}

impl<T> List<T> {
    fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.push(item);
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Takes every item out, in order.
    fn take(&mut self) -> impl Iterator<Item = T> + use<T> {
        let first = self.first.take();
        first.into_iter().chain(std::mem::take(&mut self.rest))
    }
}

/// Calls `run` inside every hook of `hooks`, the first outermost.
fn nest(hooks: &mut List<Box<dyn RunHook>>, attempt: u32, run: &mut dyn FnMut()) {
    match &mut hooks.first {
        None => run(),
        Some(first) => first.around(attempt, &mut || nest_slice(&mut hooks.rest, attempt, run)),
    }
}

fn nest_slice(hooks: &mut [Box<dyn RunHook>], attempt: u32, run: &mut dyn FnMut()) {
    match hooks.split_first_mut() {
        None => run(),
        Some((hook, rest)) => hook.around(attempt, &mut || nest_slice(rest, attempt, run)),
    }
}

/// Runs `body` inside the run hooks; `None` when a hook skipped it. A panicking hook is
/// reported and does not unwind into the worker.
fn run_hooked<R>(hooks: &mut Hooks, attempt: u32, body: impl FnOnce() -> R) -> Option<R> {
    let mut body = Some(body);
    let mut out = None;
    let Hooks {
        run, run_always, ..
    } = hooks;
    let nested = catch_unwind(AssertUnwindSafe(|| {
        nest(run_always, attempt, &mut || {
            nest(run, attempt, &mut || {
                if let Some(body) = body.take() {
                    out = Some(body());
                }
            })
        })
    }));
    if let Err(payload) = nested {
        eprintln!(
            "switchyard: a task's run hook panicked: {}",
            crate::panic_message(&*payload)
        );
    }
    out
}

const SKIPPED: &str = "a layer's run hook did not run the task";

/// The typed task behind a job's erasure, in the task's one allocation.
///
/// The `unsafe` methods reach the job's cell (body, running future, value); see
/// [`TaskRef`], the only place that calls them.
#[allow(unsafe_code)] // The task's cell: see `Joint`'s SAFETY comment.
trait ErasedTask: CancelSource {
    fn is_async(&self) -> bool;
    fn can_retry(&self) -> bool;
    fn shared(&self) -> &dyn SharedOps;
    /// [`SharedOps::observe_sink`] in one call (a ledger's, for every task).
    fn observe_sink(&self, sink: Sink);
    /// True when the body reads its attempt's context (see [`Body::CONTEXT`]).
    fn needs_context(&self) -> bool;
    /// Runs a blocking body; `Ok` when it returned its value, which waits for
    /// [`deliver`](Self::deliver). `ctx` is `Some` when
    /// [`needs_context`](Self::needs_context).
    ///
    /// # Safety
    /// No other call of these `unsafe` methods on the same task may run at the same time.
    unsafe fn run_blocking(&self, ctx: Option<&TaskContext>) -> Result<(), TaskError>;
    /// Polls the async body (starting it on the first poll); `Ready(Ok)` as for
    /// [`run_blocking`](Self::run_blocking). `ctx` is the attempt's context, `Some` when
    /// [`needs_context`](Self::needs_context).
    ///
    /// # Safety
    /// As for [`run_blocking`](Self::run_blocking).
    unsafe fn poll_async(
        &self,
        cx: &mut Context<'_>,
        ctx: Option<&TaskContext>,
    ) -> Poll<Result<(), TaskError>>;
    /// Resolves the handle with the value the body returned (after the run hooks have
    /// finished, so what they measured is in place when observers run); false when the
    /// handle had resolved already (timed out while it ran).
    ///
    /// # Safety
    /// As for [`run_blocking`](Self::run_blocking).
    unsafe fn deliver(&self) -> bool;
    /// Drops a running async body.
    ///
    /// # Safety
    /// As for [`run_blocking`](Self::run_blocking).
    unsafe fn stop(&self);
    /// Drops the body, a running future and an undelivered value: the job is gone, and
    /// what the body captured must not live on with the handle.
    ///
    /// # Safety
    /// As for [`run_blocking`](Self::run_blocking).
    unsafe fn release(&self);
}

/// A job's reference to its task: the only `ErasedTask` reference there is (the handle
/// and tokens reach the same allocation only as its shared state), and not `Clone`. So
/// `&mut self` here is exclusive access to the task's cell, which is what the `unsafe`
/// methods of [`ErasedTask`] ask of their caller.
struct TaskRef(Arc<dyn ErasedTask>);

#[allow(unsafe_code)] // The task's cell: see `Joint`'s SAFETY comment.
impl TaskRef {
    fn is_async(&self) -> bool {
        self.0.is_async()
    }
    fn can_retry(&self) -> bool {
        self.0.can_retry()
    }
    fn shared(&self) -> &dyn SharedOps {
        self.0.shared()
    }
    fn needs_context(&self) -> bool {
        self.0.needs_context()
    }
    /// Wakes `waker` when the task's token fires; true when it has fired already.
    fn register(&self, waker: &std::task::Waker) -> bool {
        cancel::register(&*self.0, waker)
    }
    fn token(&self) -> CancelToken {
        CancelToken::from_source(self.0.clone())
    }
    fn weak_token(&self) -> WeakCancelToken {
        let weak: std::sync::Weak<dyn ErasedTask> = Arc::downgrade(&self.0);
        WeakCancelToken::from_weak(weak)
    }
    fn run_blocking(&mut self, ctx: Option<&TaskContext>) -> Result<(), TaskError> {
        // SAFETY: `&mut self` on the only `TaskRef` of this task (see the type's docs).
        unsafe { self.0.run_blocking(ctx) }
    }
    fn poll_async(
        &mut self,
        cx: &mut Context<'_>,
        ctx: Option<&TaskContext>,
    ) -> Poll<Result<(), TaskError>> {
        // SAFETY: as in `run_blocking`.
        unsafe { self.0.poll_async(cx, ctx) }
    }
    fn deliver(&mut self) -> bool {
        // SAFETY: as in `run_blocking`.
        unsafe { self.0.deliver() }
    }
    fn stop(&mut self) {
        // SAFETY: as in `run_blocking`.
        unsafe { self.0.stop() }
    }
}

#[allow(unsafe_code)] // The task's cell: see `Joint`'s SAFETY comment.
impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: as in `run_blocking`; this is the last use of this `TaskRef`.
        unsafe { self.0.release() }
    }
}

/// The untyped operations on a task's shared state.
trait SharedOps: Send + Sync {
    fn resolve_err(&self, err: TaskError) -> bool;
    fn is_resolved(&self) -> bool;
    fn status(&self) -> Status;
    fn try_start(&self) -> bool;
    fn requeue(&self);
    fn reason(&self) -> Option<CancelReason>;
    fn observe(&self, observer: Observer);
}

impl<T: Send + 'static> SharedOps for Shared<T> {
    fn resolve_err(&self, err: TaskError) -> bool {
        self.resolve(Err(err))
    }
    fn is_resolved(&self) -> bool {
        Shared::is_resolved(self)
    }
    fn status(&self) -> Status {
        Shared::status(self)
    }
    fn try_start(&self) -> bool {
        Shared::try_start(self)
    }
    fn requeue(&self) {
        Shared::requeue(self)
    }
    fn reason(&self) -> Option<CancelReason> {
        self.flag().reason()
    }
    fn observe(&self, observer: Observer) {
        Shared::observe(self, observer)
    }
}

/// The future an async body started for its attempt (a body that is itself the future
/// needs none): kept in the body that starts one, [`AsyncRepeat`], so the other bodies do
/// not carry its room in every task's allocation.
type Running<T> = Option<BoxFuture<Result<T, TaskError>>>;

/// How a task body is called.
#[allow(unsafe_code)] // `poll`'s pinning contract: see `AsyncOnce`.
trait Body<T>: Send + 'static {
    const ASYNC: bool;
    /// The body may run again (retries).
    const REPEATABLE: bool;
    /// The body reads its attempt's context. A closure or a future that runs once and
    /// was submitted without one does not, so it runs without making one (an `Arc` count
    /// up and down per task).
    const CONTEXT: bool = true;
    /// Calls a blocking body; `ctx` is `Some` when [`CONTEXT`](Self::CONTEXT).
    fn call(&mut self, ctx: Option<&TaskContext>) -> Result<T, TaskError>;
    /// Polls the attempt's future, starting it on the first poll: a future it starts waits
    /// in the body; a body that is itself the future is polled where it lies. `ctx` is
    /// `Some` when [`CONTEXT`](Self::CONTEXT).
    ///
    /// A blocking body is never polled (`ASYNC` is false); this default says so.
    ///
    /// # Safety
    /// `self` is pinned: from the first call on, it is neither moved nor reused before it
    /// is dropped, in place.
    unsafe fn poll(
        &mut self,
        cx: &mut Context<'_>,
        ctx: Option<&TaskContext>,
    ) -> Poll<Result<T, TaskError>> {
        let _ = (cx, ctx);
        unreachable!("{NOT_ASYNC}")
    }
    /// Drops the future of the attempt under way, in place.
    fn stop(&mut self) {}
}

/// A blocking body that runs once.
struct Once<F>(Option<F>);
/// A blocking body that runs once and reads no context (what `submit` runs).
struct Plain<F>(Option<F>);
/// A blocking body that may run again (retries).
struct Repeat<F>(F);
/// A future that runs once: polled where it lies, inside the task's one allocation, so
/// it costs no box of its own.
struct AsyncOnce<Fut>(Option<Fut>);
/// A future factory that may run again (retries), and the future of the attempt under way.
struct AsyncRepeat<F, T> {
    factory: F,
    running: Running<T>,
}

const TAKEN: &str = "a run-once task body was started twice";
const NOT_ASYNC: &str = "a blocking body is never polled as a future";
const NOT_BLOCKING: &str = "an async body is never called as a closure";
const NO_CONTEXT: &str = "a body that reads its context was run without one";

impl<T, F> Body<T> for Once<F>
where
    F: FnOnce(&TaskContext) -> Result<T, TaskError> + Send + 'static,
{
    const ASYNC: bool = false;
    const REPEATABLE: bool = false;
    fn call(&mut self, ctx: Option<&TaskContext>) -> Result<T, TaskError> {
        (self.0.take().expect(TAKEN))(ctx.expect(NO_CONTEXT))
    }
}

impl<T, F> Body<T> for Plain<F>
where
    F: FnOnce() -> T + Send + 'static,
{
    const ASYNC: bool = false;
    const REPEATABLE: bool = false;
    const CONTEXT: bool = false;
    fn call(&mut self, _: Option<&TaskContext>) -> Result<T, TaskError> {
        Ok((self.0.take().expect(TAKEN))())
    }
}

impl<T, F> Body<T> for Repeat<F>
where
    F: Fn(&TaskContext) -> Result<T, TaskError> + Send + 'static,
{
    const ASYNC: bool = false;
    const REPEATABLE: bool = true;
    fn call(&mut self, ctx: Option<&TaskContext>) -> Result<T, TaskError> {
        (self.0)(ctx.expect(NO_CONTEXT))
    }
}

#[allow(unsafe_code)] // The future is pinned in place: see `poll`.
impl<T, Fut> Body<T> for AsyncOnce<Fut>
where
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    const ASYNC: bool = true;
    const REPEATABLE: bool = false;
    const CONTEXT: bool = false;
    fn call(&mut self, _: Option<&TaskContext>) -> Result<T, TaskError> {
        unreachable!("{NOT_BLOCKING}")
    }
    unsafe fn poll(
        &mut self,
        cx: &mut Context<'_>,
        _: Option<&TaskContext>,
    ) -> Poll<Result<T, TaskError>> {
        let fut = self.0.as_mut().expect(TAKEN);
        // SAFETY: the caller pins `self` (this method's contract), so the future inside it
        // stays where it is until it is dropped in place: below when it is done, in `stop`,
        // or with the body. Nothing moves it out (`self.0` is only ever set to `None`).
        let polled = unsafe { Pin::new_unchecked(fut) }.poll(cx);
        if polled.is_ready() {
            self.0 = None;
        }
        polled
    }
    fn stop(&mut self) {
        self.0 = None;
    }
}

#[allow(unsafe_code)] // `Body::poll` is unsafe to call, not to implement here.
impl<T, F, Fut> Body<T> for AsyncRepeat<F, T>
where
    T: 'static,
    F: Fn(TaskContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
{
    const ASYNC: bool = true;
    const REPEATABLE: bool = true;
    fn call(&mut self, _: Option<&TaskContext>) -> Result<T, TaskError> {
        unreachable!("{NOT_BLOCKING}")
    }
    unsafe fn poll(
        &mut self,
        cx: &mut Context<'_>,
        ctx: Option<&TaskContext>,
    ) -> Poll<Result<T, TaskError>> {
        let factory = &self.factory;
        let fut = self
            .running
            .get_or_insert_with(|| Box::pin(factory(ctx.expect(NO_CONTEXT).clone())));
        let polled = fut.as_mut().poll(cx);
        if polled.is_ready() {
            self.running = None;
        }
        polled
    }
    fn stop(&mut self) {
        self.running = None;
    }
}

/// A task's one allocation: the state it shares with its handle and tokens, and beside
/// it the part only its job touches.
struct Joint<T, B> {
    shared: Shared<T>,
    cell: TaskCell<Work<T, B>>,
}

/// What only the job touches.
struct Work<T, B> {
    /// `None` once the job is gone.
    body: Option<B>,
    /// The value the body returned, until it is delivered.
    value: Option<T>,
}

// SAFETY: a `Joint` is shared between threads through the `Arc`s of its job, its handle
// and its tokens. `shared` is `Sync` by itself (a mutex, atomics, a condvar). `cell` is
// reached only by `ErasedTask`'s `unsafe` methods, whose contract is that no two run at
// once: only the task's `TaskRef` calls them, from `&mut self` or its drop, and there is
// one `TaskRef` per task. The other holders see the allocation as `State` or
// `CancelSource`, which never reach `cell`. So the cell's contents are used by one thread
// at a time, and need only be `Send`. The loom model `loom_job_cell_is_never_shared`
// checks this against a handle and a token used from other threads.
#[allow(unsafe_code)] // The task's cell: see `Joint`'s SAFETY comment.
unsafe impl<T: Send, B: Send> Sync for Joint<T, B> {}

#[allow(unsafe_code)] // The task's cell: see `Joint`'s SAFETY comment.
impl<T: Send + 'static, B: Body<T>> Joint<T, B> {
    /// Calls `f` on the job's part.
    ///
    /// # Safety
    /// The caller is one of `ErasedTask`'s `unsafe` methods, under their contract.
    unsafe fn work<R>(&self, f: impl FnOnce(&mut Work<T, B>) -> R) -> R {
        // SAFETY: exclusive by the caller's contract, so no other reference exists.
        self.cell.with_mut(|work| f(unsafe { &mut *work }))
    }
}

const GONE: &str = "a task body was run after its job was dropped";

#[allow(unsafe_code)] // The task's cell: see `Joint`'s SAFETY comment.
impl<T: Send + 'static, B: Body<T>> ErasedTask for Joint<T, B> {
    fn is_async(&self) -> bool {
        B::ASYNC
    }
    fn can_retry(&self) -> bool {
        B::REPEATABLE
    }
    fn shared(&self) -> &dyn SharedOps {
        &self.shared
    }
    fn observe_sink(&self, sink: Sink) {
        self.shared.observe_sink(sink)
    }
    fn needs_context(&self) -> bool {
        B::CONTEXT
    }
    unsafe fn run_blocking(&self, ctx: Option<&TaskContext>) -> Result<(), TaskError> {
        // SAFETY: the caller's contract is `work`'s.
        unsafe {
            self.work(|w| {
                w.value = Some(w.body.as_mut().expect(GONE).call(ctx)?);
                Ok(())
            })
        }
    }
    unsafe fn poll_async(
        &self,
        cx: &mut Context<'_>,
        ctx: Option<&TaskContext>,
    ) -> Poll<Result<(), TaskError>> {
        // SAFETY: the caller's contract is `work`'s. The body is pinned where it lies, as
        // `Body::poll` asks: it sits in the task's allocation, which does not move while
        // this reference to it lives, and it is never moved out of its cell, only dropped
        // in place (in `stop`, `release`, or with the allocation).
        unsafe {
            self.work(|w| {
                let body = w.body.as_mut().expect(GONE);
                match body.poll(cx, ctx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => Poll::Ready(r.map(|v| w.value = Some(v))),
                }
            })
        }
    }
    unsafe fn deliver(&self) -> bool {
        // SAFETY: the caller's contract is `work`'s.
        match unsafe { self.work(|w| w.value.take()) } {
            Some(v) => self.shared.resolve(Ok(v)),
            None => false,
        }
    }
    // `stop` and `release` drop the body's parts inside `work`, in place (a pinned future
    // must not move). No drop can reach this cell again meanwhile: only the task's one
    // `TaskRef` reaches it, and that is busy here (`&mut self`, or its own drop); what
    // is dropped is `'static` and cannot hold a borrow of it. A body that owned the job
    // (through a slot it captured) would be a cycle that nothing drops, not a re-entry:
    // the job being dropped here is not in any slot.
    unsafe fn stop(&self) {
        // SAFETY: the caller's contract is `work`'s.
        unsafe {
            self.work(|w| {
                if let Some(body) = w.body.as_mut() {
                    body.stop();
                }
            })
        }
    }
    unsafe fn release(&self) {
        // SAFETY: the caller's contract is `work`'s. The body drops in place (see above).
        unsafe {
            self.work(|w| {
                w.body = None;
                w.value = None;
            })
        }
    }
}

impl<T: Send + 'static, B: Send> CancelSource for Joint<T, B> {
    fn flag(&self) -> &CancelFlag {
        CancelSource::flag(&self.shared)
    }
    fn with_wakers(&self, f: &mut dyn FnMut(&mut Option<Box<Wakers>>)) {
        self.shared.with_wakers(f)
    }
    fn fired(&self, reason: CancelReason) {
        self.shared.fired(reason)
    }
    fn is_done(&self) -> bool {
        self.shared.is_done()
    }
}

impl<T: Send + 'static, B: Send> State<T> for Joint<T, B> {
    fn shared(&self) -> &Shared<T> {
        &self.shared
    }
}

/// A submitted task, type-erased: what [`Executor::execute`](crate::Executor::execute) receives.
///
/// Backends run it with [`run`](Self::run) on a thread (a future is driven to completion
/// there) or turn it into a future with [`into_future`](Self::into_future). Either way the
/// job catches panics, honours cancellation and delivers the result to the task's handle.
/// A job dropped without running resolves its handle as "not started" (shut down), so no
/// caller waits forever.
pub struct Job {
    id: TaskId,
    meta: MetaRef,
    attempt: u32,
    deadline: Option<Instant>,
    task: TaskRef,
    hooks: Option<Box<Hooks>>,
    /// The first failure hook, when it is a shared handler (the retry layer's): kept
    /// inline, so a layered job that carries only that allocates no `Hooks`.
    failure: Option<Arc<dyn FailureHandler>>,
    started: bool,
    settled: bool,
    /// A priority given by the route (see [`Job::set_priority`]), valid with
    /// [`PRIORITY_SET`]; the meta's otherwise.
    priority: i8,
    /// [`PRIORITY_SET`], [`ON_THREAD`].
    flags: u8,
}

/// `Job::flags`: `Job::priority` holds a priority set for this job.
const PRIORITY_SET: u8 = 1;
/// `Job::flags`: run this async job on a thread (see [`Job::set_on_thread`]).
const ON_THREAD: u8 = 2;

impl Job {
    #[inline]
    fn new<T: Send + 'static, B: Body<T>>(meta: MetaRef, body: B) -> (Job, TaskHandle<T>) {
        let id = TaskId::next();
        // One allocation for the task: the handle's state and the job's body together.
        let joint = Arc::new(Joint {
            shared: Shared::unshared(),
            cell: TaskCell::new(Work {
                body: Some(body),
                value: None,
            }),
        });
        let handle = TaskHandle::new(id, joint.clone());
        let task = TaskRef(joint);
        let job = Job {
            id,
            meta,
            attempt: 1,
            deadline: None,
            task,
            hooks: None,
            failure: None,
            started: false,
            settled: false,
            priority: 0,
            flags: 0,
        };
        (job, handle)
    }

    /// A blocking task that runs once.
    pub fn once<T, F>(meta: impl Into<MetaRef>, f: F) -> (Job, TaskHandle<T>)
    where
        T: Send + 'static,
        F: FnOnce(&TaskContext) -> Result<T, TaskError> + Send + 'static,
    {
        Job::new(meta.into(), Once(Some(f)))
    }

    /// A blocking task that runs once and does not read its context (what
    /// [`ExecutorExt::submit`](crate::ExecutorExt::submit) sends): it runs without one.
    #[inline]
    pub(crate) fn plain<T, F>(meta: MetaRef, f: F) -> (Job, TaskHandle<T>)
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        Job::new(meta, Plain(Some(f)))
    }

    /// A blocking task that layers may run again after a failure.
    pub fn repeatable<T, F>(meta: impl Into<MetaRef>, f: F) -> (Job, TaskHandle<T>)
    where
        T: Send + 'static,
        F: Fn(&TaskContext) -> Result<T, TaskError> + Send + 'static,
    {
        Job::new(meta.into(), Repeat(f))
    }

    /// A future that runs once.
    pub fn future<T, Fut>(meta: impl Into<MetaRef>, fut: Fut) -> (Job, TaskHandle<T>)
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
    {
        Job::new(meta.into(), AsyncOnce(Some(fut)))
    }

    /// A future factory that layers may call again after a failure.
    pub fn future_repeatable<T, F, Fut>(meta: impl Into<MetaRef>, f: F) -> (Job, TaskHandle<T>)
    where
        T: Send + 'static,
        F: Fn(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, TaskError>> + Send + 'static,
    {
        Job::new(
            meta.into(),
            AsyncRepeat {
                factory: f,
                running: None,
            },
        )
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name, tags and key.
    pub fn meta(&self) -> &TaskMeta {
        &self.meta
    }

    /// The task's meta as a cheap shared reference (keep it without copying the meta).
    pub fn meta_ref(&self) -> &MetaRef {
        &self.meta
    }

    /// The priority queues serve this job by: the one set with
    /// [`set_priority`](Self::set_priority), else the meta's ([`TaskMeta::priority`], 0
    /// unless set).
    #[inline]
    pub fn priority(&self) -> i8 {
        if self.flags & PRIORITY_SET != 0 {
            self.priority
        } else {
            self.meta.priority()
        }
    }

    /// Sets the priority queues serve this job by, for all its attempts (the supervisor
    /// sets a route's priority here for a task whose meta has none).
    pub fn set_priority(&mut self, priority: i8) {
        self.priority = priority;
        self.flags |= PRIORITY_SET;
    }

    /// Asks a backend that polls async jobs as tasks of a runtime to run this one on a
    /// thread instead, because its polls block (tokio: on its blocking pool, where the
    /// future is driven to completion in the runtime's context). The supervisor's auto
    /// placement sets it for task names found holding a runtime worker. Backends that run
    /// every job on a thread of their own ignore it.
    pub fn set_on_thread(&mut self) {
        self.flags |= ON_THREAD;
    }

    /// True when [`set_on_thread`](Self::set_on_thread) asked for a thread.
    #[inline]
    pub fn on_thread(&self) -> bool {
        self.flags & ON_THREAD != 0
    }

    /// Which attempt the next run is (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The deadline the task's context reports.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sets the deadline the task's context reports (a timeout layer also arms a timer
    /// that calls [`CancelToken::expire`]).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// True when the body is a future (a backend with a runtime polls it natively).
    pub fn is_async(&self) -> bool {
        self.task.is_async()
    }

    /// True when the body may run again after a failure (submitted with `run`/`run_async`).
    pub fn can_retry(&self) -> bool {
        self.task.can_retry()
    }

    /// True once the task's handle has resolved (cancelled or timed out while queued).
    pub fn is_resolved(&self) -> bool {
        self.task.shared().is_resolved()
    }

    /// The task's cancellation token.
    pub fn cancel_token(&self) -> CancelToken {
        self.task.token()
    }

    /// The task's cancellation token in its weak form (one reference-count step, and
    /// the task's state is not kept alive by it).
    pub fn weak_cancel_token(&self) -> WeakCancelToken {
        self.task.weak_token()
    }

    /// Calls `observer` once with the final status when the task's handle resolves.
    pub fn observe(&self, observer: impl FnOnce(Status) + Send + 'static) {
        self.task
            .shared()
            .observe(Observer::Call(Box::new(observer)));
    }

    /// Tells `observer` once how the task ended, as [`observe`](Self::observe) does, but
    /// with no allocation per task: the observer is shared, and is handed the task's id
    /// and meta with the status (a ledger's hot path).
    #[inline]
    pub fn observe_with(&self, observer: Arc<dyn EndObserver>) {
        self.task.0.observe_sink(Sink {
            observer,
            id: self.id,
            meta: self.meta.clone(),
        });
    }

    fn hooks(&mut self) -> &mut Hooks {
        self.hooks.get_or_insert_with(Default::default)
    }

    /// Adds a hook a failed attempt (an error or a panic) of a retryable job is handed to,
    /// for this attempt only. Hooks compose: they run in the order they were added, each
    /// handing the job and error on to the next, until one takes the job (a retry) or
    /// none is left (the task ends with the error).
    pub fn on_failure(&mut self, hook: FailureHook) {
        self.hooks().failure.push(Failure::Once(hook));
    }

    /// [`on_failure`](Self::on_failure) with a handler shared by many jobs: installing it
    /// costs an `Arc` clone, not a boxed closure per job.
    pub fn on_failure_with(&mut self, handler: Arc<dyn FailureHandler>) {
        if self.failure.is_none() && !self.has_listed_failure_hooks() {
            self.failure = Some(handler);
        } else {
            self.hooks().failure.push(Failure::Shared(handler));
        }
    }

    /// True when a failure hook waits in `Hooks` (beside or instead of the inline one).
    fn has_listed_failure_hooks(&self) -> bool {
        self.hooks.as_ref().is_some_and(|h| !h.failure.is_empty())
    }

    /// Adds a hook called once when this attempt ends, however it ends: with its status
    /// after it ran, or when the job is resolved or dropped without running. Called before
    /// any failure hook, so a slot it gives back is free for a retry.
    pub fn on_attempt_end(&mut self, hook: impl FnOnce(Status) + Send + 'static) {
        self.hooks().end.push(Box::new(hook));
    }

    /// Adds a hook that runs around each run of this attempt's body (see [`RunHook`]).
    /// Hooks nest: the first added is outermost.
    pub fn on_run(&mut self, hook: Box<dyn RunHook>) {
        self.hooks().run.push(hook);
    }

    /// Adds a run hook kept for every attempt of this job, not only this one (e.g. to sum
    /// the CPU time of all attempts). These nest outside the per-attempt hooks.
    pub fn on_every_run(&mut self, hook: Box<dyn RunHook>) {
        self.hooks().run_always.push(hook);
    }

    /// Prepares a job whose attempt failed for its next attempt.
    pub fn next_attempt(mut self) -> Job {
        self.attempt += 1;
        self.started = false;
        self.task.shared().requeue();
        self
    }

    /// [`next_attempt`](Self::next_attempt), remembering the failed attempt's error: if
    /// the job is dropped before the next attempt starts (a shutdown during the backoff),
    /// the task ends with `err` rather than as not started.
    pub fn next_attempt_after(mut self, err: TaskError) -> Job {
        self.hooks().last_error = Some(err);
        self.next_attempt()
    }

    /// Calls the attempt-end hooks (once) and forgets this attempt's other hooks.
    #[inline]
    fn end_attempt(&mut self, status: Status) {
        if let Some(hooks) = self.hooks.as_mut() {
            Self::end_hooked_attempt(hooks, status);
        }
    }

    /// [`end_attempt`](Self::end_attempt) for a job with hooks (out of line: most have none).
    #[inline(never)]
    fn end_hooked_attempt(hooks: &mut Hooks, status: Status) {
        drop(hooks.run.take());
        for hook in hooks.end.take() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook(status))) {
                eprintln!(
                    "switchyard: a task's attempt hook panicked: {}",
                    crate::panic_message(&*payload)
                );
            }
        }
    }

    /// Ends the task without running it: its handle resolves with `err`, unless it had
    /// resolved already (cancelled or timed out while queued). Returns the status the
    /// handle ended with.
    pub fn resolve(mut self, err: TaskError) -> Status {
        self.settled = true;
        let status = err.status();
        let status = if self.task.shared().resolve_err(err) {
            status
        } else {
            self.task.shared().status()
        };
        self.end_attempt(status);
        status
    }

    /// Runs this attempt on the current thread and returns how it ended. A future is
    /// driven to completion here. Panics are caught and reported through the handle.
    pub fn run(mut self) -> Status {
        if self.is_async() {
            return crate::block_on(self.into_future());
        }
        if let Err(status) = self.start() {
            return status;
        }
        let ctx = self.task.needs_context().then(|| self.context());
        let task = &mut self.task;
        let mut body = || {
            catch_unwind(AssertUnwindSafe(|| task.run_blocking(ctx.as_ref())))
                .unwrap_or_else(|payload| Err(TaskError::from_panic(payload)))
        };
        let result = match self.hooks.as_deref_mut().filter(|h| h.runs()) {
            None => body(),
            Some(h) => run_hooked(h, self.attempt, body)
                .unwrap_or_else(|| Err(TaskError::panicked(SKIPPED))),
        };
        match result {
            // Done: ended here, without moving the job into `finish`.
            Ok(()) => self.delivered(),
            Err(e) => self.finish(e),
        }
    }

    /// Ends an attempt whose body returned its value: success is final. Delivers the value
    /// and says how the handle ended: a value that came after the handle resolved (timed
    /// out) is counted as that, not as completed.
    #[inline]
    fn delivered(&mut self) -> Status {
        let delivered = self.task.deliver();
        self.settled = true;
        let status = if delivered {
            Status::Completed
        } else {
            self.task.shared().status()
        };
        self.end_attempt(status);
        status
    }

    /// This attempt as a future, for backends with an async runtime. A blocking body runs
    /// inline on the first poll: prefer [`run`](Self::run) on a blocking thread for those.
    pub fn into_future(self) -> JobFuture {
        JobFuture {
            job: Some(self),
            ctx: None,
            begun: false,
        }
    }

    /// Starts the attempt: `Err(status)` when the task resolved before it could start.
    fn start(&mut self) -> Result<(), Status> {
        let shared = self.task.shared();
        if !shared.try_start() {
            self.settled = true;
            let status = match shared.reason() {
                Some(CancelReason::TimedOut) => Status::TimedOut,
                _ => Status::Cancelled,
            };
            self.end_attempt(status);
            return Err(status);
        }
        if let Some(reason) = shared.reason() {
            let err = reason_error(reason);
            let status = err.status();
            shared.resolve_err(err);
            self.settled = true;
            self.end_attempt(status);
            return Err(status);
        }
        self.started = true;
        if let Some(h) = self.hooks.as_mut() {
            h.last_error = None;
        }
        Ok(())
    }

    /// The context of the attempt under way.
    fn context(&self) -> TaskContext {
        TaskContext::new(
            self.id,
            self.attempt,
            self.deadline,
            self.meta.clone(),
            self.task.token(),
        )
    }

    /// Ends a failed attempt: the failure goes to the failure hook of a retryable job, or
    /// ends the task. (A success ends in [`delivered`](Self::delivered).)
    fn finish(mut self, err: TaskError) -> Status {
        // A task that stops after it was asked to ends as cancelled (or timed out).
        let err = match self.task.shared().reason() {
            Some(reason) => reason_error(reason),
            None => err,
        };
        let status = err.status();
        let retryable = matches!(status, Status::Failed | Status::Panicked) && self.can_retry();
        if !retryable || (self.failure.is_none() && !self.has_listed_failure_hooks()) {
            return self.resolve(err);
        }
        // The inline handler was added before any listed hook.
        let first = self.failure.take().map(Failure::Shared);
        let rest = self.hooks.as_mut().map(|h| h.failure.take());
        let failure = first.into_iter().chain(rest.into_iter().flatten());
        // The hooks own the job now: one retries it later, or the last hands it back to
        // end it. Either way this attempt's status is what the backend counts.
        // A panicking hook must not unwind into the worker (skipping its bookkeeping);
        // the job it owned was dropped with it, which resolves the handle.
        self.task.stop();
        self.end_attempt(status);
        let mut held = Some((self, err));
        for hook in failure {
            let Some((job, err)) = held.take() else { break };
            match catch_unwind(AssertUnwindSafe(|| hook.call(job, err))) {
                Ok(next) => held = next,
                Err(payload) => eprintln!(
                    "switchyard: a task's failure hook panicked: {}",
                    crate::panic_message(&*payload)
                ),
            }
        }
        if let Some((job, err)) = held {
            job.resolve(err);
        }
        status
    }
}

fn reason_error(reason: CancelReason) -> TaskError {
    match reason {
        CancelReason::Cancelled => TaskError::cancelled(),
        CancelReason::TimedOut => TaskError::timed_out(),
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.settled {
            let last = self.hooks.as_mut().and_then(|h| h.last_error.take());
            let err = match last {
                _ if self.started => TaskError::cancelled(),
                Some(err) => err,
                None => TaskError::shutdown(),
            };
            self.task.shared().resolve_err(err);
        }
        if self.hooks.is_some() {
            let status = self.task.shared().status();
            self.end_attempt(status);
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("name", &self.meta.name())
            .field("attempt", &self.attempt)
            .field("async", &self.is_async())
            .finish()
    }
}

/// One attempt of a [`Job`] as a future; resolves to how the attempt ended.
///
/// Dropping it before it completes resolves the task's handle (as not started, or as
/// cancelled when it had started), so a runtime that shuts down loses no handle.
pub struct JobFuture {
    job: Option<Job>,
    /// The attempt's context, for a body that reads it.
    ctx: Option<TaskContext>,
    begun: bool,
}

impl JobFuture {
    /// True once the attempt has started running.
    pub fn has_started(&self) -> bool {
        self.begun
    }

    /// The job (`None` once the attempt completed).
    pub fn job(&self) -> Option<&Job> {
        self.job.as_ref()
    }

    /// Takes the job out of an unfinished attempt, e.g. to end it when a runtime drops it.
    pub fn take_job(&mut self) -> Option<Job> {
        self.job.take()
    }

    /// Ends the attempt with what its body returned.
    fn conclude(&mut self, result: Result<(), TaskError>) -> Status {
        let mut job = self.job.take().expect("job present");
        match result {
            Ok(()) => job.delivered(),
            Err(e) => job.finish(e),
        }
    }
}

impl Future for JobFuture {
    type Output = Status;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Status> {
        let this = self.get_mut();
        let job = this
            .job
            .as_mut()
            .expect("a JobFuture was polled after it completed");
        if !this.begun {
            if let Err(status) = job.start() {
                this.job = None;
                return Poll::Ready(status);
            }
            this.begun = true;
            if job.task.needs_context() {
                this.ctx = Some(job.context());
            }
        }
        let ctx = this.ctx.as_ref();
        let task = &mut job.task;
        let attempt = job.attempt;
        let hooks = job.hooks.as_deref_mut().filter(|h| h.runs());
        if !task.is_async() {
            let mut body = || {
                catch_unwind(AssertUnwindSafe(|| task.run_blocking(ctx)))
                    .unwrap_or_else(|payload| Err(TaskError::from_panic(payload)))
            };
            let result = match hooks {
                None => body(),
                Some(h) => run_hooked(h, attempt, body)
                    .unwrap_or_else(|| Err(TaskError::panicked(SKIPPED))),
            };
            return Poll::Ready(this.conclude(result));
        }
        if let Some(reason) = task.shared().reason() {
            task.stop();
            let job = this.job.take().expect("job present");
            return Poll::Ready(job.finish(reason_error(reason)));
        }
        let mut poll = || catch_unwind(AssertUnwindSafe(|| task.poll_async(cx, ctx)));
        let polled = match hooks {
            None => poll(),
            Some(h) => run_hooked(h, attempt, poll)
                .unwrap_or_else(|| Ok(Poll::Ready(Err(TaskError::panicked(SKIPPED))))),
        };
        match polled {
            Ok(Poll::Pending) => {
                // Wake up when the token fires, so cancellation and deadlines take effect.
                if task.register(cx.waker()) {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Ok(Poll::Ready(result)) => Poll::Ready(this.conclude(result)),
            Err(payload) => {
                task.stop();
                let job = this.job.take().expect("job present");
                Poll::Ready(job.finish(TaskError::from_panic(payload)))
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Executor, InlineExecutor};
    use std::sync::Mutex;

    /// Records every end it hears of.
    #[derive(Default)]
    struct Heard(Mutex<Vec<(Status, TaskId, String)>>);

    impl EndObserver for Heard {
        fn ended(&self, status: Status, id: TaskId, meta: &MetaRef) {
            let mut heard = self.0.lock().unwrap();
            heard.push((status, id, meta.name().to_owned()));
        }
    }

    #[test]
    fn a_shared_observer_hears_each_end_with_the_task_id_and_name() {
        let heard = Arc::new(Heard::default());
        let exec = InlineExecutor::new("inline");
        let (ok, ok_handle) = Job::once(TaskMeta::new("ok"), |_| Ok::<_, TaskError>(1));
        let (bad, bad_handle) = Job::once(TaskMeta::new("bad"), |_| {
            Err::<u32, _>(TaskError::failed("planned"))
        });
        let (never, never_handle) = Job::once(TaskMeta::new("never"), |_| Ok::<_, TaskError>(3));
        let ids = [ok.id(), bad.id(), never.id()];
        // A closure observer on the same task still hears of the end, after the shared one.
        let closure_heard = Arc::new(Mutex::new(None));
        let sink = closure_heard.clone();
        for job in [&ok, &bad, &never] {
            job.observe_with(heard.clone());
        }
        ok.observe(move |s| *sink.lock().unwrap() = Some(s));
        exec.execute(ok).unwrap();
        exec.execute(bad).unwrap();
        drop(never);
        assert_eq!(ok_handle.wait().unwrap(), 1);
        assert!(bad_handle.wait().is_err());
        assert!(never_handle.wait().is_err());
        let heard = heard.0.lock().unwrap().clone();
        assert_eq!(
            heard,
            vec![
                (Status::Completed, ids[0], "ok".to_owned()),
                (Status::Failed, ids[1], "bad".to_owned()),
                (Status::NotStarted, ids[2], "never".to_owned()),
            ]
        );
        assert_eq!(*closure_heard.lock().unwrap(), Some(Status::Completed));
    }

    #[test]
    fn observers_hear_of_the_end_in_the_order_they_were_added() {
        /// Appends its mark to a shared list.
        struct Mark(Arc<Mutex<Vec<&'static str>>>, &'static str);
        impl EndObserver for Mark {
            fn ended(&self, _: Status, _: TaskId, _: &MetaRef) {
                self.0.lock().unwrap().push(self.1);
            }
        }
        let order = Arc::new(Mutex::new(Vec::new()));
        let (job, handle) = Job::once(TaskMeta::new("order"), |_| Ok::<_, TaskError>(()));
        let first = order.clone();
        job.observe(move |_| first.lock().unwrap().push("closure"));
        // A shared observer after a closure waits its turn (it is not the first).
        job.observe_with(Arc::new(Mark(order.clone(), "sink")));
        InlineExecutor::new("inline").execute(job).unwrap();
        handle.wait().unwrap();
        assert_eq!(*order.lock().unwrap(), ["closure", "sink"]);
    }

    #[test]
    fn any_mix_of_observers_hears_of_the_end_once_each_in_order() {
        /// Appends its mark to a shared list.
        struct Mark(Arc<Mutex<Vec<String>>>, String);
        impl EndObserver for Mark {
            fn ended(&self, _: Status, _: TaskId, _: &MetaRef) {
                self.0.lock().unwrap().push(self.1.clone());
            }
        }
        // Each pattern: `s` a shared observer, `c` a closure, in the order added.
        for pattern in [
            "s", "c", "sc", "cs", "ss", "cc", "scs", "ssc", "csc", "sccs", "sssc",
        ] {
            let order = Arc::new(Mutex::new(Vec::new()));
            let (job, handle) = Job::once(TaskMeta::new("mix"), |_| Ok::<_, TaskError>(()));
            let mut expected = Vec::new();
            for (i, kind) in pattern.chars().enumerate() {
                let mark = format!("{kind}{i}");
                expected.push(mark.clone());
                if kind == 's' {
                    job.observe_with(Arc::new(Mark(order.clone(), mark)));
                } else {
                    let order = order.clone();
                    job.observe(move |_| order.lock().unwrap().push(mark));
                }
            }
            InlineExecutor::new("inline").execute(job).unwrap();
            handle.wait().unwrap();
            assert_eq!(*order.lock().unwrap(), expected, "pattern {pattern}");
        }
    }

    #[test]
    fn cancelling_a_task_wakes_its_pending_attempt_and_its_token_waiters() {
        use crate::cancel::Count;
        use std::sync::atomic::Ordering;
        use std::task::Waker;
        let (job, handle) = Job::future(
            TaskMeta::new("pending"),
            std::future::pending::<Result<(), TaskError>>(),
        );
        let token = job.cancel_token();
        let (attempt_woken, token_woken) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut attempt = Box::pin(job.into_future());
        let mut cancelled = Box::pin(token.cancelled());
        let waker = Waker::from(attempt_woken.clone());
        assert!(
            attempt
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let token_waker = Waker::from(token_woken.clone());
        assert!(
            cancelled
                .as_mut()
                .poll(&mut Context::from_waker(&token_waker))
                .is_pending()
        );
        // Through the handle (the task's state fires its own flag). The attempt is running,
        // so the task ends only when the attempt stops, at its next poll.
        assert!(!handle.cancel());
        assert_eq!(attempt_woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(token_woken.0.load(Ordering::SeqCst), 1);
        let polled = attempt.as_mut().poll(&mut Context::from_waker(&waker));
        assert_eq!(polled, Poll::Ready(Status::Cancelled));
        assert!(handle.wait().unwrap_err().is_cancelled());
        assert_eq!(
            cancelled
                .as_mut()
                .poll(&mut Context::from_waker(&token_waker)),
            Poll::Ready(CancelReason::Cancelled)
        );
    }

    #[test]
    fn expiring_a_task_token_wakes_its_pending_attempt() {
        use crate::cancel::Count;
        use std::sync::atomic::Ordering;
        use std::task::Waker;
        let (job, handle) = Job::future(
            TaskMeta::new("pending"),
            std::future::pending::<Result<(), TaskError>>(),
        );
        let token = job.cancel_token();
        let woken = Arc::new(Count::default());
        let mut attempt = Box::pin(job.into_future());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        // Polled twice with the same waker: woken at least once (registered once as far as
        // `Waker::will_wake` can tell, which may answer false: it does under Miri).
        assert!(attempt.as_mut().poll(&mut cx).is_pending());
        assert!(attempt.as_mut().poll(&mut cx).is_pending());
        assert!(token.expire());
        assert!(woken.0.load(Ordering::SeqCst) >= 1);
        assert_eq!(
            attempt.as_mut().poll(&mut cx),
            Poll::Ready(Status::TimedOut)
        );
        assert!(handle.wait().unwrap_err().is_timeout());
    }

    #[test]
    fn a_panicking_first_shared_observer_leaves_the_handle_usable() {
        /// Panics when told.
        struct Bad;
        impl EndObserver for Bad {
            fn ended(&self, _: Status, _: TaskId, _: &MetaRef) {
                panic!("planned observer panic");
            }
        }
        let heard = Arc::new(Heard::default());
        let (job, handle) = Job::once(TaskMeta::new("bad"), |_| Ok::<_, TaskError>(5));
        // Told under the task's lock: its panic must neither unwind through it nor
        // poison it, and the observers after it still hear of the end.
        job.observe_with(Arc::new(Bad));
        job.observe_with(heard.clone());
        InlineExecutor::new("inline").execute(job).unwrap();
        assert!(handle.is_finished());
        assert_eq!(handle.wait().unwrap(), 5);
        assert_eq!(heard.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_observer_added_after_the_end_hears_of_it_at_once() {
        let heard = Arc::new(Heard::default());
        let (job, handle) = Job::once(TaskMeta::new("late"), |_| Ok::<_, TaskError>(()));
        assert!(handle.cancel(), "a queued task cancels at once");
        job.observe_with(heard.clone());
        let heard = heard.0.lock().unwrap().clone();
        assert_eq!(heard.len(), 1);
        assert_eq!(heard[0].0, Status::Cancelled);
    }
}

/// What one task costs in memory: every submitted task allocates one `Joint`, and a
/// million of them alive at once (handles kept until waited) write that many fresh cache
/// lines, so these sizes are a performance figure. The test prints them
/// (`cargo test -p executor-core sizes -- --nocapture`) and holds the no-op task's block
/// to its budget.
#[cfg(all(test, not(loom)))]
mod sizes {
    use super::*;
    use crate::handle::{Observers, Slot};
    use std::mem::size_of;

    /// The joint allocation of a no-op `submit(|| ())`, as `ExecutorExt::submit` builds it.
    #[allow(clippy::unit_arg)] // The body `ExecutorExt` builds, with `T = ()`.
    fn noop_joint_size() -> usize {
        fn joint_size<T, F>(_: &F) -> usize
        where
            F: FnOnce(&TaskContext) -> Result<T, TaskError>,
        {
            size_of::<Joint<T, Once<F>>>()
        }
        let f = || ();
        joint_size(&move |_: &TaskContext| Ok::<_, TaskError>(f()))
    }

    /// The joint allocation of a no-op `submit_async(async {})`, as `ExecutorExt` builds it.
    #[allow(clippy::unit_arg)] // The body `ExecutorExt` builds, with `T = ()`.
    fn noop_async_joint_size() -> usize {
        fn joint_size<T, Fut: Future<Output = Result<T, TaskError>>>(_: &Fut) -> usize {
            size_of::<Joint<T, AsyncOnce<Fut>>>()
        }
        let fut = async {};
        joint_size(&async move { Ok::<_, TaskError>(fut.await) })
    }

    #[test]
    fn sizes() {
        let sizes = [
            ("Joint<(), Once<no-op>>", noop_joint_size()),
            ("Joint<(), AsyncOnce<no-op>>", noop_async_joint_size()),
            ("Shared<()>", size_of::<Shared<()>>()),
            ("Slot<()>", size_of::<Slot<()>>()),
            (
                "Option<Result<(), TaskError>>",
                size_of::<Option<Result<(), TaskError>>>(),
            ),
            ("TaskError", size_of::<TaskError>()),
            ("CancelFlag", size_of::<CancelFlag>()),
            ("Observers", size_of::<Observers>()),
            ("Observer", size_of::<Observer>()),
            ("Option<Observer>", size_of::<Option<Observer>>()),
            ("Sink", size_of::<Sink>()),
            ("Option<Sink>", size_of::<Option<Sink>>()),
            ("Job", size_of::<Job>()),
        ];
        for (name, size) in sizes {
            println!("{name:32} {size:4}");
        }
        // With the `Arc`'s two counts, 128 bytes: two cache lines (and an allocator's
        // 128-byte size class) per task alive. It was 248 (issue 13).
        assert!(
            noop_joint_size() + 2 * size_of::<usize>() <= 128,
            "a no-op task's allocation grew past two cache lines: {} bytes",
            noop_joint_size() + 2 * size_of::<usize>()
        );
    }
}
