//! Layers: what runs around a route's executor, composed per route in the spirit of
//! tower's `Layer`.
//!
//! A route is a stack of [`Service`]s ending in its executor. Each [`Layer`] wraps the
//! service inside it and gets every attempt of every task on its way to the executor: it
//! may pass the job on, hold it and pass it on later (a limit), refuse it, or install
//! hooks on the job for this attempt — [`Job::on_failure`] (take a failed attempt back
//! for a retry), [`Job::on_attempt_end`] (hear how the attempt ended), and
//! [`Job::on_run`] (run code around the body, such as a span). Hooks compose, so every
//! layer on a route sees every attempt.
//!
//! The built-in layers come from the policy file, outermost first: [`Timeout`] (the
//! deadline counts from submission, across retries), [`RetryPolicy`] (each attempt goes
//! through the layers inside it again), and [`Limit`] (each attempt waits for a slot). A
//! user adds a layer of their own with
//! [`SupervisorBuilder::layer`](crate::SupervisorBuilder::layer) or
//! [`SupervisorBuilder::route_layer`](crate::SupervisorBuilder::route_layer); those sit
//! outside the policy file's layers.

pub(crate) mod limit;
pub(crate) mod limiter;
mod retry;
mod timeout;

use std::sync::Arc;

use executor_core::{Executor, Job, Route, SubmitError};

use crate::scheduler::Core;

pub use self::limit::{Limit, LimitScope, Rate};
pub use self::retry::RetryPolicy;
pub use self::timeout::Timeout;

/// One step on a route's way to its executor: takes an attempt of a job onward.
///
/// Object safe; a route holds its stack as `Arc<dyn Service>`. Whatever a service does,
/// the job must end up run, handed on, or dropped (which resolves its handle): never
/// kept forever.
pub trait Service: Send + Sync {
    /// Takes one attempt of `job` onward. A refusal gives the job back in the error (and
    /// dropping the error resolves the task's handle).
    fn dispatch(&self, job: Job) -> Result<(), SubmitError>;
}

/// Wraps a route's service in another, once per route when the supervisor builds its
/// routes (at start and at each reload).
pub trait Layer: Send + Sync {
    /// The service that runs `inner` with this layer's behaviour added.
    fn layer(&self, inner: Arc<dyn Service>, cx: &LayerContext<'_>) -> Arc<dyn Service>;
}

/// What a [`Layer`] learns about the route it wraps.
pub struct LayerContext<'a> {
    route: &'a Route,
    pub(crate) core: &'a Arc<Core>,
}

impl<'a> LayerContext<'a> {
    pub(crate) fn new(route: &'a Route, core: &'a Arc<Core>) -> Self {
        LayerContext { route, core }
    }

    /// The route being built: its executor and the name of its rule.
    pub fn route(&self) -> &Route {
        self.route
    }
}

impl std::fmt::Debug for LayerContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerContext")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl<F> Service for F
where
    F: Fn(Job) -> Result<(), SubmitError> + Send + Sync,
{
    fn dispatch(&self, job: Job) -> Result<(), SubmitError> {
        self(job)
    }
}

/// The innermost service of a layered route: runs each attempt inside its `task` span
/// (when a subscriber wants it) and hands it to the executor.
pub(crate) struct Base {
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) rule: String,
}

impl Service for Base {
    fn dispatch(&self, mut job: Job) -> Result<(), SubmitError> {
        // A span per attempt, entered while it runs, so the task's own log lines carry
        // its name, id, executor and attempt.
        let span = tracing::info_span!(
            "task",
            id = %job.id(),
            name = job.meta().name(),
            executor = self.executor.name(),
            rule = %self.rule,
            attempt = job.attempt(),
        );
        tracing::debug!(parent: &span, "dispatch");
        if !span.is_disabled() {
            job.on_run(Box::new(InSpan(span)));
        }
        self.executor.execute(job)
    }
}

/// Runs each run of an attempt inside a span.
struct InSpan(tracing::Span);

impl executor_core::backend::RunHook for InSpan {
    fn around(&mut self, _attempt: u32, run: &mut dyn FnMut()) {
        let _entered = self.0.enter();
        run();
    }
}
