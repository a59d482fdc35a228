//! The conformance suite for named tasks (feature `testing`): what every executor that
//! runs named tasks must guarantee, in-process or across a boundary. Ok, error, panic,
//! cancel (queued and running), timeout (queued and running), shutdown (`Graceful` within
//! and past its deadline, and `Now`) all resolve their handles, and the executor's ledger
//! stays exact; a proptest throws random mixes of these at it with a shutdown somewhere.
//!
//! The executor under test must run [`CAPACITY`] tasks at once and serve [`tasks`]; a
//! backend whose workers are other processes starts them from a binary whose worker hook
//! registers `tasks()`. In a test binary with libtest's harness:
//!
//! ```ignore
//! named_tasks::conformance_tests!(|| std::sync::Arc::new(MyExecutor::new(2)));
//! ```
//!
//! In a `harness = false` test binary (the process pool re-executes it as its workers):
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     executor_process::worker_hook(named_tasks::testing::tasks);
//!     named_tasks::testing::main(&|| std::sync::Arc::new(make_pool()))
//! }
//! ```
//!
//! Tasks that run at a shutdown `Now` (or past a graceful deadline) may end either way:
//! an in-process backend lets a running blocking task finish, a process pool kills its
//! worker (cancelled). Every wait is bounded by [`BOUND`]: a hang fails the check.

use crate::{Task, Tasks};
use executor_core::{Executor, ExecutorStats, ShutdownMode, ShutdownReport, TaskError, TaskHandle};
use proptest::prelude::*;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[doc(hidden)]
pub use executor_core;
pub use proptest;

/// Makes a fresh executor for one check.
pub type Factory<'a> = &'a dyn Fn() -> Arc<dyn Executor>;

/// The longest any single wait in the suite may take before the check fails.
pub const BOUND: Duration = Duration::from_secs(20);

/// How many tasks the executors under test run at once.
pub const CAPACITY: usize = 2;

/// Returns its argument plus one.
pub static OK: Task<u32, u32> = Task::new("conformance.ok", |_ctx, x: u32| Ok(x + 1));

/// Fails with "planned error N".
pub static ERR: Task<u32, u32> = Task::new("conformance.err", |_ctx, x: u32| {
    Err(format!("planned error {x}").into())
});

/// Panics with "planned panic N".
pub static PANIC: Task<u32, u32> = Task::new("conformance.panic", |_ctx, x: u32| {
    panic!("planned panic {x}")
});

/// An async task that is pending once, then returns its argument plus one.
pub static ASYNC_OK: Task<u32, u32> = Task::new_async("conformance.async_ok", |_ctx, x: u32| {
    Box::pin(async move {
        YieldOnce(false).await;
        Ok(x + 1)
    })
});

/// Runs for `ms` milliseconds (at most [`BOUND`]), checking for cancellation every
/// millisecond, then returns its process id. A blocking task that an in-process backend
/// can stop through its context, and a process pool by ending the worker.
pub static HOLD: Task<u64, u32> = Task::new("conformance.hold", |ctx, ms: u64| {
    let until = Instant::now() + Duration::from_millis(ms).min(BOUND);
    while Instant::now() < until {
        ctx.checkpoint()?;
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(std::process::id())
});

/// The suite's named tasks, for a worker hook.
pub fn tasks() -> Tasks {
    Tasks::new()
        .with(&OK)
        .with(&ERR)
        .with(&PANIC)
        .with(&ASYNC_OK)
        .with(&HOLD)
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

/// Waits for a handle at most [`BOUND`]; panics (failing the check) if it hangs.
pub fn wait_bounded<T: Send + 'static>(handle: TaskHandle<T>, what: &str) -> Result<T, TaskError> {
    match handle.wait_timeout(BOUND) {
        Ok(r) => r,
        Err(_) => panic!("{what}: the task's handle did not resolve within {BOUND:?}"),
    }
}

/// The error's message with its causes, for checks on what it says.
fn chain(e: &TaskError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Waits until `exec` runs at least `n` tasks.
fn wait_running(exec: &dyn Executor, n: u64) {
    let t0 = Instant::now();
    while exec.stats().running < n {
        assert!(
            t0.elapsed() < BOUND,
            "the executor never ran {n} tasks at once: {:?}",
            exec.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Occupies every slot of `exec` with [`HOLD`] tasks that run until cancelled (or
/// [`BOUND`]); returns once all of them run.
fn saturate(exec: &dyn Executor) -> Vec<TaskHandle<u32>> {
    let before = exec.stats().running;
    let holders = (0..CAPACITY).map(|_| HOLD.call(exec, u64::MAX)).collect();
    wait_running(exec, before + CAPACITY as u64);
    holders
}

/// Cancels the holders and checks that each resolves as cancelled (or, when `either`, as
/// anything that ended it: a shutdown may have ended it first).
fn release(holders: Vec<TaskHandle<u32>>, either: bool) {
    for h in holders {
        h.cancel();
        match wait_bounded(h, "a holder") {
            Err(e) if e.is_cancelled() => {}
            other if either => drop(other),
            other => panic!("a cancelled holder ended as {other:?}"),
        }
    }
}

/// The executor's stats once nothing is queued or running.
pub fn settled(exec: &dyn Executor) -> ExecutorStats {
    let t0 = Instant::now();
    loop {
        let stats = exec.stats();
        if stats.queued + stats.running == 0 && stats.is_balanced() {
            return stats;
        }
        assert!(t0.elapsed() < BOUND, "stats never settled: {stats:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A graceful shutdown that must drop nothing and leave the ledger balanced.
fn finish(exec: &dyn Executor) -> ExecutorStats {
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(
        report.not_started.is_empty(),
        "graceful shutdown dropped {:?}",
        report.not_started
    );
    let stats = settled(exec);
    assert!(stats.is_balanced(), "the ledger does not add up: {stats:?}");
    stats
}

/// Values come back, errors and panics with their messages, and the executor goes on.
pub fn values_errors_and_panics(make: Factory<'_>) {
    let exec = make();
    let oks: Vec<_> = (0..20).map(|i| OK.call(&*exec, i)).collect();
    let err = wait_bounded(ERR.call(&*exec, 7), "err").unwrap_err();
    assert!(err.is_failed(), "{err}");
    assert!(chain(&err).contains("planned error 7"), "{}", chain(&err));
    let boom = wait_bounded(PANIC.call(&*exec, 3), "panic").unwrap_err();
    assert!(boom.is_panic(), "{boom}");
    assert!(
        boom.panic_message()
            .is_some_and(|m| m.contains("planned panic 3")),
        "{boom:?}"
    );
    for (i, h) in oks.into_iter().enumerate() {
        assert_eq!(wait_bounded(h, "ok").unwrap(), i as u32 + 1);
    }
    // Every slot still works after the panic.
    let after: Vec<_> = (0..10)
        .map(|i| ASYNC_OK.call(&*exec, i))
        .chain((0..10).map(|i| OK.call(&*exec, i)))
        .collect();
    for h in after {
        wait_bounded(h, "after a panic").unwrap();
    }
    let stats = finish(&*exec);
    assert_eq!(
        (
            stats.submitted,
            stats.completed,
            stats.failed,
            stats.panicked
        ),
        (42, 40, 1, 1),
        "{stats:?}"
    );
}

/// A task cancelled while queued resolves as cancelled at once and never runs; one
/// cancelled while it runs resolves as cancelled, and the executor goes on.
pub fn cancel_queued_and_running(make: Factory<'_>) {
    let exec = make();
    let holders = saturate(&*exec);
    let victim = OK.call(&*exec, 1);
    assert!(
        victim.cancel(),
        "a queued task did not resolve as cancelled at once"
    );
    assert!(wait_bounded(victim, "queued").unwrap_err().is_cancelled());
    // The holders run now: cancelling them ends them.
    release(holders, false);
    assert_eq!(wait_bounded(OK.call(&*exec, 41), "after").unwrap(), 42);
    let stats = finish(&*exec);
    assert_eq!(
        (stats.submitted, stats.cancelled, stats.completed),
        (4, 3, 1),
        "{stats:?}"
    );
}

/// A task whose token expires (what a timeout layer does) resolves as timed out, whether
/// it was queued or running, and the executor goes on.
pub fn timeouts_queued_and_running(make: Factory<'_>) {
    let exec = make();
    let (job, running) = HOLD.job(u64::MAX);
    let running_token = job.cancel_token();
    drop(exec.execute(job));
    let (job, other) = HOLD.job(u64::MAX);
    let other_token = job.cancel_token();
    drop(exec.execute(job));
    wait_running(&*exec, CAPACITY as u64);
    let (job, queued) = OK.job(1);
    let queued_token = job.cancel_token();
    drop(exec.execute(job));
    queued_token.expire();
    assert!(wait_bounded(queued, "queued").unwrap_err().is_timeout());
    running_token.expire();
    assert!(wait_bounded(running, "running").unwrap_err().is_timeout());
    other_token.cancel();
    assert!(wait_bounded(other, "other").unwrap_err().is_cancelled());
    assert_eq!(wait_bounded(OK.call(&*exec, 1), "after").unwrap(), 2);
    let stats = finish(&*exec);
    assert_eq!(
        (
            stats.submitted,
            stats.timed_out,
            stats.cancelled,
            stats.completed
        ),
        (4, 2, 1, 1),
        "{stats:?}"
    );
}

/// A graceful shutdown within its deadline runs everything queued; a later call resolves
/// as shut down.
pub fn graceful_shutdown_runs_what_is_queued(make: Factory<'_>) {
    let exec = make();
    let handles: Vec<_> = (0..6)
        .map(|_| HOLD.call(&*exec, 10))
        .chain((0..4).map(|i| OK.call(&*exec, i)))
        .collect();
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert!(
        report.not_started.is_empty() && !report.deadline_passed,
        "{report:?}"
    );
    for h in handles {
        wait_bounded(h, "queued before the shutdown").unwrap();
    }
    let late = OK.call(&*exec, 1);
    assert!(
        wait_bounded(late, "after the shutdown")
            .unwrap_err()
            .is_shutdown()
    );
    let stats = settled(&*exec);
    assert_eq!(
        (stats.submitted, stats.completed, stats.rejected),
        (11, 10, 1),
        "{stats:?}"
    );
}

/// A shutdown `Now`, or a graceful one past its deadline, drops what is queued (named in
/// the report, resolved as shut down); what runs resolves too, and the ledger adds up.
pub fn shutdown_now_and_past_deadline(make: Factory<'_>) {
    for mode in [
        ShutdownMode::Now,
        ShutdownMode::Graceful(Duration::from_millis(100)),
    ] {
        let exec = make();
        let holders = saturate(&*exec);
        let queued: Vec<_> = (0..3).map(|i| OK.call(&*exec, i)).collect();
        let report = exec.shutdown(mode);
        assert!(report.deadline_passed, "{mode:?}: {report:?}");
        assert_eq!(report.not_started.len(), 3, "{mode:?}: {report:?}");
        assert!(
            report.not_started.iter().all(|t| t.name == OK.name()),
            "{report:?}"
        );
        for h in queued {
            assert!(
                wait_bounded(h, "queued at the shutdown")
                    .unwrap_err()
                    .is_shutdown()
            );
        }
        // In-process the holders still run (a blocking task is not stopped); a process
        // pool has ended them with their workers.
        release(holders, false);
        let stats = settled(&*exec);
        assert_eq!(
            (stats.submitted, stats.not_started, stats.cancelled),
            (5, 3, 2),
            "{mode:?}: {stats:?}"
        );
    }
}

/// One operation in a random mix.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// [`OK`].
    Ok,
    /// [`ERR`].
    Err,
    /// [`PANIC`].
    Panic,
    /// [`ASYNC_OK`].
    AsyncOk,
    /// [`HOLD`] for this many milliseconds.
    Hold(u8),
    /// [`OK`], cancelled right after the call.
    Cancel,
    /// [`HOLD`] until cancelled, cancelled right after the call.
    HoldCancelled,
}

/// Random operation mixes for [`check_mix`].
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => Just(Op::Ok),
        2 => Just(Op::Err),
        2 => Just(Op::Panic),
        2 => Just(Op::AsyncOk),
        2 => (0u8..5).prop_map(Op::Hold),
        2 => Just(Op::Cancel),
        1 => Just(Op::HoldCancelled),
    ];
    proptest::collection::vec(op, 0..24)
}

/// Calls `ops` with a shutdown (`Now` or graceful) before op `shutdown_at` (the rest are
/// called after it), then checks that every handle resolved as its op allows and that the
/// ledger matches the handles exactly.
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
        let h = match op {
            Op::Ok => OK.call(&*exec, 1),
            Op::Err => ERR.call(&*exec, 1),
            Op::Panic => PANIC.call(&*exec, 1),
            Op::AsyncOk => ASYNC_OK.call(&*exec, 1),
            Op::Hold(ms) => HOLD.call(&*exec, u64::from(*ms)),
            Op::Cancel => {
                let h = OK.call(&*exec, 1);
                h.cancel();
                h
            }
            Op::HoldCancelled => {
                let h = HOLD.call(&*exec, u64::MAX);
                h.cancel();
                h
            }
        };
        handles.push((*op, h));
    }
    let last = exec.shutdown(ShutdownMode::Graceful(BOUND));
    let report = report.unwrap_or(last);
    check_outcomes(&*exec, handles, &report, ops.len());
}

fn check_outcomes(
    exec: &dyn Executor,
    handles: Vec<(Op, TaskHandle<u32>)>,
    report: &ShutdownReport,
    submitted: usize,
) {
    let (mut ok, mut failed, mut panicked, mut cancelled, mut shut) = (0, 0, 0, 0, 0);
    for (op, h) in handles {
        match wait_bounded(h, "random mix") {
            Ok(_) => {
                assert!(
                    matches!(op, Op::Ok | Op::AsyncOk | Op::Hold(_) | Op::Cancel),
                    "{op:?} succeeded"
                );
                ok += 1;
            }
            Err(e) if e.is_failed() => {
                assert!(matches!(op, Op::Err), "{op:?} failed: {}", chain(&e));
                failed += 1;
            }
            Err(e) if e.is_panic() => {
                assert!(matches!(op, Op::Panic), "{op:?} panicked: {e}");
                panicked += 1;
            }
            Err(e) if e.is_cancelled() => {
                // A task running when a shutdown's deadline passed (at once for `Now`)
                // ends as cancelled on a backend that can stop it.
                assert!(
                    matches!(op, Op::Cancel | Op::HoldCancelled) || report.deadline_passed,
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
    assert_eq!(stats.timed_out, 0, "{stats:?}");
    assert_eq!(stats.rejected + stats.not_started, shut, "{stats:?}");
    assert_eq!(
        report.not_started.len() as u64,
        stats.not_started,
        "{report:?}"
    );
}

/// [`check_mix`] over `cases` random mixes (proptest, shrinking on failure).
pub fn random_mixes(make: Factory<'_>, cases: u32) {
    // No failure file: outside the proptest! macro there is no source file to put it by.
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (ops(), 0usize..32, proptest::bool::ANY);
    let result = runner.run(&strategy, |(ops, at, now)| {
        check_mix(make, &ops, at, now);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// One check of the suite: it builds its executors with the factory.
pub type Check = fn(Factory<'_>);

/// Every check of the suite by name; `random_mixes` runs 16 cases.
pub const CHECKS: &[(&str, Check)] = &[
    ("values_errors_and_panics", values_errors_and_panics),
    ("cancel_queued_and_running", cancel_queued_and_running),
    ("timeouts_queued_and_running", timeouts_queued_and_running),
    (
        "graceful_shutdown_runs_what_is_queued",
        graceful_shutdown_runs_what_is_queued,
    ),
    (
        "shutdown_now_and_past_deadline",
        shutdown_now_and_past_deadline,
    ),
    ("random_mixes", random_mixes_16),
];

fn random_mixes_16(make: Factory<'_>) {
    random_mixes(make, 16);
}

/// The suite as the `main` of a `harness = false` test binary: runs [`CHECKS`] on the
/// executors `make` builds, one after another, and reads libtest's command line as far as
/// it matters (name filters, `--list`; other flags are ignored). Exits non-zero when a
/// check fails.
pub fn main(make: Factory<'_>) -> std::process::ExitCode {
    let mut filter = Vec::new();
    let mut list = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => list = true,
            "--test-threads" | "--skip" | "--format" | "--color" | "--logfile" | "-Z" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            _ => filter.push(arg),
        }
    }
    if list {
        for (name, _) in CHECKS {
            println!("{name}: test");
        }
        return std::process::ExitCode::SUCCESS;
    }
    let mut failed = 0;
    for (name, check) in CHECKS {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t0 = Instant::now();
        let ok = catch_unwind(AssertUnwindSafe(|| check(make))).is_ok();
        println!(
            "test {name} ... {} ({:.1?})",
            if ok { "ok" } else { "FAILED" },
            t0.elapsed()
        );
        failed += usize::from(!ok);
    }
    if failed > 0 {
        println!("{failed} failed");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

/// Expands to one `#[test]` per check of the named-task conformance suite (the random
/// mixes as a proptest of 16 cases) for the executor that `$make` builds.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        mod named_conformance {
            #[allow(unused_imports)]
            use super::*;
            use std::sync::Arc;

            fn make() -> Arc<dyn $crate::testing::executor_core::Executor> {
                ($make)()
            }

            #[test]
            fn values_errors_and_panics() {
                $crate::testing::values_errors_and_panics(&make);
            }
            #[test]
            fn cancel_queued_and_running() {
                $crate::testing::cancel_queued_and_running(&make);
            }
            #[test]
            fn timeouts_queued_and_running() {
                $crate::testing::timeouts_queued_and_running(&make);
            }
            #[test]
            fn graceful_shutdown_runs_what_is_queued() {
                $crate::testing::graceful_shutdown_runs_what_is_queued(&make);
            }
            #[test]
            fn shutdown_now_and_past_deadline() {
                $crate::testing::shutdown_now_and_past_deadline(&make);
            }

            $crate::testing::proptest::proptest! {
                #![proptest_config($crate::testing::proptest::prelude::ProptestConfig::with_cases(16))]
                #[test]
                fn random_mix_ledger_adds_up(
                    ops in $crate::testing::ops(),
                    at in 0usize..32,
                    now in $crate::testing::proptest::bool::ANY,
                ) {
                    $crate::testing::check_mix(&make, &ops, at, now);
                }
            }
        }
    };
}
