//! switchyard backend: [`ProcessExecutor`], a pool of worker processes that run
//! [named tasks](named_tasks) — crash isolation, memory isolation, recycling.
//!
//! A task that segfaults, calls `abort()`, leaks without bound or calls a C library that
//! is not thread-safe takes down only its worker process: its handle resolves with an
//! error that names the cause (the signal or the exit code, and the task's name), the
//! worker is replaced, and every other task goes on. The policy moves a named task here
//! and back without touching its code.
//!
//! # The worker hook
//!
//! Workers run **your own binary**, re-executed in worker mode, as Python's
//! multiprocessing does with `spawn`. Make [`worker_hook`] the first line of `main`,
//! listing the named tasks workers may run:
//!
//! ```no_run
//! use executor_core::{Executor, ShutdownMode};
//! use executor_process::ProcessExecutor;
//! use named_tasks::{NamedExt, Task, Tasks};
//!
//! static SQUARES: Task<u64, u128> = Task::new("math.squares", |_ctx, n: u64| {
//!     Ok((0..n).map(|i| u128::from(i) * u128::from(i)).sum())
//! });
//!
//! fn main() {
//!     executor_process::worker_hook(|| Tasks::new().with(&SQUARES)); // in a worker: never returns
//!
//!     let pool = ProcessExecutor::builder("cpu").workers(2).build().unwrap();
//!     assert_eq!(pool.call(&SQUARES, 1_000).wait().unwrap(), 332_833_500);
//!     pool.shutdown(ShutdownMode::Now);
//! }
//! ```
//!
//! The pool starts `std::env::current_exe()` (or [`Builder::program`]) with the
//! environment variable `SWITCHYARD_PROCESS_WORKER` set; the hook sees it, answers
//! requests on its stdin/stdout and exits when the pool closes its stdin. Whatever a
//! task prints to stdout goes to stderr, and a worker's stderr is copied to the parent's
//! with a `[worker PID]` prefix. A pool refuses to start inside a worker, so a binary
//! that forgot the hook fails with an error that says so instead of spawning pools.
//!
//! # What runs here
//!
//! Only named tasks: a closure cannot leave its process, and is refused with an error
//! that says so (counted as rejected). Each worker runs one task at a time. The call's
//! arguments travel in the [`wire`](named_tasks::wire) form over the worker's pipes, as
//! length-prefixed frames, encoded with the pool's codec (JSON, or MessagePack).
//!
//! # Failures, timeouts, shutdown
//!
//! - A task's own error and a panic come back as in-process: failed (with a
//!   [`CallError`](named_tasks::CallError) carrying the message) or panicked (with its
//!   message).
//! - A worker that dies while running a task (a signal such as `SIGSEGV` or `SIGABRT`,
//!   `SIGKILL` from outside, an exit code, the memory limit) fails the task with a
//!   `CallError` whose `is_crash()`, `signal()` and `exit_code()` say what happened; its
//!   message gives the worker's pid and last line of stderr, and names the memory limit
//!   when an allocation failed under it. The next task gets a fresh worker.
//! - A timeout or a cancelled handle kills the worker process running the task.
//! - Retries, timeouts and limits are the supervisor's, as for any backend; stats and
//!   the shutdown ledger are core's.
//! - [`Executor::shutdown`](executor_core::Executor::shutdown) ends every worker
//!   process before it returns. `Graceful(d)` lets queued and running tasks finish for
//!   up to `d`; past it, and at once for `Now`, queued tasks are dropped (not started)
//!   and the workers of running tasks are killed (cancelled) — unlike threads, a process
//!   can be stopped safely, so nothing is left running.
//! - Workers die with the pool: each is started with `PR_SET_PDEATHSIG` = `SIGKILL`
//!   (tied to its dispatcher thread, which lives as long as the worker), and exits on
//!   EOF of its stdin.
//!
//! These guarantees are the ones every executor of named tasks keeps: `tests/conformance.rs`
//! runs the shared suite of `named-tasks` (feature `testing`) on a pool of two workers.
//!
//! # Policy
//!
//! With the `supervisor` feature, `register` adds `backend = "process"` to a
//! supervisor's registry, with the keys `workers`, `max_tasks_per_child`,
//! `memory_limit`, `start_timeout` and `codec`.
#![deny(unsafe_code)]

mod pool;
#[cfg(feature = "supervisor")]
mod registry;
mod sys;
mod worker;

pub use pool::{BuildError, Builder, ProcessExecutor};
#[cfg(feature = "supervisor")]
pub use registry::register;
pub use worker::{is_worker, worker_hook, worker_pool_name};
