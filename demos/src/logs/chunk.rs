//! Cutting input into chunks of about a fixed size that end at line ends, two ways.
//!
//! - [`Chunker`], for streams (`.gz`, pipes): each chunk is filled to the chunk size, then
//!   cut after its last newline; the bytes after the cut are carried into the next chunk.
//! - [`read_range`], for plain files: chunk `i` owns the lines that *start* in the byte
//!   range `[i*size, (i+1)*size)`; it reads that range (plus one byte before it, and the
//!   rest of its last line after it) by positional reads, so chunks can be read in
//!   parallel by the tasks that map them.
//!
//! Either way every line lies in exactly one chunk, whatever the chunk size, and a line
//! longer than a chunk makes its chunk grow until the line ends. Buffers are supplied by
//! the caller and reused: nothing is allocated per chunk once they reach working size.

use anyhow::{Context, Result};
use memchr::{memchr, memrchr};
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

/// Fills `buf` with chunk `[start, start + size)` of `file` (of length `file_len`): the lines
/// that start in that range, whole. Every byte of the file belongs to exactly one chunk.
pub(crate) fn read_range(
    file: &File,
    file_len: u64,
    start: u64,
    size: u64,
    buf: &mut ChunkBuf,
) -> Result<()> {
    buf.start = 0;
    buf.len = 0;
    let hi = (start + size.max(1)).min(file_len);
    if start >= hi {
        return Ok(());
    }
    // One byte before the range tells whether a line starts at `start`.
    let lo = start.saturating_sub(1);
    let want = (hi - lo) as usize;
    buf.ensure(want);
    let mut len = read_full_at(file, &mut buf.data[..want], lo)?;
    let first = if start == 0 {
        0
    } else {
        // A line starting in [start, hi) follows a newline in [start - 1, hi - 1).
        match memchr(b'\n', &buf.data[..len.min(want - 1)]) {
            Some(p) => p + 1,
            None => return Ok(()),
        }
    };
    // The last line owned starts before `hi`: it ends at the first newline at or after hi - 1.
    let end = if len < want || hi == file_len {
        len
    } else {
        let mut scan = want - 1;
        loop {
            if let Some(p) = memchr(b'\n', &buf.data[scan..len]) {
                break scan + p + 1;
            }
            scan = len;
            let more = size.max(1 << 16) as usize;
            buf.ensure(len + more);
            let n = read_full_at(file, &mut buf.data[len..len + more], lo + len as u64)?;
            if n == 0 {
                break len;
            }
            len += n;
        }
    };
    buf.start = first;
    buf.len = end.saturating_sub(first);
    Ok(())
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

    fn cut_ranges(input: &[u8], size: u64) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, input).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = ChunkBuf::default();
        let mut out = Vec::new();
        let mut start = 0;
        while start < input.len() as u64 {
            read_range(&file, input.len() as u64, start, size, &mut buf).unwrap();
            out.push(buf.bytes().to_vec());
            start += size;
        }
        out
    }

    #[test]
    fn ranges_own_the_lines_that_start_in_them() {
        let input = b"aa\nbbbb\n\nc\ndddddddddd\ne";
        for size in 1..30 {
            let chunks = cut_ranges(input, size);
            assert_eq!(chunks.concat(), input, "size {size}");
            for (i, c) in chunks.iter().enumerate() {
                let i = i as u64;
                if !c.is_empty() && i > 0 {
                    // The chunk's first line starts inside its range.
                    let at = chunks[..i as usize].iter().map(Vec::len).sum::<usize>() as u64;
                    assert!(
                        at >= i * size && at < (i + 1) * size,
                        "size {size} chunk {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_input_has_no_chunk() {
        assert!(cut(b"", 4).is_empty());
    }
}
