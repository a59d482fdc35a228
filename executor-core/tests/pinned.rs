//! A future that runs once is polled where it lies, inside its task's one allocation:
//! a future that borrows from itself across an `.await` survives being polled again,
//! cancelled while it waits, or dropped with its job (run under Miri too, which would
//! catch a moved self-borrow). And a shared observer's reference goes with the task.

use executor_core::backend::{EndObserver, MetaRef};
use executor_core::{Job, Status, TaskError, TaskId, TaskMeta};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

/// Pending on its first poll, ready on the next.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A task whose future holds a borrow of its own local across an `.await`.
fn self_borrowing(dropped: Arc<AtomicBool>) -> (Job, executor_core::TaskHandle<u32>) {
    Job::future(TaskMeta::new("pinned"), async move {
        let guard = DropFlag(dropped);
        let data = [1u32, 2, 3, 4];
        let view = &data;
        YieldOnce(false).await;
        let sum = view.iter().sum::<u32>();
        drop(guard);
        Ok::<_, TaskError>(sum)
    })
}

fn poll(fut: &mut executor_core::backend::JobFuture) -> Poll<Status> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(fut).poll(&mut cx)
}

#[test]
fn a_self_borrowing_future_is_polled_in_place() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (job, handle) = self_borrowing(dropped.clone());
    let mut fut = job.into_future();
    assert!(poll(&mut fut).is_pending());
    // The job future itself may move between polls; the task's future does not.
    let mut moved = Box::new(fut);
    assert_eq!(poll(&mut moved), Poll::Ready(Status::Completed));
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(handle.wait().unwrap(), 10);
}

#[test]
fn a_waiting_future_cancelled_is_dropped_in_place() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (job, handle) = self_borrowing(dropped.clone());
    let mut fut = job.into_future();
    assert!(poll(&mut fut).is_pending());
    handle.cancel_token().cancel();
    assert_eq!(poll(&mut fut), Poll::Ready(Status::Cancelled));
    assert!(dropped.load(Ordering::SeqCst), "the future was dropped");
    assert!(handle.wait().unwrap_err().is_cancelled());
}

#[test]
fn a_waiting_future_dropped_with_its_job_resolves_its_handle() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (job, handle) = self_borrowing(dropped.clone());
    let mut fut = job.into_future();
    assert!(poll(&mut fut).is_pending());
    drop(fut);
    assert!(dropped.load(Ordering::SeqCst), "the future was dropped");
    assert!(handle.wait().unwrap_err().is_cancelled());
}

/// Counts the ends it hears of.
#[derive(Default)]
struct Count(AtomicUsize);

impl EndObserver for Count {
    fn ended(&self, _: Status, _: TaskId, _: &MetaRef) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_shared_observer_hears_once_and_is_let_go_with_the_task() {
    let count = Arc::new(Count::default());
    let (job, handle) = Job::once(TaskMeta::new("observed"), |_| Ok::<_, TaskError>(1));
    job.observe_with(count.clone());
    assert_eq!(job.run(), Status::Completed);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    // Kept with the task's state (the handle) until that goes.
    assert_eq!(Arc::strong_count(&count), 2);
    assert_eq!(handle.wait().unwrap(), 1);
    assert_eq!(Arc::strong_count(&count), 1);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
}
