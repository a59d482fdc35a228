//! The policy file: parsing, validation, and the checked model the supervisor runs on.
//!
//! Two layers, as in ripgrep's `lowargs`/`hiargs`: [`raw`] holds serde types that mirror
//! the TOML (with spans), and this module validates them into [`PolicyConfig`]. Nothing
//! else in the crate sees raw TOML. Backend-specific keys stay as [`BackendOptions`]
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

use toml::Spanned;

pub use self::error::ConfigError;
use self::error::Kind;
pub use self::options::BackendOptions;
use self::raw::{RawLimit, RawPolicy, RawRetries};
use crate::routing::{self, Explanation, Matcher};

/// A validated policy file: executors, defaults and ordered routes.
///
/// Building one checks everything that does not depend on which backends are registered;
/// the backend keys are checked when a [`Registry`](crate::Registry) prepares the executors.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    origin: PathBuf,
    executors: Vec<ExecutorConfig>,
    defaults: RouteSettings,
    routes: Vec<RouteRule>,
}

/// One `[executors.NAME]` table.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    name: String,
    backend: String,
    backend_span: Range<usize>,
    options: BackendOptions,
}

/// What a route decides beyond matching: where a task runs and how.
///
/// Keys a `[[route]]` leaves out take their value from `[defaults]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSettings {
    executor: String,
    timeout: Option<Duration>,
    retries: Option<RetryPolicy>,
    limit: Option<LimitPolicy>,
}

/// One `[[route]]`: a matcher and its settings.
#[derive(Debug, Clone)]
pub struct RouteRule {
    matcher: Matcher,
    settings: RouteSettings,
}

/// `retries = { max, backoff, max_backoff, jitter }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max: u32,
    backoff: Duration,
    max_backoff: Duration,
    jitter: bool,
}

/// Whose budget a limit counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// Each distinct task key (e.g. a host) has its own budget within the route;
    /// tasks without a key share one.
    Key,
    /// All tasks of the route share one budget.
    Route,
}

/// `limit = { per, concurrency, rate, burst }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    per: LimitScope,
    concurrency: Option<NonZeroU32>,
    rate: Option<Rate>,
}

/// A rate such as `"20/s"`: `count` task starts per `period`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
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

    /// The `[defaults]` settings: where and how a task that matches no route runs.
    pub fn defaults(&self) -> &RouteSettings {
        &self.defaults
    }

    /// The `[[route]]` rules in file order.
    pub fn routes(&self) -> &[RouteRule] {
        &self.routes
    }

    /// The settings for a task with this name and these tags: the first matching route's,
    /// or the defaults. Routing is total: every task gets settings.
    pub fn select<S: AsRef<str>>(&self, name: &str, tags: &[S]) -> &RouteSettings {
        match self.select_index(name, tags) {
            Some(i) => &self.routes[i].settings,
            None => &self.defaults,
        }
    }

    /// The 0-based index of the first matching route, `None` for the defaults.
    pub fn select_index<S: AsRef<str>>(&self, name: &str, tags: &[S]) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.matcher.matches(name, tags))
    }

    /// Which route a task with this name and these tags takes, and why.
    pub fn explain_parts<S: AsRef<str>>(&self, name: &str, tags: &[S]) -> Explanation {
        routing::explain(
            self.routes
                .iter()
                .map(|r| (&r.matcher, r.settings.executor.as_str())),
            &self.defaults.executor,
            name,
            tags,
        )
    }

    /// The position of the `backend` value of executor `name`, for registry errors.
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

impl RouteSettings {
    /// The executor's name.
    pub fn executor(&self) -> &str {
        &self.executor
    }

    /// The timeout per attempt, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The retry policy, if any.
    pub fn retries(&self) -> Option<&RetryPolicy> {
        self.retries.as_ref()
    }

    /// The limit, if any.
    pub fn limit(&self) -> Option<&LimitPolicy> {
        self.limit.as_ref()
    }
}

impl RouteRule {
    /// What the route matches.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// What the route decides.
    pub fn settings(&self) -> &RouteSettings {
        &self.settings
    }
}

impl RetryPolicy {
    /// A retry policy; `backoff` doubles per retry up to `max_backoff`.
    pub fn new(max: u32, backoff: Duration, max_backoff: Duration, jitter: bool) -> Self {
        RetryPolicy {
            max,
            backoff,
            max_backoff: max_backoff.max(backoff),
            jitter,
        }
    }

    /// How many times a failed task is re-run (so at most `max + 1` attempts).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The wait before the first retry.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// The cap on the wait between retries.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Whether waits are randomised.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The wait before retry number `retry` (1 for the first retry): `backoff * 2^(retry-1)`
    /// capped at `max_backoff`. With jitter, a uniform pick in `[wait/2, wait]` driven by
    /// `unit` (a number in `[0, 1)`), so retries of many tasks spread out but never come
    /// sooner than half the nominal wait.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let shift = retry.saturating_sub(1).min(31);
        let nominal = self
            .backoff
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        if self.jitter {
            nominal.div_f64(2.0) + nominal.div_f64(2.0).mul_f64(unit.clamp(0.0, 1.0))
        } else {
            nominal
        }
    }
}

impl LimitPolicy {
    /// Whose budget the limit counts against.
    pub fn per(&self) -> LimitScope {
        self.per
    }

    /// The most tasks of one budget running at once.
    pub fn concurrency(&self) -> Option<NonZeroU32> {
        self.concurrency
    }

    /// The most task starts of one budget per period.
    pub fn rate(&self) -> Option<&Rate> {
        self.rate.as_ref()
    }
}

impl Rate {
    /// Task starts allowed per `period`.
    pub fn count(&self) -> NonZeroU32 {
        self.count
    }

    /// The period of [`Rate::count`].
    pub fn period(&self) -> Duration {
        self.period
    }

    /// How many starts may come back to back after an idle spell.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The steady spacing between starts: `period / count`.
    pub fn interval(&self) -> Duration {
        self.period / self.count.get()
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
        let defaults = RouteSettings {
            executor: self.executor_ref(&d.executor, &names, "[defaults]")?,
            timeout: self.timeout(d.timeout.as_ref())?,
            retries: d.retries.map(|r| self.retries(r)).transpose()?,
            limit: d.limit.map(|l| self.limit(l)).transpose()?,
        };

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
            let settings = RouteSettings {
                executor: match &r.executor {
                    Some(e) => self.executor_ref(e, &names, &where_)?,
                    None => defaults.executor.clone(),
                },
                timeout: match &r.timeout {
                    Some(_) => self.timeout(r.timeout.as_ref())?,
                    None => defaults.timeout,
                },
                retries: match r.retries {
                    Some(x) => Some(self.retries(x)?),
                    None => defaults.retries,
                },
                limit: match r.limit {
                    Some(x) => Some(self.limit(x)?),
                    None => defaults.limit,
                },
            };
            routes.push(RouteRule { matcher, settings });
        }

        Ok(PolicyConfig {
            origin: self.origin.to_path_buf(),
            executors,
            defaults,
            routes,
        })
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

    fn limit(&self, raw: Spanned<RawLimit>) -> Result<LimitPolicy, ConfigError> {
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
        let burst = match &raw.burst {
            None => NonZeroU32::MIN,
            Some(b) => {
                if raw.rate.is_none() {
                    return Err(self.invalid(b.span(), "limit.burst needs a limit.rate"));
                }
                u32::try_from(*b.get_ref())
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| {
                        self.invalid(
                            b.span(),
                            format!("limit.burst must be at least 1, found {}", b.get_ref()),
                        )
                    })?
            }
        };
        let rate = match &raw.rate {
            None => None,
            Some(r) => {
                let (count, period) = values::parse_rate(r.get_ref())
                    .map_err(|m| self.invalid(r.span(), format!("{m} for limit.rate")))?;
                Some(Rate {
                    count,
                    period,
                    burst,
                })
            }
        };
        if concurrency.is_none() && rate.is_none() {
            return Err(self.err(
                Kind::MissingKey,
                span,
                "limit needs a key \"concurrency\" or \"rate\" (or both)",
            ));
        }
        Ok(LimitPolicy {
            per,
            concurrency,
            rate,
        })
    }
}
