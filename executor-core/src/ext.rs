//! [`ExecutorExt`]: the generic conveniences every executor gets (`submit`, `run`, `map`, ...).

use crate::backend::MetaRef;
use crate::meta::ANONYMOUS;
use crate::runners::{Collected, Counting, map_runners};
use crate::{BoxError, Executor, Job, TaskContext, TaskError, TaskHandle, TaskMeta};
use std::future::Future;
use std::ops::Range;
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
        let (job, handle) = Job::plain(anonymous(), f);
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

    /// Runs `f` over every item, in parallel as the executor allows, and waits for all of
    /// it; the values come back in input order. An item that panicked, or that never ran
    /// (the executor refused the work or shut down), makes the map an error of that kind.
    ///
    /// What a task is depends on the executor's [`map_width`](Executor::map_width):
    ///
    /// - With a width (a backend such as threads, rayon or tokio, or the supervisor routing
    ///   to one with no layers on the route), `map` runs as at most `width` runner tasks
    ///   that share the items, each taking blocks of them until none is left (blocks shrink
    ///   as the items run out, so the last ones spread over the runners). Stats and the
    ///   supervisor's ledger count those runner tasks, not the items. Every item still
    ///   runs when another panics, as with a task per item.
    /// - Without one (a route with a timeout, retries, a rate or concurrency limit or
    ///   layers of your own, or an executor that gives no width), each item is a task of
    ///   its own, counted and treated (timed out, retried, limited) on its own.
    ///
    /// `map` collects the items into a `Vec` first (a `Vec` passed in is used as it is);
    /// over a range of integers, [`map_range`](Self::map_range) skips that.
    ///
    /// For a task per item whatever the executor, with a handle each, call
    /// [`submit`](Self::submit) or [`run`](Self::run) per item (a
    /// [`TaskSet`](crate::TaskSet) collects them).
    ///
    /// Called from a task on a pool worker, `map` waits as [`TaskHandle::wait`] does: the
    /// worker runs its pool's queued jobs meanwhile, so a map nested in a task of the same
    /// pool completes even on one thread.
    fn map<I, T, F>(&self, items: impl IntoIterator<Item = I>, f: F) -> Result<Vec<T>, TaskError>
    where
        I: Send + 'static,
        T: Send + 'static,
        F: Fn(I) -> T + Send + Sync + 'static,
    {
        map_meta(self, anonymous(), items, f)
    }

    /// [`map`](Self::map) with every task described by `meta` (so a policy can route them,
    /// and the route decides whether the tasks are runners or items: see `map`).
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

    /// [`map`](Self::map) over a range of integers, which is never collected: where `map`
    /// runs as runner tasks, they share the range by index and make each number as they
    /// claim it.
    ///
    /// `map` takes any iterator, which its runners cannot share across threads, so it
    /// first collects the items into a `Vec` (a `Vec` passed to it is used in place). For
    /// a million cheap items that collecting costs more than the work; `map_range` skips
    /// it, as rayon's `(0..n).into_par_iter()` does.
    ///
    /// # Panics
    /// When the range holds more than `usize::MAX` numbers (a 64-bit range on a 32-bit
    /// target), or its values would take more than `isize::MAX` bytes
    /// (`i64::MIN..i64::MAX` of anything but a zero-sized value), as `Vec::with_capacity`
    /// panics; an output that fits that bound but not in memory aborts, as any `Vec` does.
    ///
    /// ```
    /// use executor_core::{ExecutorExt, InlineExecutor};
    /// let exec = InlineExecutor::new("inline");
    /// let doubled = exec.map_range(0..1_000u64, |x| x * 2).unwrap();
    /// assert_eq!(doubled[999], 1_998);
    /// ```
    fn map_range<N, T, F>(&self, range: Range<N>, f: F) -> Result<Vec<T>, TaskError>
    where
        N: RangeItem,
        T: Send + 'static,
        F: Fn(N) -> T + Send + Sync + 'static,
    {
        map_range_meta(self, anonymous(), range, f)
    }

    /// [`map_range`](Self::map_range) with every task described by `meta`, as
    /// [`map_with`](Self::map_with) is to `map`.
    fn map_range_with<N, T, F>(
        &self,
        meta: TaskMeta,
        range: Range<N>,
        f: F,
    ) -> Result<Vec<T>, TaskError>
    where
        N: RangeItem,
        T: Send + 'static,
        F: Fn(N) -> T + Send + Sync + 'static,
    {
        map_range_meta(self, meta.into(), range, f)
    }
}

/// A primitive integer type, whose ranges [`ExecutorExt::map_range`] shares out by index.
/// Implemented for every primitive integer type up to 64 bits; it cannot be implemented
/// outside this crate.
pub trait RangeItem: Copy + Send + Sync + 'static + sealed::Counted {}

mod sealed {
    use std::ops::Range;

    /// How [`RangeItem`](super::RangeItem) counts: private, so the trait is sealed.
    pub trait Counted: Sized {
        /// How many numbers `range` holds (none when it is empty or reversed).
        fn distance(range: &Range<Self>) -> usize;
        /// The number `i` steps after `start` (`i` is less than the range's distance).
        fn nth(start: Self, i: usize) -> Self;
    }
}

/// Implements [`RangeItem`] for primitive integer types.
macro_rules! range_items {
    ($($t:ty),*) => {$(
        impl sealed::Counted for $t {
            fn distance(range: &Range<Self>) -> usize {
                if range.end <= range.start {
                    return 0;
                }
                // Every type here fits an `i128`, so the difference cannot overflow.
                usize::try_from(range.end as i128 - range.start as i128)
                    .expect("a map_range longer than usize::MAX")
            }

            fn nth(start: Self, i: usize) -> Self {
                // `start + i` lies in the range, so it fits: adding modulo the type's width
                // gives it exactly, even where `i` itself does not fit the type.
                start.wrapping_add(i as Self)
            }
        }

        impl RangeItem for $t {}
    )*};
}

range_items!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// How many numbers `range` holds.
pub(crate) fn distance<N: RangeItem>(range: &Range<N>) -> usize {
    sealed::Counted::distance(range)
}

/// The number `i` steps after `start`, for `i` below the distance of a range from `start`.
pub(crate) fn nth<N: RangeItem>(start: N, i: usize) -> N {
    sealed::Counted::nth(start, i)
}

/// How many of a per-item `map`'s jobs go to the executor in one
/// [`Executor::execute_batch`]: large enough that a backend's per-batch cost (a channel
/// message, a pool task) vanishes per item, small enough that the first items run while
/// later ones are still being made.
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
    match exec.map_width(&meta) {
        Some(width) => map_runners(exec, meta, Collected::new(items), width, f),
        None => map_each(exec, meta, items, f),
    }
}

fn map_range_meta<E, N, T, F>(
    exec: &E,
    meta: MetaRef,
    range: Range<N>,
    f: F,
) -> Result<Vec<T>, TaskError>
where
    E: Executor + ?Sized,
    N: RangeItem,
    T: Send + 'static,
    F: Fn(N) -> T + Send + Sync + 'static,
{
    let numbers = Counting::new(range);
    match exec.map_width(&meta) {
        Some(width) => map_runners(exec, meta, numbers, width, f),
        None => map_each(exec, meta, numbers.numbers(), f),
    }
}

/// `map` with a task per item: jobs go to the executor in batches of [`MAP_CHUNK`].
fn map_each<E, I, T, F>(
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
        let (job, handle) = Job::plain(meta.clone(), move || f(item));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runners::Counted;
    use crate::{ExecutorStats, InlineExecutor, ShutdownMode, ShutdownReport, SubmitError};
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs each job on a thread of its own, gives a width of 3, and refuses the first
    /// `refuse` jobs it is handed.
    struct Spawning {
        refuse: usize,
        seen: AtomicUsize,
    }

    impl Executor for Spawning {
        fn name(&self) -> &str {
            "spawning"
        }
        fn execute(&self, job: Job) -> Result<(), SubmitError> {
            if self.seen.fetch_add(1, Ordering::Relaxed) < self.refuse {
                return Err(SubmitError::full(job));
            }
            std::thread::spawn(move || job.run());
            Ok(())
        }
        fn map_width(&self, _meta: &TaskMeta) -> Option<NonZeroUsize> {
            NonZeroUsize::new(3)
        }
        fn stats(&self) -> ExecutorStats {
            ExecutorStats::default()
        }
        fn shutdown(&self, _mode: ShutdownMode) -> ShutdownReport {
            ShutdownReport::new("spawning")
        }
    }

    #[test]
    fn a_refused_runner_leaves_its_items_to_the_others() {
        for refuse in [1, 2] {
            let exec = Spawning {
                refuse,
                seen: AtomicUsize::new(0),
            };
            let out = exec.map(0..1_000u32, |x| x * 2).unwrap();
            assert_eq!(out, (0..1_000).map(|x| x * 2).collect::<Vec<_>>());
            assert_eq!(exec.seen.load(Ordering::Relaxed), 3, "three runners");
        }
    }

    #[test]
    fn every_runner_refused_is_the_refusals_error() {
        let exec = Spawning {
            refuse: usize::MAX,
            seen: AtomicUsize::new(0),
        };
        let err = exec.map(0..10u32, |x| x).unwrap_err();
        assert!(err.is_rejected(), "{err}");
        // Fewer items than the width: a runner per item.
        let exec = Spawning {
            refuse: 0,
            seen: AtomicUsize::new(0),
        };
        assert_eq!(exec.map(0..2u32, |x| x + 1).unwrap(), vec![1, 2]);
        assert_eq!(exec.seen.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn every_item_of_a_map_drops_once() {
        // With runners refused: what they would have run runs elsewhere, and the items of
        // a map that never ran drop with it.
        let drops = Arc::new(AtomicUsize::new(0));
        let exec = Spawning {
            refuse: 1,
            seen: AtomicUsize::new(0),
        };
        let items: Vec<Counted> = (0..500).map(|i| Counted(i, drops.clone())).collect();
        let out = exec.map(items, |item: Counted| item.0).unwrap();
        assert_eq!(out, (0..500).collect::<Vec<_>>());
        assert_eq!(drops.load(Ordering::Relaxed), 500);
        let exec = Spawning {
            refuse: usize::MAX,
            seen: AtomicUsize::new(0),
        };
        let items: Vec<Counted> = (0..500).map(|i| Counted(i, drops.clone())).collect();
        assert!(exec.map(items, |_| 1u8).unwrap_err().is_rejected());
        assert_eq!(drops.load(Ordering::Relaxed), 1_000);
    }

    #[test]
    fn a_panicking_item_fails_the_map_after_every_item_ran() {
        let exec = Arc::new(InlineExecutor::new("inline"));
        let ran = Arc::new(AtomicUsize::new(0));
        let (counted, mapper) = (ran.clone(), exec.clone());
        // On a thread, with a bounded wait: a runner that went back to an item after it
        // panicked would loop, and must fail the test rather than hang it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(mapper.map(0..100u32, move |x| {
                counted.fetch_add(1, Ordering::Relaxed);
                if x % 40 == 39 {
                    panic!("item {x}");
                }
                x
            }));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the map did not return within 20 s")
            .unwrap_err();
        assert!(err.is_panic(), "{err}");
        assert_eq!(err.panic_message(), Some("item 39"), "the first panic");
        assert_eq!(ran.load(Ordering::Relaxed), 100);
        let stats = exec.stats();
        assert_eq!((stats.submitted, stats.panicked), (1, 1), "{stats:?}");
        assert_eq!(exec.map(0..3u32, |x| x).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn map_range_makes_every_number_of_any_integer_range() {
        /// `map_range` over `range` on runners (width 3) and per item (inline) equals `map`
        /// over the same range, collected.
        fn same<N>(range: std::ops::Range<N>)
        where
            N: RangeItem + std::fmt::Debug + PartialEq,
            std::ops::Range<N>: Iterator<Item = N> + Clone + std::fmt::Debug,
        {
            let expected: Vec<N> = range.clone().collect();
            let runners = Spawning {
                refuse: 0,
                seen: AtomicUsize::new(0),
            };
            let inline = InlineExecutor::new("inline");
            for exec in [&runners as &dyn Executor, &inline] {
                let out = exec.map_range(range.clone(), |x| x).unwrap();
                assert_eq!(out, expected, "{range:?} on {}", exec.name());
            }
        }
        same(0..0u64);
        #[allow(clippy::reversed_empty_ranges)] // Empty on purpose: it makes no number.
        same(5..2u32);
        same(-3..4i32);
        same(i8::MIN..i8::MAX);
        same(0..u8::MAX);
        same(u64::MAX - 1_000..u64::MAX);
        same(i64::MIN..i64::MIN + 1_000);
        same(isize::MAX - 3..isize::MAX);
    }

    #[test]
    fn distance_and_nth_span_whole_types() {
        assert_eq!(distance(&(i64::MIN..i64::MAX)), usize::MAX);
        assert_eq!(distance(&(0..u64::MAX)), usize::MAX);
        assert_eq!(distance(&(i8::MIN..i8::MAX)), 255);
        #[allow(clippy::reversed_empty_ranges)] // Reversed on purpose: it holds nothing.
        let reversed = 3..-3i32;
        assert_eq!(distance(&reversed), 0);
        assert_eq!(nth(i64::MIN, 1 << 63), 0);
        assert_eq!(nth(i64::MIN, usize::MAX - 1), i64::MAX - 1);
        assert_eq!(nth(u64::MAX - 1, 0), u64::MAX - 1);
        assert_eq!(nth(i8::MIN, 255), i8::MAX);
        assert_eq!(nth(-1i16, 2), 1);
    }
}
