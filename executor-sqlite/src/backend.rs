//! [`SqliteExecutor`]: the submitter side (enqueue, results, cancel) and its builder.

use crate::hub::{Ended, Hub};
use crate::store::{Durability, NewTask, Row, Store, Stored};
use crate::worker::MAX_IDLE_POLL;
use crossbeam_channel::{Receiver, Sender};
use durable_testing::{
    DeadLetter, DurableBackend, Enqueue, Record, RouteConfig, State, WorkerControl,
};
use executor_core::backend::{Admission, StatsRecorder, Unstarted};
use executor_core::{
    BoxError, Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskError,
};
use named_tasks::wire::ErrorKind;
use named_tasks::{Call, CallError, Codec, Remote, Tasks};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// Accepted for older policy files and ignored: a call waits for its result in a
    /// table of this process's pending tasks, not on a thread of its own.
    pub fn submitters(mut self, n: usize) -> Self {
        self.submitters = n.max(1);
        self
    }
    /// The first interval of polling for what this process is not told directly
    /// (2 ms by default): tasks stored and ended by other processes on the same file.
    /// Polling backs off, doubling to 50 ms, while it finds nothing. Workers and
    /// executors of one process on one file wake each other without polling.
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

    /// Opens the queue (creating it) and starts the executor's two threads: one stores
    /// calls in group commits, one hands ended tasks to their handles.
    pub fn build(self) -> Result<SqliteExecutor, BuildError> {
        let path = self.path.clone();
        let err = |source: Box<dyn std::error::Error + Send + Sync>| BuildError {
            path: path.clone(),
            source,
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| err(e.into()))?;
        }
        let hub = Hub::of(&self.path, self.durability).map_err(|e| err(e.into()))?;
        let open = || Store::open(&self.path, self.durability).map_err(|e| err(e.into()));
        let (store, watch_store) = (open()?, open()?);
        let cursor = watch_store.last_seq().map_err(|e| err(e.into()))?;
        let inbox = hub.sink();
        let inner = Arc::new(Inner {
            store: Mutex::new(store),
            to_store: Mutex::new(Vec::new()),
            to_store_cv: Condvar::new(),
            pending: Mutex::new(HashMap::new()),
            poke: Mutex::new(None),
            hub,
            gate: Admission::new(),
            stats: StatsRecorder::new(),
            unstarted: Unstarted::new(),
            closing: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            b: self,
        });
        let mut threads = Vec::new();
        let committer = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("{}-store", inner.b.name))
                .spawn(move || committer.store_loop())
                .map_err(|e| err(e.into()))?,
        );
        let (poke_tx, poke_rx) = crossbeam_channel::bounded(1);
        *lock(&inner.poke) = Some(poke_tx);
        let watcher = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("{}-watch", inner.b.name))
                .spawn(move || watcher.watch(watch_store, inbox, poke_rx, cursor))
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
    /// For reads and cancels asked through the API.
    store: Mutex<Store>,
    /// Calls waiting to be stored by the next group commit.
    to_store: Mutex<Vec<ToStore>>,
    to_store_cv: Condvar,
    /// Stored calls waiting for their ends, by task id (an idempotent repeat may wait
    /// beside the first call).
    pending: Mutex<HashMap<i64, Vec<Waiting>>>,
    /// Tells the watcher that calls wait (it polls other processes' ends again soon).
    poke: Mutex<Option<Sender<()>>>,
    /// What this process shares about the file (workers' ends, wake-ups, write turns).
    hub: Arc<Hub>,
    gate: Admission,
    stats: StatsRecorder,
    unstarted: Unstarted,
    closing: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A call waiting for the group commit, and where its id (or why not) goes.
struct ToStore {
    task: NewTask,
    job: Job,
    reply: Option<Sender<Result<i64, String>>>,
}

/// A stored call waiting for its task's end.
struct Waiting {
    job: Job,
    name: String,
    start: Option<Instant>,
}

/// How often the watcher looks for handles cancelled while their task waits.
const CANCEL_SCAN: Duration = Duration::from_millis(20);

pub(crate) use executor_core::backend::lock;

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

/// What a call's handle gets from its task's end.
fn outcome(name: &str, e: &Ended) -> Result<Vec<u8>, CallError> {
    match e.state {
        Stored::Succeeded => Ok(e.result.clone().unwrap_or_default()),
        Stored::Cancelled => Err(CallError::lost(
            name,
            format!("task {} was cancelled", e.id),
        )),
        _ => Err(CallError::worker(
            name,
            kind_of(e.last_kind.as_deref()),
            e.last_error.clone().unwrap_or_default(),
        )),
    }
}

impl From<Row> for Ended {
    fn from(r: Row) -> Ended {
        Ended {
            id: r.id,
            state: r.state,
            result: r.result,
            last_error: r.last_error,
            last_kind: r.last_kind,
        }
    }
}

impl Inner {
    fn route(&self, name: &str) -> &RouteConfig {
        self.b.routes.get(name).unwrap_or(&self.b.default_route)
    }

    /// Runs a call's job on its known outcome (a remote that returns it) and counts it.
    fn finish(&self, job: Job, outcome: Result<Vec<u8>, CallError>, start: Option<Instant>) {
        if let Some(call) = Call::of(job.meta()) {
            call.install(Remote::new(self.b.codec, move |_ctx, _request| outcome));
        }
        let status = job.run();
        self.stats.finished(status, start.map(|t| t.elapsed()));
    }

    /// Hands ended tasks to the calls waiting for them.
    fn deliver(&self, ends: Vec<Ended>) {
        let mut ready = Vec::new();
        {
            let mut pending = lock(&self.pending);
            for e in ends {
                if let Some(ws) = pending.remove(&e.id) {
                    ready.extend(ws.into_iter().map(|w| (w, e.clone())));
                }
            }
        }
        for (w, e) in ready {
            let out = outcome(&w.name, &e);
            self.finish(w.job, out, w.start);
        }
    }

    /// Cancels stored task `id` (unless it ended) and tells this process's executors.
    fn cancel(&self, id: i64) -> rusqlite::Result<bool> {
        let cancelled = self.hub.store().cancel(id)?;
        if cancelled {
            self.hub.ended(vec![Ended {
                id,
                state: Stored::Cancelled,
                result: None,
                last_error: None,
                last_kind: None,
            }]);
        }
        Ok(cancelled)
    }

    /// The storing thread: stores every call waiting in one transaction, then registers
    /// them as pending and rings this process's workers.
    fn store_loop(&self) {
        loop {
            {
                let mut q = lock(&self.to_store);
                while q.is_empty() && !self.closing.load(Ordering::SeqCst) {
                    q = self.to_store_cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                if self.closing.load(Ordering::SeqCst) {
                    // The shutdown ends what was not stored.
                    return;
                }
            }
            self.store_batch();
        }
    }

    fn store_batch(&self) {
        // Pending is held across the commit, so whoever reads an end of these tasks
        // (the watcher, under the same lock) finds them registered.
        let mut pending = lock(&self.pending);
        let was_empty = pending.is_empty();
        // The batch is taken once it is our turn to write: the calls that came while a
        // worker's round held the writer go in this commit too.
        let mut writer = self.hub.store();
        let batch = std::mem::take(&mut *lock(&self.to_store));
        let stored = {
            let tasks: Vec<&NewTask> = batch.iter().map(|t| &t.task).collect();
            writer.enqueue_many(&tasks)
        };
        drop(writer);
        let ids = match stored {
            Ok(ids) => ids,
            Err(e) => {
                drop(pending);
                for t in batch {
                    if let Some(r) = t.reply {
                        let _ = r.send(Err(e.to_string()));
                    }
                    let start = self.stats.started();
                    let out = Err(CallError::lost(
                        &t.task.name,
                        format!("could not store the task: {e}"),
                    ));
                    self.finish(t.job, out, start);
                }
                return;
            }
        };
        let mut keyed = Vec::new();
        for (t, id) in batch.into_iter().zip(ids) {
            if let Some(r) = t.reply {
                let _ = r.send(Ok(id));
            }
            if t.task.idem_key.is_some() {
                keyed.push(id);
            }
            pending.entry(id).or_default().push(Waiting {
                job: t.job,
                name: t.task.name,
                start: self.stats.started(),
            });
        }
        drop(pending);
        self.hub.stored();
        if was_empty && let Some(poke) = lock(&self.poke).as_ref() {
            let _ = poke.try_send(());
        }
        // An idempotent repeat may name a task that ended before.
        let ended: Vec<Ended> = keyed
            .into_iter()
            .filter_map(|id| lock(&self.store).get(id).ok().flatten())
            .filter(|r| r.state != Stored::Pending)
            .map(Ended::from)
            .collect();
        if !ended.is_empty() {
            self.deliver(ended);
        }
    }

    /// The watcher thread: hands ends that this process's workers push to the waiting
    /// calls, follows the `done` log for ends recorded by other processes (polling that
    /// backs off while it finds nothing), and cancels the tasks of cancelled handles.
    fn watch(
        &self,
        store: Store,
        inbox: Receiver<Vec<Ended>>,
        poke: Receiver<()>,
        mut cursor: i64,
    ) {
        let poll = self.b.poll;
        let mut idle = poll;
        let mut next_poll = Instant::now() + idle;
        let mut next_scan = Instant::now() + CANCEL_SCAN;
        while !self.closing.load(Ordering::SeqCst) {
            let timeout = next_poll
                .min(next_scan)
                .saturating_duration_since(Instant::now())
                .min(MAX_IDLE_POLL);
            crossbeam_channel::select! {
                recv(inbox) -> ends => {
                    if let Ok(ends) = ends {
                        self.deliver(ends);
                    }
                    for more in inbox.try_iter() {
                        self.deliver(more);
                    }
                }
                recv(poke) -> _ => {
                    idle = poll;
                    next_poll = next_poll.min(Instant::now() + idle);
                }
                default(timeout) => {}
            }
            let now = Instant::now();
            if now >= next_scan {
                self.cancel_scan();
                next_scan = now + CANCEL_SCAN;
            }
            if now >= next_poll {
                match self.poll_ended(&store, cursor) {
                    Ok((found, last)) => {
                        cursor = last;
                        idle = if found {
                            poll
                        } else {
                            (idle * 2).min(MAX_IDLE_POLL)
                        };
                    }
                    Err(e) => tracing_free_warn(&format!("cannot read finished tasks: {e}")),
                }
                next_poll = Instant::now() + idle;
            }
        }
    }

    /// Reads the ends logged after `cursor` and delivers those that calls wait for:
    /// whether there were any, and the new cursor.
    fn poll_ended(&self, store: &Store, cursor: i64) -> rusqlite::Result<(bool, i64)> {
        let (wanted, last) = {
            let pending = lock(&self.pending);
            if pending.is_empty() {
                // Nothing waits: skip what ended so far (calls stored later end later).
                return Ok((false, store.last_seq()?));
            }
            let (ids, last) = store.ended_ids_since(cursor)?;
            let wanted: Vec<i64> = ids
                .into_iter()
                .filter(|id| pending.contains_key(id))
                .collect();
            (wanted, last)
        };
        let mut ends = Vec::with_capacity(wanted.len());
        for id in wanted {
            if let Some(row) = store.get(id)? {
                ends.push(Ended::from(row));
            }
        }
        let found = !ends.is_empty();
        self.deliver(ends);
        Ok((found, last))
    }

    /// Cancels the stored tasks of handles cancelled (or timed out) while they wait.
    fn cancel_scan(&self) {
        let mut gone = Vec::new();
        {
            let mut pending = lock(&self.pending);
            pending.retain(|id, ws| {
                let mut i = 0;
                while i < ws.len() {
                    if ws[i].job.is_resolved() || ws[i].job.cancel_token().is_cancelled() {
                        gone.push((*id, ws.swap_remove(i)));
                    } else {
                        i += 1;
                    }
                }
                !ws.is_empty()
            });
        }
        for (id, w) in gone {
            let _ = self.cancel(id);
            let out = Err(CallError::lost(&w.name, format!("task {id} was cancelled")));
            self.finish(w.job, out, w.start);
        }
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
        self.stats.accepted();
        let req = match call.request(self.b.codec, job.id().as_u64(), job.attempt()) {
            Ok(req) => req,
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(e.to_string()));
                }
                let start = self.stats.started();
                self.finish(job, Err(e), start);
                return Ok(());
            }
        };
        let route = self.route(&req.name);
        let task = NewTask {
            name: req.name,
            key: job.meta().key().map(str::to_owned),
            idem_key: opts.idempotency_key,
            codec: req.codec.name(),
            payload: req.payload,
            max_attempts: route.attempts,
            backoff: route.backoff,
            concurrency: route.concurrency,
            key_concurrency: route.key_concurrency,
        };
        lock(&self.to_store).push(ToStore { task, job, reply });
        self.to_store_cv.notify_one();
        Ok(())
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
    /// [`DurableBackend::enqueue_job`]).
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
        Ok(self.inner.cancel(parse_id(id)?)?)
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
        if !inner.stats.wait_idle(deadline) {
            report.deadline_passed = true;
        }
        inner.closing.store(true, Ordering::SeqCst);
        inner.to_store_cv.notify_all();
        if let Some(poke) = lock(&inner.poke).take() {
            let _ = poke.try_send(());
        }
        for t in lock(&inner.threads).drain(..) {
            let _ = t.join();
        }
        // Calls not stored yet are dropped, not started.
        let unstored = std::mem::take(&mut *lock(&inner.to_store));
        let mut unstored = unstored.into_iter().map(|t| t.job);
        inner
            .unstarted
            .abandon_all(&inner.stats, || unstored.next());
        // Stored calls still waiting: the task stays queued, readable by id.
        let waiting: Vec<(i64, Waiting)> = lock(&inner.pending)
            .drain()
            .flat_map(|(id, ws)| ws.into_iter().map(move |w| (id, w)))
            .collect();
        for (id, w) in waiting {
            let out = Err(CallError::lost(
                &w.name,
                format!("the submitter shut down; task {id} stays queued (read it by id)"),
            ));
            inner.finish(w.job, out, w.start);
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
