//! [`Admission`]: the gate every backend's `execute` passes, so that a shutdown can close
//! it and then know when no submission is still on its way into the queue.

use crate::sync::{AtomicBool, AtomicUsize, Ordering, back_off, fence};
use std::time::Instant;

/// Open/closed state plus a count of submissions in flight.
///
/// `execute` calls [`enter`](Self::enter) and checks [`Entry::is_open`]; `shutdown` calls
/// [`close`](Self::close) and then [`wait_in_flight`](Self::wait_in_flight). Each side
/// writes its own variable, then reads the other's, all `SeqCst`, so either a submission
/// sees the gate closed, or the shutdown sees the submission in flight — never neither.
/// (Under loom, which treats `SeqCst` accesses as acquire/release but models `SeqCst`
/// fences, a fence sits between the write and the read; `loom_models` checks it.)
///
/// It takes two cache lines of its own (a 128-byte alignment, as adjacent-line prefetching
/// pairs lines): every submission writes `in_flight`, so a field beside it that workers
/// read per job (a backend's `abandon` flag, say) would bounce between the submitting
/// core and the workers' on every task.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Admission {
    closed: AtomicBool,
    shut: AtomicBool,
    in_flight: AtomicUsize,
}

/// A submission inside the gate; dropping it leaves.
#[derive(Debug)]
pub struct Entry<'a> {
    gate: &'a Admission,
    open: bool,
}

impl Entry<'_> {
    /// True when the gate was open as this submission entered: it may be queued.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.open
    }
}

impl Drop for Entry<'_> {
    #[inline]
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// An open gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters the gate for one submission.
    #[inline]
    pub fn enter(&self) -> Entry<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        seq_cst_fence();
        let open = !self.closed.load(Ordering::SeqCst);
        Entry { gate: self, open }
    }

    /// Closes the gate: later submissions see it closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Pairs with the fence in `enter`: the in-flight count read after this sees every
        // submission that read the gate open.
        seq_cst_fence();
    }

    /// True once the gate is closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Marks the start of a shutdown; true only for the first caller (later calls of a
    /// backend's `shutdown` return an empty report).
    pub fn begin_shutdown(&self) -> bool {
        !self.shut.swap(true, Ordering::AcqRel)
    }

    /// Submissions inside the gate now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no submission is inside the gate, or until `deadline` (`None`: no
    /// limit, for backends whose `execute` never blocks). True when none is left.
    pub fn wait_in_flight(&self, deadline: Option<Instant>) -> bool {
        let mut spins = 0u32;
        while self.in_flight() > 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            // Yields first; then sleeps a little, for a submission blocked on a full queue
            // (it gets in as workers make room).
            back_off(spins);
            spins = spins.saturating_add(1);
        }
        true
    }
}

/// The fence between writing one side's variable and reading the other's. In the
/// language's memory model the `SeqCst` accesses alone forbid the outcome where both sides
/// miss each other (all four are `SeqCst`, so they fall in one total order: the Dekker
/// pattern), so outside loom no fence instruction is spent on every submission. loom
/// weakens `SeqCst` accesses to acquire/release but models `SeqCst` fences, so under
/// loom the fence is there and the models prove the gate with it.
#[inline(always)]
fn seq_cst_fence() {
    if cfg!(loom) {
        fence(Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_closed_gate_refuses_and_the_shutdown_sees_who_is_inside() {
        let gate = Admission::new();
        assert!(gate.begin_shutdown());
        assert!(!gate.begin_shutdown(), "only the first shutdown runs");
        let inside = gate.enter();
        assert!(inside.is_open());
        gate.close();
        assert!(!gate.enter().is_open());
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(
            !gate.wait_in_flight(Some(soon)),
            "a submission is still inside"
        );
        drop(inside);
        assert!(gate.wait_in_flight(None));
        assert_eq!(gate.in_flight(), 0);
    }
}
