//! JetStream publishes whose acks all come back on one subscription of this connection.
//!
//! The client's own `jetstream::Context::publish` makes, for every message, a fresh
//! inbox name, an entry in its request table, a timer for the ack's timeout, and a parse
//! of the ack through a buffered untagged enum: together a few microseconds of client CPU
//! per message, about as much as the rest of a job's work in the worker. Here a message's
//! reply subject is `PREFIX.N` (one prefix per connection, N counting up), one reader
//! hands each ack to the message's waiter by N, and one sweep a second fails the acks
//! that are overdue.

use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use executor_core::backend::lock;

/// How long a published message may go without its ack before it counts as failed (the
/// client's own default for JetStream publish acks).
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the reader looks for overdue acks.
const SWEEP: Duration = Duration::from_secs(1);

/// What an ack says: the message's stream sequence, or why it was not stored.
pub(crate) type Acked = Result<u64, String>;

/// Publishes to JetStream and collects the acks (cheap to clone: one connection's).
#[derive(Clone, Debug)]
pub(crate) struct Acks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    /// `_INBOX.<unique>.`: every ack of this connection comes to `prefix` + N.
    prefix: String,
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiter>>,
    /// Dropped with the last `Acks`: the reader then unsubscribes and ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

#[derive(Debug)]
struct Waiter {
    tx: tokio::sync::oneshot::Sender<Acked>,
    since: Instant,
}

impl Acks {
    /// Subscribes to this connection's acks and starts their reader on the current
    /// runtime.
    pub(crate) async fn start(
        client: &async_nats::Client,
    ) -> Result<Self, async_nats::SubscribeError> {
        let prefix = format!("{}.", client.new_inbox());
        let subscriber = client.subscribe(format!("{prefix}*")).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let inner = Arc::new(Inner {
            client: client.clone(),
            prefix,
            next: AtomicU64::new(0),
            waiting: Mutex::new(HashMap::new()),
            _stop: stop,
        });
        tokio::spawn(read(Arc::downgrade(&inner), subscriber, stopped));
        Ok(Self { inner })
    }

    /// Sends `payload` (with `headers`, if any) to `subject` and returns the wait for the
    /// server's ack; an error when it could not be handed to the connection.
    pub(crate) async fn publish(
        &self,
        subject: String,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Result<impl Future<Output = Acked> + Send + use<>, String> {
        let inner = &self.inner;
        let n = inner.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let since = Instant::now();
        lock(&inner.waiting).insert(n, Waiter { tx, since });
        let reply = format!("{}{n}", inner.prefix);
        let sent = match headers {
            Some(h) => {
                inner
                    .client
                    .publish_with_reply_and_headers(subject, reply, h, payload)
                    .await
            }
            None => {
                inner
                    .client
                    .publish_with_reply(subject, reply, payload)
                    .await
            }
        };
        if let Err(e) = sent {
            lock(&inner.waiting).remove(&n);
            return Err(e.to_string());
        }
        Ok(async move {
            rx.await
                .unwrap_or_else(|_| Err("the connection's ack reader ended".into()))
        })
    }

    /// [`publish`](Self::publish), and the wait for its ack.
    pub(crate) async fn publish_acked(
        &self,
        subject: String,
        headers: Option<async_nats::HeaderMap>,
        payload: Bytes,
    ) -> Acked {
        self.publish(subject, headers, payload).await?.await
    }
}

/// The reader: hands each ack to its waiter, and fails the overdue ones.
async fn read(
    inner: std::sync::Weak<Inner>,
    mut acks: async_nats::Subscriber,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            m = acks.next() => {
                let Some(m) = m else { break };
                let Some(inner) = inner.upgrade() else { break };
                let Some(n) = m
                    .subject
                    .as_str()
                    .strip_prefix(inner.prefix.as_str())
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                let waiter = lock(&inner.waiting).remove(&n);
                if let Some(w) = waiter {
                    let _ = w.tx.send(parse(&m));
                }
            }
            _ = sweep.tick() => {
                let Some(inner) = inner.upgrade() else { break };
                let late: Vec<Waiter> = {
                    let mut waiting = lock(&inner.waiting);
                    let overdue: Vec<u64> = waiting
                        .iter()
                        .filter(|(_, w)| w.since.elapsed() >= ACK_TIMEOUT)
                        .map(|(n, _)| *n)
                        .collect();
                    overdue.iter().filter_map(|n| waiting.remove(n)).collect()
                };
                for w in late {
                    let _ = w.tx.send(Err(format!("no ack from the server within {ACK_TIMEOUT:?}")));
                }
            }
            _ = &mut stopped => break,
        }
    }
    let _ = acks.unsubscribe().await;
}

/// Reads one ack: `{"stream":"S","seq":N}` (perhaps with more fields), a JSON error, or a
/// status message (503: no stream takes the subject).
fn parse(m: &async_nats::Message) -> Acked {
    if let Some(status) = m.status {
        let why = m.description.as_deref().unwrap_or("");
        return Err(if status == async_nats::StatusCode::NO_RESPONDERS {
            "no stream takes this subject (no responders)".to_owned()
        } else {
            format!("status {status} {why}")
        });
    }
    parse_body(&m.payload)
}

/// The JSON of an ack. Stream names hold no quotes, so `"error"` and `"seq":` can only be
/// keys.
fn parse_body(body: &[u8]) -> Acked {
    let text = std::str::from_utf8(body).map_err(|_| "an ack that is not UTF-8".to_owned())?;
    if text.contains("\"error\"") {
        let description = text
            .split_once("\"description\":\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or(text, |(d, _)| d);
        return Err(format!("the server refused the message: {description}"));
    }
    text.split_once("\"seq\":")
        .map(|(_, rest)| {
            rest.trim_start()
                .bytes()
                .take_while(u8::is_ascii_digit)
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
        })
        .filter(|&seq| seq > 0)
        .ok_or_else(|| format!("an ack without a sequence: {text}"))
}

#[cfg(test)]
mod tests {
    use super::parse_body;

    #[test]
    fn reads_acks_and_errors() {
        assert_eq!(parse_body(br#"{"stream":"t_tasks","seq":42}"#), Ok(42));
        assert_eq!(
            parse_body(br#"{"stream":"t","seq":7,"duplicate":true}"#),
            Ok(7)
        );
        let e = parse_body(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("maximum messages exceeded"), "{e}");
        assert!(parse_body(br#"{"stream":"t"}"#).is_err());
        assert!(parse_body(b"\xff").is_err());
    }
}
