//! How the tokio backend ends jobs when a runtime stops under it: jobs a runtime drops
//! before they started resolve at once and are counted and named.

use executor_core::testing::wait_bounded;
use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskError, TaskMeta};
use executor_tokio::TokioExecutor;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A borrowed runtime that shuts down with async jobs still queued on it: their handles
/// resolve as not started, at once, and the executor's ledger counts them.
#[test]
fn jobs_dropped_by_a_borrowed_runtime_resolve() {
    // A current-thread runtime nobody drives: spawned tasks sit in its queue unpolled.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exec = TokioExecutor::from_handle("borrowed", rt.handle().clone());
    let ran = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let ran = ran.clone();
            exec.run_async(TaskMeta::new(format!("orphan.{i}")), move |_| {
                let ran = ran.clone();
                async move {
                    ran.store(true, Ordering::SeqCst);
                    Ok::<_, TaskError>(())
                }
            })
        })
        .collect();
    drop(rt);
    for h in handles {
        let err = wait_bounded(h, "job dropped by its runtime").unwrap_err();
        assert!(err.is_shutdown(), "{err}");
    }
    assert!(!ran.load(Ordering::SeqCst), "a dropped job ran");
    let report = exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    let mut names: Vec<_> = report.not_started.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["orphan.0", "orphan.1", "orphan.2"]);
    let stats = report.stats;
    assert!(stats.is_balanced(), "{stats:?}");
    assert_eq!((stats.queued, stats.running, stats.not_started), (0, 0, 3));
}

/// Blocking jobs still waiting for a blocking thread when the deadline passes never run;
/// the report names them even when every thread of the runtime is busy at that moment.
#[test]
fn queued_blocking_jobs_are_named_at_shutdown() {
    use executor_core::testing::{BOUND, Gate};
    let exec = TokioExecutor::builder("blocking")
        .worker_threads(1)
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let gate = Gate::new();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // One blocking job holds the blocking pool, one blocking future the only worker.
    let holders = {
        let (g1, s1) = (gate.clone(), started.clone());
        let (g2, s2) = (gate.clone(), started.clone());
        [
            exec.submit(move || {
                s1.fetch_add(1, Ordering::SeqCst);
                g1.wait();
            }),
            exec.submit_async(async move {
                s2.fetch_add(1, Ordering::SeqCst);
                g2.wait();
            }),
        ]
    };
    let t0 = std::time::Instant::now();
    while started.load(Ordering::SeqCst) < 2 {
        assert!(t0.elapsed() < BOUND, "the holders never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let ran = Arc::new(AtomicBool::new(false));
    let queued: Vec<_> = (0..3)
        .map(|i| {
            let ran = ran.clone();
            exec.run_once(TaskMeta::new(format!("queued.{i}")), move |_| {
                ran.store(true, Ordering::SeqCst);
                Ok::<_, TaskError>(())
            })
        })
        .collect();
    let report = exec.shutdown(ShutdownMode::Graceful(Duration::from_millis(100)));
    gate.open();
    let mut names: Vec<_> = report.not_started.iter().map(|r| r.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["queued.0", "queued.1", "queued.2"], "{report:?}");
    assert_eq!(report.stats.not_started, 3, "{:?}", report.stats);
    for h in queued {
        let err = wait_bounded(h, "queued blocking job").unwrap_err();
        assert!(err.is_shutdown(), "{err}");
    }
    assert!(!ran.load(Ordering::SeqCst), "a job dropped at shutdown ran");
    for h in holders {
        // Finished, or cancelled by the runtime's shutdown.
        if let Err(e) = wait_bounded(h, "holder") {
            assert!(e.is_cancelled(), "{e}");
        }
    }
}
