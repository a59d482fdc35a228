//! The [`Executor`] trait, shutdown modes and reports, and forwarding impls.

use crate::{ExecutorStats, Job, SubmitError, TaskHandle, TaskId, TaskMeta};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// Somewhere jobs run: a thread pool, a CPU pool, an async runtime, or a router over them.
///
/// Object safe and meant to be shared as `Arc<dyn Executor>`. Generic conveniences
/// (`submit`, `run`, `map`, ...) live in [`ExecutorExt`](crate::ExecutorExt), which every
/// executor gets for free.
pub trait Executor: Send + Sync {
    /// The executor's name (its name in the policy file).
    fn name(&self) -> &str;

    /// Takes a job to run. On refusal the job comes back inside the error; dropping the
    /// error resolves the job's handle as rejected or shut down.
    fn execute(&self, job: Job) -> Result<(), SubmitError>;

    /// Takes several jobs at once, in order: a backend that can queue a batch more
    /// cheaply than job by job (one channel message or one pool task per chunk) does so.
    /// Each job is still one task: it is counted, run, cancelled and reported on its
    /// own. A refused job is resolved (as rejected or shut down), as dropping the error
    /// of [`execute`](Self::execute) does. The default hands the jobs to `execute` one by
    /// one.
    fn execute_batch(&self, jobs: Vec<Job>) {
        for job in jobs {
            if let Err(refused) = self.execute(job) {
                drop(refused);
            }
        }
    }

    /// How many runner tasks a data-parallel map over tasks of `meta` may share its items
    /// among; `None` (the default) when each item must be a task of its own.
    ///
    /// [`ExecutorExt::map`](crate::ExecutorExt::map) asks this once per call. With
    /// `Some(width)` it submits at most `width` tasks of `meta`, each running blocks of
    /// items until none is left, so a map costs a few tasks rather than one per item; those
    /// runner tasks are what stats count. An executor answers with how many jobs of a batch
    /// it runs at once (its workers or pool threads). An executor that acts on each task on
    /// its own (a timeout, a retry, a rate or concurrency limit, a task sent elsewhere)
    /// answers `None`, so a map's items stay tasks and each gets that treatment.
    fn map_width(&self, meta: &TaskMeta) -> Option<NonZeroUsize> {
        let _ = meta;
        None
    }

    /// Counters and latency figures so far.
    fn stats(&self) -> ExecutorStats;

    /// Stops taking work and ends what is queued and running as `mode` says. Blocks until
    /// done; calling it again returns an empty report at once.
    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport;
}

/// How [`Executor::shutdown`] treats work that is queued or running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Finish queued and running work within the deadline; past it, drop what has not
    /// started (reported by task). Running tasks are not interrupted: they end on their
    /// own (a timeout or a cancelled handle stops them) and are counted as still running.
    Graceful(Duration),
    /// Drop what has not started at once; running tasks are treated as above.
    Now,
}

impl ShutdownMode {
    /// The time allowed for queued work (zero for `Now`).
    pub fn deadline(self) -> Duration {
        match self {
            ShutdownMode::Graceful(d) => d,
            ShutdownMode::Now => Duration::ZERO,
        }
    }
}

/// A task named in a report: its id and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// The task's id.
    pub id: TaskId,
    /// The task's name.
    pub name: String,
}

impl TaskRecord {
    /// The record of `job`.
    pub fn of(job: &Job) -> Self {
        Self::new(job.id(), job.meta())
    }

    /// The record of a task with this id and meta.
    pub fn new(id: TaskId, meta: &TaskMeta) -> Self {
        Self {
            id,
            name: meta.name().to_owned(),
        }
    }
}

/// What a shutdown did: the tasks that never ran, what was still running, final stats.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The executor's name.
    pub executor: String,
    /// Tasks dropped before they started (their handles resolved as shut down).
    pub not_started: Vec<TaskRecord>,
    /// Tasks still running when the deadline passed (blocking tasks that ignored the
    /// request to stop); their handles resolve when they return.
    pub still_running: u64,
    /// True when the deadline passed before the work was done.
    pub deadline_passed: bool,
    /// The executor's stats after shutdown.
    pub stats: ExecutorStats,
}

impl ShutdownReport {
    /// An empty report for the executor called `executor`.
    pub fn new(executor: impl Into<String>) -> Self {
        Self {
            executor: executor.into(),
            ..Self::default()
        }
    }
}

/// What a full queue does with one more job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFull {
    /// The caller waits for room.
    #[default]
    Block,
    /// The job is refused; its handle resolves as rejected.
    Reject,
    /// The caller runs the job itself, on its own thread.
    CallerRuns,
}

/// Shuts `executor` down on a helper thread; the handle can be awaited or waited on, so
/// async code never blocks its runtime on a shutdown.
pub fn shutdown_in_background(
    executor: Arc<dyn Executor>,
    mode: ShutdownMode,
) -> TaskHandle<ShutdownReport> {
    let (job, handle) = Job::once(TaskMeta::new("executor.shutdown"), move |_| {
        Ok(executor.shutdown(mode))
    });
    let spawned = std::thread::Builder::new()
        .name("switchyard-shutdown".into())
        .spawn(move || {
            job.run();
        });
    // If no thread could be started the job was dropped with the closure, which resolves
    // the handle as shut down: the caller still gets an answer.
    drop(spawned);
    handle
}

macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<E: Executor + ?Sized> Executor for $ty {
            fn name(&self) -> &str {
                (**self).name()
            }
            fn execute(&self, job: Job) -> Result<(), SubmitError> {
                (**self).execute(job)
            }
            fn execute_batch(&self, jobs: Vec<Job>) {
                (**self).execute_batch(jobs)
            }
            fn map_width(&self, meta: &TaskMeta) -> Option<NonZeroUsize> {
                (**self).map_width(meta)
            }
            fn stats(&self) -> ExecutorStats {
                (**self).stats()
            }
            fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
                (**self).shutdown(mode)
            }
        }
    )*};
}

forward!(&E, Box<E>, Arc<E>);
