//! Async tasks on the rayon pool get a tokio context: the application's runtime when the
//! builder names it (the default, the shared reactor, is covered by the conformance suite).

use executor_core::testing::{BOUND, wait_bounded};
use executor_core::{Executor, ExecutorExt, ShutdownMode};
use executor_rayon::RayonExecutor;
use std::time::Duration;

#[test]
fn an_applications_runtime_is_the_context_when_named() {
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("app-rt")
        .enable_all()
        .build()
        .unwrap();
    let exec = RayonExecutor::builder("cpu")
        .threads(1)
        .runtime(app.handle().clone())
        .build()
        .unwrap();
    let h = exec.submit_async(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let polled_on = std::thread::current().name().map(str::to_owned);
        let spawned_on = tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        (polled_on, spawned_on)
    });
    let (polled_on, spawned_on) = wait_bounded(h, "async task").unwrap();
    assert_eq!(
        polled_on.as_deref(),
        Some("cpu-0"),
        "the task stays on the pool"
    );
    assert_eq!(spawned_on.as_deref(), Some("app-rt"));
    exec.shutdown(ShutdownMode::Graceful(BOUND));
}
