//! switchyard backend: [`SqliteExecutor`], durable [named tasks](named_tasks) on one
//! SQLite file — the embedded default, no server.
//!
//! A call through it (`TASK.call(&exec, args)`, or through a supervisor whose policy
//! routes the task to `backend = "sqlite"`) is stored in the queue before anything runs
//! it. Any number of worker processes open the same file and run
//! [`SqliteExecutor::run_worker`] with the named tasks they know; each claims only those
//! names, under a lease it renews while the task runs. The caller's handle gets the
//! result, and [`DurableBackend::result`] reads it by id later, from any process.
//!
//! - **At least once, never completed twice**: a worker that dies (or stalls past its
//!   lease) loses its tasks to the next claim; every write of an outcome is guarded by
//!   the lease's owner and attempt, so a late outcome is dropped.
//! - **Retries with backoff, dead letters**: per task name ([`Builder::route`]), a
//!   failed attempt is retried after `backoff * 2^(n-1)` (with jitter) until the
//!   route's attempts, then dead-lettered with its last error
//!   ([`DurableBackend::dead_letters`]). Bad arguments are not retried. A task whose
//!   workers die three times is dead-lettered as a poison task.
//! - **Idempotency keys**: [`DurableExt::enqueue`] with [`Enqueue::key`] stores a key once.
//! - **Limits across workers**: a route's `concurrency` and `key_concurrency` (the task
//!   meta's key, `Task::call_keyed`) are counted over every worker's running tasks,
//!   inside the claim's write transaction.
//! - **Cancel by id** ([`DurableBackend::cancel`]), and cancelling the handle cancels the
//!   stored task; **drain**: a worker told to drain claims nothing more and records what
//!   it runs; [`SqliteExecutor::run_worker_until_signal`] drains on SIGTERM or SIGINT.
//!
//! The queue is SQLite in WAL mode (several processes share the file, one writer at a
//! time), `synchronous = NORMAL` by default: a commit survives `kill -9` of any process;
//! [`Durability::Full`] also survives a power cut. Calls are stored in group commits,
//! and a worker records the ends of a round of its tasks and claims its next batch in
//! one transaction.
//!
//! Within one process, nothing polls: a worker on the file is woken when calls are
//! stored, and the ends it records go straight to the waiting handles of every executor
//! of the process on that file (a handle waits in a table of pending task ids, not on a
//! thread). Work stored or ended by other processes is found by polling, which backs off
//! from [`Builder::poll`] to 50 ms while it finds nothing.
//!
//! The trait [`DurableBackend`] and the conformance suite this backend passes are in
//! `durable-testing`, shared with the NATS backend.
//!
//! ```
//! use durable_testing::{DurableBackend, DurableExt, Enqueue, WorkerControl};
//! use executor_sqlite::SqliteExecutor;
//! use named_tasks::{Task, Tasks};
//!
//! static DOUBLE: Task<u64, u64> = Task::new("math.double", |_ctx, x| Ok(x * 2));
//!
//! let dir = tempfile::tempdir()?;
//! let queue = SqliteExecutor::builder("durable").path(dir.path().join("q.sqlite3")).build()?;
//! let (id, handle) = queue.enqueue(&DOUBLE, 21, Enqueue::key("answer"))?;
//! let control = WorkerControl::new();
//! std::thread::scope(|s| {
//!     s.spawn(|| queue.run_worker(Tasks::new().with(&DOUBLE), &control));
//!     assert_eq!(handle.wait().unwrap(), 42);
//!     control.drain();
//! });
//! assert_eq!(queue.result(&id)?.unwrap().result.unwrap(), b"42");
//! # Ok::<(), executor_core::BoxError>(())
//! ```
#![forbid(unsafe_code)]

mod backend;
mod hub;
#[cfg(feature = "supervisor")]
mod registry;
mod store;
mod worker;

pub use backend::{BuildError, Builder, SqliteExecutor};
pub use durable_testing::{DurableBackend, DurableExt, Enqueue, RouteConfig, WorkerControl};
#[cfg(feature = "supervisor")]
pub use registry::{PATH_ENV, builder_from_policy, register, run_policy_worker};
pub use store::Durability;
