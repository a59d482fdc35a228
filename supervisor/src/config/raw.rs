//! The policy file exactly as written: serde types with spans, no meaning attached yet.
//!
//! Like ripgrep's `lowargs`, nothing outside `config` sees these types; `config::validate`
//! turns them into the checked model.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// An `[executors.NAME]` table: `backend` plus the backend's own keys, each with its span.
pub(crate) type RawExecutor = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy: [executors.NAME] tables, a [defaults] table and [[route]] tables"
)]
pub(crate) struct RawPolicy {
    pub(crate) executors: Spanned<BTreeMap<Spanned<String>, Spanned<RawExecutor>>>,
    pub(crate) defaults: Spanned<RawDefaults>,
    #[serde(default)]
    pub(crate) route: Vec<Spanned<RawRoute>>,
    pub(crate) auto: Option<Spanned<RawAutoSettings>>,
}

/// `[auto]`: how routes with `executor = "auto"` learn.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an [auto] table such as { cpu_above = 0.8, min_samples = 20 }"
)]
pub(crate) struct RawAutoSettings {
    pub(crate) cpu_above: Option<Spanned<f64>>,
    pub(crate) io_below: Option<Spanned<f64>>,
    pub(crate) min_samples: Option<Spanned<i64>>,
    pub(crate) decay: Option<Spanned<f64>>,
    pub(crate) poll_threshold: Option<Spanned<String>>,
    pub(crate) block_threshold: Option<Spanned<String>>,
}

/// A route's `auto = { io = "...", cpu = "..." }`: the pair `executor = "auto"` picks from.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { io = \"io\", cpu = \"cpu\" }"
)]
pub(crate) struct RawAuto {
    pub(crate) io: Spanned<String>,
    pub(crate) cpu: Spanned<String>,
    pub(crate) blocking: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [defaults] table with executor = \"NAME\""
)]
pub(crate) struct RawDefaults {
    pub(crate) executor: Spanned<String>,
    pub(crate) priority: Option<Spanned<i64>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) retries: Option<Spanned<RawRetries>>,
    pub(crate) limit: Option<Spanned<RawLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[route]] table with match = { name = \"GLOB\" } and executor = \"NAME\""
)]
pub(crate) struct RawRoute {
    #[serde(rename = "match")]
    pub(crate) matcher: Spanned<RawMatch>,
    pub(crate) executor: Option<Spanned<String>>,
    pub(crate) auto: Option<Spanned<RawAuto>>,
    pub(crate) priority: Option<Spanned<i64>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) retries: Option<Spanned<RawRetries>>,
    pub(crate) limit: Option<Spanned<RawLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { name = \"scrape.*\" } or { tags = [\"cpu\"] }"
)]
pub(crate) struct RawMatch {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) tags: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { max = 3, backoff = \"100ms\" }"
)]
pub(crate) struct RawRetries {
    pub(crate) max: Spanned<i64>,
    pub(crate) backoff: Option<Spanned<String>>,
    pub(crate) max_backoff: Option<Spanned<String>>,
    pub(crate) jitter: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table such as { concurrency = 4 } or { per = \"key\", rate = \"20/s\" }"
)]
pub(crate) struct RawLimit {
    pub(crate) per: Option<Spanned<String>>,
    pub(crate) concurrency: Option<Spanned<i64>>,
    pub(crate) rate: Option<Spanned<String>>,
}
