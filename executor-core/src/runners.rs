//! `map`'s runner tasks: a few tasks that share the items through a claim cursor and write
//! each value straight into the map's output, where it stays.

use crate::backend::MetaRef;
use crate::sync::{AtomicUsize, Mutex, MutexGuard, Ordering, TaskCell, back_off};
use crate::{Executor, Job, TaskContext, TaskError, TaskHandle};
use std::mem::MaybeUninit;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

/// What `map`'s runner tasks share: the items, a cursor that hands them out in blocks,
/// the function, and where the values go.
///
/// The items stay where `map` collected them, and the values go straight to their place
/// in the output `map` returns: a runner claims a block by moving the cursor (one atomic
/// compare-and-swap), moves its items out in place and writes their values in place, so a
/// block costs no copy and no allocation. Each index is claimed by one runner, which
/// takes its item once and writes its value once. The items no runner claimed drop with
/// the last runner (`Drop` below); the values belong to `map` (see [`Runners::close`]).
pub(crate) struct Runners<I, T, F> {
    /// The items, in order. Slot `i` holds item `i` until a runner takes it; every slot
    /// at or past `next` still holds its item.
    slots: Box<[TaskCell<MaybeUninit<I>>]>,
    /// The first item no runner has claimed yet.
    next: AtomicUsize,
    /// How many runners share the items (the claims are sized by it).
    width: usize,
    f: F,
    /// Where item `i`'s value goes: the buffer of `map`'s output, `total` values long,
    /// which `map` frees or returns only after [`close`](Self::close).
    out: *mut T,
    /// Under loom, a cell per value, reached wherever a value is written or dropped, so
    /// the models fail if two threads ever reach one value at once.
    #[cfg(loom)]
    shadow: Box<[TaskCell<()>]>,
    /// How many runners are between a claim and the end of its block (or a refused
    /// claim), with [`CLOSED`] set by `close`: no claim succeeds after it. One atomic, so
    /// that a claim and `close` are ordered by their read-modify-writes on it.
    state: AtomicUsize,
    /// The blocks whose values are all written.
    written: Mutex<Vec<Range<usize>>>,
}

// SAFETY: the items and the values cross threads (hence `I: Send`, `T: Send`); the
// function is called from every runner (`F: Sync`). The fields that are not `Sync` by
// themselves are the item slots and the output pointer, and both are reached through
// `&self` only at an index inside a block that exactly one runner claimed (the
// compare-and-swap in `claim` hands every index out once), so no two threads reach the
// same item or value; `close` keeps `map` from reading or freeing the output while a
// runner is inside a block.
#[allow(unsafe_code)] // See the SAFETY comment above.
unsafe impl<I: Send, T: Send, F: Sync> Sync for Runners<I, T, F> {}
// SAFETY: as for `Sync` above; sending the runners sends the items (`I: Send`) and the
// right to write values (`T: Send`).
#[allow(unsafe_code)] // See the SAFETY comment above.
unsafe impl<I: Send, T: Send, F: Send> Send for Runners<I, T, F> {}

/// The bit of [`Runners`]' `state` that `close` sets.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// A runner's claim: while it lives, `close` waits.
pub(crate) struct Claim<'a> {
    state: &'a AtomicUsize,
    /// The claimed indices (empty for a claim refused after counting itself).
    pub(crate) block: Range<usize>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Release: the values written under this claim (and its entry in `written`) are
        // seen by `close`, which waits for the count with an acquire.
        self.state.fetch_sub(1, Ordering::Release);
    }
}

#[allow(unsafe_code)] // The slots and the output: see `take`, `put` and `Sync` above.
impl<I, T, F> Runners<I, T, F> {
    /// Runners over `items`, at most `width` of them (no more than there are items),
    /// writing the values into `out`'s buffer, which this gives room for them all.
    ///
    /// # Safety
    /// `out` is not moved, grown, freed or read until [`close`](Self::close) returns.
    pub(crate) unsafe fn new(
        items: impl IntoIterator<Item = I>,
        width: usize,
        f: F,
        out: &mut Vec<T>,
    ) -> Self {
        // From a `Vec` this reuses its allocation in place: the slots have the items'
        // size and alignment.
        let slots: Box<[_]> = items
            .into_iter()
            .map(|item| TaskCell::new(MaybeUninit::new(item)))
            .collect();
        let total = slots.len();
        out.reserve_exact(total);
        Runners {
            #[cfg(loom)]
            shadow: slots.iter().map(|_| TaskCell::new(())).collect(),
            slots,
            next: AtomicUsize::new(0),
            width: width.clamp(1, total.max(1)),
            f,
            out: out.as_mut_ptr(),
            state: AtomicUsize::new(0),
            written: Mutex::new(Vec::new()),
        }
    }

    /// How many items the map has.
    pub(crate) fn total(&self) -> usize {
        self.slots.len()
    }

    /// Claims the next block of items: a share of what is left, `1 / (2 * width)` of it, at
    /// least one item. Early claims are large (few trips to the cursor); late ones are
    /// small, so runners that free up at different times still finish close together.
    /// None once the items are all claimed or the map has stopped waiting (`close`).
    pub(crate) fn claim(&self) -> Option<Claim<'_>> {
        // Either this increment comes before `close`'s, which then waits for this claim,
        // or after it, and sees the map closed: read-modify-writes of one atomic are in
        // one order.
        let before = self.state.fetch_add(1, Ordering::Acquire);
        let mut claim = Claim {
            state: &self.state,
            block: 0..0,
        };
        if before & CLOSED != 0 {
            return None;
        }
        let total = self.total();
        // Relaxed: the claims only need to be disjoint, which every read-modify-write on
        // one atomic gives; the items were written before the runners were handed out.
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            if start >= total {
                return None;
            }
            let n = ((total - start) / (2 * self.width)).max(1);
            match self.next.compare_exchange_weak(
                start,
                start + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    claim.block = start..start + n;
                    return Some(claim);
                }
                Err(now) => start = now,
            }
        }
    }

    /// Moves item `i` out of its slot.
    ///
    /// # Safety
    /// `i` lies in a block this caller claimed, and is taken at most once.
    pub(crate) unsafe fn take(&self, i: usize) -> I {
        // SAFETY: slots at or past `next` hold their items, and `claim` moved `next` past
        // `i` for this caller alone, which takes it once: the slot is initialised and
        // nobody else reads it.
        self.slots[i].with_mut(|slot| unsafe { (*slot).assume_init_read() })
    }

    /// Writes item `i`'s value.
    ///
    /// # Safety
    /// `i` lies in a block this caller claimed and still holds, and is written at most once.
    unsafe fn put(&self, i: usize, value: T) {
        #[cfg(loom)]
        self.shadow[i].with_mut(|_| ());
        // SAFETY: `out` has room for `total` values until `close` returns, which it does
        // not while this claim is held; index `i` is this caller's alone.
        unsafe { self.out.add(i).write(value) }
    }

    /// Drops the values written at `range`.
    ///
    /// # Safety
    /// Every value in `range` was written, is not dropped or read elsewhere, and nobody
    /// else reaches the range (a claim of the caller's, or after `close`).
    unsafe fn drop_values(&self, range: Range<usize>) {
        #[cfg(loom)]
        for i in range.clone() {
            self.shadow[i].with_mut(|_| ());
        }
        // SAFETY: as the caller promises; the range lies within the `total` values.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.out.add(range.start),
                range.len(),
            ));
        }
    }

    /// One runner's body: claims blocks and runs `f` on their items until none is left or
    /// the task is cancelled (checked between blocks), writing each value in its place.
    /// An item that panics does not stop the runner: it runs the rest of what it claims, as
    /// tasks of their own would, then ends with the first panic, so the task ends as
    /// panicked. After a panic the map fails, so the runner keeps no values: it drops those
    /// of the block it was in and every later one.
    pub(crate) fn run(&self, ctx: &TaskContext)
    where
        F: Fn(I) -> T,
    {
        let mut panic = None;
        while !ctx.is_cancelled() {
            let Some(claim) = self.claim() else {
                break;
            };
            let block = claim.block.clone();
            let mut i = block.start;
            // Values are written at `block.start..kept`.
            let mut kept = block.start;
            while let Err(payload) = catch_unwind(AssertUnwindSafe(|| {
                while i < block.end {
                    // Moves on first, so an item whose call panics is not taken again.
                    let at = i;
                    i += 1;
                    // SAFETY: `at` is in the block just claimed, taken once (above).
                    let item = unsafe { self.take(at) };
                    let value = (self.f)(item);
                    // After a panic the map fails: the values are not kept.
                    if panic.is_none() {
                        // SAFETY: `at` is in the claim held, written once (above).
                        unsafe { self.put(at, value) };
                        kept = i;
                    }
                }
            })) {
                panic.get_or_insert(payload);
            }
            if kept == block.end {
                self.written().push(block);
            } else {
                // SAFETY: `block.start..kept` were written under the claim still held, and
                // are not recorded in `written`, so nothing else drops or reads them.
                unsafe { self.drop_values(block.start..kept) };
            }
            drop(claim);
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }

    /// The list of written blocks (a panic elsewhere cannot leave it half-changed).
    fn written(&self) -> MutexGuard<'_, Vec<Range<usize>>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the claims and waits for the runners inside a block to end it; from then on
    /// no runner reaches the output. Returns the blocks whose values are all written.
    pub(crate) fn close(&self) -> Vec<Range<usize>> {
        // Acquire, here and below: what each runner wrote before giving back its claim
        // (a release) is seen from here on.
        let mut state = self.state.fetch_or(CLOSED, Ordering::Acquire);
        let mut spins = 0;
        while state != CLOSED {
            back_off(spins);
            spins += 1;
            state = self.state.load(Ordering::Acquire);
        }
        std::mem::take(&mut *self.written())
    }
}

#[allow(unsafe_code)] // The unclaimed slots: see below.
impl<I, T, F> Drop for Runners<I, T, F> {
    fn drop(&mut self) {
        // Every runner is gone (this is the last reference), and each took exactly the
        // items it claimed; the slots from `next` on still hold theirs.
        let unclaimed = self.next.load(Ordering::Acquire).min(self.total());
        for slot in &self.slots[unclaimed..] {
            // SAFETY: no runner claimed this slot, so it holds its item, and `&mut self`
            // means nothing else reaches it; it is dropped once, here.
            slot.with_mut(|slot| unsafe { (*slot).assume_init_drop() });
        }
    }
}

/// `map` as up to `width` runner tasks that share the items (see `map`'s docs).
#[allow(unsafe_code)] // The output's length: see the SAFETY comments below.
pub(crate) fn map_runners<E, I, T, F>(
    exec: &E,
    meta: MetaRef,
    items: impl IntoIterator<Item = I>,
    width: NonZeroUsize,
    f: F,
) -> Result<Vec<T>, TaskError>
where
    E: Executor + ?Sized,
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> T + Send + Sync + 'static,
{
    let mut out: Vec<T> = Vec::new();
    // SAFETY: `out` is left alone until `close` returns (the `Closing` guard closes even
    // on unwind).
    let runners = unsafe { Runners::new(items, width.get(), f, &mut out) };
    let n = runners.total();
    if n == 0 {
        return Ok(out);
    }
    let shared = Arc::new(runners);
    let closing = Closing(&shared);
    let (jobs, handles): (Vec<Job>, Vec<TaskHandle<()>>) = (0..shared.width)
        .map(|_| {
            let shared = shared.clone();
            Job::once(meta.clone(), move |ctx| {
                shared.run(ctx);
                Ok(())
            })
        })
        .unzip();
    exec.execute_batch(jobs);
    let mut error: Option<TaskError> = None;
    for h in handles {
        match h.wait() {
            Ok(()) => {}
            // A refused runner leaves its share to the others: its error counts only when
            // no runner that ran ended badly.
            Err(e) if error.as_ref().is_none_or(refused) => error = Some(e),
            Err(_) => {}
        }
    }
    std::mem::forget(closing);
    let written = shared.close();
    if written.iter().map(ExactSizeIterator::len).sum::<usize>() == n {
        // SAFETY: the written blocks are disjoint (each index is claimed once) and cover
        // all `n` values, each written once, and no runner reaches `out` after `close`.
        unsafe { out.set_len(n) };
        return Ok(out);
    }
    for block in written {
        // SAFETY: the block's values were written, are recorded once, and after `close`
        // nothing else reaches them; `out`'s length stays 0, so it drops none itself.
        unsafe { shared.drop_values(block) };
    }
    // Some item gave no value: a runner ended badly, or every runner was refused or
    // cancelled before the items ran out.
    Err(error.unwrap_or_else(TaskError::cancelled))
}

/// Closes the runners if `map` unwinds before it does, so that none writes to the output
/// as it is freed.
struct Closing<'a, I, T, F>(&'a Runners<I, T, F>);

impl<I, T, F> Drop for Closing<'_, I, T, F> {
    fn drop(&mut self) {
        // The values written stay unreached in a buffer of length 0: they leak, which is
        // safe, on a path (a `wait` that unwound) that should not happen.
        self.0.close();
    }
}

/// True for the error of a task that never ran because the executor refused it.
fn refused(e: &TaskError) -> bool {
    e.is_rejected() || e.is_shutdown()
}

/// An item or a value of a map in tests (and the conformance suite): counts its drops in
/// the shared counter.
#[cfg(any(test, feature = "testing"))]
pub(crate) struct Counted(
    pub(crate) usize,
    pub(crate) Arc<std::sync::atomic::AtomicUsize>,
);

#[cfg(any(test, feature = "testing"))]
impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as Count;

    #[test]
    #[allow(unsafe_code)] // Claims and takes by hand, as a runner does.
    fn every_item_drops_once_whether_taken_or_left_unclaimed() {
        for (items, blocks) in [(0, 0), (1, 0), (1, 1), (9, 0), (9, 1), (9, 3), (9, 99)] {
            let drops = Arc::new(Count::new(0));
            let mut out: Vec<()> = Vec::new();
            // SAFETY: `out` outlives the runners, which never write to it here.
            let runners = unsafe {
                Runners::new(
                    (0..items).map(|i| Counted(i, drops.clone())),
                    2,
                    |item: Counted| drop(item),
                    &mut out,
                )
            };
            let mut taken = 0;
            for _ in 0..blocks {
                let Some(claim) = runners.claim() else { break };
                for i in claim.block.clone() {
                    // SAFETY: `i` is in the block just claimed, taken once.
                    (runners.f)(unsafe { runners.take(i) });
                    taken += 1;
                }
            }
            let seen = drops.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(seen, taken, "{items} items, {blocks} blocks");
            assert!(runners.close().is_empty());
            drop(runners);
            let seen = drops.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!(seen, items, "{items} items, {blocks} blocks");
        }
    }

    #[test]
    fn values_of_a_panicked_block_drop_and_the_rest_are_written() {
        let drops = Arc::new(Count::new(0));
        let counted = drops.clone();
        let mut out: Vec<Counted> = Vec::new();
        // SAFETY: `out` outlives the runners and is left alone until `close`.
        #[allow(unsafe_code)]
        let runners = unsafe {
            Runners::new(
                0..100u32,
                1,
                move |i| {
                    assert_ne!(i, 70, "item 70");
                    Counted(i as usize, counted.clone())
                },
                &mut out,
            )
        };
        let ctx = TaskContext::detached(crate::TaskMeta::new("runner"));
        let panic = catch_unwind(AssertUnwindSafe(|| runners.run(&ctx))).unwrap_err();
        assert!(crate::panic_message(&*panic).contains("item 70"));
        let written = runners.close();
        // Blocks of half what is left (width 1): 0..50, 50..75 (which panicked), then
        // blocks after the panic, whose values are dropped as they are made.
        assert_eq!(written, vec![0..50]);
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 99 - 50);
        #[allow(unsafe_code)]
        // SAFETY: 0..50 were written and nothing reaches them after `close`.
        unsafe {
            runners.drop_values(0..50)
        };
        assert_eq!(drops.load(std::sync::atomic::Ordering::Relaxed), 99);
    }
}
