//! The backend-specific keys of one `[executors.NAME]` table, read by the backend's factory.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::error::{ConfigError, Kind};
use super::values::parse_duration;

/// The keys of one `[executors.NAME]` table other than `backend`, with their positions.
///
/// A backend factory reads the keys it knows with the typed getters (`usize`, `string`,
/// `choice`, ...). Every getter error, and every key left unread when the factory returns,
/// becomes a [`ConfigError`] that points at the right line and column of the policy file;
/// the "expected one of" list for an unknown key is the set of keys the factory asked for.
#[derive(Debug)]
pub struct BackendOptions {
    executor: String,
    backend: String,
    origin: PathBuf,
    text: Arc<str>,
    table_span: Range<usize>,
    entries: BTreeMap<String, Entry>,
    asked: Mutex<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Entry {
    key_span: Range<usize>,
    value_span: Range<usize>,
    value: toml::Value,
}

impl Clone for BackendOptions {
    fn clone(&self) -> Self {
        BackendOptions {
            executor: self.executor.clone(),
            backend: self.backend.clone(),
            origin: self.origin.clone(),
            text: self.text.clone(),
            table_span: self.table_span.clone(),
            entries: self.entries.clone(),
            asked: Mutex::new(Vec::new()),
        }
    }
}

impl BackendOptions {
    pub(crate) fn new(
        executor: String,
        backend: String,
        origin: PathBuf,
        text: Arc<str>,
        table_span: Range<usize>,
    ) -> Self {
        BackendOptions {
            executor,
            backend,
            origin,
            text,
            table_span,
            entries: BTreeMap::new(),
            asked: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn insert(
        &mut self,
        key: String,
        key_span: Range<usize>,
        value_span: Range<usize>,
        value: toml::Value,
    ) {
        self.entries.insert(
            key,
            Entry {
                key_span,
                value_span,
                value,
            },
        );
    }

    pub(crate) fn set_backend(&mut self, backend: String) {
        self.backend = backend;
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The executor's name (the `NAME` of `[executors.NAME]`).
    pub fn executor(&self) -> &str {
        &self.executor
    }

    /// The `backend` string of the table.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The raw value of `key`, if present (marks the key as known).
    pub fn raw(&self, key: &str) -> Option<&toml::Value> {
        self.ask(key);
        self.entries.get(key).map(|e| &e.value)
    }

    /// The keys and values as written, for comparing two versions of a policy.
    pub fn values(&self) -> BTreeMap<&str, &toml::Value> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), &e.value))
            .collect()
    }

    /// A non-negative integer option; `None` when absent.
    pub fn usize(&self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => usize::try_from(*n)
                .map(Some)
                .map_err(|_| self.error_at(key, format!("{key} must be zero or more, found {n}"))),
            Some(other) => Err(self.type_error(key, "a whole number", other)),
        }
    }

    /// A boolean option; `None` when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.type_error(key, "true or false", other)),
        }
    }

    /// A string option; `None` when absent.
    pub fn string(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.type_error(key, "a string", other)),
        }
    }

    /// A duration option written like `"30s"`; `None` when absent.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => parse_duration(s)
                .map(Some)
                .map_err(|m| self.error_at(key, format!("{m} for {key}"))),
        }
    }

    /// A string option that must be one of `choices`; `None` when absent.
    pub fn choice(&self, key: &str, choices: &[&str]) -> Result<Option<&str>, ConfigError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) if choices.contains(&s) => Ok(Some(s)),
            Some(s) => Err(self.error_at(
                key,
                format!(
                    "invalid value \"{s}\" for {key}; expected one of: {}",
                    choices.join(", ")
                ),
            )),
        }
    }

    /// An "invalid value" error pointing at the value of `key` (or at the table when the
    /// key is absent), for checks a factory makes itself.
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let span = self
            .entries
            .get(key)
            .map_or(self.table_span.clone(), |e| e.value_span.clone());
        ConfigError::new(Kind::InvalidValue, &self.origin, message).at(&self.text, span)
    }

    /// A "build" error: the options were fine but the executor could not be created.
    pub fn build_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> ConfigError {
        ConfigError::new(
            Kind::Build,
            &self.origin,
            format!(
                "cannot build executor \"{}\" (backend \"{}\"): {source}",
                self.executor, self.backend
            ),
        )
        .at(&self.text, self.table_span.clone())
        .with_source(Arc::from(source))
    }

    fn type_error(&self, key: &str, expected: &str, found: &toml::Value) -> ConfigError {
        self.error_at(
            key,
            format!(
                "invalid type for {key}: expected {expected}, found {}",
                found.type_str()
            ),
        )
    }

    fn ask(&self, key: &str) {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if !asked.iter().any(|k| k == key) {
            asked.push(key.to_owned());
        }
    }

    /// Errors on the first key the factory never asked for.
    pub(crate) fn finish(&self) -> Result<(), ConfigError> {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let unknown = self
            .entries
            .iter()
            .filter(|(k, _)| !asked.contains(k))
            .min_by_key(|(_, e)| e.key_span.start);
        match unknown {
            None => Ok(()),
            Some((key, entry)) => {
                let mut expected: Vec<&str> = asked.iter().map(String::as_str).collect();
                expected.push("backend");
                expected.sort_unstable();
                Err(ConfigError::new(
                    Kind::UnknownKey,
                    &self.origin,
                    format!(
                        "unknown key \"{key}\" in [executors.{}] for backend \"{}\"; expected one of: {}",
                        self.executor,
                        self.backend,
                        expected.join(", ")
                    ),
                )
                .at(&self.text, entry.key_span.clone()))
            }
        }
    }
}
