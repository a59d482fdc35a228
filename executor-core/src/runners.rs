//! `map`'s runner tasks: a few tasks that share the items through a claim cursor and write
//! each value straight into the map's output, where it stays.

use crate::backend::MetaRef;
#[cfg(loom)]
use crate::sync::TaskCell;
use crate::sync::{AtomicUsize, Mutex, MutexGuard, Ordering, back_off};
use crate::{Executor, Job, TaskContext, TaskError, TaskHandle};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

/// Under loom, a cell per index of a map's items or values, reached wherever one is taken,
/// written or dropped, so the models fail if two threads ever reach one at once; nothing
/// (and no size) otherwise.
struct Shadow {
    #[cfg(loom)]
    cells: Box<[TaskCell<()>]>,
}

impl Shadow {
    fn new(len: usize) -> Self {
        #[cfg(not(loom))]
        let _ = len;
        Shadow {
            #[cfg(loom)]
            cells: (0..len).map(|_| TaskCell::new(())).collect(),
        }
    }

    /// Marks the indices in `range` as reached by this thread.
    #[inline(always)]
    fn reach(&self, range: Range<usize>) {
        #[cfg(loom)]
        for i in range {
            self.cells[i].with_mut(|_| ());
        }
        #[cfg(not(loom))]
        let _ = range;
    }
}

/// Drops the elements at `range` of the buffer that starts at `base`.
///
/// # Safety
/// The range lies in the buffer, each element in it is initialised, and none is dropped,
/// read or reached elsewhere.
#[allow(unsafe_code)] // The contract above.
unsafe fn drop_range<T>(base: *mut T, range: Range<usize>) {
    // SAFETY: as the caller promises.
    unsafe {
        std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
            base.add(range.start),
            range.len(),
        ));
    }
}

/// Calls `f` with each index of `*i..end` in order, moving `*i` past an index before its
/// call: after a panic in `f`, `*i` is the first index not handed out, so an item whose
/// call panicked is never taken again.
#[inline(always)]
fn each_index(i: &mut usize, end: usize, mut f: impl FnMut(usize)) {
    while *i < end {
        let at = *i;
        *i += 1;
        f(at);
    }
}

/// Where a map's items come from: `len` of them, item `i` taken at most once, by whoever
/// claimed index `i`.
///
/// # Safety
/// The runners call `take_each` through a shared reference from several threads at once,
/// each over indices of its own: an implementation must allow that (no unsynchronised
/// state that two calls over different indices both change), whether or not it is `Sync`.
#[allow(unsafe_code)] // The contract above.
pub(crate) unsafe trait Items {
    /// One item.
    type Item;

    /// How many items there are.
    fn len(&self) -> usize;

    /// Takes items `*i..end` in order and hands each to `f` with its index, moving `*i`
    /// past an item before `f` gets it (so after a panic in `f`, `*i` is the first item
    /// not taken).
    ///
    /// An implementation copies what it reads of `self` into locals before the loop: `f`
    /// writes values through a pointer the compiler cannot tell apart from `self`, and it
    /// would otherwise read `self` again for every item, which also keeps the loop from
    /// being vectorised (a `map` of a `Vec` of `u64` cost 9 instructions an item that way,
    /// against 4 for rayon's `into_par_iter`; 4 now).
    ///
    /// # Safety
    /// `end <= len()`, and no other call takes any index in `*i..end`, before or at the
    /// same time.
    #[allow(unsafe_code)] // The contract above.
    unsafe fn take_each(&self, i: &mut usize, end: usize, f: impl FnMut(usize, Self::Item));

    /// Drops the items from `from` (at most `len()`) on, none of which was taken.
    fn drop_from(&mut self, from: usize);
}

/// Items collected from an iterator into a `Vec` (a `Vec` passed to `map` is used as it
/// is, with no pass over it), each moved out of its place when it is taken.
pub(crate) struct Collected<I> {
    /// The first item of the buffer, which a `Vec` of `capacity` allocated; freed on drop
    /// (`Drop` below), while the items are dropped one by one (taken, or by `drop_from`).
    items: *mut I,
    len: usize,
    capacity: usize,
    shadow: Shadow,
}

impl<I> Collected<I> {
    pub(crate) fn new(items: impl IntoIterator<Item = I>) -> Self {
        // The `Vec` gives up its buffer to this; `Drop` below frees it.
        let mut buffer = std::mem::ManuallyDrop::new(items.into_iter().collect::<Vec<I>>());
        Collected {
            shadow: Shadow::new(buffer.len()),
            items: buffer.as_mut_ptr(),
            len: buffer.len(),
            capacity: buffer.capacity(),
        }
    }
}

#[allow(unsafe_code)] // Frees the buffer: see below.
impl<I> Drop for Collected<I> {
    fn drop(&mut self) {
        // SAFETY: `items` and `capacity` are those of the `Vec` that `new` took apart, whose
        // buffer nothing else frees; length 0, because every item was taken or dropped
        // already (a collection that never reached `drop_from` leaks its items, safely).
        drop(unsafe { Vec::from_raw_parts(self.items, 0, self.capacity) });
    }
}

// SAFETY: the collection owns its items as the `Vec` it holds would (the pointer is into
// that `Vec`'s buffer), so sending it sends the items.
#[allow(unsafe_code)]
unsafe impl<I: Send> Send for Collected<I> {}

// SAFETY: `take_each` reads the items at its own indices of the buffer and changes nothing
// else, so calls over different indices on different threads touch disjoint memory.
#[allow(unsafe_code)]
unsafe impl<I> Items for Collected<I> {
    type Item = I;

    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    unsafe fn take_each(&self, i: &mut usize, end: usize, mut f: impl FnMut(usize, I)) {
        let items = self.items;
        each_index(i, end, |at| {
            self.shadow.reach(at..at + 1);
            // SAFETY: `at < len`, and every item stays in the buffer until it is taken,
            // which the caller does once for `at` and alone.
            f(at, unsafe { items.add(at).read() });
        });
    }

    fn drop_from(&mut self, from: usize) {
        self.shadow.reach(from..self.len);
        // SAFETY: the items from `from` on were not taken, so each is still in the buffer,
        // and `&mut self` means nothing else reaches them; each is dropped once, here.
        unsafe { drop_range(self.items, from..self.len) };
    }
}

/// The numbers of a range, made as they are claimed: item `i` is `start + i`.
pub(crate) struct Counting<N> {
    start: N,
    len: usize,
}

impl<N: crate::RangeItem> Counting<N> {
    pub(crate) fn new(range: Range<N>) -> Self {
        Counting {
            len: crate::ext::distance(&range),
            start: range.start,
        }
    }

    /// The numbers in order, as an iterator (for a map with a task per number).
    pub(crate) fn numbers(self) -> impl Iterator<Item = N> {
        (0..self.len).map(move |i| crate::ext::nth(self.start, i))
    }
}

// SAFETY: `take_each` only reads `start`, which never changes.
#[allow(unsafe_code)]
unsafe impl<N: crate::RangeItem> Items for Counting<N> {
    type Item = N;

    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    unsafe fn take_each(&self, i: &mut usize, end: usize, mut f: impl FnMut(usize, N)) {
        let start = self.start;
        each_index(i, end, |at| f(at, crate::ext::nth(start, at)));
    }

    fn drop_from(&mut self, _from: usize) {}
}

/// What `map`'s runner tasks share: the items, a cursor that hands them out in blocks,
/// the function, and where the values go.
///
/// The items stay where `map` collected them (or, for a range, are made as they are
/// claimed), and the values go straight to their place in the output `map` returns: a
/// runner claims a block by moving the cursor (one atomic compare-and-swap), takes its
/// items in place and writes their values in place, so a block costs no copy and no
/// allocation. Each index is claimed by one runner, which takes its item once and writes
/// its value once. The items no runner claimed drop with the last runner (`Drop` below);
/// the values belong to `map` (see [`Runners::close`]).
pub(crate) struct Runners<S: Items, T, F> {
    /// The items, in order; every item at or past `next` is still there to take.
    items: S,
    /// The first item no runner has claimed yet.
    next: AtomicUsize,
    /// How many runners share the items (the claims are sized by it).
    width: usize,
    f: F,
    /// Where item `i`'s value goes: the buffer of `map`'s output, `total` values long,
    /// which `map` frees or returns only after [`close`](Self::close).
    out: *mut T,
    /// The values' loom cells.
    shadow: Shadow,
    /// How many runners are between a claim and the end of its block (or a refused
    /// claim), with [`CLOSED`] set by `close`: no claim succeeds after it. One atomic, so
    /// that a claim and `close` are ordered by their read-modify-writes on it.
    state: AtomicUsize,
    /// The blocks whose values are all written.
    written: Mutex<Vec<Range<usize>>>,
}

// SAFETY: the items and the values cross threads (hence `S: Send`, `S::Item: Send`,
// `T: Send`); the function is called from every runner (`F: Sync`). The fields that are
// not `Sync` by themselves are the items (a collected buffer behind a raw pointer, whose
// `take_each`es over different indices may run at once: `Items`' contract) and the output
// pointer, and both are reached through `&self` only at an index inside a block that
// exactly one runner claimed (the compare-and-swap in `claim` hands every index out once),
// so no two threads reach the same item or value; `close` keeps `map` from reading or
// freeing the output while a runner is inside a block.
#[allow(unsafe_code)] // See the SAFETY comment above.
unsafe impl<S: Items + Send, T: Send, F: Sync> Sync for Runners<S, T, F> where S::Item: Send {}
// SAFETY: as for `Sync` above; sending the runners sends the items (`S: Send`) and the
// right to write values (`T: Send`).
#[allow(unsafe_code)] // See the SAFETY comment above.
unsafe impl<S: Items + Send, T: Send, F: Send> Send for Runners<S, T, F> {}

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

#[allow(unsafe_code)] // The items and the output: see `each_value`, `write_values`, `Sync` above.
impl<S: Items, T, F> Runners<S, T, F> {
    /// Runners over `items`, at most `width` of them (no more than there are items),
    /// writing the values into `out`'s buffer, which this gives room for them all.
    ///
    /// # Safety
    /// `out` is not moved, grown, freed or read until [`close`](Self::close) returns.
    pub(crate) unsafe fn new(items: S, width: usize, f: F, out: &mut Vec<T>) -> Self {
        let total = items.len();
        out.reserve_exact(total);
        Runners {
            shadow: Shadow::new(total),
            items,
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
        self.items.len()
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

    /// Runs `f` on items `*i..end`, in order, and hands each value to `put` with its index,
    /// moving `*i` past an item before its call.
    ///
    /// # Safety
    /// `*i..end` lies in a block this caller claimed and still holds, and none of it was
    /// taken before.
    #[inline(always)]
    unsafe fn each_value(&self, i: &mut usize, end: usize, mut put: impl FnMut(usize, T))
    where
        F: Fn(S::Item) -> T,
    {
        // SAFETY: `*i..end` is in the claim held, and each index is taken once (`take_each`
        // moves `*i` past it).
        unsafe {
            self.items
                .take_each(i, end, |at, item| put(at, (self.f)(item)));
        }
    }

    /// [`each_value`](Self::each_value), writing each value in its place.
    ///
    /// # Safety
    /// As for `each_value`, and none of `*i..end` was written before.
    #[inline(always)]
    unsafe fn write_values(&self, i: &mut usize, end: usize)
    where
        F: Fn(S::Item) -> T,
    {
        // A copy, so that writing a value (through a pointer that could, as far as the
        // compiler knows, reach `self`) does not make the loop read it again.
        let out = self.out;
        // SAFETY: the caller's promise is `each_value`'s.
        unsafe {
            self.each_value(i, end, |at, value| {
                self.shadow.reach(at..at + 1);
                // SAFETY: `out` has room for `total` values until `close` returns, which
                // it does not while this claim is held; index `at` is this caller's alone
                // and written once.
                out.add(at).write(value)
            });
        }
    }

    /// Drops the values written at `range`.
    ///
    /// # Safety
    /// Every value in `range` was written, is not dropped or read elsewhere, and nobody
    /// else reaches the range (a claim of the caller's, or after `close`).
    unsafe fn drop_values(&self, range: Range<usize>) {
        self.shadow.reach(range.clone());
        // SAFETY: as the caller promises; the range lies within the `total` values.
        unsafe { drop_range(self.out, range) };
    }

    /// One runner's body: claims blocks and runs `f` on their items until none is left or
    /// the task is cancelled (checked between blocks), writing each value in its place.
    /// An item that panics does not stop the runner: it runs the rest of what it claims, as
    /// tasks of their own would, then ends with the first panic, so the task ends as
    /// panicked. After a panic the map fails, so the runner keeps no values: it drops those
    /// of the block it was in and every later one.
    pub(crate) fn run(&self, ctx: &TaskContext)
    where
        F: Fn(S::Item) -> T,
    {
        let mut panic = None;
        while !ctx.is_cancelled() {
            let Some(claim) = self.claim() else {
                break;
            };
            let block = claim.block.clone();
            // The next item to take: moved on before the item's call, so an item whose
            // call panics is not taken again.
            let mut i = block.start;
            // Values are written at `block.start..kept`.
            let mut kept = block.start;
            loop {
                // After a panic the map fails: the values are not kept.
                let keep = panic.is_none();
                // SAFETY (both calls): `i..block.end` lies in the block just claimed and
                // still held, and each call moves `i` past every item it takes; no value
                // in it was written.
                let ran = catch_unwind(AssertUnwindSafe(|| unsafe {
                    if keep {
                        self.write_values(&mut i, block.end);
                    } else {
                        self.each_value(&mut i, block.end, |_, value| drop(value));
                    }
                }));
                match ran {
                    Ok(()) => {
                        if keep {
                            kept = block.end;
                        }
                        break;
                    }
                    Err(payload) => {
                        if keep {
                            // Item `i - 1` panicked; those before it were written.
                            kept = i - 1;
                        }
                        panic.get_or_insert(payload);
                    }
                }
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

impl<S: Items, T, F> Drop for Runners<S, T, F> {
    fn drop(&mut self) {
        // Every runner is gone (this is the last reference), and each took exactly the
        // items it claimed; those from `next` on are still there.
        let unclaimed = self.next.load(Ordering::Acquire).min(self.total());
        self.items.drop_from(unclaimed);
    }
}

/// `map` as up to `width` runner tasks that share the items (see `map`'s docs).
#[allow(unsafe_code)] // The output's length: see the SAFETY comments below.
pub(crate) fn map_runners<E, S, T, F>(
    exec: &E,
    meta: MetaRef,
    items: S,
    width: NonZeroUsize,
    f: F,
) -> Result<Vec<T>, TaskError>
where
    E: Executor + ?Sized,
    S: Items + Send + 'static,
    S::Item: Send,
    T: Send + 'static,
    F: Fn(S::Item) -> T + Send + Sync + 'static,
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
struct Closing<'a, S: Items, T, F>(&'a Runners<S, T, F>);

impl<S: Items, T, F> Drop for Closing<'_, S, T, F> {
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
                    Collected::new((0..items).map(|i| Counted(i, drops.clone()))),
                    2,
                    |item: Counted| drop(item),
                    &mut out,
                )
            };
            let mut taken = 0;
            for _ in 0..blocks {
                let Some(claim) = runners.claim() else { break };
                let mut i = claim.block.start;
                // SAFETY: the block was just claimed, and each item is taken once.
                unsafe {
                    runners.items.take_each(&mut i, claim.block.end, |_, item| {
                        (runners.f)(item);
                        taken += 1;
                    });
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
                Counting::new(0..100u32),
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
