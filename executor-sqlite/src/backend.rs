//! [`SqliteExecutor`]: the submitter side (enqueue, results, cancel) and its builder.

use crate::store::{Durability, NewTask, Row, Store, Stored};
use crossbeam_channel::{Receiver, Sender};
use durable_testing::{
    DeadLetter, DurableBackend, Enqueue, Record, RouteConfig, State, WorkerControl,
};
use executor_core::backend::{Admission, StatsRecorder, Unstarted};
use executor_core::{
    BoxError, Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskContext,
    TaskError,
};
use named_tasks::wire::{ErrorKind, Request};
use named_tasks::{Call, CallError, Codec, Remote, Tasks};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a [`SqliteExecutor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the durable queue {path}: {source}")]
pub struct BuildError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl BuildError {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Builds a [`SqliteExecutor`]; see [`SqliteExecutor::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    path: PathBuf,
    durability: Durability,
    lease: Duration,
    slots: usize,
    submitters: usize,
    poll: Duration,
    codec: Codec,
    default_route: RouteConfig,
    routes: HashMap<String, RouteConfig>,
}

impl Builder {
    /// The database file (created with its directory if missing).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = path.into();
        self
    }
    /// Commit durability; [`Durability::Normal`] by default.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// How long a claim lasts without renewal (10 s by default); a dead worker's tasks
    /// come back after it. Workers renew every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }
    /// Tasks one worker runs at once (4 by default).
    pub fn slots(mut self, n: usize) -> Self {
        self.slots = n.max(1);
        self
    }
    /// Submitter threads: calls of this process that can wait for their results at
    /// once (64 by default). Each call is stored first, whatever this is.
    pub fn submitters(mut self, n: usize) -> Self {
        self.submitters = n.max(1);
        self
    }
    /// How often idle workers and waiting submitters look at the queue (2 ms by default).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_micros(100));
        self
    }
    /// How arguments and results are stored; JSON by default (`result` then gives JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }
    /// Attempts, backoff and limits for task names without a route of their own.
    pub fn default_route(mut self, route: RouteConfig) -> Self {
        self.default_route = route;
        self
    }
    /// Attempts, backoff and limits for the tasks called `route.name`.
    pub fn route(mut self, route: RouteConfig) -> Self {
        self.routes.insert(route.name.clone(), route);
        self
    }

    /// Opens the queue (creating it) and starts the submitter threads.
    pub fn build(self) -> Result<SqliteExecutor, BuildError> {
        let path = self.path.clone();
        let err = |source: Box<dyn std::error::Error + Send + Sync>| BuildError {
            path: path.clone(),
            source,
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| err(e.into()))?;
        }
        let store = Store::open(&self.path, self.durability).map_err(|e| err(e.into()))?;
        let watch_store = Store::open(&self.path, self.durability).map_err(|e| err(e.into()))?;
        let cursor = watch_store.last_seq().map_err(|e| err(e.into()))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            store: Mutex::new(store),
            to_store: Mutex::new(Vec::new()),
            gate: Admission::new(),
            stats: StatsRecorder::new(),
            unstarted: Unstarted::new(),
            tx: Mutex::new(Some(tx)),
            rx: rx.clone(),
            watch: Watch::default(),
            closing: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            b: self,
        });
        let mut threads = Vec::new();
        for i in 0..inner.b.submitters {
            let (inner, rx) = (inner.clone(), rx.clone());
            let t = std::thread::Builder::new()
                .name(format!("{}-submit-{i}", inner.b.name))
                .spawn(move || {
                    for job in rx {
                        inner.stats.run(job);
                    }
                })
                .map_err(|e| err(e.into()))?;
            threads.push(t);
        }
        let watcher = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("{}-watch", inner.b.name))
                .spawn(move || watcher.watch(watch_store, cursor))
                .map_err(|e| err(e.into()))?,
        );
        *lock(&inner.threads) = threads;
        Ok(SqliteExecutor {
            inner,
            handles: Arc::new(()),
        })
    }
}

/// A durable executor for named tasks on one SQLite file: calls are stored, run by
/// workers in any process that opens the same file ([`run_worker`](Self::run_worker)),
/// and their results come back to the caller's handle and stay readable by id.
pub struct SqliteExecutor {
    inner: Arc<Inner>,
    /// Counts the user's handles of this executor: the last one dropped shuts it down.
    handles: Arc<()>,
}

struct Inner {
    b: Builder,
    store: Mutex<Store>,
    /// Calls waiting to be stored by the next group commit.
    to_store: Mutex<Vec<ToStore>>,
    gate: Admission,
    stats: StatsRecorder,
    unstarted: Unstarted,
    tx: Mutex<Option<Sender<Job>>>,
    rx: Receiver<Job>,
    watch: Watch,
    closing: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A call waiting for the group commit, and where its id (or why not) goes.
type ToStore = (NewTask, Sender<Result<i64, String>>);

/// The tasks this process's submitters wait for, and how they ended.
#[derive(Default)]
struct Watch {
    /// id → (waiters, the row once it ended).
    waiting: Mutex<HashMap<i64, (usize, Option<Row>)>>,
    ended: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::UnknownTask => "unknown-task",
        ErrorKind::BadArgs => "bad-args",
        ErrorKind::Panicked => "panicked",
        ErrorKind::BadResult => "bad-result",
        ErrorKind::BadCodec => "bad-codec",
        _ => "failed",
    }
}

fn kind_of(name: Option<&str>) -> ErrorKind {
    match name {
        Some("unknown-task") => ErrorKind::UnknownTask,
        Some("bad-args") => ErrorKind::BadArgs,
        Some("panicked") => ErrorKind::Panicked,
        Some("bad-result") => ErrorKind::BadResult,
        Some("bad-codec") => ErrorKind::BadCodec,
        _ => ErrorKind::Failed,
    }
}

fn parse_id(id: &str) -> Result<i64, BoxError> {
    id.parse()
        .map_err(|_| format!("'{id}' is not a task id of a sqlite queue").into())
}

impl Inner {
    fn route(&self, name: &str) -> &RouteConfig {
        self.b.routes.get(name).unwrap_or(&self.b.default_route)
    }

    /// The watcher thread: follows the `done` log while anybody waits.
    fn watch(&self, store: Store, mut cursor: i64) {
        while !self.closing.load(Ordering::SeqCst) {
            let mut waiting = lock(&self.watch.waiting);
            if waiting.is_empty() {
                let (w, _) = self
                    .watch
                    .ended
                    .wait_timeout(waiting, Duration::from_millis(50))
                    .unwrap_or_else(|e| e.into_inner());
                drop(w);
                continue;
            }
            drop(waiting);
            match store.ended_since(cursor) {
                Ok((rows, last)) => {
                    cursor = last;
                    if !rows.is_empty() {
                        waiting = lock(&self.watch.waiting);
                        let mut any = false;
                        for row in rows {
                            if let Some(slot) = waiting.get_mut(&row.id) {
                                slot.1 = Some(row);
                                any = true;
                            }
                        }
                        drop(waiting);
                        if any {
                            self.watch.ended.notify_all();
                        }
                    }
                }
                Err(e) => tracing_free_warn(&format!("cannot read finished tasks: {e}")),
            }
            std::thread::sleep(self.b.poll);
        }
    }

    /// Stores one task as part of a group commit: whichever submitter holds the store
    /// commits every call waiting to be stored in one transaction.
    fn enqueue(&self, task: NewTask) -> Result<i64, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.to_store).push((task, tx));
        {
            let mut store = lock(&self.store);
            let batch = std::mem::take(&mut *lock(&self.to_store));
            if !batch.is_empty() {
                let tasks: Vec<&NewTask> = batch.iter().map(|(t, _)| t).collect();
                match store.enqueue_many(&tasks) {
                    Ok(ids) => {
                        for ((_, reply), id) in batch.iter().zip(ids) {
                            let _ = reply.send(Ok(id));
                        }
                    }
                    Err(e) => {
                        for (_, reply) in &batch {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        }
        rx.recv()
            .unwrap_or_else(|_| Err("the group commit dropped the task".into()))
    }

    /// Stores one call, tells the enqueuer its id, and waits for its end.
    fn carry(
        &self,
        ctx: &TaskContext,
        req: Request,
        opts: &Enqueue,
        reply: Option<Sender<Result<i64, String>>>,
    ) -> Result<Vec<u8>, CallError> {
        let name = req.name.clone();
        let route = self.route(&name);
        let key = ctx.meta().key();
        let stored = self.enqueue(NewTask {
            name: name.clone(),
            key: key.map(str::to_owned),
            idem_key: opts.idempotency_key.clone(),
            codec: req.codec.name(),
            payload: req.payload,
            max_attempts: route.attempts,
            backoff: route.backoff,
            concurrency: route.concurrency,
            key_concurrency: route.key_concurrency,
        });
        let id = match stored {
            Ok(id) => id,
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(e.to_string()));
                }
                return Err(CallError::lost(
                    name,
                    format!("could not store the task: {e}"),
                ));
            }
        };
        if let Some(r) = reply {
            let _ = r.send(Ok(id));
        }
        let row = self.wait_end(ctx, &name, id)?;
        match row.state {
            Stored::Succeeded => Ok(row.result.unwrap_or_default()),
            Stored::Cancelled => Err(CallError::lost(name, format!("task {id} was cancelled"))),
            _ => Err(CallError::worker(
                name,
                kind_of(row.last_kind.as_deref()),
                row.last_error.unwrap_or_default(),
            )),
        }
    }

    fn wait_end(&self, ctx: &TaskContext, name: &str, id: i64) -> Result<Row, CallError> {
        {
            let mut waiting = lock(&self.watch.waiting);
            waiting.entry(id).or_insert((0, None)).0 += 1;
        }
        self.watch.ended.notify_all();
        // It may have ended before we registered (an idempotent repeat).
        let now = lock(&self.store).get(id).ok().flatten();
        let mut waiting = lock(&self.watch.waiting);
        if let Some(row) = now.filter(|r| r.state != Stored::Pending) {
            waiting
                .get_mut(&id)
                .expect("registered")
                .1
                .get_or_insert(row);
        }
        let out = loop {
            if let Some(row) = waiting.get(&id).and_then(|s| s.1.clone()) {
                break Ok(row);
            }
            if ctx.is_cancelled() {
                drop(waiting);
                let _ = lock(&self.store).cancel(id);
                waiting = lock(&self.watch.waiting);
                break Err(CallError::lost(name, format!("task {id} was cancelled")));
            }
            if self.closing.load(Ordering::SeqCst) {
                break Err(CallError::lost(
                    name,
                    format!("the submitter shut down; task {id} stays queued (read it by id)"),
                ));
            }
            waiting = self
                .watch
                .ended
                .wait_timeout(waiting, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        let slot = waiting.get_mut(&id).expect("registered");
        slot.0 -= 1;
        if slot.0 == 0 {
            waiting.remove(&id);
        }
        out
    }

    fn submit(
        self: &Arc<Self>,
        job: Job,
        opts: Enqueue,
        reply: Option<Sender<Result<i64, String>>>,
    ) -> Result<(), SubmitError> {
        let Some(call) = Call::of(job.meta()) else {
            self.stats.rejected();
            let reason = format!(
                "executor '{}' is a durable queue, and '{}' is a closure, which cannot be \
                 stored; declare it as a named task (named_tasks::Task)",
                self.b.name,
                job.meta().name()
            );
            job.resolve(TaskError::rejected(reason));
            return Ok(());
        };
        let entry = self.gate.enter();
        if !entry.is_open() {
            self.stats.rejected();
            return Err(SubmitError::shutdown(job));
        }
        let inner = self.clone();
        call.install(Remote::new(self.b.codec, move |ctx, req| {
            inner.carry(ctx, req, &opts, reply)
        }));
        self.stats.accepted();
        let tx = lock(&self.tx);
        match tx.as_ref() {
            Some(tx) => tx
                .send(job)
                .map_err(|e| SubmitError::shutdown(e.into_inner())),
            None => {
                self.stats.unqueued();
                self.stats.rejected();
                Err(SubmitError::shutdown(job))
            }
        }
    }
}

/// The watcher has no logger to use (the crate does not depend on one): a line on stderr.
fn tracing_free_warn(msg: &str) {
    eprintln!("executor-sqlite: {msg}");
}

impl SqliteExecutor {
    /// A builder for an executor called `name` on `switchyard-queue.sqlite3` in the current
    /// directory (set [`Builder::path`]).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            path: PathBuf::from("switchyard-queue.sqlite3"),
            durability: Durability::Normal,
            lease: Duration::from_secs(10),
            slots: 4,
            submitters: 64,
            poll: Duration::from_millis(2),
            codec: Codec::Json,
            default_route: RouteConfig::new("*"),
            routes: HashMap::new(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.b.path
    }

    /// Stores a named task's job and returns its id once it is stored (see
    /// [`DurableBackend::enqueue_job`]); waits while every submitter thread is busy.
    pub fn enqueue_job(&self, job: Job, opts: Enqueue) -> Result<i64, BoxError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .submit(job, opts, Some(tx))
            .map_err(|e| -> BoxError { e.task_error().to_string().into() })?;
        match rx.recv() {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(
                "the task ended before it was stored (a closure, cancelled, or \
                           the executor shut down)"
                    .into(),
            ),
        }
    }

    /// Counts of tasks per state (`queued`, `running`, `failed`, `succeeded`, `dead`,
    /// `cancelled`).
    pub fn counts(&self) -> Result<Vec<(String, u64)>, BoxError> {
        Ok(lock(&self.inner.store).counts()?)
    }

    /// Runs a worker in this thread with `tasks` until SIGTERM or SIGINT, then drains:
    /// claims nothing more, finishes and records what runs, and returns. While it runs,
    /// those signals no longer end the process at once.
    pub fn run_worker_until_signal(&self, tasks: Tasks) -> Result<(), BoxError> {
        let control = WorkerControl::new();
        let signalled = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            ids.push(signal_hook::flag::register(sig, signalled.clone())?);
        }
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                while !signalled.load(Ordering::SeqCst) && !control.is_stopping() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                control.drain();
            });
            let out = self.run_worker(tasks, &control);
            control.drain(); // ends the watching thread if the worker stopped on its own
            out
        });
        for id in ids {
            signal_hook::low_level::unregister(id);
        }
        out
    }

    /// Runs a worker in this thread with `tasks` until `control` stops it: it claims only
    /// the names `tasks` knows, `slots` at a time, under the lease.
    pub fn run_worker(&self, tasks: Tasks, control: &WorkerControl) -> Result<(), BoxError> {
        crate::worker::run(
            &self.inner.b.path,
            self.inner.b.durability,
            crate::worker::Settings {
                lease: self.inner.b.lease,
                slots: self.inner.b.slots,
                poll: self.inner.b.poll,
            },
            tasks,
            control,
        )
    }
}

impl DurableBackend for SqliteExecutor {
    fn executor(&self) -> Arc<dyn Executor> {
        Arc::new(SqliteExecutor {
            inner: self.inner.clone(),
            handles: self.handles.clone(),
        })
    }

    fn enqueue_job(&self, job: Job, opts: Enqueue) -> Result<String, BoxError> {
        Ok(SqliteExecutor::enqueue_job(self, job, opts)?.to_string())
    }

    fn result(&self, id: &str) -> Result<Option<Record>, BoxError> {
        let row = lock(&self.inner.store).get(parse_id(id)?)?;
        Ok(row.map(|r| Record {
            state: match r.state {
                Stored::Pending => State::Pending,
                Stored::Succeeded => State::Succeeded,
                Stored::Dead => State::Dead,
                Stored::Cancelled => State::Cancelled,
            },
            result: r.result,
            last_error: r.last_error,
            attempts: r.attempts,
        }))
    }

    fn cancel(&self, id: &str) -> Result<bool, BoxError> {
        Ok(lock(&self.inner.store).cancel(parse_id(id)?)?)
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError> {
        Ok(lock(&self.inner.store)
            .dead()?
            .into_iter()
            .map(|r| DeadLetter {
                id: r.id.to_string(),
                name: r.name,
                attempts: r.attempts,
                last_error: r.last_error.unwrap_or_default(),
            })
            .collect())
    }

    fn run_worker(&self, tasks: Tasks, control: WorkerControl) -> Result<(), BoxError> {
        SqliteExecutor::run_worker(self, tasks, &control)
    }
}

impl Executor for SqliteExecutor {
    fn name(&self) -> &str {
        &self.inner.b.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        self.inner.submit(job, Enqueue::default(), None)
    }

    fn stats(&self) -> ExecutorStats {
        self.inner.stats.snapshot()
    }

    /// Stops taking calls. `Graceful(d)`: waits up to `d` for the results of calls in
    /// flight; then (at once for `Now`) calls not yet stored are dropped (not started)
    /// and calls still waiting resolve with an error saying the task stays queued: a
    /// stored task is never lost, and its result stays readable by id.
    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let inner = &*self.inner;
        let mut report = ShutdownReport::new(inner.b.name.clone());
        if !inner.gate.begin_shutdown() {
            report.stats = inner.stats.snapshot();
            return report;
        }
        let deadline = Instant::now() + mode.deadline();
        inner.gate.close();
        inner.gate.wait_in_flight(None);
        drop(lock(&inner.tx).take());
        if !inner.stats.wait_idle(deadline) {
            report.deadline_passed = true;
        }
        inner.closing.store(true, Ordering::SeqCst);
        inner.watch.ended.notify_all();
        inner
            .unstarted
            .abandon_all(&inner.stats, || inner.rx.try_recv().ok());
        for t in lock(&inner.threads).drain(..) {
            let _ = t.join();
        }
        report.not_started = inner.unstarted.take();
        report.stats = inner.stats.snapshot();
        report
    }
}

impl Drop for SqliteExecutor {
    fn drop(&mut self) {
        // The last handle ends the threads; stored tasks stay stored.
        if Arc::strong_count(&self.handles) == 1 {
            self.shutdown(ShutdownMode::Now);
        }
    }
}

impl std::fmt::Debug for SqliteExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteExecutor")
            .field("name", &self.inner.b.name)
            .field("path", &self.inner.b.path)
            .finish()
    }
}
