//! A task that waits for a task it submitted to its own pool: the waiting worker runs the
//! queued job itself instead of deadlocking the pool, even with a single worker, and
//! trees of such waits of any shape finish on pools of any size.

use executor_core::testing::{BOUND, wait_bounded};
use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskHandle};
use executor_threads::ThreadsExecutor;
use proptest::prelude::*;
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

/// A task that counts the leaves of a tree by submitting one task per child to its own
/// pool and waiting for each; leaves alternate between closures and futures.
fn count_leaves(
    pool: &Arc<ThreadsExecutor>,
    fanout: Arc<Vec<usize>>,
    depth: usize,
) -> TaskHandle<u64> {
    if depth == fanout.len() {
        return if depth.is_multiple_of(2) {
            pool.submit(|| 1)
        } else {
            pool.submit_async(async { 1 })
        };
    }
    let own = pool.clone();
    pool.submit(move || {
        let children: Vec<_> = (0..fanout[depth])
            .map(|_| count_leaves(&own, fanout.clone(), depth + 1))
            .collect();
        children.into_iter().map(|h| h.wait().unwrap()).sum()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Nested waits of any shape on a pool of any size finish: every waiting worker helps.
    #[test]
    fn nested_waits_on_a_small_pool_always_finish(
        workers in 1usize..=3,
        fanout in proptest::collection::vec(1usize..=4, 0..=3),
    ) {
        let exec = Arc::new(ThreadsExecutor::builder("tree").workers(workers).build().unwrap());
        let expected: u64 = fanout.iter().map(|&f| f as u64).product();
        let root = count_leaves(&exec, Arc::new(fanout), 0);
        prop_assert_eq!(wait_bounded(root, "a tree of nested waits").unwrap(), expected);
        let report = exec.shutdown(ShutdownMode::Graceful(BOUND));
        prop_assert!(report.stats.is_balanced(), "{:?}", report.stats);
    }
}

#[test]
fn a_map_nested_in_a_map_inside_a_task_completes_on_one_worker() {
    let exec = Arc::new(ThreadsExecutor::builder("solo").workers(1).build().unwrap());
    executor_core::testing::nested_map_completes(exec);
}
