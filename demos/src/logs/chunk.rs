//! Cutting input into chunks of about a fixed size that end at line ends, two ways.
//!
//! - [`Chunker`], for streams (`.gz`, pipes): each chunk is filled to the chunk size, then
//!   cut after its last newline; the bytes after the cut are carried into the next chunk.
//! - [`ChunkBuf::for_lines_in_range`], for plain files: chunk `i` owns the lines that
//!   *start* in the byte range `[i*size, (i+1)*size)`; it reads that range (plus one byte
//!   before it, and the rest of its last line after it) by positional reads in
//!   cache-sized pieces, so chunks are read in parallel by the tasks that map them.
//!
//! Either way every line lies in exactly one chunk, whatever the chunk size, and a line
//! longer than a chunk makes its chunk grow until the line ends. Buffers are supplied by
//! the caller and reused: nothing is allocated per chunk once they reach working size.

use anyhow::{Context, Result};
use memchr::{memchr, memchr_iter, memrchr};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;

/// A reusable chunk buffer. `data` stays initialised at its full length (written once, then
/// reused) and `len` says how much of it the current chunk uses.
#[derive(Debug, Default)]
pub(crate) struct ChunkBuf {
    data: Vec<u8>,
    start: usize,
    len: usize,
    /// Global number of the chunk now in the buffer.
    pub(crate) index: usize,
}

impl ChunkBuf {
    /// The bytes of the current chunk.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.start + self.len]
    }

    fn ensure(&mut self, len: usize) {
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
    }
}

/// Reads into `buf` from `offset` until `buf` is full or the file ends; returns the count.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the log"),
        }
    }
    Ok(done)
}

/// Bytes read at a time inside a range: small enough to stay in the CPU cache between
/// the copy from the page cache and the parse.
pub(crate) const PIECE: usize = 256 << 10;

impl ChunkBuf {
    /// Calls `line` for every line that starts in `[start, start + size)` of `file` (of
    /// length `file_len`), whole and without its `\n`, reading the file in pieces of `piece`
    /// bytes into this buffer. Returns the bytes of the lines visited (newlines included).
    /// Over consecutive ranges, every line of the file is visited exactly once.
    pub(crate) fn for_lines_in_range(
        &mut self,
        file: &File,
        file_len: u64,
        start: u64,
        size: u64,
        piece: usize,
        mut line: impl FnMut(&[u8]),
    ) -> Result<u64> {
        let result = self.visit_range(file, file_len, start, size, piece, &mut line);
        // A very long line grew the buffer; give that memory back rather than keep it for
        // every later chunk (long lines are rare, so the fresh memory is touched rarely).
        if self.data.len() > 4 * piece.max(1) {
            self.data.truncate(piece);
            self.data.shrink_to_fit();
        }
        result
    }

    fn visit_range(
        &mut self,
        file: &File,
        file_len: u64,
        start: u64,
        size: u64,
        piece: usize,
        line: &mut impl FnMut(&[u8]),
    ) -> Result<u64> {
        self.start = 0;
        self.len = 0;
        let hi = (start + size.max(1)).min(file_len);
        if start >= hi {
            return Ok(0);
        }
        // No bigger than the rest of the file: small files get small buffers.
        let piece = piece.min((file_len - start + 1) as usize).max(1);
        // `buf[0]` is at file offset `pos`; one byte before the range tells whether a line
        // starts at `start`.
        let mut pos = start.saturating_sub(1);
        let mut len = 0;
        // Index in the buffer where the current line starts, once the first one is found.
        let mut line_start = (start == 0).then_some(0);
        let owned_from = if start == 0 { 0 } else { u64::MAX };
        let mut owned_from = owned_from;
        loop {
            self.ensure(len + piece);
            let n = read_full_at(file, &mut self.data[len..len + piece], pos + len as u64)?;
            let eof = n < piece;
            let mut scan = len;
            len += n;
            let mut ls = match line_start {
                Some(ls) => ls,
                // A line starting in [start, hi) follows a newline in [start - 1, hi - 1).
                None => match memchr(b'\n', &self.data[scan..len]) {
                    Some(p) if pos + ((scan + p) as u64) < hi - 1 => {
                        owned_from = pos + (scan + p + 1) as u64;
                        scan += p + 1;
                        scan
                    }
                    Some(_) => return Ok(0),
                    None if eof || pos + len as u64 >= hi - 1 => return Ok(0),
                    None => {
                        pos += len as u64;
                        len = 0;
                        continue;
                    }
                },
            };
            for nl in memchr_iter(b'\n', &self.data[scan..len]) {
                let end = scan + nl;
                line(&self.data[ls..end]);
                ls = end + 1;
                // The line ending at or after hi - 1 is the last one that starts before hi.
                if pos + end as u64 >= hi - 1 {
                    return Ok(pos + ls as u64 - owned_from);
                }
            }
            if eof {
                if ls < len {
                    line(&self.data[ls..len]);
                }
                return Ok(pos + len as u64 - owned_from);
            }
            // Keep the unfinished line at the front; the next piece continues it.
            self.data.copy_within(ls..len, 0);
            pos += ls as u64;
            len -= ls;
            line_start = Some(0);
        }
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
        buf.start = 0;
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

    fn lines_by_range(input: &[u8], size: u64, piece: usize) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, input).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = ChunkBuf::default();
        let mut lines = Vec::new();
        let mut start = 0;
        let mut total = 0;
        while start < input.len() as u64 {
            total += buf
                .for_lines_in_range(&file, input.len() as u64, start, size, piece, |l| {
                    lines.push(l.to_vec())
                })
                .unwrap();
            start += size;
        }
        assert_eq!(total, input.len() as u64, "size {size} piece {piece}");
        lines
    }

    #[test]
    fn ranges_visit_every_line_once() {
        let input = b"aa\nbbbb\n\nc\ndddddddddd\ne";
        let want: Vec<Vec<u8>> = input.split(|c| *c == b'\n').map(<[u8]>::to_vec).collect();
        for size in 1..30 {
            for piece in [1, 2, 3, 7, 64] {
                assert_eq!(
                    lines_by_range(input, size, piece),
                    want,
                    "size {size} piece {piece}"
                );
            }
        }
        let ends_with_newline = b"x\n\nyy\n";
        for size in 1..10 {
            assert_eq!(lines_by_range(ends_with_newline, size, 2).len(), 3);
        }
    }

    #[test]
    fn empty_input_has_no_chunk() {
        assert!(cut(b"", 4).is_empty());
    }
}
