//! The in-process meeting point of everything that opens one queue file: one [`Hub`] per
//! canonical path, shared by this process's executors and workers on that file.
//!
//! Through it a worker hands the ends it records straight to the executors waiting for
//! them, an executor that stored calls wakes the workers at once, and writers of one
//! process take turns on a mutex instead of meeting on SQLite's busy handler (which
//! sleeps). Other processes on the same file are still served by polling, which backs
//! off while it finds nothing.

use crate::store::Stored;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A task that ended, as its waiting handles need it.
#[derive(Clone, Debug)]
pub(crate) struct Ended {
    pub(crate) id: i64,
    pub(crate) state: Stored,
    pub(crate) result: Option<Vec<u8>>,
    pub(crate) last_error: Option<String>,
    pub(crate) last_kind: Option<String>,
}

/// What one process shares about one queue file.
#[derive(Default)]
pub(crate) struct Hub {
    /// Taken around every write transaction of this process on the file.
    write: Mutex<()>,
    /// The executors of this process on the file: where ended tasks go.
    sinks: Mutex<Vec<Sender<Vec<Ended>>>>,
    /// The workers of this process on the file: told when tasks were stored.
    wakers: Mutex<Vec<Sender<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static HUBS: Mutex<Option<HashMap<PathBuf, Weak<Hub>>>> = Mutex::new(None);

impl Hub {
    /// The hub of the queue file at `path` (which exists: the store opened it).
    pub(crate) fn of(path: &Path) -> Arc<Hub> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut hubs = lock(&HUBS);
        let hubs = hubs.get_or_insert_with(HashMap::new);
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            return hub;
        }
        hubs.retain(|_, h| h.strong_count() > 0);
        let hub = Arc::new(Hub::default());
        hubs.insert(key, Arc::downgrade(&hub));
        hub
    }

    /// This process's turn to write (held for one transaction).
    pub(crate) fn writing(&self) -> MutexGuard<'_, ()> {
        lock(&self.write)
    }

    /// An executor's inbox of ended tasks.
    pub(crate) fn sink(&self) -> Receiver<Vec<Ended>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.sinks).push(tx);
        rx
    }

    /// A worker's doorbell: rings (at most one pending ring) when tasks were stored.
    pub(crate) fn doorbell(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.wakers).push(tx);
        rx
    }

    /// Hands ended tasks to every executor of this process on the file.
    pub(crate) fn ended(&self, ended: Vec<Ended>) {
        if ended.is_empty() {
            return;
        }
        let mut sinks = lock(&self.sinks);
        // An executor that is gone has dropped its inbox: the send fails, it leaves.
        if let [only] = &sinks[..] {
            if only.send(ended).is_err() {
                sinks.clear();
            }
            return;
        }
        sinks.retain(|s| s.send(ended.clone()).is_ok());
    }

    /// Wakes every worker of this process on the file: tasks were stored.
    pub(crate) fn stored(&self) {
        let mut wakers = lock(&self.wakers);
        wakers.retain(|w| !matches!(w.try_send(()), Err(TrySendError::Disconnected(_))));
    }
}
