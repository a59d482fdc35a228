//! Async tasks on OS threads get a tokio context: the shared reactor by default, the
//! application's runtime when the builder names it, also for a task its submitter runs
//! (a full queue set to "caller runs") from inside that runtime.

use executor_core::testing::{BOUND, Gate, wait_bounded};
use executor_core::{Executor, ExecutorExt, OnFull, ShutdownMode};
use executor_threads::ThreadsExecutor;
use std::sync::mpsc;
use std::time::Duration;

fn app_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("app-rt")
        .enable_all()
        .build()
        .unwrap()
}

fn thread_name() -> Option<String> {
    std::thread::current().name().map(str::to_owned)
}

#[test]
fn the_default_context_is_the_shared_reactor() {
    let exec = ThreadsExecutor::builder("io").workers(1).build().unwrap();
    let h = exec.submit_async(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let polled_on = thread_name();
        let spawned_on = tokio::spawn(async { thread_name() }).await.unwrap();
        (polled_on, spawned_on)
    });
    let (polled_on, spawned_on) = wait_bounded(h, "async task").unwrap();
    assert_eq!(
        polled_on.as_deref(),
        Some("io-0"),
        "the task stays on its worker"
    );
    assert_eq!(spawned_on.as_deref(), Some(executor_reactor::THREAD_NAME));
    exec.shutdown(ShutdownMode::Graceful(BOUND));
}

#[test]
fn an_applications_runtime_is_the_context_when_named() {
    let app = app_runtime();
    let exec = ThreadsExecutor::builder("io")
        .workers(1)
        .runtime(app.handle().clone())
        .build()
        .unwrap();
    let h = exec.submit_async(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::spawn(async { thread_name() }).await.unwrap()
    });
    assert_eq!(
        wait_bounded(h, "async task").unwrap().as_deref(),
        Some("app-rt")
    );
    // Blocking tasks have the context too.
    let h = exec.submit(|| tokio::runtime::Handle::try_current().is_ok());
    assert!(wait_bounded(h, "blocking task").unwrap());
    exec.shutdown(ShutdownMode::Graceful(BOUND));
}

#[test]
fn caller_runs_from_the_only_worker_of_the_reactors_runtime() {
    // The executor's context is the app's runtime, whose only worker submits to a full
    // queue and so runs an async task itself: a timer in it needs that very runtime.
    let app = app_runtime();
    let exec = std::sync::Arc::new(
        ThreadsExecutor::builder("io")
            .workers(1)
            .queue(Some(1))
            .on_full(OnFull::CallerRuns)
            .runtime(app.handle().clone())
            .build()
            .unwrap(),
    );
    let gate = Gate::new();
    let _blocker = saturate_one(&exec, &gate);
    let filler = exec.submit(|| ());
    let (tx, rx) = mpsc::channel();
    let submitter = exec.clone();
    app.spawn(async move {
        let h = submitter.submit_async(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            thread_name()
        });
        let _ = tx.send(h.await);
    });
    let ran_on = rx
        .recv_timeout(BOUND)
        .expect("a task run by a runtime's only worker stalled that runtime's timer");
    assert_eq!(
        ran_on.unwrap().as_deref(),
        Some("app-rt"),
        "the caller ran it"
    );
    gate.open();
    wait_bounded(filler, "filler").unwrap();
    exec.shutdown(ShutdownMode::Graceful(BOUND));
}

/// Occupies the executor's one worker until `gate` opens.
fn saturate_one(exec: &ThreadsExecutor, gate: &Gate) -> executor_core::TaskHandle<()> {
    let gate = gate.clone();
    let (tx, rx) = mpsc::channel();
    let h = exec.submit(move || {
        tx.send(()).unwrap();
        gate.wait();
    });
    rx.recv_timeout(BOUND).expect("the blocker started");
    h
}
