//! switchyard supervisor: routes tasks to executors by a policy — a TOML policy file, or a
//! [`Policy`](executor_core::Policy) written in code — and runs them through each route's
//! layers: retries, timeouts, rate and concurrency limits, and layers of your own.
//!
//! A task says *what* it is — a [`TaskMeta`](executor_core::TaskMeta) with a name, tags
//! and a key such as a host. The policy file says *where* each kind of task runs (which
//! executor: a thread pool, a rayon pool, a tokio runtime, or a backend of your own) and
//! *how* (retries, timeout, limits). Moving work is a TOML edit, never a code edit.
//!
//! [`Supervisor`] is itself an [`Executor`](executor_core::Executor): code that takes a
//! `&dyn Executor` runs on it unchanged, and every
//! [`ExecutorExt`](executor_core::ExecutorExt) helper (`submit`, `run`, `run_async`,
//! `map`) works on it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use executor_core::{ExecutorExt, ShutdownMode, TaskMeta};
//! use supervisor::Supervisor;
//!
//! let sup = Supervisor::from_toml(r#"
//!     [executors.io]
//!     backend = "threads"
//!     workers = 4
//!
//!     [executors.cpu]
//!     backend = "rayon"
//!     threads = 2
//!
//!     [defaults]
//!     executor = "io"
//!
//!     [[route]]
//!     match = { tags = ["cpu"] }
//!     executor = "cpu"
//!     retries = { max = 2, backoff = "10ms" }
//! "#)?;
//!
//! // Where would a task go, and why?
//! let meta = TaskMeta::new("sum.squares").with_tag("cpu");
//! assert_eq!(sup.explain(&meta).executor(), "cpu");
//!
//! // Run it there; the closure may be re-run by the route's retries.
//! let sum = sup.run(meta, |ctx| {
//!     assert!(ctx.attempt() >= 1);
//!     Ok::<_, std::io::Error>((0..1_000u64).map(|i| i * i).sum::<u64>())
//! });
//! assert_eq!(sum.wait().unwrap(), 332_833_500);
//!
//! // Untagged work goes to the default executor.
//! let hello = sup.submit(|| "hello from io");
//! assert_eq!(hello.wait().unwrap(), "hello from io");
//!
//! // Every task is accounted for at shutdown.
//! let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(5)));
//! assert!(ledger.is_balanced());
//! assert_eq!(ledger.counts.completed, 2);
//! # Ok::<(), supervisor::ConfigError>(())
//! ```
//!
//! # A policy and layers in code
//!
//! The policy file is one [`Policy`](executor_core::Policy); [`Supervisor::builder`] takes
//! any other, with named executors (any `Arc<dyn Executor>`, e.g. a `TokioExecutor` over
//! your application's runtime) and [`Layer`]s. The policy routes each task to a
//! [`Route`](executor_core::Route) (an executor and a rule name) and
//! [observes](executor_core::Policy::observe) how each one ended — status, attempts, wall
//! time and, when it [asks](executor_core::Policy::wants_cpu_time), the CPU time its
//! attempts used. A layer wraps a route's [`Service`] stack: [`layer`](SupervisorBuilder::layer)
//! puts it on every route, [`route_layer`](SupervisorBuilder::route_layer) on the routes of
//! one rule name. See `examples/custom_policy.rs` and `examples/circuit_breaker.rs`.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use executor_core::{ExecutorExt, InlineExecutor, Job, Outcome, Policy, Route, TaskMeta};
//! use supervisor::{Layer, LayerContext, Service, Supervisor};
//!
//! /// Everything to one executor; counts failures.
//! struct OnePlace { route: Route, failed: AtomicU64 }
//! impl Policy for OnePlace {
//!     fn route(&self, _meta: &TaskMeta) -> &Route { &self.route }
//!     fn observe(&self, _meta: &TaskMeta, outcome: &Outcome) {
//!         if !outcome.status().is_success() { self.failed.fetch_add(1, Ordering::Relaxed); }
//!     }
//! }
//!
//! /// A layer that counts the attempts it passes on.
//! struct Count(Arc<AtomicU64>);
//! impl Layer for Count {
//!     fn layer(&self, inner: Arc<dyn Service>, _cx: &LayerContext<'_>) -> Arc<dyn Service> {
//!         let n = self.0.clone();
//!         Arc::new(move |job: Job| {
//!             n.fetch_add(1, Ordering::Relaxed);
//!             inner.dispatch(job)
//!         })
//!     }
//! }
//!
//! let policy = Arc::new(OnePlace { route: Route::new("here", "all"), failed: AtomicU64::new(0) });
//! let attempts = Arc::new(AtomicU64::new(0));
//! let sup = Supervisor::builder()
//!     .executor("here", Arc::new(InlineExecutor::new("here")))
//!     .shared_policy(policy.clone())
//!     .layer(Count(attempts.clone()))
//!     .build()?;
//! assert_eq!(sup.submit(|| 1 + 1).wait().unwrap(), 2);
//! let bad = sup.run_once(TaskMeta::new("bad"), |_| Err::<(), _>("no"));
//! assert!(bad.wait().is_err());
//! assert_eq!(policy.failed.load(Ordering::Relaxed), 1);
//! assert_eq!(attempts.load(Ordering::Relaxed), 2);
//! # Ok::<(), supervisor::ConfigError>(())
//! ```
//!
//! # The path of a task
//!
//! `execute` passes the supervisor's admission gate (closed at shutdown), counts the task
//! in the ledger, asks the policy for its route, and hands the job to that route's service
//! stack: the layers added in code, then the file's timeout, retries and limit, then the
//! executor. A route without layers is a table lookup and a direct `execute`. Each layer
//! may install hooks on the job for one attempt (a failure hook to retry, an attempt-end
//! hook to give back a limit slot, a run hook to enter the task's span); hooks compose, so
//! every layer sees every attempt. The task's handle resolves when the executor finishes
//! it (or a layer ends it), and the ledger and the policy's `observe` hear of it first.
//!
//! # The policy file
//!
//! Unknown keys are errors everywhere. Every error names the file, the line and column
//! and what was expected, and happens before any executor starts:
//!
//! ```text
//! policy.toml:12:12: unknown executor "gpu" in route 2; expected one of: cpu, io, net
//! ```
//!
//! ## `[executors.NAME]` — one table per executor
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `backend` | string | required | a registered backend: `"threads"`, `"rayon"`, `"tokio"`, or your own |
//!
//! The other keys belong to the backend:
//!
//! | backend | key | type | default | meaning |
//! |---|---|---|---|---|
//! | `threads` | `workers` | integer ≥ 1 | 4 | OS worker threads |
//! | `threads` | `queue` | integer ≥ 1 | unbounded | queue capacity |
//! | `threads` | `on_full` | `"block"` \| `"reject"` \| `"caller-runs"` | `"block"` | what a full queue does |
//! | `rayon` | `threads` | integer | 0 | pool threads; 0 = one per core |
//! | `tokio` | `worker_threads` | integer | 0 | runtime workers; 0 = one per core |
//! | `tokio` | `max_blocking_threads` | integer ≥ 1 | 512 | blocking pool size |
//!
//! ## `[defaults]` — the catch-all route
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `executor` | string | required | executor for tasks no `[[route]]` matches |
//! | `timeout` | duration or `"none"` | none | see below |
//! | `retries` | table | none | see below |
//! | `limit` | table | none | see below |
//! | `priority` | integer -128..=127 | none (0) | see below |
//!
//! ## `[[route]]` — ordered rules; the first match wins
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `match` | table | required | `{ name = "glob", tags = ["a", "b"] }`; both optional, `{}` matches all |
//! | `match.name` | glob | any name | the task name, e.g. `"scrape.*"`, `"job.{mail,hook}"` |
//! | `match.tags` | list of strings | `[]` | tags the task must all carry |
//! | `executor` | string | `[defaults]`'s | where matching tasks run; `"auto"` learns it (below) |
//! | `auto` | `{ io = "NAME", cpu = "NAME", blocking = "NAME" }` | required with `executor = "auto"` (`blocking` optional) | the executors auto placement picks from |
//! | `timeout`, `retries`, `limit`, `priority` | as in `[defaults]` | `[defaults]`'s | a key left out is inherited |
//!
//! Routing is total: a task no rule matches takes `[defaults]`. [`Supervisor::explain`]
//! says which rule matched and why the earlier ones did not. Rules are named `defaults`
//! and `route[N]` (1-based), the names [`SupervisorBuilder::route_layer`] takes.
//!
//! ## Values
//!
//! - **duration**: a string such as `"30s"`, `"100ms"`, `"1m 30s"` (humantime).
//! - **`timeout`**: how long the caller waits at most, counted from submission and across
//!   retries; at the deadline the handle resolves as timed out and the task's context
//!   reports it cancelled. `"none"` switches an inherited timeout off.
//! - **`retries`** = `{ max, backoff, max_backoff, jitter }`: `max` (integer 0–1000,
//!   required) re-runs after an error or a panic, so at most `max + 1` attempts;
//!   `backoff` (duration, default `"100ms"`) before the first retry, doubling each time up
//!   to `max_backoff` (default `"10s"`); `jitter` (bool, default `true`) picks each wait
//!   uniformly in `[0, wait]`. Only tasks submitted with `run`/`run_async` (whose closure
//!   can run again) are retried; the attempt number is in
//!   [`TaskContext::attempt`](executor_core::TaskContext::attempt) and in the log.
//! - **`limit`** = `{ per, concurrency, rate }`: `per` is `"key"` (default: each task key,
//!   e.g. each host, has its own budget; tasks without a key share one) or `"route"` (one
//!   budget for the route); `concurrency` (integer ≥ 1) caps tasks running at once;
//!   `rate` (`"20/s"`, `"100/min"`, `"5/10s"`; units `ms`, `s`, `m`/`min`, `h`, or any
//!   duration; zero is an error) spaces task starts evenly. At least one of the two.
//!   A task waiting for its limit sits in the supervisor, per key in order of
//!   [`TaskMeta::priority`](executor_core::TaskMeta::priority) (FIFO among equals), with
//!   aging: each 8 tasks served raise a waiting task by one level, so a low priority
//!   waits a bounded number of turns. It holds no worker thread and the caller of
//!   `execute` does not wait.
//! - **`priority`** (integer -128..=127): the priority of the route's tasks, for the
//!   queues that serve by priority (limit waits, retries due at once, the `threads`
//!   backend's queue; higher first, with aging). Precedence: a task's own
//!   [`TaskMeta::with_priority`](executor_core::TaskMeta::with_priority), else the
//!   matching `[[route]]`'s `priority`, else `[defaults]`'s (inherited like every key),
//!   else 0.
//!
//! ## `executor = "auto"` and `[auto]` — placement that learns
//!
//! A route with `executor = "auto"` and `auto = { io = "io", cpu = "cpu" }` sends each task
//! *name* where its past runs say it belongs ([`auto`] module): per name, a decayed average
//! of `cpu / (cpu + blocked)` over its runs, where *blocked* is time its thread spent off
//! the CPU by the task's own doing (sleeping, I/O, locks) and not time waiting for a CPU,
//! so a busy machine does not make a computation look like I/O. A name runs on the I/O
//! executor until it has `min_samples` runs, then goes to the CPU executor at a share of
//! `cpu_above` or more and back at `io_below` or less (hysteresis); each change is logged
//! once. For an async task, the wait between two polls counts as blocked (it awaits I/O
//! or a timer). Tasks that held a worker of a pool whose threads must not block (a tokio
//! runtime's worker held by a poll of `poll_threshold` or more; a rayon thread by a run
//! blocked `block_threshold` or more) are counted per name. A name whose polls keep
//! holding their worker (half its recent async runs or more, after `min_samples`; back
//! below a quarter) is flagged as blocking and runs on a thread: on the rule's
//! `blocking` executor when named, else on its I/O executor with the job marked
//! [`Job::set_on_thread`](executor_core::Job::set_on_thread) (tokio then drives it on its
//! blocking pool). [`Supervisor::explain`] shows
//! it, e.g. `auto: report.build measured CPU/wall 0.93 over 412 runs → cpu`;
//! [`Supervisor::learned`] lists every name; [`Supervisor::learner`] saves and loads it as
//! JSON, and a reload keeps it.
//!
//! | key in `[auto]` | type | default |
//! |---|---|---|
//! | `cpu_above`, `io_below` | 0..=1, `io_below <= cpu_above` | 0.7, 0.4 |
//! | `min_samples` | integer ≥ 1 | 5 |
//! | `decay` | weight of a new sample, (0, 1] | 0.2 |
//! | `poll_threshold`, `block_threshold` | duration | `"10ms"`, `"10ms"` |
//!
//! # Reload and watch
//!
//! [`Supervisor::reload`] (or [`Supervisor::watch`] on the file) swaps the whole policy
//! atomically while tasks run. Tasks already submitted keep the route they were given,
//! retries included. Executors whose table did not change keep running; limiter budgets
//! of unchanged routes carry over. A bad file is rejected with its error, logged, and the
//! old policy stays.
//!
//! # Shutdown ledger
//!
//! [`Supervisor::shutdown_ledger`] stops taking tasks, lets the work finish within the
//! deadline, then drops what never started and reports every task:
//! `submitted == completed + failed + panicked + cancelled + timed_out + rejected +
//! not_started (+ still_running)`, listing the tasks that never ran by id and name. Every
//! handle resolves. [`Executor::shutdown`](executor_core::Executor::shutdown) does the
//! same and returns the ledger in executor-core's report shape.
//!
//! # Queue mode
//!
//! [`TaskQueue`] is the mini framework's queue: producers push tasks, a supervisor thread
//! routes each one, records how it ended (failures are logged as they happen), and
//! [`TaskQueue::close`] drains everything pushed before it into a [`QueueReport`] that
//! names the executor each task ran on.
//!
//! # Observability
//!
//! With a `tracing` subscriber installed, every attempt of a task on a route with layers
//! runs inside a `task` span (entered by a run hook on the job: whether a subscriber is
//! installed changes nothing else, counts included) with its `id`, `name`, `executor`, `rule` and `attempt`, so
//! the task's own log lines carry them; retries are logged with the attempt number and the
//! backoff, reloads and rejected reloads with the file. [`Supervisor::executor_stats`]
//! gives per-executor counters and latency for summary tables.
//!
//! # Backends and features
//!
//! Backends come from a [`Registry`] of factories keyed by the `backend` string. The
//! built-in `threads`, `rayon` and `tokio` backends sit behind Cargo features of the same
//! names (all on by default); another crate adds its own with [`Registry::register`] and
//! [`Supervisor::with_registry`].
#![deny(unsafe_code)] // One exception: reading the kernel's clocks (`clock.rs`).

pub mod auto;
mod clock;
pub mod config;
pub mod layer;
mod ledger;
mod outcome;
mod queue;
mod registry;
pub mod routing;
mod scheduler;
mod supervisor;
mod timers;
mod watch;

pub use auto::{AutoSettings, Class, Learned, Learner};
pub use config::{BackendOptions, ConfigError, PolicyConfig, RouteSpec};
pub use layer::{Layer, LayerContext, Limit, LimitScope, Rate, RetryPolicy, Service, Timeout};
pub use ledger::{LedgerCounts, ShutdownLedger};
pub use queue::{Finished, Producer, QueueReport, TaskQueue};
pub use registry::{BackendFactory, ExecutorPlan, Registry};
pub use supervisor::{Supervisor, SupervisorBuilder};
