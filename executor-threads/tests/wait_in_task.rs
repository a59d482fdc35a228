//! A task that waits for a task it submitted to its own pool: the waiting worker runs the
//! queued job itself instead of deadlocking the pool, even with a single worker.

use executor_core::testing::{BOUND, wait_bounded};
use executor_core::{Executor, ExecutorExt, ShutdownMode};
use executor_threads::ThreadsExecutor;
use std::sync::{Arc, Weak};

#[test]
fn a_task_waiting_on_its_own_single_worker_pool_helps_instead_of_deadlocking() {
    let exec = Arc::new(ThreadsExecutor::builder("solo").workers(1).build().unwrap());
    // Weak: the task must not keep its own executor alive.
    let pool: Weak<ThreadsExecutor> = Arc::downgrade(&exec);
    let outer = exec.submit(move || {
        let pool = pool.upgrade().expect("the executor is alive");
        let inner = pool.submit(|| std::thread::current().name().map(str::to_owned));
        // Nested: the inner task waits on one more, two levels of helping.
        let deeper = pool.submit(|| 21 * 2);
        let answer = deeper.wait().unwrap();
        (inner.wait().unwrap(), answer)
    });
    let (ran_on, answer) = wait_bounded(outer, "a task waiting on its own pool").unwrap();
    assert_eq!(
        ran_on.as_deref(),
        Some("solo-0"),
        "the waiting worker ran it"
    );
    assert_eq!(answer, 42);
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert_eq!(report.stats.completed, 3, "{:?}", report.stats);
}
