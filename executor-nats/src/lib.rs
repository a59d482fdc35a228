//! switchyard backend: durable [named tasks](named_tasks) on NATS JetStream, run by any
//! number of worker processes on any machines.
//!
//! The policy moves a named task here with one line (`backend = "nats"`); its code does
//! not change. [`NatsExecutor`] is the submitting side: each call becomes a JetStream
//! message in the [`wire`](named_tasks::wire) form, and its [`TaskHandle`](executor_core::TaskHandle) resolves
//! from the outcomes stream. A waiting call holds no thread: the executor follows the
//! stream with one consumer, which hands each outcome to the calls waiting for it, and
//! one thread runs each job on its outcome. [`Worker`] is the running side: it claims the tasks its
//! [`Tasks`](named_tasks::Tasks) registry knows and nothing else.
//!
//! # What JetStream does, and what this crate adds
//!
//! | need | how |
//! |---|---|
//! | queue | one work-queue stream, `PREFIX_tasks`; a subject per task name, `PREFIX.task.NAME` |
//! | claim what you know | one durable pull consumer per task name (`PREFIX_NAME`), shared by all workers; a worker only binds the consumers of its registry's names |
//! | lease | the consumer's `AckWait`; a running task sends in-progress acks (`+WPI`) every third of it, so a long task keeps its lease; a killed worker's tasks come back after it |
//! | attempts, backoff | the submitter puts the task id, the route's attempts and first delay (and the call's key) in a few bytes before the request (cheaper than headers for client and server); a failed attempt is counted in bucket `PREFIX_state` (`a.ID`) and NAKed with a delay that doubles per attempt |
//! | dead letters | after the last failed attempt (or past `2 × attempts + 2` deliveries: a task that keeps killing its workers) the request goes to `PREFIX_dead` on `PREFIX.dead.NAME` with the last error in a header, and the error becomes the result |
//! | idempotency | [`NatsExecutor::enqueue`] with an idempotency key makes the task id from the key (other calls get fresh ids, sent once); that id is the message's `Nats-Msg-Id`, so enqueueing the same key twice within ten minutes is one message, and later it finds the stored result without sending anything |
//! | results | stream `PREFIX_outcomes`, stored before the ack: a keyed task's on `PREFIX.outcome.ID`, the others many to a message on `PREFIX.outcome.batch` (each stored message costs the server about as much as a whole raw job); **the first outcome of an id is its outcome**: writers never check (a create-if-absent costs as much again), and every reader takes the first (the submitter follows the stream in order; a read by id takes a keyed subject's first message, or scans the batches from when the fresh id was made, which needs the submitters' and the server's clocks within 5 s). A task redelivered after a lost worker whose outcome exists is acked without running, so nothing completes twice; readable by id after a restart ([`NatsExecutor::result`]) |
//! | cancel by id | the id is marked in bucket `PREFIX_cancels`, then a "cancelled" outcome is published ([`NatsExecutor::cancel`]; a cancelled handle does the same): it is the outcome unless the task ended first. Every worker follows the marks with one watch (loaded before its first claim) and skips a marked task, writing its "cancelled" result if the canceller died before it did; a worker that claimed the task a moment before the mark reached it runs it, and its outcome comes second, so it is never read. A mark is deleted once its task is acknowledged (or at once if the task had ended), so workers do not remember cancels forever. A first delivery, or a retry after failed attempts only, is not checked against the outcomes (a delivery after one lost with its worker, and an idempotency key's task, are) |
//! | concurrency per task name across all workers | the consumer's `max_ack_pending` ([`WorkerBuilder::limit`]) |
//! | concurrency per key across all workers | the call's key (`Task::call_keyed`) travels with the request; the key's holders are a list in the state bucket (`l.NAME.KEY`) changed by compare-and-set, each place expiring a lease after its last renewal ([`WorkerBuilder::key_limit`]) |
//! | drain | [`Worker::run_until_signal`]: on SIGTERM or SIGINT stop claiming, finish and ack what runs, exit |
//!
//! Workers fetch as many messages as they have free slots in one request, and long-poll
//! for one when idle. The acks of a connection's publishes come back on one subscription
//! of its own. `cargo xtask bench jobs` measures the backend against raw JetStream.
//!
//! [`LocalServer`] starts a `nats-server -js` of your own (free port, its own store) for
//! demos and tests, and `run_policy_worker` (feature `supervisor`) runs a worker from a
//! policy file.
//!
//! Delivery is at least once: a task whose worker dies after its effect but before its
//! result is run again, so effects must be idempotent (key them by the task's id).
#![deny(unsafe_code)]

mod acks;
mod envelope;
mod executor;
mod local;
mod names;
mod outcomes;
#[cfg(feature = "supervisor")]
mod registry;
mod runners;
mod server;
mod stored;
mod worker;

pub use executor::{Builder, NatsExecutor};
pub use local::{INSTALL_HINT, LocalServer, LocalServerError};
#[cfg(feature = "supervisor")]
pub use registry::{URL_ENV, register, run_policy_worker};
pub use stored::{DeadLetter, Ended, Stored};
pub use worker::{Stop, Worker, WorkerBuilder, WorkerReport};

/// Why the NATS backend could not start or answer: what it was doing and the client's
/// error.
#[derive(Debug, thiserror::Error)]
#[error("nats: {what}: {source}")]
pub struct NatsError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl NatsError {
    pub(crate) fn new(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what: what.into(),
            source: source.into(),
        }
    }

    /// True when the configuration was refused (not the server).
    pub fn is_config(&self) -> bool {
        self.what.starts_with("config")
    }
}
