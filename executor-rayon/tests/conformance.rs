//! The shared conformance suite, run on the rayon backend (two threads), plus rayon's own
//! promise: a task may use `par_iter` on the executor's pool.

use executor_core::{Executor, ExecutorExt, ShutdownMode};
use executor_rayon::RayonExecutor;
use rayon::prelude::*;
use std::time::Duration;

executor_core::conformance_tests!(|| Arc::new(
    RayonExecutor::builder("conformance")
        .threads(2)
        .build()
        .expect("two threads start")
));

#[test]
fn tasks_use_par_iter_on_the_executors_own_pool() {
    let cpu = RayonExecutor::builder("cpu").threads(2).build().unwrap();
    let h = cpu.submit(|| {
        let names: Vec<String> = (0..64)
            .into_par_iter()
            .map(|_| std::thread::current().name().unwrap_or("").to_owned())
            .collect();
        (names, (0..10_000u64).into_par_iter().sum::<u64>())
    });
    let (names, sum) = executor_core::testing::wait_bounded(h, "par_iter").unwrap();
    assert_eq!(sum, 49_995_000);
    assert!(
        names.iter().all(|n| n.starts_with("cpu-")),
        "ran off the pool: {names:?}"
    );
    cpu.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
}
