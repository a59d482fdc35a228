//! The handle surface: `wait_timeout` gives the handle back, a panic's payload survives
//! for `resume_unwind`, and dropping a `TaskSet` cancels what it holds (`detach_all` does
//! not).

use executor_core::{ExecutorExt, InlineExecutor, Job, Status, TaskError, TaskMeta, TaskSet};
use std::sync::mpsc;
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(20);

#[test]
fn wait_timeout_gives_the_handle_back_until_the_task_ends() {
    let (job, handle) = Job::once(TaskMeta::new("later"), |_| Ok::<_, TaskError>(7));
    // Not run yet: the wait times out and the same handle comes back, usable.
    let handle = handle
        .wait_timeout(Duration::ZERO)
        .expect_err("a task that has not run has no result");
    assert!(!handle.is_finished());
    let runner = std::thread::spawn(move || job.run());
    let result = handle
        .wait_timeout(BOUND)
        .unwrap_or_else(|_| panic!("the task did not end within {BOUND:?}"));
    assert_eq!(result.unwrap(), 7);
    assert_eq!(runner.join().unwrap(), Status::Completed);
}

#[test]
fn a_panic_payload_survives_for_resume_unwind() {
    let exec = InlineExecutor::new("inline");
    // A payload that is no string: only the payload itself can carry it.
    let err = exec
        .submit(|| -> u32 { std::panic::panic_any(42u64) })
        .wait()
        .unwrap_err();
    assert!(err.is_panic());
    // Keeping the payload (only `Send`) does not cost the error its `Sync`.
    fn shareable<E: Send + Sync + 'static>(_: &E) {}
    shareable(&err);
    let payload = err.into_panic();
    let resume = std::panic::AssertUnwindSafe(|| std::panic::resume_unwind(payload));
    let caught = std::panic::catch_unwind(resume).unwrap_err();
    assert_eq!(caught.downcast_ref::<u64>(), Some(&42));

    let err = exec
        .run(TaskMeta::new("fails"), |_| Err::<u32, _>("an error"))
        .wait()
        .unwrap_err();
    let err = err
        .try_into_panic()
        .expect_err("a failure is no panic and comes back whole");
    assert!(err.is_failed());
}

#[test]
fn dropping_a_task_set_cancels_what_it_holds() {
    // One member not started, one running a blocking body that waits for its cancel.
    let (queued, queued_handle) = Job::once(TaskMeta::new("queued"), |_| Ok::<_, TaskError>(1));
    let (started_tx, started_rx) = mpsc::channel();
    let (running, running_handle) = Job::once(TaskMeta::new("running"), move |ctx| {
        started_tx.send(()).unwrap();
        let t0 = std::time::Instant::now();
        while !ctx.is_cancelled() {
            assert!(
                t0.elapsed() < BOUND,
                "the set's drop never cancelled the task"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        Err::<u32, _>(TaskError::cancelled())
    });
    let runner = std::thread::spawn(move || running.run());
    started_rx.recv_timeout(BOUND).unwrap();
    let set: TaskSet<u32> = [queued_handle, running_handle].into_iter().collect();
    drop(set);
    assert_eq!(
        queued.run(),
        Status::Cancelled,
        "a queued member must not run"
    );
    assert_eq!(runner.join().unwrap(), Status::Cancelled);
}

#[test]
fn detach_all_lets_the_members_run() {
    let (job, handle) = Job::once(TaskMeta::new("detached"), |_| Ok::<_, TaskError>(1));
    let mut set = TaskSet::new();
    set.push(handle);
    set.detach_all();
    assert_eq!(job.run(), Status::Completed);
}

#[test]
fn a_set_drained_to_the_end_cancels_nothing() {
    let exec = InlineExecutor::new("inline");
    let set: TaskSet<u32> = (0..3).map(|i| exec.submit(move || i)).collect();
    let mut got: Vec<u32> = set.as_completed().map(|(_, r)| r.unwrap()).collect();
    got.sort();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(executor_core::Executor::stats(&exec).cancelled, 0);
}

/// A task's body shares one allocation with its handle, but what it captured drops when
/// its job ends, not when the last handle goes: a held handle must not keep a channel's
/// sender (or a big buffer) alive.
#[test]
fn a_body_drops_with_its_job_not_with_its_handle() {
    use executor_core::{Job, TaskError, TaskMeta};
    let alive = std::sync::Arc::new(());
    // Run to the end.
    let held = alive.clone();
    let (job, ran) = Job::once(TaskMeta::new("ran"), move |_| {
        let _ = &held;
        Ok::<_, TaskError>(1)
    });
    job.run();
    assert_eq!(std::sync::Arc::strong_count(&alive), 1, "ran: body kept");
    // Dropped without running.
    let held = alive.clone();
    let (job, dropped) = Job::repeatable(TaskMeta::new("dropped"), move |_| {
        let _ = &held;
        Ok::<_, TaskError>(2)
    });
    drop(job);
    assert_eq!(
        std::sync::Arc::strong_count(&alive),
        1,
        "dropped: body kept"
    );
    // An async body whose future never finished.
    let held = alive.clone();
    let (job, stopped) = Job::future(TaskMeta::new("stopped"), async move {
        let _ = &held;
        std::future::pending::<()>().await;
        Ok::<_, TaskError>(3)
    });
    drop(job.into_future());
    assert_eq!(std::sync::Arc::strong_count(&alive), 1, "future: body kept");
    assert_eq!(ran.wait().unwrap(), 1);
    assert!(dropped.wait().unwrap_err().is_shutdown());
    assert!(stopped.wait().is_err());
}
