//! Worker mode: this binary serving the job tasks for the durable executors of a policy.
//!
//! The queue, the leases, the retries and the dead letters are the backends' own
//! (`executor-sqlite`, `executor-nats`); a worker here only says which tasks it knows
//! ([`kinds::tasks`]) and runs each durable executor's worker loop
//! from the policy file, one thread per executor, until Ctrl-C or SIGTERM asks it to
//! drain: claim nothing more, finish and record what runs, exit.

use super::kinds;
use anyhow::{Context, Result, bail};
use executor_nats::Stop;
use executor_sqlite::WorkerControl;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A durable executor of a policy file: its name and backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durable {
    /// The executor's name in the file.
    pub executor: String,
    /// `"sqlite"` or `"nats"`.
    pub backend: String,
    /// For nats: whether the file (or `SWITCHYARD_NATS_URL`) names a server.
    pub has_url: bool,
}

/// The backends whose tasks wait in a durable queue for worker processes.
pub const DURABLE_BACKENDS: &[&str] = &["sqlite", "nats"];

/// The durable executors of the policy at `path` (none for an in-process or process
/// policy: its tasks run inside the submitting process or its pool).
pub fn durable_executors(path: &Path) -> Result<Vec<Durable>> {
    let policy = supervisor::PolicyConfig::from_file(path)
        .with_context(|| format!("cannot load policy {}", path.display()))?;
    let mut out = Vec::new();
    for e in policy.executors() {
        if DURABLE_BACKENDS.contains(&e.backend()) {
            let has_url = e.options().raw("url").is_some()
                || std::env::var_os(executor_nats::URL_ENV).is_some();
            out.push(Durable {
                executor: e.options().executor().to_owned(),
                backend: e.backend().to_owned(),
                has_url,
            });
        }
    }
    Ok(out)
}

/// Runs the workers of every durable executor in `policy` until `stop` is set, then
/// drains them. Fails when the policy has none.
pub fn run(policy: &Path, stop: &Arc<AtomicBool>) -> Result<()> {
    let durable = durable_executors(policy)?;
    if durable.is_empty() {
        bail!(
            "{} has no durable executor (backend sqlite or nats): its tasks run in the \
             process that submits them, so there is nothing for a worker to do",
            policy.display()
        );
    }
    let control = WorkerControl::new();
    let mut threads = Vec::new();
    for d in durable {
        let (policy, control, stop) = (PathBuf::from(policy), control.clone(), stop.clone());
        let name = format!("worker-{}", d.executor);
        let t = std::thread::Builder::new()
            .name(name)
            .spawn(move || -> Result<()> {
                tracing::info!(executor = %d.executor, backend = %d.backend, "worker started");
                match d.backend.as_str() {
                    "sqlite" => executor_sqlite::run_policy_worker(
                        &policy,
                        Some(&d.executor),
                        kinds::tasks(),
                        &control,
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                    _ => {
                        let report = executor_nats::run_policy_worker(
                            &policy,
                            Some(&d.executor),
                            kinds::tasks(),
                            async move {
                                while !stop.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                }
                                Stop::Drain
                            },
                        )
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                        tracing::info!(?report, "nats worker drained");
                    }
                }
                tracing::info!(executor = %d.executor, "worker stopped");
                Ok(())
            })
            .context("cannot start a worker thread")?;
        threads.push(t);
    }
    // The sqlite workers watch `control`; pass the signal on to it. A worker the
    // scenario started also drains when the scenario is gone.
    while !stop.load(Ordering::SeqCst) && !threads.iter().all(|t| t.is_finished()) {
        if orphaned() {
            tracing::warn!("the process that started this worker is gone: draining");
            stop.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    control.drain();
    let mut first_err = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a worker thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Set by the scenario on the processes it starts: its own pid.
pub const PARENT_ENV: &str = "SWITCHYARD_JOBS_PARENT";

/// True when this process was started by a scenario (see [`PARENT_ENV`]) that is gone.
pub fn orphaned() -> bool {
    std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| std::os::unix::process::parent_id() != p)
}

/// Installs Ctrl-C / SIGTERM handling: the first signal sets `stop`, a second one while
/// stopping exits at once with status 130.
pub fn install_signal_handlers(stop: &Arc<AtomicBool>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    Ok(())
}
