//! Turning a policy file into the executor the crawler submits to: the supervisor.
//!
//! The demo never parses the policy itself; it asks the supervisor which route a fetch
//! task takes, to report the per-host limits next to what the site's referee saw.

use super::Loaded;
use super::crawl::FETCH_TASK;
use anyhow::{Context, Result};
use executor_core::{Executor, ShutdownMode};
use std::time::Duration;
use supervisor::LimitScope;

/// Starts a supervisor for the policy `text` (`origin` names it in errors).
pub(super) fn load(origin: &str, text: &str) -> Result<Loaded> {
    // The error names the file, line and column already.
    let config = supervisor::PolicyConfig::parse(text, origin)?;
    let route = config.select(FETCH_TASK, &[] as &[&str]).clone();
    let sup = supervisor::Supervisor::new(config)
        .with_context(|| format!("starting the executors of policy {origin}"))?;
    let per_key = route.limit.filter(|l| l.scope == LimitScope::Key);
    Ok(Loaded {
        per_host_limit: per_key.and_then(|l| l.concurrency).map(|c| c.get()),
        per_host_rate: per_key
            .and_then(|l| l.rate)
            .map(|r| f64::from(r.count.get()) / r.per.as_secs_f64()),
        executor_name: route.executor().to_owned(),
        exec: sup,
    })
}

/// Shuts the supervisor down gracefully, logging anything that did not finish.
pub(super) fn shutdown(loaded: &Loaded) {
    let report = loaded
        .exec
        .shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    tracing::debug!(?report, "supervisor shut down");
}
