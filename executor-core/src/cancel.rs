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

/// Whether a token fired, and why: read without a lock. The wakers of the futures waiting
/// on it are kept by its [`CancelSource`], under a lock of the source's (a task's state
/// keeps them under its slot's lock, so its flag is one byte beside the task's other
/// atomics, not a lock of its own in every task's allocation).
#[derive(Default)]
pub(crate) struct CancelFlag {
    state: AtomicU8,
}

/// The wakers of the futures waiting on a flag, in the order they came: the first in the
/// same allocation as the list of the others. Few tasks ever have a future waiting on
/// their token, so a source keeps an `Option<Box<Wakers>>`, allocated with the first.
pub(crate) struct Wakers {
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

    /// Sets the flag; false when it had fired already. [`fire`] also wakes the waiters.
    pub(crate) fn set(&self, reason: CancelReason) -> bool {
        let to = match reason {
            CancelReason::Cancelled => CANCELLED,
            CancelReason::TimedOut => EXPIRED,
        };
        self.state
            .compare_exchange(LIVE, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// Fires `source`'s flag and wakes the futures waiting on it; false when it had fired
/// already. The source's own reaction ([`CancelSource::fired`]) is the caller's to call.
pub(crate) fn fire<S: CancelSource + ?Sized>(source: &S, reason: CancelReason) -> bool {
    if !source.flag().set(reason) {
        return false;
    }
    // Taken under the lock that `register` checks the flag under: a waker registered
    // before the flag was set is here, one that comes after sees the flag set.
    let mut taken = None;
    source.with_wakers(&mut |wakers| taken = wakers.take());
    wake_all(taken);
    true
}

/// Wakes the wakers taken from a source whose flag was just set (see [`fire`]), first
/// come first.
pub(crate) fn wake_all(wakers: Option<Box<Wakers>>) {
    if let Some(wakers) = wakers {
        let Wakers { first, rest } = *wakers;
        first.wake();
        for w in rest {
            w.wake();
        }
    }
}

/// Registers `waker` to be woken when `source`'s flag fires; true when it has fired
/// already.
pub(crate) fn register<S: CancelSource + ?Sized>(source: &S, waker: &Waker) -> bool {
    let flag = source.flag();
    let mut fired = false;
    source.with_wakers(&mut |wakers| {
        if flag.state.load(Ordering::Acquire) != LIVE {
            fired = true;
            return;
        }
        match wakers {
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
    });
    fired
}

/// Something that owns a [`CancelFlag`] and the wakers waiting on it, and may act when it
/// fires (a task's shared state).
pub(crate) trait CancelSource: Send + Sync {
    fn flag(&self) -> &CancelFlag;
    /// Calls `f` on the wakers waiting on the flag, under the lock that guards them. The
    /// lock is the source's own: `f` does not block, and nothing that holds it fires the
    /// flag.
    fn with_wakers(&self, f: &mut dyn FnMut(&mut Option<Box<Wakers>>));
    fn fired(&self, _reason: CancelReason) {}
    /// True once the task this flag belongs to has ended.
    fn is_done(&self) -> bool {
        false
    }
}

/// The state of a token of its own, not tied to any task.
#[derive(Default)]
struct Standalone {
    flag: CancelFlag,
    wakers: Mutex<Option<Box<Wakers>>>,
}

impl CancelSource for Standalone {
    fn flag(&self) -> &CancelFlag {
        &self.flag
    }

    fn with_wakers(&self, f: &mut dyn FnMut(&mut Option<Box<Wakers>>)) {
        f(&mut self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
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
        CancelToken(Arc::new(Standalone::default()))
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
        let fired = fire(&*self.0, reason);
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
        let source = &*self.token.0;
        if register(source, cx.waker()) {
            Poll::Ready(source.flag().reason().unwrap_or(CancelReason::Cancelled))
        } else {
            Poll::Pending
        }
    }
}

/// A waker that counts its wake-ups, for the tests of this crate.
#[cfg(all(test, not(loom)))]
#[derive(Default)]
pub(crate) struct Count(pub(crate) std::sync::atomic::AtomicUsize);

#[cfg(all(test, not(loom)))]
impl std::task::Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn firing_wakes_every_waiting_future_once() {
        let token = CancelToken::new();
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::default()).collect();
        let mut waiting: Vec<_> = counts.iter().map(|_| Box::pin(token.cancelled())).collect();
        for (fut, count) in waiting.iter_mut().zip(&counts) {
            let waker = Waker::from(count.clone());
            let mut cx = Context::from_waker(&waker);
            // Polled once: a second poll with the same waker registers it once only as far
            // as `Waker::will_wake` can tell, which may answer false (it does under Miri).
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
