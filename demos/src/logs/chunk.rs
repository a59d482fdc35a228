//! Cutting a byte stream into chunks of about a fixed size that end at line ends.
//!
//! Each chunk is filled to the chunk size, then cut after its last newline; the bytes
//! after the cut (the start of a line that continues in the next read) are carried into
//! the next chunk. So every line lies in exactly one chunk, whatever the chunk size. A
//! line longer than a chunk makes its chunk grow until the line ends. Buffers are
//! supplied by the caller and reused: nothing is allocated per chunk once the buffers
//! have reached their working size.

use anyhow::{Context, Result};
use memchr::memrchr;
use std::io::{ErrorKind, Read};

/// A reusable chunk buffer. `data` stays initialised at its full length (written once, then
/// reused) and `len` says how much of it the current chunk uses.
#[derive(Debug, Default)]
pub(crate) struct ChunkBuf {
    data: Vec<u8>,
    len: usize,
    /// Global number of the chunk now in the buffer.
    pub(crate) index: usize,
}

impl ChunkBuf {
    /// The bytes of the current chunk.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Reads `reader` in chunks of about `chunk_size` bytes cut at line ends.
pub(crate) struct Chunker<R> {
    reader: R,
    chunk_size: usize,
    carry: Vec<u8>,
    eof: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`; `chunk_size` is at least 1.
    pub(crate) fn new(reader: R, chunk_size: usize) -> Self {
        Chunker {
            reader,
            chunk_size: chunk_size.max(1),
            carry: Vec::new(),
            eof: false,
        }
    }

    fn read_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.reader.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("reading the log"),
            }
        }
    }

    /// Fills `buf` with the next chunk. Returns `false` (and leaves `buf` empty) at the end.
    pub(crate) fn fill(&mut self, buf: &mut ChunkBuf) -> Result<bool> {
        let want = self.chunk_size.max(self.carry.len() + 1);
        if buf.data.len() < want {
            buf.data.resize(want, 0);
        }
        let mut len = self.carry.len();
        buf.data[..len].copy_from_slice(&self.carry);
        self.carry.clear();
        // The carried bytes hold no newline: scan only what is read after them.
        let mut scanned = len;
        let cut = loop {
            if len >= self.chunk_size {
                if let Some(p) = memrchr(b'\n', &buf.data[scanned..len]) {
                    break scanned + p + 1;
                }
                scanned = len;
            }
            if self.eof {
                break len;
            }
            let end = if len < self.chunk_size {
                self.chunk_size
            } else {
                // A line longer than the chunk: grow until it ends.
                len + self.chunk_size
            };
            if buf.data.len() < end {
                buf.data.resize(end, 0);
            }
            match self.read_into(&mut buf.data[len..end])? {
                0 => self.eof = true,
                n => len += n,
            }
        };
        self.carry.extend_from_slice(&buf.data[cut..len]);
        buf.len = cut;
        Ok(cut > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(input: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(input, size);
        let mut buf = ChunkBuf::default();
        let mut out = Vec::new();
        while c.fill(&mut buf).unwrap() {
            out.push(buf.bytes().to_vec());
        }
        out
    }

    #[test]
    fn chunks_end_at_newlines_and_cover_the_input() {
        let input = b"aa\nbbbb\n\nc\ndddddddddd\ne";
        for size in 1..30 {
            let chunks = cut(input, size);
            assert_eq!(chunks.concat(), input, "size {size}");
            let last = chunks.len() - 1;
            for (i, c) in chunks.iter().enumerate() {
                assert!(!c.is_empty());
                if i < last {
                    assert_eq!(c.last(), Some(&b'\n'), "size {size}");
                }
            }
        }
    }

    #[test]
    fn empty_input_has_no_chunk() {
        assert!(cut(b"", 4).is_empty());
    }
}
