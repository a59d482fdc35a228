//! The worker: claims stored calls of the names it knows, runs them on its slot threads
//! with [`Tasks`], and records their ends in group commits, renewing its leases.

use crate::backend::kind_name;
use crate::store::{Claimed, Durability, Outcome, Store};
use crossbeam_channel::RecvTimeoutError;
use durable_testing::WorkerControl;
use executor_core::BoxError;
use named_tasks::wire::{ErrorKind, Reply, Request};
use named_tasks::{Codec, Tasks};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a worker runs.
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) slots: usize,
    pub(crate) poll: Duration,
}

/// How long a drain waits for running tasks before it gives them back to the queue.
const DRAIN_GRACE: Duration = Duration::from_secs(60);

fn run_one(tasks: &Tasks, c: &Claimed) -> Outcome {
    let Some(codec) = Codec::from_name(&c.codec) else {
        return Outcome::Failed {
            error: format!("the worker does not know codec '{}'", c.codec),
            kind: kind_name(ErrorKind::BadCodec),
            permanent: true,
        };
    };
    let req = Request {
        id: c.id as u64,
        attempt: c.attempt,
        name: c.name.clone(),
        codec,
        payload: c.payload.clone(),
    };
    match tasks.handle(&req) {
        Reply::Ok { payload, .. } => Outcome::Succeeded(payload),
        Reply::Err { kind, message, .. } => Outcome::Failed {
            error: message,
            kind: kind_name(kind),
            // Retrying cannot fix arguments that do not decode or a missing task.
            permanent: matches!(
                kind,
                ErrorKind::BadArgs | ErrorKind::UnknownTask | ErrorKind::BadCodec
            ),
        },
    }
}

pub(crate) fn run(
    path: &Path,
    durability: Durability,
    s: Settings,
    tasks: Tasks,
    control: &WorkerControl,
) -> Result<(), BoxError> {
    let mut store = Store::open(path, durability)?;
    let owner = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let names = serde_json::to_string(&tasks.names().collect::<Vec<_>>())?;
    let tasks = Arc::new(tasks);
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Claimed>();
    let (out_tx, out_rx) = crossbeam_channel::unbounded::<(Claimed, Outcome)>();
    for i in 0..s.slots {
        let (tasks, job_rx, out_tx) = (tasks.clone(), job_rx.clone(), out_tx.clone());
        std::thread::Builder::new()
            .name(format!("sqlite-worker-{i}"))
            .spawn(move || {
                for c in job_rx {
                    let outcome = run_one(&tasks, &c);
                    if out_tx.send((c, outcome)).is_err() {
                        break;
                    }
                }
            })?;
    }
    drop(out_tx);
    let mut flights: HashMap<(i64, u32), Claimed> = HashMap::new();
    let mut ended: Vec<(Claimed, Outcome)> = Vec::new();
    let mut last_renew = Instant::now();
    let mut last_reap = Instant::now() - s.lease;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        // A killed worker writes nothing more; its slot threads end after their task.
        if control.is_killed() {
            return Ok(());
        }
        ended.extend(out_rx.try_iter());
        if !ended.is_empty() {
            for (c, _) in &ended {
                flights.remove(&(c.id, c.attempt));
            }
            store.finish(&owner, &ended)?;
            ended.clear();
        }
        if last_renew.elapsed() >= s.lease / 3 {
            store.renew(&owner, s.lease)?;
            last_renew = Instant::now();
        }
        if control.is_stopping() {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
            if flights.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let left: Vec<Claimed> = flights.drain().map(|(_, c)| c).collect();
                store.release(&owner, &left)?;
                return Ok(());
            }
        } else {
            if last_reap.elapsed() >= s.lease / 2 {
                store.requeue_expired()?;
                last_reap = Instant::now();
            }
            let free = s.slots.saturating_sub(flights.len());
            if free > 0 {
                let claimed = store.claim(&owner, &names, free, s.lease)?;
                let full = claimed.len() == free;
                for c in claimed {
                    flights.insert((c.id, c.attempt), c.clone());
                    job_tx
                        .send(c)
                        .map_err(|_| "the worker's slot threads are gone")?;
                }
                if full && !flights.is_empty() && free == s.slots {
                    continue;
                }
            }
        }
        match out_rx.recv_timeout(s.poll.max(Duration::from_millis(1))) {
            Ok(d) => ended.push(d),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err("the worker's slot threads are gone".into());
            }
        }
    }
}
