//! The limit layer: concurrency and rate limits per task key (or per route). A task
//! waiting for its limit sits in the layer's queue, not on a thread.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use executor_core::{Job, SubmitError, TaskMeta};

use super::limiter::{Admit, Limiter};
use super::{Layer, LayerContext, Service};
use crate::scheduler::{Core, Timed};

/// Concurrency and rate limits for the tasks of a route. As a [`Layer`], each attempt
/// waits (in FIFO order per key, holding no thread) until a slot is free and the rate
/// allows a start; the slot is given back when the attempt ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limit {
    /// What the limit counts over.
    pub scope: LimitScope,
    /// At most this many running at once.
    pub concurrency: Option<NonZeroU32>,
    /// At most this many starts per period.
    pub rate: Option<Rate>,
}

impl Limit {
    /// A limit over `scope`.
    pub fn new(scope: LimitScope, concurrency: Option<NonZeroU32>, rate: Option<Rate>) -> Self {
        Self {
            scope,
            concurrency,
            rate,
        }
    }

    /// A fresh budget for this limit.
    pub(crate) fn limiter(&self) -> Arc<Limiter<Job>> {
        Arc::new(Limiter::new(
            self.concurrency.map(|c| c.get()),
            self.rate.map(|r| r.interval()),
        ))
    }

    /// The layer over an existing budget (a reload keeps the budget of an unchanged limit).
    pub(crate) fn service(
        &self,
        inner: Arc<dyn Service>,
        limiter: Arc<Limiter<Job>>,
        core: &Arc<Core>,
    ) -> Arc<dyn Service> {
        core.add_limiter(&limiter);
        Arc::new(LimitService(Arc::new(Shared {
            inner,
            limiter,
            scope: self.scope,
            core: core.clone(),
        })))
    }
}

impl Layer for Limit {
    fn layer(&self, inner: Arc<dyn Service>, cx: &LayerContext<'_>) -> Arc<dyn Service> {
        self.service(inner, self.limiter(), cx.core)
    }
}

/// What a [`Limit`] counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// Each task key (e.g. each host) separately; tasks without a key share one bucket.
    Key,
    /// All tasks of the route together.
    Route,
}

/// A rate: `count` per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: NonZeroU32,
    /// Per how long.
    pub per: Duration,
}

impl Rate {
    /// The time between two starts at this rate.
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }
}

struct Shared {
    inner: Arc<dyn Service>,
    limiter: Arc<Limiter<Job>>,
    scope: LimitScope,
    core: Arc<Core>,
}

struct LimitService(Arc<Shared>);

impl Service for LimitService {
    fn dispatch(&self, job: Job) -> Result<(), SubmitError> {
        let s = &self.0;
        let key = key_of(s.scope, job.meta());
        let priority = job.priority();
        match s.limiter.admit_ranked(&key, job, priority, Instant::now()) {
            Admit::Go(job) => launch(s, job, key),
            Admit::Queued { wake_at } => {
                if s.core.closed_after_queueing() {
                    // A shutdown swept (or is sweeping) the queues: whatever waits now
                    // would wait forever. Dropping ends it as not started.
                    drop(s.limiter.take_all());
                    return Ok(());
                }
                if let Some(at) = wake_at {
                    tracing::trace!(key = %key, "task waits for its rate");
                    // Refused only while the supervisor shuts down; the shutdown sweeps
                    // this queue after every submission in flight has left.
                    let _ = s.core.at(
                        at,
                        Box::new(Wake {
                            shared: s.clone(),
                            key,
                            timer: true,
                        }),
                    );
                }
                Ok(())
            }
        }
    }
}

fn key_of(scope: LimitScope, meta: &TaskMeta) -> String {
    match scope {
        LimitScope::Key => meta.key().unwrap_or_default().to_owned(),
        LimitScope::Route => String::new(),
    }
}

/// Hands an attempt that holds a slot inward; the slot is given back when the attempt
/// ends, however it ends (run, refused, dropped).
fn launch(s: &Arc<Shared>, mut job: Job, key: String) -> Result<(), SubmitError> {
    let shared = s.clone();
    job.on_attempt_end(move |_| release(&shared, key));
    if job.is_resolved() {
        // Cancelled or timed out while it waited; dropping it gives the slot back.
        drop(job);
        return Ok(());
    }
    s.inner.dispatch(job)
}

fn release(s: &Arc<Shared>, key: String) {
    if s.limiter.release(&key) {
        let _ = s.core.soon(Box::new(Wake {
            shared: s.clone(),
            key,
            timer: false,
        }));
    }
}

/// Lets the waiting jobs of `key` go as far as the limits allow.
struct Wake {
    shared: Arc<Shared>,
    key: String,
    /// Set for a rate timer (not a released slot).
    timer: bool,
}

impl Timed for Wake {
    fn fire(self: Box<Self>) {
        let Wake { shared, key, timer } = *self;
        let (mut ready, mut dead) = (Vec::new(), Vec::new());
        let wake = shared.limiter.drain(
            &key,
            Instant::now(),
            timer,
            |j: &Job| j.is_resolved(),
            &mut ready,
            &mut dead,
        );
        drop(dead);
        if let Some(at) = wake {
            let _ = shared.core.at(
                at,
                Box::new(Wake {
                    shared: shared.clone(),
                    key: key.clone(),
                    timer: true,
                }),
            );
        }
        for job in ready {
            // A refusal resolves the job's handle when the error drops.
            let _ = launch(&shared, job, key.clone());
        }
    }
}
