//! Turning a policy file into the executor the crawler submits to.
//!
//! Interim: the supervisor has not landed yet, so this builds a threads executor directly
//! and reads nothing from the file. Swapped for `supervisor::Supervisor` when it lands.

use super::Loaded;
use anyhow::Result;
use std::sync::Arc;

/// Builds the executor for a policy.
pub(super) fn load(origin: &str, _text: &str) -> Result<Loaded> {
    let exec: Arc<dyn executor_core::Executor> = if origin.contains("tokio") {
        Arc::new(
            executor_tokio::TokioExecutor::builder("net")
                .worker_threads(2)
                .build()?,
        )
    } else {
        Arc::new(
            executor_threads::ThreadsExecutor::builder("io")
                .workers(48)
                .build()?,
        )
    };
    Ok(Loaded {
        exec,
        per_host_limit: Some(4),
        per_host_rate: None,
        executor_name: "io".into(),
    })
}

/// Shuts the executor down gracefully.
pub(super) fn shutdown(loaded: &Loaded) {
    let _ = loaded.exec.shutdown(executor_core::ShutdownMode::Graceful(
        std::time::Duration::from_secs(5),
    ));
}
