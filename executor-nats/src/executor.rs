//! [`NatsExecutor`]: the submitting side. A named task's attempt publishes its request
//! and waits for its result in the bucket, on a thread of an inner threads pool.

use crate::NatsError;
use crate::names::{self, Names};
use crate::server::Server;
use crate::stored::{DeadLetter, Ended, Stored};
use async_nats::jetstream::{kv, message::PublishMessage};
use executor_core::{
    Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskContext, TaskError,
};
use executor_threads::ThreadsExecutor;
use futures::StreamExt;
use named_tasks::wire::{ErrorKind, Reply, Request};
use named_tasks::{Call, CallError, Codec, Remote};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

    /// Calls this submitter waits on at once (default 256): each holds a thread.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Connects, creates the stream and bucket if missing, and starts the executor.
    pub fn build(self) -> Result<NatsExecutor, NatsError> {
        let names = Names::new(&self.prefix).map_err(|e| NatsError::new("config", e))?;
        let rt = crate::server::runtime(&format!("{}-nats", self.name))?;
        let server = rt.block_on(Server::connect(&self.url, names))?;
        let threads = ThreadsExecutor::builder(self.name.clone())
            .workers(self.in_flight)
            .build()
            .map_err(|e| NatsError::new("starting the submitting threads", e))?;
        Ok(NatsExecutor {
            threads,
            shared: Arc::new(Shared {
                rt,
                server,
                codec: self.codec,
                attempts: self.attempts,
                backoff: self.backoff,
                routes: self.routes,
            }),
        })
    }
}

struct Shared {
    rt: tokio::runtime::Runtime,
    server: Server,
    codec: Codec,
    attempts: u32,
    backoff: Duration,
    routes: BTreeMap<String, (u32, Duration)>,
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
}

/// The submitting side of the NATS backend: runs named tasks on whatever [`Worker`]s
/// serve the same server and prefix, durably.
///
/// A call's attempt publishes the request and waits for the result in the bucket; the
/// wait holds a thread of an inner pool ([`Builder::in_flight`]), so stats, timeouts and
/// shutdown are those of `executor-threads`. Closures are refused: they cannot leave
/// the process.
///
/// [`Worker`]: crate::Worker
pub struct NatsExecutor {
    threads: ThreadsExecutor,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NatsExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsExecutor")
            .field("name", &self.threads.name())
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
            in_flight: 256,
            routes: BTreeMap::new(),
        }
    }

    /// The durable id of a call with this key (`Task::call_keyed`): the same key is the
    /// same task.
    pub fn id_for_key(key: &str) -> String {
        names::id_from_key(key)
    }

    /// The stored outcome of task `id`, if it has ended (also after a restart of this
    /// process).
    pub fn result(&self, id: &str) -> Result<Option<Stored>, NatsError> {
        let kv = self.shared.server.kv.clone();
        let key = names::result_key(id);
        let entry = self
            .shared
            .block_on(async move { kv.get(key).await })
            .map_err(|e| NatsError::new(format!("reading the result of {id}"), e))?;
        entry
            .map(|bytes| Stored::decode(&bytes).map_err(|e| NatsError::new("a stored result", e)))
            .transpose()
    }

    /// Cancels task `id` unless it already ended: true if this cancelled it. A worker
    /// does not start a cancelled task; one that runs it now runs to its end, and its
    /// outcome is dropped.
    pub fn cancel(&self, id: &str) -> Result<bool, NatsError> {
        let kv = self.shared.server.kv.clone();
        let id2 = id.to_owned();
        self.shared
            .block_on(async move { cancel(&kv, &id2).await })
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
        let Some(call) = Call::of(job.meta()) else {
            job.resolve(TaskError::rejected("a closure cannot be enqueued durably"));
            return Err(NatsError::new(
                "enqueue",
                "a closure cannot be enqueued durably",
            ));
        };
        let id = names::task_id(idempotency_key);
        let (tx, rx) = std::sync::mpsc::channel();
        self.install(call, &id, Some(tx));
        if let Err(refused) = self.threads.execute(job) {
            drop(refused);
            return Err(NatsError::new("enqueue", "the executor is shut down"));
        }
        // The job's body encodes the arguments and publishes; wait for the server's ack.
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NatsError::new(format!("enqueueing {id}"), e)),
            Err(_) => return Err(NatsError::new(format!("enqueueing {id}"), "no answer")),
        }
        Ok(id)
    }
}

impl NatsExecutor {
    /// Makes the call's next attempt publish as task `id` and wait for its outcome;
    /// `published` hears when the server has stored the message.
    fn install(&self, call: &Call, id: &str, published: Option<Published>) {
        let shared = self.shared.clone();
        let name = call.name();
        let id = id.to_owned();
        call.install(Remote::new(self.shared.codec, move |ctx, request| {
            remote(&shared, name, &id, ctx, request, published)
        }));
    }
}

type Published = std::sync::mpsc::Sender<Result<(), String>>;

async fn cancel(kv: &kv::Store, id: &str) -> Result<bool, kv::CreateError> {
    let stored = Stored {
        ended: Ended::Cancelled,
        attempts: 0,
        reply: Reply::Err {
            id: 0,
            kind: ErrorKind::Failed,
            message: format!("task {id} was cancelled by id"),
        },
    };
    match kv
        .create(names::result_key(id), stored.encode().into())
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

impl Executor for NatsExecutor {
    fn name(&self) -> &str {
        self.threads.name()
    }

    fn execute(&self, job: Job) -> Result<(), SubmitError> {
        let Some(call) = Call::of(job.meta()) else {
            let reason = format!(
                "executor '{}' runs tasks on NATS workers, and '{}' is a closure, which \
                 cannot leave this process; declare it as a named task (named_tasks::Task) \
                 or route it to an in-process executor",
                self.threads.name(),
                job.meta().name()
            );
            job.resolve(TaskError::rejected(reason));
            return Ok(());
        };
        let id = names::task_id(job.meta().key());
        self.install(call, &id, None);
        self.threads.execute(job)
    }

    fn stats(&self) -> ExecutorStats {
        self.threads.stats()
    }

    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        self.threads.shutdown(mode)
    }
}

/// One attempt: publish (de-duplicated by id), then wait for the outcome or cancellation.
fn remote(
    shared: &Arc<Shared>,
    name: &'static str,
    id: &str,
    ctx: &TaskContext,
    request: Request,
    published: Option<Published>,
) -> Result<Vec<u8>, CallError> {
    let lost = move |what: String| CallError::lost(name, what);
    let server = shared.server.clone();
    let (attempts, backoff) = shared.route(name);
    let owned_id = id.to_owned();
    let work = shared.rt.spawn(async move {
        let id = owned_id;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(names::ID, id.as_str());
        headers.insert(names::ATTEMPTS, attempts.to_string().as_str());
        headers.insert(names::BACKOFF_MS, backoff.as_millis().to_string().as_str());
        // Watch first, so that a result written between the publish and the watch is
        // not missed (the watch also delivers a result that is already there).
        let mut watch = server
            .kv
            .watch_with_history(names::result_key(&id))
            .await
            .map_err(|e| format!("watching the result of {id}: {e}"))?;
        let payload = named_tasks::wire::Message::Request(request).encode();
        let sent = async {
            server
                .js
                .send_publish(
                    server.names.subject(name),
                    PublishMessage::build()
                        .payload(payload.into())
                        .headers(headers)
                        .message_id(&id),
                )
                .await
                .map_err(|e| format!("publishing {id}: {e}"))?
                .await
                .map_err(|e| format!("publishing {id}: {e}"))
        }
        .await;
        if let Some(p) = published {
            let _ = p.send(sent.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        sent?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| format!("watching the result of {id}: {e}"))?;
            if entry.operation == kv::Operation::Put {
                return Stored::decode(&entry.value);
            }
        }
        Err(format!("the watch on the result of {id} ended"))
    });
    let cancelled = ctx.cancel_token().cancelled();
    use futures::future::Either;
    match futures::executor::block_on(futures::future::select(work, cancelled)) {
        Either::Left((Ok(Ok(stored)), _)) => match (stored.ended, stored.reply) {
            (Ended::Succeeded, Reply::Ok { payload, .. }) => Ok(payload),
            (Ended::Cancelled, _) => Err(lost(format!("task {id} was cancelled by id"))),
            (_, Reply::Err { kind, message, .. }) => Err(CallError::worker(name, kind, message)),
            (_, Reply::Ok { .. }) => Err(lost(format!("task {id}: a result without a value"))),
        },
        Either::Left((Ok(Err(e)), _)) => Err(lost(e)),
        Either::Left((Err(e), _)) => Err(lost(format!("the NATS client: {e}"))),
        Either::Right((_, work)) => {
            work.abort();
            let kv = shared.server.kv.clone();
            let owned = id.to_owned();
            let _ = shared.block_on(async move { cancel(&kv, &owned).await });
            Err(lost(format!("cancelled; task {id} is marked cancelled")))
        }
    }
}
