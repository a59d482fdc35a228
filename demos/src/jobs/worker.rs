//! The worker: claims jobs from the store under a lease and runs them on an executor.
//!
//! One dispatcher thread owns the database connection. Each round it
//!
//! 1. collects the outcomes that finished attempts sent back over a channel and records
//!    them all in one transaction (group commit), logging every failure;
//! 2. renews its leases and re-queues jobs whose lease expired (a worker that died);
//! 3. claims as many runnable jobs as it has free slots and submits each to the executor
//!    as a task named after its kind (`jobs.email`, `jobs.cleanup`, ...), which the
//!    policy file routes to a persistent pool. The code never names a backend.
//!
//! On stop (Ctrl-C / SIGTERM sets a flag) it claims nothing more, waits up to a grace
//! period for running attempts, records them, and releases the rest back to the queue.

use super::kinds::{Effects, task_name};
use super::store::{Backoff, Claimed, Landed, Outcome, Store};
use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use executor_core::{Executor, ExecutorExt, TaskHandle, TaskMeta};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's lease owner name (unique per process run).
    pub owner: String,
    /// How long a claim is valid without renewal; a dead worker's jobs come back after it.
    pub lease: Duration,
    /// Attempts in flight at most (claimed and submitted, not yet recorded).
    pub inflight: usize,
    /// Retry delays.
    pub backoff: Backoff,
    /// On stop, how long running attempts may take before they are released.
    pub grace: Duration,
    /// Exit once no job is queued, waiting for a retry or running anywhere.
    pub until_idle: bool,
    /// Longest sleep between rounds when there is nothing to do.
    pub poll: Duration,
}

impl WorkerConfig {
    /// Defaults with a fresh owner name.
    pub fn new() -> WorkerConfig {
        WorkerConfig {
            owner: format!(
                "worker-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            lease: Duration::from_secs(10),
            inflight: 64,
            backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(30),
            },
            grace: Duration::from_secs(10),
            until_idle: false,
            poll: Duration::from_millis(100),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What one run of a worker did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunReport {
    /// Attempts started.
    pub started: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead_lettered: u64,
    /// Outcomes that arrived after the job stopped being ours (ignored).
    pub stale: u64,
    /// Jobs released back to the queue at shutdown.
    pub released: u64,
    /// Other workers' jobs re-queued after their lease expired.
    pub requeued_expired: u64,
    /// Wall time in seconds.
    pub elapsed_s: f64,
}

/// A finished attempt, sent from the task back to the dispatcher.
struct Done {
    id: i64,
    attempt: u32,
    outcome: Outcome,
}

struct Flight {
    job: Claimed,
    handle: Option<TaskHandle<()>>,
}

/// Runs a worker until `stop` is set (or, with `until_idle`, until no work is left).
pub fn run(
    store: &mut Store,
    exec: &Arc<dyn Executor>,
    effects: &Arc<Effects>,
    cfg: &WorkerConfig,
    stop: &AtomicBool,
) -> Result<RunReport> {
    let t0 = Instant::now();
    let mut rep = RunReport::default();
    let (tx, rx) = crossbeam_channel::unbounded::<Done>();
    let mut flights: HashMap<i64, Flight> = HashMap::new();
    let mut early: Vec<Done> = Vec::new();

    let (requeued, dead) = store
        .requeue_expired()
        .context("cannot re-queue jobs with expired leases")?;
    log_expired(requeued, dead);
    rep.requeued_expired += requeued as u64;
    rep.dead_lettered += dead as u64;
    let mut last_renew = Instant::now();
    let mut last_reap = Instant::now();

    tracing::info!(owner = %cfg.owner, lease = ?cfg.lease, inflight = cfg.inflight, "worker started");
    loop {
        collect(store, cfg, &rx, &mut early, &mut flights, &mut rep)?;

        if last_renew.elapsed() >= cfg.lease / 3 {
            store
                .renew(&cfg.owner, cfg.lease)
                .context("cannot renew leases")?;
            last_renew = Instant::now();
        }
        if last_reap.elapsed() >= cfg.lease / 2 {
            let (requeued, dead) = store.requeue_expired()?;
            log_expired(requeued, dead);
            rep.requeued_expired += requeued as u64;
            rep.dead_lettered += dead as u64;
            last_reap = Instant::now();
        }
        if stop.load(Ordering::SeqCst) {
            tracing::info!(running = flights.len(), "stop requested: no more claims");
            break;
        }

        // Claim in batches (a quarter of the slots, or whenever nothing runs), so that
        // each claim transaction carries many jobs.
        let batch = (cfg.inflight / 4).max(1);
        let free = cfg.inflight.saturating_sub(flights.len());
        let asked = if free >= batch || flights.is_empty() {
            free
        } else {
            0
        };
        let claimed = store
            .claim(&cfg.owner, asked, cfg.lease)
            .context("cannot claim jobs")?;
        let got = claimed.len();
        for job in claimed {
            rep.started += 1;
            let handle = submit(exec, effects, &tx, &job);
            flights.insert(
                job.id,
                Flight {
                    job,
                    handle: Some(handle),
                },
            );
        }

        if cfg.until_idle && flights.is_empty() && got == 0 && store.counts()?.pending() == 0 {
            tracing::info!("queue is empty: worker exits");
            break;
        }
        let free = cfg.inflight.saturating_sub(flights.len());
        // Sleep until an attempt finishes, or until the next retry falls due when there
        // is room to claim it.
        let wait = if free >= batch || flights.is_empty() {
            match store.next_run_at()? {
                Some(at) => Duration::from_millis(
                    (at - super::store::now_ms()).clamp(0, cfg.poll.as_millis() as i64) as u64,
                ),
                None => cfg.poll,
            }
        } else {
            cfg.poll
        };
        if wait > Duration::ZERO {
            match rx.recv_timeout(wait) {
                Ok(d) => early.push(d),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
            }
        }
    }

    // Shutdown: let running attempts finish within the grace period, then release.
    let deadline = Instant::now() + cfg.grace;
    while !flights.is_empty() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(d) => early.push(d),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
        }
        collect(store, cfg, &rx, &mut early, &mut flights, &mut rep)?;
        if last_renew.elapsed() >= cfg.lease / 3 {
            store.renew(&cfg.owner, cfg.lease)?;
            last_renew = Instant::now();
        }
    }
    if !flights.is_empty() {
        let jobs: Vec<Claimed> = flights.drain().map(|(_, f)| f.job).collect();
        let n = store.release(&cfg.owner, &jobs)?;
        tracing::warn!(
            released = n,
            "grace period over: released unfinished jobs back to the queue"
        );
        rep.released += n as u64;
    }
    rep.elapsed_s = t0.elapsed().as_secs_f64();
    tracing::info!(?rep, "worker stopped");
    Ok(rep)
}

fn log_expired(requeued: usize, dead: usize) {
    if requeued > 0 {
        tracing::warn!(
            requeued,
            "re-queued jobs whose lease expired (their worker stopped)"
        );
    }
    if dead > 0 {
        tracing::error!(
            dead,
            "dead-lettered jobs whose workers died too often while running them"
        );
    }
}

/// Submits one attempt to the executor. The task sends its outcome back itself, so a
/// panic in an effect becomes a failed attempt rather than a silent loss.
fn submit(
    exec: &Arc<dyn Executor>,
    effects: &Arc<Effects>,
    tx: &Sender<Done>,
    job: &Claimed,
) -> TaskHandle<()> {
    let meta = TaskMeta::new(task_name(&job.kind));
    let fx = effects.clone();
    let tx = tx.clone();
    let (id, attempt) = (job.id, job.attempt);
    let (kind, payload, key) = (job.kind.clone(), job.payload.clone(), job.idem_key.clone());
    exec.run_once(meta, move |_ctx| {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| fx.run(&kind, &payload, &key)))
            .unwrap_or_else(|p| Outcome::Failed {
                error: format!("job panicked: {}", panic_text(p.as_ref())),
                permanent: false,
            });
        let _ = tx.send(Done {
            id,
            attempt,
            outcome,
        });
        Ok::<(), std::convert::Infallible>(())
    })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Records every outcome that has arrived, and notices tasks that ended without one
/// (rejected by a full executor, timed out, executor shut down).
fn collect(
    store: &mut Store,
    cfg: &WorkerConfig,
    rx: &Receiver<Done>,
    early: &mut Vec<Done>,
    flights: &mut HashMap<i64, Flight>,
    rep: &mut RunReport,
) -> Result<()> {
    let mut done: Vec<(Claimed, Outcome)> = Vec::new();
    let mut release: Vec<Claimed> = Vec::new();
    for d in early.drain(..).chain(rx.try_iter()) {
        match flights.get(&d.id) {
            Some(f) if f.job.attempt == d.attempt => {
                let f = flights.remove(&d.id).expect("present");
                done.push((f.job, d.outcome));
            }
            _ => rep.stale += 1,
        }
    }
    let mut ended: Vec<(i64, executor_core::TaskError)> = Vec::new();
    for (id, f) in flights.iter_mut() {
        if f.handle.as_ref().is_some_and(|h| h.is_finished()) {
            let h = f.handle.take().expect("checked");
            // Ok means the task ran and its outcome is already in the channel.
            if let Err(e) = h.wait() {
                ended.push((*id, e));
            }
        }
    }
    // An outcome may have been sent just before its task was cut off: keep late arrivals
    // for the next round and trust them over the handle's error.
    early.extend(rx.try_iter());
    for (id, e) in ended {
        if early.iter().any(|d| d.id == id) {
            continue;
        }
        let f = flights.remove(&id).expect("present");
        if e.is_rejected() || e.is_shutdown() {
            tracing::warn!(job = id, error = %e, "executor did not take the job; releasing it");
            release.push(f.job);
        } else {
            done.push((
                f.job,
                Outcome::Failed {
                    error: format!("task ended without an outcome: {e}"),
                    permanent: false,
                },
            ));
        }
    }
    if !release.is_empty() {
        rep.released += store.release(&cfg.owner, &release)? as u64;
    }
    if done.is_empty() {
        return Ok(());
    }
    let landed = store
        .finish(&cfg.owner, &cfg.backoff, &done)
        .context("cannot record job outcomes")?;
    for ((job, outcome), l) in done.iter().zip(landed) {
        let error = match outcome {
            Outcome::Failed { error, .. } => error.as_str(),
            Outcome::Succeeded(_) => "",
        };
        match l {
            Landed::Succeeded => rep.succeeded += 1,
            Landed::Retry(d) => {
                rep.retried += 1;
                tracing::warn!(
                    job = job.id, kind = %job.kind, attempt = job.attempt, max = job.max_attempts,
                    retry_in = ?d, error, "attempt failed; will retry"
                );
            }
            Landed::Dead => {
                rep.dead_lettered += 1;
                tracing::error!(
                    job = job.id, kind = %job.kind, attempt = job.attempt, error,
                    "job dead-lettered"
                );
            }
            Landed::Stale => {
                rep.stale += 1;
                tracing::warn!(
                    job = job.id,
                    "outcome arrived after the lease was lost; ignored"
                );
            }
        }
    }
    Ok(())
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
