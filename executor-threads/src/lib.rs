//! switchyard backend: [`ThreadsExecutor`], named OS threads fed by a crossbeam channel.
//!
//! For blocking I/O and anything that must not share a CPU pool. The queue serves jobs in
//! order of [`Job::priority`] (higher first, FIFO among equals) with aging, so a low
//! priority still gets its turn (see [`Ranked`]); jobs of the default priority 0 take a
//! plain FIFO channel, and a worker reads one atomic to see that no other job waits. The
//! queue is bounded or unbounded; a full bounded queue blocks the caller, rejects the task, or runs it on the
//! caller, as configured ([`OnFull`]). Futures submitted here are driven to completion on
//! the worker, inside a tokio runtime context (`executor-reactor`): tokio timers and
//! sockets work in them as on a tokio runtime. The context is the process-wide
//! `switchyard-reactor` runtime unless [`Builder::runtime`] names the application's own.
//!
//! ```
//! use executor_core::{Executor, ExecutorExt, OnFull, ShutdownMode};
//! use executor_threads::ThreadsExecutor;
//! use std::time::Duration;
//!
//! let io = ThreadsExecutor::builder("io").workers(4).queue(Some(64)).on_full(OnFull::Block).build()?;
//! let handles: Vec<_> = (0..8).map(|i| io.submit(move || i * 2)).collect();
//! let sum: i32 = handles.into_iter().map(|h| h.wait().unwrap()).sum();
//! assert_eq!(sum, 56);
//! let report = io.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
//! assert!(report.not_started.is_empty());
//! # Ok::<(), executor_threads::BuildError>(())
//! ```
#![forbid(unsafe_code)]

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use crossbeam_queue::ArrayQueue;
use executor_core::backend::{Admission, Ranked, StatsRecorder, Unstarted, help_while_waiting};
use executor_core::{
    Executor, ExecutorStats, Job, OnFull, ShutdownMode, ShutdownReport, SubmitError, TaskId,
    TaskMeta,
};
use executor_reactor::Reactor;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often an idle worker looks whether it should stop.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Why a [`ThreadsExecutor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build threads executor '{name}': {kind}")]
pub struct BuildError {
    name: String,
    kind: BuildErrorKind,
}

#[derive(Debug, thiserror::Error)]
enum BuildErrorKind {
    #[error("workers must be at least 1")]
    NoWorkers,
    #[error("a bounded queue must hold at least 1 task")]
    EmptyQueue,
    #[error("could not start a worker thread: {0}")]
    Spawn(std::io::Error),
    #[error("could not start the tokio reactor: {0}")]
    Reactor(std::io::Error),
}

impl BuildError {
    /// True when the configuration was invalid (as opposed to the OS refusing threads).
    pub fn is_config(&self) -> bool {
        !matches!(
            self.kind,
            BuildErrorKind::Spawn(_) | BuildErrorKind::Reactor(_)
        )
    }
}

/// Settings for a [`ThreadsExecutor`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    workers: usize,
    queue: Option<usize>,
    on_full: OnFull,
    runtime: Option<tokio::runtime::Handle>,
}

impl Builder {
    /// The number of worker threads (default: 4).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The queue's capacity; `None` (the default) for unbounded.
    pub fn queue(mut self, capacity: Option<usize>) -> Self {
        self.queue = capacity;
        self
    }

    /// What a full bounded queue does (default: block the caller).
    pub fn on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// The tokio runtime whose context async tasks run in (timers, sockets,
    /// `tokio::spawn`); default: the shared `switchyard-reactor` runtime. Pass a
    /// multi-thread runtime's handle (see `executor_reactor::Reactor::from_handle`).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ThreadsExecutor, BuildError> {
        let err = |kind| BuildError {
            name: self.name.clone(),
            kind,
        };
        if self.workers == 0 {
            return Err(err(BuildErrorKind::NoWorkers));
        }
        let (tx, rx) = match self.queue {
            Some(0) => return Err(err(BuildErrorKind::EmptyQueue)),
            Some(n) => crossbeam_channel::bounded(n),
            None => crossbeam_channel::unbounded(),
        };
        let reactor = match self.runtime.clone() {
            Some(handle) => Reactor::from_handle(handle),
            None => Reactor::shared().map_err(|e| err(BuildErrorKind::Reactor(e)))?,
        };
        let inner = Arc::new(Inner {
            reactor,
            name: self.name.clone(),
            tx,
            rx,
            on_full: self.on_full,
            workers: self.workers,
            stats: StatsRecorder::new(),
            gate: Admission::new(),
            abandon: AtomicBool::new(false),
            live: Mutex::new(0),
            all_done: Condvar::new(),
            not_started: Unstarted::new(),
            ranks: Ranks::default(),
        });
        for i in 0..self.workers {
            let worker = inner.clone();
            *inner.live.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", self.name))
                .spawn(move || {
                    // For the thread's life: every task it runs has the tokio context,
                    // and a task waiting on a handle runs this pool's queued jobs.
                    let reactor = worker.reactor.clone();
                    let _context = reactor.enter();
                    let helper = worker.clone();
                    let _help = help_while_waiting(move || helper.help_one());
                    worker.work();
                });
            if let Err(e) = spawned {
                *inner.live.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                inner.close();
                return Err(err(BuildErrorKind::Spawn(e)));
            }
        }
        Ok(ThreadsExecutor { inner })
    }
}

enum Msg {
    Run(Job),
    /// A share of a batch: the jobs sit in one queue that several messages point at; a
    /// worker that takes one runs jobs from it until it is empty, so the workers share
    /// the batch as they free up.
    Batch(Arc<ArrayQueue<Job>>),
    /// A job with a priority other than 0 waits in [`Ranks`]: a worker that takes this
    /// message runs the best of them. One message per ranked job, so a bounded queue still
    /// counts jobs and a sleeping worker wakes for it.
    Ranked,
    /// Wakes an idle worker so it notices a shutdown at once.
    Wake,
}

/// The jobs with a priority other than 0, served before (or, for a negative priority,
/// after) the plain jobs of the channel, with aging both ways: a plain job in the channel
/// ranks as a job of priority 0 queued at the last plain serve.
#[derive(Default)]
struct Ranks {
    /// Jobs waiting in `state`; read without the lock, so plain jobs pay one relaxed load
    /// while none waits.
    len: AtomicUsize,
    state: Mutex<RanksState>,
}

#[derive(Default)]
struct RanksState {
    jobs: Ranked<Job>,
    /// The serve count at the last serve of a plain job while ranked jobs waited.
    plain_at: u64,
    /// [`Msg::Ranked`] messages whose job a worker took out of turn
    /// ([`Ranks::take_turn`]): the worker that receives one skips it.
    stale: usize,
}

impl Ranks {
    fn lock(&self) -> std::sync::MutexGuard<'_, RanksState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn any(&self) -> bool {
        self.len.load(Ordering::Relaxed) > 0
    }

    fn push(&self, job: Job) {
        let mut s = self.lock();
        if s.jobs.is_empty() {
            // The plain jobs waiting now rank as if queued now.
            s.plain_at = s.jobs.served();
        }
        s.jobs.push(job.priority(), job);
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// The best ranked job (for a [`Msg::Ranked`], or at shutdown).
    fn pop(&self) -> Option<Job> {
        let job = self.lock().jobs.pop();
        if job.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        job
    }

    /// A submission takes back the job it queued (its channel message was refused);
    /// `None` when a worker took it already.
    fn take_back(&self, id: TaskId) -> Option<Job> {
        let mut s = self.lock();
        let job = s.jobs.take_first(|j| j.id() == id);
        if job.is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        } else {
            // Taken out of turn, which counted a message that was never sent.
            s.stale = s.stale.saturating_sub(1);
        }
        job
    }

    /// True (and forgotten) when a received [`Msg::Ranked`] is stale.
    fn consume_stale(&self) -> bool {
        let mut s = self.lock();
        let stale = s.stale > 0;
        s.stale -= usize::from(stale);
        stale
    }

    /// The ranked job to run before the channel's next plain job, if its rank beats that
    /// plain job's (`plain_waiting`: the channel is not empty); otherwise counts the
    /// plain job's serve, so the ranked ones age by it, and returns `None`.
    fn take_turn(&self, plain_waiting: bool) -> Option<Job> {
        let mut s = self.lock();
        let rank = s.jobs.peek_rank()?;
        if plain_waiting && rank <= -(s.plain_at as i64) {
            s.plain_at = s.jobs.served();
            s.jobs.pass();
            return None;
        }
        let job = s.jobs.pop();
        if job.is_some() {
            s.stale += 1;
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        job
    }
}

struct Inner {
    /// The tokio context workers (and callers running a task) poll futures in.
    reactor: Reactor,
    name: String,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    on_full: OnFull,
    workers: usize,
    stats: StatsRecorder,
    /// Closed once no new work is taken; counts submissions on their way to the queue.
    gate: Admission,
    /// Past the deadline: queued jobs are dropped, not run.
    abandon: AtomicBool,
    live: Mutex<usize>,
    all_done: Condvar,
    not_started: Unstarted,
    /// Jobs with a priority other than 0.
    ranks: Ranks,
}

impl Inner {
    fn work(&self) {
        loop {
            if self.ranks.any()
                && let Some(job) = self.ranks.take_turn(!self.rx.is_empty())
            {
                self.handle(job);
                continue;
            }
            // `try_recv` first: a busy worker never reads the clock for a timeout.
            let mut next = match self.rx.try_recv() {
                Ok(msg) => Ok(msg),
                Err(_) => self.rx.recv_timeout(IDLE_CHECK),
            };
            // A stale message (its ranked job ran out of turn) passes the turn on to the
            // message behind it.
            while let Ok(Msg::Ranked) = next
                && self.ranks.consume_stale()
            {
                next = self.rx.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                });
            }
            match next {
                Ok(Msg::Run(job)) => self.handle(job),
                Ok(Msg::Batch(batch)) => self.handle_batch(&batch),
                Ok(Msg::Ranked) => {
                    if let Some(job) = self.ranks.pop() {
                        self.handle(job);
                    }
                }
                Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => {
                    // Not while an `execute` that got past the closed check is still on
                    // its way to the queue: its job was accepted, and must find a worker.
                    if self.gate.is_closed() && self.gate.in_flight() == 0 && self.rx.is_empty() {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        *live -= 1;
        if *live == 0 {
            self.all_done.notify_all();
        }
    }

    fn handle(&self, job: Job) {
        if self.abandon.load(Ordering::Acquire) {
            self.abandon(job);
            return;
        }
        // Task panics are caught inside `run`; this guard keeps the worker alive even if
        // an observer or a failure hook panics.
        if catch_unwind(AssertUnwindSafe(|| self.stats.run(job))).is_err() {
            eprintln!(
                "switchyard: a task hook panicked on executor '{}'",
                self.name
            );
        }
    }

    fn handle_batch(&self, batch: &ArrayQueue<Job>) {
        while let Some(job) = batch.pop() {
            self.handle(job);
        }
    }

    fn close(&self) {
        self.gate.close();
        for _ in 0..self.workers {
            let _ = self.tx.try_send(Msg::Wake);
        }
    }

    /// Ends a job unrun at shutdown, counting it and naming it for the report.
    fn abandon(&self, job: Job) {
        self.not_started.abandon(&self.stats, job);
    }

    /// Runs one queued job for a task of this pool that waits on a handle; false when
    /// nothing is queued.
    fn help_one(&self) -> bool {
        loop {
            if self.ranks.any()
                && let Some(job) = self.ranks.take_turn(!self.rx.is_empty())
            {
                self.handle(job);
                return true;
            }
            match self.rx.try_recv() {
                Ok(Msg::Run(job)) => self.handle(job),
                // The whole share: its jobs are reachable only through this message.
                Ok(Msg::Batch(batch)) => self.handle_batch(&batch),
                Ok(Msg::Ranked) => match self.ranks.consume_stale() {
                    true => continue,
                    false => match self.ranks.pop() {
                        Some(job) => self.handle(job),
                        None => continue,
                    },
                },
                Ok(Msg::Wake) => continue,
                Err(_) => return false,
            }
            return true;
        }
    }

    /// A source of the queued jobs one by one, batches opened (wake-up messages are
    /// skipped): for a shutdown that ends them unrun.
    fn queued_jobs(&self) -> impl FnMut() -> Option<Job> + '_ {
        let mut open: Option<Arc<ArrayQueue<Job>>> = None;
        move || {
            loop {
                if let Some(job) = open.as_ref().and_then(|b| b.pop()) {
                    return Some(job);
                }
                open = None;
                match self.rx.try_recv() {
                    Ok(Msg::Run(job)) => return Some(job),
                    Ok(Msg::Batch(batch)) => open = Some(batch),
                    Ok(Msg::Ranked | Msg::Wake) => continue,
                    // Every ranked job has its message, but take any left all the same.
                    Err(_) => return self.ranks.pop(),
                }
            }
        }
    }
}

/// OS threads fed by a crossbeam channel. See the [crate docs](crate).
pub struct ThreadsExecutor {
    inner: Arc<Inner>,
}

impl ThreadsExecutor {
    /// Settings for an executor called `name` (its threads are named `name-0`, `name-1`, ...).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            workers: 4,
            queue: None,
            on_full: OnFull::Block,
            runtime: None,
        }
    }

    /// The number of worker threads.
    pub fn workers(&self) -> usize {
        self.inner.workers
    }
}

impl Executor for ThreadsExecutor {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        let inner = &*self.inner;
        // Workers and the shutdown see this submission in flight until it is queued.
        let entry = inner.gate.enter();
        let result = if !entry.is_open() {
            inner.stats.rejected();
            Err(SubmitError::shutdown(job))
        } else {
            inner.stats.accepted();
            let id = job.id();
            let msg = if job.priority() == 0 {
                Msg::Run(job)
            } else {
                // Queued before its message is sent, so a worker that takes the message
                // finds it (or a better one).
                inner.ranks.push(job);
                Msg::Ranked
            };
            // The job of a refused message; `None` when a worker took a ranked job first.
            let back = |msg| match msg {
                Msg::Run(job) => Some(job),
                Msg::Ranked => inner.ranks.take_back(id),
                Msg::Wake | Msg::Batch(_) => unreachable!("only a job is sent here"),
            };
            match inner.on_full {
                OnFull::Block => match inner.tx.send(msg) {
                    Ok(()) => Ok(()),
                    Err(e) => back(e.0).map_or(Ok(()), |job| Err(SubmitError::shutdown(job))),
                },
                OnFull::Reject | OnFull::CallerRuns => match inner.tx.try_send(msg) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) => {
                        match back(msg) {
                            None => Ok(()),
                            Some(job) if inner.on_full == OnFull::CallerRuns => {
                                inner.reactor.run_blocking(|| inner.stats.run(job));
                                Ok(())
                            }
                            Some(job) => {
                                inner.stats.unqueued();
                                inner.stats.rejected();
                                Err(SubmitError::full(job))
                            }
                        }
                    }
                },
            }
        };
        drop(entry);
        result
    }

    /// On an unbounded queue, a batch is one shared queue of jobs and one message per
    /// worker (fewer for a small batch): a channel message per worker, not per job. A
    /// bounded queue takes the jobs one by one, so its bound still counts jobs, and so
    /// does a batch with a job of a priority other than 0 (so it is ranked).
    fn execute_batch(&self, jobs: Vec<Job>) {
        let inner = &*self.inner;
        if inner.tx.capacity().is_some() || jobs.len() < 2 || jobs.iter().any(|j| j.priority() != 0)
        {
            for job in jobs {
                if let Err(refused) = self.execute(job) {
                    drop(refused);
                }
            }
            return;
        }
        let entry = inner.gate.enter();
        if !entry.is_open() {
            for job in jobs {
                inner.stats.rejected();
                drop(SubmitError::shutdown(job));
            }
            return;
        }
        let shares = jobs.len().min(inner.workers);
        let batch = Arc::new(ArrayQueue::new(jobs.len()));
        inner.stats.accepted_many(jobs.len());
        for job in jobs {
            if let Err(job) = batch.push(job) {
                unreachable!("the batch queue has room for every job ({job:?})");
            }
        }
        for _ in 0..shares {
            // Unbounded: a send fails only once every receiver is gone, and the workers
            // hold the receiver until the gate we are inside of has closed and emptied.
            if let Err(e) = inner.tx.send(Msg::Batch(batch.clone())) {
                drop(e);
            }
        }
        drop(entry);
    }

    /// The worker count: a map's runner tasks, one per worker, share its items.
    fn map_width(&self, _meta: &TaskMeta) -> Option<NonZeroUsize> {
        NonZeroUsize::new(self.inner.workers)
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
        inner.close();
        // Let every `execute` that got past the closed check finish its send, within the
        // deadline: a caller blocked on a full queue gets in as the workers make room.
        inner.gate.wait_in_flight(Some(deadline));
        let mut live = inner.live.lock().unwrap_or_else(|e| e.into_inner());
        while *live > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = inner
                .all_done
                .wait_timeout(live, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let finished = *live == 0 && inner.gate.in_flight() == 0;
        drop(live);
        if !finished || !inner.rx.is_empty() {
            report.deadline_passed = !finished;
            inner.abandon.store(true, Ordering::Release);
            // Draining makes room, so a caller still blocked on a full queue completes its
            // send (its job is then dropped here too) and no `execute` is left waiting.
            loop {
                inner
                    .not_started
                    .abandon_all(&inner.stats, inner.queued_jobs());
                if inner.gate.in_flight() == 0 {
                    break;
                }
                std::thread::yield_now();
            }
            inner.not_started.drain(&inner.stats, inner.queued_jobs());
        }
        report.not_started = inner.not_started.take();
        report.stats = inner.stats.snapshot();
        report.still_running = report.stats.running;
        report
    }
}

impl Drop for ThreadsExecutor {
    /// Dropping the executor stops it taking work; queued jobs still run and the workers
    /// exit on their own. Call [`Executor::shutdown`] to wait and get a report.
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl std::fmt::Debug for ThreadsExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadsExecutor")
            .field("name", &self.inner.name)
            .field("workers", &self.inner.workers)
            .finish()
    }
}
