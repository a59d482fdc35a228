//! The wire form of a named-task call: what a backend that crosses a boundary (worker
//! processes today; a durable queue or a cluster next) sends and gets back.
//!
//! A message is a byte string; on a stream (a pipe, a socket) each message travels as a
//! **frame**: its length as a little-endian `u32`, then the message. Queues that keep
//! messages whole (a SQLite row, a NATS message) store the message without the length.
//! Integers are little-endian. Every message starts with a tag byte and the
//! [`VERSION`] byte:
//!
//! | message | layout after `tag, version` |
//! |---|---|
//! | `b'H'` hello (worker → caller, once, when ready) | `pid: u32` |
//! | `b'Q'` request | `id: u64, attempt: u32, codec: u8, name_len: u16, name: [u8], payload: [u8]` (rest) |
//! | `b'R'` result | `id: u64, payload: [u8]` (rest) |
//! | `b'E'` error | `id: u64, kind: u8, message: [u8]` (rest, UTF-8) |
//!
//! `id` is the caller's task id (a reply names the request it answers), `attempt` counts
//! retries from 1, `codec` is [`Codec::to_byte`], `payload` holds the arguments or the
//! result encoded with that codec. Error kinds are [`ErrorKind`]'s bytes. A reader that
//! meets an unknown tag, version or kind refuses the message rather than guess.

use crate::Codec;
use std::io::{self, Read, Write};

/// The version byte of every message.
pub const VERSION: u8 = 1;

/// The largest frame a reader accepts (256 MiB): a corrupt length fails at once instead
/// of allocating without bound.
pub const MAX_FRAME: usize = 256 << 20;

/// A call to run: which task, which attempt, and its encoded arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The caller's task id.
    pub id: u64,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The task's registered name.
    pub name: String,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded arguments.
    pub payload: Vec<u8>,
}

/// Why a call produced no result, as a worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No task of that name is registered where the call arrived.
    UnknownTask,
    /// The arguments did not decode as the task's argument type.
    BadArgs,
    /// The task returned an error of its own.
    Failed,
    /// The task panicked.
    Panicked,
    /// The task's result would not encode.
    BadResult,
    /// The request named a codec the worker does not know.
    BadCodec,
}

impl ErrorKind {
    const ALL: [ErrorKind; 6] = [
        ErrorKind::UnknownTask,
        ErrorKind::BadArgs,
        ErrorKind::Failed,
        ErrorKind::Panicked,
        ErrorKind::BadResult,
        ErrorKind::BadCodec,
    ];

    /// The kind's byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            ErrorKind::UnknownTask => 1,
            ErrorKind::BadArgs => 2,
            ErrorKind::Failed => 3,
            ErrorKind::Panicked => 4,
            ErrorKind::BadResult => 5,
            ErrorKind::BadCodec => 6,
        }
    }

    /// The kind with this byte.
    pub fn from_byte(byte: u8) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.to_byte() == byte)
    }
}

/// A worker's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The encoded result (same codec as the request).
    Ok {
        /// The request's id.
        id: u64,
        /// The encoded result.
        payload: Vec<u8>,
    },
    /// No result, and why.
    Err {
        /// The request's id.
        id: u64,
        /// What went wrong.
        kind: ErrorKind,
        /// A human-readable account (the task's error or panic message, the codec's error).
        message: String,
    },
}

impl Reply {
    /// The id of the request this answers.
    pub fn id(&self) -> u64 {
        match self {
            Reply::Ok { id, .. } | Reply::Err { id, .. } => *id,
        }
    }
}

/// Any message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A worker is ready; its process id.
    Hello {
        /// The worker's process id.
        pid: u32,
    },
    /// A call to run.
    Request(Request),
    /// An answer.
    Reply(Reply),
}

impl Message {
    /// Appends the message's bytes (without a frame length) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Message::Hello { pid } => {
                out.extend_from_slice(&[b'H', VERSION]);
                out.extend_from_slice(&pid.to_le_bytes());
            }
            Message::Request(r) => {
                out.extend_from_slice(&[b'Q', VERSION]);
                out.extend_from_slice(&r.id.to_le_bytes());
                out.extend_from_slice(&r.attempt.to_le_bytes());
                out.push(r.codec.to_byte());
                let name = r.name.as_bytes();
                let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&name[..usize::from(len)]);
                out.extend_from_slice(&r.payload);
            }
            Message::Reply(Reply::Ok { id, payload }) => {
                out.extend_from_slice(&[b'R', VERSION]);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(payload);
            }
            Message::Reply(Reply::Err { id, kind, message }) => {
                out.extend_from_slice(&[b'E', VERSION]);
                out.extend_from_slice(&id.to_le_bytes());
                out.push(kind.to_byte());
                out.extend_from_slice(message.as_bytes());
            }
        }
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Parses one message.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let mut r = Cursor(bytes);
        let tag = r.u8()?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError(format!(
                "wire version {version}, expected {VERSION}"
            )));
        }
        Ok(match tag {
            b'H' => Message::Hello { pid: r.u32()? },
            b'Q' => {
                let id = r.u64()?;
                let attempt = r.u32()?;
                let codec = r.u8()?;
                let codec = Codec::from_byte(codec)
                    .ok_or_else(|| WireError(format!("unknown codec byte {codec}")))?;
                let len = usize::from(r.u16()?);
                let name = String::from_utf8(r.take(len)?.to_vec())
                    .map_err(|_| WireError("a task name that is not UTF-8".into()))?;
                Message::Request(Request {
                    id,
                    attempt,
                    name,
                    codec,
                    payload: r.0.to_vec(),
                })
            }
            b'R' => Message::Reply(Reply::Ok {
                id: r.u64()?,
                payload: r.0.to_vec(),
            }),
            b'E' => {
                let id = r.u64()?;
                let kind = r.u8()?;
                let kind = ErrorKind::from_byte(kind)
                    .ok_or_else(|| WireError(format!("unknown error kind {kind}")))?;
                Message::Reply(Reply::Err {
                    id,
                    kind,
                    message: String::from_utf8_lossy(r.0).into_owned(),
                })
            }
            other => return Err(WireError(format!("unknown message tag {other:#04x}"))),
        })
    }
}

/// A message that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError("message is cut short".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Writes `message` as one frame (length, then bytes); `scratch` is reused between calls.
/// Does not flush.
pub fn write_frame(w: &mut impl Write, message: &Message, scratch: &mut Vec<u8>) -> io::Result<()> {
    scratch.clear();
    scratch.extend_from_slice(&[0; 4]);
    message.encode_into(scratch);
    let len = u32::try_from(scratch.len() - 4)
        .ok()
        .filter(|l| (*l as usize) <= MAX_FRAME)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "message too large for a frame")
        })?;
    scratch[..4].copy_from_slice(&len.to_le_bytes());
    w.write_all(scratch)
}

/// Reads one frame into `buf` and parses it; `Ok(None)` on a clean end of stream before
/// a frame starts.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<Option<Message>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than the limit"),
        ));
    }
    buf.clear();
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(Some(Message::decode(buf)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello { pid: 4242 },
            Message::Request(Request {
                id: 7,
                attempt: 2,
                name: "img.resize".into(),
                codec: Codec::MsgPack,
                payload: vec![1, 2, 3],
            }),
            Message::Reply(Reply::Ok {
                id: 7,
                payload: b"{\"w\":3}".to_vec(),
            }),
            Message::Reply(Reply::Err {
                id: 9,
                kind: ErrorKind::Panicked,
                message: "boom — ünïcode".into(),
            }),
        ]
    }

    #[test]
    fn frames_round_trip_on_a_stream() {
        let mut stream = Vec::new();
        let mut scratch = Vec::new();
        for m in samples() {
            write_frame(&mut stream, &m, &mut scratch).unwrap();
        }
        let mut r = &stream[..];
        let mut buf = Vec::new();
        for m in samples() {
            assert_eq!(read_frame(&mut r, &mut buf).unwrap(), Some(m));
        }
        assert_eq!(read_frame(&mut r, &mut buf).unwrap(), None);
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let ok = samples()[1].encode();
        for cut in 0..ok.len() - 3 {
            // Cut before the payload: every prefix shorter than the header fails.
            if cut < 2 + 8 + 4 + 1 + 2 + "img.resize".len() {
                assert!(Message::decode(&ok[..cut]).is_err(), "prefix {cut}");
            }
        }
        let mut v = ok.clone();
        v[1] = 99;
        assert!(
            Message::decode(&v)
                .unwrap_err()
                .to_string()
                .contains("version 99")
        );
        let mut v = ok;
        v[0] = b'Z';
        assert!(Message::decode(&v).unwrap_err().to_string().contains("tag"));
        let mut stream = Vec::new();
        stream.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame(&mut &stream[..], &mut Vec::new()).is_err());
        assert!(read_frame(&mut &[1u8, 0][..], &mut Vec::new()).is_err());
    }
}
