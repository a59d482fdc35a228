//! The shutdown ledger: every task the supervisor was handed, and how each one ended.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use executor_core::backend::{EndObserver, MetaRef, StatusCounters};
use executor_core::{Job, Policy, ShutdownReport, Status, TaskId, TaskRecord};

use crate::outcome::Track;

/// Counts tasks as they end (through the job's observer) and remembers, by id and name,
/// those that never ran.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// On a cache line of its own: submitters write it, while the workers that end tasks
    /// write the reference count at the head of the `Arc` this ledger lives in.
    submitted: Padded<AtomicU64>,
    /// Sharded by thread: tasks end on every worker at once.
    ended: StatusCounters,
    never_ran: Mutex<Vec<TaskRecord>>,
}

impl Ledger {
    /// Counts `job` as submitted and arranges for its end to be counted and, when given a
    /// policy, observed by it.
    #[inline]
    pub(crate) fn track(self: &Arc<Self>, job: &mut Job, observer: Option<&Arc<dyn Policy>>) {
        self.submitted.0.fetch_add(1, Relaxed);
        match observer {
            // The hot path: no policy to tell, so the ledger itself observes the task,
            // with no closure to allocate.
            None => job.observe_with(self.clone()),
            Some(observer) => self.track_observed(job, observer),
        }
    }

    /// Arranges for the end of `job` to be told to `observer`, then counted.
    #[inline(never)]
    fn track_observed(self: &Arc<Self>, job: &mut Job, observer: &Arc<dyn Policy>) {
        let ledger = self.clone();
        let id = job.id();
        // A cheap reference: the name is copied only for a task that never ran.
        let meta = job.meta_ref().clone();
        let policy = observer.clone();
        let track = Track::new(policy.wants_cpu_time(), job.is_async());
        job.on_every_run(track.hook());
        job.observe(move |status| {
            // The policy hears of the end before the ledger counts it, so a caller that
            // waits for the count sees what the policy learnt.
            let outcome = track.outcome(status);
            let run = std::panic::AssertUnwindSafe(|| policy.observe(&meta, &outcome));
            if let Err(payload) = std::panic::catch_unwind(run) {
                tracing::error!(
                    panic = executor_core::panic_message(&*payload),
                    "the policy's observe panicked"
                );
            }
            ledger.ended(status, id, &meta);
        });
    }

    /// Counts a task refused at submission (the supervisor was shut down).
    pub(crate) fn refused(&self) {
        self.submitted.0.fetch_add(1, Relaxed);
        self.ended.add(Status::Rejected);
    }

    /// Tasks submitted and not yet ended.
    pub(crate) fn unresolved(&self) -> u64 {
        let ended = self.ended.total();
        self.submitted.0.load(Relaxed).saturating_sub(ended)
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> LedgerCounts {
        let e = |s: Status| self.ended.get(s);
        // Read the ends first: a task counted as ended was counted as submitted before.
        let counts = LedgerCounts {
            completed: e(Status::Completed),
            failed: e(Status::Failed),
            panicked: e(Status::Panicked),
            cancelled: e(Status::Cancelled),
            timed_out: e(Status::TimedOut),
            rejected: e(Status::Rejected),
            not_started: e(Status::NotStarted),
            submitted: 0,
        };
        LedgerCounts {
            submitted: self.submitted.0.load(Relaxed),
            ..counts
        }
    }

    /// The records of the tasks that never ran, sorted by id.
    pub(crate) fn never_ran(&self) -> Vec<TaskRecord> {
        let mut v = self
            .never_ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        v.sort_by_key(|r| r.id);
        v
    }
}

impl EndObserver for Ledger {
    fn ended(&self, status: Status, id: TaskId, meta: &MetaRef) {
        self.ended.add(status);
        if status == Status::NotStarted {
            self.never_started(id, meta);
        }
    }
}

impl Ledger {
    /// Records a task that never ran (outside `ended`, which runs for every task).
    #[cold]
    #[inline(never)]
    fn never_started(&self, id: TaskId, meta: &MetaRef) {
        self.never_ran
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TaskRecord::new(id, meta));
    }
}

/// A value on a cache line (pair) of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// How many tasks the supervisor was handed, and how many ended each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerCounts {
    /// Tasks handed to the supervisor (`execute`), accepted or not.
    pub submitted: u64,
    /// Returned their value.
    pub completed: u64,
    /// Returned an error (after any retries).
    pub failed: u64,
    /// Panicked (after any retries).
    pub panicked: u64,
    /// Were cancelled.
    pub cancelled: u64,
    /// Ran past their timeout.
    pub timed_out: u64,
    /// Were refused: a full queue set to reject, or submitted after shutdown.
    pub rejected: u64,
    /// Never started: dropped at shutdown.
    pub not_started: u64,
}

impl LedgerCounts {
    /// Tasks that have ended, one way or another.
    pub fn ended(&self) -> u64 {
        self.completed
            + self.failed
            + self.panicked
            + self.cancelled
            + self.timed_out
            + self.rejected
            + self.not_started
    }
}

/// What [`Supervisor::shutdown_ledger`](crate::Supervisor::shutdown_ledger) returns: the ledger of every
/// task, the tasks that never ran, and each executor's own report.
///
/// It balances: `submitted == completed + failed + panicked + cancelled + timed_out +
/// rejected + not_started + still_running`, and `still_running` is zero unless a blocking
/// task ignored the request to stop past the deadline.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ShutdownLedger {
    /// The counts at the end of the shutdown.
    pub counts: LedgerCounts,
    /// Tasks still running when the report was made (their handles resolve when they return).
    pub still_running: u64,
    /// The tasks that never ran, by id and name, sorted by id.
    pub never_ran: Vec<TaskRecord>,
    /// True when the deadline passed before all work was done.
    pub deadline_passed: bool,
    /// Each executor's report (including executors retired by a reload).
    pub executors: Vec<ShutdownReport>,
}

impl ShutdownLedger {
    /// True when every submitted task is accounted for.
    pub fn is_balanced(&self) -> bool {
        self.counts.submitted == self.counts.ended() + self.still_running
    }
}

impl fmt::Display for ShutdownLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "submitted {} = completed {} + failed {} + panicked {} + cancelled {} + timed out {} \
             + rejected {} + not started {}",
            c.submitted,
            c.completed,
            c.failed,
            c.panicked,
            c.cancelled,
            c.timed_out,
            c.rejected,
            c.not_started
        )?;
        if self.still_running > 0 {
            write!(f, " + still running {}", self.still_running)?;
        }
        for r in &self.never_ran {
            write!(f, "\n  never ran: {} {}", r.id, r.name)?;
        }
        Ok(())
    }
}
