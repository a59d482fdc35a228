//! The metrics of a piece of log (one chunk, one file), how two pieces merge, and the
//! final report built from the merged whole.
//!
//! Every figure merges exactly (counts add, the latency histogram adds bucket by bucket,
//! malformed examples are ordered by position), so the report does not depend on how the
//! input was cut or in which order the partial results arrived.
//!
//! A finished [`Metrics`] has a serde form, so a chunk's partial result can come back from
//! a worker process: only what a merge reads travels, zero counts (a reused partial keeps
//! its keys) are left out, keys go as text when they are UTF-8 and as bytes otherwise, and
//! the histogram as its non-empty buckets. Decoding gives a partial that merges exactly as
//! the original would.

use super::parse::{METHODS, MinuteCache, format_minute, parse_line};
use hdrhistogram::Histogram;
use memchr::memchr_iter;
use rustc_hash::FxHashMap;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// How many malformed lines are kept as examples.
pub(crate) const EXAMPLES: usize = 5;
/// Malformed examples are cut to this many bytes.
const EXAMPLE_BYTES: usize = 160;
/// A reused partial keeps at most this many distinct paths (and clients) between chunks.
const KEEP_KEYS: usize = 1 << 16;
/// Highest request time the histogram tells apart: one hour, in microseconds.
const MAX_REQUEST_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_REQUEST_US, 2).expect("constant histogram bounds are valid")
}

/// Partial metrics of one piece of input. Cleared and reused, so its maps keep their
/// capacity from chunk to chunk.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) lines: u64,
    pub(crate) malformed: u64,
    /// The first malformed lines: line number within this piece (1-based) and text.
    pub(crate) examples: Vec<(u64, String)>,
    pub(crate) bytes_served: u64,
    pub(crate) status: Vec<u64>,
    pub(crate) methods: [u64; METHODS.len()],
    pub(crate) paths: FxHashMap<Box<[u8]>, u64>,
    /// Clients written as canonical IPv4 addresses, as numbers (cheap to hash and compare).
    pub(crate) ips4: FxHashMap<u32, u64>,
    /// Every other client (IPv6, host names, odd spellings), as written.
    pub(crate) ips: FxHashMap<Box<[u8]>, u64>,
    pub(crate) per_minute: BTreeMap<i64, u64>,
    pub(crate) request_time: Histogram<u64>,
    run_minute: i64,
    run_count: u64,
    cache: MinuteCache,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lines: 0,
            malformed: 0,
            examples: Vec::new(),
            bytes_served: 0,
            status: vec![0; 1000],
            methods: [0; METHODS.len()],
            paths: FxHashMap::default(),
            ips4: FxHashMap::default(),
            ips: FxHashMap::default(),
            per_minute: BTreeMap::new(),
            request_time: new_histogram(),
            run_minute: 0,
            run_count: 0,
            cache: MinuteCache::default(),
        }
    }
}

fn bump(map: &mut FxHashMap<Box<[u8]>, u64>, key: &[u8], n: u64) {
    match map.get_mut(key) {
        Some(c) => *c += n,
        None => {
            map.insert(key.into(), n);
        }
    }
}

impl Metrics {
    /// Empties the metrics, keeping allocated capacity.
    pub(crate) fn clear(&mut self) {
        self.lines = 0;
        self.malformed = 0;
        self.examples.clear();
        self.bytes_served = 0;
        self.status.iter_mut().for_each(|c| *c = 0);
        self.methods = [0; METHODS.len()];
        // Keep the keys (and their allocations) for the next chunk, which mostly sees the
        // same paths and clients; only zero the counts. Maps that grew past the cap start over.
        for map in [&mut self.paths, &mut self.ips] {
            if map.len() > KEEP_KEYS {
                *map = FxHashMap::default();
            } else {
                map.values_mut().for_each(|c| *c = 0);
            }
        }
        if self.ips4.len() > KEEP_KEYS {
            self.ips4 = FxHashMap::default();
        } else {
            self.ips4.values_mut().for_each(|c| *c = 0);
        }
        self.per_minute.clear();
        self.request_time.reset();
        self.run_count = 0;
    }

    /// Accounts one line (its bytes without the line ending).
    #[inline]
    pub(crate) fn add_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.lines += 1;
        let Some(e) = parse_line(line, &mut self.cache) else {
            self.malformed += 1;
            if self.examples.len() < EXAMPLES {
                let cut = &line[..line.len().min(EXAMPLE_BYTES)];
                self.examples
                    .push((self.lines, String::from_utf8_lossy(cut).into_owned()));
            }
            return;
        };
        self.bytes_served += e.bytes;
        self.status[usize::from(e.status)] += 1;
        self.methods[e.method] += 1;
        if let Some(p) = e.path {
            bump(&mut self.paths, p, 1);
        }
        match parse_ipv4(e.ip) {
            Some(ip) => *self.ips4.entry(ip).or_default() += 1,
            None => bump(&mut self.ips, e.ip, 1),
        }
        if let Some(us) = e.request_time_us {
            self.request_time.saturating_record(us);
        }
        if self.run_count > 0 && self.run_minute != e.minute {
            self.flush_run();
        }
        self.run_minute = e.minute;
        self.run_count += 1;
    }

    fn flush_run(&mut self) {
        if self.run_count > 0 {
            *self.per_minute.entry(self.run_minute).or_default() += self.run_count;
            self.run_count = 0;
        }
    }

    /// Accounts every line of `data`: lines end with `\n`; a last piece without one is a
    /// line too (the end of a file that lacks its final newline).
    pub(crate) fn add_chunk(&mut self, data: &[u8]) {
        let mut start = 0;
        for nl in memchr_iter(b'\n', data) {
            self.add_line(&data[start..nl]);
            start = nl + 1;
        }
        if start < data.len() {
            self.add_line(&data[start..]);
        }
        self.finish();
    }

    /// Must be called after the last [`Metrics::add_line`] of a piece.
    pub(crate) fn finish(&mut self) {
        self.flush_run();
    }

    /// Adds `other` into `self`. Malformed examples are not merged here (their line numbers
    /// need the position of each piece; see [`Accumulator`]).
    pub(crate) fn merge(&mut self, other: &Metrics) {
        debug_assert_eq!(other.run_count, 0, "merge of an unfinished piece");
        self.lines += other.lines;
        self.malformed += other.malformed;
        self.bytes_served += other.bytes_served;
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        for (a, b) in self.methods.iter_mut().zip(&other.methods) {
            *a += b;
        }
        for (k, v) in &other.paths {
            if *v > 0 {
                bump(&mut self.paths, k, *v);
            }
        }
        for (k, v) in &other.ips4 {
            if *v > 0 {
                *self.ips4.entry(*k).or_default() += v;
            }
        }
        for (k, v) in &other.ips {
            if *v > 0 {
                bump(&mut self.ips, k, *v);
            }
        }
        for (k, v) in &other.per_minute {
            *self.per_minute.entry(*k).or_default() += v;
        }
        self.request_time
            .add(&other.request_time)
            .expect("histograms with equal bounds always add");
    }
}

/// A map key as it travels: text when it is UTF-8 (readable in JSON), bytes otherwise.
struct Key<'a>(Cow<'a, [u8]>);

impl Serialize for Key<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Key<'_> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            // JSON writes bytes as an array of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_any(KeyVisitor).map(|v| Key(Cow::Owned(v)))
    }
}

/// The serde form of a finished [`Metrics`].
#[derive(Serialize, Deserialize)]
struct MetricsWire<'a> {
    lines: u64,
    malformed: u64,
    examples: Cow<'a, [(u64, String)]>,
    bytes_served: u64,
    /// Non-zero counts by status code.
    status: Vec<(u16, u64)>,
    methods: Cow<'a, [u64]>,
    paths: Vec<(Key<'a>, u64)>,
    ips4: Vec<(u32, u64)>,
    ips: Vec<(Key<'a>, u64)>,
    per_minute: Vec<(i64, u64)>,
    /// Non-empty histogram buckets: the highest value of the bucket and its count.
    request_time: Vec<(u64, u64)>,
}

fn counted_keys(map: &FxHashMap<Box<[u8]>, u64>) -> Vec<(Key<'_>, u64)> {
    map.iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| (Key(Cow::Borrowed(&k[..])), *v))
        .collect()
}

impl Serialize for Metrics {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.run_count != 0 {
            return Err(serde::ser::Error::custom(
                "partial metrics must be finished before they travel",
            ));
        }
        MetricsWire {
            lines: self.lines,
            malformed: self.malformed,
            examples: Cow::Borrowed(&self.examples),
            bytes_served: self.bytes_served,
            status: (0u16..)
                .zip(&self.status)
                .filter(|(_, c)| **c > 0)
                .map(|(code, c)| (code, *c))
                .collect(),
            methods: Cow::Borrowed(&self.methods),
            paths: counted_keys(&self.paths),
            ips4: self
                .ips4
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| (*k, *v))
                .collect(),
            ips: counted_keys(&self.ips),
            per_minute: self.per_minute.iter().map(|(k, v)| (*k, *v)).collect(),
            request_time: self
                .request_time
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = MetricsWire::deserialize(d)?;
        let mut m = Metrics {
            lines: w.lines,
            malformed: w.malformed,
            examples: w.examples.into_owned(),
            bytes_served: w.bytes_served,
            ..Metrics::default()
        };
        for (code, c) in w.status {
            let slot = m
                .status
                .get_mut(usize::from(code))
                .ok_or_else(|| D::Error::custom(format!("status code {code} out of range")))?;
            *slot = c;
        }
        m.methods = w.methods.as_ref().try_into().map_err(|_| {
            D::Error::custom(format!(
                "{} method counts, expected {}",
                w.methods.len(),
                METHODS.len()
            ))
        })?;
        m.paths = w
            .paths
            .into_iter()
            .map(|(k, v)| (k.0.into_owned().into_boxed_slice(), v))
            .collect();
        m.ips4 = w.ips4.into_iter().collect();
        m.ips = w
            .ips
            .into_iter()
            .map(|(k, v)| (k.0.into_owned().into_boxed_slice(), v))
            .collect();
        m.per_minute = w.per_minute.into_iter().collect();
        for (value, count) in w.request_time {
            m.request_time
                .record_n(value, count)
                .map_err(|e| D::Error::custom(format!("request time {value}: {e:?}")))?;
        }
        Ok(m)
    }
}

/// A malformed example before its line number is known.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    chunk: usize,
    local_line: u64,
    text: String,
}

/// Merges partial metrics as they complete, in any order, into the whole.
#[derive(Debug)]
pub(crate) struct Accumulator {
    total: Metrics,
    /// Lines in each chunk, by global chunk number (a few bytes per chunk).
    chunk_lines: Vec<u64>,
    /// The file of each chunk, by global chunk number.
    chunk_file: Vec<u32>,
    /// The global number of the first chunk of each file.
    file_first_chunk: Vec<usize>,
    files: Vec<String>,
    examples: Vec<Pending>,
    input_bytes: u64,
    /// Chunks mapped in another process (a worker of a process pool).
    pub(crate) remote_chunks: u64,
}

impl Accumulator {
    pub(crate) fn new() -> Self {
        Accumulator {
            total: Metrics::default(),
            chunk_lines: Vec::new(),
            chunk_file: Vec::new(),
            file_first_chunk: Vec::new(),
            files: Vec::new(),
            examples: Vec::new(),
            input_bytes: 0,
            remote_chunks: 0,
        }
    }

    /// Starts a new input file; its chunks are numbered from the returned global number.
    pub(crate) fn begin_file(&mut self, name: String) -> usize {
        self.files.push(name);
        self.file_first_chunk.push(self.chunk_file.len());
        self.chunk_file.len()
    }

    /// Reserves the next global chunk number for the current file.
    pub(crate) fn next_chunk(&mut self) -> usize {
        let file = u32::try_from(self.files.len() - 1).expect("fewer than 4 billion files");
        self.chunk_file.push(file);
        self.chunk_lines.push(0);
        self.chunk_file.len() - 1
    }

    /// Merges the finished metrics of chunk `chunk` (which held `bytes` input bytes).
    pub(crate) fn merge(&mut self, chunk: usize, bytes: u64, m: &Metrics) {
        self.chunk_lines[chunk] = m.lines;
        self.input_bytes += bytes;
        for (local_line, text) in &m.examples {
            self.examples.push(Pending {
                chunk,
                local_line: *local_line,
                text: text.clone(),
            });
        }
        self.examples.sort();
        self.examples.truncate(EXAMPLES);
        self.total.merge(m);
    }

    /// The report of everything merged, with the `top` most frequent paths and clients.
    pub(crate) fn summary(&self, top: usize) -> Summary {
        let t = &self.total;
        let malformed_examples = self
            .examples
            .iter()
            .map(|p| {
                let file = self.chunk_file[p.chunk] as usize;
                let first = self.file_first_chunk[file];
                let before: u64 = self.chunk_lines[first..p.chunk].iter().sum();
                MalformedExample {
                    file: self.files[file].clone(),
                    line: before + p.local_line,
                    text: p.text.clone(),
                }
            })
            .collect();
        let status = t
            .status
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(s, c)| (format!("{s:03}"), *c))
            .collect();
        let methods = METHODS
            .iter()
            .zip(t.methods)
            .filter(|(_, c)| *c > 0)
            .map(|(m, c)| ((*m).to_string(), c))
            .collect();
        let h = &t.request_time;
        let ms = |us: u64| us as f64 / 1000.0;
        let request_time_ms = RequestTimes {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        };
        let minutes = t.per_minute.len() as u64;
        let counted: u64 = t.per_minute.values().sum();
        let peak = t
            .per_minute
            .iter()
            .max_by_key(|(m, c)| (**c, std::cmp::Reverse(**m)));
        let requests_per_minute = PerMinute {
            minutes,
            mean: if minutes == 0 {
                0.0
            } else {
                counted as f64 / minutes as f64
            },
            peak: peak.map_or(0, |(_, c)| *c),
            peak_minute: peak.map(|(m, _)| format_minute(*m)),
            first_minute: t.per_minute.keys().next().map(|m| format_minute(*m)),
            last_minute: t.per_minute.keys().next_back().map(|m| format_minute(*m)),
            series: t
                .per_minute
                .iter()
                .map(|(m, c)| (format_minute(*m), *c))
                .collect(),
        };
        Summary {
            files: self.files.clone(),
            input_bytes: self.input_bytes,
            lines: t.lines,
            malformed: t.malformed,
            malformed_examples,
            bytes_served: t.bytes_served,
            status,
            methods,
            unique_paths: t.paths.len() as u64,
            unique_ips: (t.ips4.len() + t.ips.len()) as u64,
            top_paths: top_n(
                t.paths.iter().map(|(k, v)| (Cow::Borrowed(&k[..]), *v)),
                top,
            ),
            top_ips: top_n(
                t.ips
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(&k[..]), *v))
                    .chain(t.ips4.iter().map(|(ip, v)| {
                        let [a, b, c, d] = ip.to_be_bytes();
                        (Cow::Owned(format!("{a}.{b}.{c}.{d}").into_bytes()), *v)
                    })),
                top,
            ),
            requests_per_minute,
            request_time_ms,
        }
    }
}

/// The `n` largest counts, ties broken by key, so the result never depends on map order.
fn top_n<'a>(entries: impl Iterator<Item = (Cow<'a, [u8]>, u64)>, n: usize) -> Vec<TopEntry> {
    if n == 0 {
        return Vec::new();
    }
    let by_rank = |a: &(Cow<'a, [u8]>, u64), b: &(Cow<'a, [u8]>, u64)| {
        b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
    };
    let mut all: Vec<(Cow<'a, [u8]>, u64)> = entries.collect();
    if all.len() > n {
        all.select_nth_unstable_by(n - 1, by_rank);
        all.truncate(n);
    }
    all.sort_unstable_by(by_rank);
    all.into_iter()
        .map(|(k, count)| TopEntry {
            key: String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned(),
            count,
        })
        .collect()
}

/// A canonical dotted IPv4 address (no leading zeros) as a number; `None` for anything
/// else, which is then counted by its text. Canonical means the number prints back to
/// the same text, so both kinds of key never name the same client twice.
fn parse_ipv4(s: &[u8]) -> Option<u32> {
    if s.len() < 7 || s.len() > 15 {
        return None;
    }
    let mut ip: u32 = 0;
    let mut parts = 0;
    for part in s.split(|c| *c == b'.') {
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut v: u32 = 0;
        for &c in part {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        if v > 255 {
            return None;
        }
        ip = ip << 8 | v;
        parts += 1;
    }
    (parts == 4).then_some(ip)
}

/// One malformed line kept as an example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MalformedExample {
    /// The input file.
    pub file: String,
    /// The line number in that file, from 1.
    pub line: u64,
    /// The start of the line.
    pub text: String,
}

/// A path or client with its request count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopEntry {
    /// The path (without query string) or client address.
    pub key: String,
    /// Requests.
    pub count: u64,
}

/// Request-time percentiles in milliseconds, from a mergeable histogram (2 significant
/// digits: each figure is within 1% of the exact one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestTimes {
    /// Lines that carried a request time.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Requests per minute of log time (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerMinute {
    /// Minutes that saw at least one request.
    pub minutes: u64,
    /// Mean requests over those minutes.
    pub mean: f64,
    /// Requests in the busiest minute.
    pub peak: u64,
    /// The busiest minute (the earliest on a tie).
    pub peak_minute: Option<String>,
    /// The first minute seen.
    pub first_minute: Option<String>,
    /// The last minute seen.
    pub last_minute: Option<String>,
    /// Requests in every minute, keyed `YYYY-MM-DDTHH:MMZ`.
    pub series: BTreeMap<String, u64>,
}

/// Everything the run found: the part of the report that must not depend on chunk size,
/// thread count or engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// The input files, in order.
    pub files: Vec<String>,
    /// Input bytes read (after decompression).
    pub input_bytes: u64,
    /// Lines read.
    pub lines: u64,
    /// Lines that did not parse.
    pub malformed: u64,
    /// The first few malformed lines.
    pub malformed_examples: Vec<MalformedExample>,
    /// Sum of the response-size field.
    pub bytes_served: u64,
    /// Requests by status code.
    pub status: BTreeMap<String, u64>,
    /// Requests by method.
    pub methods: BTreeMap<String, u64>,
    /// Distinct paths (without query string).
    pub unique_paths: u64,
    /// Distinct client addresses.
    pub unique_ips: u64,
    /// The most requested paths.
    pub top_paths: Vec<TopEntry>,
    /// The busiest clients.
    pub top_ips: Vec<TopEntry>,
    /// Requests per minute.
    pub requests_per_minute: PerMinute,
    /// Request-time percentiles.
    pub request_time_ms: RequestTimes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_only_when_canonical() {
        assert_eq!(parse_ipv4(b"1.2.3.4"), Some(0x0102_0304));
        assert_eq!(parse_ipv4(b"255.255.255.255"), Some(u32::MAX));
        for odd in [
            &b"01.2.3.4"[..],
            b"1.2.3",
            b"1.2.3.4.5",
            b"256.1.1.1",
            b"::1",
            b"a.b.c.d",
        ] {
            assert_eq!(parse_ipv4(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn partial_metrics_travel_and_merge_exactly_with_either_codec() {
        let mut m = Metrics::default();
        let mut line = |ip: &[u8], path: &[u8], t: &str| {
            let mut l = ip.to_vec();
            l.extend_from_slice(b" - - [02/Mar/2026:10:0");
            l.extend_from_slice(t.as_bytes());
            l.extend_from_slice(b" +0000] \"GET ");
            l.extend_from_slice(path);
            l.extend_from_slice(b" HTTP/1.1\" 404 17 \"-\" \"u\" 0.25");
            m.add_line(&l);
        };
        line(b"1.2.3.4", b"/a", "0:01");
        line(b"::1", b"/caf\xe9", "1:02");
        line(b"h\xffst", b"/a", "1:03");
        m.add_line(b"\xff not a log line");
        m.finish();
        // A reused partial keeps keys whose count is zero: they must not travel.
        m.paths.insert(b"/zero"[..].into(), 0);
        let mut want = Accumulator::new();
        want.begin_file("f".into());
        let c = want.next_chunk();
        want.merge(c, 9, &m);
        let want = want.summary(10);
        for codec in named_tasks::Codec::ALL {
            let bytes = codec.encode(&m).unwrap();
            let back: Metrics = codec.decode(&bytes).unwrap();
            assert!(!back.paths.contains_key(&b"/zero"[..]), "{codec}");
            let mut got = Accumulator::new();
            got.begin_file("f".into());
            let c = got.next_chunk();
            got.merge(c, 9, &back);
            assert_eq!(got.summary(10), want, "{codec}");
        }
        assert_eq!(want.unique_paths, 2);
        assert_eq!(want.malformed_examples.len(), 1);
        // An unfinished partial refuses to travel.
        let mut open = Metrics::default();
        line_into(&mut open);
        assert!(named_tasks::Codec::Json.encode(&open).is_err());
    }

    fn line_into(m: &mut Metrics) {
        m.add_line(
            br#"1.2.3.4 - - [02/Mar/2026:10:00:01 +0000] "GET / HTTP/1.1" 200 1 "-" "u" 0.1"#,
        );
    }

    #[test]
    fn clients_of_both_kinds_rank_together() {
        let mut m = Metrics::default();
        let line = |ip: &str| {
            format!(r#"{ip} - - [02/Mar/2026:10:00:01 +0000] "GET / HTTP/1.1" 200 1 "-" "u" 0.1"#)
        };
        for ip in ["1.2.3.4", "::1", "::1", "1.2.3.4", "1.2.3.4", "01.2.3.4"] {
            m.add_line(line(ip).as_bytes());
        }
        m.finish();
        let mut acc = Accumulator::new();
        acc.begin_file("f".into());
        let c = acc.next_chunk();
        acc.merge(c, 0, &m);
        let s = acc.summary(2);
        assert_eq!(s.unique_ips, 3);
        let top: Vec<(&str, u64)> = s
            .top_ips
            .iter()
            .map(|t| (t.key.as_str(), t.count))
            .collect();
        assert_eq!(top, [("1.2.3.4", 3), ("::1", 2)]);
    }
}
