//! `backend = "process"` for the supervisor's policy files.

use crate::ProcessExecutor;
use executor_core::Executor;
use named_tasks::Codec;
use std::sync::Arc;
use supervisor::{BackendOptions, ConfigError, ExecutorPlan, Registry};

/// Adds `backend = "process"` to `registry`:
///
/// | key | type | default | meaning |
/// |---|---|---|---|
/// | `workers` | integer ≥ 1 | 2 | worker processes |
/// | `max_tasks_per_child` | integer ≥ 1 | none | replace a worker after this many tasks |
/// | `memory_limit` | `"512MiB"`, `"2GiB"`, `"100MB"` or bytes | none | per-worker address space (`RLIMIT_AS`) |
/// | `start_timeout` | duration | `"10s"` | time a new worker has to say hello |
/// | `codec` | `"json"` \| `"msgpack"` | `"json"` | how arguments and results travel |
///
/// ```no_run
/// let mut registry = supervisor::Registry::with_builtins();
/// executor_process::register(&mut registry);
/// let sup = supervisor::Supervisor::with_registry(
///     supervisor::PolicyConfig::parse(r#"
///         [executors.pool]
///         backend = "process"
///         workers = 2
///         [defaults]
///         executor = "pool"
///     "#, "policy.toml")?,
///     registry,
/// )?;
/// # Ok::<(), supervisor::ConfigError>(())
/// ```
pub fn register(registry: &mut Registry) -> &mut Registry {
    registry.register("process", configure)
}

fn configure(opts: &BackendOptions) -> Result<ExecutorPlan, ConfigError> {
    let mut b = ProcessExecutor::builder(opts.executor());
    if let Some(w) = opts.usize("workers")? {
        if w == 0 {
            return Err(opts.error_at("workers", "workers must be at least 1"));
        }
        b = b.workers(w);
    }
    if let Some(n) = opts.usize("max_tasks_per_child")? {
        if n == 0 {
            return Err(opts.error_at(
                "max_tasks_per_child",
                "max_tasks_per_child must be at least 1; leave it out to never recycle",
            ));
        }
        b = b.max_tasks_per_child(Some(n as u64));
    }
    if let Some(v) = opts.raw("memory_limit") {
        let bytes = match (v.as_integer(), v.as_str()) {
            (Some(n), _) if n > 0 => Some(n as u64),
            (_, Some(s)) => parse_bytes(s),
            _ => None,
        };
        match bytes {
            Some(n) if n >= 1 << 20 => b = b.memory_limit(Some(n)),
            _ => {
                return Err(opts.error_at(
                    "memory_limit",
                    "memory_limit must be a size of at least 1MiB, such as \"512MiB\", \
                     \"2GiB\", \"100MB\", or a number of bytes",
                ));
            }
        }
    }
    if let Some(d) = opts.duration("start_timeout")? {
        b = b.start_timeout(d);
    }
    let names: Vec<&str> = Codec::ALL.iter().map(|c| c.name()).collect();
    if let Some(c) = opts.choice("codec", &names)? {
        b = b.codec(Codec::from_name(c).expect("one of the choices"));
    }
    Ok(Box::new(move || {
        Ok(Arc::new(b.build()?) as Arc<dyn Executor>)
    }))
}

/// `"512MiB"` → bytes. Units: B, KB, MB, GB (powers of 1000), KiB, MiB, GiB (of 1024).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_their_units() {
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("2 GiB"), Some(2 << 30));
        assert_eq!(parse_bytes("100MB"), Some(100_000_000));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("12 parsecs"), None);
        assert_eq!(parse_bytes("MiB"), None);
    }
}
