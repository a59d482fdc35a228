//! A task that waits for a task it submitted to its own pool: the waiting pool thread
//! runs queued work (rayon's `yield_now`) instead of deadlocking the pool.

use executor_core::testing::{BOUND, wait_bounded};
use executor_core::{Executor, ExecutorExt, ShutdownMode};
use executor_rayon::RayonExecutor;
use std::sync::{Arc, Weak};

#[test]
fn a_task_waiting_on_its_own_single_thread_pool_helps_instead_of_deadlocking() {
    let exec = Arc::new(RayonExecutor::builder("solo").threads(1).build().unwrap());
    let pool: Weak<RayonExecutor> = Arc::downgrade(&exec);
    let outer = exec.submit(move || {
        let pool = pool.upgrade().expect("the executor is alive");
        let inner = pool.submit(|| 21 * 2);
        inner.wait().unwrap()
    });
    assert_eq!(
        wait_bounded(outer, "a task waiting on its own pool").unwrap(),
        42
    );
    let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
    assert_eq!(report.stats.completed, 2, "{:?}", report.stats);
}

#[test]
fn a_map_nested_in_a_map_inside_a_task_completes_on_one_thread() {
    let exec = Arc::new(RayonExecutor::builder("solo").threads(1).build().unwrap());
    executor_core::testing::nested_map_completes(exec);
}
