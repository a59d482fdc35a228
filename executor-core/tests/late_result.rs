//! An attempt whose value comes after its handle resolved (past the deadline) is counted
//! as the handle ended, not as completed: executor stats and handles tell one story.

use executor_core::{Executor, ExecutorExt, InlineExecutor, Job, Status, TaskError, TaskMeta};

#[test]
fn a_value_after_the_deadline_counts_as_timed_out() {
    let (job, handle) = Job::once(TaskMeta::new("slow"), |ctx| {
        // The deadline passes while the body runs (a timeout layer's timer fires).
        ctx.cancel_token().expire();
        Ok::<_, TaskError>(7)
    });
    assert_eq!(job.run(), Status::TimedOut);
    assert!(handle.wait().unwrap_err().is_timeout());

    // The same for a future.
    let (job, handle) = Job::future_repeatable(TaskMeta::new("slow.async"), |ctx| async move {
        ctx.cancel_token().expire();
        Ok::<_, TaskError>(8)
    });
    assert_eq!(job.run(), Status::TimedOut);
    assert!(handle.wait().unwrap_err().is_timeout());
}

#[test]
fn executor_stats_agree_with_the_handle() {
    let exec = InlineExecutor::new("inline");
    let h = exec.run(TaskMeta::new("slow"), |ctx| {
        ctx.cancel_token().expire();
        Ok::<_, TaskError>(1)
    });
    assert!(h.wait().unwrap_err().is_timeout());
    let stats = exec.stats();
    assert_eq!((stats.completed, stats.timed_out), (0, 1), "{stats:?}");
}
