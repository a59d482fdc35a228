//! [`InlineExecutor`]: runs each job on the caller's thread, at once. For tests, examples,
//! and as the "caller runs" fallback of a full queue.

use crate::backend::StatsRecorder;
use crate::{Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskMeta};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs every job inside `execute`, on the calling thread. A future is driven there with
/// whatever tokio context the caller has (core knows no runtime): for tokio timers and
/// sockets in async tasks, use a backend, or call from inside a runtime's context.
#[derive(Debug)]
pub struct InlineExecutor {
    name: String,
    stats: StatsRecorder,
    closed: AtomicBool,
}

impl InlineExecutor {
    /// An inline executor called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            stats: StatsRecorder::new(),
            closed: AtomicBool::new(false),
        }
    }
}

impl Executor for InlineExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            self.stats.rejected();
            return Err(SubmitError::shutdown(job));
        }
        self.stats.accepted();
        self.stats.run(job);
        Ok(())
    }

    /// One: a map's one runner task runs every item on the caller's thread, as tasks of
    /// their own would, one after another.
    fn map_width(&self, _meta: &TaskMeta) -> Option<NonZeroUsize> {
        Some(NonZeroUsize::MIN)
    }

    fn stats(&self) -> ExecutorStats {
        self.stats.snapshot()
    }

    fn shutdown(&self, _mode: ShutdownMode) -> ShutdownReport {
        self.closed.store(true, Ordering::Release);
        let mut report = ShutdownReport::new(&self.name);
        report.stats = self.stats.snapshot();
        report
    }
}
