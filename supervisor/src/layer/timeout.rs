//! The timeout layer: a deadline counted from when the task passes it, after which the
//! task's handle resolves as timed out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor_core::{CancelToken, Job, SubmitError};

use super::{Layer, LayerContext, Service};
use crate::scheduler::{Core, Timed, lock};

/// Resolves a task's handle as timed out `after` it passes this layer; the task's context
/// reports the deadline and the cancellation. Outside the retry layer (as the policy file
/// places it) the deadline covers every attempt: a timed-out task is not retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout {
    after: Duration,
}

impl Timeout {
    /// A deadline `after` from submission.
    pub fn new(after: Duration) -> Self {
        Timeout { after }
    }

    /// How long a task may take.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl Layer for Timeout {
    fn layer(&self, inner: Arc<dyn Service>, cx: &LayerContext<'_>) -> Arc<dyn Service> {
        Arc::new(TimeoutService {
            inner,
            after: self.after,
            core: cx.core.clone(),
        })
    }
}

struct TimeoutService {
    inner: Arc<dyn Service>,
    after: Duration,
    core: Arc<Core>,
}

impl Service for TimeoutService {
    fn dispatch(&self, mut job: Job) -> Result<(), SubmitError> {
        let deadline = Instant::now() + self.after;
        // An earlier deadline (a timeout layer further out) stays.
        if job.deadline().is_none_or(|d| deadline < d) {
            job.set_deadline(Some(deadline));
            let slot = Arc::new(Mutex::new(Some(job.cancel_token())));
            let release = slot.clone();
            // Once the task ends the timer has nothing to do: let go of the token (and
            // with it the task's result slot) now rather than at the deadline.
            job.observe(move |_| drop(lock(&release).take()));
            // Refused only while the supervisor shuts down, which ends the task anyway.
            let _ = self.core.at(deadline, Box::new(Expire(slot)));
        }
        self.inner.dispatch(job)
    }
}

/// A task's deadline: expires its token (the handle resolves as timed out).
struct Expire(Arc<Mutex<Option<CancelToken>>>);

impl Timed for Expire {
    fn fire(self: Box<Self>) {
        // Take the token out before firing it: firing runs the task's observers, one of
        // which empties this slot.
        let token = lock(&self.0).take();
        if let Some(token) = token {
            token.expire();
        }
    }

    fn alive(&self) -> bool {
        lock(&self.0).is_some()
    }
}
