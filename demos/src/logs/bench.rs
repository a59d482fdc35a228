//! `demos logs bench`: throughput against `wc -l`, 1- vs 2-thread scaling, the executor
//! against hand-written scoped threads, the map step in two worker processes
//! (`logs-process.toml`), and peak memory of child runs on a small and a large file.

use super::{Engine, Options, Report, analyze, cached_log, cpu_executor, default_inflight};
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use executor_core::{Executor, ShutdownMode};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of the benchmark.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Size of the throughput file (generated and cached).
    #[arg(long, default_value = "1GB", value_parser = super::parse_size)]
    size: u64,
    /// Timed runs of each contender (interleaved; the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Bytes per chunk.
    #[arg(long, default_value = "4MiB", value_parser = super::parse_size)]
    chunk_size: u64,
    /// Sizes of the two files whose peak memory is compared.
    #[arg(long, default_value = "256MB", value_parser = super::parse_size)]
    small: u64,
    /// See `--small`.
    #[arg(long, default_value = "2GB", value_parser = super::parse_size)]
    large: u64,
    /// Skip the peak-memory runs.
    #[arg(long)]
    skip_rss: bool,
}

/// Where a contender's timings go, its engine, its executor, its thread count, and whether
/// this process's CPU time is all of its CPU time (not so for worker processes).
type Contender<'a> = (
    &'a mut Timings,
    Engine,
    Option<&'a Arc<dyn Executor>>,
    usize,
    bool,
);

/// Wall-clock and CPU seconds of the runs of one contender.
#[derive(Default)]
struct Timings {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Timings {
    fn median(&self) -> f64 {
        let mut v = self.wall.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn best(&self) -> f64 {
        self.wall.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// Cores kept busy on average: CPU seconds over wall seconds.
    fn cpu_util(&self) -> Option<f64> {
        (self.cpu.len() == self.wall.len() && !self.cpu.is_empty())
            .then(|| self.cpu.iter().sum::<f64>() / self.wall.iter().sum::<f64>())
    }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (Linux; the
/// kernel reports them in clock ticks, 100 per second on every common configuration).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn policy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name)
}

/// Reads the file once so every contender starts from the page cache.
fn warm(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Times `wc -l FILE`; returns seconds and the count it printed.
fn time_wc(path: &Path) -> Result<(f64, u64)> {
    let t = Instant::now();
    let out = Command::new("wc")
        .arg("-l")
        .arg(path)
        .output()
        .context("running wc -l")?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(out.status.success(), "wc -l failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let count = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("wc -l printed no count")?;
    Ok((secs, count))
}

/// Runs this very binary as a child on `path` and returns its JSON report, which carries
/// the child's own peak resident memory (`VmHWM` from /proc).
fn child_run(path: &Path, chunk_size: u64) -> Result<serde_json::Value> {
    let exe = std::env::current_exe().context("locating the demos binary")?;
    let out = Command::new(exe)
        .args(["logs", "--json", "--no-progress", "--chunk-size"])
        .arg(chunk_size.to_string())
        .arg(path)
        .output()
        .context("running the demo as a child")?;
    if !out.status.success() {
        bail!(
            "child run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the child's JSON report")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    let file = cached_log(args.size, super::DEFAULT_SEED)?;
    let bytes = warm(&file)? as f64;
    let opts = Options {
        chunk_size: usize::try_from(args.chunk_size).context("chunk size too large")?,
        inflight: default_inflight(),
        progress: false,
    };
    let files = vec![file.clone()];
    let two: Arc<dyn Executor> = cpu_executor(&policy("logs-2threads.toml"))?;
    let one: Arc<dyn Executor> = cpu_executor(&policy("logs-1thread.toml"))?;
    let procs: Arc<dyn Executor> = cpu_executor(&policy("logs-process.toml"))?;
    let runs = args.runs.max(1);
    eprintln!(
        "benchmark: {} ({:.2} GB), {runs} interleaved runs each, chunks of {} bytes",
        file.display(),
        bytes / 1e9,
        args.chunk_size
    );

    let mut wc = Timings::default();
    let (mut ex2, mut ex1, mut sc2) = (Timings::default(), Timings::default(), Timings::default());
    let mut pp2 = Timings::default();
    let mut wc_lines = 0;
    let mut reference: Option<Report> = None;
    let mut check = |r: Report| -> Result<()> {
        match &reference {
            None => reference = Some(r),
            Some(first) => ensure!(
                first.summary == r.summary,
                "{} engine gave a different report",
                r.engine
            ),
        }
        Ok(())
    };
    for i in 0..runs {
        let (secs, lines) = time_wc(&file)?;
        wc.wall.push(secs);
        wc_lines = lines;
        let contenders: [Contender<'_>; 4] = [
            (&mut ex2, Engine::Executor, Some(&two), 2, true),
            (&mut ex1, Engine::Executor, Some(&one), 1, true),
            (&mut sc2, Engine::Scoped, None, 2, true),
            (&mut pp2, Engine::Executor, Some(&procs), 2, false),
        ];
        for (t, engine, exec, threads, all_cpu_here) in contenders {
            let cpu0 = cpu_seconds();
            let r = analyze(&files, &opts, engine, exec, threads, 10)?;
            t.wall.push(r.elapsed_s);
            if let (Some(a), Some(b), true) = (cpu0, cpu_seconds(), all_cpu_here) {
                t.cpu.push(b - a);
            }
            check(r)?;
        }
        eprintln!(
            "run {}: wc {:.3} s, executor/2 {:.3} s, executor/1 {:.3} s, scoped/2 {:.3} s, \
             process pool/2 {:.3} s",
            i + 1,
            wc.wall[i],
            ex2.wall[i],
            ex1.wall[i],
            sc2.wall[i],
            pp2.wall[i]
        );
    }
    for exec in [&two, &one, &procs] {
        exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    }
    let report = reference.context("no run")?;
    // Generated files end with a newline, so both count the same lines.
    ensure!(
        wc_lines == report.summary.lines,
        "wc -l counted {wc_lines} lines, the demo {}",
        report.summary.lines
    );

    let gbs = |secs: f64| bytes / secs / 1e9;
    println!(
        "logs benchmark: {:.2} GB, {} lines, {runs} interleaved runs (shared 2-core machine: \
         noisy; 'cpu' is cores busy on average, below the thread count when others compete)",
        bytes / 1e9,
        report.summary.lines
    );
    println!("                             median      GB/s    best     GB/s   cpu");
    for (name, t) in [
        ("wc -l", &wc),
        ("executor, 2 threads", &ex2),
        ("executor, 1 thread", &ex1),
        ("scoped threads, 2", &sc2),
        ("process pool, 2 workers", &pp2),
    ] {
        let util = t
            .cpu_util()
            .map_or_else(|| "   -".to_string(), |u| format!("{u:4.2}"));
        println!(
            "  {name:<24} {:>7.3} s {:>7.2}  {:>7.3} s {:>6.2}  {util}",
            t.median(),
            gbs(t.median()),
            t.best(),
            gbs(t.best())
        );
    }
    let ratio = |f: fn(&Timings) -> f64| (f(&wc) / f(&ex2), f(&ex1) / f(&ex2), f(&ex2) / f(&sc2));
    let (m_ratio, m_speedup, m_vs) = ratio(Timings::median);
    let (b_ratio, b_speedup, b_vs) = ratio(Timings::best);
    println!("                             median    best   target");
    println!(
        "  demo / wc -l throughput    {m_ratio:>6.3}  {b_ratio:>6.3}   >= 0.15  {}",
        verdict(m_ratio >= 0.15)
    );
    println!(
        "  speedup 1 -> 2 threads     {m_speedup:>6.3}  {b_speedup:>6.3}   >= 1.8   {}",
        verdict(m_speedup >= 1.8)
    );
    println!(
        "  executor / scoped time     {m_vs:>6.3}  {b_vs:>6.3}   <= 1.05  {}",
        verdict(m_vs <= 1.05)
    );
    // The same report from worker processes (checked above); what isolation costs.
    println!(
        "  process pool / executor    {:>6.3}  {:>6.3}   (time; same report)",
        pp2.median() / ex2.median(),
        pp2.best() / ex2.best()
    );

    if !args.skip_rss {
        let mut rss = Vec::new();
        for size in [args.small, args.large] {
            let path = cached_log(size, super::DEFAULT_SEED)?;
            warm(&path)?;
            let json = child_run(&path, args.chunk_size)?;
            let mb = json["peak_rss_mb"]
                .as_f64()
                .context("child reported no peak RSS")?;
            let gb_s = json["gb_per_s"].as_f64().unwrap_or(0.0);
            println!(
                "  peak RSS, {:>5.2} GB file    {mb:>7.1} MiB  ({gb_s:.2} GB/s in the child)",
                size as f64 / 1e9
            );
            rss.push(mb);
        }
        let diff = (rss[1] - rss[0]).abs();
        println!(
            "  RSS difference             {diff:>7.1} MiB  target: a few MiB, both < 128 MiB  {}",
            verdict(diff <= 8.0 && rss.iter().all(|m| *m < 128.0))
        );
    }
    Ok(())
}
