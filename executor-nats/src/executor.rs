//! [`NatsExecutor`]: the submitting side. A named task's attempt publishes its request
//! and waits for its result in the bucket, on a thread of an inner threads pool.

use crate::NatsError;
use crate::names::{self, Names};
use crate::server::Server;
use async_nats::jetstream::{kv, message::PublishMessage};
use executor_core::{
    Executor, ExecutorStats, Job, ShutdownMode, ShutdownReport, SubmitError, TaskContext, TaskError,
};
use executor_threads::ThreadsExecutor;
use futures::StreamExt;
use named_tasks::wire::{Message, Reply, Request};
use named_tasks::{Call, CallError, Codec, Remote};
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
        }
    }

    /// The durable id of a call with this key (`Task::call_keyed`): the same key is the
    /// same task.
    pub fn id_for_key(key: &str) -> String {
        names::id_from_key(key)
    }

    /// The stored answer of task `id`, if it has finished (also after a restart of this
    /// process): the wire [`Reply`] with the encoded result or the last error.
    pub fn result(&self, id: &str) -> Result<Option<Reply>, NatsError> {
        let kv = self.shared.server.kv.clone();
        let key = names::result_key(id);
        let entry = self
            .shared
            .rt
            .block_on(async move { kv.get(key).await })
            .map_err(|e| NatsError::new(format!("reading the result of {id}"), e))?;
        entry
            .map(|bytes| decode_reply(&bytes).map_err(|e| NatsError::new("a stored result", e)))
            .transpose()
    }

    /// Cancels task `id`: a worker that has not started it yet does not run it (its
    /// result becomes an error saying so). A running attempt runs to its end.
    pub fn cancel(&self, id: &str) -> Result<(), NatsError> {
        let kv = self.shared.server.kv.clone();
        let key = names::cancel_key(id);
        self.shared
            .rt
            .block_on(async move { kv.put(key, bytes::Bytes::from_static(b"1")).await })
            .map(|_| ())
            .map_err(|e| NatsError::new(format!("cancelling {id}"), e))
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
        let shared = self.shared.clone();
        let name = call.name();
        call.install(Remote::new(self.shared.codec, move |ctx, request| {
            remote(&shared, name, &id, ctx, request)
        }));
        self.threads.execute(job)
    }

    fn stats(&self) -> ExecutorStats {
        self.threads.stats()
    }

    fn shutdown(&self, mode: ShutdownMode) -> ShutdownReport {
        self.threads.shutdown(mode)
    }
}

fn decode_reply(bytes: &[u8]) -> Result<Reply, String> {
    match Message::decode(bytes) {
        Ok(Message::Reply(reply)) => Ok(reply),
        Ok(other) => Err(format!("expected a reply, found {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// One attempt: publish (de-duplicated by id), then wait for the result or cancellation.
fn remote(
    shared: &Arc<Shared>,
    name: &'static str,
    id: &str,
    ctx: &TaskContext,
    request: Request,
) -> Result<Vec<u8>, CallError> {
    let lost = move |what: String| CallError::lost(name, what);
    let server = shared.server.clone();
    let (attempts, backoff) = (shared.attempts, shared.backoff);
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
        let payload = Message::Request(request).encode();
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
            .map_err(|e| format!("publishing {id}: {e}"))?;
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| format!("watching the result of {id}: {e}"))?;
            if entry.operation == kv::Operation::Put {
                return decode_reply(&entry.value);
            }
        }
        Err(format!("the watch on the result of {id} ended"))
    });
    let cancelled = ctx.cancel_token().cancelled();
    match futures::executor::block_on(futures::future::select(work, cancelled)) {
        futures::future::Either::Left((Ok(Ok(Reply::Ok { payload, .. })), _)) => Ok(payload),
        futures::future::Either::Left((Ok(Ok(Reply::Err { kind, message, .. })), _)) => {
            Err(CallError::worker(name, kind, message))
        }
        futures::future::Either::Left((Ok(Err(e)), _)) => Err(lost(e)),
        futures::future::Either::Left((Err(e), _)) => Err(lost(format!("the NATS client: {e}"))),
        futures::future::Either::Right((_, work)) => {
            work.abort();
            let kv = shared.server.kv.clone();
            let key = names::cancel_key(id);
            let put = shared
                .rt
                .spawn(async move { kv.put(key, bytes::Bytes::from_static(b"1")).await });
            let _ = futures::executor::block_on(put);
            Err(lost(format!("cancelled; tombstone written for {id}")))
        }
    }
}
