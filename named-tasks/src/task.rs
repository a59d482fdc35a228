//! [`Task`]: a named task's declaration, and how a call of it becomes a [`Job`].

use crate::wire::{ErrorKind, Request};
use crate::{CallError, Codec};
use executor_core::{
    BoxError, BoxFuture, Executor, Job, TaskContext, TaskError, TaskHandle, TaskMeta,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// What a named task's arguments must be: serde both ways, and `Clone` because the policy
/// may run the task again (retries) and each attempt gets its own copy.
pub trait Args: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Args for T {}

/// What a named task's result must be: serde both ways.
pub trait Output: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Output for T {}

/// A blocking task function.
pub type SyncFn<A, R> = fn(&TaskContext, A) -> Result<R, BoxError>;
/// An async task function: it returns a boxed future (`Box::pin(async move { ... })`).
pub type AsyncFn<A, R> = fn(TaskContext, A) -> BoxFuture<Result<R, BoxError>>;

pub(crate) enum Body<A, R> {
    Sync(SyncFn<A, R>),
    Async(AsyncFn<A, R>),
}

impl<A, R> Clone for Body<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, R> Copy for Body<A, R> {}

/// A named task: a stable name, tags, an argument type `A`, a result type `R` and a
/// function. Declare it once, as a `static`, where both the caller and the worker
/// binary can see it:
///
/// ```
/// use executor_core::InlineExecutor;
/// use named_tasks::Task;
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Resize { width: u32, height: u32, factor: u32 }
///
/// static RESIZE: Task<Resize, (u32, u32)> =
///     Task::new("img.resize", |_ctx, r: Resize| {
///         Ok((r.width * r.factor, r.height * r.factor))
///     })
///     .with_tags(&["cpu"]);
///
/// let exec = InlineExecutor::new("here");
/// let handle = RESIZE.call(&exec, Resize { width: 3, height: 2, factor: 10 });
/// assert_eq!(handle.wait().unwrap(), (30, 20));
/// ```
///
/// Its [`TaskMeta`] carries the name and tags, so a policy routes, retries, times out and
/// limits it exactly like a closure. On an in-process executor the function runs
/// directly on the arguments, without encoding them; a backend that crosses a boundary
/// (see [`Call`]) sends them encoded to a worker that runs the same function.
pub struct Task<A, R> {
    name: &'static str,
    tags: &'static [&'static str],
    pub(crate) body: Body<A, R>,
}

impl<A, R> Clone for Task<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, R> Copy for Task<A, R> {}

impl<A, R> std::fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("tags", &self.tags)
            .field("async", &matches!(self.body, Body::Async(_)))
            .finish()
    }
}

impl<A: Args, R: Output> Task<A, R> {
    /// A task called `name` whose function blocks.
    pub const fn new(name: &'static str, f: SyncFn<A, R>) -> Self {
        Task {
            name,
            tags: &[],
            body: Body::Sync(f),
        }
    }

    /// A task called `name` whose function is async.
    pub const fn new_async(name: &'static str, f: AsyncFn<A, R>) -> Self {
        Task {
            name,
            tags: &[],
            body: Body::Async(f),
        }
    }

    /// The same task with these tags (policies route on them).
    pub const fn with_tags(self, tags: &'static [&'static str]) -> Self {
        Task {
            name: self.name,
            tags,
            body: self.body,
        }
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The meta every call of this task carries: its name and tags.
    pub fn meta(&self) -> TaskMeta {
        self.tags
            .iter()
            .fold(TaskMeta::new(self.name), |m, t| m.with_tag(*t))
    }

    /// Calls the task with `args` on `exec` (any executor, or a supervisor that routes by
    /// the task's name and tags).
    pub fn call<E: Executor + ?Sized>(&self, exec: &E, args: A) -> TaskHandle<R> {
        self.submit(exec, self.meta(), args, Identity)
    }

    /// [`call`](Self::call) with a key for per-key limits (e.g. a host).
    pub fn call_keyed<E: Executor + ?Sized>(
        &self,
        exec: &E,
        key: impl Into<String>,
        args: A,
    ) -> TaskHandle<R> {
        self.submit(exec, self.meta().with_key(key), args, Identity)
    }

    /// [`call`](Self::call), then `then` on the result **where the call ran**, before the
    /// handle resolves with what `then` returns: on the executor's own thread (a pool
    /// thread in-process; on a process pool, the parent's thread that received the reply
    /// and decoded it). A reduce step that merges partial results this way keeps the
    /// merging off the caller's thread and spread over the executor's threads, whichever
    /// backend the policy picks.
    ///
    /// `then` runs at most once per call, for the attempt that succeeds, and not when the
    /// call was already cancelled or timed out (its result would be dropped). Its panics
    /// are the task's panics.
    ///
    /// ```
    /// use executor_core::InlineExecutor;
    /// use named_tasks::Task;
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    ///
    /// static LEN: Task<String, u64> = Task::new("text.len", |_ctx, s: String| Ok(s.len() as u64));
    ///
    /// let exec = InlineExecutor::new("here");
    /// let total = Arc::new(AtomicU64::new(0));
    /// for word in ["map", "reduce"] {
    ///     let total = total.clone();
    ///     let h = LEN.call_then(&exec, word.into(), move |n| total.fetch_add(n, Ordering::Relaxed));
    ///     h.wait().unwrap();
    /// }
    /// assert_eq!(total.load(Ordering::Relaxed), 9);
    /// ```
    pub fn call_then<E, T, G>(&self, exec: &E, args: A, then: G) -> TaskHandle<T>
    where
        E: Executor + ?Sized,
        T: Send + 'static,
        G: FnOnce(R) -> T + Send + 'static,
    {
        self.submit(exec, self.meta(), args, ThenOnce(Mutex::new(Some(then))))
    }

    /// The job of one call with `args`, not yet submitted, and its handle: for layers and
    /// test suites that set the job's deadline or hooks, or keep its cancel token, before
    /// they hand it to an executor (`exec.execute(job)`). [`call`](Self::call) is this
    /// plus the submission.
    pub fn job(&self, args: A) -> (Job, TaskHandle<R>) {
        self.build(self.meta(), args, Identity)
    }

    fn submit<E, T, F>(&self, exec: &E, meta: TaskMeta, args: A, then: F) -> TaskHandle<T>
    where
        E: Executor + ?Sized,
        T: Send + 'static,
        F: Then<R, T>,
    {
        let (job, handle) = self.build(meta, args, then);
        if let Err(refused) = exec.execute(job) {
            // Dropping the refusal resolves the handle as rejected or shut down.
            drop(refused);
        }
        handle
    }

    fn build<T, F>(&self, meta: TaskMeta, args: A, then: F) -> (Job, TaskHandle<T>)
    where
        T: Send + 'static,
        F: Then<R, T>,
    {
        let args = Arc::new(args);
        let encoder = args.clone();
        let call = Arc::new(Call {
            name: self.name,
            remote: Mutex::new(None),
            encode: Box::new(move |codec| codec.encode(&*encoder).map_err(|e| e.to_string())),
        });
        let meta = meta.with_extension(call.clone());
        let name = self.name;
        match self.body {
            Body::Sync(f) => Job::repeatable(meta, move |ctx| {
                let value = match call.take() {
                    Some(remote) => run_remote(ctx, name, &*args, remote)?,
                    None => {
                        let args = checked(name, &*args, ErrorKind::BadArgs)?;
                        let value = f(ctx, args).map_err(TaskError::failed)?;
                        checked_owned(name, value, ErrorKind::BadResult)?
                    }
                };
                then.then(ctx, value)
            }),
            Body::Async(f) => {
                let then = Arc::new(then);
                Job::future_repeatable(meta, move |ctx: TaskContext| {
                    let remote = call.take();
                    let args = A::clone(&args);
                    let then = then.clone();
                    async move {
                        let value = match remote {
                            Some(remote) => run_remote(&ctx, name, &args, remote)?,
                            None => {
                                let args = checked_owned(name, args, ErrorKind::BadArgs)?;
                                let value =
                                    f(ctx.clone(), args).await.map_err(TaskError::failed)?;
                                checked_owned(name, value, ErrorKind::BadResult)?
                            }
                        };
                        then.then(&ctx, value)
                    }
                })
            }
        }
    }
}

/// What a call does with its function's result before the handle resolves.
trait Then<R, T>: Send + Sync + 'static {
    fn then(&self, ctx: &TaskContext, value: R) -> Result<T, TaskError>;
}

/// A plain call: the handle gets the function's result.
struct Identity;

impl<R> Then<R, R> for Identity {
    fn then(&self, _ctx: &TaskContext, value: R) -> Result<R, TaskError> {
        Ok(value)
    }
}

/// [`Task::call_then`]: a continuation that runs once, for the attempt that succeeds.
struct ThenOnce<G>(Mutex<Option<G>>);

impl<R, T, G> Then<R, T> for ThenOnce<G>
where
    G: FnOnce(R) -> T + Send + 'static,
{
    fn then(&self, ctx: &TaskContext, value: R) -> Result<T, TaskError> {
        // An attempt already timed out or cancelled (its late result is dropped) must not
        // use up the continuation: a retry may still succeed.
        if ctx.is_cancelled() {
            return Err(TaskError::cancelled());
        }
        let then = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        match then {
            Some(g) => Ok(g(value)),
            None => Err(TaskError::failed(
                "the continuation of this call already ran for an earlier attempt",
            )),
        }
    }
}

/// Generic helpers for named tasks on any executor: `exec.call(&RESIZE, args)`.
pub trait NamedExt: Executor {
    /// Calls `task` with `args` here; see [`Task::call`].
    fn call<A: Args, R: Output>(&self, task: &Task<A, R>, args: A) -> TaskHandle<R> {
        task.call(self, args)
    }

    /// Calls `task` with `args` here and runs `then` on its result where it ran; see
    /// [`Task::call_then`].
    fn call_then<A: Args, R: Output, T, G>(
        &self,
        task: &Task<A, R>,
        args: A,
        then: G,
    ) -> TaskHandle<T>
    where
        T: Send + 'static,
        G: FnOnce(R) -> T + Send + 'static,
    {
        task.call_then(self, args, then)
    }
}

impl<E: Executor + ?Sized> NamedExt for E {}

const CHECK_UNSET: u8 = 0;
const CHECK_OFF: u8 = 1;
const CHECK_ON: u8 = 2;
static CHECK: AtomicU8 = AtomicU8::new(CHECK_UNSET);

/// Turns the payload check on or off for this process: when on, a named task that runs
/// in-process round-trips its arguments and its result through the default codec
/// ([`Codec::Json`]), so a type that would not travel fails in tests rather than on the
/// first policy that sends it elsewhere. Off by default; the environment variable
/// `SWITCHYARD_CHECK_PAYLOADS=1` turns it on without a code change.
pub fn check_payloads(on: bool) {
    CHECK.store(if on { CHECK_ON } else { CHECK_OFF }, Ordering::Relaxed);
}

fn checking() -> bool {
    match CHECK.load(Ordering::Relaxed) {
        CHECK_ON => true,
        CHECK_OFF => false,
        _ => {
            let on = std::env::var_os("SWITCHYARD_CHECK_PAYLOADS").is_some_and(|v| v == "1");
            // Only the first reader decides; an explicit `check_payloads` wins.
            let _ = CHECK.compare_exchange(
                CHECK_UNSET,
                if on { CHECK_ON } else { CHECK_OFF },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            CHECK.load(Ordering::Relaxed) == CHECK_ON
        }
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(
    name: &str,
    value: &T,
    kind: ErrorKind,
) -> Result<T, TaskError> {
    let codec = Codec::default();
    codec
        .encode(value)
        .and_then(|bytes| codec.decode(&bytes))
        .map_err(|e| {
            TaskError::failed(CallError::worker(
                name,
                kind,
                format!("would not travel ({e}); the payload check is on"),
            ))
        })
}

/// A copy of `args` for one attempt, round-tripped when the payload check is on.
fn checked<T: Serialize + DeserializeOwned + Clone>(
    name: &str,
    value: &T,
    kind: ErrorKind,
) -> Result<T, TaskError> {
    if checking() {
        round_trip(name, value, kind)
    } else {
        Ok(value.clone())
    }
}

fn checked_owned<T: Serialize + DeserializeOwned>(
    name: &str,
    value: T,
    kind: ErrorKind,
) -> Result<T, TaskError> {
    if checking() {
        round_trip(name, &value, kind)
    } else {
        Ok(value)
    }
}

fn run_remote<A: Args, R: Output>(
    ctx: &TaskContext,
    name: &'static str,
    args: &A,
    remote: Remote,
) -> Result<R, TaskError> {
    let codec = remote.codec;
    let payload = codec.encode(args).map_err(|e| {
        TaskError::failed(CallError::worker(
            name,
            ErrorKind::BadArgs,
            format!("did not encode ({e})"),
        ))
    })?;
    let request = Request {
        id: ctx.id().as_u64(),
        attempt: ctx.attempt(),
        name: name.to_owned(),
        codec,
        payload,
    };
    match (remote.run)(ctx, request) {
        Ok(bytes) => codec.decode(&bytes).map_err(|e| {
            TaskError::failed(CallError::worker(
                name,
                ErrorKind::BadResult,
                format!("did not decode ({e})"),
            ))
        }),
        Err(e) if e.is_panic() => Err(TaskError::panicked(e.message().to_owned())),
        Err(e) => Err(TaskError::failed(e)),
    }
}

/// The function that carries one attempt of a call across a boundary: it gets the
/// task's context (watch its cancel token) and the encoded [`Request`], and returns the
/// encoded result or why there is none.
pub type RemoteFn = Box<dyn FnOnce(&TaskContext, Request) -> Result<Vec<u8>, CallError> + Send>;

/// How a backend runs one attempt of a call elsewhere: the codec to encode with and the
/// function that carries the request. See [`Call::install`].
pub struct Remote {
    codec: Codec,
    run: RemoteFn,
}

impl Remote {
    /// Encode with `codec`; `run` carries the request and brings back the result.
    pub fn new(
        codec: Codec,
        run: impl FnOnce(&TaskContext, Request) -> Result<Vec<u8>, CallError> + Send + 'static,
    ) -> Self {
        Self {
            codec,
            run: Box::new(run),
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("codec", &self.codec)
            .finish()
    }
}

/// One call of a named task, as a boundary-crossing backend sees it through an erased
/// [`Job`]: found with [`Call::of`] on the job's meta.
///
/// The backend [`install`](Self::install)s a [`Remote`] and then runs the job on its own
/// thread as any backend does ([`Job::run`], through its stats recorder), so panics,
/// cancellation, retries, the ledger and result delivery stay core's. The job's body
/// takes the remote, encodes the arguments, calls it, and decodes the result; without an
/// installed remote (any in-process backend) it runs the function here. The remote is
/// taken by the attempt that uses it: a backend installs one per attempt.
///
/// A job without a `Call` is a closure, which cannot leave its process: such a backend
/// refuses it.
pub struct Call {
    name: &'static str,
    remote: Mutex<Option<Remote>>,
    encode: Encoder,
}

/// Encodes a call's arguments with a codec (the message is the codec's error).
type Encoder = Box<dyn Fn(Codec) -> Result<Vec<u8>, String> + Send + Sync>;

impl Call {
    /// The call carried by a job with this meta, if the job is a named task.
    pub fn of(meta: &TaskMeta) -> Option<&Call> {
        (**meta.extension()?).downcast_ref::<Call>()
    }

    /// The task's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The request an attempt of this call sends, encoded with `codec`, without running
    /// the job: `id` and `attempt` are the job's ([`Job::id`], [`Job::attempt`]). A
    /// backend that must send the request before it has a thread to run the job on (it
    /// runs the job, with a [`Remote`] that returns the answer, once the answer is
    /// there) builds it here.
    pub fn request(&self, codec: Codec, id: u64, attempt: u32) -> Result<Request, CallError> {
        let payload = (self.encode)(codec).map_err(|e| {
            CallError::worker(
                self.name,
                ErrorKind::BadArgs,
                format!("did not encode ({e})"),
            )
        })?;
        Ok(Request {
            id,
            attempt,
            name: self.name.to_owned(),
            codec,
            payload,
        })
    }

    /// Makes the next attempt run through `remote`.
    pub fn install(&self, remote: Remote) {
        *self.remote.lock().unwrap_or_else(|e| e.into_inner()) = Some(remote);
    }

    fn take(&self) -> Option<Remote> {
        self.remote.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("name", &self.name).finish()
    }
}
