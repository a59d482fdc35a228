//! The outcomes stream: every task's end, published as a plain message on
//! `PREFIX.outcome.ID`, where the first message of a subject is the task's outcome.
//!
//! "Written once" is kept by the readers, not by the server: a writer never checks what
//! is there (a create-if-absent costs the server about twice a plain publish, as much as
//! a whole raw job), and everyone who reads an outcome reads the first one stored for its
//! id. A submitter follows the stream in order, so the first outcome it sees for an id is
//! that first one; a reader by id asks for the first message on the id's subject. A later
//! outcome for the same id (a worker whose lease ran out while it ran, a canceller that
//! came second) is kept but never read.

use crate::acks::Acks;
use crate::names::Names;
use crate::stored::Stored;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, Message};
use futures::{Stream, StreamExt};

/// The deployment's outcomes stream.
#[derive(Clone, Debug)]
pub(crate) struct Outcomes {
    js: jetstream::Context,
    acks: Acks,
    stream: stream::Stream,
    names: Names,
}

/// One outcome as a follower sees it.
pub(crate) struct Seen {
    /// The task id.
    pub(crate) id: String,
    /// The stored bytes (decode with [`Stored::decode`]).
    pub(crate) message: Message,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Outcomes {
    pub(crate) fn new(
        js: jetstream::Context,
        acks: Acks,
        stream: stream::Stream,
        names: Names,
    ) -> Self {
        Self {
            js,
            acks,
            stream,
            names,
        }
    }

    /// The stream's config (the same in every process of a deployment).
    pub(crate) fn config(names: &Names) -> stream::Config {
        stream::Config {
            name: names.outcome_stream(),
            subjects: vec![names.outcome_subjects()],
            storage: stream::StorageType::File,
            ..Default::default()
        }
    }

    /// Stores `stored` as an outcome of `id` and returns its sequence once the server
    /// has it. It is the task's outcome only if no other was stored before it.
    pub(crate) async fn record(&self, id: &str, stored: &Stored) -> Result<u64, Error> {
        let seq = self
            .acks
            .publish_acked(self.names.outcome_subject(id), None, stored.encode().into())
            .await?;
        Ok(seq)
    }

    /// The outcome of `id` (the first stored) and its sequence, or `None` if it has not
    /// ended.
    pub(crate) async fn first(&self, id: &str) -> Result<Option<(u64, Stored)>, Error> {
        match self
            .stream
            .get_first_raw_message_by_subject(self.names.outcome_subject(id), 1)
            .await
        {
            Ok(m) => Ok(Some((m.sequence, Stored::decode(&m.payload)?))),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every outcome stored from now on, in the stream's order.
    pub(crate) async fn follow(
        &self,
    ) -> Result<impl Stream<Item = Result<Seen, Error>> + Send + use<>, Error> {
        let consumer = self
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: self.names.outcome_subjects(),
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await?;
        let prefix = self.names.outcome_subject("");
        let messages = consumer.messages().await?;
        Ok(messages.map(move |m| {
            let message = m?;
            let id = message
                .subject
                .as_str()
                .strip_prefix(prefix.as_str())
                .unwrap_or_default()
                .to_owned();
            Ok(Seen { id, message })
        }))
    }
}
