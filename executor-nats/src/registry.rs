//! `backend = "nats"` for the supervisor's policy files.

use crate::NatsExecutor;
use executor_core::Executor;
use named_tasks::Codec;
use std::sync::Arc;
use supervisor::{BackendOptions, ConfigError, ExecutorPlan, Registry};

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
///
/// Workers are separate: [`Worker`](crate::Worker) with the same url and prefix.
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry.register("nats", configure)
}

fn configure(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
    let mut b = NatsExecutor::builder(opts.executor());
    match opts.string("url")? {
        Some(url) => b = b.url(url),
        None => {
            if let Ok(url) = std::env::var("SWITCHYARD_NATS_URL") {
                b = b.url(url);
            }
        }
    }
    if let Some(p) = opts.string("prefix")? {
        if crate::names::Names::new(p).is_err() {
            return Err(opts.error_at("prefix", "prefix must be letters, digits, '_' or '-'"));
        }
        b = b.prefix(p);
    }
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
