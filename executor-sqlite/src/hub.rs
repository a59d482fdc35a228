//! The in-process meeting point of everything that opens one queue file: one [`Hub`] per
//! canonical path, shared by this process's executors and workers on that file.
//!
//! Through it a worker hands the ends it records straight to the executors waiting for
//! them, and an executor that stored calls wakes the workers at once. Other processes on
//! the same file are still served by polling, which backs off while it finds nothing.
//!
//! Every write of the process goes through the hub's one connection, taken in turns: a
//! connection's page cache is dropped whenever another connection wrote, so two writers
//! of one process alternating would each start every transaction cold; and turns on a
//! mutex never meet SQLite's busy handler (which sleeps).

use crate::backend::lock;
use crate::store::{Durability, Store, Stored};
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
pub(crate) struct Hub {
    /// The process's writing connection: its lock is the turn to write.
    writer: Mutex<Store>,
    /// The executors of this process on the file: where ended tasks go.
    sinks: Mutex<Vec<Sender<Vec<Ended>>>>,
    /// The workers of this process on the file: told when tasks were stored.
    wakers: Mutex<Vec<Sender<()>>>,
}

static HUBS: Mutex<Option<HashMap<PathBuf, Weak<Hub>>>> = Mutex::new(None);

impl Hub {
    /// The hub of the queue file at `path`, opening (and creating) the file if this
    /// process has no hub for it yet. `Full` durability asked by anyone holds for all.
    pub(crate) fn of(path: &Path, durability: Durability) -> rusqlite::Result<Arc<Hub>> {
        let mut opened = None;
        let key = match std::fs::canonicalize(path) {
            Ok(k) => k,
            Err(_) => {
                opened = Some(Store::open(path, durability)?);
                std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
            }
        };
        let mut hubs = lock(&HUBS);
        let hubs = hubs.get_or_insert_with(HashMap::new);
        if let Some(hub) = hubs.get(&key).and_then(Weak::upgrade) {
            if durability == Durability::Full {
                hub.store().make_full()?;
            }
            return Ok(hub);
        }
        hubs.retain(|_, h| h.strong_count() > 0);
        let writer = match opened {
            Some(s) => s,
            None => Store::open(path, durability)?,
        };
        let hub = Arc::new(Hub {
            writer: Mutex::new(writer),
            sinks: Mutex::default(),
            wakers: Mutex::default(),
        });
        hubs.insert(key, Arc::downgrade(&hub));
        Ok(hub)
    }

    /// The process's writing connection, for one transaction (or a few statements).
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.writer)
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
