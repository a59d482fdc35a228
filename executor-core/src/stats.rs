//! Per-executor counters and latency: [`ExecutorStats`] (a snapshot) and [`StatsRecorder`]
//! (the lock-free recorder every backend shares, so all count the same way).

use crate::{Job, Status, TaskRecord};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A snapshot of an executor's counters.
///
/// After a shutdown the ledger balances: `submitted == completed + failed + panicked +
/// cancelled + timed_out + rejected + not_started` (and `queued == running == 0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExecutorStats {
    /// Jobs handed to `execute`, accepted or not.
    pub submitted: u64,
    /// Jobs waiting to start.
    pub queued: u64,
    /// Jobs running now.
    pub running: u64,
    /// Attempts that returned their value.
    pub completed: u64,
    /// Attempts that returned an error.
    pub failed: u64,
    /// Attempts that panicked.
    pub panicked: u64,
    /// Jobs cancelled before or while running.
    pub cancelled: u64,
    /// Jobs that ran past their deadline.
    pub timed_out: u64,
    /// Jobs refused by `execute`.
    pub rejected: u64,
    /// Jobs dropped at shutdown before they started.
    pub not_started: u64,
    /// Run time of the attempts that ran (completed, failed or panicked).
    pub latency: Latency,
}

impl ExecutorStats {
    /// Jobs that have ended, one way or another.
    pub fn ended(&self) -> u64 {
        self.completed
            + self.failed
            + self.panicked
            + self.cancelled
            + self.timed_out
            + self.rejected
            + self.not_started
    }

    /// True when every submitted job is ended, queued or running.
    pub fn is_balanced(&self) -> bool {
        self.submitted == self.ended() + self.queued + self.running
    }

    /// The count for one status.
    pub fn count(&self, status: Status) -> u64 {
        match status {
            Status::Completed => self.completed,
            Status::Failed => self.failed,
            Status::Panicked => self.panicked,
            Status::Cancelled => self.cancelled,
            Status::TimedOut => self.timed_out,
            Status::Rejected => self.rejected,
            Status::NotStarted => self.not_started,
        }
    }
}

/// Latency figures from a log-linear histogram (about 19% resolution).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

const BUCKETS: usize = 256;

/// Bucket of a value in nanoseconds: four linear steps per power of two.
fn bucket(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize; // >= 2
    let sub = ((ns >> (log - 2)) & 3) as usize;
    (log - 1) * 4 + sub
}

/// A representative value (the middle) of a bucket, in nanoseconds.
fn bucket_value(index: usize) -> u64 {
    if index < 4 {
        return index as u64;
    }
    let log = index / 4 + 1;
    let sub = (index % 4) as u64;
    let low = (4 + sub) << (log - 2);
    let width = 1u64 << (log - 2);
    low + width / 2
}

/// The recorder behind every backend's stats: atomics only, safe to share across workers.
pub struct StatsRecorder {
    submitted: AtomicU64,
    queued: AtomicI64,
    running: AtomicI64,
    ended: [AtomicU64; 7],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: Box<[AtomicU64; BUCKETS]>,
}

impl Default for StatsRecorder {
    fn default() -> Self {
        Self {
            submitted: AtomicU64::new(0),
            queued: AtomicI64::new(0),
            running: AtomicI64::new(0),
            ended: Default::default(),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: Box::new([const { AtomicU64::new(0) }; BUCKETS]),
        }
    }
}

fn index(status: Status) -> usize {
    Status::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

impl StatsRecorder {
    /// A recorder with every count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A job was accepted and queued.
    pub fn accepted(&self) {
        self.submitted.fetch_add(1, Relaxed);
        self.queued.fetch_add(1, Relaxed);
    }

    /// A job was refused by `execute`.
    pub fn rejected(&self) {
        self.submitted.fetch_add(1, Relaxed);
        self.ended[index(Status::Rejected)].fetch_add(1, Relaxed);
    }

    /// A queued job is being taken back (run by the caller instead, say): undoes
    /// [`accepted`](Self::accepted).
    pub fn unqueued(&self) {
        self.submitted.fetch_sub(1, Relaxed);
        self.queued.fetch_sub(1, Relaxed);
    }

    /// Runs a queued job on this thread and records how it ended.
    pub fn run(&self, job: Job) -> Status {
        self.queued.fetch_sub(1, Relaxed);
        self.running.fetch_add(1, Relaxed);
        let start = Instant::now();
        let status = job.run();
        self.finished(status, start.elapsed());
        status
    }

    /// Records the start of a queued job that runs elsewhere (an async runtime); pair it
    /// with [`finished`](Self::finished).
    pub fn started(&self) {
        self.queued.fetch_sub(1, Relaxed);
        self.running.fetch_add(1, Relaxed);
    }

    /// Records the end of a started job.
    pub fn finished(&self, status: Status, run_time: Duration) {
        self.running.fetch_sub(1, Relaxed);
        self.ended[index(status)].fetch_add(1, Relaxed);
        if matches!(
            status,
            Status::Completed | Status::Failed | Status::Panicked
        ) {
            let ns = u64::try_from(run_time.as_nanos()).unwrap_or(u64::MAX);
            self.sum_ns.fetch_add(ns, Relaxed);
            self.max_ns.fetch_max(ns, Relaxed);
            self.buckets[bucket(ns)].fetch_add(1, Relaxed);
        }
    }

    /// Drops a queued job at shutdown: resolves its handle as not started and counts it.
    /// Returns its record for the report, or `None` when it had ended already (cancelled
    /// or timed out while queued; counted as such).
    pub fn abandon(&self, job: Job) -> Option<TaskRecord> {
        let record = TaskRecord::of(&job);
        self.queued.fetch_sub(1, Relaxed);
        let status = job.resolve(crate::TaskError::shutdown());
        self.ended[index(status)].fetch_add(1, Relaxed);
        (status == Status::NotStarted).then_some(record)
    }

    /// Records a queued job that ended without this executor running it (it resolved as
    /// cancelled or timed out while queued, or was dropped by a runtime).
    pub fn ended_unstarted(&self, status: Status) {
        self.queued.fetch_sub(1, Relaxed);
        self.ended[index(status)].fetch_add(1, Relaxed);
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ExecutorStats {
        let ended = |s: Status| self.ended[index(s)].load(Relaxed);
        let mut counts = [0u64; BUCKETS];
        let mut count = 0;
        for (c, b) in counts.iter_mut().zip(self.buckets.iter()) {
            *c = b.load(Relaxed);
            count += *c;
        }
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(bucket_value(i));
                }
            }
            Duration::from_nanos(self.max_ns.load(Relaxed))
        };
        let sum = self.sum_ns.load(Relaxed);
        ExecutorStats {
            submitted: self.submitted.load(Relaxed),
            queued: self.queued.load(Relaxed).max(0) as u64,
            running: self.running.load(Relaxed).max(0) as u64,
            completed: ended(Status::Completed),
            failed: ended(Status::Failed),
            panicked: ended(Status::Panicked),
            cancelled: ended(Status::Cancelled),
            timed_out: ended(Status::TimedOut),
            rejected: ended(Status::Rejected),
            not_started: ended(Status::NotStarted),
            latency: Latency {
                count,
                mean: Duration::from_nanos(sum.checked_div(count).unwrap_or(0)),
                p50: quantile(0.5),
                p99: quantile(0.99),
                max: Duration::from_nanos(self.max_ns.load(Relaxed)),
            },
        }
    }
}

impl std::fmt::Debug for StatsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for ns in [
            1u64,
            3,
            4,
            5,
            7,
            8,
            100,
            1_000,
            12_345,
            1 << 40,
            u64::MAX / 2,
        ] {
            let b = bucket(ns);
            assert!(b >= last, "bucket({ns}) went down");
            last = b;
            let v = bucket_value(b) as f64;
            let err = (v - ns as f64).abs() / ns as f64;
            assert!(err <= 0.25, "bucket value {v} too far from {ns}");
        }
        assert!(bucket(u64::MAX) < BUCKETS);
    }
}
