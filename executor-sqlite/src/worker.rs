//! The worker: claims stored calls of the names it knows, runs them on its slot threads
//! with [`Tasks`], and records their ends in group commits, renewing its leases.

use crate::backend::kind_name;
use crate::hub::{Ended, Hub};
use crate::store::{ClaimSpec, Claimed, Durability, Lease, Outcome, Store, Stored, now_ms};
use durable_testing::WorkerControl;
use executor_core::BoxError;
use named_tasks::wire::{ErrorKind, Reply, Request};
use named_tasks::{Codec, Tasks};
use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a worker runs.
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) slots: usize,
    pub(crate) poll: Duration,
}

/// How long a drain waits for running tasks before it gives them back to the queue.
const DRAIN_GRACE: Duration = Duration::from_secs(60);

fn run_one(tasks: &Tasks, c: Claimed) -> Outcome {
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
        name: c.name,
        codec,
        payload: c.payload,
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

/// The claimed tasks waiting for a slot thread. At most one wake-up is on its way at
/// a time: a slot thread that takes a task and sees more left wakes the next only when
/// none is being woken already, and a slot thread that finished its task takes the next
/// without sleeping. Short tasks then run on the few threads that are awake instead of
/// costing a wake-up each, and long ones still spread over every slot.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    more: Condvar,
}

#[derive(Default)]
struct QueueState {
    tasks: VecDeque<Claimed>,
    /// The worker stopped: slot threads end once no task is left.
    closed: bool,
    /// Slot threads asleep in `pop`.
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a slot thread.
    waking: usize,
}

impl QueueState {
    /// Whether to send a wake-up now (and count it).
    fn wake_one(&mut self) -> bool {
        let wake = !self.tasks.is_empty() && self.waking == 0 && self.sleeping > self.waking;
        if wake {
            self.waking += 1;
        }
        wake
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, tasks: Vec<Claimed>) {
        if tasks.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.tasks.extend(tasks);
        let wake = state.wake_one();
        drop(state);
        if wake {
            self.more.notify_one();
        }
    }

    /// The next task, or `None` once the worker stopped and none is left.
    fn pop(&self) -> Option<Claimed> {
        let mut state = self.lock();
        loop {
            if let Some(c) = state.tasks.pop_front() {
                let wake = state.wake_one();
                drop(state);
                if wake {
                    self.more.notify_one();
                }
                return Some(c);
            }
            if state.closed {
                return None;
            }
            state.sleeping += 1;
            state = self.more.wait(state).unwrap_or_else(|e| e.into_inner());
            state.sleeping -= 1;
            state.waking = state.waking.saturating_sub(1);
        }
    }
}

/// Closes the queue when the worker returns.
struct Closer(Arc<Queue>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.more.notify_all();
    }
}

/// How long the worker, woken by an end while other tasks run, waits for more ends to
/// record in the same round.
const GATHER: Duration = Duration::from_micros(250);

/// The longest an idle worker waits before it looks at the queue again (polling backs
/// off to this while it finds nothing; stores of this process wake it at once).
pub(crate) const MAX_IDLE_POLL: Duration = Duration::from_millis(50);

/// What the worker's own commits tell this process's executors: the ends it recorded.
fn ends(done: &mut Vec<(Lease, Outcome)>, recorded: &[bool]) -> Vec<Ended> {
    done.drain(..)
        .zip(recorded)
        .filter(|(_, r)| **r)
        .filter_map(|((c, outcome), _)| match outcome {
            Outcome::Succeeded(value) => Some(Ended {
                id: c.id,
                state: Stored::Succeeded,
                result: Some(value),
                last_error: None,
                last_kind: None,
            }),
            Outcome::Failed {
                error,
                kind,
                permanent,
            } if permanent || c.attempt >= c.max_attempts => Some(Ended {
                id: c.id,
                state: Stored::Dead,
                result: None,
                last_error: Some(error),
                last_kind: Some(kind.to_owned()),
            }),
            Outcome::Failed { .. } => None,
        })
        .collect()
}

pub(crate) fn run(
    path: &Path,
    durability: Durability,
    s: Settings,
    tasks: Tasks,
    control: &WorkerControl,
) -> Result<(), BoxError> {
    let hub = Hub::of(path, durability)?;
    // Writes go through the hub's connection; this one only looks for work when polling.
    let reader = Store::open(path, durability)?;
    let doorbell = hub.doorbell();
    let owner = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let names = serde_json::to_string(&tasks.names().collect::<Vec<_>>())?;
    let tasks = Arc::new(tasks);
    let queue = Arc::new(Queue::default());
    // Ends the slot threads (after the tasks already handed to them) however we return.
    let _close = Closer(queue.clone());
    let (out_tx, out_rx) = crossbeam_channel::unbounded::<(Lease, Outcome)>();
    for i in 0..s.slots {
        let (tasks, queue, out_tx) = (tasks.clone(), queue.clone(), out_tx.clone());
        std::thread::Builder::new()
            .name(format!("sqlite-worker-{i}"))
            .spawn(move || {
                while let Some(c) = queue.pop() {
                    let lease = c.lease();
                    let outcome = run_one(&tasks, c);
                    if out_tx.send((lease, outcome)).is_err() {
                        break;
                    }
                }
            })?;
    }
    drop(out_tx);
    let poll = s.poll.max(Duration::from_micros(100));
    let mut flights: HashSet<(i64, u32)> = HashSet::new();
    let mut ended: Vec<(Lease, Outcome)> = Vec::new();
    let mut last_renew = Instant::now();
    let mut last_reap = Instant::now() - s.lease;
    let mut drain_deadline: Option<Instant> = None;
    // Whether there may be runnable tasks: at start, after a doorbell, after a full claim.
    let mut hint = true;
    // The next look at the queue when nothing rings (backs off while it finds nothing).
    let mut idle = poll;
    let mut next_look = Instant::now();
    loop {
        // A killed worker writes nothing more; its slot threads end after their task.
        if control.is_killed() {
            return Ok(());
        }
        ended.extend(out_rx.try_iter());
        for (c, _) in &ended {
            flights.remove(&(c.id, c.attempt));
        }
        let stopping = control.is_stopping();
        let free = s.slots.saturating_sub(flights.len());
        let now = Instant::now();
        let mut claim = !stopping && free > 0 && (hint || now >= next_look);
        if claim && !hint && ended.is_empty() {
            // A poll, not a ring: look before taking the write lock.
            claim = reader.ready(&names)?;
            if !claim {
                idle = (idle * 2).min(MAX_IDLE_POLL);
                next_look = now + idle;
            }
        }
        if !ended.is_empty() || claim {
            let spec = claim.then_some(ClaimSpec {
                names: &names,
                n: free,
                lease: s.lease,
            });
            let round = hub.store().round(&owner, &ended, spec)?;
            hub.ended(ends(&mut ended, &round.recorded));
            if let Some(at) = round.next_retry {
                let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                next_look = next_look.min(Instant::now() + wait);
            }
            if claim {
                let got = round.claimed.len();
                // A full claim: more may wait. Anything claimed: poll eagerly again.
                hint = got == free;
                if got > 0 {
                    idle = poll;
                    next_look = Instant::now() + idle;
                } else {
                    idle = (idle * 2).min(MAX_IDLE_POLL);
                    next_look = Instant::now() + idle;
                }
                flights.extend(round.claimed.iter().map(|c| (c.id, c.attempt)));
                queue.push(round.claimed);
            }
        }
        if last_renew.elapsed() >= s.lease / 3 {
            hub.store().renew(&owner, s.lease)?;
            last_renew = Instant::now();
        }
        if stopping {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE);
            if flights.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let left: Vec<(i64, u32)> = flights.drain().collect();
                hub.store().release(&owner, &left)?;
                return Ok(());
            }
        } else if last_reap.elapsed() >= s.lease / 2 {
            hub.store().requeue_expired()?;
            last_reap = Instant::now();
            hint = true;
        }
        if hint && flights.len() < s.slots && !stopping {
            continue;
        }
        // Wait for an end, a ring, the next look, the next renewal, or a drain's check.
        let renew_at = last_renew + s.lease / 3;
        let mut until = renew_at.min(next_look);
        if stopping || flights.len() >= s.slots {
            until = renew_at.min(Instant::now() + MAX_IDLE_POLL);
        }
        let timeout = until
            .saturating_duration_since(Instant::now())
            .min(MAX_IDLE_POLL);
        crossbeam_channel::select! {
            recv(out_rx) -> d => match d {
                Ok(d) => {
                    ended.push(d);
                    // Let the round gather the ends of tasks finishing right now: one
                    // commit for many ends, not one for each.
                    let until = Instant::now() + GATHER;
                    while ended.len() < flights.len() {
                        match out_rx.recv_deadline(until) {
                            Ok(d) => ended.push(d),
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => return Err("the worker's slot threads are gone".into()),
            },
            recv(doorbell) -> _ => {
                hint = true;
                idle = poll;
            },
            default(timeout) => {}
        }
    }
}
