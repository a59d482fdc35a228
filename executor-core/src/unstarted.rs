//! [`Unstarted`]: what a backend's shutdown does with jobs that will never run — end each
//! one, count it, and name it in the report.

use crate::backend::StatsRecorder;
use crate::{Job, TaskRecord};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a shutdown waits for jobs that a worker took from the queue just before the
/// shutdown drained it (it is a matter of instructions; the bound only guards bugs).
const SETTLE: Duration = Duration::from_secs(1);

/// The records of the jobs a shutdown ended unrun.
#[derive(Debug, Default)]
pub struct Unstarted {
    records: Mutex<Vec<TaskRecord>>,
}

impl Unstarted {
    /// No job ended yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends `job` unrun: its handle resolves as not started (unless it had already ended,
    /// cancelled or timed out while queued), `stats` count it, and the report names it.
    /// Counting and naming happen under one lock, so a report that sees the job counted
    /// also sees its name.
    pub fn abandon(&self, stats: &StatsRecorder, job: Job) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = stats.abandon(job) {
            records.push(record);
        }
    }

    /// Ends every job `pop` yields now.
    pub fn abandon_all(&self, stats: &StatsRecorder, mut pop: impl FnMut() -> Option<Job>) {
        while let Some(job) = pop() {
            self.abandon(stats, job);
        }
    }

    /// Ends every queued job, then waits until none is left between a worker's pop and
    /// its start or abandonment, so the report misses none of them.
    pub fn drain(&self, stats: &StatsRecorder, mut pop: impl FnMut() -> Option<Job>) {
        let t0 = Instant::now();
        loop {
            self.abandon_all(stats, &mut pop);
            if stats.snapshot().queued == 0 || t0.elapsed() >= SETTLE {
                break;
            }
            std::thread::yield_now();
        }
    }

    /// Takes the records gathered so far.
    pub fn take(&self) -> Vec<TaskRecord> {
        std::mem::take(&mut *self.records.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
