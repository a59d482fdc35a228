//! [`TaskContext`]: what a running task knows about itself.

use crate::backend::MetaRef;
use crate::{CancelToken, Cancelled, TaskId, TaskMeta};
use std::time::{Duration, Instant};

/// Passed to every task run through [`ExecutorExt::run`](crate::ExecutorExt::run) and friends:
/// its id, its attempt number, its deadline and its cancellation token.
#[derive(Clone, Debug)]
pub struct TaskContext {
    id: TaskId,
    attempt: u32,
    deadline: Option<Instant>,
    meta: MetaRef,
    token: CancelToken,
}

impl TaskContext {
    pub(crate) fn new(
        id: TaskId,
        attempt: u32,
        deadline: Option<Instant>,
        meta: MetaRef,
        token: CancelToken,
    ) -> Self {
        Self {
            id,
            attempt,
            deadline,
            meta,
            token,
        }
    }

    /// A context for running a task body by hand (tests, examples): attempt 1, no deadline.
    pub fn detached(meta: TaskMeta) -> Self {
        Self::new(TaskId::next(), 1, None, meta.into(), CancelToken::new())
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Which attempt this is, starting at 1; retries count up.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the task must be done by, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None` without one; zero once past it).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The task's name, tags and key.
    pub fn meta(&self) -> &TaskMeta {
        &self.meta
    }

    /// True once the task has been asked to stop (cancelled or past its deadline).
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// `Err(Cancelled)` once the task has been asked to stop: `ctx.checkpoint()?` in long loops.
    pub fn checkpoint(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }

    /// The task's cancellation token (await `token.cancelled()` in async code).
    pub fn cancel_token(&self) -> &CancelToken {
        &self.token
    }
}
