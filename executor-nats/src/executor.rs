//! [`NatsExecutor`]: the submitting side. A call's message is built on the caller's
//! thread and sent by the executor's one publishing task; one follower of the outcomes
//! stream per executor hands each outcome to the calls waiting for it; one finishing
//! thread runs the job on its outcome.

use crate::NatsError;
use crate::envelope::Envelope;
use crate::names::{self, Names};
use crate::outcomes::Seen;
use crate::server::Server;
use crate::stored::{DeadLetter, Ended, Stored};
use executor_core::TaskHandle;
use executor_core::backend::{Admission, StatsRecorder, Unstarted, lock};
use executor_core::{
    Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskError, TaskId,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use named_tasks::wire::Reply;
use named_tasks::{Args, Call, CallError, Codec, Output, Remote, Task};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Configures a [`NatsExecutor`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    url: String,
    prefix: String,
    codec: Codec,
    attempts: u32,
    backoff: Duration,
    in_flight: usize,
    routes: BTreeMap<String, (u32, Duration)>,
}

impl Builder {
    /// The server (default `nats://127.0.0.1:4222`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The prefix of the stream, bucket and subject names (default `switchyard`);
    /// submitters and workers of one deployment use the same.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How arguments and results travel (default JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Attempts per task before it is dead-lettered (default 3, at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The delay before the first retry, doubled for each further one (default 1s).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Attempts and first backoff for the task called `name` (others get
    /// [`attempts`](Self::attempts) and [`backoff`](Self::backoff)).
    pub fn route(mut self, name: impl Into<String>, attempts: u32, backoff: Duration) -> Self {
        self.routes.insert(name.into(), (attempts.max(1), backoff));
        self
    }

    /// Calls this submitter has sent and waits on at once (default 4096); further calls
    /// wait in this process, unsent, for one of them to end. A waiting call holds no
    /// thread, only an entry in the executor's table of waiting calls.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Connects, creates the stream and bucket if missing, and starts the executor.
    pub fn build(self) -> Result<NatsExecutor, NatsError> {
        let names = Names::new(&self.prefix).map_err(|e| NatsError::new("config", e))?;
        let rt = crate::server::runtime(&format!("{}-nats", self.name))?;
        let server = rt.block_on(Server::connect(&self.url, names))?;
        // Made before the first call, so no result of a call of ours goes unseen. The
        // stream's end before the follower is where a re-read for missed outcomes starts.
        let outcomes = server.outcomes.clone();
        let watch = rt
            .block_on(async move {
                let from = outcomes.last_seq().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
                    from,
                    Box::pin(outcomes.follow().await?) as Follow,
                ))
            })
            .map_err(|e| NatsError::new("following the outcomes", e))?;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
        let (outgoing, queue) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            name: self.name.clone(),
            rt: rt.handle().clone(),
            server,
            codec: self.codec,
            attempts: self.attempts,
            backoff: self.backoff,
            routes: self.routes,
            gate: Admission::new(),
            stats: StatsRecorder::new(),
            unstarted: Unstarted::new(),
            in_flight: self.in_flight,
            sent: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            outgoing,
            waiting: Mutex::new(HashMap::new()),
            closing: tokio::sync::watch::channel(false).0,
            done: Mutex::new(Some(done_tx)),
            threads: Mutex::new(Vec::new()),
        });
        shared.rt.spawn(shared.clone().watch(watch));
        shared.rt.spawn(shared.clone().publish(queue));
        let finisher = shared.clone();
        let t = std::thread::Builder::new()
            .name(format!("{}-finish", self.name))
            .spawn(move || {
                for done in done_rx {
                    finisher.finish(done);
                }
            })
            .map_err(|e| NatsError::new("starting the finishing thread", e))?;
        lock(&shared.threads).push(t);
        Ok(NatsExecutor {
            shared,
            rt: Some(rt),
        })
    }
}

struct Shared {
    name: String,
    /// The client's runtime, owned by the [`NatsExecutor`] (tasks on it hold this).
    rt: tokio::runtime::Handle,
    server: Server,
    codec: Codec,
    attempts: u32,
    backoff: Duration,
    routes: BTreeMap<String, (u32, Duration)>,
    gate: Admission,
    stats: StatsRecorder,
    unstarted: Unstarted,
    /// At most this many calls sent and waiting ([`Builder::in_flight`]).
    in_flight: usize,
    /// Calls in `waiting` (sent, or being sent, and not ended).
    sent: AtomicUsize,
    /// Wakes the publisher when a call ends while `sent` is at `in_flight`.
    freed: tokio::sync::Notify,
    /// Calls admitted and not yet sent, for the one publishing task.
    outgoing: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    /// Task id → the calls of this process waiting for its outcome, sent (or being
    /// sent); the one follower of the outcomes hands each outcome to them.
    waiting: Mutex<HashMap<String, Vec<Waiting>>>,
    /// Set at shutdown: calls still waiting end (their tasks stay queued).
    closing: tokio::sync::watch::Sender<bool>,
    /// Calls whose outcome is known, for the finishing thread to run.
    done: Mutex<Option<std::sync::mpsc::Sender<Done>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// A call admitted and not yet sent: its request in the envelope, ready to publish.
struct Outgoing {
    job: Job,
    id: String,
    name: String,
    payload: Vec<u8>,
    published: Option<Published>,
}

/// A call sent (or being sent) that waits for its task's outcome.
struct Waiting {
    job: Job,
    /// The job's cancel token, which the publisher's sweep checks.
    token: executor_core::CancelToken,
    name: String,
    start: Option<Instant>,
}

/// A call whose outcome is known: the job is run on it (with a remote that returns it).
struct Done {
    job: Job,
    outcome: Result<Vec<u8>, CallError>,
    start: Option<Instant>,
}

/// Completes once the executor is shutting down.
async fn closed(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = closing.wait_for(|c| *c).await.map(|_| ());
}

impl Shared {
    fn route(&self, name: &str) -> (u32, Duration) {
        self.routes
            .get(name)
            .copied()
            .unwrap_or((self.attempts, self.backoff))
    }

    fn block_on<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        // Not `Runtime::block_on`: the caller may be inside another runtime's context.
        futures::executor::block_on(self.rt.spawn(f)).expect("the NATS client's task")
    }

    /// Hands an outcome to the calls waiting for it.
    fn deliver(&self, id: &str, stored: &Stored) {
        let Some(calls) = self.take_waiting(id) else {
            return;
        };
        for call in calls {
            let outcome = outcome_of(&call.name, id, stored.clone());
            self.done(call.job, outcome, call.start);
        }
    }

    /// Ends the call of job `job` waiting for `id` with `error` (its publish failed;
    /// another call of the same idempotency key may have been sent, and still waits).
    fn fail(&self, id: &str, job: TaskId, error: &str) {
        let call = {
            let mut waiting = lock(&self.waiting);
            let Some(calls) = waiting.get_mut(id) else {
                return;
            };
            let Some(at) = calls.iter().position(|c| c.job.id() == job) else {
                return;
            };
            let call = calls.swap_remove(at);
            if calls.is_empty() {
                waiting.remove(id);
            }
            call
        };
        self.ended(1);
        self.lose(call, error);
    }

    /// Ends a call taken off the table with an error saying why it has no outcome.
    fn lose(&self, call: Waiting, why: impl Into<String>) {
        let e = CallError::lost(&call.name, why);
        self.done(call.job, Err(e), call.start);
    }

    /// Takes the calls waiting for `id` off the table, and lets the publisher send more.
    fn take_waiting(&self, id: &str) -> Option<Vec<Waiting>> {
        let calls = lock(&self.waiting).remove(id)?;
        self.ended(calls.len());
        Some(calls)
    }

    /// `n` calls left the table.
    fn ended(&self, n: usize) {
        if n > 0 && self.sent.fetch_sub(n, Ordering::AcqRel) >= self.in_flight {
            self.freed.notify_one();
        }
    }

    /// Hands a job whose outcome is known to the finishing thread.
    fn done(&self, job: Job, outcome: Result<Vec<u8>, CallError>, start: Option<Instant>) {
        let done = Done {
            job,
            outcome,
            start,
        };
        let sender = lock(&self.done).clone();
        match sender {
            Some(tx) => {
                if let Err(back) = tx.send(done) {
                    self.finish(back.0);
                }
            }
            None => self.finish(done),
        }
    }

    /// Admits a call: an idempotency key's task may have ended before (its outcome is
    /// read, nothing is sent); any other goes to the publisher.
    fn admit(self: &Arc<Self>, call: Outgoing) {
        if !names::is_keyed(&call.id) {
            self.queue(call);
            return;
        }
        let me = self.clone();
        self.rt.spawn(async move {
            match me.server.outcomes.first(&call.id, None).await {
                Ok(Some((_, stored))) => {
                    if let Some(p) = &call.published {
                        let _ = p.send(Ok(()));
                    }
                    let start = me.stats.started();
                    let outcome = outcome_of(&call.name, &call.id, stored);
                    me.done(call.job, outcome, start);
                }
                _ => me.queue(call),
            }
        });
    }

    fn queue(&self, call: Outgoing) {
        if let Err(back) = self.outgoing.send(call) {
            // The publisher is gone (shutdown): the call was never sent.
            self.abandon(back.0);
        }
    }

    /// A call that was never sent: not started.
    fn abandon(&self, call: Outgoing) {
        if let Some(p) = call.published {
            let _ = p.send(Err("the executor shut down".into()));
        }
        self.unstarted.abandon(&self.stats, call.job);
    }

    /// The one publishing task: sends queued calls while fewer than `in_flight` wait,
    /// collects the server's acks, ends calls whose handles were cancelled (marking
    /// their tasks cancelled), and at shutdown ends every call: unsent ones as not
    /// started, sent ones with an error saying their task stays queued.
    async fn publish(self: Arc<Self>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Outgoing>) {
        let mut closing = self.closing.subscribe();
        let mut acks = FuturesUnordered::new();
        let mut held: Option<Outgoing> = None;
        let mut sweep = tokio::time::interval(CANCEL_SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Send what is queued while there is room.
            while self.sent.load(Ordering::Acquire) < self.in_flight {
                let call = match held.take() {
                    Some(c) => c,
                    None => match queue.try_recv() {
                        Ok(c) => c,
                        Err(_) => break,
                    },
                };
                if let Some(ack) = self.send(call).await {
                    acks.push(ack);
                }
            }
            tokio::select! {
                c = queue.recv(), if held.is_none() => match c {
                    Some(c) => held = Some(c),
                    None => return,
                },
                _ = self.freed.notified(), if held.is_some() => {}
                Some(()) = acks.next(), if !acks.is_empty() => {}
                // Only while calls wait: an idle executor is not woken.
                _ = sweep.tick(), if self.sent.load(Ordering::Acquire) > 0 => {
                    self.sweep_cancelled()
                }
                _ = closed(&mut closing) => break,
            }
        }
        // Shut down: nothing more is sent.
        queue.close();
        if let Some(c) = held.take() {
            self.abandon(c);
        }
        while let Ok(c) = queue.try_recv() {
            self.abandon(c);
        }
        let all: Vec<(String, Vec<Waiting>)> = lock(&self.waiting).drain().collect();
        for (id, calls) in all {
            self.ended(calls.len());
            for call in calls {
                let why =
                    format!("the submitter shut down; task {id} stays queued (read it by id)");
                self.lose(call, why);
            }
        }
    }

    /// Publishes one call (after registering it as waiting, so its outcome cannot come
    /// first); returns the wait for the server's ack.
    async fn send(
        self: &Arc<Self>,
        call: Outgoing,
    ) -> Option<impl std::future::Future<Output = ()> + use<>> {
        let Outgoing {
            job,
            id,
            name,
            payload,
            published,
        } = call;
        let token = job.cancel_token();
        let start = self.stats.started();
        if token.is_cancelled() {
            // Cancelled before it was sent: it never reaches a worker.
            if let Some(p) = published {
                let _ = p.send(Err("cancelled before it was sent".into()));
            }
            let e = CallError::lost(&name, format!("cancelled before task {id} was sent"));
            self.done(job, Err(e), start);
            return None;
        }
        let job_id = job.id();
        let subject = self.server.names.subject(&name);
        self.sent.fetch_add(1, Ordering::AcqRel);
        lock(&self.waiting)
            .entry(id.clone())
            .or_default()
            .push(Waiting {
                job,
                token,
                name,
                start,
            });
        let headers = names::is_keyed(&id).then(|| {
            // De-duplication by id is for idempotency keys: a fresh id is sent once (and
            // the server's check and memory of it cost as much as a fifth of a job).
            let mut h = async_nats::HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            h
        });
        let sending = self
            .server
            .acks
            .publish(subject, headers, payload.into())
            .await;
        let me = self.clone();
        Some(async move {
            let acked = match sending {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Some(p) = published {
                let _ = p.send(acked.clone());
            }
            if let Err(e) = acked {
                me.fail(&id, job_id, &format!("publishing {id}: {e}"));
            }
        })
    }

    /// Ends the waiting calls whose handles were cancelled, and marks their tasks
    /// cancelled for the workers.
    fn sweep_cancelled(self: &Arc<Self>) {
        let mut gone = Vec::new();
        {
            let mut waiting = lock(&self.waiting);
            waiting.retain(|id, calls| {
                if calls.iter().any(|c| c.token.is_cancelled()) {
                    let (out, keep): (Vec<_>, Vec<_>) =
                        calls.drain(..).partition(|c| c.token.is_cancelled());
                    *calls = keep;
                    gone.push((id.clone(), out, calls.is_empty()));
                }
                !calls.is_empty()
            });
        }
        for (id, calls, last) in gone {
            self.ended(calls.len());
            if last {
                let server = self.server.clone();
                let id2 = id.clone();
                self.rt.spawn(async move {
                    if let Err(e) = cancel(&server, &id2).await {
                        tracing::warn!("nats: cancelling {id2}: {e}");
                    }
                });
            }
            for call in calls {
                self.lose(call, format!("cancelled; task {id} is marked cancelled"));
            }
        }
    }

    /// Runs a call's job on its known outcome (on the finishing thread).
    fn finish(&self, done: Done) {
        let Done {
            job,
            outcome,
            start,
        } = done;
        if let Some(call) = Call::of(job.meta()) {
            call.install(Remote::new(self.codec, move |_ctx, _request| outcome));
        }
        let status = job.run();
        self.stats.finished(status, start.map(|t| t.elapsed()));
    }

    /// The one follower of this executor: every outcome stored, handed to the calls that
    /// wait for it (the first one of an id is its outcome; the calls are gone by a
    /// later one). A follower that ends is made again, and the stream is read from the
    /// last message the follower saw, so no outcome stored meanwhile is missed.
    async fn watch(self: Arc<Self>, first: (u64, Follow)) {
        let mut closing = self.closing.subscribe();
        let (mut last, first) = first;
        let mut first = Some(first);
        loop {
            let mut watch = match first.take() {
                Some(w) => w,
                None => {
                    let made = tokio::select! {
                        w = self.server.outcomes.follow() => w.map(|f| Box::pin(f) as Follow),
                        _ = closed(&mut closing) => return,
                    };
                    match made {
                        Ok(w) => {
                            self.recheck(&mut last).await;
                            w
                        }
                        Err(e) => {
                            tracing::warn!("nats: following the outcomes: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    }
                }
            };
            // One timer for the watch, not one per outcome: each tick asks whether an
            // outcome came since the last one.
            let mut quiet = tokio::time::interval(QUIET_RECHECK);
            quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            quiet.reset();
            let mut heard = false;
            loop {
                let entry = tokio::select! {
                    e = watch.next() => e,
                    // A safety net: a watch quiet for a while, with calls waiting, is
                    // checked against the stream. Across a server restart the client's
                    // watch can come back without an error yet miss a result written
                    // while it was away; the calls waiting for it would wait forever.
                    _ = quiet.tick() => {
                        if !std::mem::take(&mut heard) && !lock(&self.waiting).is_empty() {
                            self.recheck(&mut last).await;
                        }
                        continue;
                    }
                    _ = closed(&mut closing) => return,
                };
                heard = true;
                match entry {
                    Some(Ok(seen)) => {
                        last = last.max(seen.seq);
                        self.deliver_seen(&seen);
                    }
                    Some(Err(e)) => {
                        tracing::warn!("nats: following the outcomes: {e}");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Hands the outcomes of one stored message to the calls that wait for them.
    fn deliver_seen(&self, seen: &Seen) {
        for (_, id, stored) in seen.entries() {
            if !lock(&self.waiting).contains_key(id) {
                continue;
            }
            match Stored::decode(stored) {
                Ok(stored) => self.deliver(id, &stored),
                Err(e) => tracing::warn!("nats: the result of {id}: {e}"),
            }
        }
    }

    /// Reads what the stream stored after sequence `last` (what the follower may have
    /// missed: it was made again, or stayed quiet while calls wait) and hands it to the
    /// calls that wait; `last` moves to what was read.
    async fn recheck(&self, last: &mut u64) {
        let mut seen_to = *last;
        let read = self
            .server
            .outcomes
            .read_after(*last, |seen| {
                seen_to = seen_to.max(seen.seq);
                self.deliver_seen(seen);
                true
            })
            .await;
        match read {
            Ok(()) => *last = seen_to,
            Err(e) => tracing::warn!("nats: reading the outcomes after {last}: {e}"),
        }
    }
}

/// How long the outcomes follower may stay quiet, with calls waiting, before those calls'
/// outcomes are read from the stream directly (between one and two of these).
const QUIET_RECHECK: Duration = Duration::from_secs(2);

/// The submitting side of the NATS backend: runs named tasks on whatever [`Worker`]s
/// serve the same server and prefix, durably.
///
/// A call's request is published by the executor's one publishing task, and the call
/// waits, holding no thread, until the executor's one follower of the outcomes stream
/// brings its outcome; the job then runs on that outcome on the executor's finishing
/// thread (decoding it and resolving the handle). A cancelled handle ends within about
/// 20 ms, and its task is marked cancelled for the workers. Closures are refused: they
/// cannot leave the process.
///
/// [`Worker`]: crate::Worker
pub struct NatsExecutor {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for NatsExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsExecutor")
            .field("name", &self.shared.name)
            .field("names", &self.shared.server.names)
            .finish()
    }
}

impl NatsExecutor {
    /// A builder for an executor called `name`.
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            url: "nats://127.0.0.1:4222".into(),
            prefix: "switchyard".into(),
            codec: Codec::default(),
            attempts: 3,
            backoff: Duration::from_secs(1),
            in_flight: 4096,
            routes: BTreeMap::new(),
        }
    }

    /// The durable id of a task enqueued with this idempotency key
    /// ([`enqueue`](Self::enqueue)): the same key is the same task.
    pub fn id_for_key(key: &str) -> String {
        names::id_from_key(key)
    }

    /// The stored outcome of task `id`, if it has ended (also after a restart of this
    /// process).
    pub fn result(&self, id: &str) -> Result<Option<Stored>, NatsError> {
        let outcomes = self.shared.server.outcomes.clone();
        let id2 = id.to_owned();
        let first = self
            .shared
            .block_on(async move { outcomes.first(&id2, None).await })
            .map_err(|e| NatsError::new(format!("reading the result of {id}"), e))?;
        Ok(first.map(|(_, stored)| stored))
    }

    /// Cancels task `id` unless it already ended: true if this cancelled it. A worker
    /// does not start a cancelled task; one that runs it now (or claimed it a moment
    /// before its watch of the cancels brought this one) runs to its end, and its
    /// outcome is dropped.
    pub fn cancel(&self, id: &str) -> Result<bool, NatsError> {
        let server = self.shared.server.clone();
        let id2 = id.to_owned();
        self.shared
            .block_on(async move { cancel(&server, &id2).await })
            .map_err(|e| NatsError::new(format!("cancelling {id}"), e))
    }

    /// Every dead-lettered task, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, NatsError> {
        let js = self.shared.server.js.clone();
        let names = self.shared.server.names.clone();
        self.shared
            .block_on(async move {
                let mut stream = js.get_stream(names.dead_stream()).await?;
                let info = stream.info().await?.state.clone();
                let mut out = Vec::new();
                for seq in info.first_sequence..=info.last_sequence {
                    let Ok(m) = stream.get_raw_message(seq).await else {
                        continue;
                    };
                    let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned());
                    let prefix = format!(
                        "{}.dead.",
                        names.dead_subjects().trim_end_matches(".dead.>")
                    );
                    out.push(DeadLetter {
                        id: h(names::ID).unwrap_or_default(),
                        name: m.subject.as_str().trim_start_matches(&prefix).to_owned(),
                        attempts: h(names::ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0),
                        error: h(names::ERROR).unwrap_or_default(),
                    });
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
            })
            .map_err(|e| NatsError::new("reading the dead letters", e))
    }

    /// Enqueues a named task's job and returns its durable id once the server stored
    /// it; the job's handle then resolves with the task's outcome. With an
    /// `idempotency_key` already enqueued (within ten minutes, or finished since), it is
    /// the same task: the same id, and the handle follows that task.
    pub fn enqueue(&self, job: Job, idempotency_key: Option<&str>) -> Result<String, NatsError> {
        if Call::of(job.meta()).is_none() {
            job.resolve(TaskError::rejected("a closure cannot be enqueued durably"));
            return Err(NatsError::new(
                "enqueue",
                "a closure cannot be enqueued durably",
            ));
        }
        let id = names::task_id(idempotency_key);
        let (tx, rx) = std::sync::mpsc::channel();
        if let Err(refused) = self.submit(job, id.clone(), Some(tx)) {
            drop(refused);
            return Err(NatsError::new("enqueue", "the executor is shut down"));
        }
        // The call publishes; wait for the server's ack.
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NatsError::new(format!("enqueueing {id}"), e)),
            Err(_) => return Err(NatsError::new(format!("enqueueing {id}"), "no answer")),
        }
        Ok(id)
    }

    /// Enqueues `task(args)` (see [`enqueue`](Self::enqueue)): its durable id once the
    /// server stored it, and its handle.
    pub fn enqueue_call<A: Args, R: Output>(
        &self,
        task: &Task<A, R>,
        args: A,
        idempotency_key: Option<&str>,
    ) -> Result<(String, TaskHandle<R>), NatsError> {
        let (job, handle) = task.job(args);
        Ok((self.enqueue(job, idempotency_key)?, handle))
    }

    /// Admits a named task's job as task `id` and starts its call on the runtime.
    fn submit(
        &self,
        job: Job,
        id: String,
        published: Option<Published>,
    ) -> Result<(), SubmitError> {
        let shared = &self.shared;
        let entry = shared.gate.enter();
        if !entry.is_open() {
            shared.stats.rejected();
            return Err(SubmitError::shutdown(job));
        }
        let request = Call::of(job.meta())
            .expect("checked by the caller")
            .request(shared.codec, job.id().as_u64(), job.attempt());
        shared.stats.accepted();
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                if let Some(p) = published {
                    let _ = p.send(Err(e.to_string()));
                }
                let start = shared.stats.started();
                shared.done(job, Err(e), start);
                return Ok(());
            }
        };
        let (attempts, backoff) = shared.route(&request.name);
        let name = request.name.clone();
        let payload = Envelope {
            id: &id,
            attempts,
            backoff_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            key: job.meta().key(),
        }
        .wrap(&named_tasks::wire::Message::Request(request));
        shared.admit(Outgoing {
            job,
            id,
            name,
            payload,
            published,
        });
        Ok(())
    }
}

/// What a call returns for its task's stored outcome.
fn outcome_of(name: &str, id: &str, stored: Stored) -> Result<Vec<u8>, CallError> {
    match (stored.ended, stored.reply) {
        (Ended::Succeeded, Reply::Ok { payload, .. }) => Ok(payload),
        (Ended::Cancelled, _) => Err(CallError::lost(
            name,
            format!("task {id} was cancelled by id"),
        )),
        (_, Reply::Err { kind, message, .. }) => Err(CallError::worker(name, kind, message)),
        (_, Reply::Ok { .. }) => Err(CallError::lost(
            name,
            format!("task {id}: a result without a value"),
        )),
    }
}

/// How often the publisher looks for calls whose handles were cancelled.
const CANCEL_SWEEP: Duration = Duration::from_millis(20);

type Published = std::sync::mpsc::Sender<Result<(), String>>;

/// An executor's follower of the outcomes stream.
type Follow = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<Seen, Box<dyn std::error::Error + Send + Sync>>> + Send>,
>;

/// Marks `id` cancelled where the workers follow cancels, then stores its "cancelled"
/// outcome: true if that is the task's outcome (the first stored: it had not ended). The
/// mark comes first so that an outcome never says "cancelled" while the workers would
/// still run the task; a worker that finds the mark without the outcome (this process
/// died in between) stores it itself.
async fn cancel(
    server: &Server,
    id: &str,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    server.cancels.put(id, bytes::Bytes::new()).await?;
    let ours = server
        .outcomes
        .record(id, &crate::stored::cancelled(id))
        .await?;
    let first = server.outcomes.first(id, None).await?;
    if let Some((_, stored)) = &first
        && stored.ended != Ended::Cancelled
    {
        // It had ended: no worker will skip it, so nothing else would drop the mark.
        // (A task cancelled before keeps it: its message may still wait for a worker.)
        server.cancels.delete(id).await?;
    }
    Ok(first.is_some_and(|(mark, _)| mark == ours))
}

impl Executor for NatsExecutor {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        if Call::of(job.meta()).is_none() {
            let reason = format!(
                "executor '{}' runs tasks on NATS workers, and '{}' is a closure, which \
                 cannot leave this process; declare it as a named task (named_tasks::Task) \
                 or route it to an in-process executor",
                self.shared.name,
                job.meta().name()
            );
            self.shared.stats.rejected();
            job.resolve(TaskError::rejected(reason));
            return Ok(());
        }
        self.submit(job, names::task_id(None), None)
    }

    fn stats(&self) -> ExecutorStats {
        self.shared.stats.snapshot()
    }

    /// Stops taking calls. `Graceful(d)`: waits up to `d` for the outcomes of the calls
    /// in flight; then (at once for `Now`) calls not yet sent end as not started, and
    /// calls still waiting end with an error saying their task stays queued: a sent task
    /// is never lost, and its result stays readable by id.
    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        let shared = &*self.shared;
        let mut report = ShutdownReport::new(shared.name.clone());
        if !shared.gate.begin_shutdown() {
            report.stats = shared.stats.snapshot();
            return report;
        }
        let deadline = Instant::now() + mode.deadline();
        shared.gate.close();
        shared.gate.wait_in_flight(None);
        if !shared.stats.wait_idle(deadline) {
            report.deadline_passed = true;
        }
        shared.closing.send_replace(true);
        // Every call now ends at once; wait for them to reach the finishing thread.
        let _ = shared
            .stats
            .wait_idle(Instant::now() + Duration::from_secs(10));
        drop(lock(&shared.done).take());
        for t in lock(&shared.threads).drain(..) {
            let _ = t.join();
        }
        report.not_started = shared.unstarted.take();
        report.stats = shared.stats.snapshot();
        report
    }
}

impl Drop for NatsExecutor {
    fn drop(&mut self) {
        self.shutdown(ShutdownMode::Now);
        if let Some(rt) = self.rt.take() {
            // Not a blocking drop: this may run inside another runtime.
            rt.shutdown_background();
        }
    }
}
