//! switchyard backend: [`RayonExecutor`], a dedicated `rayon::ThreadPool` for CPU work.
//!
//! The executor owns its pool (never rayon's global one), so a task may use `par_iter`
//! inside and it runs on the same threads. Jobs wait in the executor's own FIFO queue
//! until a pool thread takes them, so a shutdown can name the jobs that never ran.
//! Panics are caught per task and never abort the process. Futures are driven to
//! completion on the pool thread, inside a tokio runtime context (`executor-reactor`):
//! tokio timers and sockets work in them as on a tokio runtime. The context is the
//! process-wide `switchyard-reactor` runtime unless [`Builder::runtime`] names the
//! application's own.
//!
//! ```
//! use executor_core::{Executor, ExecutorExt, ShutdownMode};
//! use executor_rayon::RayonExecutor;
//! use rayon::prelude::*;
//!
//! let cpu = RayonExecutor::builder("cpu").threads(2).build()?;
//! let h = cpu.submit(|| (0..1_000_000u64).into_par_iter().map(|i| i % 7).sum::<u64>());
//! assert_eq!(h.wait().unwrap(), (0..1_000_000u64).map(|i| i % 7).sum::<u64>());
//! cpu.shutdown(ShutdownMode::Graceful(std::time::Duration::from_secs(5)));
//! # Ok::<(), executor_rayon::BuildError>(())
//! ```
#![forbid(unsafe_code)]

use crossbeam_queue::{ArrayQueue, SegQueue};
use executor_core::backend::{Admission, StatsRecorder, Unstarted, help_while_waiting, lock};
use executor_core::{
    Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskMeta,
};
use executor_reactor::Reactor;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a [`RayonExecutor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build rayon executor '{name}': {kind}")]
pub struct BuildError {
    name: String,
    kind: BuildErrorKind,
}

#[derive(Debug, thiserror::Error)]
enum BuildErrorKind {
    #[error("{0}")]
    Pool(rayon::ThreadPoolBuildError),
    #[error("could not start the tokio reactor: {0}")]
    Reactor(std::io::Error),
}

/// Settings for a [`RayonExecutor`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    threads: usize,
    runtime: Option<tokio::runtime::Handle>,
}

impl Builder {
    /// The number of pool threads; 0 (the default) means one per core.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The tokio runtime whose context async tasks run in (timers, sockets,
    /// `tokio::spawn`); default: the shared `switchyard-reactor` runtime. Pass a
    /// multi-thread runtime's handle (see `executor_reactor::Reactor::from_handle`).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Starts the pool.
    pub fn build(self) -> Result<RayonExecutor, BuildError> {
        let err = |kind| BuildError {
            name: self.name.clone(),
            kind,
        };
        let reactor = match self.runtime.clone() {
            Some(handle) => Reactor::from_handle(handle),
            None => Reactor::shared().map_err(|e| err(BuildErrorKind::Reactor(e)))?,
        };
        let name = self.name.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(move |i| format!("{name}-{i}"))
            .spawn_handler(move |thread| {
                let mut os = std::thread::Builder::new();
                if let Some(name) = thread.name() {
                    os = os.name(name.to_owned());
                }
                if let Some(size) = thread.stack_size() {
                    os = os.stack_size(size);
                }
                let reactor = reactor.clone();
                os.spawn(move || {
                    // For the thread's life: every task it runs has the tokio context,
                    // and a task waiting on a handle runs the pool's queued work.
                    let _context = reactor.enter();
                    let _help = help_while_waiting(|| {
                        matches!(rayon::yield_now(), Some(rayon::Yield::Executed))
                    });
                    thread.run();
                })?;
                Ok(())
            })
            .panic_handler(|payload| {
                // Task panics are caught inside each job; this only guards our own code.
                eprintln!(
                    "switchyard: a rayon worker caught a panic outside a task: {}",
                    executor_core::panic_message(&*payload)
                );
            })
            .build()
            .map_err(|e| err(BuildErrorKind::Pool(e)))?;
        Ok(RayonExecutor {
            inner: Arc::new(Inner {
                threads: pool.current_num_threads(),
                name: self.name,
                pool,
                queue: SegQueue::new(),
                batches: Mutex::new(Vec::new()),
                stats: StatsRecorder::new(),
                gate: Admission::new(),
                abandon: AtomicBool::new(false),
                not_started: Unstarted::new(),
            }),
        })
    }
}

struct Inner {
    name: String,
    threads: usize,
    pool: rayon::ThreadPool,
    queue: SegQueue<Job>,
    /// The batches being run: each a queue of its own that its runners share (one
    /// allocation per batch, filled before any runner starts), listed so that a shutdown
    /// can drain them; the first runner to find one empty takes it off the list.
    batches: Mutex<Vec<Arc<ArrayQueue<Job>>>>,
    stats: StatsRecorder,
    gate: Admission,
    abandon: AtomicBool,
    not_started: Unstarted,
}

impl Inner {
    /// Takes the oldest queued job and runs it (or drops it, past a shutdown deadline);
    /// false when the queue was empty.
    fn run_next(&self) -> bool {
        let Some(job) = self.queue.pop() else {
            return false;
        };
        self.run(job);
        true
    }

    /// Runs a job taken from a queue, or drops it past a shutdown deadline.
    fn run(&self, job: Job) {
        if self.abandon.load(Ordering::Acquire) {
            // Past a shutdown deadline: end it unrun and name it in the report.
            self.not_started.abandon(&self.stats, job);
        } else {
            self.stats.run(job);
        }
    }

    /// A batch's runner: runs the batch's jobs until none is left, then takes the batch
    /// off the list. All its runners are spawned after the batch is full, so none is left
    /// behind when one runner stops early.
    fn run_batch(&self, batch: &Arc<ArrayQueue<Job>>) {
        while let Some(job) = batch.pop() {
            self.run(job);
        }
        let mut batches = lock(&self.batches);
        if let Some(i) = batches.iter().position(|b| Arc::ptr_eq(b, batch)) {
            batches.swap_remove(i);
        }
    }
}

/// A dedicated rayon thread pool. See the [crate docs](crate).
pub struct RayonExecutor {
    inner: Arc<Inner>,
}

impl RayonExecutor {
    /// Settings for an executor called `name` (threads named `name-0`, `name-1`, ...).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            threads: 0,
            runtime: None,
        }
    }

    /// The number of pool threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// Runs `op` inside the pool (so its `par_iter` calls use these threads), blocking
    /// the caller until it returns — for data-parallel code outside the task model.
    pub fn install<R: Send>(&self, op: impl FnOnce() -> R + Send) -> R {
        self.inner.pool.install(op)
    }
}

impl Executor for RayonExecutor {
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
            inner.queue.push(job);
            let runner = inner.clone();
            inner.pool.spawn(move || {
                runner.run_next();
            });
            Ok(())
        };
        drop(entry);
        result
    }

    /// Queues the whole batch, then spawns one pool task per thread (fewer for a small
    /// batch), each running queued jobs until none is left: the pool's per-task cost is
    /// paid per thread, not per job, and the threads still share the batch as they free up.
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
        if jobs.is_empty() {
            return;
        }
        let runners = jobs.len().min(inner.threads.max(1));
        let batch = Arc::new(ArrayQueue::new(jobs.len()));
        inner.stats.accepted_many(jobs.len());
        for job in jobs {
            if batch.push(job).is_err() {
                unreachable!("a batch's queue holds the whole batch");
            }
        }
        lock(&inner.batches).push(batch.clone());
        for _ in 0..runners {
            let runner = inner.clone();
            let batch = batch.clone();
            inner.pool.spawn(move || runner.run_batch(&batch));
        }
        drop(entry);
    }

    /// The pool's thread count: a map's runner tasks, one per thread, share its items.
    fn map_width(&self, _meta: &TaskMeta) -> Option<NonZeroUsize> {
        NonZeroUsize::new(self.inner.threads)
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
        let batches = std::mem::take(&mut *lock(&inner.batches));
        inner.not_started.drain(&inner.stats, || {
            inner
                .queue
                .pop()
                .or_else(|| batches.iter().find_map(|b| b.pop()))
        });
        report.not_started = inner.not_started.take();
        report.stats = inner.stats.snapshot();
        report.still_running = report.stats.running;
        report
    }
}

impl Drop for RayonExecutor {
    /// Dropping the executor stops it taking work; queued jobs still run.
    fn drop(&mut self) {
        self.inner.gate.close();
    }
}

impl std::fmt::Debug for RayonExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayonExecutor")
            .field("name", &self.inner.name)
            .field("threads", &self.inner.threads)
            .finish()
    }
}
