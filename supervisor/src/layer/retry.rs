//! The retry layer: a failed attempt (an error or a panic) runs again after an
//! exponential backoff, through the layers inside this one.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use executor_core::backend::FailureHandler;
use executor_core::{Job, SubmitError, TaskError};

use super::{Layer, LayerContext, Service};
use crate::scheduler::{Core, Timed};

/// Retries with exponential backoff: attempt `n` (from 2) waits `backoff * 2^(n-2)`,
/// capped at `max_backoff`, with jitter drawing uniformly from `[0, delay]` ("full
/// jitter"). As a [`Layer`], it retries tasks whose body can run again (submitted with
/// `run`/`run_async`); each retry goes through the layers inside it again (a limit, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `max + 1` attempts).
    pub max: u32,
    /// The first delay.
    pub backoff: Duration,
    /// The longest delay.
    pub max_backoff: Duration,
    /// Randomise delays so retries do not arrive in waves.
    pub jitter: bool,
}

impl RetryPolicy {
    /// `max` retries starting at `backoff`, capped at `max_backoff`, with or without jitter.
    pub fn new(max: u32, backoff: Duration, max_backoff: Duration, jitter: bool) -> Self {
        Self {
            max,
            backoff,
            max_backoff,
            jitter,
        }
    }

    /// The delay before attempt `next_attempt` (2 for the first retry), given a uniform
    /// random number in `[0, 1)` for the jitter.
    pub fn delay(&self, next_attempt: u32, unit_random: f64) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(30);
        let base = self.backoff.saturating_mul(1 << exp).min(self.max_backoff);
        if self.jitter {
            base.mul_f64(unit_random.clamp(0.0, 1.0))
        } else {
            base
        }
    }
}

impl Layer for RetryPolicy {
    fn layer(&self, inner: Arc<dyn Service>, cx: &LayerContext<'_>) -> Arc<dyn Service> {
        Arc::new(RetryService(Arc::new_cyclic(|me| Shared {
            inner,
            policy: *self,
            core: cx.core.clone(),
            me: me.clone(),
        })))
    }
}

struct Shared {
    inner: Arc<dyn Service>,
    policy: RetryPolicy,
    core: Arc<Core>,
    /// This layer itself, for a retry to hold while it waits out its backoff.
    me: Weak<Shared>,
}

struct RetryService(Arc<Shared>);

impl Service for RetryService {
    fn dispatch(&self, job: Job) -> Result<(), SubmitError> {
        dispatch(&self.0, job)
    }
}

/// Hands one attempt inward with the retry handler installed (the route's one handler,
/// shared by every job: no allocation per task).
fn dispatch(shared: &Arc<Shared>, mut job: Job) -> Result<(), SubmitError> {
    if job.can_retry() {
        job.on_failure_with(shared.clone());
    }
    shared.inner.dispatch(job)
}

impl FailureHandler for Shared {
    fn on_failure(&self, job: Job, err: TaskError) -> Option<(Job, TaskError)> {
        on_failure(self, job, err)
    }
}

/// The failure hook: schedule the next attempt after a backoff, or give the job back to
/// end it with its error.
fn on_failure(shared: &Shared, job: Job, err: TaskError) -> Option<(Job, TaskError)> {
    let policy = shared.policy;
    let attempt = job.attempt();
    if attempt > policy.max || shared.core.is_closing() || job.is_resolved() {
        tracing::warn!(
            task = %job.id(),
            name = job.meta().name(),
            attempt,
            error = %err,
            "task failed; no retries left"
        );
        return Some((job, err));
    }
    let delay = policy.delay(attempt + 1, rand::random::<f64>());
    let at = Instant::now() + delay;
    if job.deadline().is_some_and(|d| at >= d) {
        tracing::warn!(
            task = %job.id(),
            name = job.meta().name(),
            attempt,
            error = %err,
            "task failed; its deadline leaves no time to retry"
        );
        return Some((job, err));
    }
    tracing::info!(
        task = %job.id(),
        name = job.meta().name(),
        attempt,
        next_attempt = attempt + 1,
        delay_ms = delay.as_millis() as u64,
        error = %err,
        "attempt failed; retrying"
    );
    // The handler being called is a strong reference to this layer, so it is alive.
    let Some(me) = shared.me.upgrade() else {
        return Some((job, err));
    };
    let pending = &shared.core.retries_pending;
    pending.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let next = Box::new(Next {
        job: job.next_attempt_after(err),
        shared: me,
    });
    match shared.core.at(at, next) {
        Ok(()) => None,
        // Closing: dropping the job ends the task with the error it remembers.
        Err(refused) => {
            refused.abandon();
            None
        }
    }
}

/// A retry waiting out its backoff.
struct Next {
    job: Job,
    shared: Arc<Shared>,
}

impl Timed for Next {
    fn fire(self: Box<Self>) {
        let Next { job, shared } = *self;
        shared
            .core
            .retries_pending
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if !job.is_resolved() {
            // A refusal resolves the job's handle when the error drops.
            let _ = dispatch(&shared, job);
        }
    }

    fn priority(&self) -> Option<i8> {
        Some(self.job.priority())
    }

    fn abandon(self: Box<Self>) {
        self.shared
            .core
            .retries_pending
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        // Dropping the job ends the task with its last error.
    }
}
