//! [`Versions`]: every version of a value that is replaced whole (the compiled routes),
//! kept until its owner drops, so that reading the version in force costs a few loads
//! and no reference count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// One bucket per bit of an index: bucket `k` holds `2^k` versions, so version `i` sits
/// in bucket `log2(i + 1)`, and the buckets never move once made.
const BUCKETS: usize = usize::BITS as usize;

/// The versions of a value, append-only, and which one is in force (the last added).
///
/// A reader gets a plain `&T` that lives as long as the `Versions`: no version is ever
/// dropped before the whole store is, so nothing needs counting per read (the supervisor
/// used `arc-swap`, whose load and guard cost about 60 instructions per task). The price
/// is memory: every version stays until the owner drops (for the supervisor, one compiled
/// table per reload, as it already kept every executor a reload retired).
pub(crate) struct Versions<T> {
    buckets: [OnceLock<Box<[OnceLock<T>]>>; BUCKETS],
    /// The index of the version in force.
    current: AtomicUsize,
    /// How many versions there are; held while one is added.
    len: Mutex<usize>,
}

/// Where version `i` sits: its bucket and its place in it.
#[inline]
fn place(i: usize) -> (usize, usize) {
    let n = i + 1;
    let bucket = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (bucket, n - (1 << bucket))
}

impl<T> Versions<T> {
    /// A store whose first version, in force, is `first`.
    pub(crate) fn new(first: T) -> Self {
        let versions = Versions {
            buckets: std::array::from_fn(|_| OnceLock::new()),
            current: AtomicUsize::new(0),
            len: Mutex::new(0),
        };
        versions.push(first);
        versions
    }

    /// Adds `value` and puts it in force; readers see it from their next
    /// [`current`](Self::current) on.
    pub(crate) fn push(&self, value: T) {
        let mut len = self.len.lock().unwrap_or_else(|e| e.into_inner());
        let i = *len;
        let (bucket, at) = place(i);
        let slots = self.buckets[bucket]
            .get_or_init(|| (0..1usize << bucket).map(|_| OnceLock::new()).collect());
        if slots[at].set(value).is_err() {
            unreachable!("version {i} was added twice");
        }
        *len = i + 1;
        // Release: a reader that loads this index finds the version set above.
        self.current.store(i, Ordering::Release);
    }

    /// The version in force.
    #[inline]
    pub(crate) fn current(&self) -> &T {
        let (bucket, at) = place(self.current.load(Ordering::Acquire));
        match self.buckets[bucket].get().and_then(|slots| slots[at].get()) {
            Some(v) => v,
            None => unreachable!("the version in force is always set before its index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn places_fill_each_bucket_in_order() {
        let places: Vec<_> = (0..7).map(place).collect();
        assert_eq!(
            places,
            [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (2, 3)]
        );
        assert_eq!(
            place(usize::MAX - 1),
            (BUCKETS - 1, (1 << (BUCKETS - 1)) - 1)
        );
    }

    #[test]
    fn the_last_version_added_is_in_force_and_older_ones_stay_readable() {
        let versions = Versions::new(0usize);
        let first = versions.current();
        for v in 1..100 {
            versions.push(v);
            assert_eq!(*versions.current(), v);
        }
        assert_eq!(*first, 0, "a reader's version outlives later versions");
    }

    #[test]
    fn readers_on_other_threads_see_each_version_whole() {
        let versions = Arc::new(Versions::new(vec![0u32; 16]));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let versions = versions.clone();
                std::thread::spawn(move || {
                    let mut last = 0;
                    while last < 200 {
                        let v = versions.current();
                        assert!(v.iter().all(|x| *x == v[0]), "a torn version");
                        assert!(v[0] >= last, "versions went back");
                        last = v[0];
                    }
                })
            })
            .collect();
        for n in 1..=200 {
            versions.push(vec![n; 16]);
        }
        for r in readers {
            r.join().unwrap();
        }
    }
}
