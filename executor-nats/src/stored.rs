//! What the outcomes stream holds per task: how it ended, after how many attempts, and
//! the wire [`Reply`] (the encoded value, or the last error).

use named_tasks::wire::{Message, Reply};

/// How a stored task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It returned a value.
    Succeeded,
    /// Dead-lettered after its attempts (or a permanent error); the reply holds the last
    /// error.
    Dead,
    /// Cancelled by id before a result was stored.
    Cancelled,
}

/// A finished task as the outcomes stream has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// How it ended.
    pub ended: Ended,
    /// Attempts that ran to an answer (a delivery lost with its worker does not count).
    pub attempts: u32,
    /// The value or the last error, in the wire form.
    pub reply: Reply,
}

impl Stored {
    /// `tag, attempts: u32 LE, wire reply`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![match self.ended {
            Ended::Succeeded => b'S',
            Ended::Dead => b'D',
            Ended::Cancelled => b'C',
        }];
        out.extend_from_slice(&self.attempts.to_le_bytes());
        Message::Reply(self.reply.clone()).encode_into(&mut out);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Stored, String> {
        if bytes.len() < 5 {
            return Err("a stored result too short".into());
        }
        let ended = match bytes[0] {
            b'S' => Ended::Succeeded,
            b'D' => Ended::Dead,
            b'C' => Ended::Cancelled,
            t => return Err(format!("a stored result with tag {t}")),
        };
        let attempts = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        match Message::decode(&bytes[5..]) {
            Ok(Message::Reply(reply)) => Ok(Stored {
                ended,
                attempts,
                reply,
            }),
            Ok(other) => Err(format!("expected a reply, found {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The result a task cancelled by id gets.
pub(crate) fn cancelled(id: &str) -> Stored {
    Stored {
        ended: Ended::Cancelled,
        attempts: 0,
        reply: Reply::Err {
            id: 0,
            kind: named_tasks::wire::ErrorKind::Failed,
            message: format!("task {id} was cancelled by id"),
        },
    }
}

/// A dead-lettered task, from the dead-letter stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its durable id.
    pub id: String,
    /// The task name.
    pub name: String,
    /// Attempts that ran to an answer.
    pub attempts: u32,
    /// The last error.
    pub error: String,
}
