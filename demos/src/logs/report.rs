//! The report of a run: the summary plus how long it took, as a table or as JSON.

use super::metrics::Summary;
use serde::Serialize;

/// A finished run: what was found and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the logs hold.
    #[serde(flatten)]
    pub summary: Summary,
    /// Which engine ran the map step: `executor`, `scoped` or `reference`.
    pub engine: String,
    /// Bytes per chunk.
    pub chunk_size: u64,
    /// Chunks whose map step ran in another process (a worker process the policy sent
    /// them to); 0 when it ran in this one.
    pub remote_chunks: u64,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Input gigabytes (10^9 bytes) per second.
    pub gb_per_s: f64,
    /// Peak resident memory of this process so far, in MiB (`VmHWM`), when known.
    pub peak_rss_mb: Option<f64>,
}

/// Peak resident memory of this process in KiB, from `/proc/self/status` (Linux).
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn human_binary(b: u64) -> String {
    match b {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl Report {
    /// The report as a human-readable table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let s = &self.summary;
        let mut o = String::new();
        let w = &mut o;
        let _ = writeln!(w, "files          {}", s.files.join(", "));
        let _ = writeln!(
            w,
            "input          {} in {:.2} s = {:.2} GB/s ({} engine, {} chunks{})",
            human_bytes(s.input_bytes),
            self.elapsed_s,
            self.gb_per_s,
            self.engine,
            human_binary(self.chunk_size),
            self.peak_rss_mb
                .map(|m| format!(", peak RSS {m:.1} MiB"))
                .unwrap_or_default()
        );
        if self.remote_chunks > 0 {
            let _ = writeln!(
                w,
                "               {} chunks mapped in worker processes",
                self.remote_chunks
            );
        }
        let _ = writeln!(w, "lines          {}", s.lines);
        let _ = writeln!(
            w,
            "malformed      {} ({:.3}%)",
            s.malformed,
            pct(s.malformed, s.lines)
        );
        for e in &s.malformed_examples {
            let _ = writeln!(w, "  {}:{}: {:?}", e.file, e.line, e.text);
        }
        let _ = writeln!(w, "bytes served   {}", human_bytes(s.bytes_served));
        let _ = writeln!(w, "status");
        let ok = s.lines - s.malformed;
        for (code, n) in &s.status {
            let _ = writeln!(w, "  {code}  {n:>12}  {:>6.2}%", pct(*n, ok));
        }
        let _ = writeln!(w, "methods");
        for (m, n) in &s.methods {
            let _ = writeln!(w, "  {m:<8} {n:>12}  {:>6.2}%", pct(*n, ok));
        }
        let _ = writeln!(w, "top paths ({} distinct)", s.unique_paths);
        for t in &s.top_paths {
            let _ = writeln!(w, "  {:>12}  {}", t.count, t.key);
        }
        let _ = writeln!(w, "top clients ({} distinct)", s.unique_ips);
        for t in &s.top_ips {
            let _ = writeln!(w, "  {:>12}  {}", t.count, t.key);
        }
        let r = &s.requests_per_minute;
        let _ = writeln!(
            w,
            "per minute     mean {:.1}, peak {} at {} ({} minutes, {} .. {})",
            r.mean,
            r.peak,
            r.peak_minute.as_deref().unwrap_or("-"),
            r.minutes,
            r.first_minute.as_deref().unwrap_or("-"),
            r.last_minute.as_deref().unwrap_or("-"),
        );
        let t = &s.request_time_ms;
        let _ = writeln!(
            w,
            "request time   p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} timed)",
            t.p50, t.p90, t.p99, t.max, t.count
        );
        o
    }
}
