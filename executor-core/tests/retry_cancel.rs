//! Cancellation between two attempts of a retried job: the handle resolves as cancelled
//! at once, and the next attempt never runs.

use executor_core::{Job, Status, TaskError, TaskMeta};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn cancel_between_attempts_resolves_at_once() {
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let (mut job, handle) = Job::repeatable(TaskMeta::new("flaky"), move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Err::<(), _>(TaskError::failed("not yet"))
    });
    let token = handle.cancel_token();
    let retry: Arc<Mutex<Option<Job>>> = Arc::default();
    let keep = retry.clone();
    job.on_failure(Box::new(move |job, _err| {
        // The cancel lands after the attempt failed and before the retry is queued (a
        // retry layer holds the job for a backoff of seconds or minutes).
        token.cancel();
        *keep.lock().unwrap() = Some(job.next_attempt());
        None
    }));
    assert_eq!(job.run(), Status::Failed);
    let result = handle.wait_timeout(Duration::ZERO).unwrap_or_else(|_| {
        panic!("a task cancelled between attempts resolves at once, not after its backoff")
    });
    assert!(result.unwrap_err().is_cancelled());
    // When the backoff ends, the next attempt does not run.
    let next = retry.lock().unwrap().take().expect("the hook kept the job");
    assert_eq!(next.run(), Status::Cancelled);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn cancel_after_requeue_resolves_at_once() {
    let (mut job, handle) = Job::repeatable(TaskMeta::new("flaky"), |_| {
        Err::<(), _>(TaskError::failed("not yet"))
    });
    let retry: Arc<Mutex<Option<Job>>> = Arc::default();
    let keep = retry.clone();
    job.on_failure(Box::new(move |job, _err| {
        *keep.lock().unwrap() = Some(job.next_attempt());
        None
    }));
    assert_eq!(job.run(), Status::Failed);
    let handle = handle
        .wait_timeout(Duration::ZERO)
        .expect_err("a task waiting for its retry has not ended");
    assert!(
        handle.cancel(),
        "a task waiting for its retry is not running"
    );
    let next = retry.lock().unwrap().take().unwrap();
    assert_eq!(next.run(), Status::Cancelled);
}
