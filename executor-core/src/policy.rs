//! [`Policy`]: where a task runs and how (retries, timeout, limits), as a [`Route`].

use crate::{Outcome, TaskMeta};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Decides where each task runs. Object safe; the supervisor's policy file compiles to one,
/// and adaptive policies can learn from [`observe`](Self::observe).
pub trait Policy: Send + Sync {
    /// The route for a task. Total: every task gets one.
    fn route(&self, meta: &TaskMeta) -> Arc<Route>;

    /// Called once per task with how it ended.
    fn observe(&self, _meta: &TaskMeta, _outcome: &Outcome) {}
}

/// Where a task runs and how.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The executor's name.
    pub executor: String,
    /// Which rule chose this route (for `explain` and logs), e.g. `route[2]` or `defaults`.
    pub rule: String,
    /// Retries after an error or a panic.
    pub retry: Option<RetryPolicy>,
    /// How long the caller waits at most, from submission.
    pub timeout: Option<Duration>,
    /// Concurrency and rate limits.
    pub limit: Option<Limit>,
}

impl Route {
    /// A route to `executor` chosen by `rule`, with no retries, timeout or limits.
    pub fn new(executor: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            executor: executor.into(),
            rule: rule.into(),
            retry: None,
            timeout: None,
            limit: None,
        }
    }

    /// With retries.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// With a timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// With limits.
    pub fn with_limit(mut self, limit: Limit) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Exponential backoff: attempt `n` (from 2) waits `backoff * 2^(n-2)`, capped at
/// `max_backoff`, with jitter drawing uniformly from `[0, delay]` ("full jitter").
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
    /// `max` retries starting at `backoff`, capped at `max_backoff`, with jitter.
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

/// Concurrency and rate limits for the tasks of a route.
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
