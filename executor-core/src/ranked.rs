//! [`Ranked`]: a queue that serves higher priority first, with aging so a low priority
//! still gets its turn; plain FIFO (no scan) while every waiting item has priority 0.

use std::collections::VecDeque;

/// Serves that raise a waiting item by one priority level: an item of priority `p` waits
/// at most for the items queued before it plus `AGING * (127 - p)` serves, however many
/// items of higher priority keep arriving.
pub const AGING: i64 = 8;

/// A queue of items with an `i8` priority each, for backends and layers that hold tasks.
///
/// Each item is ranked by `priority * AGING - serves before it was queued`, and the
/// highest rank goes first (FIFO among equal ranks): an item queued [`AGING`] serves
/// later needs one level more to go first, so no stream of higher priorities keeps a low
/// one waiting for ever. While every item has priority 0 it is a plain FIFO: push and pop
/// are `VecDeque`'s, with no scan.
///
/// ```
/// use executor_core::backend::Ranked;
/// let mut q = Ranked::new();
/// q.push(0, "plain");
/// q.push(5, "urgent");
/// q.push(-5, "later");
/// assert_eq!(q.pop(), Some("urgent"));
/// assert_eq!(q.pop(), Some("plain"));
/// assert_eq!(q.pop(), Some("later"));
/// ```
#[derive(Debug)]
pub struct Ranked<T> {
    items: VecDeque<(i8, u64, T)>,
    /// Items served (or passed over, see [`Ranked::pass`]) so far.
    served: u64,
    /// Items waiting with a priority other than 0 (none: plain FIFO, no scan).
    nonzero: usize,
}

impl<T> Default for Ranked<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Ranked<T> {
    /// An empty queue.
    pub const fn new() -> Self {
        Ranked {
            items: VecDeque::new(),
            served: 0,
            nonzero: 0,
        }
    }

    /// Queues `item` with `priority`.
    pub fn push(&mut self, priority: i8, item: T) {
        self.nonzero += usize::from(priority != 0);
        self.items.push_back((priority, self.served, item));
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The index and rank of the item to serve next.
    fn best(&self) -> Option<(usize, i64)> {
        let rank = |(p, at, _): &(i8, u64, T)| i64::from(*p) * AGING - *at as i64;
        if self.nonzero == 0 {
            return self.items.front().map(|x| (0, rank(x)));
        }
        let mut best: Option<(usize, i64)> = None;
        for (i, x) in self.items.iter().enumerate() {
            let r = rank(x);
            if best.is_none_or(|(_, b)| r > b) {
                best = Some((i, r));
            }
        }
        best
    }

    /// The item [`pop`](Self::pop) would return.
    pub fn peek(&self) -> Option<&T> {
        self.best().map(|(i, _)| &self.items[i].2)
    }

    /// The rank of the item [`pop`](Self::pop) would return: `priority * AGING -` the
    /// serve count when it was queued. Comparable with [`served`](Self::served): an item
    /// of priority 0 queued now would rank `-served()`.
    pub fn peek_rank(&self) -> Option<i64> {
        self.best().map(|(_, r)| r)
    }

    /// Takes the item to serve next.
    pub fn pop(&mut self) -> Option<T> {
        let (i, _) = self.best()?;
        let (p, _, item) = self.items.remove(i)?;
        self.nonzero -= usize::from(p != 0);
        self.served += 1;
        Some(item)
    }

    /// Counts a serve of something outside this queue (work of priority 0 kept
    /// elsewhere), so the items here age by it too.
    pub fn pass(&mut self) {
        self.served += 1;
    }

    /// Serves so far (pops and passes).
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Takes the first item (in queue order) for which `pred` is true, out of turn: it
    /// does not count as a serve (a submission taking back what it queued, say).
    pub fn take_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        let i = self.items.iter().position(|(_, _, t)| pred(t))?;
        let (p, _, item) = self.items.remove(i)?;
        self.nonzero -= usize::from(p != 0);
        Some(item)
    }

    /// Takes every item, in queue order.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.nonzero = 0;
        self.items.drain(..).map(|(_, _, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_among_equals_and_higher_first() {
        let mut q = Ranked::new();
        for i in 0..4 {
            q.push(0, i);
        }
        assert_eq!(q.pop(), Some(0));
        q.push(1, 10);
        q.push(1, 11);
        assert_eq!(q.len(), 5);
        let order: Vec<i32> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [10, 11, 1, 2, 3]);
        assert!(q.is_empty());
    }

    #[test]
    fn aging_bounds_the_wait_of_a_low_priority_under_a_stream_of_high_ones() {
        let mut q = Ranked::new();
        q.push(-128, "low");
        let bound = (127 - -128) as u64 * AGING as u64 + 1;
        let mut served = 0;
        loop {
            q.push(127, "high");
            served += 1;
            if q.pop() == Some("low") {
                break;
            }
            assert!(served <= bound, "the low item starved");
        }
        // It did wait: high ones went first for a while.
        assert!(served > 100);
    }
}
