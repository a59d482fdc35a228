//! Connecting to NATS and making sure the stream, the dead-letter stream, the outcomes
//! stream, the state bucket and the cancels bucket exist (whoever comes first creates
//! them; the configs are the same everywhere).

use crate::NatsError;
use crate::acks::Acks;
use crate::names::Names;
use crate::outcomes::Outcomes;
use async_nats::jetstream::{self, kv, stream};

use std::time::Duration;

/// How long JetStream remembers a `Nats-Msg-Id`: enqueueing the same id again within it
/// is one message.
pub(crate) const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// One connection and the deployment's objects on it.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    pub(crate) js: jetstream::Context,
    /// JetStream publishes with their acks on one subscription.
    pub(crate) acks: Acks,
    /// Failed-attempt counts (`a.ID`) and per-key holders (`l.NAME.KEY`).
    pub(crate) kv: kv::Store,
    /// Every task's outcome.
    pub(crate) outcomes: Outcomes,
    /// Ids cancelled by id (key = id), which every worker follows with one watch.
    pub(crate) cancels: kv::Store,
    pub(crate) tasks: stream::Stream,
    pub(crate) names: Names,
}

impl Server {
    /// Connects to `url` and creates what is missing. The client reconnects by itself
    /// (forever) when the server goes away and comes back.
    pub(crate) async fn connect(url: &str, names: Names) -> Result<Self, NatsError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| NatsError::new(format!("connecting to {url}"), e))?;
        let js = jetstream::new(client);
        let tasks = ensure_stream(
            &js,
            stream::Config {
                name: names.stream(),
                subjects: vec![names.subjects()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: names.dead_stream(),
                subjects: vec![names.dead_subjects()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            },
        )
        .await?;
        let outcomes = ensure_stream(&js, Outcomes::config(&names)).await?;
        let acks = Acks::start(&js.client())
            .await
            .map_err(|e| NatsError::new("subscribing to the publish acks", e))?;
        let outcomes = Outcomes::new(js.clone(), acks.clone(), outcomes, names.clone());
        let kv = bucket(&js, &names.bucket()).await?;
        let cancels = bucket(&js, &names.cancel_bucket()).await?;
        Ok(Self {
            js,
            acks,
            kv,
            outcomes,
            cancels,
            tasks,
            names,
        })
    }
}

/// Creates (if missing) and opens the key-value bucket `name`. Its stream is made by
/// hand: `create_key_value` first asks for the account's info, whose 2.9 form this client
/// does not parse. Same settings as the client's own (history 1, rollups, direct get,
/// discard new).
async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, NatsError> {
    ensure_stream(
        js,
        stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| NatsError::new(format!("creating bucket {name}"), e))?;
    js.get_key_value(name)
        .await
        .map_err(|e| NatsError::new(format!("opening bucket {name}"), e))
}

/// Creates stream `config` unless it exists. Two processes that start together (a
/// submitter and a worker) may both find it missing: the second create fails ("subjects
/// overlap with an existing stream"), and the stream the first made is the one to use.
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    match js.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(e) => js
            .get_stream(&name)
            .await
            .map_err(|_| NatsError::new(format!("creating stream {name}"), e)),
    }
}

/// A current-thread tokio runtime on a thread of its own, named `name`, that runs until
/// the returned handle's runtime is dropped.
pub(crate) fn runtime(name: &str) -> Result<tokio::runtime::Runtime, NatsError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| NatsError::new("starting the NATS client's runtime", e))
}
