//! The conformance suite every backend runs from its own tests (feature `testing`), so
//! that all backends keep the same semantics.
//!
//! In a backend's `tests/conformance.rs`:
//!
//! ```ignore
//! executor_core::conformance_tests!(|| std::sync::Arc::new(MyExecutor::new(2)));
//! ```
//!
//! The factory must return an executor whose capacity is two concurrent tasks (two
//! workers, two threads, or a runtime with two worker threads). Every wait is bounded: a
//! hang fails the test instead of hanging CI.

use crate::{
    Executor, ExecutorExt, Job, ShutdownMode, ShutdownReport, TaskError, TaskHandle, TaskMeta,
    TaskSet,
};
use proptest::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Makes a fresh executor for one check.
pub type Factory<'a> = &'a dyn Fn() -> Arc<dyn Executor>;

/// The longest any single wait in the suite may take before the check fails.
pub const BOUND: Duration = Duration::from_secs(20);

/// How many tasks the executors under test run at once.
pub const CAPACITY: usize = 2;

/// Waits for a handle at most [`BOUND`]; panics (failing the test) if it hangs.
pub fn wait_bounded<T: Send + 'static>(handle: TaskHandle<T>, what: &str) -> Result<T, TaskError> {
    match handle.wait_timeout(BOUND) {
        Ok(r) => r,
        Err(_) => panic!("{what}: the task's handle did not resolve within {BOUND:?}"),
    }
}

/// Runs `f` on a thread of its own and returns what it returns, failing the test when that
/// takes longer than [`BOUND`] (a call that hangs, such as a `map` whose runner loops,
/// fails instead of hanging the suite; its thread is left behind).
pub fn within_bound<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?}"))
}

/// A gate tasks wait on until the test opens it (bounded, so a bug cannot hang the test).
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every waiter through.
    pub fn open(&self) {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.1.notify_all();
    }

    /// Blocks until the gate opens, at most [`BOUND`].
    pub fn wait(&self) {
        let guard = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, timeout) = self
            .0
            .1
            .wait_timeout_while(guard, BOUND, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
        assert!(*guard && !timeout.timed_out(), "a gate was never opened");
    }
}

/// A future that is pending once, so executors must really poll it twice.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Occupies every worker of `exec` until `gate` opens; returns once all of them run.
/// The blockers are futures that block their thread, so they occupy a tokio runtime's
/// workers as well as a thread pool's.
pub fn saturate(exec: &dyn Executor, gate: &Gate) -> Vec<TaskHandle<()>> {
    let started = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..CAPACITY)
        .map(|_| {
            let gate = gate.clone();
            let started = started.clone();
            exec.submit_async(async move {
                started.fetch_add(1, Ordering::SeqCst);
                gate.wait();
            })
        })
        .collect();
    let t0 = std::time::Instant::now();
    while started.load(Ordering::SeqCst) < CAPACITY {
        assert!(
            t0.elapsed() < BOUND,
            "the executor never started {CAPACITY} tasks at once"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    handles
}

/// The executor's stats once nothing is queued or running (counters are updated just
/// after a handle resolves, so a test that reads them right away must wait a moment).
pub fn settled(exec: &dyn Executor) -> crate::ExecutorStats {
    let t0 = std::time::Instant::now();
    loop {
        let stats = exec.stats();
        if stats.queued + stats.running == 0 && stats.is_balanced() {
            return stats;
        }
        assert!(t0.elapsed() < BOUND, "stats never settled: {stats:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn finish(exec: &dyn Executor) {
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(
        report.not_started.is_empty(),
        "graceful shutdown dropped {:?}",
        report.not_started
    );
    assert!(
        report.stats.is_balanced(),
        "stats do not add up: {:?}",
        report.stats
    );
    assert_eq!(
        report.stats.queued + report.stats.running,
        0,
        "{:?}",
        report.stats
    );
}

/// Closures return their values; many tasks all complete.
pub fn returns_values(make: Factory<'_>) {
    let exec = make();
    let handles: Vec<_> = (0..200u64).map(|i| exec.submit(move || i * i)).collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(wait_bounded(h, "returns_values").unwrap(), (i * i) as u64);
    }
    let stats = settled(&*exec);
    assert_eq!(stats.completed, 200);
    finish(&*exec);
}

/// Futures run to completion, including ones that return `Pending` first.
pub fn runs_futures(make: Factory<'_>) {
    let exec = make();
    let handles: Vec<_> = (0..20u32)
        .map(|i| {
            exec.submit_async(async move {
                YieldOnce(false).await;
                i + 1
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(wait_bounded(h, "runs_futures").unwrap(), i as u32 + 1);
    }
    let h = exec.run_async(TaskMeta::new("async.fail"), |_ctx| async {
        Err::<(), _>(std::io::Error::other("async failure"))
    });
    let err = wait_bounded(h, "runs_futures").unwrap_err();
    assert!(err.is_failed(), "{err}");
    finish(&*exec);
}

/// An async task gets what async Rust expects on every backend: a tokio timer and a
/// loopback TCP round trip work inside it, with more such tasks than the executor has
/// workers, and the work around them still adds up.
pub fn async_tasks_get_tokio_timers_and_io(make: Factory<'_>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exec = make();
    let handles: Vec<_> = (0..2 * CAPACITY as u64 + 1)
        .map(|i| {
            exec.run_async(TaskMeta::new("async.tokio"), move |_ctx| async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let echo = async {
                    let (mut conn, _) = listener.accept().await?;
                    let mut buf = [0u8; 8];
                    conn.read_exact(&mut buf).await?;
                    conn.write_all(&buf).await?;
                    Ok::<_, std::io::Error>(())
                };
                let ask = async {
                    let mut conn = tokio::net::TcpStream::connect(addr).await?;
                    conn.write_all(&i.to_le_bytes()).await?;
                    let mut buf = [0u8; 8];
                    conn.read_exact(&mut buf).await?;
                    Ok::<_, std::io::Error>(u64::from_le_bytes(buf))
                };
                let (echoed, answer) = tokio::join!(echo, ask);
                echoed?;
                let sum: u64 = (0..=answer?).sum();
                Ok::<_, std::io::Error>(sum)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        match wait_bounded(h, "async task with tokio timer and TCP") {
            Ok(sum) => assert_eq!(sum, i * (i + 1) / 2),
            Err(e) => panic!("an async task could not use tokio: {e}"),
        }
    }
    finish(&*exec);
}

/// A panic is reported with its message and hurts no worker.
pub fn panics_are_contained(make: Factory<'_>) {
    let exec = make();
    let boom = exec.submit(|| -> u32 { panic!("boom in a task") });
    let err = wait_bounded(boom, "panic").unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert_eq!(err.panic_message(), Some("boom in a task"));
    let async_boom = exec.submit_async(async { panic!("boom in a future") });
    let err: TaskError = wait_bounded::<()>(async_boom, "async panic").unwrap_err();
    assert_eq!(err.panic_message(), Some("boom in a future"));
    // Every worker still works.
    let handles: Vec<_> = (0..50).map(|i| exec.submit(move || i)).collect();
    for h in handles {
        wait_bounded(h, "after panic").unwrap();
    }
    let stats = settled(&*exec);
    assert_eq!(stats.panicked, 2, "{stats:?}");
    finish(&*exec);
}

/// A panicking observer or failure hook (layer code, not the task) hurts no worker and
/// leaves the stats balanced: the handle resolves and the attempt is counted.
pub fn hook_panics_are_contained(make: Factory<'_>) {
    let exec = make();
    let (job, observed) = crate::Job::once(TaskMeta::new("observed"), |_| {
        Err::<u32, _>(TaskError::failed("planned error"))
    });
    job.observe(|_| panic!("planned observer panic"));
    // A later observer still hears of the end.
    let heard = Arc::new(AtomicBool::new(false));
    let flag = heard.clone();
    job.observe(move |_| flag.store(true, Ordering::SeqCst));
    drop(exec.execute(job));
    let (mut job, hooked) = crate::Job::repeatable(TaskMeta::new("hooked"), |_| {
        Err::<u32, _>(TaskError::failed("planned error"))
    });
    job.on_failure(Box::new(|_job, _err| panic!("planned hook panic")));
    drop(exec.execute(job));
    let err = wait_bounded(observed, "observed").unwrap_err();
    assert!(err.is_failed(), "{err}");
    // Observers run just after the handle resolves.
    let t0 = std::time::Instant::now();
    while !heard.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < BOUND,
            "an observer after a panicking one was skipped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(wait_bounded(hooked, "hooked").is_err());
    let after: Vec<_> = (0..10u32).map(|i| exec.submit(move || i)).collect();
    for (i, h) in after.into_iter().enumerate() {
        assert_eq!(wait_bounded(h, "after a hook panic").unwrap(), i as u32);
    }
    let stats = settled(&*exec);
    assert_eq!((stats.submitted, stats.completed), (12, 10), "{stats:?}");
    // The observed task failed; the hooked one failed (backends count the attempt) or
    // was cancelled (a ledger that counts handles: the dropped job resolved so).
    assert!(stats.failed >= 1, "{stats:?}");
    finish(&*exec);
}

/// A task's own error comes back as `is_failed`, with its source.
pub fn errors_are_reported(make: Factory<'_>) {
    let exec = make();
    let h = exec.run(TaskMeta::new("parse"), |_| "nope".parse::<u32>());
    let err = wait_bounded(h, "error").unwrap_err();
    assert!(err.is_failed());
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(settled(&*exec).failed, 1);
    finish(&*exec);
}

/// `map` returns results in input order.
pub fn map_keeps_order(make: Factory<'_>) {
    let exec = make();
    let out = exec
        .map(0..100u64, |x| {
            if x % 7 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            x * 3
        })
        .unwrap();
    assert_eq!(out, (0..100).map(|x| x * 3).collect::<Vec<_>>());
    finish(&*exec);
}

/// A task cancelled while queued never runs and resolves as cancelled at once.
pub fn cancel_before_start(make: Factory<'_>) {
    let exec = make();
    let gate = Gate::new();
    let blockers = saturate(&*exec, &gate);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let victim = exec.submit_async(async move { flag.store(true, Ordering::SeqCst) });
    assert!(
        victim.cancel(),
        "a queued task did not resolve as cancelled at once"
    );
    gate.open();
    assert!(
        wait_bounded(victim, "cancelled")
            .unwrap_err()
            .is_cancelled()
    );
    for b in blockers {
        wait_bounded(b, "blocker").unwrap();
    }
    finish(&*exec);
    assert!(!ran.load(Ordering::SeqCst), "a cancelled task ran");
    assert_eq!(exec.stats().cancelled, 1);
}

/// A running future is dropped when cancelled; its handle resolves.
pub fn cancel_running_future(make: Factory<'_>) {
    let exec = make();
    let h = exec.submit_async(std::future::pending::<()>());
    std::thread::sleep(Duration::from_millis(20));
    h.cancel();
    assert!(
        wait_bounded(h, "pending future")
            .unwrap_err()
            .is_cancelled()
    );
    // A blocking task sees the request through its context.
    let h = exec.run(TaskMeta::new("loop"), |ctx| {
        for _ in 0..10_000 {
            ctx.checkpoint()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok::<_, crate::Cancelled>(())
    });
    std::thread::sleep(Duration::from_millis(20));
    h.cancel();
    assert!(
        wait_bounded(h, "cancelled loop")
            .unwrap_err()
            .is_cancelled()
    );
    finish(&*exec);
}

/// Graceful shutdown finishes queued work; later submissions resolve as shut down.
pub fn graceful_shutdown_finishes_queued(make: Factory<'_>) {
    let exec = make();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            exec.submit(move || {
                std::thread::sleep(Duration::from_millis(5));
                i
            })
        })
        .collect();
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(report.not_started.is_empty(), "{:?}", report.not_started);
    for h in handles {
        wait_bounded(h, "queued before shutdown").unwrap();
    }
    let late = exec.submit(|| 1);
    assert!(
        wait_bounded(late, "after shutdown")
            .unwrap_err()
            .is_shutdown()
    );
    let again = exec.shutdown(ShutdownMode::Now);
    assert!(again.not_started.is_empty());
    let stats = exec.stats();
    assert!(stats.is_balanced(), "{stats:?}");
    assert_eq!(stats.completed, 20);
    assert_eq!(stats.rejected, 1);
}

/// Past the deadline, queued tasks are dropped, named in the report, and their handles
/// resolve as shut down.
pub fn shutdown_deadline_names_unstarted(make: Factory<'_>) {
    let exec = make();
    let gate = Gate::new();
    let blockers = saturate(&*exec, &gate);
    let queued: Vec<_> = (0..5)
        .map(|i| {
            // Futures: on tokio, blocking jobs go to the blocking pool and never queue.
            exec.run_async(TaskMeta::new(format!("queued.{i}")), |_| async {
                Ok::<_, TaskError>(())
            })
        })
        .collect();
    let report = exec.shutdown(ShutdownMode::Graceful(Duration::from_millis(100)));
    gate.open();
    let mut names: Vec<_> = report.not_started.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        (0..5).map(|i| format!("queued.{i}")).collect::<Vec<_>>()
    );
    for h in queued {
        assert!(
            wait_bounded(h, "dropped at shutdown")
                .unwrap_err()
                .is_shutdown()
        );
    }
    for b in blockers {
        // A blocker finishes, or (on a runtime torn down past its deadline) is cancelled.
        match wait_bounded(b, "blocker") {
            Ok(()) => {}
            Err(e) => assert!(e.is_cancelled(), "{e}"),
        }
    }
}

/// A shutdown `Now` racing the workers over a long queue: the report names exactly the
/// tasks its stats count as not started, and later stats agree with it.
pub fn shutdown_now_names_exactly_the_unstarted(make: Factory<'_>) {
    for round in 0..20 {
        let exec = make();
        let handles: Vec<_> = (0..2_000)
            .map(|_| {
                exec.run_async(TaskMeta::new("queued"), |_| async {
                    Ok::<_, TaskError>(())
                })
            })
            .collect();
        let report = exec.shutdown(ShutdownMode::Now);
        let mut shut = 0;
        for h in handles {
            match wait_bounded(h, "queued at a shutdown") {
                Ok(()) => {}
                Err(e) if e.is_shutdown() => shut += 1,
                Err(e) => panic!("a task ended unexpectedly: {e}"),
            }
        }
        let stats = settled(&*exec);
        assert_eq!(
            (report.not_started.len() as u64, report.stats.not_started),
            (stats.not_started, stats.not_started),
            "round {round}: the report and the stats disagree on what never ran"
        );
        assert_eq!(stats.not_started, shut, "round {round}: {stats:?}");
    }
}

/// A `TaskSet` yields results as tasks complete, not in submission order.
pub fn task_set_in_completion_order(make: Factory<'_>) {
    let exec = make();
    let gate = Gate::new();
    let g = gate.clone();
    let mut set = TaskSet::new();
    set.push(exec.submit(move || {
        g.wait();
        "slow"
    }));
    set.push(exec.submit(|| "fast"));
    let (_, first) = set
        .join_next_timeout(BOUND)
        .expect("a result within the bound");
    assert_eq!(first.unwrap(), "fast");
    gate.open();
    let (_, second) = set
        .join_next_timeout(BOUND)
        .expect("a result within the bound");
    assert_eq!(second.unwrap(), "slow");
    assert!(set.join_next().is_none());
    finish(&*exec);
}

/// One operation in a random mix.
#[derive(Clone, Debug)]
pub enum Op {
    /// Returns a value.
    Ok,
    /// Returns an error.
    Err,
    /// Panics.
    Panic,
    /// Sleeps this many milliseconds, then returns.
    Sleep(u8),
    /// A future that returns after one yield.
    AsyncOk,
    /// Returns a value, but is cancelled right after submission.
    Cancel,
    /// A future that never completes, cancelled after submission.
    PendingCancelled,
}

/// Random operation mixes for [`check_mix`].
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => Just(Op::Ok),
        2 => Just(Op::Err),
        2 => Just(Op::Panic),
        2 => (0u8..4).prop_map(Op::Sleep),
        2 => Just(Op::AsyncOk),
        2 => Just(Op::Cancel),
        1 => Just(Op::PendingCancelled),
    ];
    proptest::collection::vec(op, 0..40)
}

/// Runs `ops` with a shutdown after `shutdown_at` of them (the rest are submitted after
/// it), then checks that every handle resolved as its op says and that the executor's
/// ledger matches the handles.
pub fn check_mix(make: Factory<'_>, ops: &[Op], shutdown_at: usize, now: bool) {
    let exec = make();
    let mut handles = Vec::new();
    let mut report = None;
    for (i, op) in ops.iter().enumerate() {
        if i == shutdown_at.min(ops.len()) {
            let mode = if now {
                ShutdownMode::Now
            } else {
                ShutdownMode::Graceful(BOUND)
            };
            report = Some(exec.shutdown(mode));
        }
        let h: TaskHandle<u32> = match op {
            Op::Ok => exec.submit(|| 1),
            Op::Err => exec.run(TaskMeta::new("err"), |_| Err::<u32, _>("planned error")),
            Op::Panic => exec.submit(|| panic!("planned panic")),
            Op::Sleep(ms) => {
                let ms = u64::from(*ms);
                exec.submit(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    1
                })
            }
            Op::AsyncOk => exec.submit_async(async {
                YieldOnce(false).await;
                1
            }),
            Op::Cancel => {
                let h = exec.submit(|| 1);
                h.cancel();
                h
            }
            Op::PendingCancelled => {
                let h = exec.submit_async(async {
                    std::future::pending::<()>().await;
                    1
                });
                h.cancel();
                h
            }
        };
        handles.push((op.clone(), h));
    }
    let final_report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    let report = report.unwrap_or(final_report);
    check_outcomes(&*exec, handles, &report, ops.len());
}

/// Checks that every handle resolved as its op says and that the executor's ledger (and
/// the shutdown `report`) match the handles; `submitted` is how many tasks were offered.
fn check_outcomes(
    exec: &dyn Executor,
    handles: Vec<(Op, TaskHandle<u32>)>,
    report: &ShutdownReport,
    submitted: usize,
) {
    let mut ok = 0;
    let mut failed = 0;
    let mut panicked = 0;
    let mut cancelled = 0;
    let mut shut = 0;
    for (op, h) in handles {
        match wait_bounded(h, "random mix") {
            Ok(_) => {
                assert!(
                    !matches!(op, Op::Err | Op::Panic | Op::PendingCancelled),
                    "{op:?} succeeded"
                );
                ok += 1;
            }
            Err(e) if e.is_failed() => {
                assert!(matches!(op, Op::Err), "{op:?} failed: {e}");
                failed += 1;
            }
            Err(e) if e.is_panic() => {
                assert!(matches!(op, Op::Panic), "{op:?} panicked: {e}");
                panicked += 1;
            }
            Err(e) if e.is_cancelled() => {
                // A future still between two polls when a shutdown's deadline passed may be
                // ended with its runtime (tokio drops unfinished tasks): cancelled, since it
                // had started.
                assert!(
                    matches!(op, Op::Cancel | Op::PendingCancelled)
                        || (matches!(op, Op::AsyncOk) && report.deadline_passed),
                    "{op:?} cancelled"
                );
                cancelled += 1;
            }
            Err(e) if e.is_shutdown() => shut += 1,
            Err(e) => panic!("{op:?} ended unexpectedly: {e}"),
        }
    }
    let stats = settled(exec);
    assert_eq!(stats.submitted, submitted as u64, "{stats:?}");
    assert_eq!(stats.completed, ok, "{stats:?}");
    assert_eq!(stats.failed, failed, "{stats:?}");
    assert_eq!(stats.panicked, panicked, "{stats:?}");
    assert_eq!(stats.cancelled, cancelled, "{stats:?}");
    assert_eq!(stats.rejected + stats.not_started, shut, "{stats:?}");
    assert_eq!(
        report.not_started.len() as u64,
        stats.not_started,
        "{report:?}"
    );
}

/// The job an op describes, for [`check_batch_mix`]; ops that cancel are cancelled by the
/// caller once the batch is submitted.
fn op_job(op: &Op) -> (Job, TaskHandle<u32>) {
    let meta = TaskMeta::new("batched");
    match op {
        Op::Ok | Op::Cancel => Job::once(meta, |_| Ok(1)),
        Op::Err => Job::repeatable(meta, |_| Err(TaskError::failed("planned error"))),
        Op::Panic => Job::once(meta, |_| panic!("planned panic")),
        Op::Sleep(ms) => {
            let ms = u64::from(*ms);
            Job::once(meta, move |_| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(1)
            })
        }
        Op::AsyncOk => Job::future(meta, async {
            YieldOnce(false).await;
            Ok(1)
        }),
        Op::PendingCancelled => Job::future(meta, async {
            std::future::pending::<()>().await;
            Ok(1)
        }),
    }
}

/// [`check_mix`] through [`Executor::execute_batch`]: the ops before `shutdown_at` go in
/// one batch before a shutdown, the rest in one batch after it. Each job is still one
/// task: every handle resolves as its op says and the ledger counts every job.
pub fn check_batch_mix(make: Factory<'_>, ops: &[Op], shutdown_at: usize, now: bool) {
    let exec = make();
    let at = shutdown_at.min(ops.len());
    let mut handles = Vec::new();
    let mut report = None;
    for (part, batch_ops) in [&ops[..at], &ops[at..]].into_iter().enumerate() {
        if part == 1 {
            let mode = if now {
                ShutdownMode::Now
            } else {
                ShutdownMode::Graceful(BOUND)
            };
            report = Some(exec.shutdown(mode));
        }
        let (jobs, batch): (Vec<Job>, Vec<_>) = batch_ops
            .iter()
            .map(|op| {
                let (job, h) = op_job(op);
                (job, (op.clone(), h))
            })
            .unzip();
        exec.execute_batch(jobs);
        for (op, h) in &batch {
            if matches!(op, Op::Cancel | Op::PendingCancelled) {
                h.cancel();
            }
        }
        handles.extend(batch);
    }
    let final_report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    let report = report.unwrap_or(final_report);
    check_outcomes(&*exec, handles, &report, ops.len());
}

/// How many tasks a `map` of `n` items submits on `exec`: its runner tasks when the
/// executor gives a width for the anonymous meta, else one per item.
pub fn map_tasks(exec: &dyn Executor, n: usize) -> usize {
    match exec.map_width(&crate::meta::ANONYMOUS) {
        Some(width) => width.get().min(n),
        None => n,
    }
}

/// `map` over many items: results in input order, one panicking item fails the map with
/// its panic while every other item still runs, and the stats count the tasks the map's
/// path makes (its runner tasks, or one per item; see [`map_tasks`]).
pub fn map_counts_its_tasks(make: Factory<'_>) {
    let exec = make();
    let n = 1_000u64;
    let tasks = map_tasks(&*exec, n as usize) as u64;
    let out = exec.map(0..n, |x| x + 1).unwrap();
    assert_eq!(out, (1..=n).collect::<Vec<_>>());
    let ran = Arc::new(AtomicUsize::new(0));
    let counted = ran.clone();
    let err = exec
        .map(0..n, move |x| {
            counted.fetch_add(1, Ordering::Relaxed);
            if x == 500 {
                panic!("item 500");
            }
            x
        })
        .unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert_eq!(err.panic_message(), Some("item 500"));
    assert_eq!(ran.load(Ordering::Relaxed), n as usize, "every item runs");
    let stats = settled(&*exec);
    assert_eq!(stats.submitted, 2 * tasks, "{stats:?}");
    assert_eq!(stats.completed, 2 * tasks - 1, "{stats:?}");
    assert_eq!(stats.panicked, 1, "{stats:?}");
    // The executor goes on working after the panic.
    assert_eq!(exec.map(0..3u64, |x| x * 2).unwrap(), vec![0, 2, 4]);
    finish(&*exec);
}

/// `map` and `map_range` return every value in input order for sizes around the
/// executor's width: none, one, one less than the width, the width, one more, and many.
pub fn map_keeps_order_at_every_size(make: Factory<'_>) {
    let exec = make();
    let width = exec
        .map_width(&crate::meta::ANONYMOUS)
        .map_or(CAPACITY, |w| w.get());
    for n in [0, 1, width - 1, width, width + 1, 10_000] {
        let expected: Vec<u64> = (0..n as u64).map(|x| x * x + 1).collect();
        let out = exec.map(0..n as u64, |x| x * x + 1).unwrap();
        assert_eq!(out, expected, "map, n = {n}");
        let out = exec.map_range(0..n as u64, |x| x * x + 1).unwrap();
        assert_eq!(out, expected, "map_range, n = {n}");
    }
    finish(&*exec);
}

/// A `map` of `n` items whose calls panic at the indices in `panics` (those below `n`):
/// without a panic it returns every value in order; with one it fails as panicked. Either
/// way every item and every value made drops exactly once, none twice, none leaked. Then
/// the same for `map_range` over `0..n`.
pub fn check_map_drops(make: Factory<'_>, n: usize, panics: &[usize]) {
    use crate::runners::Counted;
    let exec = make();
    let items_dropped = Arc::new(AtomicUsize::new(0));
    let values_dropped = Arc::new(AtomicUsize::new(0));
    let mut items: Vec<Counted> = (0..n).map(|i| Counted(i, items_dropped.clone())).collect();
    // Room past the items: the map must free the buffer with the capacity it has.
    items.reserve(7);
    let mut panicking: Vec<usize> = panics.iter().copied().filter(|&i| i < n).collect();
    panicking.sort_unstable();
    panicking.dedup();
    // Item `i`'s value, or its panic.
    let value = {
        let values_dropped = values_dropped.clone();
        let panicking = panicking.clone();
        move |i: usize| {
            if panicking.contains(&i) {
                panic!("item {i}");
            }
            Counted(i, values_dropped.clone())
        }
    };
    let check = |result: Result<Vec<Counted>, TaskError>, what: &str| match result {
        Ok(values) => {
            assert!(
                panicking.is_empty(),
                "{what} with a panicking item succeeded"
            );
            assert!(
                values.iter().enumerate().all(|(i, v)| v.0 == i),
                "{what} out of order"
            );
            assert_eq!(values.len(), n, "{what}");
        }
        Err(e) => {
            assert!(
                !panicking.is_empty(),
                "{what} with no panicking item failed: {e}"
            );
            assert!(e.is_panic(), "{what}: {e}");
        }
    };
    let (of_item, mapper) = (value.clone(), exec.clone());
    let mapped = within_bound("map", move || {
        mapper.map(items, move |item: Counted| of_item(item.0))
    });
    check(mapped, "map");
    assert_eq!(items_dropped.load(Ordering::Relaxed), n, "items dropped");
    let values_made = n - panicking.len();
    assert_eq!(
        values_dropped.load(Ordering::Relaxed),
        values_made,
        "values dropped by map"
    );
    // The same calls over a range, whose items are made as they are claimed.
    let mapper = exec.clone();
    check(
        within_bound("map_range", move || mapper.map_range(0..n, value)),
        "map_range",
    );
    assert_eq!(
        values_dropped.load(Ordering::Relaxed),
        2 * values_made,
        "values dropped by map_range"
    );
    finish(&*exec);
}

/// `map` on a shut-down executor returns a shut-down error, without hanging.
pub fn map_after_shutdown_is_refused(make: Factory<'_>) {
    let exec = make();
    finish(&*exec);
    let refused = exec.clone();
    let result = within_bound("map on a shut-down executor", move || {
        refused.map(0..100u64, |x| x)
    });
    let err = result.unwrap_err();
    assert!(err.is_shutdown(), "{err}");
}

/// A `map` inside a task whose items each `map` again, all on the same executor, completes:
/// a waiting worker runs its pool's queued jobs, so nesting cannot starve the pool (run it
/// on a one-thread pool too).
pub fn nested_map_completes(exec: Arc<dyn Executor>) {
    // Weak: the tasks must not keep their own executor alive.
    let pool = Arc::downgrade(&exec);
    let h = exec.submit(move || {
        let outer = pool.upgrade().expect("the executor is alive");
        outer.map(0..6u64, move |i| {
            let inner = pool.upgrade().expect("the executor is alive");
            inner
                .map(0..40u64, move |j| i * 100 + j)
                .map(|v| v.into_iter().sum::<u64>())
        })
    });
    let sums: Vec<u64> = wait_bounded(h, "nested map")
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let want: Vec<u64> = (0..6u64)
        .map(|i| (0..40u64).map(|j| i * 100 + j).sum())
        .collect();
    assert_eq!(sums, want);
    finish(&*exec);
}

/// A shutdown `Now` racing the workers over big batches of blocking and async jobs: the
/// report names exactly the tasks its stats count as not started, and each of them
/// resolved as shut down.
pub fn batch_shutdown_now_names_exactly_the_unstarted(make: Factory<'_>) {
    for round in 0..10 {
        let exec = make();
        let mut handles = Vec::new();
        for _ in 0..4 {
            let (jobs, hs): (Vec<Job>, Vec<TaskHandle<u32>>) = (0..500)
                .map(|i| {
                    if i % 2 == 0 {
                        Job::once(TaskMeta::new("queued"), |_| Ok(1))
                    } else {
                        Job::future(TaskMeta::new("queued"), async { Ok(1) })
                    }
                })
                .unzip();
            exec.execute_batch(jobs);
            handles.extend(hs);
        }
        let report = exec.shutdown(ShutdownMode::Now);
        let mut shut = 0;
        for h in handles {
            match wait_bounded(h, "batched at a shutdown") {
                Ok(_) => {}
                Err(e) if e.is_shutdown() => shut += 1,
                Err(e) => panic!("a task ended unexpectedly: {e}"),
            }
        }
        let stats = settled(&*exec);
        assert_eq!(stats.submitted, 2_000, "round {round}: {stats:?}");
        assert_eq!(
            (report.not_started.len() as u64, report.stats.not_started),
            (stats.not_started, stats.not_started),
            "round {round}: the report and the stats disagree on what never ran"
        );
        assert_eq!(stats.not_started, shut, "round {round}: {stats:?}");
    }
}

/// Expands to one `#[test]` per conformance check (and a proptest of random mixes) for the
/// executor that `$make` builds. Use it in a backend's integration tests.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use std::sync::Arc;
            use $crate::Executor;

            fn make() -> Arc<dyn Executor> {
                ($make)()
            }

            #[test]
            fn returns_values() {
                $crate::testing::returns_values(&make);
            }
            #[test]
            fn runs_futures() {
                $crate::testing::runs_futures(&make);
            }
            #[test]
            fn async_tasks_get_tokio_timers_and_io() {
                $crate::testing::async_tasks_get_tokio_timers_and_io(&make);
            }
            #[test]
            fn panics_are_contained() {
                $crate::testing::panics_are_contained(&make);
            }
            #[test]
            fn hook_panics_are_contained() {
                $crate::testing::hook_panics_are_contained(&make);
            }
            #[test]
            fn errors_are_reported() {
                $crate::testing::errors_are_reported(&make);
            }
            #[test]
            fn map_keeps_order() {
                $crate::testing::map_keeps_order(&make);
            }
            #[test]
            fn cancel_before_start() {
                $crate::testing::cancel_before_start(&make);
            }
            #[test]
            fn cancel_running_future() {
                $crate::testing::cancel_running_future(&make);
            }
            #[test]
            fn graceful_shutdown_finishes_queued() {
                $crate::testing::graceful_shutdown_finishes_queued(&make);
            }
            #[test]
            fn shutdown_deadline_names_unstarted() {
                $crate::testing::shutdown_deadline_names_unstarted(&make);
            }
            #[test]
            fn shutdown_now_names_exactly_the_unstarted() {
                $crate::testing::shutdown_now_names_exactly_the_unstarted(&make);
            }
            #[test]
            fn task_set_in_completion_order() {
                $crate::testing::task_set_in_completion_order(&make);
            }
            #[test]
            fn map_counts_its_tasks() {
                $crate::testing::map_counts_its_tasks(&make);
            }
            #[test]
            fn map_keeps_order_at_every_size() {
                $crate::testing::map_keeps_order_at_every_size(&make);
            }
            #[test]
            fn map_after_shutdown_is_refused() {
                $crate::testing::map_after_shutdown_is_refused(&make);
            }
            #[test]
            fn nested_map_completes() {
                $crate::testing::nested_map_completes(make());
            }
            #[test]
            fn batch_shutdown_now_names_exactly_the_unstarted() {
                $crate::testing::batch_shutdown_now_names_exactly_the_unstarted(&make);
            }

            $crate::testing::proptest::proptest! {
                #![proptest_config($crate::testing::proptest::prelude::ProptestConfig::with_cases(24))]
                #[test]
                fn random_mix_ledger_adds_up(
                    ops in $crate::testing::ops(),
                    at in 0usize..48,
                    now in $crate::testing::proptest::bool::ANY,
                ) {
                    $crate::testing::check_mix(&make, &ops, at, now);
                }

                #[test]
                fn random_map_drops_each_item_and_value_once(
                    n in 0usize..3_000,
                    panics in $crate::testing::proptest::collection::vec(0usize..3_000, 0..3),
                ) {
                    $crate::testing::check_map_drops(&make, n, &panics);
                }

                #[test]
                fn random_batch_ledger_adds_up(
                    ops in $crate::testing::ops(),
                    at in 0usize..48,
                    now in $crate::testing::proptest::bool::ANY,
                ) {
                    $crate::testing::check_batch_mix(&make, &ops, at, now);
                }
            }
        }
    };
}

pub use proptest;
