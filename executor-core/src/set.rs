//! [`TaskSet`]: a set of handles that yields results as tasks complete.

use crate::{TaskError, TaskHandle, TaskId};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Where completed members report: the indices of ready handles, and who is waiting.
#[derive(Default)]
struct Ready {
    state: Mutex<ReadyState>,
    cond: Condvar,
}

#[derive(Default)]
struct ReadyState {
    ready: VecDeque<usize>,
    waker: Option<Waker>,
}

struct MemberWaker {
    index: usize,
    ready: Arc<Ready>,
}

impl Wake for MemberWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.ready.state.lock().unwrap_or_else(|e| e.into_inner());
        state.ready.push_back(self.index);
        let waker = state.waker.take();
        drop(state);
        self.ready.cond.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Handles that complete in any order; [`join_next`](Self::join_next) yields each result
/// as soon as its task ends (like `concurrent.futures.as_completed` or tokio's `JoinSet`).
///
/// **Dropping a set cancels the tasks it still holds**, as dropping a tokio `JoinSet`
/// aborts its tasks: a set owns its work, so an early return (an error, a `?`) does not
/// leave orphans running. Cancelling follows [`TaskHandle::cancel`]: a task that has not
/// started never runs, a running future is dropped at its next poll, a running blocking
/// task sees its context cancelled. To let the remaining tasks run on unobserved, call
/// [`detach_all`](Self::detach_all) instead of dropping the set. (Dropping a single
/// [`TaskHandle`] detaches its task; only the set cancels.)
///
/// ```
/// use executor_core::{ExecutorExt, InlineExecutor, TaskSet};
/// let exec = InlineExecutor::new("inline");
/// let mut set = TaskSet::new();
/// for i in 0..3u32 {
///     set.push(exec.submit(move || i * 10));
/// }
/// let mut got: Vec<u32> = set.as_completed().map(|(_, r)| r.unwrap()).collect();
/// got.sort();
/// assert_eq!(got, vec![0, 10, 20]);
/// ```
pub struct TaskSet<T> {
    members: Vec<Option<TaskHandle<T>>>,
    /// Slots of members already yielded, reused by `push` so a long-lived set stays small.
    free: Vec<usize>,
    live: usize,
    ready: Arc<Ready>,
}

impl<T: Send + 'static> TaskSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            members: Vec::new(),
            free: Vec::new(),
            live: 0,
            ready: Arc::default(),
        }
    }

    /// Adds a handle.
    pub fn push(&mut self, mut handle: TaskHandle<T>) {
        let index = self.free.pop().unwrap_or(self.members.len());
        if index == self.members.len() {
            self.members.push(None);
        }
        let waker = Waker::from(Arc::new(MemberWaker {
            index,
            ready: self.ready.clone(),
        }));
        // Register the member's waker: a finished task wakes it at once.
        let mut cx = Context::from_waker(&waker);
        match Pin::new(&mut handle).poll(&mut cx) {
            Poll::Pending => self.members[index] = Some(handle),
            Poll::Ready(result) => {
                // Keep the result: re-wrap it as a ready slot.
                self.members[index] = Some(TaskHandle::ready(handle.id(), result));
                waker.wake();
            }
        }
        self.live += 1;
    }

    /// How many tasks have not been yielded yet.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when every task has been yielded.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn take_ready(&mut self, index: usize) -> Option<(TaskId, Result<T, TaskError>)> {
        let member = self.members.get_mut(index)?;
        if !member.as_ref()?.is_finished() {
            // A spurious wake: the member's waker stays registered, keep waiting for it.
            return None;
        }
        let mut handle = member.take()?;
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(&mut handle).poll(&mut cx) {
            Poll::Ready(r) => {
                self.live -= 1;
                self.free.push(index);
                Some((handle.id(), r))
            }
            Poll::Pending => unreachable!("a finished handle is ready"),
        }
    }

    /// Blocks until the next task ends; `None` when the set is empty.
    pub fn join_next(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        loop {
            if self.live == 0 {
                return None;
            }
            let index = {
                let mut state = self.ready.state.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(i) = state.ready.pop_front() {
                        break i;
                    }
                    state = self
                        .ready
                        .cond
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
            };
            if let Some(r) = self.take_ready(index) {
                return Some(r);
            }
        }
    }

    /// Like [`join_next`](Self::join_next), waiting at most `timeout`; `None` when nothing
    /// ended in time or the set is empty.
    pub fn join_next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Option<(TaskId, Result<T, TaskError>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.live == 0 {
                return None;
            }
            let index = {
                let mut state = self.ready.state.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(i) = state.ready.pop_front() {
                        break i;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    state = self
                        .ready
                        .cond
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            if let Some(r) = self.take_ready(index) {
                return Some(r);
            }
        }
    }

    /// The next result, awaited; `None` when the set is empty.
    pub async fn join_next_async(&mut self) -> Option<(TaskId, Result<T, TaskError>)> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// Polls for the next result.
    pub fn poll_join_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(TaskId, Result<T, TaskError>)>> {
        loop {
            if self.live == 0 {
                return Poll::Ready(None);
            }
            let index = {
                let mut state = self.ready.state.lock().unwrap_or_else(|e| e.into_inner());
                match state.ready.pop_front() {
                    Some(i) => i,
                    None => {
                        state.waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            if let Some(r) = self.take_ready(index) {
                return Poll::Ready(Some(r));
            }
        }
    }

    /// Every remaining result, in completion order (blocking iterator). The iterator owns
    /// the set: dropping it before the end cancels the tasks not yet yielded.
    pub fn as_completed(self) -> impl Iterator<Item = (TaskId, Result<T, TaskError>)> {
        let mut set = self;
        std::iter::from_fn(move || set.join_next())
    }

    /// Asks every remaining task to stop (they stay in the set: their results, mostly
    /// `is_cancelled()`, are still yielded).
    pub fn cancel_all(&self) {
        for h in self.members.iter().flatten() {
            h.cancel();
        }
    }

    /// Lets every remaining task run to its end unobserved and empties the set — the
    /// alternative to dropping it, which cancels them.
    pub fn detach_all(mut self) {
        self.members.clear();
        self.free.clear();
        self.live = 0;
    }
}

impl<T> Drop for TaskSet<T> {
    /// Cancels the tasks not yet yielded; see the type's docs and
    /// [`detach_all`](TaskSet::detach_all).
    fn drop(&mut self) {
        for h in self.members.iter().flatten() {
            h.cancel_on_drop();
        }
    }
}

impl<T: Send + 'static> Default for TaskSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Extend<TaskHandle<T>> for TaskSet<T> {
    fn extend<I: IntoIterator<Item = TaskHandle<T>>>(&mut self, iter: I) {
        for h in iter {
            self.push(h);
        }
    }
}

impl<T: Send + 'static> FromIterator<TaskHandle<T>> for TaskSet<T> {
    fn from_iter<I: IntoIterator<Item = TaskHandle<T>>>(iter: I) -> Self {
        let mut set = TaskSet::new();
        set.extend(iter);
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExecutorExt, InlineExecutor};

    #[test]
    fn a_long_lived_set_reuses_the_slots_of_yielded_members() {
        let exec = InlineExecutor::new("inline");
        let mut set = TaskSet::new();
        for round in 0..100u32 {
            set.push(exec.submit(move || round));
            set.push(exec.submit(move || round + 1000));
            let (_, a) = set.join_next().unwrap();
            let (_, b) = set.join_next().unwrap();
            let mut got = [a.unwrap(), b.unwrap()];
            got.sort();
            assert_eq!(got, [round, round + 1000]);
        }
        assert!(set.is_empty());
        assert!(
            set.members.len() <= 2,
            "slots grew to {}",
            set.members.len()
        );
    }
}
