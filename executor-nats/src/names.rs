//! Where things live on the server: stream, subject, consumer and key names, the
//! headers a dead letter carries, and durable task ids.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Header on a dead letter: the task's durable id.
pub(crate) const ID: &str = "Switchyard-Id";
/// Header on a dead letter: the attempts that ran to an answer.
pub(crate) const ATTEMPTS: &str = "Switchyard-Attempts";
/// Header on a dead letter: the last error.
pub(crate) const ERROR: &str = "Switchyard-Error";

/// The names of one deployment's stream, bucket and subjects, all under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    /// `prefix` must be letters, digits, `_` or `-` (it names streams and subjects).
    pub(crate) fn new(prefix: &str) -> Result<Self, String> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!(
                "prefix {prefix:?} must be letters, digits, '_' or '-' (it names streams)"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The work-queue stream of every task.
    pub(crate) fn stream(&self) -> String {
        format!("{}_tasks", self.prefix)
    }

    /// The subjects of the task stream.
    pub(crate) fn subjects(&self) -> String {
        format!("{}.task.>", self.prefix)
    }

    /// The subject a task called `name` is published on.
    pub(crate) fn subject(&self, name: &str) -> String {
        format!("{}.task.{name}", self.prefix)
    }

    /// The stream of dead letters.
    pub(crate) fn dead_stream(&self) -> String {
        format!("{}_dead", self.prefix)
    }

    /// The dead stream's subjects.
    pub(crate) fn dead_subjects(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// Where a dead task called `name` goes.
    pub(crate) fn dead_subject(&self, name: &str) -> String {
        format!("{}.dead.{name}", self.prefix)
    }

    /// The key-value bucket of failed-attempt counts and per-key holders.
    pub(crate) fn bucket(&self) -> String {
        format!("{}_state", self.prefix)
    }

    /// The stream of outcomes ([`crate::outcomes`]).
    pub(crate) fn outcome_stream(&self) -> String {
        format!("{}_outcomes", self.prefix)
    }

    /// The outcomes stream's subjects.
    pub(crate) fn outcome_subjects(&self) -> String {
        format!("{}.outcome.>", self.prefix)
    }

    /// Where the outcomes of keyed task `id` go (the first one stands).
    pub(crate) fn outcome_subject(&self, id: &str) -> String {
        format!("{}.outcome.{id}", self.prefix)
    }

    /// Where the outcomes of fresh ids go, many to a message (no id is `batch`: every
    /// id starts `t-`, `k-` or `x-`).
    pub(crate) fn outcome_batch_subject(&self) -> String {
        format!("{}.outcome.batch", self.prefix)
    }

    /// The key-value bucket of ids cancelled by id, which every worker follows.
    pub(crate) fn cancel_bucket(&self) -> String {
        format!("{}_cancels", self.prefix)
    }

    /// The durable pull consumer every worker shares for the task called `name`.
    pub(crate) fn consumer(&self, name: &str) -> String {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{}_{name}", self.prefix)
    }
}

/// The key counting the failed attempts of task `id`.
pub(crate) fn failures_key(id: &str) -> String {
    format!("a.{id}")
}

/// The key holding who runs tasks called `name` with key `key` (per-key limits).
pub(crate) fn slot_key(name: &str, key: &str) -> String {
    format!("l.{}.{}", id_from_key(name), id_from_key(key))
}

/// A task's durable id: from its key (an idempotency key: the same key is the same task)
/// when it has one, else fresh and unique.
pub(crate) fn task_id(key: Option<&str>) -> String {
    match key {
        Some(key) => id_from_key(key),
        None => fresh_id(),
    }
}

/// True for an id made from a key (which may have ended before it was enqueued again).
pub(crate) fn is_keyed(id: &str) -> bool {
    !id.starts_with("t-")
}

/// `k-KEY` when the key is made of characters a bucket key allows, else `x-HEX`.
pub(crate) fn id_from_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='));
    if plain {
        format!("k-{key}")
    } else {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

/// `t-MILLIS-SEEDCOUNTER`, all hex: when it was made (by this machine's clock, so a
/// reader by id knows where in the outcomes stream to start), a process-random 64-bit
/// seed (std's `RandomState` is seeded from the OS) and a counter.
fn fresh_id() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    format!(
        "t-{:x}-{seed:016x}{:x}",
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// When a fresh id was made, in milliseconds since the Unix epoch; `None` for a keyed id
/// or one from before ids said so.
pub(crate) fn made_at_ms(id: &str) -> Option<u64> {
    let (ms, _) = id.strip_prefix("t-")?.split_once('-')?;
    u64::from_str_radix(ms, 16).ok()
}

/// Milliseconds since the Unix epoch by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_keys_are_stable_and_valid_bucket_keys() {
        assert_eq!(id_from_key("job-7"), "k-job-7");
        assert_eq!(id_from_key("a b"), "x-612062");
        assert_eq!(task_id(Some("x")), task_id(Some("x")));
        assert_ne!(task_id(None), task_id(None));
        let fresh = task_id(None);
        let made = made_at_ms(&fresh).expect("a fresh id says when it was made");
        assert!(made.abs_diff(now_ms()) < 60_000, "{fresh}");
        assert!(!is_keyed(&fresh));
        assert_eq!(made_at_ms("t-00ff"), None);
        assert_eq!(made_at_ms("k-job-7"), None);
        assert!(Names::new("bad.prefix").is_err());
        assert_eq!(
            Names::new("s").unwrap().consumer("math.double"),
            "s_math_double"
        );
    }
}
