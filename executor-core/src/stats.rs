//! Per-executor counters and latency: [`ExecutorStats`] (a snapshot) and [`StatsRecorder`]
//! (the lock-free recorder every backend shares, so all count the same way).

use crate::{Job, Status, TaskRecord};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
    /// Tasks seen holding a worker thread that must not block (a tokio runtime's worker,
    /// a rayon thread) past the blocking threshold. The supervisor measures it, on its
    /// `executor = "auto"` routes, and reports it in its own stats (per task name in
    /// `Supervisor::learned` and `explain`); a backend's own stats leave it 0.
    pub blocked: u64,
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

/// Run-time figures from a log-linear histogram (about 19% resolution) over sampled
/// attempts (see [`StatsRecorder::started`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// Attempts sampled.
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

/// Counters written by the threads that share one shard, on cache lines of their own so
/// workers on different cores do not contend.
#[repr(align(128))]
struct Shard {
    started: AtomicU64,
    /// Of the jobs counted in `ended`, those that never started (so the jobs that ran to
    /// an end are `ended` less these: no counter of their own to bump per job).
    ended_unstarted: AtomicU64,
    ended: [AtomicU64; 7],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Shard {
    fn new() -> Self {
        Shard {
            started: AtomicU64::new(0),
            ended_unstarted: AtomicU64::new(0),
            ended: Default::default(),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

const SHARDS: usize = 8;

thread_local! {
    /// This thread's shard, or `usize::MAX` before its first count (a constant initial
    /// value makes each read one load, with no lazy-initialisation check).
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// The shard the current thread writes to (threads are spread round-robin).
#[inline]
fn shard_index() -> usize {
    match SHARD.get() {
        usize::MAX => first_shard_index(),
        i => i,
    }
}

/// Gives the current thread its shard.
#[cold]
#[inline(never)]
fn first_shard_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Relaxed) % SHARDS;
    SHARD.set(i);
    i
}

#[repr(align(128))]
struct Padded<T>(T);

/// Per-status counters sharded by thread, for ledgers that count tasks as they end on
/// many workers at once (one cache line per shard, so workers do not contend).
pub struct StatusCounters {
    shards: Box<[Padded<[AtomicU64; 7]>]>,
}

impl Default for StatusCounters {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Padded(Default::default())).collect(),
        }
    }
}

impl StatusCounters {
    /// Every count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one task that ended with `status`.
    #[inline]
    pub fn add(&self, status: Status) {
        self.shards[shard_index()].0[index(status)].fetch_add(1, Relaxed);
    }

    /// How many ended with `status` so far.
    pub fn get(&self, status: Status) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0[index(status)].load(Relaxed))
            .sum()
    }

    /// How many ended, whatever the status.
    pub fn total(&self) -> u64 {
        Status::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

impl std::fmt::Debug for StatusCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for s in Status::ALL {
            m.entry(&s.as_str(), &self.get(s));
        }
        m.finish()
    }
}

/// The recorder behind every backend's stats: sharded atomics, safe to share across
/// workers without contention. Gauges (queued, running) are derived from the counters.
pub struct StatsRecorder {
    submitted: Padded<AtomicU64>,
    shards: Box<[Shard]>,
}

impl Default for StatsRecorder {
    fn default() -> Self {
        Self {
            submitted: Padded(AtomicU64::new(0)),
            shards: (0..SHARDS).map(|_| Shard::new()).collect(),
        }
    }
}

/// A status's place in [`Status::ALL`] (the enum's own order, checked by a test).
#[inline]
fn index(status: Status) -> usize {
    status as usize
}

impl StatsRecorder {
    /// A recorder with every count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    /// A job was accepted and queued.
    pub fn accepted(&self) {
        self.submitted.0.fetch_add(1, Relaxed);
    }

    /// `n` jobs of a batch were accepted and queued (one count for the batch).
    pub fn accepted_many(&self, n: usize) {
        self.submitted.0.fetch_add(n as u64, Relaxed);
    }

    /// A job was refused by `execute`.
    pub fn rejected(&self) {
        self.submitted.0.fetch_add(1, Relaxed);
        self.ended_unstarted(Status::Rejected);
    }

    /// A queued job is being taken back (to be refused instead): undoes
    /// [`accepted`](Self::accepted).
    pub fn unqueued(&self) {
        self.submitted.0.fetch_sub(1, Relaxed);
    }

    /// Runs a queued job on this thread and records how it ended.
    pub fn run(&self, job: Job) -> Status {
        let start = self.started();
        let status = job.run();
        self.finished(status, start.map(|t| t.elapsed()));
        status
    }

    /// Records the start of a queued job that runs elsewhere (an async runtime); pair it
    /// with [`finished`](Self::finished), passing the run time measured from the instant
    /// this returns. Reading the clock costs as much as a no-op task, so run time is
    /// sampled: the first 64 jobs of each shard, then one in eight (`None` otherwise).
    pub fn started(&self) -> Option<Instant> {
        let n = self.shard().started.fetch_add(1, Relaxed);
        (n < 64 || n.is_multiple_of(8)).then(Instant::now)
    }

    /// Records the end of a started job (`run_time` when it was sampled).
    pub fn finished(&self, status: Status, run_time: Option<Duration>) {
        let shard = self.shard();
        if let Some(run_time) = run_time
            && matches!(
                status,
                Status::Completed | Status::Failed | Status::Panicked
            )
        {
            let ns = u64::try_from(run_time.as_nanos()).unwrap_or(u64::MAX);
            shard.sum_ns.fetch_add(ns, Relaxed);
            if ns > shard.max_ns.load(Relaxed) {
                shard.max_ns.fetch_max(ns, Relaxed);
            }
            shard.buckets[bucket(ns)].fetch_add(1, Relaxed);
        }
        // Last, so a snapshot never sees a job as ended before it stops running.
        shard.ended[index(status)].fetch_add(1, Relaxed);
    }

    /// Drops a queued job at shutdown: resolves its handle as not started and counts it.
    /// Returns its record for the report, or `None` when it had ended already (cancelled
    /// or timed out while queued; counted as such).
    pub fn abandon(&self, job: Job) -> Option<TaskRecord> {
        let record = TaskRecord::of(&job);
        let status = job.resolve(crate::TaskError::shutdown());
        self.ended_unstarted(status);
        (status == Status::NotStarted).then_some(record)
    }

    /// Records a queued job that ended without this executor running it (it resolved as
    /// cancelled or timed out while queued, or was dropped by a runtime).
    pub fn ended_unstarted(&self, status: Status) {
        let shard = self.shard();
        shard.ended[index(status)].fetch_add(1, Relaxed);
        shard.ended_unstarted.fetch_add(1, Relaxed);
    }

    /// Waits until nothing is queued or running, or until `deadline`; true when idle.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            let stats = self.snapshot();
            if stats.queued + stats.running == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> ExecutorStats {
        let mut ended = [0u64; 7];
        let mut counts = [0u64; BUCKETS];
        let (mut started, mut unstarted, mut sum, mut max) = (0, 0, 0, 0);
        // Read the "ended" side first and `submitted` last, so that in-flight work shows
        // as queued or running rather than as missing.
        for shard in self.shards.iter() {
            unstarted += shard.ended_unstarted.load(Relaxed);
            for (e, a) in ended.iter_mut().zip(shard.ended.iter()) {
                *e += a.load(Relaxed);
            }
            sum += shard.sum_ns.load(Relaxed);
            max = max.max(shard.max_ns.load(Relaxed));
            for (c, b) in counts.iter_mut().zip(shard.buckets.iter()) {
                *c += b.load(Relaxed);
            }
        }
        for shard in self.shards.iter() {
            started += shard.started.load(Relaxed);
        }
        let submitted = self.submitted.0.load(Relaxed);
        let count: u64 = counts.iter().sum();
        let quantile = |q: f64| -> Duration {
            if count == 0 {
                return Duration::ZERO;
            }
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_nanos(bucket_value(i).min(max));
                }
            }
            Duration::from_nanos(max)
        };
        let get = |s: Status| ended[index(s)];
        // Jobs that ran to an end. `queued + running` is `submitted` less every end
        // counted, whatever order the counters were read in (what `wait_idle` relies on).
        let finished = ended.iter().sum::<u64>().saturating_sub(unstarted);
        ExecutorStats {
            submitted,
            queued: submitted.saturating_sub(started + unstarted),
            running: started.saturating_sub(finished),
            completed: get(Status::Completed),
            failed: get(Status::Failed),
            panicked: get(Status::Panicked),
            cancelled: get(Status::Cancelled),
            timed_out: get(Status::TimedOut),
            rejected: get(Status::Rejected),
            not_started: get(Status::NotStarted),
            blocked: 0,
            latency: Latency {
                count,
                mean: Duration::from_nanos(sum.checked_div(count).unwrap_or(0)),
                p50: quantile(0.5),
                p99: quantile(0.99),
                max: Duration::from_nanos(max),
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
    fn a_status_index_is_its_place_in_all() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(index(*s), i, "{s:?}");
        }
    }

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
