//! The envelope of a task message: what a worker needs besides the request (the task's
//! durable id, its route's attempts and first backoff, the call's key), in a few bytes
//! before the wire request.
//!
//! It is the payload's prefix rather than NATS headers: headers cost the client several
//! microseconds per message to build and to parse (a header map per message), and the
//! server a scan of them on every publish, for fields only the worker reads.
//!
//! Layout: `b'Y'`, attempts `u32` LE, first backoff in ms `u64` LE, id length `u16` LE,
//! the id, key length `u16` LE (`u16::MAX`: no key), the key, then the wire request.

use named_tasks::wire::Message;

/// A task message's envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    /// The task's durable id.
    pub(crate) id: &'a str,
    /// Attempts the route gives it.
    pub(crate) attempts: u32,
    /// The first retry's delay in milliseconds (doubled per attempt).
    pub(crate) backoff_ms: u64,
    /// The call's key (`Task::call_keyed`), which per-key limits count.
    pub(crate) key: Option<&'a str>,
}

const TAG: u8 = b'Y';
const NO_KEY: u16 = u16::MAX;

impl<'a> Envelope<'a> {
    /// The envelope followed by `request` in the wire form.
    pub(crate) fn wrap(&self, request: &Message) -> Vec<u8> {
        let key = self.key.unwrap_or("");
        let mut out = Vec::with_capacity(64 + self.id.len() + key.len());
        out.push(TAG);
        out.extend_from_slice(&self.attempts.to_le_bytes());
        out.extend_from_slice(&self.backoff_ms.to_le_bytes());
        put_str(&mut out, self.id);
        match self.key {
            Some(k) => put_str(&mut out, k),
            None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
        }
        request.encode_into(&mut out);
        out
    }

    /// The envelope of `payload` and the request after it; `None` if it has none.
    pub(crate) fn unwrap(payload: &'a [u8]) -> Option<(Envelope<'a>, &'a [u8])> {
        let (&tag, rest) = payload.split_first()?;
        if tag != TAG {
            return None;
        }
        let (attempts, rest) = rest.split_first_chunk::<4>()?;
        let (backoff, rest) = rest.split_first_chunk::<8>()?;
        let (id, rest) = take_str(rest)?;
        let (key_len, after) = rest.split_first_chunk::<2>()?;
        let (key, rest) = if u16::from_le_bytes(*key_len) == NO_KEY {
            (None, after)
        } else {
            let (k, rest) = take_str(rest)?;
            (Some(k), rest)
        };
        Some((
            Envelope {
                id,
                attempts: u32::from_le_bytes(*attempts),
                backoff_ms: u64::from_le_bytes(*backoff),
                key,
            },
            rest,
        ))
    }
}

/// Ids and keys are at most 65,534 bytes (a longer one is cut, at a char boundary).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(usize::from(NO_KEY - 1));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    Some((std::str::from_utf8(s).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_comes_back_as_it_went_and_garbage_is_refused() {
        for key in [None, Some("user-7"), Some("")] {
            let e = Envelope {
                id: "t-00ff",
                attempts: 3,
                backoff_ms: 1500,
                key,
            };
            let request = Message::Hello { pid: 1 };
            let wrapped = e.wrap(&request);
            let (back, rest) = Envelope::unwrap(&wrapped).expect("an envelope");
            assert_eq!(back, e);
            assert_eq!(Message::decode(rest).expect("the request"), request);
        }
        assert!(Envelope::unwrap(b"").is_none());
        assert!(Envelope::unwrap(b"{\"json\":1}").is_none());
        let cut = Envelope {
            id: "abc",
            attempts: 1,
            backoff_ms: 0,
            key: None,
        }
        .wrap(&Message::Hello { pid: 1 });
        let cut = &cut[..cut.len() - Message::Hello { pid: 1 }.encode().len()];
        for end in 0..cut.len() {
            assert!(Envelope::unwrap(&cut[..end]).is_none(), "cut at {end}");
        }
    }
}
