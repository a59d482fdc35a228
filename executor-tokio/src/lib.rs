//! switchyard backend: [`TokioExecutor`], a tokio runtime for async work.
//!
//! Futures run natively on the runtime (so they may use tokio sockets and timers);
//! blocking jobs run on the runtime's blocking pool, and so do futures whose job asks for
//! a thread ([`Job::set_on_thread`](executor_core::Job::set_on_thread): their polls block,
//! so they are driven to completion there, in the runtime's context). The executor owns its runtime, or
//! wraps the [`Handle`] of one you already have.
//!
//! One difference from the thread-based backends at shutdown: when the deadline passes
//! (at once for `ShutdownMode::Now`), an owned runtime is shut down, and tokio drops every
//! future that has not finished. A future that had started then resolves its handle as
//! cancelled instead of running on; blocking jobs already running are not interrupted.
//!
//! ```
//! use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskMeta};
//! use executor_tokio::TokioExecutor;
//! use std::time::Duration;
//!
//! let net = TokioExecutor::builder("net").worker_threads(2).build()?;
//! let h = net.run_async(TaskMeta::new("tick"), |ctx| async move {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//!     Ok::<_, std::io::Error>(ctx.attempt())
//! });
//! assert_eq!(h.wait().unwrap(), 1);
//! let blocking = net.submit(|| std::thread::current().name().map(str::to_owned));
//! assert!(blocking.wait().is_ok());
//! net.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
//! # Ok::<(), executor_tokio::BuildError>(())
//! ```
#![forbid(unsafe_code)]

use crossbeam_queue::SegQueue;
use executor_core::backend::{Admission, JobFuture, StatsRecorder, Unstarted, lock};
use executor_core::{
    Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskError, TaskMeta,
};
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, Runtime};

/// Why a [`TokioExecutor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build tokio executor '{name}': {source}")]
pub struct BuildError {
    name: String,
    source: std::io::Error,
}

/// Settings for a [`TokioExecutor`] that owns its runtime.
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    worker_threads: usize,
    max_blocking_threads: Option<usize>,
}

impl Builder {
    /// Runtime worker threads; 0 (the default) means one per core.
    pub fn worker_threads(mut self, n: usize) -> Self {
        self.worker_threads = n;
        self
    }

    /// The most threads the blocking pool may start (tokio's default: 512).
    pub fn max_blocking_threads(mut self, n: usize) -> Self {
        self.max_blocking_threads = Some(n.max(1));
        self
    }

    /// Starts the runtime.
    pub fn build(self) -> Result<TokioExecutor, BuildError> {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.enable_all().thread_name(format!("{}-worker", self.name));
        if self.worker_threads > 0 {
            rt.worker_threads(self.worker_threads);
        }
        if let Some(n) = self.max_blocking_threads {
            rt.max_blocking_threads(n);
        }
        let runtime = rt.build().map_err(|source| BuildError {
            name: self.name.clone(),
            source,
        })?;
        let handle = runtime.handle().clone();
        Ok(TokioExecutor::new(self.name, handle, Some(runtime)))
    }
}

struct Inner {
    name: String,
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
    /// Async jobs waiting for their runner's first poll.
    queue: SegQueue<Job>,
    /// Blocking jobs waiting for a blocking thread (held here, not only in tokio's
    /// blocking queue, so a shutdown can drain and name them even when every thread is
    /// busy).
    blocking: SegQueue<Job>,
    stats: StatsRecorder,
    gate: Admission,
    abandon: AtomicBool,
    not_started: Unstarted,
}

impl Inner {
    /// Ends a job that will not run (past a shutdown deadline, or dropped by the runtime),
    /// counting and naming it under the report's lock, so a shutdown that sees the job
    /// counted also sees its name.
    fn abandon(&self, job: Job) {
        self.not_started.abandon(&self.stats, job);
    }
}

/// A runtime task that takes the oldest queued async job on its first poll and runs it,
/// counted in the stats. Jobs wait in the executor's own queue (not only in the runtime's)
/// so a shutdown can drain and name the ones that never started. Each queued job has one
/// runner: dropped unfinished (the runtime shut down), a runner still ends a job and
/// counts it — the one it was running, or, if it was never polled, a queued one.
///
/// The runner is small (two words and a flag) because tokio copies a task's future into
/// its allocation and moves it between stages: most jobs end in their first poll, which
/// runs the job's future on the stack; only a job that returns `Pending` is boxed and
/// kept here, one allocation for the jobs that wait anyway.
struct Runner {
    inner: Arc<Inner>,
    polled: bool,
    running: Option<Box<Running>>,
}

/// A started job, with the instant its run time is measured from (when sampled).
struct Running {
    fut: JobFuture,
    started: Option<Instant>,
}

impl Inner {
    /// Ends a started job whose runner is dropped before it finished (the runtime shut
    /// down, or the poll unwound): cancelled, and counted.
    fn end_unfinished(&self, mut run: Running) {
        if let Some(job) = run.fut.take_job() {
            let status = job.resolve(TaskError::cancelled());
            self.stats
                .finished(status, run.started.map(|t| t.elapsed()));
        }
    }
}

/// A job started on the stack of its runner's first poll: ends it as the runner's drop
/// would if that poll unwinds.
struct FirstPoll<'a> {
    inner: &'a Inner,
    run: Option<Running>,
}

impl Drop for FirstPoll<'_> {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            self.inner.end_unfinished(run);
        }
    }
}

impl Future for Runner {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some(run) = this.running.as_mut() {
            return match Pin::new(&mut run.fut).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(status) => {
                    let started = run.started;
                    this.running = None;
                    this.inner
                        .stats
                        .finished(status, started.map(|t| t.elapsed()));
                    Poll::Ready(())
                }
            };
        }
        this.polled = true;
        let inner = &*this.inner;
        let Some(job) = inner.queue.pop() else {
            return Poll::Ready(());
        };
        if inner.abandon.load(Ordering::Acquire) {
            inner.abandon(job);
            return Poll::Ready(());
        }
        let mut first = FirstPoll {
            inner,
            run: Some(Running {
                started: inner.stats.started(),
                fut: job.into_future(),
            }),
        };
        let run = first.run.as_mut().expect("set above");
        match Pin::new(&mut run.fut).poll(cx) {
            Poll::Pending => {
                this.running = first.run.take().map(Box::new);
                Poll::Pending
            }
            Poll::Ready(status) => {
                let started = run.started;
                first.run = None;
                inner.stats.finished(status, started.map(|t| t.elapsed()));
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(run) = self.running.take() {
            self.inner.end_unfinished(*run);
        } else if !self.polled {
            // The runtime dropped this runner unpolled (it is shutting down): the job it
            // was spawned for would wait in the queue forever, so end one now.
            if let Some(job) = self.inner.queue.pop() {
                self.inner.abandon(job);
            }
        }
    }
}

/// A closure on the runtime's blocking pool that takes the oldest queued blocking jobs,
/// `count` of them, and runs them. One per blocking job, or one per share of a batch;
/// dropped unrun (the runtime shut down), it ends as many.
struct Blocking {
    ran: bool,
    count: usize,
    inner: Arc<Inner>,
}

impl Blocking {
    fn run(mut self) {
        self.ran = true;
        for _ in 0..self.count {
            let Some(job) = self.inner.blocking.pop() else {
                break;
            };
            if self.inner.abandon.load(Ordering::Acquire) {
                self.inner.abandon(job);
            } else {
                self.inner.stats.run(job);
            }
        }
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if self.ran {
            return;
        }
        for _ in 0..self.count {
            let Some(job) = self.inner.blocking.pop() else {
                break;
            };
            self.inner.abandon(job);
        }
    }
}

/// How many blocking-pool closures share a batch of blocking jobs: about one per core,
/// since the blocking pool grows a thread for each closure that finds no idle thread.
fn batch_runners(jobs: usize) -> usize {
    jobs.min(blocking_width().get())
}

/// The blocking pool's share of the machine for one batch: one thread per core.
fn blocking_width() -> NonZeroUsize {
    const UNKNOWN: NonZeroUsize = NonZeroUsize::new(2).expect("2 is not zero");
    std::thread::available_parallelism().unwrap_or(UNKNOWN)
}

/// A tokio runtime as an executor. See the [crate docs](crate).
pub struct TokioExecutor {
    inner: Arc<Inner>,
}

impl TokioExecutor {
    /// Settings for an executor called `name` that owns its runtime.
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            worker_threads: 0,
            max_blocking_threads: None,
        }
    }

    /// An executor on a runtime you already have; shutting it down stops this executor
    /// taking work and waits for its jobs, but leaves the runtime running.
    pub fn from_handle(name: impl Into<String>, handle: Handle) -> Self {
        Self::new(name.into(), handle, None)
    }

    fn new(name: String, handle: Handle, runtime: Option<Runtime>) -> Self {
        TokioExecutor {
            inner: Arc::new(Inner {
                name,
                handle,
                runtime: Mutex::new(runtime),
                queue: SegQueue::new(),
                blocking: SegQueue::new(),
                stats: StatsRecorder::new(),
                gate: Admission::new(),
                abandon: AtomicBool::new(false),
                not_started: Unstarted::new(),
            }),
        }
    }

    /// The runtime's handle, to spawn tokio-specific work beside the executor's.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }
}

impl Executor for TokioExecutor {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        let inner = &self.inner;
        let entry = inner.gate.enter();
        let result = if !entry.is_open() {
            inner.stats.rejected();
            Err(SubmitError::shutdown(job))
        } else {
            inner.stats.accepted();
            if job.is_async() && !job.on_thread() {
                inner.queue.push(job);
                drop(inner.handle.spawn(Runner {
                    inner: inner.clone(),
                    polled: false,
                    running: None,
                }));
            } else {
                inner.blocking.push(job);
                let blocking = Blocking {
                    ran: false,
                    count: 1,
                    inner: inner.clone(),
                };
                drop(inner.handle.spawn_blocking(move || blocking.run()));
            }
            Ok(())
        };
        drop(entry);
        result
    }

    /// Async jobs are spawned one task each (as `execute` does); blocking jobs are queued
    /// together and shared by one blocking-pool closure per core, each running its share.
    fn execute_batch(&self, jobs: Vec<Job>) {
        let inner = &self.inner;
        let entry = inner.gate.enter();
        if !entry.is_open() {
            for job in jobs {
                inner.stats.rejected();
                drop(SubmitError::shutdown(job));
            }
            return;
        }
        let mut blocking = 0;
        for job in jobs {
            inner.stats.accepted();
            if job.is_async() && !job.on_thread() {
                inner.queue.push(job);
                drop(inner.handle.spawn(Runner {
                    inner: inner.clone(),
                    polled: false,
                    running: None,
                }));
            } else {
                inner.blocking.push(job);
                blocking += 1;
            }
        }
        let runners = batch_runners(blocking);
        for i in 0..runners {
            // Shares differ by at most one job and add up to the batch.
            let count = blocking / runners + usize::from(i < blocking % runners);
            let share = Blocking {
                ran: false,
                count,
                inner: inner.clone(),
            };
            drop(inner.handle.spawn_blocking(move || share.run()));
        }
        drop(entry);
    }

    /// One per core, as a batch of blocking jobs is shared: a map's runner tasks are
    /// blocking jobs, each on a blocking-pool thread.
    fn map_width(&self, _meta: &TaskMeta) -> Option<NonZeroUsize> {
        Some(blocking_width())
    }

    fn stats(&self) -> ExecutorStats {
        self.inner.stats.snapshot()
    }

    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let inner = &*self.inner;
        let mut report = ShutdownReport::new(&inner.name);
        if !inner.gate.begin_shutdown() {
            report.stats = inner.stats.snapshot();
            return report;
        }
        let deadline = Instant::now() + mode.deadline();
        inner.gate.close();
        // `execute` never blocks here, so every submission in flight lands in the queue.
        inner.gate.wait_in_flight(None);
        report.deadline_passed = !inner.stats.wait_idle(deadline);
        inner.abandon.store(true, Ordering::Release);
        inner.not_started.drain(&inner.stats, || {
            inner.queue.pop().or_else(|| inner.blocking.pop())
        });
        if let Some(rt) = lock(&inner.runtime).take() {
            if Handle::try_current().is_ok() {
                // Called from inside a runtime, where blocking on a shutdown is not allowed.
                rt.shutdown_background();
            } else {
                // Drops every task that has not finished; their guards end and count them.
                rt.shutdown_timeout(Duration::from_millis(10));
            }
        }
        report.not_started = inner.not_started.take();
        report.stats = inner.stats.snapshot();
        report.still_running = report.stats.running;
        report
    }
}

impl Drop for TokioExecutor {
    /// Dropping the executor stops it taking work; the runtime (if owned) shuts down in
    /// the background, dropping tasks that have not finished.
    fn drop(&mut self) {
        self.inner.gate.close();
        if let Some(rt) = lock(&self.inner.runtime).take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for TokioExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioExecutor")
            .field("name", &self.inner.name)
            .finish()
    }
}
