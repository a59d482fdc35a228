//! [`Policy`]: where each task runs, as a [`Route`], and what it learns from how tasks end.

use crate::{Outcome, TaskMeta};

/// Decides where each task runs. Object safe, so a supervisor holds any policy as
/// `Arc<dyn Policy>`: the supervisor's policy file compiles to one, and a user's own type
/// (an adaptive placement, a lookup table) can be another.
///
/// How a route runs — its retries, timeout, limits, or a layer of the user's own — is the
/// business of whoever runs the route (the supervisor composes layers per route by the
/// route's [`rule`](Route::rule) name), so a route here only names the executor and the
/// rule.
///
/// ```
/// use executor_core::{Outcome, Policy, Route, Status, TaskMeta};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// CPU work goes to "cpu", the rest to "io"; counts failures as it goes.
/// struct ByTag { cpu: Route, io: Route, failures: AtomicU64 }
///
/// impl Policy for ByTag {
///     fn route(&self, meta: &TaskMeta) -> &Route {
///         if meta.has_tag("cpu") { &self.cpu } else { &self.io }
///     }
///     fn observe(&self, _meta: &TaskMeta, outcome: &Outcome) {
///         if !outcome.status().is_success() {
///             self.failures.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let p = ByTag {
///     cpu: Route::new("cpu", "cpu-work"),
///     io: Route::new("io", "default"),
///     failures: AtomicU64::new(0),
/// };
/// assert_eq!(p.route(&TaskMeta::new("sum").with_tag("cpu")).executor(), "cpu");
/// p.observe(&TaskMeta::new("x"), &Outcome::new(Status::Failed, 1, Default::default()));
/// assert_eq!(p.failures.load(Ordering::Relaxed), 1);
/// ```
pub trait Policy: Send + Sync {
    /// The route for a task. Total: every task gets one. Returning a reference keeps
    /// routing free of allocation and reference counting; a policy keeps its routes.
    fn route(&self, meta: &TaskMeta) -> &Route;

    /// Called once for every task that ends, with how it ended.
    fn observe(&self, _meta: &TaskMeta, _outcome: &Outcome) {}

    /// True when [`observe`](Self::observe) wants the CPU time of each task
    /// ([`Outcome::cpu_time`]). Measuring it reads the thread's CPU clock around every
    /// run of the task's body, which costs a system call or two per task, so only a
    /// policy that asks pays for it.
    fn wants_cpu_time(&self) -> bool {
        false
    }
}

/// Where a task runs: an executor's name, and the name of the rule that chose it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    executor: String,
    rule: String,
}

impl Route {
    /// A route to `executor` chosen by `rule`.
    pub fn new(executor: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            executor: executor.into(),
            rule: rule.into(),
        }
    }

    /// The executor's name.
    pub fn executor(&self) -> &str {
        &self.executor
    }

    /// Which rule chose this route (for `explain`, logs, and per-route layers), e.g.
    /// `route[2]` or `defaults`.
    pub fn rule(&self) -> &str {
        &self.rule
    }
}
