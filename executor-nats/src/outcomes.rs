//! The outcomes stream: every task's end. A keyed task's outcome is a message of its own
//! on `PREFIX.outcome.ID`; the outcomes of fresh ids go many to a message on
//! `PREFIX.outcome.batch`, and the first outcome stored for an id is the task's outcome.
//!
//! "Written once" is kept by the readers, not by the server: a writer never checks what
//! is there (a create-if-absent costs the server about twice a plain publish, as much as
//! a whole raw job), and everyone who reads an outcome reads the first one stored for its
//! id. A submitter follows the stream in order, so the first outcome it sees for an id is
//! that first one; a reader by id reads the stream from the task's start (a keyed id:
//! the first message on its subject). A later outcome for the same id (a worker whose
//! lease ran out while it ran, a canceller that came second) is kept but never read.
//!
//! Why batches: every stored message costs the server about as much as a whole raw job
//! (more on a subject of its own), so one message per outcome made the outcome the
//! backend's largest cost. A connection's outcomes wait while the previous batch's ack
//! is out, then go together ([`record`](Outcomes::record) returns once theirs is
//! stored). The price is the read by id of a fresh id, which scans the stream from
//! when the task was made: a rare path (a redelivery after a lost worker, a restarted
//! submitter, a cancel by id). Keyed tasks keep their own subject: enqueueing a key
//! reads its outcome by subject, however old.

use crate::acks::Acks;
use crate::names::{self, Names};
use crate::stored::Stored;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull, push};
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use async_nats::jetstream::{self, Message};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The deployment's outcomes stream.
#[derive(Clone, Debug)]
pub(crate) struct Outcomes {
    js: jetstream::Context,
    acks: Acks,
    stream: stream::Stream,
    names: Names,
    /// The outcomes of fresh ids, to the batching task ([`batch`]).
    batching: mpsc::UnboundedSender<Pending>,
    /// Reads by id of fresh ids, to the finding task ([`find`]).
    finding: mpsc::UnboundedSender<Find>,
}

/// A read by id of a fresh id, waiting for the finding task.
struct Find {
    id: String,
    /// From when to look (milliseconds since the Unix epoch); `None`: the start.
    since: Option<u64>,
    done: oneshot::Sender<Result<Option<(Mark, Stored)>, String>>,
}

impl std::fmt::Debug for Find {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Find").field("id", &self.id).finish()
    }
}

/// Where an outcome is: its message's stream sequence and its place in the message. The
/// first outcome of an id is the one with the least mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mark {
    pub(crate) seq: u64,
    pub(crate) index: u32,
}

/// One stored message of outcomes, as a reader sees it: one outcome, or a batch.
pub(crate) struct Seen {
    /// The message's stream sequence.
    pub(crate) seq: u64,
    /// The id of a message of one keyed outcome; `None` for a batch.
    id: Option<String>,
    payload: Bytes,
}

impl Seen {
    fn of(message: &Message, seq: u64, keyed_prefix: &str) -> Self {
        let subject = message.subject.as_str();
        let id = subject
            .strip_prefix(keyed_prefix)
            .filter(|id| *id != "batch")
            .map(str::to_owned);
        Self {
            seq,
            id,
            payload: message.payload.clone(),
        }
    }

    /// Every outcome in the message, in order: its mark, its id, its stored bytes
    /// (decode with [`Stored::decode`]). A damaged batch yields what precedes the damage.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Mark, &str, &[u8])> {
        let seq = self.seq;
        let single = self
            .id
            .as_deref()
            .map(|id| (Mark { seq, index: 0 }, id, &self.payload[..]));
        let mut rest = if single.is_none() {
            &self.payload[..]
        } else {
            &[][..]
        };
        let mut index = 0;
        let batch = std::iter::from_fn(move || {
            let (id, stored, after) = split_entry(rest)?;
            rest = after;
            let mark = Mark { seq, index };
            index += 1;
            Some((mark, id, stored))
        });
        single.into_iter().chain(batch)
    }
}

/// A batch is entries, each `id length: u16 LE, id, stored length: u32 LE, stored`.
fn split_entry(bytes: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let (id, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let (stored, rest) = rest.split_at_checked(len)?;
    Some((std::str::from_utf8(id).ok()?, stored, rest))
}

fn push_entry(out: &mut Vec<u8>, id: &str, stored: &[u8]) {
    // Ids are short (a fresh id is about 30 bytes); a stored outcome is under the
    // server's message limit, far below 4 GiB.
    out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(
        &u32::try_from(stored.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(stored);
}

/// An outcome waiting for its batch.
struct Pending {
    id: String,
    stored: Vec<u8>,
    done: oneshot::Sender<Result<Mark, String>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("id", &self.id).finish()
    }
}

/// Outcomes per message at most.
const BATCH: usize = 512;
/// A batch's stored bytes at most (one larger outcome goes alone); the server's default
/// message limit is 1 MiB.
const BATCH_BYTES: usize = 256 * 1024;
/// Batches whose acks may be out at once. One: while it is out, the next batch gathers.
const BATCHES_OUT: usize = 1;

/// How far before a fresh id's time a read by id starts: the clocks of the submitter
/// that made the id and of the server that stamps the outcomes may differ by this much.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5);

type Error = Box<dyn std::error::Error + Send + Sync>;

impl Outcomes {
    /// The outcomes of `stream`; starts the connection's batching task on the current
    /// runtime.
    pub(crate) fn new(
        js: jetstream::Context,
        acks: Acks,
        stream: stream::Stream,
        names: Names,
    ) -> Self {
        let (batching, pending) = mpsc::unbounded_channel();
        tokio::spawn(batch(acks.clone(), names.outcome_batch_subject(), pending));
        let (finding, finds) = mpsc::unbounded_channel();
        tokio::spawn(find(stream.clone(), names.clone(), finds));
        Self {
            js,
            acks,
            stream,
            names,
            batching,
            finding,
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

    /// Stores `stored` as an outcome of `id` and returns its mark once the server has
    /// it. It is the task's outcome only if no other was stored before it.
    pub(crate) async fn record(&self, id: &str, stored: &Stored) -> Result<Mark, Error> {
        if names::is_keyed(id) {
            let seq = self
                .acks
                .publish_acked(self.names.outcome_subject(id), None, stored.encode().into())
                .await?;
            return Ok(Mark { seq, index: 0 });
        }
        let stored = stored.encode();
        ask(&self.batching, "batching", |done| Pending {
            id: id.to_owned(),
            stored,
            done,
        })
        .await
    }

    /// The outcome of `id` (the first stored) and its mark, or `None` if it has not
    /// ended. A fresh id's is looked for from `since` (milliseconds since the Unix epoch,
    /// by the server's clock), or from when the id was made.
    pub(crate) async fn first(
        &self,
        id: &str,
        since: Option<u64>,
    ) -> Result<Option<(Mark, Stored)>, Error> {
        if names::is_keyed(id) {
            return match self
                .stream
                .get_first_raw_message_by_subject(self.names.outcome_subject(id), 1)
                .await
            {
                Ok(m) => Ok(Some((
                    Mark {
                        seq: m.sequence,
                        index: 0,
                    },
                    Stored::decode(&m.payload)?,
                ))),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        let since = since.or_else(|| names::made_at_ms(id)).map(|ms| {
            let skew = u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(0);
            ms.saturating_sub(skew)
        });
        ask(&self.finding, "finding", |done| Find {
            id: id.to_owned(),
            since,
            done,
        })
        .await
    }

    /// The stream's last sequence now (0 when it is empty).
    pub(crate) async fn last_seq(&self) -> Result<u64, Error> {
        let mut stream = self.stream.clone();
        Ok(stream.info().await?.state.last_sequence)
    }

    /// Hands every message of outcomes stored after sequence `after`, in order, to
    /// `visit`, up to the stream's end now.
    pub(crate) async fn read_after(
        &self,
        after: u64,
        visit: impl FnMut(&Seen) -> bool,
    ) -> Result<(), Error> {
        let start = DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        };
        scan(
            &self.stream,
            &self.names,
            start,
            self.names.outcome_subjects(),
            visit,
        )
        .await
    }

    /// Every message of outcomes stored from now on, in the stream's order.
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
        let keyed = self.names.outcome_subject("");
        let messages = consumer.messages().await?;
        Ok(messages.map(move |m| {
            let message = m?;
            let seq = message.info()?.stream_sequence;
            Ok(Seen::of(&message, seq, &keyed))
        }))
    }
}

/// Reads the messages of `stream` on `filter` from `start` to the stream's end now, in
/// order, while `visit` returns true, with a consumer of its own (deleted after).
async fn scan(
    stream: &stream::Stream,
    names: &Names,
    start: DeliverPolicy,
    filter: String,
    mut visit: impl FnMut(&Seen) -> bool,
) -> Result<(), Error> {
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: start,
            filter_subject: filter,
            ack_policy: AckPolicy::None,
            replay_policy: ReplayPolicy::Instant,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let keyed = names.outcome_subject("");
    let read = async {
        loop {
            let mut messages = consumer.fetch().max_messages(256).messages().await?;
            let mut got = 0;
            while let Some(m) = messages.next().await {
                let m = m?;
                got += 1;
                let seq = m.info()?.stream_sequence;
                if !visit(&Seen::of(&m, seq, &keyed)) {
                    return Ok::<_, Error>(());
                }
            }
            if got == 0 {
                return Ok(());
            }
        }
    }
    .await;
    let name = consumer.cached_info().name.clone();
    if let Err(e) = stream.delete_consumer(&name).await {
        tracing::debug!("nats: deleting the reader {name}: {e}");
    }
    read
}

/// The connection's finding task: answers the reads by id of fresh ids that wait, all
/// with one scan of the batches from the earliest time any of them asks for (the reads
/// come together when a lost worker's tasks come back together, and each alone would
/// read the same stretch of the stream). Ends when every [`Outcomes`] is gone.
async fn find(stream: stream::Stream, names: Names, mut asks: mpsc::UnboundedReceiver<Find>) {
    let mut taken = Vec::new();
    while asks.recv_many(&mut taken, usize::MAX).await > 0 {
        let asked = std::mem::take(&mut taken);
        // The earliest start asked for; `None` (from the start) orders before any time.
        let since = asked.iter().map(|a| a.since).min().flatten();
        let mut wanted: HashSet<&str> = asked.iter().map(|a| a.id.as_str()).collect();
        let mut found: HashMap<String, (Mark, Result<Stored, String>)> = HashMap::new();
        let start = since.map_or(DeliverPolicy::All, at_time);
        let read = scan(
            &stream,
            &names,
            start,
            names.outcome_batch_subject(),
            |seen| {
                for (mark, id, stored) in seen.entries() {
                    // The first entry of an id is its outcome: later ones are not wanted.
                    if wanted.remove(id) {
                        found.insert(id.to_owned(), (mark, Stored::decode(stored)));
                    }
                }
                !wanted.is_empty()
            },
        )
        .await;
        for ask in asked {
            let answer = match (found.get(&ask.id), &read) {
                (Some((mark, Ok(stored))), _) => Ok(Some((*mark, stored.clone()))),
                (Some((_, Err(e))), _) => Err(e.clone()),
                (None, Err(e)) => Err(e.to_string()),
                (None, Ok(())) => Ok(None),
            };
            let _ = ask.done.send(answer);
        }
    }
}

/// Sends one of the connection's tasks (`what`: batching, finding) a request made around
/// its reply channel, and waits for the answer.
async fn ask<M, R>(
    to: &mpsc::UnboundedSender<M>,
    what: &str,
    request: impl FnOnce(oneshot::Sender<Result<R, String>>) -> M,
) -> Result<R, Error> {
    let gone = || format!("the outcomes' {what} task ended");
    let (done, answer) = oneshot::channel();
    to.send(request(done)).map_err(|_| gone())?;
    Ok(answer.await.map_err(|_| gone())??)
}

/// Where a reader starts for outcomes stored from `ms` (milliseconds since the Unix
/// epoch) on.
fn at_time(ms: u64) -> DeliverPolicy {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(start_time) => DeliverPolicy::ByStartTime { start_time },
        Err(_) => DeliverPolicy::All,
    }
}

/// The connection's batching task: takes the outcomes waiting (up to [`BATCH`]), stores
/// them as one message, and answers each with its mark; while [`BATCHES_OUT`] acks are
/// out, the next outcomes gather. Ends when every [`Outcomes`] of the connection is gone.
async fn batch(acks: Acks, subject: String, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let mut taken = Vec::with_capacity(BATCH);
    let mut out = FuturesUnordered::new();
    loop {
        tokio::select! {
            n = pending.recv_many(&mut taken, BATCH), if out.len() < BATCHES_OUT => {
                if n == 0 {
                    break;
                }
                while !taken.is_empty() {
                    let part = take_part(&mut taken);
                    out.push(store(&acks, subject.clone(), part).await);
                }
            }
            Some(()) = out.next(), if !out.is_empty() => {}
        }
    }
    while out.next().await.is_some() {}
}

/// The first outcomes of `taken` that fit one message (at least one).
fn take_part(taken: &mut Vec<Pending>) -> Vec<Pending> {
    let mut bytes = 0;
    let mut n = 0;
    for p in taken.iter() {
        bytes += p.stored.len() + p.id.len() + 6;
        if n > 0 && bytes > BATCH_BYTES {
            break;
        }
        n += 1;
    }
    let rest = taken.split_off(n);
    std::mem::replace(taken, rest)
}

/// Publishes `part` as one message and returns the wait that answers its outcomes.
async fn store(
    acks: &Acks,
    subject: String,
    part: Vec<Pending>,
) -> impl std::future::Future<Output = ()> + use<> {
    let size = part.iter().map(|p| p.stored.len() + p.id.len() + 6).sum();
    let mut payload = Vec::with_capacity(size);
    for p in &part {
        push_entry(&mut payload, &p.id, &p.stored);
    }
    let sent = acks.publish(subject, None, payload.into()).await;
    async move {
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        for (index, p) in part.into_iter().enumerate() {
            let mark = acked.clone().map(|seq| Mark {
                seq,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            });
            let _ = p.done.send(mark);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_in_order_and_stops_at_damage() {
        let mut payload = Vec::new();
        push_entry(&mut payload, "t-1-a", b"one");
        push_entry(&mut payload, "t-2-b", b"");
        push_entry(&mut payload, "t-3-c", b"three");
        let whole = Seen {
            seq: 9,
            id: None,
            payload: Bytes::from(payload.clone()),
        };
        let read: Vec<_> = whole.entries().collect();
        assert_eq!(
            read,
            vec![
                (Mark { seq: 9, index: 0 }, "t-1-a", &b"one"[..]),
                (Mark { seq: 9, index: 1 }, "t-2-b", &b""[..]),
                (Mark { seq: 9, index: 2 }, "t-3-c", &b"three"[..]),
            ]
        );
        payload.truncate(payload.len() - 2);
        let cut = Seen {
            seq: 9,
            id: None,
            payload: Bytes::from(payload),
        };
        assert_eq!(cut.entries().count(), 2);
        let single = Seen {
            seq: 4,
            id: Some("k-x".into()),
            payload: Bytes::from_static(b"raw"),
        };
        let read: Vec<_> = single.entries().collect();
        assert_eq!(read, vec![(Mark { seq: 4, index: 0 }, "k-x", &b"raw"[..])]);
    }

    /// Against a server of its own: outcomes of fresh ids share messages, the first
    /// stored for an id is what a read by id finds, and a re-read sees every one.
    #[test]
    fn outcomes_are_batched_and_the_first_of_an_id_is_read_back() {
        if !crate::LocalServer::installed() {
            eprintln!("skipping: {}", crate::INSTALL_HINT);
            return;
        }
        let store = tempfile::tempdir().unwrap();
        let server = crate::LocalServer::start(store.path()).unwrap();
        let rt = crate::server::runtime("outcomes-test").unwrap();
        let url = server.url();
        rt.block_on(async move {
            let names = Names::new("bt").unwrap();
            let s = crate::server::Server::connect(&url, names).await.unwrap();
            let o = &s.outcomes;
            let ok = |n: u64| Stored {
                ended: crate::Ended::Succeeded,
                attempts: 1,
                reply: named_tasks::wire::Reply::Ok {
                    id: n,
                    payload: n.to_le_bytes().to_vec(),
                },
            };
            let ids: Vec<String> = (0..200).map(|_| names::task_id(None)).collect();
            let values: Vec<Stored> = (0..ids.len()).map(|n| ok(n as u64)).collect();
            let marks: Vec<Mark> =
                futures::future::join_all(ids.iter().zip(&values).map(|(id, v)| o.record(id, v)))
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
            let messages: std::collections::BTreeSet<u64> = marks.iter().map(|m| m.seq).collect();
            assert!(
                messages.len() < ids.len(),
                "200 outcomes recorded at once took {} messages",
                messages.len()
            );
            // A second outcome of an id comes later and is never the one read.
            let again = o
                .record(&ids[7], &crate::stored::cancelled(&ids[7]))
                .await
                .unwrap();
            assert!(again > marks[7]);
            // Reads that come together share one scan; each gets its own answer.
            let unknown = names::task_id(None);
            let asked = [&ids[0], &ids[7], &unknown, &ids[199]];
            let answers = futures::future::join_all(asked.iter().map(|id| o.first(id, None))).await;
            let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
            assert_eq!(
                answers,
                vec![
                    Some((marks[0], ok(0))),
                    Some((marks[7], ok(7))),
                    None,
                    Some((marks[199], ok(199))),
                ]
            );
            // A keyed id has its own subject.
            let keyed = names::id_from_key("job-1");
            let mark = o.record(&keyed, &ok(1)).await.unwrap();
            assert_eq!(mark.index, 0);
            assert_eq!(o.first(&keyed, None).await.unwrap(), Some((mark, ok(1))));
            // A re-read from the start sees every outcome, in order.
            let mut all = Vec::new();
            o.read_after(0, |seen| {
                all.extend(seen.entries().map(|(m, id, _)| (m, id.to_owned())));
                true
            })
            .await
            .unwrap();
            assert_eq!(all.len(), ids.len() + 2);
            assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
            assert_eq!(o.last_seq().await.unwrap(), all.last().unwrap().0.seq);
        });
    }

    #[test]
    fn a_part_takes_what_fits_and_at_least_one() {
        let pending = |n: usize| {
            let (done, _) = oneshot::channel();
            Pending {
                id: "t-1-a".into(),
                stored: vec![0; n],
                done,
            }
        };
        let mut taken = vec![pending(BATCH_BYTES), pending(10), pending(10)];
        assert_eq!(take_part(&mut taken).len(), 1);
        assert_eq!(take_part(&mut taken).len(), 2);
        assert!(taken.is_empty());
    }
}
