//! [`SupervisorBuilder`]: a supervisor put together in code — executors, a policy, layers
//! — with or without a policy file.

use std::sync::Arc;

use executor_core::{Executor, Policy};

use super::Supervisor;
use super::table::CodeParts;
use crate::config::{ConfigError, PolicyConfig};
use crate::layer::Layer;
use crate::registry::Registry;

/// Builds a [`Supervisor`] in code.
///
/// Give it a policy file ([`config`](Self::config)), or executors and a policy of your
/// own ([`executor`](Self::executor), [`policy`](Self::policy)), or both: then your policy
/// routes, over the file's executors and yours, and a route whose rule name is one of the
/// file's (`defaults`, `route[N]`) gets that rule's timeout, retries and limits. Layers
/// added here ([`layer`](Self::layer), [`route_layer`](Self::route_layer)) sit outside
/// the file's layers and stay across reloads.
///
/// ```
/// use std::sync::Arc;
/// use executor_core::{Executor, ExecutorExt, InlineExecutor, Policy, Route, TaskMeta};
/// use supervisor::Supervisor;
///
/// struct Everything(Route);
/// impl Policy for Everything {
///     fn route(&self, _meta: &TaskMeta) -> &Route {
///         &self.0
///     }
/// }
///
/// let sup = Supervisor::builder()
///     .executor("here", Arc::new(InlineExecutor::new("here")))
///     .policy(Everything(Route::new("here", "all")))
///     .build()?;
/// assert_eq!(sup.submit(|| 6 * 7).wait().unwrap(), 42);
/// # Ok::<(), supervisor::ConfigError>(())
/// ```
pub struct SupervisorBuilder {
    name: String,
    registry: Option<Registry>,
    config: Option<PolicyConfig>,
    code: CodeParts,
}

impl SupervisorBuilder {
    pub(super) fn new() -> Self {
        SupervisorBuilder {
            name: "supervisor".to_owned(),
            registry: None,
            config: None,
            code: CodeParts::default(),
        }
    }

    /// The supervisor's own name, as an [`Executor`] (default `supervisor`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Where the policy file's backends come from (default: the built-in ones).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// A policy file: its executors, its routes (unless a [`policy`](Self::policy) is
    /// given too) and its routes' timeouts, retries and limits.
    pub fn config(mut self, config: PolicyConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// An executor the policy can name, such as a
    /// `TokioExecutor::from_handle(..)` over the application's own runtime. The
    /// supervisor shuts it down with the others.
    pub fn executor(mut self, name: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        self.code.executors.insert(name.into(), executor);
        self
    }

    /// The policy that routes every task (and [observes](Policy::observe) how each
    /// ended). Replaces the policy file's routing, not its executors or layers.
    pub fn policy(self, policy: impl Policy + 'static) -> Self {
        self.shared_policy(Arc::new(policy))
    }

    /// [`policy`](Self::policy), for a policy the caller keeps a reference to.
    pub fn shared_policy(mut self, policy: Arc<dyn Policy>) -> Self {
        self.code.policy = Some(policy);
        self
    }

    /// A layer on every route, outside the layers added before it.
    pub fn layer(mut self, layer: impl Layer + 'static) -> Self {
        self.code.layers.push(Arc::new(layer));
        self
    }

    /// A layer on the routes of the rule named `rule` (a policy file's `defaults` or
    /// `route[N]`, or a name a policy in code gives its routes), inside the layers of
    /// [`layer`](Self::layer) and outside the file's.
    pub fn route_layer(mut self, rule: impl Into<String>, layer: impl Layer + 'static) -> Self {
        self.code.route_layers.push((rule.into(), Arc::new(layer)));
        self
    }

    /// Starts the executors of the policy file (checking every one's options first) and
    /// the supervisor's scheduler thread.
    pub fn build(self) -> Result<Arc<Supervisor>, ConfigError> {
        let registry = self.registry.unwrap_or_else(Registry::with_builtins);
        Supervisor::start(self.name, registry, self.config, self.code)
    }
}

impl std::fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let executors: Vec<&String> = self.code.executors.keys().collect();
        f.debug_struct("SupervisorBuilder")
            .field("name", &self.name)
            .field("config", &self.config.as_ref().map(|c| c.origin()))
            .field("executors", &executors)
            .field("policy", &self.code.policy.is_some())
            .field("layers", &self.code.layers.len())
            .field("route_layers", &self.code.route_layers.len())
            .finish()
    }
}
