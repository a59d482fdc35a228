//! The receivers' record of idempotency keys: stored ones, and ones being stored now.
//!
//! A receiver reserves a key under a short lock, writes and fsyncs its record outside the
//! lock (so many deliveries share the disk's time instead of queueing behind one lock),
//! then marks the key stored. A second delivery of a key that is still being written is
//! told to come back later rather than stored twice.

use std::collections::HashSet;
use std::sync::Mutex;

/// What a reservation found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserve {
    /// New key, now reserved: store the effect, then call [`Keys::finish`].
    Fresh,
    /// Already stored: acknowledge without storing.
    Stored,
    /// Another delivery of this key is being stored right now: ask to retry.
    Busy,
}

/// Keys stored and keys being stored, behind one mutex.
#[derive(Default)]
pub struct Keys {
    inner: Mutex<(HashSet<String>, HashSet<String>)>,
}

impl Keys {
    /// A record that already holds `stored` (rebuilt from disk at start).
    pub fn new(stored: HashSet<String>) -> Keys {
        Keys {
            inner: Mutex::new((stored, HashSet::new())),
        }
    }

    /// Reserves `key` for storing.
    pub fn reserve(&self, key: &str) -> Reserve {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (stored, pending) = &mut *g;
        if stored.contains(key) {
            Reserve::Stored
        } else if !pending.insert(key.to_string()) {
            Reserve::Busy
        } else {
            Reserve::Fresh
        }
    }

    /// Ends a reservation: the key is stored if `ok`, free again otherwise.
    pub fn finish(&self, key: &str, ok: bool) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (stored, pending) = &mut *g;
        pending.remove(key);
        if ok {
            stored.insert(key.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_store_and_release() {
        let k = Keys::new(["old".to_string()].into_iter().collect());
        assert_eq!(k.reserve("old"), Reserve::Stored);
        assert_eq!(k.reserve("a"), Reserve::Fresh);
        assert_eq!(k.reserve("a"), Reserve::Busy);
        k.finish("a", false);
        assert_eq!(k.reserve("a"), Reserve::Fresh);
        k.finish("a", true);
        assert_eq!(k.reserve("a"), Reserve::Stored);
    }
}
