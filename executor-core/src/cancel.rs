//! Cooperative cancellation: [`CancelToken`], which running tasks poll and futures can await.

use crate::sync::{AtomicU8, Mutex, Ordering};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
const EXPIRED: u8 = 2;

/// Why a token fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// Somebody asked the task to stop.
    Cancelled,
    /// The task's deadline passed.
    TimedOut,
}

/// The state behind a token: a flag and the wakers of futures waiting on it.
///
/// Every task's state holds one, and few tasks ever have a future waiting on their
/// token, so the wakers are allocated with the first one (a pointer inline, not a `Vec`).
#[derive(Default)]
pub(crate) struct CancelFlag {
    state: AtomicU8,
    wakers: Mutex<Option<Box<Wakers>>>,
}

/// The wakers of the futures waiting on a flag, in the order they came: the first in the
/// same allocation as the list of the others.
struct Wakers {
    first: Waker,
    rest: Vec<Waker>,
}

impl CancelFlag {
    pub(crate) fn reason(&self) -> Option<CancelReason> {
        match self.state.load(Ordering::Acquire) {
            LIVE => None,
            CANCELLED => Some(CancelReason::Cancelled),
            _ => Some(CancelReason::TimedOut),
        }
    }

    /// [`reason`](Self::reason), ordered with every other SeqCst operation (for the
    /// handshake between a cancel and a task being put back in the queue).
    pub(crate) fn reason_now(&self) -> Option<CancelReason> {
        match self.state.load(Ordering::SeqCst) {
            LIVE => None,
            CANCELLED => Some(CancelReason::Cancelled),
            _ => Some(CancelReason::TimedOut),
        }
    }

    /// Fires the flag; false when it had fired already.
    pub(crate) fn fire(&self, reason: CancelReason) -> bool {
        let to = match reason {
            CancelReason::Cancelled => CANCELLED,
            CancelReason::TimedOut => EXPIRED,
        };
        if self
            .state
            .compare_exchange(LIVE, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(wakers) = wakers {
            let Wakers { first, rest } = *wakers;
            first.wake();
            for w in rest {
                w.wake();
            }
        }
        true
    }

    /// Registers `waker` to be woken when the flag fires; true when it has fired already.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if self.state.load(Ordering::Acquire) != LIVE {
            return true;
        }
        match &mut *wakers {
            None => {
                *wakers = Some(Box::new(Wakers {
                    first: waker.clone(),
                    rest: Vec::new(),
                }))
            }
            Some(list) => {
                if !list.first.will_wake(waker) && !list.rest.iter().any(|w| w.will_wake(waker)) {
                    list.rest.push(waker.clone());
                }
            }
        }
        false
    }
}

/// Something that owns a [`CancelFlag`] and may act when it fires (a task's shared state).
pub(crate) trait CancelSource: Send + Sync {
    fn flag(&self) -> &CancelFlag;
    fn fired(&self, _reason: CancelReason) {}
    /// True once the task this flag belongs to has ended.
    fn is_done(&self) -> bool {
        false
    }
}

impl CancelSource for CancelFlag {
    fn flag(&self) -> &CancelFlag {
        self
    }
}

/// A cancellation token: cheap to clone, shared by a task, its handle and its context.
///
/// Long CPU loops poll [`is_cancelled`](Self::is_cancelled) (or `ctx.checkpoint()?`);
/// futures can `.await` [`cancelled`](Self::cancelled). Cancelling is a request: a
/// blocking task stops when it next checks; an async task is dropped at its next poll.
#[derive(Clone)]
pub struct CancelToken(Arc<dyn CancelSource>);

impl CancelToken {
    /// A token of its own, not tied to any task.
    pub fn new() -> Self {
        CancelToken(Arc::new(CancelFlag::default()))
    }

    pub(crate) fn from_source(source: Arc<dyn CancelSource>) -> Self {
        CancelToken(source)
    }

    /// A weak form of this token, which does not keep the task's state alive.
    pub fn downgrade(&self) -> WeakCancelToken {
        WeakCancelToken(Arc::downgrade(&self.0))
    }

    /// Asks the task to stop; false when the token had fired already.
    pub fn cancel(&self) -> bool {
        self.fire(CancelReason::Cancelled)
    }

    /// Marks the task as past its deadline (used by timeout layers); the task's handle
    /// resolves as timed out at once.
    pub fn expire(&self) -> bool {
        self.fire(CancelReason::TimedOut)
    }

    fn fire(&self, reason: CancelReason) -> bool {
        let fired = self.0.flag().fire(reason);
        if fired {
            self.0.fired(reason);
        }
        fired
    }

    /// True once the token has fired, for either reason.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// Why the token fired, if it has.
    pub fn reason(&self) -> Option<CancelReason> {
        self.0.flag().reason()
    }

    /// A future that completes when the token fires.
    pub fn cancelled(&self) -> Cancellation {
        Cancellation {
            token: self.clone(),
        }
    }

    pub(crate) fn flag(&self) -> &CancelFlag {
        self.0.flag()
    }

    /// True once the task this token belongs to has ended (always false for a token
    /// made with [`new`](Self::new)): a timer holding it has nothing left to do.
    pub fn is_finished(&self) -> bool {
        self.0.is_done()
    }
}

/// A [`CancelToken`] that does not keep its task's state alive: what a timer that may
/// outlive the task holds (a timeout's deadline queue), so a task that ended long before
/// its deadline frees its result at once. [`upgrade`](Self::upgrade) gives the token
/// back while the task's state lives.
#[derive(Clone)]
pub struct WeakCancelToken(Weak<dyn CancelSource>);

impl WeakCancelToken {
    pub(crate) fn from_weak(source: Weak<dyn CancelSource>) -> Self {
        WeakCancelToken(source)
    }

    /// The token, while something (the task, its handle, a token) keeps the state alive.
    pub fn upgrade(&self) -> Option<CancelToken> {
        self.0.upgrade().map(CancelToken)
    }

    /// False once nothing keeps the task's state alive (upgrading would fail).
    pub fn is_alive(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl std::fmt::Debug for WeakCancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakCancelToken")
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("reason", &self.reason())
            .finish()
    }
}

/// The future returned by [`CancelToken::cancelled`].
#[derive(Debug)]
pub struct Cancellation {
    token: CancelToken,
}

impl Future for Cancellation {
    type Output = CancelReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CancelReason> {
        let flag = self.token.flag();
        if flag.register(cx.waker()) {
            Poll::Ready(flag.reason().unwrap_or(CancelReason::Cancelled))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn firing_wakes_every_waiting_future_once() {
        let token = CancelToken::new();
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::default()).collect();
        let mut waiting: Vec<_> = counts.iter().map(|_| Box::pin(token.cancelled())).collect();
        for (fut, count) in waiting.iter_mut().zip(&counts) {
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            // Polled twice with the same waker: registered once.
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert!(token.cancel());
        for count in &counts {
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
        }
        let waker = Waker::from(counts[0].clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            waiting[0].as_mut().poll(&mut cx),
            Poll::Ready(CancelReason::Cancelled)
        );
        // A flag that never had a waiter fires as well.
        assert!(CancelToken::new().expire());
    }
}
