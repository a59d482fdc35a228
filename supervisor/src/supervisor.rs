//! [`Supervisor`]: an executor that routes each job by the policy and wraps it in the
//! route's layers (timeout, retries, limits) before handing it to the chosen executor.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use executor_core::{
    CancelToken, Executor, ExecutorStats, Job, LimitScope, Policy, RetryPolicy, Route,
    ShutdownMode, ShutdownReport, SubmitError, TaskError, TaskMeta,
};
use tracing::Instrument;

use crate::config::{ConfigError, ExecutorConfig, PolicyConfig};
use crate::ledger::{Ledger, LedgerCounts, ShutdownLedger};
use crate::limit::{Admit, Limiter};
use crate::registry::{ExecutorPlan, Registry};
use crate::routing::Explanation;
use crate::timers::Timers;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes tasks to executors by a policy file and applies the route's retries, timeout
/// and limits around whichever executor runs them. Used as `Arc<Supervisor>`; it is an
/// [`Executor`] itself, so code that takes `&dyn Executor` runs on it unchanged.
///
/// See the [crate docs](crate) for an example and the policy file reference.
pub struct Supervisor {
    name: String,
    registry: Registry,
    table: ArcSwap<Table>,
    core: Arc<Core>,
    closed: AtomicBool,
    /// Every executor built so far, current and retired by reloads (shut down at the end).
    all_executors: Mutex<Vec<Arc<dyn Executor>>>,
    /// Every limiter made so far (their queues are swept at shutdown).
    all_limiters: Mutex<Vec<Arc<Limiter<Held>>>>,
    reload_lock: Mutex<()>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    report: Mutex<Option<ShutdownLedger>>,
    pub(crate) watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

/// What hooks on worker threads and the scheduler thread share.
struct Core {
    ledger: Arc<Ledger>,
    timers: Timers<Timed>,
    /// Set at shutdown: failed attempts are no longer retried.
    closing: AtomicBool,
    /// Retries waiting out their backoff.
    retries_pending: AtomicU64,
}

/// One version of the policy, compiled: what `execute` reads (swapped whole on reload).
struct Table {
    config: Arc<PolicyConfig>,
    rules: Vec<Arc<Compiled>>,
    default: Arc<Compiled>,
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

/// A route with its executor and limiter resolved. A task keeps the one it was routed by
/// for its whole life, retries included, even across reloads.
struct Compiled {
    route: Arc<Route>,
    executor: Arc<dyn Executor>,
    limiter: Option<Arc<Limiter<Held>>>,
    /// Whether any layer applies; if not, jobs go straight to the executor.
    layered: bool,
}

/// A job the supervisor holds: waiting for a limit, or for its next attempt.
struct Held {
    job: Job,
    route: Arc<Compiled>,
    /// The error of the previous attempt, for a retry (ends the task at shutdown).
    last_error: Option<TaskError>,
}

/// Work for the scheduler thread.
enum Timed {
    /// A retry whose backoff is over.
    Retry(Held),
    /// Let waiting jobs of `key` under `route`'s limiter go, if the limits allow.
    Wake {
        route: Arc<Compiled>,
        key: String,
        timer: bool,
    },
    /// A task's deadline: expire its token (the handle resolves as timed out).
    Expire(Arc<Mutex<Option<CancelToken>>>),
}

fn timed_alive(t: &Timed) -> bool {
    match t {
        Timed::Expire(slot) => lock(slot).is_some(),
        _ => true,
    }
}

/// Releases a limiter slot when the attempt that holds it ends (or is dropped unrun).
struct SlotGuard {
    core: Arc<Core>,
    route: Arc<Compiled>,
    limiter: Arc<Limiter<Held>>,
    key: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if self.limiter.release(&self.key) {
            let _ = self.core.timers.now(Timed::Wake {
                route: self.route.clone(),
                key: std::mem::take(&mut self.key),
                timer: false,
            });
        }
    }
}

impl Table {
    #[inline]
    fn select(&self, meta: &TaskMeta) -> &Arc<Compiled> {
        match self.config.select_index(meta.name(), |t| meta.has_tag(t)) {
            Some(i) => &self.rules[i],
            None => &self.default,
        }
    }

    /// The running executor that `exec` describes, if this table has one just like it.
    fn reusable(&self, exec: &ExecutorConfig) -> Option<Arc<dyn Executor>> {
        let old = self
            .config
            .executors()
            .iter()
            .find(|e| e.name() == exec.name())?;
        if old.same_as(exec) {
            self.executors.get(exec.name()).cloned()
        } else {
            None
        }
    }
}

enum Plan {
    Reuse(Arc<dyn Executor>),
    Build(ExecutorPlan),
}

impl Supervisor {
    /// A supervisor for `config` with the built-in backends.
    pub fn new(config: PolicyConfig) -> Result<Arc<Self>, ConfigError> {
        Self::with_registry(config, Registry::with_builtins())
    }

    /// Reads the policy file at `path` and starts its executors (built-in backends).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Arc<Self>, ConfigError> {
        Self::new(PolicyConfig::from_file(path)?)
    }

    /// Parses a policy given as text and starts its executors (built-in backends). Errors
    /// name the text `<inline policy>`.
    pub fn from_toml(text: &str) -> Result<Arc<Self>, ConfigError> {
        Self::new(PolicyConfig::parse(text, "<inline policy>")?)
    }

    /// A supervisor for `config` whose backends come from `registry`. Every executor's
    /// options are checked before any executor is built.
    pub fn with_registry(
        config: PolicyConfig,
        registry: Registry,
    ) -> Result<Arc<Self>, ConfigError> {
        let core = Arc::new(Core {
            ledger: Arc::new(Ledger::default()),
            timers: Timers::new(timed_alive),
            closing: AtomicBool::new(false),
            retries_pending: AtomicU64::new(0),
        });
        let (table, built) = compile(&registry, config, None)?;
        let limiters = table_limiters(&table);
        let scheduler = {
            let core = core.clone();
            std::thread::Builder::new()
                .name("supervisor-scheduler".into())
                .spawn(move || core.run_scheduler())
                .map_err(|e| {
                    ConfigError::new(
                        crate::config::Kind::Build,
                        table.config.origin(),
                        format!("cannot start the scheduler thread: {e}"),
                    )
                })
        };
        let scheduler = match scheduler {
            Ok(h) => h,
            Err(e) => {
                for exec in &built {
                    exec.shutdown(ShutdownMode::Now);
                }
                return Err(e);
            }
        };
        tracing::info!(
            policy = %table.config.origin().display(),
            executors = table.executors.len(),
            routes = table.rules.len(),
            "supervisor started"
        );
        Ok(Arc::new(Supervisor {
            name: "supervisor".to_owned(),
            registry,
            table: ArcSwap::from_pointee(table),
            core,
            closed: AtomicBool::new(false),
            all_executors: Mutex::new(built),
            all_limiters: Mutex::new(limiters),
            reload_lock: Mutex::new(()),
            scheduler: Mutex::new(Some(scheduler)),
            report: Mutex::new(None),
            watcher: Mutex::new(None),
        }))
    }

    /// The policy now in force.
    pub fn policy(&self) -> Arc<PolicyConfig> {
        self.table.load().config.clone()
    }

    /// Which route a task takes and why: the rule that matched, and why the rules before
    /// it did not.
    pub fn explain(&self, meta: &TaskMeta) -> Explanation {
        self.table.load().config.explain(meta)
    }

    /// The executor called `name` in the policy now in force.
    pub fn executor(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.table.load().executors.get(name).cloned()
    }

    /// Each executor of the policy now in force, by name, with its stats (for summary tables).
    pub fn executor_stats(&self) -> Vec<(String, ExecutorStats)> {
        self.table
            .load()
            .executors
            .iter()
            .map(|(name, e)| (name.clone(), e.stats()))
            .collect()
    }

    /// The supervisor's ledger so far: tasks submitted and how many ended each way.
    pub fn ledger(&self) -> LedgerCounts {
        self.core.ledger.snapshot()
    }

    /// Replaces the policy with the file at `path`, atomically, while tasks run. Tasks
    /// already submitted keep the route they were given. Executors whose table is
    /// unchanged keep running; changed or new ones are built. A bad file is rejected with
    /// its error (also logged) and the old policy stays in force.
    pub fn reload(&self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let result = PolicyConfig::from_file(path).and_then(|c| self.apply(c));
        if let Err(e) = &result {
            tracing::error!(error = %e, "policy reload rejected; the old policy stays");
        }
        result
    }

    /// [`reload`](Self::reload) from text; `origin` names it in errors.
    pub fn reload_str(&self, text: &str, origin: impl AsRef<Path>) -> Result<(), ConfigError> {
        let result = PolicyConfig::parse(text, origin).and_then(|c| self.apply(c));
        if let Err(e) = &result {
            tracing::error!(error = %e, "policy reload rejected; the old policy stays");
        }
        result
    }

    /// Swaps in a validated policy (see [`reload`](Self::reload)).
    pub fn apply(&self, config: PolicyConfig) -> Result<(), ConfigError> {
        let _serial = lock(&self.reload_lock);
        if self.closed.load(Ordering::Acquire) {
            return Err(ConfigError::new(
                crate::config::Kind::Build,
                config.origin(),
                "the supervisor is shut down; the policy was not applied",
            ));
        }
        let old = self.table.load_full();
        let (table, built) = compile(&self.registry, config, Some(&old))?;
        let origin = table.config.origin().display().to_string();
        let routes = table.rules.len();
        lock(&self.all_limiters).extend(table_limiters(&table));
        lock(&self.all_executors).extend(built);
        self.table.store(Arc::new(table));
        tracing::info!(policy = %origin, routes, "policy reloaded");
        Ok(())
    }

    /// Stops taking tasks and ends everything, then reports every task.
    ///
    /// `Graceful(d)`: waits up to `d` for submitted tasks (queued, waiting for a limit or
    /// a retry) to end; past it, tasks that have not started are dropped (listed in
    /// [`ShutdownLedger::never_ran`]), pending retries end with their last error, and
    /// running tasks are asked to stop. `Now` does that at once. Every handle resolves.
    /// Calling it again returns the first report.
    ///
    /// [`Executor::shutdown`] does the same and returns the ledger in executor-core's
    /// shape (the counts in `stats`, the tasks that never ran in `not_started`).
    pub fn shutdown_ledger(&self, mode: ShutdownMode) -> ShutdownLedger {
        let mut report = lock(&self.report);
        if let Some(r) = &*report {
            return r.clone();
        }
        self.closed.store(true, Ordering::Release);
        // A reload in progress finishes before the executors are collected below, and
        // later ones see `closed`.
        drop(lock(&self.reload_lock));
        drop(lock(&self.watcher).take());
        let deadline = Instant::now() + mode.deadline();
        let ledger = &self.core.ledger;
        if matches!(mode, ShutdownMode::Graceful(_)) {
            while ledger.unresolved() > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let deadline_passed = ledger.unresolved() > 0;

        // No more retries or scheduling; end what the supervisor holds.
        self.core.closing.store(true, Ordering::Release);
        let leftovers = self.core.timers.close();
        if let Some(h) = lock(&self.scheduler).take() {
            let _ = h.join();
        }
        let mut held = Vec::new();
        for t in leftovers {
            if let Timed::Retry(h) = t {
                self.core.retries_pending.fetch_sub(1, Ordering::AcqRel);
                held.push(h);
            }
        }
        let limiters = lock(&self.all_limiters).clone();
        for l in &limiters {
            held.extend(l.take_all());
        }
        end_held(held);

        // Shut the executors down, in parallel, within what is left of the deadline.
        let mode = match mode {
            ShutdownMode::Now => ShutdownMode::Now,
            ShutdownMode::Graceful(_) => {
                ShutdownMode::Graceful(deadline.saturating_duration_since(Instant::now()))
            }
        };
        let executors = lock(&self.all_executors).clone();
        let reports: Vec<ShutdownReport> = std::thread::scope(|s| {
            let joins: Vec<_> = executors
                .iter()
                .map(|e| s.spawn(move || e.shutdown(mode)))
                .collect();
            joins.into_iter().filter_map(|j| j.join().ok()).collect()
        });
        // Jobs that raced the first sweep (admitted while it ran) end here.
        let mut late = Vec::new();
        for l in &limiters {
            late.extend(l.take_all());
        }
        end_held(late);
        // Handles resolve as their executors drop or finish them; give the observers a
        // moment to run on the threads that resolve them.
        let settle = Instant::now() + Duration::from_millis(200);
        while ledger.unresolved() > 0 && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(1));
        }
        let counts = ledger.snapshot();
        let r = ShutdownLedger {
            counts,
            still_running: counts.submitted.saturating_sub(counts.ended()),
            never_ran: ledger.never_ran(),
            deadline_passed: deadline_passed || reports.iter().any(|r| r.deadline_passed),
            executors: reports,
        };
        tracing::info!(ledger = %r, "supervisor shut down");
        *report = Some(r.clone());
        r
    }
}

/// Ends held jobs at shutdown: a pending retry ends with its last error; a job that never
/// ran is dropped (its handle resolves as not started, and the ledger lists it).
fn end_held(held: Vec<Held>) {
    for h in held {
        match h.last_error {
            Some(err) => {
                h.job.resolve(err);
            }
            None => drop(h.job),
        }
    }
}

fn table_limiters(table: &Table) -> Vec<Arc<Limiter<Held>>> {
    table
        .rules
        .iter()
        .chain(std::iter::once(&table.default))
        .filter_map(|c| c.limiter.clone())
        .collect()
}

/// Builds a table for `config`, reusing executors (and limiters of unchanged routes) from
/// `old`. Checks every executor's options before building any; returns the table and the
/// executors it built.
fn compile(
    registry: &Registry,
    config: PolicyConfig,
    old: Option<&Table>,
) -> Result<(Table, Vec<Arc<dyn Executor>>), ConfigError> {
    let mut plans = Vec::new();
    for exec in config.executors() {
        match old.and_then(|o| o.reusable(exec)) {
            Some(running) => plans.push(Plan::Reuse(running)),
            None => plans.push(Plan::Build(registry.prepare_one(&config, exec)?)),
        }
    }
    let mut executors = BTreeMap::new();
    let mut built: Vec<Arc<dyn Executor>> = Vec::new();
    for (exec, plan) in config.executors().iter().zip(plans) {
        let e = match plan {
            Plan::Reuse(e) => e,
            Plan::Build(p) => match p() {
                Ok(e) => {
                    built.push(e.clone());
                    e
                }
                Err(err) => {
                    for b in &built {
                        b.shutdown(ShutdownMode::Now);
                    }
                    return Err(exec.options().build_error(err));
                }
            },
        };
        executors.insert(exec.name().to_owned(), e);
    }
    let compile_one = |route: &Arc<Route>, previous: Option<&Arc<Compiled>>| {
        let executor = executors
            .get(&route.executor)
            .cloned()
            .expect("validation checked every route's executor");
        let limiter = route.limit.map(|limit| {
            match previous.filter(|p| p.route.limit == route.limit && p.route.rule == route.rule) {
                Some(p) => p.limiter.clone().expect("same limit, same limiter"),
                None => Arc::new(Limiter::new(
                    limit.concurrency.map(|c| c.get()),
                    limit.rate.map(|r| r.interval()),
                )),
            }
        });
        Arc::new(Compiled {
            layered: route.retry.is_some() || route.timeout.is_some() || limiter.is_some(),
            route: route.clone(),
            executor,
            limiter,
        })
    };
    let rules = config
        .routes()
        .iter()
        .enumerate()
        .map(|(i, r)| compile_one(r.route(), old.and_then(|o| o.rules.get(i))))
        .collect();
    let default = compile_one(config.defaults(), old.map(|o| &o.default));
    Ok((
        Table {
            config: Arc::new(config),
            rules,
            default,
            executors,
        },
        built,
    ))
}

fn limit_key(route: &Route, meta: &TaskMeta) -> String {
    match route.limit.map(|l| l.scope) {
        Some(LimitScope::Key) => meta.key().unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

impl Core {
    fn run_scheduler(self: Arc<Self>) {
        while let Some(batch) = self.timers.next_batch() {
            for item in batch {
                // A panic here (in a backend's `execute`, say) must not stop the thread
                // every pending retry, wake-up and deadline depends on.
                let run = std::panic::AssertUnwindSafe(|| self.handle(item));
                if let Err(payload) = std::panic::catch_unwind(run) {
                    tracing::error!(
                        panic = executor_core::panic_message(&*payload),
                        "the supervisor's scheduler caught a panic"
                    );
                }
            }
        }
    }

    fn handle(self: &Arc<Self>, item: Timed) {
        match item {
            Timed::Retry(held) => {
                self.retries_pending.fetch_sub(1, Ordering::AcqRel);
                if !held.job.is_resolved() {
                    // A refusal resolves the job's handle when the error drops.
                    let _ = self.admit(held);
                }
            }
            Timed::Wake { route, key, timer } => self.drain(&route, key, timer),
            Timed::Expire(slot) => {
                // Take the token out before firing it: firing runs the task's observers,
                // one of which empties this slot.
                let token = lock(&slot).take();
                if let Some(token) = token {
                    token.expire();
                }
            }
        }
    }

    /// Arms the task's deadline timer.
    fn arm_timeout(&self, job: &Job, deadline: Instant) {
        let slot = Arc::new(Mutex::new(Some(job.cancel_token())));
        let release = slot.clone();
        // Once the task ends the timer has nothing to do: let go of the token (and with
        // it the task's result slot) now rather than at the deadline.
        job.observe(move |_| drop(lock(&release).take()));
        let _ = self.timers.at(deadline, Timed::Expire(slot));
    }

    /// Passes a job through its route's limiter, then launches it (now or later).
    fn admit(self: &Arc<Self>, held: Held) -> Result<(), SubmitError> {
        let route = held.route.clone();
        let Some(limiter) = route.limiter.clone() else {
            return self.launch(held, None);
        };
        let key = limit_key(&route.route, held.job.meta());
        match limiter.admit(&key, held, Instant::now()) {
            Admit::Go(h) => self.launch(h, Some((limiter, key))),
            Admit::Queued { wake_at } => {
                tracing::trace!(rule = %route.route.rule, key = %key, "task waits for its limit");
                if let Some(at) = wake_at {
                    let _ = self.timers.at(
                        at,
                        Timed::Wake {
                            route,
                            key,
                            timer: true,
                        },
                    );
                }
                Ok(())
            }
        }
    }

    /// Lets the waiting jobs of `key` go as far as the limits allow.
    fn drain(self: &Arc<Self>, route: &Arc<Compiled>, key: String, woken: bool) {
        let Some(limiter) = route.limiter.clone() else {
            return;
        };
        let (mut ready, mut dead) = (Vec::new(), Vec::new());
        let wake = limiter.drain(
            &key,
            Instant::now(),
            woken,
            |h: &Held| h.job.is_resolved(),
            &mut ready,
            &mut dead,
        );
        drop(dead);
        if let Some(at) = wake {
            let _ = self.timers.at(
                at,
                Timed::Wake {
                    route: route.clone(),
                    key: key.clone(),
                    timer: true,
                },
            );
        }
        for h in ready {
            let _ = self.launch(h, Some((limiter.clone(), key.clone())));
        }
    }

    /// Hands one attempt to the route's executor, with the retry hook installed and, under
    /// a limit, wrapped so the slot is given back when the attempt ends (and, when tracing
    /// is on, so the attempt runs inside its span).
    fn launch(
        self: &Arc<Self>,
        held: Held,
        slot: Option<(Arc<Limiter<Held>>, String)>,
    ) -> Result<(), SubmitError> {
        let Held { mut job, route, .. } = held;
        if job.is_resolved() {
            // Cancelled or timed out while it waited; dropping it releases the slot.
            drop(job);
            drop(slot.map(|(limiter, key)| SlotGuard {
                core: self.clone(),
                route: route.clone(),
                limiter,
                key,
            }));
            return Ok(());
        }
        if let Some(retry) = route.route.retry
            && job.can_retry()
        {
            let core = self.clone();
            let r = route.clone();
            job.on_failure(Box::new(move |job, err| core.retry(r, retry, job, err)));
        }
        // A span per attempt, entered while it runs, so the task's own log lines carry
        // its name, id, executor and attempt.
        let span = tracing::info_span!(
            "task",
            id = %job.id(),
            name = job.meta().name(),
            executor = route.executor.name(),
            rule = %route.route.rule,
            attempt = job.attempt(),
        );
        tracing::debug!(parent: &span, "dispatch");
        if slot.is_none() && span.is_disabled() {
            return route.executor.execute(job);
        }
        let guard = slot.map(|(limiter, key)| SlotGuard {
            core: self.clone(),
            route: route.clone(),
            limiter,
            key,
        });
        let meta = Arc::new(job.meta().clone());
        let is_async = job.is_async();
        let cell = Arc::new(Mutex::new(Some(job)));
        let inner = cell.clone();
        let outer = if is_async {
            Job::future(meta, async move {
                let _guard = guard;
                let job = lock(&inner).take();
                if let Some(job) = job {
                    job.into_future().instrument(span).await;
                }
                Ok(())
            })
            .0
        } else {
            Job::once(meta, move |_| {
                let _guard = guard;
                let _entered = span.enter();
                let job = lock(&inner).take();
                if let Some(job) = job {
                    job.run();
                }
                Ok(())
            })
            .0
        };
        match route.executor.execute(outer) {
            Ok(()) => Ok(()),
            Err(refused) => {
                let full = refused.is_full();
                let job = lock(&cell).take();
                // Dropping the wrapper gives the slot back.
                drop(refused);
                match job {
                    Some(job) if full => Err(SubmitError::full(job)),
                    Some(job) => Err(SubmitError::shutdown(job)),
                    None => Ok(()),
                }
            }
        }
    }

    /// The failure hook of a retryable job: schedule the next attempt after a backoff, or
    /// give the job back to end it with its error.
    fn retry(
        self: &Arc<Self>,
        route: Arc<Compiled>,
        policy: RetryPolicy,
        job: Job,
        err: TaskError,
    ) -> Option<(Job, TaskError)> {
        let attempt = job.attempt();
        if attempt > policy.max || self.closing.load(Ordering::Acquire) || job.is_resolved() {
            tracing::warn!(
                task = %job.id(),
                name = job.meta().name(),
                attempt,
                error = %err,
                "task failed; no retries left"
            );
            return Some((job, err));
        }
        let delay = policy.delay(attempt + 1, rand::random::<f64>());
        let at = Instant::now() + delay;
        if job.deadline().is_some_and(|d| at >= d) {
            tracing::warn!(
                task = %job.id(),
                name = job.meta().name(),
                attempt,
                error = %err,
                "task failed; its deadline leaves no time to retry"
            );
            return Some((job, err));
        }
        tracing::info!(
            task = %job.id(),
            name = job.meta().name(),
            attempt,
            next_attempt = attempt + 1,
            delay_ms = delay.as_millis() as u64,
            error = %err,
            "attempt failed; retrying"
        );
        let held = Held {
            job: job.next_attempt(),
            route,
            last_error: Some(err),
        };
        self.retries_pending.fetch_add(1, Ordering::AcqRel);
        match self.timers.at(at, Timed::Retry(held)) {
            Ok(()) => None,
            Err(Timed::Retry(h)) => {
                self.retries_pending.fetch_sub(1, Ordering::AcqRel);
                h.last_error.map(|e| (h.job, e))
            }
            Err(_) => None,
        }
    }
}

impl Executor for Supervisor {
    fn name(&self) -> &str {
        &self.name
    }

    fn execute(&self, mut job: Job) -> Result<(), SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            // Counted as refused, as every backend counts a job it will not take.
            self.core.ledger.refused();
            return Err(SubmitError::shutdown(job));
        }
        self.core.ledger.track(&job);
        let table = self.table.load();
        let compiled = table.select(job.meta());
        if !compiled.layered {
            return compiled.executor.execute(job);
        }
        let compiled = compiled.clone();
        drop(table);
        if let Some(timeout) = compiled.route.timeout {
            let deadline = Instant::now() + timeout;
            job.set_deadline(Some(deadline));
            self.core.arm_timeout(&job, deadline);
        }
        self.core.admit(Held {
            job,
            route: compiled,
            last_error: None,
        })
    }

    fn stats(&self) -> ExecutorStats {
        let c = self.core.ledger.snapshot();
        let mut s = ExecutorStats::default();
        let table = self.table.load();
        for e in table.executors.values() {
            let es = e.stats();
            s.queued += es.queued;
            s.running += es.running;
        }
        s.queued += self.core.retries_pending.load(Ordering::Acquire);
        s.queued += lock(&self.all_limiters)
            .iter()
            .map(|l| l.waiting() as u64)
            .sum::<u64>();
        s.submitted = c.submitted;
        s.completed = c.completed;
        s.failed = c.failed;
        s.panicked = c.panicked;
        s.cancelled = c.cancelled;
        s.timed_out = c.timed_out;
        s.rejected = c.rejected;
        s.not_started = c.not_started;
        s
    }

    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let ledger = self.shutdown_ledger(mode);
        let mut r = ShutdownReport::new(&self.name);
        r.not_started = ledger.never_ran;
        r.still_running = ledger.still_running;
        r.deadline_passed = ledger.deadline_passed;
        r.stats = self.stats();
        r
    }
}

impl Policy for Supervisor {
    fn route(&self, meta: &TaskMeta) -> Arc<Route> {
        self.table.load().select(meta).route.clone()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Dropped without a shutdown: stop the scheduler thread and end what it holds, so
        // no handle waits forever. (Executors stop as their last reference drops.)
        if lock(&self.report).is_none() {
            self.core.closing.store(true, Ordering::Release);
            let mut held = Vec::new();
            for t in self.core.timers.close() {
                if let Timed::Retry(h) = t {
                    held.push(h);
                }
            }
            for l in lock(&self.all_limiters).iter() {
                held.extend(l.take_all());
            }
            end_held(held);
            if let Some(h) = lock(&self.scheduler).take() {
                let _ = h.join();
            }
        }
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.load();
        f.debug_struct("Supervisor")
            .field("policy", &table.config.origin())
            .field("executors", &table.executors.keys().collect::<Vec<_>>())
            .field("routes", &table.rules.len())
            .finish()
    }
}
