//! [`block_on`]: drives a future to completion on the current thread (threads and rayon
//! backends run async jobs this way).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

struct Unparker(Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` on this thread, parking between wake-ups, and returns its output.
///
/// This function brings no reactor of its own: a future that uses tokio sockets or
/// timers needs a tokio runtime context on this thread. The threads and rayon backends
/// give their workers one (crate `executor-reactor`); elsewhere, enter a runtime's
/// context first (`Handle::enter`) or route the task to a backend.
///
/// ```
/// assert_eq!(executor_core::block_on(async { 1 + 1 }), 2);
/// ```
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
