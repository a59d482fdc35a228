//! Backend factories keyed by the `backend` string of `[executors.NAME]`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use executor_core::{BoxError, Executor};

use crate::config::{BackendOptions, ConfigError, ExecutorConfig, PolicyConfig};

/// Builds a configured executor. Returned by a [`BackendFactory`] once the options are
/// checked, and called only when the whole policy is valid.
pub type ExecutorPlan = Box<dyn FnOnce() -> Result<Arc<dyn Executor>, BoxError> + Send>;

/// Turns the keys of one `[executors.NAME]` table into a plan for its executor.
///
/// Read the keys you know with [`BackendOptions`]' getters and return an
/// [`ExecutorPlan`]; any key you did not ask for is reported as unknown, with its line
/// and column. Closures `Fn(&BackendOptions) -> Result<ExecutorPlan, ConfigError>`
/// implement this trait.
pub trait BackendFactory: Send + Sync {
    /// Checks the options and returns how to build the executor.
    fn configure(&self, options: &BackendOptions) -> Result<ExecutorPlan, ConfigError>;
}

impl<F> BackendFactory for F
where
    F: Fn(&BackendOptions) -> Result<ExecutorPlan, ConfigError> + Send + Sync,
{
    fn configure(&self, options: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
        self(options)
    }
}

/// The backends a supervisor can build, by name.
///
/// [`Registry::with_builtins`] holds `threads`, `rayon` and `tokio` (each behind the Cargo
/// feature of the same name, on by default). Another crate adds its own backend with
/// [`Registry::register`], without touching this crate:
///
/// ```
/// use std::sync::Arc;
/// use executor_core::{Executor, InlineExecutor};
/// use supervisor::{ExecutorPlan, Registry};
///
/// let mut registry = Registry::new();
/// registry.register("inline", |opts: &supervisor::BackendOptions| {
///     let name = opts.executor().to_owned();
///     let plan: ExecutorPlan =
///         Box::new(move || Ok(Arc::new(InlineExecutor::new(name)) as Arc<dyn Executor>));
///     Ok(plan)
/// });
/// assert_eq!(registry.backends().collect::<Vec<_>>(), ["inline"]);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn BackendFactory>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry with the built-in backends this crate was compiled with.
    pub fn with_builtins() -> Self {
        // Not mutated when every backend feature is off.
        #[allow(unused_mut)]
        let mut r = Registry::new();
        #[cfg(feature = "threads")]
        r.register("threads", builtins::threads);
        #[cfg(feature = "rayon")]
        r.register("rayon", builtins::rayon);
        #[cfg(feature = "tokio")]
        r.register("tokio", builtins::tokio);
        r
    }

    /// Adds (or replaces) the factory for `backend`.
    pub fn register(
        &mut self,
        backend: impl Into<String>,
        factory: impl BackendFactory + 'static,
    ) -> &mut Self {
        self.factories.insert(backend.into(), Arc::new(factory));
        self
    }

    /// The registered backend names, sorted.
    pub fn backends(&self) -> impl Iterator<Item = &str> + '_ {
        self.factories.keys().map(String::as_str)
    }

    /// Checks the backend and options of every executor in `config` and returns a plan per
    /// executor, in the order of `config.executors()`. Builds nothing.
    pub fn prepare(&self, config: &PolicyConfig) -> Result<Vec<ExecutorPlan>, ConfigError> {
        config
            .executors()
            .iter()
            .map(|exec| self.prepare_one(config, exec))
            .collect()
    }

    pub(crate) fn prepare_one(
        &self,
        config: &PolicyConfig,
        exec: &ExecutorConfig,
    ) -> Result<ExecutorPlan, ConfigError> {
        let Some(factory) = self.factories.get(exec.backend()) else {
            let known: Vec<&str> = self.backends().collect();
            return Err(config.unknown_backend(exec, &known));
        };
        let options = exec.options().clone();
        let plan = factory.configure(&options)?;
        options.finish()?;
        Ok(plan)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("backends", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The built-in factories: one per backend crate.
mod builtins {
    #[allow(unused_imports)] // Which imports are used depends on the enabled features.
    use super::*;

    /// `backend = "threads"`: `workers` (default 4), `queue` (absent: unbounded),
    /// `on_full` = `"block"` | `"reject"` | `"caller-runs"` (default `"block"`).
    #[cfg(feature = "threads")]
    pub(super) fn threads(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
        use executor_core::OnFull;
        let mut b = executor_threads::ThreadsExecutor::builder(opts.executor());
        if let Some(w) = opts.usize("workers")? {
            if w == 0 {
                return Err(opts.error_at("workers", "workers must be at least 1"));
            }
            b = b.workers(w);
        }
        if let Some(q) = opts.usize("queue")? {
            if q == 0 {
                return Err(opts.error_at(
                    "queue",
                    "queue must hold at least 1 task; leave it out for an unbounded queue",
                ));
            }
            b = b.queue(Some(q));
        }
        let choices = ["block", "reject", "caller-runs"];
        if let Some(f) = opts.choice("on_full", &choices)? {
            b = b.on_full(match f {
                "reject" => OnFull::Reject,
                "caller-runs" => OnFull::CallerRuns,
                _ => OnFull::Block,
            });
        }
        Ok(Box::new(move || {
            Ok(Arc::new(b.build()?) as Arc<dyn Executor>)
        }))
    }

    /// `backend = "rayon"`: `threads` (default 0 = one per core).
    #[cfg(feature = "rayon")]
    pub(super) fn rayon(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
        let mut b = executor_rayon::RayonExecutor::builder(opts.executor());
        if let Some(n) = opts.usize("threads")? {
            b = b.threads(n);
        }
        Ok(Box::new(move || {
            Ok(Arc::new(b.build()?) as Arc<dyn Executor>)
        }))
    }

    /// `backend = "tokio"`: `worker_threads` (default 0 = one per core),
    /// `max_blocking_threads` (default: tokio's 512).
    #[cfg(feature = "tokio")]
    pub(super) fn tokio(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
        let mut b = executor_tokio::TokioExecutor::builder(opts.executor());
        if let Some(n) = opts.usize("worker_threads")? {
            b = b.worker_threads(n);
        }
        if let Some(n) = opts.usize("max_blocking_threads")? {
            if n == 0 {
                return Err(opts.error_at(
                    "max_blocking_threads",
                    "max_blocking_threads must be at least 1",
                ));
            }
            b = b.max_blocking_threads(n);
        }
        Ok(Box::new(move || {
            Ok(Arc::new(b.build()?) as Arc<dyn Executor>)
        }))
    }
}
