//! Shutdown racing submitters: a graceful shutdown runs every task it accepted.

use executor_core::testing::wait_bounded;
use executor_core::{Executor, ExecutorExt, ShutdownMode};
use executor_threads::ThreadsExecutor;
use std::sync::Arc;
use std::time::Duration;

/// Tasks accepted while a graceful shutdown starts are run, never dropped as not started
/// (a worker must not leave while an accepted task is still on its way to the queue).
#[test]
fn graceful_shutdown_runs_what_it_accepted() {
    for round in 0..30 {
        let exec = Arc::new(ThreadsExecutor::builder("race").workers(2).build().unwrap());
        let submitters: Vec<_> = (0..2)
            .map(|_| {
                let exec = exec.clone();
                std::thread::spawn(move || {
                    let mut handles = Vec::new();
                    loop {
                        let h = exec.submit(|| 1u8);
                        if h.is_finished() {
                            match h.wait_timeout(Duration::ZERO) {
                                Ok(Ok(_)) => continue,
                                // Refused: the shutdown has begun.
                                Ok(Err(e)) if e.is_shutdown() => return handles,
                                Ok(Err(e)) => panic!("unexpected end: {e}"),
                                Err(h) => handles.push(h),
                            }
                        } else {
                            handles.push(h);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(200));
        let report = exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(20)));
        assert!(
            report.not_started.is_empty(),
            "round {round}: graceful shutdown dropped {} accepted task(s)",
            report.not_started.len()
        );
        for s in submitters {
            for h in s.join().unwrap() {
                match wait_bounded(h, "submitted") {
                    Ok(_) => {}
                    Err(e) => assert!(e.is_shutdown() && !e.is_rejected(), "{e}"),
                }
            }
        }
        let stats = exec.stats();
        assert_eq!(stats.not_started, 0, "round {round}: {stats:?}");
    }
}
