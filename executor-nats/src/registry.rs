//! `backend = "nats"` for the supervisor's policy files, and workers started from one.

use crate::{NatsExecutor, Stop, Worker, WorkerReport};
use executor_core::{BoxError, Executor};
use named_tasks::{Codec, Tasks};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use supervisor::{BackendOptions, ConfigError, ExecutorPlan, PolicyConfig, Registry};

/// Adds `backend = "nats"` to `registry`:
///
/// | key | type | default | meaning |
/// |---|---|---|---|
/// | `url` | string | `"nats://127.0.0.1:4222"`, or `$SWITCHYARD_NATS_URL` | the server |
/// | `prefix` | string | `"switchyard"` | names of the stream, bucket, subjects |
/// | `attempts` | integer ≥ 1 | 3 | attempts before a task is dead-lettered |
/// | `backoff` | duration | `"1s"` | first retry's delay, doubled per retry |
/// | `in_flight` | integer ≥ 1 | 4096 | calls this process has sent and waits on at once (a waiting call holds no thread) |
/// | `codec` | `"json"` \| `"msgpack"` | `"json"` | how arguments and results travel |
/// | `lease` | duration | `"30s"` | workers: the consumers' `AckWait` (see [`run_policy_worker`]) |
/// | `slots` | integer ≥ 1 | 4 | workers: tasks one worker runs at once |
///
/// Workers are separate: [`Worker`](crate::Worker) with the same url and prefix, or
/// [`run_policy_worker`] with the same policy file.
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry.register("nats", configure)
}

/// The environment variable used as the server's url when the policy gives none.
pub const URL_ENV: &str = "SWITCHYARD_NATS_URL";

/// The url and prefix of an executor's options (both sides need them).
fn endpoint(opts: &BackendOptions) -> Result<(Option<String>, Option<String>), ConfigError> {
    let url = match opts.string("url")? {
        Some(url) => Some(url.to_owned()),
        None => std::env::var(URL_ENV).ok(),
    };
    let prefix = opts.string("prefix")?.map(str::to_owned);
    if let Some(p) = &prefix
        && crate::names::Names::new(p).is_err()
    {
        return Err(opts.error_at("prefix", "prefix must be letters, digits, '_' or '-'"));
    }
    Ok((url, prefix))
}

/// The worker's side of an executor's options.
fn worker_builder(
    opts: &BackendOptions,
    tasks: Tasks,
) -> Result<crate::WorkerBuilder, ConfigError> {
    let (url, prefix) = endpoint(opts)?;
    let mut w = Worker::builder(tasks);
    if let Some(url) = url {
        w = w.url(url);
    }
    if let Some(p) = prefix {
        w = w.prefix(p);
    }
    if let Some(d) = opts.duration("lease")? {
        w = w.ack_wait(d);
    }
    match opts.usize("slots")? {
        Some(0) => return Err(opts.error_at("slots", "slots must be at least 1")),
        Some(n) => w = w.parallel(n),
        None => {}
    }
    Ok(w)
}

fn configure(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
    let mut b = NatsExecutor::builder(opts.executor());
    let (url, prefix) = endpoint(opts)?;
    if let Some(url) = url {
        b = b.url(url);
    }
    if let Some(p) = prefix {
        b = b.prefix(p);
    }
    // Read here so that the file is checked where it is loaded; workers use them.
    worker_builder(opts, Tasks::new())?;
    if let Some(n) = opts.usize("attempts")? {
        if n == 0 {
            return Err(opts.error_at("attempts", "attempts must be at least 1"));
        }
        b = b.attempts(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if let Some(d) = opts.duration("backoff")? {
        b = b.backoff(d);
    }
    if let Some(n) = opts.usize("in_flight")? {
        if n == 0 {
            return Err(opts.error_at("in_flight", "in_flight must be at least 1"));
        }
        b = b.in_flight(n);
    }
    let names: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
    if let Some(c) = opts.choice("codec", &names)? {
        b = b.codec(Codec::from_name(c).expect("one of the choices"));
    }
    Ok(Box::new(move || {
        Ok(Arc::new(b.build()?) as Arc<dyn Executor>)
    }))
}

/// Worker mode against a policy file: runs a [`Worker`] with `tasks` against the server
/// and prefix of the nats executor called `executor` (or the first one) in the policy at
/// `path`, with its `lease` and `slots`, until `stop` says how to stop. Run it in as many
/// processes, on as many machines, as you like.
pub fn run_policy_worker(
    path: &Path,
    executor: Option<&str>,
    tasks: Tasks,
    stop: impl Future<Output = Stop>,
) -> Result<WorkerReport, BoxError> {
    let policy = PolicyConfig::from_file(path)?;
    let e = policy
        .executors()
        .iter()
        .find(|e| e.backend() == "nats" && executor.is_none_or(|n| e.options().executor() == n))
        .ok_or_else(|| {
            format!(
                "{} has no nats executor{}",
                policy.origin().display(),
                executor
                    .map(|n| format!(" called '{n}'"))
                    .unwrap_or_default()
            )
        })?;
    Ok(worker_builder(e.options(), tasks)?.build().run_with(stop)?)
}
