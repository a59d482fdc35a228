//! [`ExecutorExt`]: the generic conveniences every executor gets (`submit`, `run`, `map`, ...).

use crate::backend::MetaRef;
use crate::meta::ANONYMOUS;
use crate::{BoxError, Executor, Job, TaskContext, TaskError, TaskHandle, TaskMeta};
use std::future::Future;
use std::sync::Arc;

/// The meta of tasks submitted without one.
fn anonymous() -> MetaRef {
    MetaRef::Static(&ANONYMOUS)
}

/// Generic helpers over any [`Executor`], including `dyn Executor`, `&E`, `Box<E>` and
/// `Arc<E>`. Every method returns at once with a [`TaskHandle`]; a refused task's handle
/// resolves as rejected or shut down.
///
/// ```
/// use executor_core::{ExecutorExt, InlineExecutor, TaskMeta};
/// let exec = InlineExecutor::new("inline");
/// let squares = exec.map(1..=4, |x: u64| x * x).unwrap();
/// assert_eq!(squares, vec![1, 4, 9, 16]);
///
/// let h = exec.run(TaskMeta::new("parse"), |_ctx| "42".parse::<u32>());
/// assert_eq!(h.wait().unwrap(), 42);
///
/// let h = exec.run(TaskMeta::new("parse"), |_ctx| "x".parse::<u32>());
/// assert!(h.wait().unwrap_err().is_failed());
/// ```
pub trait ExecutorExt: Executor {
    /// Runs `f` once and returns its value through the handle.
    fn submit<T, F>(&self, f: F) -> TaskHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (job, handle) = Job::once(anonymous(), move |_| Ok(f()));
        dispatch(self, job);
        handle
    }

    /// Runs a future once and returns its output through the handle.
    fn submit_async<T, Fut>(&self, fut: Fut) -> TaskHandle<T>
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (job, handle) = Job::future(anonymous(), async move { Ok(fut.await) });
        dispatch(self, job);
        handle
    }

    /// Runs a fallible task described by `meta`. The policy may run `f` again after an
    /// error or a panic (retries), so it is `Fn`; the attempt number is in the context.
    fn run<T, E, F>(&self, meta: TaskMeta, f: F) -> TaskHandle<T>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: Fn(&TaskContext) -> Result<T, E> + Send + Sync + 'static,
    {
        let (job, handle) =
            Job::repeatable(meta, move |ctx| f(ctx).map_err(|e| TaskError::failed(e)));
        dispatch(self, job);
        handle
    }

    /// Runs a fallible task once: for bodies that move their inputs. Never retried.
    fn run_once<T, E, F>(&self, meta: TaskMeta, f: F) -> TaskHandle<T>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: FnOnce(&TaskContext) -> Result<T, E> + Send + 'static,
    {
        let (job, handle) = Job::once(meta, move |ctx| f(ctx).map_err(|e| TaskError::failed(e)));
        dispatch(self, job);
        handle
    }

    /// Runs a fallible async task described by `meta`; `f` makes a fresh future for each
    /// attempt.
    fn run_async<T, E, F, Fut>(&self, meta: TaskMeta, f: F) -> TaskHandle<T>
    where
        T: Send + 'static,
        E: Into<BoxError>,
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let (job, handle) = Job::future_repeatable(meta, move |ctx| {
            let fut = f(ctx);
            async move { fut.await.map_err(|e| TaskError::failed(e)) }
        });
        dispatch(self, job);
        handle
    }

    /// Runs `f` over every item, in parallel as the executor allows; results come back in
    /// input order. Waits for every task; the first error (in input order) is returned.
    fn map<I, T, F>(&self, items: impl IntoIterator<Item = I>, f: F) -> Result<Vec<T>, TaskError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(I) -> T + Send + Sync + 'static,
    {
        map_meta(self, anonymous(), items, f)
    }

    /// [`map`](Self::map) with every task described by `meta` (so a policy can route them).
    fn map_with<I, T, F>(
        &self,
        meta: TaskMeta,
        items: impl IntoIterator<Item = I>,
        f: F,
    ) -> Result<Vec<T>, TaskError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(I) -> T + Send + Sync + 'static,
    {
        map_meta(self, meta.into(), items, f)
    }
}

/// How many of `map`'s jobs go to the executor in one [`Executor::execute_batch`]: large
/// enough that a backend's per-batch cost (a channel message, a pool task) vanishes per
/// item, small enough that the first items run while later ones are still being made.
const MAP_CHUNK: usize = 256;

fn map_meta<E, I, T, F>(
    exec: &E,
    meta: MetaRef,
    items: impl IntoIterator<Item = I>,
    f: F,
) -> Result<Vec<T>, TaskError>
where
    E: Executor + ?Sized,
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> T + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let items = items.into_iter();
    let mut handles: Vec<TaskHandle<T>> = Vec::with_capacity(items.size_hint().0);
    let mut chunk = Vec::with_capacity(MAP_CHUNK);
    for item in items {
        let f = f.clone();
        let (job, handle) = Job::once(meta.clone(), move |_| Ok(f(item)));
        chunk.push(job);
        handles.push(handle);
        if chunk.len() == MAP_CHUNK {
            exec.execute_batch(std::mem::replace(&mut chunk, Vec::with_capacity(MAP_CHUNK)));
        }
    }
    if !chunk.is_empty() {
        exec.execute_batch(chunk);
    }
    let mut out = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for h in handles {
        match h.wait() {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

impl<E: Executor + ?Sized> ExecutorExt for E {}

/// Hands `job` to `exec`; a refusal resolves the job's handle (dropping the error does).
fn dispatch<E: Executor + ?Sized>(exec: &E, job: Job) {
    if let Err(refused) = exec.execute(job) {
        drop(refused);
    }
}
