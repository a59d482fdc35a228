//! `demos logs bench`: throughput against `wc -l`, 1- vs 2-thread scaling, the executor
//! against hand-written scoped threads, and peak memory of child runs on a small and a
//! large file.

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let runs = args.runs.max(1);
    eprintln!(
        "benchmark: {} ({:.2} GB), {runs} interleaved runs each, chunks of {} bytes",
        file.display(),
        bytes / 1e9,
        args.chunk_size
    );

    let (mut wc, mut ex2, mut ex1, mut sc2) = (vec![], vec![], vec![], vec![]);
    let mut wc_lines = 0;
    let mut reference: Option<Report> = None;
    let mut check = |r: Report| -> Result<f64> {
        match &reference {
            None => reference = Some(r.clone()),
            Some(first) => ensure!(
                first.summary == r.summary,
                "{} engine gave a different report",
                r.engine
            ),
        }
        Ok(r.elapsed_s)
    };
    for i in 0..runs {
        let (secs, lines) = time_wc(&file)?;
        wc.push(secs);
        wc_lines = lines;
        ex2.push(check(analyze(
            &files,
            &opts,
            Engine::Executor,
            Some(&two),
            2,
            10,
        )?)?);
        ex1.push(check(analyze(
            &files,
            &opts,
            Engine::Executor,
            Some(&one),
            1,
            10,
        )?)?);
        sc2.push(check(analyze(&files, &opts, Engine::Scoped, None, 2, 10)?)?);
        eprintln!(
            "run {}: wc {:.3} s, executor/2 {:.3} s, executor/1 {:.3} s, scoped/2 {:.3} s",
            i + 1,
            wc[i],
            ex2[i],
            ex1[i],
            sc2[i]
        );
    }
    two.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    one.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    let report = reference.context("no run")?;
    // Generated files end with a newline, so both count the same lines.
    ensure!(
        wc_lines == report.summary.lines,
        "wc -l counted {wc_lines} lines, the demo {}",
        report.summary.lines
    );

    let (wc, ex2, ex1, sc2) = (median(wc), median(ex2), median(ex1), median(sc2));
    let gbs = |secs: f64| bytes / secs / 1e9;
    let ratio = gbs(ex2) / gbs(wc);
    let speedup = ex1 / ex2;
    let vs_scoped = ex2 / sc2;
    println!("logs benchmark (medians of {runs}; shared 2-core machine, figures are noisy)");
    println!("  lines                      {}", report.summary.lines);
    println!(
        "  wc -l                      {:>7.3} s  {:>6.2} GB/s",
        wc,
        gbs(wc)
    );
    println!(
        "  executor, 2 threads        {:>7.3} s  {:>6.2} GB/s",
        ex2,
        gbs(ex2)
    );
    println!(
        "  executor, 1 thread         {:>7.3} s  {:>6.2} GB/s",
        ex1,
        gbs(ex1)
    );
    println!(
        "  scoped threads, 2          {:>7.3} s  {:>6.2} GB/s",
        sc2,
        gbs(sc2)
    );
    println!(
        "  demo / wc -l throughput    {ratio:>7.3}   target >= 0.15  {}",
        verdict(ratio >= 0.15)
    );
    println!(
        "  speedup 1 -> 2 threads     {speedup:>7.3}x  target >= 1.8   {}",
        verdict(speedup >= 1.8)
    );
    println!(
        "  executor / scoped time     {vs_scoped:>7.3}x  target <= 1.05  {}",
        verdict(vs_scoped <= 1.05)
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
