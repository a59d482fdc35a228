//! `backend = "sqlite"` for the supervisor's policy files, and workers started from one.

use crate::{Builder, Durability, RouteConfig, SqliteExecutor, WorkerControl};
use executor_core::{BoxError, Executor};
use named_tasks::{Codec, Tasks};
use std::path::Path;
use std::sync::Arc;
use supervisor::{BackendOptions, ConfigError, ExecutorPlan, PolicyConfig, Registry};

/// The environment variable that, when set, replaces the `path` of every sqlite executor
/// (tests and demos point a policy at a directory of their own with it).
pub const PATH_ENV: &str = "SWITCHYARD_SQLITE_PATH";

/// Adds `backend = "sqlite"` to `registry`:
///
/// | key | type | default | meaning |
/// |---|---|---|---|
/// | `path` | string | `"switchyard-queue.sqlite3"` | the queue's file (`SWITCHYARD_SQLITE_PATH` overrides) |
/// | `lease` | duration | `"10s"` | a claim's life without renewal |
/// | `slots` | integer ≥ 1 | 4 | tasks one worker runs at once |
/// | `submitters` | integer ≥ 1 | 64 | ignored (older files): calls wait in a table, not on threads |
/// | `poll` | duration | `"2ms"` | first interval of polling for other processes' work (backs off to 50 ms) |
/// | `durability` | `"normal"` \| `"full"` | `"normal"` | `full` fsyncs every commit |
/// | `codec` | `"json"` \| `"msgpack"` | `"json"` | how arguments and results are stored |
/// | `attempts` | integer ≥ 1 | 3 | attempts before a task is dead-lettered |
/// | `backoff` | duration | `"10ms"` | delay after the first failure, doubling |
/// | `routes` | table by task name | none | `attempts`, `backoff`, `concurrency`, `key_concurrency` per task name |
///
/// ```toml
/// [executors.queue]
/// backend = "sqlite"
/// path = ".switchyard-cache/queue.sqlite3"
/// routes."mail.send" = { attempts = 5, backoff = "200ms", concurrency = 4, key_concurrency = 1 }
/// ```
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry.register("sqlite", configure)
}

fn configure(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
    let b = builder(opts)?;
    Ok(Box::new(move || {
        Ok(Arc::new(b.build()?) as Arc<dyn Executor>)
    }))
}

fn positive(opts: &BackendOptions, key: &str) -> Result<Option<usize>, ConfigError> {
    match opts.usize(key)? {
        Some(0) => Err(opts.error_at(key, format!("{key} must be at least 1"))),
        n => Ok(n),
    }
}

/// `"200ms"`, `"5s"`, `"2m"` → a duration (the forms a route table uses).
fn humantime_like(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit.trim() {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        _ => return None,
    })
}

fn builder(opts: &BackendOptions) -> Result<Builder, ConfigError> {
    let mut b = SqliteExecutor::builder(opts.executor());
    if let Some(p) = opts.string("path")? {
        b = b.path(p);
    }
    if let Some(p) = std::env::var_os(PATH_ENV) {
        b = b.path(p);
    }
    if let Some(d) = opts.duration("lease")? {
        b = b.lease(d);
    }
    if let Some(n) = positive(opts, "slots")? {
        b = b.slots(n);
    }
    if let Some(n) = positive(opts, "submitters")? {
        b = b.submitters(n);
    }
    if let Some(d) = opts.duration("poll")? {
        b = b.poll(d);
    }
    if let Some(d) = opts.choice("durability", &["normal", "full"])? {
        b = b.durability(if d == "full" {
            Durability::Full
        } else {
            Durability::Normal
        });
    }
    let names: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
    if let Some(c) = opts.choice("codec", &names)? {
        b = b.codec(Codec::from_name(c).expect("one of the choices"));
    }
    let mut default = RouteConfig::new("*");
    if let Some(n) = positive(opts, "attempts")? {
        default.attempts = n as u32;
    }
    if let Some(d) = opts.duration("backoff")? {
        default.backoff = d;
    }
    b = b.default_route(default.clone());
    if let Some(routes) = opts.raw("routes") {
        let bad = |m: String| opts.error_at("routes", m);
        let table = routes
            .as_table()
            .ok_or_else(|| bad("routes must be a table by task name".into()))?;
        for (name, v) in table {
            let t = v
                .as_table()
                .ok_or_else(|| bad(format!("routes.\"{name}\" must be a table")))?;
            let mut r = default.clone();
            r.name = name.clone();
            for (k, v) in t {
                let count = || {
                    v.as_integer()
                        .filter(|n| *n >= 1)
                        .map(|n| n as u32)
                        .ok_or_else(|| bad(format!("routes.\"{name}\".{k} must be at least 1")))
                };
                match k.as_str() {
                    "attempts" => r.attempts = count()?,
                    "concurrency" => r.concurrency = Some(count()?),
                    "key_concurrency" => r.key_concurrency = Some(count()?),
                    "backoff" => {
                        r.backoff = v.as_str().and_then(humantime_like).ok_or_else(|| {
                            bad(format!(
                                "routes.\"{name}\".backoff must be a duration such as \"200ms\""
                            ))
                        })?
                    }
                    _ => {
                        return Err(bad(format!(
                            "routes.\"{name}\" has an unknown key '{k}' (expected one of \
                             attempts, backoff, concurrency, key_concurrency)"
                        )));
                    }
                }
            }
            b = b.route(r);
        }
    }
    Ok(b)
}

/// The builder of the sqlite executor called `executor` in `policy` (the first sqlite
/// executor when `None`), as the policy file configures it.
pub fn builder_from_policy(
    policy: &PolicyConfig,
    executor: Option<&str>,
) -> Result<Builder, BoxError> {
    let e = policy
        .executors()
        .iter()
        .find(|e| e.backend() == "sqlite" && executor.is_none_or(|n| e.options().executor() == n))
        .ok_or_else(|| {
            format!(
                "{} has no sqlite executor{}",
                policy.origin().display(),
                executor
                    .map(|n| format!(" called '{n}'"))
                    .unwrap_or_default()
            )
        })?;
    Ok(builder(e.options())?)
}

/// Worker mode against a policy file: opens the queue of the sqlite executor called
/// `executor` (or the first one) in the policy at `path` and runs a worker with `tasks`
/// until `control` stops it. Run it in as many processes as you like.
pub fn run_policy_worker(
    path: &Path,
    executor: Option<&str>,
    tasks: Tasks,
    control: &WorkerControl,
) -> Result<(), BoxError> {
    let policy = PolicyConfig::from_file(path)?;
    let queue = builder_from_policy(&policy, executor)?
        .submitters(1)
        .build()?;
    queue.run_worker(tasks, control)
}

#[cfg(test)]
mod tests {
    use super::humantime_like;
    use std::time::Duration;

    #[test]
    fn route_durations_parse() {
        assert_eq!(humantime_like("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(humantime_like("5s"), Some(Duration::from_secs(5)));
        assert_eq!(humantime_like("2m"), Some(Duration::from_secs(120)));
        assert_eq!(humantime_like("soon"), None);
    }
}
