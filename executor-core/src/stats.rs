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
    /// Jobs handed to `execute` (may wrap below zero: see [`StatsRecorder::unqueued`]).
    submitted: AtomicU64,
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
    /// Records the end of a started job, on the current thread's shard (see
    /// [`StatsRecorder::finished`]).
    #[inline]
    fn record_end(&self, status: Status, run_time: Option<Duration>, owned: bool) {
        if let Some(run_time) = run_time
            && matches!(
                status,
                Status::Completed | Status::Failed | Status::Panicked
            )
        {
            let ns = u64::try_from(run_time.as_nanos()).unwrap_or(u64::MAX);
            bump(&self.sum_ns, ns, owned);
            if ns > self.max_ns.load(Relaxed) {
                self.max_ns.fetch_max(ns, Relaxed);
            }
            bump(&self.buckets[bucket(ns)], 1, owned);
        }
        // Last, so a snapshot never sees a job as ended before it stops running.
        bump(&self.ended[index(status)], 1, owned);
    }

    fn new() -> Self {
        Shard {
            submitted: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ended_unstarted: AtomicU64::new(0),
            ended: Default::default(),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }
}

/// Shards a thread can own: while it lives, no other thread writes to them, so its
/// counts are a plain load and store, not an atomic add (a locked instruction, which
/// also waits for the thread's pending stores: the largest part of what a count cost).
const OWNED: usize = 8;
/// The shard of the threads that own none (more than [`OWNED`] alive at once): they
/// count with atomic adds.
const COMMON: usize = OWNED;
const SHARDS: usize = OWNED + 1;

/// Which of the [`OWNED`] shards have an owner (one bit each).
static OWNERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    /// This thread's shard, or `usize::MAX` before its first count (a constant initial
    /// value makes each read one load, with no lazy-initialisation check). It has no
    /// destructor, so it can be read while the thread's other thread-locals drop.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    /// Gives an owned shard back when the thread exits.
    static OWNER: Owner = const { Owner(std::cell::Cell::new(usize::MAX)) };
}

/// The shard a thread owns, given back when the thread ends.
struct Owner(std::cell::Cell<usize>);

impl Drop for Owner {
    fn drop(&mut self) {
        let i = self.0.get();
        if i < OWNED {
            // Whatever this thread still counts (other thread-locals dropping after this
            // one) goes to the common shard, since the next owner may already be counting.
            SHARD.set(COMMON);
            release(i);
        }
    }
}

/// Gives shard `i` back. Release: the next owner's first load sees this owner's counts.
fn release(i: usize) {
    OWNERS.fetch_and(!(1 << i), std::sync::atomic::Ordering::Release);
}

/// The shard the current thread writes to.
#[inline]
fn shard_index() -> usize {
    match SHARD.get() {
        usize::MAX => first_shard_index(),
        i => i,
    }
}

/// Gives the current thread its shard: a free owned one, else the common one.
#[cold]
#[inline(never)]
fn first_shard_index() -> usize {
    use std::sync::atomic::Ordering::Acquire;
    let claimed = OWNERS.fetch_update(Acquire, Acquire, |taken| {
        let free = (!taken).trailing_zeros() as usize;
        (free < OWNED).then(|| taken | (1 << free))
    });
    let i = match claimed {
        Ok(taken) => {
            let i = (!taken).trailing_zeros() as usize;
            // Registers the destructor that gives the shard back; a thread already
            // tearing down its thread-locals cannot own one.
            if OWNER.try_with(|o| o.0.set(i)).is_ok() {
                i
            } else {
                release(i);
                COMMON
            }
        }
        Err(_) => COMMON,
    };
    SHARD.set(i);
    i
}

/// Whether the job whose start is the shard's `n`th (from 0) has its run time measured:
/// the first 64, then one in eight (reading the clock costs as much as a no-op task).
#[inline]
fn sample(n: u64) -> bool {
    n < 64 || n.is_multiple_of(8)
}

/// The current thread's shard index, and whether it owns it.
#[inline]
fn my_shard() -> (usize, bool) {
    let i = shard_index();
    (i, i < OWNED)
}

/// Adds `n` (wrapping) to a counter of the current thread's shard, returning the count
/// before: a plain load and store when the thread owns the shard, an atomic add otherwise.
#[inline]
fn bump(counter: &AtomicU64, n: u64, owned: bool) -> u64 {
    if owned {
        let was = counter.load(Relaxed);
        counter.store(was.wrapping_add(n), Relaxed);
        was
    } else {
        counter.fetch_add(n, Relaxed)
    }
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
        let (i, owned) = my_shard();
        bump(&self.shards[i].0[index(status)], 1, owned);
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
    shards: Box<[Shard]>,
}

impl Default for StatsRecorder {
    fn default() -> Self {
        Self {
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

    /// The current thread's shard, and whether it owns it (see [`bump`]).
    #[inline]
    fn shard(&self) -> (&Shard, bool) {
        let (i, owned) = my_shard();
        (&self.shards[i], owned)
    }

    /// A job was accepted and queued.
    pub fn accepted(&self) {
        self.accepted_many(1);
    }

    /// `n` jobs of a batch were accepted and queued (one count for the batch).
    pub fn accepted_many(&self, n: usize) {
        let (shard, owned) = self.shard();
        bump(&shard.submitted, n as u64, owned);
    }

    /// A job was refused by `execute`.
    pub fn rejected(&self) {
        self.accepted();
        self.ended_unstarted(Status::Rejected);
    }

    /// A queued job is being taken back (to be refused instead): undoes
    /// [`accepted`](Self::accepted). A shard's count may go below zero (wrapping) when
    /// another thread accepted the job; the sum over the shards is right.
    pub fn unqueued(&self) {
        let (shard, owned) = self.shard();
        bump(&shard.submitted, 1u64.wrapping_neg(), owned);
    }

    /// Runs a queued job on this thread and records how it ended.
    pub fn run(&self, job: Job) -> Status {
        // `started` and `finished` in one, finding the shard once.
        let (shard, owned) = self.shard();
        let start = sample(bump(&shard.started, 1, owned)).then(Instant::now);
        let status = job.run();
        shard.record_end(status, start.map(|t| t.elapsed()), owned);
        status
    }

    /// Records the start of a queued job that runs elsewhere (an async runtime); pair it
    /// with [`finished`](Self::finished), passing the run time measured from the instant
    /// this returns. Reading the clock costs as much as a no-op task, so run time is
    /// sampled: the first 64 jobs of each shard, then one in eight (`None` otherwise).
    pub fn started(&self) -> Option<Instant> {
        let (shard, owned) = self.shard();
        sample(bump(&shard.started, 1, owned)).then(Instant::now)
    }

    /// Records the end of a started job (`run_time` when it was sampled).
    pub fn finished(&self, status: Status, run_time: Option<Duration>) {
        let (shard, owned) = self.shard();
        shard.record_end(status, run_time, owned);
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
        let (shard, owned) = self.shard();
        bump(&shard.ended[index(status)], 1, owned);
        bump(&shard.ended_unstarted, 1, owned);
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
        let submitted = self.shards.iter().fold(0u64, |n, shard| {
            n.wrapping_add(shard.submitted.load(Relaxed))
        });
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

    /// Threads that own a shard count with plain stores; more threads than shards share
    /// the common one, and an exiting thread's shard passes to a later thread. Every
    /// count must survive all of it: waves of threads, more at once than there are
    /// shards, each counting through every kind of record.
    #[test]
    fn counts_are_exact_across_owned_shared_and_handed_on_shards() {
        const PER_THREAD: u64 = 20_000;
        const THREADS: usize = 3 * OWNED;
        let stats = StatsRecorder::new();
        let ends = StatusCounters::new();
        for _wave in 0..3 {
            // All of a wave's threads count at once, so the ones that share a shard race.
            let start = std::sync::Barrier::new(THREADS);
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let (stats, ends, start) = (&stats, &ends, &start);
                    s.spawn(move || {
                        start.wait();
                        for i in 0..PER_THREAD {
                            stats.accepted();
                            if i.is_multiple_of(5) {
                                // Taken back and refused: counted once, as rejected.
                                stats.unqueued();
                                stats.rejected();
                                ends.add(Status::Rejected);
                                continue;
                            }
                            let start = stats.started();
                            stats.finished(Status::Completed, start.map(|t| t.elapsed()));
                            ends.add(Status::Completed);
                        }
                    });
                }
            });
        }
        let all = 3 * THREADS as u64 * PER_THREAD;
        let rejected = 3 * THREADS as u64 * PER_THREAD / 5;
        let snap = stats.snapshot();
        assert_eq!(snap.submitted, all);
        assert_eq!(snap.rejected, rejected);
        assert_eq!(snap.completed, all - rejected);
        assert_eq!((snap.queued, snap.running), (0, 0));
        assert!(snap.is_balanced(), "{snap:?}");
        assert_eq!(ends.get(Status::Completed), all - rejected);
        assert_eq!(ends.total(), all);
        // The threads that ended gave their shards back: a new thread owns one (only a
        // leak, or eight other threads of this test binary counting at once, would leave
        // it the common shard).
        assert!(std::thread::spawn(|| my_shard().1).join().unwrap());
    }
}
