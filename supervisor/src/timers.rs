//! A timer heap plus an immediate queue, drained by the supervisor's scheduler thread.
//!
//! Producers (callers of `execute`, worker threads ending a task) only take a short lock to
//! push; the scheduler thread sleeps until the earliest timer or a push that needs it
//! sooner. Nothing here blocks a worker or a caller of `execute` for longer than the lock.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    /// Reversed, so the max-heap pops the earliest entry first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct State<T> {
    heap: BinaryHeap<Entry<T>>,
    now: VecDeque<T>,
    seq: u64,
    closed: bool,
}

/// Items due now or at a given instant; see the module docs.
pub(crate) struct Timers<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Self {
        Timers {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                now: VecDeque::new(),
                seq: 0,
                closed: false,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` for `at`; gives it back when the timers are closed.
    pub(crate) fn at(&self, at: Instant, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.closed {
            return Err(item);
        }
        let wake = s.heap.peek().is_none_or(|e| at < e.at);
        s.seq += 1;
        let seq = s.seq;
        s.heap.push(Entry { at, seq, item });
        drop(s);
        if wake {
            self.cond.notify_one();
        }
        Ok(())
    }

    /// Queues `item` to be handled as soon as possible; gives it back when closed.
    pub(crate) fn now(&self, item: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.closed {
            return Err(item);
        }
        s.now.push_back(item);
        drop(s);
        self.cond.notify_one();
        Ok(())
    }

    /// Blocks until some items are due and returns them (immediate ones first, then
    /// timers in time order); `None` once closed.
    pub(crate) fn next_batch(&self) -> Option<Vec<T>> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            let now = Instant::now();
            let batch = Self::take_due(&mut s, now);
            if !batch.is_empty() {
                return Some(batch);
            }
            s = match s.heap.peek().map(|e| e.at) {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.cond
                        .wait_timeout(s, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// The items due now, without waiting (possibly none); `None` once closed.
    pub(crate) fn due_now(&self) -> Option<Vec<T>> {
        let mut s = self.lock();
        if s.closed {
            return None;
        }
        Some(Self::take_due(&mut s, Instant::now()))
    }

    /// Immediate items first, then due timers in time order.
    fn take_due(s: &mut State<T>, now: Instant) -> Vec<T> {
        let mut batch: Vec<T> = s.now.drain(..).collect();
        while s.heap.peek().is_some_and(|e| e.at <= now) {
            batch.extend(s.heap.pop().map(|e| e.item));
        }
        batch
    }

    /// Closes the timers: later pushes are refused, the scheduler's `next_batch` returns
    /// `None`, and every item still queued is returned.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut s = self.lock();
        s.closed = true;
        let mut items: Vec<T> = s.now.drain(..).collect();
        items.extend(
            std::mem::take(&mut s.heap)
                .into_sorted_vec()
                .into_iter()
                .rev()
                .map(|e| e.item),
        );
        drop(s);
        self.cond.notify_all();
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn due_in_time_order_and_immediate_first() {
        let t: Arc<Timers<u32>> = Arc::new(Timers::new());
        let base = Instant::now();
        t.at(base + Duration::from_millis(30), 3).unwrap();
        t.at(base + Duration::from_millis(10), 1).unwrap();
        t.at(base + Duration::from_millis(20), 2).unwrap();
        t.now(0).unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(t.next_batch().unwrap());
        }
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(base.elapsed() >= Duration::from_millis(30));
        t.at(base + Duration::from_secs(60), 9).unwrap();
        assert_eq!(t.close(), vec![9]);
        assert_eq!(t.now(5), Err(5));
        assert!(t.next_batch().is_none());
    }

    #[test]
    fn an_earlier_timer_wakes_the_sleeper() {
        let t: Arc<Timers<u32>> = Arc::new(Timers::new());
        t.at(Instant::now() + Duration::from_secs(60), 1).unwrap();
        let t2 = t.clone();
        let waiter = std::thread::spawn(move || t2.next_batch());
        std::thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        t.at(Instant::now() + Duration::from_millis(5), 2).unwrap();
        assert_eq!(waiter.join().unwrap(), Some(vec![2]));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
