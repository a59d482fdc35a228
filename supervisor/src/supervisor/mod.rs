//! [`Supervisor`]: an executor that routes each job through its [`Policy`] and hands it to
//! the route's stack of layers (timeout, retries, limits, and the user's own) in front of
//! the chosen executor.

mod builder;
mod shutdown;
mod table;
mod versions;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use executor_core::backend::Admission;
use executor_core::{
    Executor, ExecutorStats, Job, Route, ShutdownMode, ShutdownReport, SubmitError, TaskError,
    TaskMeta,
};

pub use self::builder::SupervisorBuilder;
use self::table::{CodeParts, Compiled, Table, compile};
use self::versions::Versions;
use crate::config::{ConfigError, Kind, PolicyConfig};
use crate::ledger::{Ledger, LedgerCounts, ShutdownLedger};
use crate::registry::Registry;
use crate::routing::Explanation;
use crate::scheduler::{Core, lock};

/// Routes tasks to executors by a [`Policy`](executor_core::Policy) — a policy file, or
/// one written in code — and runs each route's layers (retries, timeout, limits, and
/// layers of your own) around whichever executor runs them. Used as `Arc<Supervisor>`; it
/// is an [`Executor`] itself, so code that takes `&dyn Executor` runs on it unchanged.
///
/// See the [crate docs](crate) for an example and the policy file reference, and
/// [`SupervisorBuilder`] to build one in code.
pub struct Supervisor {
    name: String,
    registry: Registry,
    code: CodeParts,
    /// The compiled routes: the one in force, and those reloads replaced (kept, as the
    /// executors are, so a read is a plain load; see [`Versions`]).
    tables: Versions<Table>,
    core: Arc<Core>,
    ledger: Arc<Ledger>,
    /// Closed at shutdown; a shutdown waits for the submissions inside it before it sweeps
    /// what the layers hold, so no task lands in a queue after the sweep.
    gate: Admission,
    /// Every executor built so far, current and retired by reloads (shut down at the end).
    all_executors: Mutex<Vec<Arc<dyn Executor>>>,
    reload_lock: Mutex<()>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    report: Mutex<Option<ShutdownLedger>>,
    pub(crate) watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl Supervisor {
    /// A supervisor for `config` with the built-in backends.
    pub fn new(config: PolicyConfig) -> Result<Arc<Self>, ConfigError> {
        Self::builder().config(config).build()
    }

    /// Builds a supervisor in code: executors, a policy, layers. See [`SupervisorBuilder`].
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::new()
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
        Self::builder().registry(registry).config(config).build()
    }

    fn start(
        name: String,
        registry: Registry,
        config: Option<PolicyConfig>,
        code: CodeParts,
    ) -> Result<Arc<Self>, ConfigError> {
        let core = Arc::new(Core::new());
        let (table, built) = compile(&registry, config, &code, &core, None)?;
        let origin = table
            .config
            .as_ref()
            .map_or(Path::new("<code>"), |c| c.origin())
            .to_path_buf();
        let scheduler = {
            let core = core.clone();
            std::thread::Builder::new()
                .name("supervisor-scheduler".into())
                .spawn(move || core.run_scheduler())
        };
        let scheduler = match scheduler {
            Ok(h) => h,
            Err(e) => {
                for exec in &built {
                    exec.shutdown(ShutdownMode::Now);
                }
                return Err(ConfigError::new(
                    Kind::Build,
                    &origin,
                    format!("cannot start the scheduler thread: {e}"),
                ));
            }
        };
        tracing::info!(
            policy = %origin.display(),
            executors = table.executors.len(),
            routes = table.rules(),
            "supervisor started"
        );
        Ok(Arc::new(Supervisor {
            name,
            registry,
            code,
            tables: Versions::new(table),
            core,
            ledger: Arc::new(Ledger::default()),
            gate: Admission::new(),
            all_executors: Mutex::new(built),
            reload_lock: Mutex::new(()),
            scheduler: Mutex::new(Some(scheduler)),
            report: Mutex::new(None),
            watcher: Mutex::new(None),
        }))
    }

    /// The policy file now in force (`None` for a supervisor built in code without one).
    pub fn policy(&self) -> Option<Arc<PolicyConfig>> {
        self.tables.current().config.clone()
    }

    /// Which route a task takes and why: the rule that matched, and why the rules before
    /// it did not (or, for a policy written in code, the rule it chose).
    pub fn explain(&self, meta: &TaskMeta) -> Explanation {
        self.tables.current().explain(meta)
    }

    /// The route the policy now in force gives a task.
    pub fn route(&self, meta: &TaskMeta) -> Route {
        self.tables.current().route(meta).clone()
    }

    /// The executor called `name` now in force.
    pub fn executor(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.tables.current().executors.get(name).cloned()
    }

    /// Each executor now in force, by name, with its stats (for summary tables).
    pub fn executor_stats(&self) -> Vec<(String, ExecutorStats)> {
        self.tables
            .current()
            .executors
            .iter()
            .map(|(name, e)| (name.clone(), e.stats()))
            .collect()
    }

    /// What the policy file's `executor = "auto"` routes learned, by task name: the
    /// decayed CPU share, the samples, the placement and how many tasks blocked a worker
    /// (empty without a policy file). Save it with [`learner`](Self::learner)`().save(..)`.
    pub fn learned(&self) -> Vec<crate::auto::Learned> {
        self.learner().map(|l| l.all()).unwrap_or_default()
    }

    /// The learner of the policy file now in force (its `executor = "auto"` routes), to
    /// save what it learned or load what an earlier run learned.
    pub fn learner(&self) -> Option<Arc<crate::auto::Learner>> {
        self.tables
            .current()
            .config
            .as_ref()
            .map(|c| c.learner().clone())
    }

    /// The supervisor's ledger so far: tasks submitted and how many ended each way.
    pub fn ledger(&self) -> LedgerCounts {
        self.ledger.snapshot()
    }

    /// Replaces the policy file with the one at `path`, atomically, while tasks run. Tasks
    /// already submitted keep the route they were given. Executors whose table is
    /// unchanged keep running; changed or new ones are built. A bad file is rejected with
    /// its error (also logged) and the old policy stays in force. What was given in code
    /// (a policy, executors, layers) stays.
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

    /// Swaps in a validated policy file (see [`reload`](Self::reload)).
    pub fn apply(&self, config: PolicyConfig) -> Result<(), ConfigError> {
        let _serial = lock(&self.reload_lock);
        if self.gate.is_closed() {
            return Err(ConfigError::new(
                Kind::Build,
                config.origin(),
                "the supervisor is shut down; the policy was not applied",
            ));
        }
        let old = self.tables.current();
        if let Some(previous) = &old.config {
            config.keep_learning_from(previous);
        }
        let (table, built) = compile(
            &self.registry,
            Some(config),
            &self.code,
            &self.core,
            Some(old),
        )?;
        let origin = table
            .config
            .as_ref()
            .map(|c| c.origin().display().to_string())
            .unwrap_or_default();
        let routes = table.rules();
        lock(&self.all_executors).extend(built);
        self.tables.push(table);
        tracing::info!(policy = %origin, routes, "policy reloaded");
        Ok(())
    }

    /// Routes `job` and hands it to its route; `on_route` learns the route it took.
    #[inline]
    fn submit_routed(
        &self,
        mut job: Job,
        on_route: impl FnOnce(&Compiled),
    ) -> Result<(), SubmitError> {
        let entry = self.gate.enter();
        if !entry.is_open() {
            // Counted as refused, as every backend counts a job it will not take.
            self.ledger.refused();
            return Err(SubmitError::shutdown(job));
        }
        let table = self.tables.current();
        self.ledger.track(&mut job, table.observer.as_ref());
        let compiled = match table.select(job.meta_ref()) {
            Ok(c) => c,
            Err(executor) => {
                job.resolve(unknown_executor(executor));
                return Ok(());
            }
        };
        on_route(compiled);
        match &compiled.service {
            None => compiled.executor.execute(job),
            Some(service) => service.dispatch(job),
        }
    }

    /// [`execute`](Executor::execute), also saying which executor the task was handed to
    /// (its name in the policy). A task keeps that executor for its whole life, retries
    /// included, even across reloads.
    pub(crate) fn execute_on(&self, job: Job) -> (String, Result<(), SubmitError>) {
        let mut executor = String::new();
        let result = self.submit_routed(job, |c| executor = c.route.executor().to_owned());
        (executor, result)
    }
}

/// The error of a task the policy routed to an executor this supervisor does not have.
fn unknown_executor(executor: &str) -> TaskError {
    TaskError::rejected(format!(
        "the policy routed the task to executor \"{executor}\", which this supervisor does \
         not have"
    ))
}

impl Executor for Supervisor {
    fn name(&self) -> &str {
        &self.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        self.submit_routed(job, |_| {})
    }

    /// Each job is counted and routed on its own, as by `execute`; consecutive jobs routed
    /// to the same executor with no layers reach it as one batch, so its cheaper batch
    /// path (one message or pool task per chunk) survives the routing.
    fn execute_batch(&self, jobs: Vec<Job>) {
        let entry = self.gate.enter();
        if !entry.is_open() {
            for job in jobs {
                self.ledger.refused();
                drop(SubmitError::shutdown(job));
            }
            return;
        }
        let table = self.tables.current();
        let mut jobs = jobs;
        // Count every job first, and route the jobs that lead the batch to one executor
        // with no layers. When that is all of them (a `map` of one task name), the batch
        // goes on as it came, with no copy of each job into a batch of its own.
        let mut one: Option<&Arc<dyn Executor>> = None;
        let mut leading = 0;
        let mut mixed = false;
        for job in &mut jobs {
            self.ledger.track(job, table.observer.as_ref());
            if !mixed {
                match table.select(job.meta_ref()) {
                    Ok(Compiled {
                        service: None,
                        executor,
                        ..
                    }) if one.is_none_or(|e| Arc::ptr_eq(e, executor)) => {
                        one = Some(executor);
                        leading += 1;
                    }
                    _ => mixed = true,
                }
            }
        }
        if !mixed {
            if let Some(e) = one {
                e.execute_batch(jobs);
            }
            drop(entry);
            return;
        }
        // The leading jobs are routed already: they start the first run as they are, and
        // only the rest are routed one by one.
        let rest = jobs.split_off(leading);
        let mut run: Vec<Job> = jobs;
        let mut run_on: Option<&Arc<dyn Executor>> = one;
        for job in rest {
            let compiled = match table.select(job.meta_ref()) {
                Ok(c) => c,
                Err(executor) => {
                    job.resolve(unknown_executor(executor));
                    continue;
                }
            };
            match &compiled.service {
                None => {
                    if let Some(e) = run_on
                        && !Arc::ptr_eq(e, &compiled.executor)
                    {
                        e.execute_batch(std::mem::take(&mut run));
                    }
                    run_on = Some(&compiled.executor);
                    run.push(job);
                }
                Some(service) => {
                    if let Err(refused) = service.dispatch(job) {
                        drop(refused);
                    }
                }
            }
        }
        if let Some(e) = run_on {
            e.execute_batch(run);
        }
        drop(entry);
    }

    /// The routed executor's width when the route of `meta` is plain (no layers at all:
    /// no timeout, retries, limit, priority or layers of your own), so a `map` runs as
    /// that executor's runner tasks; `None` when the route has layers, which act on each
    /// task, so each item stays a task of its own (timed out, retried, limited alone).
    fn map_width(&self, meta: &TaskMeta) -> Option<NonZeroUsize> {
        match self.tables.current().select_meta(meta) {
            Ok(Compiled {
                service: None,
                executor,
                ..
            }) => executor.map_width(meta),
            _ => None,
        }
    }

    fn stats(&self) -> ExecutorStats {
        let c = self.ledger.snapshot();
        let mut s = ExecutorStats::default();
        let table = self.tables.current();
        for e in table.executors.values() {
            let es = e.stats();
            s.queued += es.queued;
            s.running += es.running;
        }
        s.queued += self.core.retries_pending.load(Ordering::Acquire);
        s.queued += self.core.waiting();
        s.submitted = c.submitted;
        s.completed = c.completed;
        s.failed = c.failed;
        s.panicked = c.panicked;
        s.cancelled = c.cancelled;
        s.timed_out = c.timed_out;
        s.rejected = c.rejected;
        s.not_started = c.not_started;
        s.blocked = self.learned().iter().map(|l| l.blocking).sum();
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

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.tables.current();
        f.debug_struct("Supervisor")
            .field("policy", &table.config.as_ref().map(|c| c.origin()))
            .field("executors", &table.executors.keys().collect::<Vec<_>>())
            .field("routes", &table.rules())
            .finish()
    }
}
