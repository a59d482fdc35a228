//! The policy file: parsing, validation, and the checked model the supervisor runs on.
//!
//! Two layers, as in ripgrep's `lowargs`/`hiargs`: the private `raw` module holds serde
//! types that mirror the TOML (with spans), and this module validates them into
//! [`PolicyConfig`]. Nothing else in the crate sees raw TOML. Backend-specific keys stay as [`BackendOptions`]
//! until a registered factory reads them.

mod error;
mod options;
mod raw;
mod values;

use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use executor_core::{Policy, Route, TaskMeta};
use toml::Spanned;

pub use self::error::ConfigError;
pub(crate) use self::error::Kind;
pub use self::options::BackendOptions;
use self::raw::{RawAutoSettings, RawLimit, RawPolicy, RawRetries};
use crate::auto::{AutoSettings, Class, Learner};
use crate::layer::{Limit, LimitScope, Rate, RetryPolicy};
use crate::routing::{self, Explanation, Matcher};

/// Where the policy file sends a task (see [`PolicyConfig::route_pos`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoutePos {
    /// The `[[route]]` rule at this index.
    Rule(usize),
    /// The `executor = "auto"` rule at this index, routed by its own executor while it
    /// learns the task (so the answer may change).
    Learning(usize),
    /// The CPU executor of the `executor = "auto"` rule at this index.
    AutoCpu(usize),
    /// The blocking route of the `executor = "auto"` rule at this index.
    AutoBlocking(usize),
    /// The `[defaults]`.
    Defaults,
}

/// A validated policy file: executors, defaults and ordered routes.
///
/// Building one checks everything that does not depend on which backends are registered;
/// the backend keys are checked when a [`Registry`](crate::Registry) prepares the
/// executors. A `PolicyConfig` is itself an [`executor_core::Policy`]: it routes a task to
/// the [`Route`] of the first matching `[[route]]`, or of `[defaults]`; the supervisor
/// builds each route's layers from its [`RouteSpec`].
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    origin: PathBuf,
    executors: Vec<ExecutorConfig>,
    defaults: RouteSpec,
    routes: Vec<RouteRule>,
    /// What the `executor = "auto"` routes learned; shared by clones of this policy.
    learner: Arc<Learner>,
    /// True when some route says `executor = "auto"`.
    has_auto: bool,
}

/// A route of the policy file and how it runs: where (the [`Route`]) and the settings of
/// its layers (timeout, retries, limits).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteSpec {
    /// The executor and the rule's name (`defaults` or `route[N]`).
    pub route: Route,
    /// Retries after an error or a panic.
    pub retry: Option<RetryPolicy>,
    /// How long the caller waits at most, from submission.
    pub timeout: Option<Duration>,
    /// Concurrency and rate limits.
    pub limit: Option<Limit>,
    /// The priority of the route's tasks whose [`TaskMeta`] has none (a task's own
    /// [`TaskMeta::with_priority`] wins; a `[[route]]` without one takes `[defaults]`'s).
    pub priority: Option<i8>,
    /// Set on the route an `executor = "auto"` rule takes for a name whose polls block
    /// their worker: its async jobs run on a thread ([`executor_core::Job::set_on_thread`]).
    pub on_thread: bool,
}

impl RouteSpec {
    fn new(executor: String, rule: impl Into<String>) -> Self {
        RouteSpec {
            route: Route::new(executor, rule),
            retry: None,
            timeout: None,
            limit: None,
            priority: None,
            on_thread: false,
        }
    }

    /// The executor's name.
    pub fn executor(&self) -> &str {
        self.route.executor()
    }

    /// True when the route has a timeout, retries, limits or a priority.
    pub fn has_layers(&self) -> bool {
        self.retry.is_some()
            || self.timeout.is_some()
            || self.limit.is_some()
            || self.priority.is_some()
            || self.on_thread
    }
}

/// One `[executors.NAME]` table.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    name: String,
    backend: String,
    backend_span: Range<usize>,
    options: BackendOptions,
}

/// One `[[route]]`: a matcher and the route it leads to.
///
/// Keys a `[[route]]` leaves out take their value from `[defaults]`.
#[derive(Debug, Clone)]
pub struct RouteRule {
    matcher: Matcher,
    /// For `executor = "auto"`: the route to the I/O executor (where a name starts).
    route: RouteSpec,
    /// For `executor = "auto"`: the same route to the CPU executor.
    auto_cpu: Option<Box<RouteSpec>>,
    /// For `executor = "auto"`: the route of a name whose polls block their worker (the
    /// `blocking` executor, else the I/O one, with [`RouteSpec::on_thread`]).
    auto_blocking: Option<Box<RouteSpec>>,
    /// For `executor = "auto"`: whether the I/O and the CPU executor's threads must not
    /// block (a tokio runtime's workers, a rayon pool), so a task that blocks there counts.
    worker_pools: (bool, bool),
}

/// The default `backoff` of `retries`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
/// The default `max_backoff` of `retries`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

impl PolicyConfig {
    /// Reads and validates the policy file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(Kind::Io, path, format!("cannot read policy file: {e}"))
                .with_source(Arc::new(e))
        })?;
        Self::parse(&text, path)
    }

    /// Validates a policy given as text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let origin = origin.as_ref();
        let shared: Arc<str> = Arc::from(text);
        let table = toml::de::DeTable::parse(text).map_err(|e| {
            let err = ConfigError::new(Kind::Syntax, origin, e.message().to_owned());
            match e.span() {
                Some(span) => err.at(text, span),
                None => err,
            }
        })?;
        let raw: RawPolicy = serde::Deserialize::deserialize(toml::de::Deserializer::from(table))
            .map_err(|e| schema_error(&e, text, origin))?;
        Validator {
            text: &shared,
            origin,
        }
        .policy(raw)
    }

    /// Where the policy came from (its path, or the name given to [`PolicyConfig::parse`]).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The executors, sorted by name.
    pub fn executors(&self) -> &[ExecutorConfig] {
        &self.executors
    }

    /// The `[defaults]` route: where and how a task that matches no `[[route]]` runs.
    pub fn defaults(&self) -> &RouteSpec {
        &self.defaults
    }

    /// The `[[route]]` rules in file order.
    pub fn routes(&self) -> &[RouteRule] {
        &self.routes
    }

    /// The route for a task with this name and these tags: the first matching rule's, or
    /// the defaults. Routing is total: every task gets a route.
    pub fn select<S: AsRef<str>>(&self, name: &str, tags: &[S]) -> &RouteSpec {
        match self.select_index(name, |t| tags.iter().any(|x| x.as_ref() == t)) {
            Some(i) => &self.routes[i].route,
            None => &self.defaults,
        }
    }

    /// The 0-based index of the first rule matching a task with this name and these tags
    /// (`has_tag` answers whether the task carries a tag); `None` for the defaults.
    #[inline]
    pub fn select_index(&self, name: &str, has_tag: impl Fn(&str) -> bool) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.matcher.matches(name, &has_tag))
    }

    /// Where [`route`](Policy::route) sends a task, as a position in the file (so the
    /// supervisor finds the compiled route by index, not by comparing routes).
    #[inline]
    pub(crate) fn route_pos(&self, meta: &TaskMeta) -> RoutePos {
        match self.select_index(meta.name(), |t| meta.has_tag(t)) {
            Some(i) => {
                let rule = &self.routes[i];
                if rule.auto_cpu.is_some() && rule.auto_blocking.is_some() {
                    match self.learner.placement(meta.name()) {
                        Some((Class::Cpu, _)) => RoutePos::AutoCpu(i),
                        Some((Class::Io, true)) => RoutePos::AutoBlocking(i),
                        _ => RoutePos::Learning(i),
                    }
                } else {
                    RoutePos::Rule(i)
                }
            }
            None => RoutePos::Defaults,
        }
    }

    /// Which route a task takes, and why; for an `executor = "auto"` route, what was
    /// learned of the task's name.
    pub fn explain(&self, meta: &TaskMeta) -> Explanation {
        let tags: Vec<&str> = meta.tags().collect();
        let mut explanation = self.explain_parts(meta.name(), &tags);
        let index = self.select_index(meta.name(), |t| meta.has_tag(t));
        if let Some(rule) = index.map(|i| &self.routes[i])
            && let Some(cpu) = &rule.auto_cpu
        {
            explanation.executor = self.route(meta).executor().to_owned();
            let learned = match self.learner.get(meta.name()) {
                Some(l) => l.to_string(),
                None => format!(
                    "auto: {} not measured yet → io until {} runs",
                    meta.name(),
                    self.learner.settings().min_samples
                ),
            };
            let blocking = rule.auto_blocking.as_deref().map_or("", |b| b.executor());
            explanation.learned = Some(format!(
                "{learned} (io = \"{}\", cpu = \"{}\", blocking = \"{blocking}\")",
                rule.route.executor(),
                cpu.executor()
            ));
        }
        explanation
    }

    /// What the `executor = "auto"` routes of this policy learned.
    pub fn learner(&self) -> &Arc<Learner> {
        &self.learner
    }

    /// True when some route says `executor = "auto"`.
    pub fn has_auto(&self) -> bool {
        self.has_auto
    }

    /// Takes over what `old` (the policy a reload replaces) learned.
    pub(crate) fn keep_learning_from(&self, old: &PolicyConfig) {
        if !Arc::ptr_eq(&self.learner, &old.learner) {
            self.learner.restore(old.learner.all());
        }
    }

    /// Which route a task with this name and these tags takes, and why.
    pub fn explain_parts<S: AsRef<str>>(&self, name: &str, tags: &[S]) -> Explanation {
        routing::explain(
            self.routes.iter().map(|r| (&r.matcher, r.route.executor())),
            self.defaults.executor(),
            name,
            tags,
        )
    }

    /// The error for an executor whose backend no factory is registered for.
    pub(crate) fn unknown_backend(&self, exec: &ExecutorConfig, known: &[&str]) -> ConfigError {
        let known = if known.is_empty() {
            "(no backends are registered)".to_owned()
        } else {
            known.join(", ")
        };
        ConfigError::new(
            Kind::UnknownBackend,
            &self.origin,
            format!(
                "unknown backend \"{}\" for executor \"{}\"; expected one of: {known}",
                exec.backend, exec.name
            ),
        )
        .at(exec.options.text(), exec.backend_span.clone())
    }
}

impl Policy for PolicyConfig {
    #[inline]
    fn route(&self, meta: &TaskMeta) -> &Route {
        match self.route_pos(meta) {
            RoutePos::Rule(i) | RoutePos::Learning(i) => &self.routes[i].route.route,
            RoutePos::AutoCpu(i) => {
                &self.routes[i]
                    .auto_cpu
                    .as_ref()
                    .expect("AutoCpu is given only for an auto rule")
                    .route
            }
            RoutePos::AutoBlocking(i) => {
                &self.routes[i]
                    .auto_blocking
                    .as_ref()
                    .expect("AutoBlocking is given only for an auto rule")
                    .route
            }
            RoutePos::Defaults => &self.defaults.route,
        }
    }

    fn observe(&self, meta: &TaskMeta, outcome: &executor_core::Outcome) {
        if !self.has_auto {
            return;
        }
        if let Some(i) = self.select_index(meta.name(), |t| meta.has_tag(t))
            && self.routes[i].auto_cpu.is_some()
        {
            // Where it ran, as far as the name's placement now tells.
            let (io, cpu) = self.routes[i].worker_pools;
            let on_worker_pool = match self.learner.class(meta.name()) {
                Some(Class::Cpu) => cpu,
                _ => io,
            };
            self.learner.record_on(meta.name(), outcome, on_worker_pool);
        }
    }

    fn wants_cpu_time(&self) -> bool {
        self.has_auto
    }
}

impl ExecutorConfig {
    /// The executor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `backend` string.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The backend's own keys.
    pub fn options(&self) -> &BackendOptions {
        &self.options
    }

    /// Whether two versions of this table describe the same executor (same backend, same
    /// keys and values), so a reload can keep the running one.
    pub fn same_as(&self, other: &ExecutorConfig) -> bool {
        self.name == other.name
            && self.backend == other.backend
            && self.options.values() == other.options.values()
    }
}

impl RouteRule {
    /// What the rule matches.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Where and how a matching task runs (for `executor = "auto"`: on the I/O executor,
    /// where a task name starts).
    pub fn route(&self) -> &RouteSpec {
        &self.route
    }

    /// For `executor = "auto"`: the same route on the CPU executor.
    pub fn auto_cpu(&self) -> Option<&RouteSpec> {
        self.auto_cpu.as_deref()
    }

    /// For `executor = "auto"`: the route of a name whose polls block their worker.
    pub fn auto_blocking(&self) -> Option<&RouteSpec> {
        self.auto_blocking.as_deref()
    }
}

/// Turns a serde error from the schema layer into a `ConfigError` with a position.
fn schema_error(e: &toml::de::Error, text: &str, origin: &Path) -> ConfigError {
    let message = e.message().trim_end().replace('`', "\"");
    let kind = if message.starts_with("unknown field") {
        Kind::UnknownKey
    } else if message.starts_with("missing field") {
        Kind::MissingKey
    } else {
        Kind::InvalidValue
    };
    let message = message
        .replacen("unknown field", "unknown key", 1)
        .replacen("missing field", "missing key", 1)
        .replace("i64", "a whole number");
    // serde lists the expected keys as `"a", "b"` or `"a" or "b"`; say it our one way.
    let message = match message.split_once(", expected ") {
        Some((head, expected)) if kind == Kind::UnknownKey => {
            let list = expected
                .trim_start_matches("one of ")
                .replace(" or ", ", ")
                .replace('"', "");
            format!("{head}; expected one of: {list}")
        }
        Some((head, expected)) => format!("{head}; expected {expected}"),
        None => message,
    };
    let err = ConfigError::new(kind, origin, message);
    match e.span() {
        Some(span) => err.at(text, span),
        None => err,
    }
}

struct Validator<'a> {
    text: &'a Arc<str>,
    origin: &'a Path,
}

impl Validator<'_> {
    fn err(&self, kind: Kind, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(kind, self.origin, message).at(self.text, span)
    }

    fn invalid(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.err(Kind::InvalidValue, span, message)
    }

    fn policy(&self, raw: RawPolicy) -> Result<PolicyConfig, ConfigError> {
        let mut executors = Vec::new();
        for (name, table) in raw.executors.into_inner() {
            executors.push(self.executor(name, table)?);
        }
        let names: Vec<&str> = executors.iter().map(|e| e.name.as_str()).collect();

        let d = raw.defaults.into_inner();
        let mut defaults = RouteSpec::new(
            self.executor_ref(&d.executor, &names, "[defaults]")?,
            "defaults",
        );
        defaults.timeout = self.timeout(d.timeout.as_ref())?;
        defaults.retry = d.retries.map(|r| self.retries(r)).transpose()?;
        defaults.limit = d.limit.map(|l| self.limit(l)).transpose()?;
        defaults.priority = self.priority(d.priority.as_ref())?;

        let mut routes = Vec::new();
        for (i, route) in raw.route.into_iter().enumerate() {
            let number = i + 1;
            let where_ = format!("route {number}");
            let r = route.into_inner();
            let match_span = r.matcher.span();
            let m = r.matcher.into_inner();
            let tags = m
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(Spanned::into_inner)
                .collect();
            let glob = m.name.as_ref().map(|g| g.get_ref().as_str());
            let matcher = Matcher::new(glob, tags).map_err(|e| {
                let span = m.name.as_ref().map_or(match_span, Spanned::span);
                self.invalid(
                    span,
                    format!(
                        "invalid name glob \"{}\" in {where_}: {}",
                        glob.unwrap_or_default(),
                        e.kind()
                    ),
                )
            })?;
            let (executor, cpu, blocking) = match (&r.executor, &r.auto) {
                (Some(e), Some(pair)) if e.get_ref() == "auto" => {
                    let pair = pair.get_ref();
                    let io = self.executor_ref(&pair.io, &names, &format!("{where_} auto.io"))?;
                    let cpu =
                        self.executor_ref(&pair.cpu, &names, &format!("{where_} auto.cpu"))?;
                    let blocking = match &pair.blocking {
                        Some(b) => {
                            self.executor_ref(b, &names, &format!("{where_} auto.blocking"))?
                        }
                        None => io.clone(),
                    };
                    (io, Some(cpu), Some(blocking))
                }
                (Some(e), None) if e.get_ref() == "auto" => {
                    return Err(self.err(
                        Kind::MissingKey,
                        e.span(),
                        format!(
                            "executor = \"auto\" in {where_} needs a key \"auto\" naming the pair it picks from, e.g. auto = {{ io = \"io\", cpu = \"cpu\" }}"
                        ),
                    ));
                }
                (_, Some(pair)) => {
                    return Err(self.invalid(
                        pair.span(),
                        format!("key \"auto\" in {where_} needs executor = \"auto\""),
                    ));
                }
                (Some(e), None) => (self.executor_ref(e, &names, &where_)?, None, None),
                (None, None) => (defaults.executor().to_owned(), None, None),
            };
            let mut route = RouteSpec::new(executor, format!("route[{number}]"));
            route.timeout = match &r.timeout {
                Some(_) => self.timeout(r.timeout.as_ref())?,
                None => defaults.timeout,
            };
            route.retry = match r.retries {
                Some(x) => Some(self.retries(x)?),
                None => defaults.retry,
            };
            route.limit = match r.limit {
                Some(x) => Some(self.limit(x)?),
                None => defaults.limit,
            };
            route.priority = match &r.priority {
                Some(_) => self.priority(r.priority.as_ref())?,
                None => defaults.priority,
            };
            let holds = |name: &str| {
                executors
                    .iter()
                    .find(|e| e.name == name)
                    .is_some_and(|e| matches!(e.backend.as_str(), "tokio" | "rayon"))
            };
            let worker_pools = (holds(route.executor()), cpu.as_deref().is_some_and(&holds));
            let auto_cpu = cpu.map(|cpu| {
                let mut spec = route.clone();
                spec.route = Route::new(cpu, route.route.rule());
                Box::new(spec)
            });
            let auto_blocking = blocking.map(|blocking| {
                let mut spec = route.clone();
                spec.route = Route::new(blocking, route.route.rule());
                spec.on_thread = true;
                Box::new(spec)
            });
            routes.push(RouteRule {
                matcher,
                route,
                auto_cpu,
                auto_blocking,
                worker_pools,
            });
        }
        let has_auto = routes.iter().any(|r| r.auto_cpu.is_some());
        let settings = match raw.auto {
            Some(a) => self.auto_settings(a)?,
            None => AutoSettings::default(),
        };

        Ok(PolicyConfig {
            origin: self.origin.to_path_buf(),
            executors,
            defaults,
            routes,
            learner: Arc::new(Learner::new(settings)),
            has_auto,
        })
    }

    fn auto_settings(&self, raw: Spanned<RawAutoSettings>) -> Result<AutoSettings, ConfigError> {
        let raw = raw.into_inner();
        let mut s = AutoSettings::default();
        let share = |v: &Option<Spanned<f64>>, key: &str, default: f64| match v {
            None => Ok(default),
            Some(x) if (0.0..=1.0).contains(x.get_ref()) => Ok(*x.get_ref()),
            Some(x) => Err(self.invalid(
                x.span(),
                format!("auto.{key} must be between 0 and 1, found {}", x.get_ref()),
            )),
        };
        s.cpu_above = share(&raw.cpu_above, "cpu_above", s.cpu_above)?;
        s.io_below = share(&raw.io_below, "io_below", s.io_below)?;
        if s.io_below > s.cpu_above {
            let span = raw
                .io_below
                .as_ref()
                .or(raw.cpu_above.as_ref())
                .map(Spanned::span)
                .unwrap_or_default();
            return Err(self.invalid(
                span,
                format!(
                    "auto.io_below ({}) must not be above auto.cpu_above ({})",
                    s.io_below, s.cpu_above
                ),
            ));
        }
        s.decay = share(&raw.decay, "decay", s.decay)?;
        if let Some(d) = &raw.decay
            && *d.get_ref() == 0.0
        {
            return Err(self.invalid(d.span(), "auto.decay must be above 0"));
        }
        if let Some(m) = &raw.min_samples {
            s.min_samples = u32::try_from(*m.get_ref())
                .ok()
                .filter(|m| *m >= 1)
                .ok_or_else(|| {
                    self.invalid(
                        m.span(),
                        format!("auto.min_samples must be at least 1, found {}", m.get_ref()),
                    )
                })?;
        }
        if let Some(d) = &raw.poll_threshold {
            s.poll_threshold = self.duration(d, "auto.poll_threshold")?;
        }
        if let Some(d) = &raw.block_threshold {
            s.block_threshold = self.duration(d, "auto.block_threshold")?;
        }
        Ok(s)
    }

    fn executor(
        &self,
        name: Spanned<String>,
        table: Spanned<raw::RawExecutor>,
    ) -> Result<ExecutorConfig, ConfigError> {
        let table_span = table.span();
        let name_span = name.span();
        let name = name.into_inner();
        let mut backend = None;
        let mut options = BackendOptions::new(
            name.clone(),
            String::new(),
            self.origin.to_path_buf(),
            self.text.clone(),
            table_span.clone(),
        );
        for (key, value) in table.into_inner() {
            let key_span = key.span();
            let value_span = value.span();
            let key = key.into_inner();
            if key == "backend" {
                match value.into_inner() {
                    toml::Value::String(s) => backend = Some((s, value_span)),
                    other => {
                        return Err(self.invalid(
                            value_span,
                            format!(
                                "invalid type for backend of executor \"{name}\": expected a string, found {}",
                                other.type_str()
                            ),
                        ));
                    }
                }
            } else {
                options.insert(key, key_span, value_span, value.into_inner());
            }
        }
        let Some((backend, backend_span)) = backend else {
            return Err(self.err(
                Kind::MissingKey,
                name_span,
                format!("missing key \"backend\" in [executors.{name}]"),
            ));
        };
        options.set_backend(backend.clone());
        Ok(ExecutorConfig {
            name,
            backend,
            backend_span,
            options,
        })
    }

    fn executor_ref(
        &self,
        name: &Spanned<String>,
        known: &[&str],
        where_: &str,
    ) -> Result<String, ConfigError> {
        if known.contains(&name.get_ref().as_str()) {
            return Ok(name.get_ref().clone());
        }
        let expected = if known.is_empty() {
            "(no executors are defined)".to_owned()
        } else {
            known.join(", ")
        };
        Err(self.err(
            Kind::UnknownExecutor,
            name.span(),
            format!(
                "unknown executor \"{}\" in {where_}; expected one of: {expected}",
                name.get_ref()
            ),
        ))
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        values::parse_duration(value.get_ref())
            .map_err(|m| self.invalid(value.span(), format!("{m} for {key}")))
    }

    fn timeout(&self, value: Option<&Spanned<String>>) -> Result<Option<Duration>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) if v.get_ref() == "none" => Ok(None),
            Some(v) => {
                let d = self.duration(v, "timeout")?;
                if d.is_zero() {
                    return Err(self.invalid(
                        v.span(),
                        "timeout must be above zero; write \"none\" for no timeout",
                    ));
                }
                Ok(Some(d))
            }
        }
    }

    fn priority(&self, value: Option<&Spanned<i64>>) -> Result<Option<i8>, ConfigError> {
        value
            .map(|v| {
                i8::try_from(*v.get_ref()).map_err(|_| {
                    self.invalid(
                        v.span(),
                        format!(
                            "priority must be between -128 and 127, found {}",
                            v.get_ref()
                        ),
                    )
                })
            })
            .transpose()
    }

    fn retries(&self, raw: Spanned<RawRetries>) -> Result<RetryPolicy, ConfigError> {
        let raw = raw.into_inner();
        let max = u32::try_from(*raw.max.get_ref())
            .ok()
            .filter(|m| *m <= 1000)
            .ok_or_else(|| {
                self.invalid(
                    raw.max.span(),
                    format!(
                        "retries.max must be between 0 and 1000, found {}",
                        raw.max.get_ref()
                    ),
                )
            })?;
        let backoff = match &raw.backoff {
            Some(b) => self.duration(b, "retries.backoff")?,
            None => DEFAULT_BACKOFF,
        };
        let max_backoff = match &raw.max_backoff {
            Some(b) => {
                let d = self.duration(b, "retries.max_backoff")?;
                if d < backoff {
                    return Err(self.invalid(
                        b.span(),
                        "retries.max_backoff must not be shorter than retries.backoff",
                    ));
                }
                d
            }
            None => DEFAULT_MAX_BACKOFF.max(backoff),
        };
        Ok(RetryPolicy::new(
            max,
            backoff,
            max_backoff,
            raw.jitter.unwrap_or(true),
        ))
    }

    fn limit(&self, raw: Spanned<RawLimit>) -> Result<Limit, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let per = match &raw.per {
            None => LimitScope::Key,
            Some(p) => {
                match p.get_ref().as_str() {
                    "key" => LimitScope::Key,
                    "route" => LimitScope::Route,
                    other => {
                        return Err(self.invalid(
                        p.span(),
                        format!("invalid value \"{other}\" for limit.per; expected one of: key, route"),
                    ));
                    }
                }
            }
        };
        let concurrency = match &raw.concurrency {
            None => None,
            Some(c) => Some(
                u32::try_from(*c.get_ref())
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| {
                        self.invalid(
                            c.span(),
                            format!(
                                "limit.concurrency must be at least 1, found {}",
                                c.get_ref()
                            ),
                        )
                    })?,
            ),
        };
        let rate = match &raw.rate {
            None => None,
            Some(r) => {
                let (count, period) = values::parse_rate(r.get_ref())
                    .map_err(|m| self.invalid(r.span(), format!("{m} for limit.rate")))?;
                Some(Rate { count, per: period })
            }
        };
        if concurrency.is_none() && rate.is_none() {
            return Err(self.err(
                Kind::MissingKey,
                span,
                "limit needs a key \"concurrency\" or \"rate\" (or both)",
            ));
        }
        Ok(Limit::new(per, concurrency, rate))
    }
}
