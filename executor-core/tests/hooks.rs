//! Layers' hooks on a job compose: several failure hooks each see a failed attempt until
//! one takes the job; attempt-end hooks hear once how each attempt ended; run hooks nest
//! around the body and finish before the handle resolves.

use executor_core::backend::{FailureHandler, RunHook};
use executor_core::{Job, Status, TaskError, TaskMeta};
use std::sync::{Arc, Mutex};

type Log = Arc<Mutex<Vec<String>>>;

fn log(l: &Log, s: impl Into<String>) {
    l.lock().unwrap().push(s.into());
}

struct Around(&'static str, Log);

impl RunHook for Around {
    fn around(&mut self, attempt: u32, run: &mut dyn FnMut()) {
        log(&self.1, format!("{} in {attempt}", self.0));
        run();
        log(&self.1, format!("{} out", self.0));
    }
}

#[test]
fn failure_hooks_chain_until_one_takes_the_job() {
    let l: Log = Arc::default();
    let (mut job, handle) = Job::repeatable(TaskMeta::new("flaky"), |_| {
        Err::<(), _>(TaskError::failed("down"))
    });
    let (a, b, c) = (l.clone(), l.clone(), l.clone());
    job.on_attempt_end(move |s| log(&a, format!("end {s}")));
    job.on_failure(Box::new(move |job, err| {
        log(&b, "watcher saw it");
        Some((job, err))
    }));
    let kept: Arc<Mutex<Option<Job>>> = Arc::default();
    let keep = kept.clone();
    job.on_failure(Box::new(move |job, _err| {
        log(&c, "retry took it");
        *keep.lock().unwrap() = Some(job.next_attempt());
        None
    }));
    assert_eq!(job.run(), Status::Failed);
    assert!(!handle.is_finished(), "the retry holds the task");
    assert_eq!(
        *l.lock().unwrap(),
        ["end failed", "watcher saw it", "retry took it"]
    );
    // The next attempt carries no hooks of the first; it fails and ends the task.
    let next = kept.lock().unwrap().take().unwrap();
    assert_eq!(next.run(), Status::Failed);
    assert!(handle.wait().unwrap_err().is_failed());
    assert_eq!(l.lock().unwrap().len(), 3);
}

/// A shared handler: logs what it sees and passes the job on.
struct Watcher(&'static str, Log);

impl FailureHandler for Watcher {
    fn on_failure(&self, job: Job, err: TaskError) -> Option<(Job, TaskError)> {
        log(&self.1, format!("{} saw attempt {}", self.0, job.attempt()));
        Some((job, err))
    }
}

#[test]
fn shared_failure_handlers_keep_their_place_among_boxed_hooks() {
    let l: Log = Arc::default();
    let (mut job, handle) = Job::repeatable(TaskMeta::new("flaky"), |_| {
        Err::<(), _>(TaskError::failed("down"))
    });
    // First a shared handler (kept inline), then a boxed hook, then another shared one.
    let first: Arc<dyn FailureHandler> = Arc::new(Watcher("first", l.clone()));
    let last: Arc<dyn FailureHandler> = Arc::new(Watcher("last", l.clone()));
    job.on_failure_with(first.clone());
    let b = l.clone();
    job.on_failure(Box::new(move |job, err| {
        log(&b, "boxed");
        Some((job, err))
    }));
    job.on_failure_with(last.clone());
    assert_eq!(job.run(), Status::Failed);
    assert!(handle.wait().unwrap_err().is_failed());
    assert_eq!(
        *l.lock().unwrap(),
        ["first saw attempt 1", "boxed", "last saw attempt 1"]
    );
    // The job let go of the handlers when it ended.
    assert_eq!(Arc::strong_count(&first), 1);
    assert_eq!(Arc::strong_count(&last), 1);

    // A boxed hook added first stays first.
    let l2: Log = Arc::default();
    let (mut job, handle) = Job::repeatable(TaskMeta::new("flaky"), |_| {
        Err::<(), _>(TaskError::failed("down"))
    });
    let b = l2.clone();
    job.on_failure(Box::new(move |job, err| {
        log(&b, "boxed");
        Some((job, err))
    }));
    job.on_failure_with(Arc::new(Watcher("shared", l2.clone())));
    assert_eq!(job.run(), Status::Failed);
    assert!(handle.wait().unwrap_err().is_failed());
    assert_eq!(*l2.lock().unwrap(), ["boxed", "shared saw attempt 1"]);
}

#[test]
fn run_hooks_nest_and_finish_before_the_handle_resolves() {
    let l: Log = Arc::default();
    let inner = l.clone();
    let (mut job, handle) = Job::once(TaskMeta::new("t"), move |_| {
        log(&inner, "body");
        Ok::<_, TaskError>(7)
    });
    job.on_every_run(Box::new(Around("outer", l.clone())));
    job.on_run(Box::new(Around("inner", l.clone())));
    let seen = l.clone();
    job.observe(move |s| log(&seen, format!("resolved {s}")));
    assert_eq!(job.run(), Status::Completed);
    assert_eq!(handle.wait().unwrap(), 7);
    assert_eq!(
        *l.lock().unwrap(),
        [
            "outer in 1",
            "inner in 1",
            "body",
            "inner out",
            "outer out",
            "resolved completed"
        ]
    );
}

#[test]
fn a_job_dropped_before_its_retry_ends_with_the_last_error() {
    let (mut job, handle) = Job::repeatable(TaskMeta::new("t"), |_| {
        Err::<(), _>(TaskError::failed("down"))
    });
    let kept: Arc<Mutex<Option<Job>>> = Arc::default();
    let keep = kept.clone();
    job.on_failure(Box::new(move |job, err| {
        *keep.lock().unwrap() = Some(job.next_attempt_after(err));
        None
    }));
    let ended: Arc<Mutex<Vec<Status>>> = Arc::default();
    let e = ended.clone();
    job.on_attempt_end(move |s| e.lock().unwrap().push(s));
    job.run();
    drop(kept.lock().unwrap().take());
    assert!(handle.wait().unwrap_err().is_failed());
    assert_eq!(*ended.lock().unwrap(), [Status::Failed]);
}
