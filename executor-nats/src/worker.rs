//! [`Worker`]: the running side. Binds the consumers of the task names its registry
//! knows and runs what they deliver, with leases, retries, dead letters and drain.

use crate::NatsError;
use crate::envelope::Envelope;
use crate::names::{self, Names};
use crate::runners::{NUDGE_AFTER, Runners};
use crate::server::Server;
use crate::stored::{Ended, Stored};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message as JsMessage, kv};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use named_tasks::Tasks;
use named_tasks::wire::{ErrorKind, Message, Reply, Request};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Configures a [`Worker`].
#[derive(Debug)]
pub struct WorkerBuilder {
    url: String,
    prefix: String,
    tasks: Tasks,
    parallel: usize,
    ack_wait: Duration,
    limits: BTreeMap<String, i64>,
    key_limits: BTreeMap<String, usize>,
}

impl WorkerBuilder {
    /// The server (default `nats://127.0.0.1:4222`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The deployment's prefix (default `switchyard`), as on the submitters.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Tasks this worker runs at once (default 4), each on a thread of its pool.
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// The lease: a task not acknowledged (nor extended) within it is delivered again
    /// (default 30s). Applies when this worker creates the consumer.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// At most `n` tasks called `name` run at once across **all** workers (the
    /// consumer's `max_ack_pending`; the worker that creates the consumer sets it: give
    /// every worker the same limits).
    pub fn limit(mut self, name: impl Into<String>, n: usize) -> Self {
        self.limits
            .insert(name.into(), i64::try_from(n.max(1)).unwrap_or(i64::MAX));
        self
    }

    /// At most `n` tasks called `name` with the same key (`Task::call_keyed`) run at
    /// once across **all** workers that set this limit (give every worker the same).
    ///
    /// The holders of a key are a list in the results bucket (`l.NAME.KEY`), changed
    /// only by compare-and-set; each entry expires a lease after its last renewal, so a
    /// killed worker's places come back. A delivery whose key is full waits for a place
    /// (holding its worker slot and extending its lease meanwhile).
    pub fn key_limit(mut self, name: impl Into<String>, n: usize) -> Self {
        self.key_limits.insert(name.into(), n.max(1));
        self
    }

    /// The worker, not yet connected.
    pub fn build(self) -> Worker {
        Worker { b: self }
    }
}

/// How a worker stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Claim nothing more, finish and acknowledge what runs, then return.
    Drain,
    /// Return at once and write nothing more, as a killed process would: the tasks it
    /// held come back to other workers after their lease.
    Kill,
}

/// How a worker's run went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks this worker ran to a result (success or the task's final error).
    pub completed: u64,
    /// Attempts that failed and were handed back for a retry.
    pub retried: u64,
    /// Tasks this worker dead-lettered.
    pub dead: u64,
    /// Deliveries acknowledged without running: the result existed already, or the task
    /// was cancelled by id.
    pub skipped: u64,
}

#[derive(Default)]
struct Counts {
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    skipped: AtomicU64,
}

/// The running side of the NATS backend: runs the tasks its registry knows, for any
/// number of submitters.
///
/// ```no_run
/// # static RESIZE: named_tasks::Task<u32, u32> = named_tasks::Task::new("r", |_, x| Ok(x));
/// let worker = executor_nats::Worker::builder(named_tasks::Tasks::new().with(&RESIZE))
///     .url("nats://127.0.0.1:4222")
///     .build();
/// worker.run_until_signal()?; // SIGTERM: finishes what runs, then returns
/// # Ok::<(), executor_nats::NatsError>(())
/// ```
pub struct Worker {
    b: WorkerBuilder,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.b.fmt(f)
    }
}

impl Worker {
    /// A worker for `tasks`.
    pub fn builder(tasks: Tasks) -> WorkerBuilder {
        WorkerBuilder {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "switchyard".into(),
            tasks,
            parallel: 4,
            ack_wait: Duration::from_secs(30),
            limits: BTreeMap::new(),
            key_limits: BTreeMap::new(),
        }
    }

    /// Runs until SIGTERM or SIGINT, then drains: claims nothing more, lets running
    /// tasks finish and be acknowledged, and returns.
    pub fn run_until_signal(self) -> Result<WorkerReport, NatsError> {
        self.run(async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        })
    }

    /// Runs until `stop` completes, then drains as [`run_until_signal`](Self::run_until_signal).
    pub fn run(self, stop: impl Future<Output = ()>) -> Result<WorkerReport, NatsError> {
        self.run_with(async {
            stop.await;
            Stop::Drain
        })
    }

    /// Runs until `stop` completes, then drains or stops dead as it says.
    pub fn run_with(self, stop: impl Future<Output = Stop>) -> Result<WorkerReport, NatsError> {
        let rt = crate::server::runtime("nats-worker")?;
        let out = rt.block_on(self.serve(stop));
        // A killed worker's tasks may still run on its threads: do not wait for them.
        rt.shutdown_background();
        out
    }

    async fn serve(self, stop: impl Future<Output = Stop>) -> Result<WorkerReport, NatsError> {
        let b = self.b;
        let names = Names::new(&b.prefix).map_err(|e| NatsError::new("config", e))?;
        let server = patiently(|| Server::connect(&b.url, names.clone())).await?;
        let shared = Arc::new(Running {
            server,
            tasks: b.tasks,
            counts: Counts::default(),
            ack_wait: b.ack_wait,
            key_limits: b.key_limits,
            killed: AtomicBool::new(false),
            cancelled: Mutex::new(HashSet::new()),
            runners: Runners::new("nats-task", b.parallel),
        });
        // Every cancel made so far is known before the first claim.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let follower = tokio::spawn(follow_cancels(shared.clone(), ready_tx));
        if ready_rx.await.is_err() {
            return Err(NatsError::new(
                "following the cancels",
                "the server did not answer within 30 s",
            ));
        }
        let permits = Arc::new(Semaphore::new(b.parallel));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (claimed, deliveries) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(shared.clone(), deliveries));
        let mut loops = Vec::new();
        for name in shared.tasks.names() {
            let names = &shared.server.names;
            let config = pull::Config {
                durable_name: Some(names.consumer(name)),
                filter_subject: names.subject(name),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: b.ack_wait,
                max_ack_pending: b.limits.get(name).copied().unwrap_or(10_000),
                ..Default::default()
            };
            let what = format!("consumer for {name}");
            let consumer = patiently(|| async {
                let tasks = &shared.server.tasks;
                tasks
                    .get_or_create_consumer(&names.consumer(name), config.clone())
                    .await
                    .map_err(|e| NatsError::new(what.clone(), e))
            })
            .await?;
            loops.push(tokio::spawn(claim(
                consumer,
                shared.clone(),
                permits.clone(),
                b.parallel,
                stop_rx.clone(),
                claimed.clone(),
            )));
        }
        drop(claimed);
        let how = stop.await;
        if how == Stop::Kill {
            shared.killed.store(true, Ordering::SeqCst);
        }
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
        follower.abort();
        if how == Stop::Drain {
            // Drain: every permit back means every running task has been acknowledged.
            let _ = permits
                .acquire_many(u32::try_from(b.parallel).unwrap_or(u32::MAX))
                .await;
            let _ = driver.await;
        }
        let c = &shared.counts;
        Ok(WorkerReport {
            completed: c.completed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dead: c.dead.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
        })
    }
}

struct Running {
    server: Server,
    tasks: Tasks,
    counts: Counts,
    ack_wait: Duration,
    key_limits: BTreeMap<String, usize>,
    /// Set by [`Stop::Kill`]: write nothing more.
    killed: AtomicBool,
    /// Ids cancelled by id, from the cancels bucket ([`follow_cancels`]).
    cancelled: Mutex<HashSet<String>>,
    /// The threads tasks run on.
    runners: Runners,
}

impl Running {
    fn dead(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    fn is_cancelled(&self, id: &str) -> bool {
        self.cancelled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }
}

/// Keeps `shared.cancelled` up to date with the cancels bucket: one watch with history
/// (made again, from the start, when it ends, e.g. across a server restart). `ready`
/// fires once every cancel that existed when the watch was made is in the set (before
/// that, the worker claims nothing); dropped unfired if the server did not answer
/// within [`START_PATIENCE`].
async fn follow_cancels(shared: Arc<Running>, ready: tokio::sync::oneshot::Sender<()>) {
    let cancels = &shared.server.cancels;
    let mut ready = Some(ready);
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        // How many cancels exist: none means the watch is current from the start.
        let made = async {
            let existing = cancels
                .status()
                .await
                .map_err(|e| e.to_string())?
                .info
                .state
                .messages;
            let watch = cancels
                .watch_with_history(">")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((existing, watch))
        }
        .await;
        let (existing, mut watch) = match made {
            Ok(m) => m,
            Err(e) => {
                if ready.is_some() && tokio::time::Instant::now() >= give_up {
                    return; // `ready` dropped: the worker does not start
                }
                tracing::warn!("nats worker: following the cancels: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if existing == 0
            && let Some(r) = ready.take()
        {
            let _ = r.send(());
        }
        while let Some(entry) = watch.next().await {
            match entry {
                Ok(entry) => {
                    let mut cancelled = shared.cancelled.lock().unwrap_or_else(|e| e.into_inner());
                    if entry.operation == kv::Operation::Put {
                        cancelled.insert(entry.key);
                    } else {
                        // Dropped once the task was acknowledged (`acknowledge`).
                        cancelled.remove(&entry.key);
                    }
                    drop(cancelled);
                    if (entry.seen_current || entry.delta == 0)
                        && let Some(r) = ready.take()
                    {
                        let _ = r.send(());
                    }
                }
                Err(e) => {
                    tracing::warn!("nats worker: following the cancels: {e}");
                    break;
                }
            }
        }
    }
}

/// Claims one consumer's messages while permits allow, until told to stop: as many as
/// there are free permits (up to `batch`; with fewer than an eighth of them free,
/// after [`GATHER`]) in one fetch that does not wait; when that
/// finds nothing, one fetch that waits up to a second for the next message, holding one
/// permit, so an idle worker sends one request a second per task name.
async fn claim(
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    shared: Arc<Running>,
    permits: Arc<Semaphore>,
    batch: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
    claimed: tokio::sync::mpsc::UnboundedSender<Claimed>,
) {
    let mut idle = false;
    // A fetch costs the server about as much as several messages: unless idle, with
    // fewer than an eighth of the slots free, give running tasks a moment to free more.
    let least = (batch / 8).max(1);
    loop {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        if !idle && permits.available_permits() + 1 < least {
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let mut held = vec![first];
        if !idle {
            while held.len() < batch {
                match permits.clone().try_acquire_owned() {
                    Ok(p) => held.push(p),
                    Err(_) => break,
                }
            }
        }
        // A message in hand is a running lease: fetch no more than can start now.
        let n = held.len();
        let fetched = tokio::select! {
            b = async {
                if idle {
                    consumer.batch().max_messages(1).expires(Duration::from_secs(1)).messages().await
                } else {
                    consumer.fetch().max_messages(n).messages().await
                }
            } => b,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("nats worker: fetch failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut got = 0;
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                // A pull request the server forgot (it restarted while the request was
                // open) never ends by itself: past its expiry, ask again.
                _ = tokio::time::sleep(FETCH_STALL) => None,
                _ = stop.wait_for(|s| *s) => None,
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!("nats worker: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                None => break,
            };
            got += 1;
            let Some(permit) = held.pop() else {
                // More than asked for (not expected): hand it back.
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            if *stop.borrow() {
                // Claimed while stopping: hand it back at once (a killed worker writes
                // nothing; its lease runs out).
                if !shared.dead() {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                }
                continue;
            }
            if let Err(back) = claimed.send((msg, permit)) {
                // The driver is gone (the worker stops): hand it back.
                let (msg, _permit) = back.0;
                if !shared.dead() {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        // Nothing there: wait for the next message (or wake from the wait's expiry).
        idle = got == 0;
    }
}

/// A claimed delivery and the worker slot it holds.
type Claimed = (JsMessage, tokio::sync::OwnedSemaphorePermit);

/// Runs every claimed delivery of the worker as a future of its own on this one task
/// (no runtime task per delivery), each giving its slot back when it is done; returns
/// once the claim loops are gone and every delivery has finished.
async fn drive(shared: Arc<Running>, mut claimed: tokio::sync::mpsc::UnboundedReceiver<Claimed>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            next = claimed.recv() => match next {
                Some((msg, permit)) => running.push(async {
                    handle(&shared, msg).await;
                    drop(permit);
                }),
                None => break,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// How long a worker with few free slots waits for more before it fetches.
const GATHER: Duration = Duration::from_millis(1);

/// How long a starting worker keeps trying to set up its streams, buckets and consumers.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds, for up to [`START_PATIENCE`]. A worker that starts
/// while its server restarts waits for it rather than exit: its requests time out until
/// the restarted server answers.
async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T, NatsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, NatsError>>,
{
    let give_up = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::warn!("nats worker: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long a fetch may go without a message or its end before the worker gives it up
/// and fetches again (the idle wait's expiry is 1 s).
const FETCH_STALL: Duration = Duration::from_secs(3);

/// One delivery: skip, run, retry or dead-letter, and acknowledge.
async fn handle(shared: &Running, msg: JsMessage) {
    if shared.dead() {
        return;
    }
    let kv = &shared.server.kv;
    let (delivered, published_ms) = msg.info().map_or((1, None), |i| {
        let ms = i.published.unix_timestamp_nanos() / 1_000_000;
        (
            u32::try_from(i.delivered).unwrap_or(u32::MAX),
            u64::try_from(ms).ok(),
        )
    });
    let Some((envelope, body)) = Envelope::unwrap(&msg.payload) else {
        Box::pin(dead_letter(
            shared,
            &msg,
            "?",
            "unknown",
            0,
            "a message without a task envelope (id, attempts, backoff)",
        ))
        .await;
        return;
    };
    let id = envelope.id.to_owned();
    let attempts = envelope.attempts.max(1);
    let backoff = Duration::from_millis(envelope.backoff_ms);
    let key = envelope.key;
    if shared.is_cancelled(&id) {
        // Cancelled by id: its result is "cancelled" unless it ended first (written here
        // too, in case the canceller died between its mark and its result).
        if Box::pin(put_result(shared, &id, &crate::stored::cancelled(&id))).await {
            shared.counts.skipped.fetch_add(1, Ordering::Relaxed);
            acknowledge(shared, &msg, &id).await;
        }
        return;
    }
    // Failed attempts so far (a delivery lost with its worker is not one).
    let failures: u32 = if delivered > 1 {
        match Box::pin(kv.get(names::failures_key(&id))).await {
            Ok(Some(b)) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    } else {
        0
    };
    // Only a delivery after one that ended without a counted failure (its worker died
    // between the task's result and its ack), or an idempotency key's task (which may
    // have ended under an earlier message), can find its result stored. A first
    // delivery of a fresh id has no result but a cancel's, known above; nor has a retry
    // after failed attempts only. A fresh id's result is looked for from when its
    // message was stored, by the server's clock.
    let lost_before = delivered > 1 && failures.saturating_add(1) < delivered;
    if (lost_before || names::is_keyed(&id))
        && matches!(
            Box::pin(shared.server.outcomes.first(&id, published_ms)).await,
            Ok(Some(_))
        )
    {
        shared.counts.skipped.fetch_add(1, Ordering::Relaxed);
        acknowledge(shared, &msg, &id).await;
        return;
    }
    let request = match Message::decode(body) {
        Ok(Message::Request(r)) => r,
        _ => {
            Box::pin(dead_letter(
                shared,
                &msg,
                &id,
                "unknown",
                0,
                "a message that is not a request",
            ))
            .await;
            return;
        }
    };
    if delivered > attempts.saturating_mul(2).saturating_add(2) {
        let why = format!(
            "delivered {delivered} times for {attempts} attempts: the workers running it \
             never answered (killed, or past the lease)"
        );
        Box::pin(finish_dead(
            shared,
            &msg,
            &id,
            &request.name,
            request.id,
            failures,
            &why,
        ))
        .await;
        return;
    }
    // A per-key limit: take a place among the key's holders first.
    let place = match (key, shared.key_limits.get(&request.name)) {
        (Some(key), Some(&limit)) => {
            let place = names::slot_key(&request.name, key);
            if !Box::pin(take_place(shared, &msg, &place, &id, limit)).await {
                return; // killed while waiting
            }
            Some(place)
        }
        _ => None,
    };
    let reply = run_with_lease(shared, &msg, request.clone(), place.as_deref(), &id).await;
    if shared.dead() {
        return; // killed meanwhile: as if this process were gone
    }
    if let Some(place) = &place {
        let _ = Box::pin(edit_places(kv, place, |holders| {
            let before = holders.len();
            holders.retain(|(h, _)| h != &id);
            (true, holders.len() != before)
        }))
        .await;
    }
    let retryable = matches!(
        &reply,
        Reply::Err {
            kind: ErrorKind::Failed | ErrorKind::Panicked,
            ..
        }
    );
    match reply {
        Reply::Err { kind, message, .. } => {
            let failures = failures + 1;
            if retryable && failures < attempts {
                let _ =
                    Box::pin(kv.put(names::failures_key(&id), failures.to_string().into())).await;
                let delay = backoff.saturating_mul(1 << (failures - 1).min(16));
                shared.counts.retried.fetch_add(1, Ordering::Relaxed);
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                tracing::debug!("nats worker: {id} attempt {failures} failed: {message}");
            } else {
                let stored = Stored {
                    ended: Ended::Dead,
                    attempts: failures,
                    reply: Reply::Err {
                        id: request.id,
                        kind,
                        message: message.clone(),
                    },
                };
                // Result first, then the dead letter's ack: a crash in between re-runs
                // nothing (the result exists). No result stored, no ack: the task
                // comes back after its lease.
                if !Box::pin(put_result(shared, &id, &stored)).await {
                    return;
                }
                Box::pin(dead_letter(
                    shared,
                    &msg,
                    &id,
                    &request.name,
                    failures,
                    &message,
                ))
                .await;
            }
        }
        reply @ Reply::Ok { .. } => {
            let stored = Stored {
                ended: Ended::Succeeded,
                attempts: failures + 1,
                reply,
            };
            if !put_result(shared, &id, &stored).await {
                // Not acknowledged: an ack that reached the server without the result
                // would lose the task. It comes back after its lease and runs again.
                return;
            }
            shared.counts.completed.fetch_add(1, Ordering::Relaxed);
            acknowledge(shared, &msg, &id).await;
        }
    }
}

/// Acknowledges the delivery of task `id` (its outcome stored, or the message
/// dead-lettered), and deletes the task's cancel mark if it has one (it was cancelled
/// while it ran, or skipped for it): every worker's watch then drops the mark from
/// memory. Nothing needs the mark again: the task's message is gone, and a redelivery
/// (the ack was lost) or a keyed repeat reads the stored outcome before it runs
/// anything. What stays in the bucket is the key's tombstone, which replaces the mark.
async fn acknowledge(shared: &Running, msg: &JsMessage, id: &str) {
    let _ = msg.ack().await;
    if shared.is_cancelled(id)
        && let Err(e) = Box::pin(shared.server.cancels.delete(id)).await
    {
        tracing::warn!("nats worker: dropping the cancel mark of {id}: {e}");
    }
}

/// Dead-letters a task that never answered.
async fn finish_dead(
    shared: &Running,
    msg: &JsMessage,
    id: &str,
    name: &str,
    request_id: u64,
    failures: u32,
    why: &str,
) {
    let stored = Stored {
        ended: Ended::Dead,
        attempts: failures,
        reply: Reply::Err {
            id: request_id,
            kind: ErrorKind::Failed,
            message: why.to_owned(),
        },
    };
    if !put_result(shared, id, &stored).await {
        return;
    }
    dead_letter(shared, msg, id, name, failures, why).await;
}

/// Runs the request on a runner thread, extending the lease (and the task's place
/// under a per-key limit) every third of it.
async fn run_with_lease(
    shared: &Running,
    msg: &JsMessage,
    request: Request,
    place: Option<&str>,
    task: &str,
) -> Reply {
    let tasks = shared.tasks.clone();
    let id = request.id;
    let mut run = shared.runners.run(move || tasks.handle(&request));
    let every = (shared.ack_wait / 3).max(Duration::from_millis(10));
    // One timer: first the nudge (not done soon, its thread may be stuck behind a long
    // task: wake another for the queue), then the lease's renewals.
    let tick = tokio::time::sleep(NUDGE_AFTER.min(every));
    tokio::pin!(tick);
    let mut nudged = false;
    let mut renew_at = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            out = &mut run => {
                return out.unwrap_or_else(|_| Reply::Err {
                    id,
                    kind: ErrorKind::Panicked,
                    message: "the worker's thread panicked".into(),
                });
            }
            _ = &mut tick => {
                if !nudged {
                    nudged = true;
                    shared.runners.nudge();
                    tick.as_mut().reset(renew_at);
                    if tokio::time::Instant::now() < renew_at {
                        continue;
                    }
                }
                renew_at += every;
                tick.as_mut().reset(renew_at);
                if shared.dead() {
                    std::future::pending::<()>().await;
                }
                let _ = Box::pin(msg.ack_with(AckKind::Progress)).await;
                if let Some(place) = place {
                    let _ = Box::pin(edit_places(&shared.server.kv, place, |holders| {
                        renew(holders, task, shared.ack_wait);
                        (true, true)
                    }))
                    .await;
                }
            }
        }
    }
}

/// Sets (or adds) `task`'s place to expire a lease from now.
fn renew(holders: &mut Vec<(String, u64)>, task: &str, lease: Duration) {
    let until = names::now_ms() + lease.as_millis() as u64;
    match holders.iter_mut().find(|(h, _)| h == task) {
        Some(h) => h.1 = until,
        None => holders.push((task.to_owned(), until)),
    }
}

/// Waits for a place among the holders of a limited key (extending the delivery's
/// lease meanwhile); false when the worker was killed while it waited.
async fn take_place(
    shared: &Running,
    msg: &JsMessage,
    place: &str,
    task: &str,
    limit: usize,
) -> bool {
    let lease = shared.ack_wait;
    let mut extended = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if shared.dead() {
            return false;
        }
        let taken = edit_places(&shared.server.kv, place, |holders| {
            if holders.iter().any(|(h, _)| h == task) || holders.len() < limit {
                renew(holders, task, lease);
                (true, true)
            } else {
                (false, false)
            }
        })
        .await;
        match taken {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::warn!("nats worker: the holders of {place}: {e}"),
        }
        if extended.elapsed() >= lease / 3 {
            let _ = msg.ack_with(AckKind::Progress).await;
            extended = tokio::time::Instant::now();
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Reads the holders of `place` (expired ones dropped), lets `change` decide
/// (`(answer, write?)`) and writes the list back by compare-and-set, again on a
/// conflict.
async fn edit_places(
    kv: &kv::Store,
    place: &str,
    change: impl Fn(&mut Vec<(String, u64)>) -> (bool, bool),
) -> Result<bool, String> {
    loop {
        let entry = kv.entry(place).await.map_err(|e| e.to_string())?;
        let revision = entry.as_ref().map(|e| e.revision);
        let now = names::now_ms();
        let mut holders: Vec<(String, u64)> = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| {
                String::from_utf8_lossy(&e.value)
                    .lines()
                    .filter_map(|l| {
                        let (id, until) = l.split_once(' ')?;
                        Some((id.to_owned(), until.parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        holders.retain(|(_, until)| *until > now);
        let (answer, write) = change(&mut holders);
        if !write {
            return Ok(answer);
        }
        let value: String = holders
            .iter()
            .map(|(id, until)| format!("{id} {until}\n"))
            .collect();
        let written = match revision {
            Some(r) => kv
                .update(place, value.into(), r)
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
            None => kv
                .create(place, value.into())
                .await
                .map(|_| ())
                .map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
        };
        match written {
            Ok(()) => return Ok(answer),
            Err((true, _)) => continue, // another worker wrote first: read again
            Err((false, e)) => return Err(e),
        }
    }
}

/// Stores an outcome (the first stored stands: a cancel's, or an earlier worker's).
/// False when it is not known to be stored (e.g. the server went away meanwhile): then
/// the caller must not acknowledge the delivery.
async fn put_result(shared: &Running, id: &str, stored: &Stored) -> bool {
    match shared.server.outcomes.record(id, stored).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("nats worker: storing the result of {id}: {e}; not acknowledged");
            false
        }
    }
}

/// Publishes the request to the dead-letter stream with `error`, then acknowledges it.
async fn dead_letter(
    shared: &Running,
    msg: &JsMessage,
    id: &str,
    name: &str,
    attempts: u32,
    error: &str,
) {
    if shared.dead() {
        return;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(names::ID, id);
    headers.insert(names::ATTEMPTS, attempts.to_string().as_str());
    // Header values are one line.
    let line: String = error
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    headers.insert(names::ERROR, line.as_str());
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    let name = if name.is_empty() { "unknown" } else { name };
    let published = shared
        .server
        .acks
        .publish_acked(
            shared.server.names.dead_subject(name),
            Some(headers),
            msg.payload.clone(),
        )
        .await;
    if let Err(e) = published {
        tracing::warn!("nats worker: dead letter of {id}: {e}");
        return; // not acknowledged: it comes back and tries again
    }
    shared.counts.dead.fetch_add(1, Ordering::Relaxed);
    acknowledge(shared, msg, id).await;
}
