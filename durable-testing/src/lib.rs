//! switchyard durable backends: the [`DurableBackend`] trait they offer, and the shared
//! conformance suite ([`durable_tests!`]) every one of them (sqlite, nats) runs.
//!
//! A durable backend keeps named tasks somewhere that outlives the processes that
//! submit and run them. Submitters enqueue through an [`Executor`] (or
//! [`DurableExt::enqueue`], which also gives the task's durable id and takes an
//! idempotency key); any number of workers, in any process, run
//! [`DurableBackend::run_worker`] with the named tasks they know ([`Tasks`]) and claim
//! only those names. The submitter's [`TaskHandle`] gets the result; anybody can read it
//! later by id ([`DurableBackend::result`]).
//!
//! # What the suite checks
//!
//! With real worker threads on one store, each test with a fresh [`Setup`]:
//! results reach the handle and are readable by id from a restarted submitter; a task
//! fails, is retried after the route's backoff and succeeds; a task that keeps failing
//! is dead-lettered after the route's attempts with its last error; enqueueing twice with
//! one idempotency key gives one job that runs once; cancel by id before a worker claims
//! it; a killed worker's task comes back after the lease and completes once; a long task
//! extends its lease and runs once while another worker waits; a per-route concurrency
//! limit and a per-key limit hold across two workers; a drained worker finishes what it
//! runs and claims nothing more.
//!
//! # Implementing it
//!
//! The trait and the test types live in a crate that does not know your backend, so
//! wrap your backend in a small adapter in your test file (the orphan rule forbids
//! implementing a foreign trait for a foreign type there), and call the macro:
//!
//! ```ignore
//! struct Adapter(my_backend::Backend);
//! impl durable_testing::DurableBackend for Adapter { /* delegate */ }
//! fn open(setup: &durable_testing::Setup) -> Box<dyn durable_testing::DurableBackend> {
//!     Box::new(Adapter(my_backend::Backend::open(&setup.dir, /* routes ... */).unwrap()))
//! }
//! durable_testing::durable_tests!(open);
//! ```
//!
//! The factory is called again with the same [`Setup`] to model a restarted submitter or
//! another process: both instances must see the same tasks. Results are stored as JSON
//! ([`Record::result`] holds the JSON bytes of the task's value).
//!
//! A worker runs until its [`WorkerControl`] says drain (finish what runs, claim nothing
//! more, return) or kill (return at once and write nothing more, not even lease renewals
//! or outcomes of tasks still running on its threads: what `kill -9` does to a process).

use executor_core::{BoxError, Executor, Job, TaskHandle};
use named_tasks::{Args, Output, Task, Tasks};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

pub mod suite;

/// How the routes of one test are configured: the factory builds a backend with these.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Where the backend keeps its state (a fresh temporary directory per test; a backend
    /// with a server may use it only as a unique name).
    pub dir: PathBuf,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// Tasks one worker runs at once.
    pub slots: usize,
    /// Per task name: attempts, backoff, limits. A name not listed gets
    /// [`RouteConfig::new`]'s defaults.
    pub routes: Vec<RouteConfig>,
}

/// One route of a durable backend, by task name.
#[derive(Clone, Debug)]
pub struct RouteConfig {
    /// The task name.
    pub name: String,
    /// Attempts before the task is dead-lettered (at least 1).
    pub attempts: u32,
    /// The delay after the first failed attempt; it doubles per attempt.
    pub backoff: Duration,
    /// Tasks of this name running at once, across all workers.
    pub concurrency: Option<u32>,
    /// Tasks of this name with the same key running at once, across all workers.
    pub key_concurrency: Option<u32>,
}

impl RouteConfig {
    /// `name` with 3 attempts, a 10 ms backoff and no limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            attempts: 3,
            backoff: Duration::from_millis(10),
            concurrency: None,
            key_concurrency: None,
        }
    }
}

/// Options of one enqueue.
#[derive(Clone, Debug, Default)]
pub struct Enqueue {
    /// Enqueueing twice with the same key gives one task (the first one's id).
    pub idempotency_key: Option<String>,
}

impl Enqueue {
    /// With this idempotency key.
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
        }
    }
}

/// Where a durable task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Queued, running, or waiting for a retry.
    Pending,
    /// Done; [`Record::result`] holds the value.
    Succeeded,
    /// Dead-lettered after its attempts; [`Record::last_error`] says why.
    Dead,
    /// Cancelled by id before it completed.
    Cancelled,
}

/// A durable task as the store has it.
#[derive(Clone, Debug)]
pub struct Record {
    /// The state.
    pub state: State,
    /// The value, JSON-encoded, once succeeded.
    pub result: Option<Vec<u8>>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// Attempts made (an attempt cut short by a dead worker's lease does not count).
    pub attempts: u32,
}

/// A dead-lettered task.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its durable id.
    pub id: String,
    /// The task name.
    pub name: String,
    /// Attempts made.
    pub attempts: u32,
    /// The error of the last attempt.
    pub last_error: String,
}

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const KILL: u8 = 2;

/// Tells a running worker to stop: [`drain`](Self::drain) or [`kill`](Self::kill).
#[derive(Clone, Debug, Default)]
pub struct WorkerControl(Arc<AtomicU8>);

impl WorkerControl {
    /// A control that lets the worker run.
    pub fn new() -> Self {
        Self::default()
    }
    /// Claim nothing more, finish (and record) what runs, then return.
    pub fn drain(&self) {
        let _ = self
            .0
            .compare_exchange(RUN, DRAIN, Ordering::SeqCst, Ordering::SeqCst);
    }
    /// Return at once and write nothing more (as if the process died).
    pub fn kill(&self) {
        self.0.store(KILL, Ordering::SeqCst);
    }
    /// True once drain or kill was asked.
    pub fn is_stopping(&self) -> bool {
        self.0.load(Ordering::SeqCst) != RUN
    }
    /// True once kill was asked.
    pub fn is_killed(&self) -> bool {
        self.0.load(Ordering::SeqCst) == KILL
    }
}

/// What a durable backend offers: enqueue, read back, cancel, dead letters, workers.
pub trait DurableBackend: Send + Sync {
    /// The executor submitters call named tasks through (`TASK.call(&*exec, args)`): each
    /// call is enqueued durably and its handle resolves with the worker's result.
    /// Closures are refused.
    fn executor(&self) -> Arc<dyn Executor>;

    /// Enqueues a named task's job (built by [`DurableExt::enqueue`]) and returns its
    /// durable id once it is stored. With an idempotency key already known, the job is
    /// not stored again: the id is the first one's and the handle follows that task.
    fn enqueue_job(&self, job: Job, opts: Enqueue) -> Result<String, BoxError>;

    /// The task with this id, if the store knows it.
    fn result(&self, id: &str) -> Result<Option<Record>, BoxError>;

    /// Cancels the task unless it already ended; true if it was cancelled. A task that a
    /// worker runs is not interrupted, but its outcome is dropped.
    fn cancel(&self, id: &str) -> Result<bool, BoxError>;

    /// Every dead-lettered task.
    fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError>;

    /// Runs a worker with `tasks` (it claims only their names) until `control` says stop.
    fn run_worker(&self, tasks: Tasks, control: WorkerControl) -> Result<(), BoxError>;
}

/// Typed helpers over any [`DurableBackend`].
pub trait DurableExt: DurableBackend {
    /// Enqueues `task(args)`: its durable id and its handle.
    fn enqueue<A: Args, R: Output>(
        &self,
        task: &Task<A, R>,
        args: A,
        opts: Enqueue,
    ) -> Result<(String, TaskHandle<R>), BoxError> {
        let (job, handle) = task.job(args);
        Ok((self.enqueue_job(job, opts)?, handle))
    }
}

impl<B: DurableBackend + ?Sized> DurableExt for B {}

/// Generates one `#[test]` per check of the suite, each calling `$factory(&Setup)`.
#[macro_export]
macro_rules! durable_tests {
    ($factory:path) => {
        $crate::durable_tests!(@each $factory;
            results_reach_handle_and_id,
            results_readable_after_submitter_restart,
            retries_with_backoff_then_succeeds,
            dead_letter_keeps_last_error,
            idempotency_key_gives_one_job,
            cancel_by_id,
            killed_worker_task_comes_back_after_lease,
            long_task_extends_its_lease,
            route_limit_holds_across_workers,
            key_limit_holds_across_workers,
            drain_finishes_running_and_claims_nothing,
        );
    };
    (@each $factory:path; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::suite::$name(&$factory);
            }
        )*
    };
}
