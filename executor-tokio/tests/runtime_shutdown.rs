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
