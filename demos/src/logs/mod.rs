//! Demo `logs`: map-reduce over large access logs at memory speed, with flat memory.
//!
//! `demos logs [FILE...]` cuts each file into fixed-size chunks that end at line ends and
//! runs one task per chunk on the executor the policy file routes tag `cpu` to
//! (`demos/policies/logs.toml`: a rayon pool). Each task reads its own byte range of the
//! file by positional reads (in cache-sized pieces), maps its lines to partial metrics and
//! merges them into the shared whole under a short lock as it completes. At most
//! `--inflight` chunks exist at once and their buffers and partial maps are reused, so
//! memory stays flat as files grow. `.gz` inputs are decompressed in order by the calling
//! thread, which then hands filled chunks to the same tasks. With no file, a realistic 1 GB
//! log is generated once into `.switchyard-cache/` at the workspace root and reused.
//!
//! Why the tasks read and merge themselves: a profile with reading and merging on the
//! calling thread put about a fifth of all CPU time there, which bounds the 1 → 2 thread
//! speedup near 1.6; with both in the tasks the calling thread only hands out ranges.
//!
//! A plain file's chunk is the named task `logs.map` (path and byte range in, partial
//! metrics out), so `demos/policies/logs-process.toml` sends the map step to worker
//! processes with no code change and the same report; chunks of streams stay closures
//! (`logs.map.stream`), as their bytes are already in this process.
//!
//! `demos logs gen --size 2GB --seed N --out FILE` writes a deterministic log;
//! `demos logs bench` measures throughput against `wc -l`, 1 vs 2 threads, the executor
//! against hand-written scoped threads, and peak memory for a small and a large file.

mod bench;
mod chunk;
mod engine;
mod generate;
mod metrics;
mod parse;
mod report;

pub(crate) use engine::MAP;
pub use engine::Options;
pub use metrics::{MalformedExample, PerMinute, RequestTimes, Summary, TopEntry};
pub use report::Report;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use executor_core::{Executor, ShutdownMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default generated log: size and seed.
const DEFAULT_SIZE: u64 = 1_000_000_000;
const DEFAULT_SEED: u64 = 42;

/// What the demo logs when `RUST_LOG` is not set: it reports through its own output,
/// so only warnings, and from the supervisor only errors.
pub const LOG_FILTER: &str = "warn,supervisor=error";

/// Command line of `demos logs`.
#[derive(Parser, Debug)]
#[command(
    name = "demos logs",
    bin_name = "demos logs",
    about = "Map-reduce over access logs: chunked, parallel, flat memory",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a deterministic generated log.
    Gen(GenArgs),
    /// Measure throughput, scaling and peak memory (what `cargo xtask bench logs` runs).
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Approximate size: bytes, or with a unit (KB, MB, GB, KiB, MiB, GiB).
    #[arg(long, default_value = "1GB", value_parser = parse_size)]
    size: u64,
    /// Seed of the generator: the same seed and size give the same file.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

/// Which implementation runs the map step.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Tasks on the executor the policy routes tag `cpu` to.
    Executor,
    /// Hand-written `std::thread::scope` workers (the yardstick).
    Scoped,
    /// Single-threaded line-by-line reference.
    Reference,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Log files (combined format, optional trailing request time; `.gz` accepted;
    /// `-` is standard input). Without files, a generated 1 GB log is used (made once,
    /// then cached).
    files: Vec<PathBuf>,
    /// Bytes per chunk (cut at the next line end).
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Chunks in flight at most (default: 2 per core, at least 4).
    #[arg(long)]
    inflight: Option<usize>,
    /// Policy file routing the `cpu`-tagged map tasks (default: demos/policies/logs.toml;
    /// demos/policies/logs-process.toml maps in worker processes).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Engine of the map step.
    #[arg(long, value_enum, default_value = "executor")]
    engine: Engine,
    /// Threads of the `scoped` engine (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Paths and clients listed in the report.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Parses `123`, `4KiB`, `256MB`, `2GB`, `1.5GiB` into bytes (KB/MB/GB are powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 4MiB or 2GB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' (use B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    let bytes = num * mult as f64;
    if !(1.0..1e15).contains(&bytes) {
        return Err(format!("size '{s}' is out of range"));
    }
    Ok(bytes as u64)
}

/// The workspace root (this crate lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cache folder for generated inputs: `.switchyard-cache/` at the workspace root.
pub fn cache_dir() -> PathBuf {
    workspace_root().join(".switchyard-cache")
}

/// The default policy file of this demo.
pub fn default_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/logs.toml")
}

/// A generated log of `size` bytes from `seed` in the cache folder, made on first use.
pub fn cached_log(size: u64, seed: u64) -> Result<PathBuf> {
    let path = cache_dir().join(format!("access-{size}B-seed{seed}.log"));
    if !path.exists() {
        eprintln!(
            "generating {} ({} bytes, seed {seed}); cached for later runs",
            path.display(),
            size
        );
        let t = Instant::now();
        let stats = generate::generate_file(&path, size, seed)?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "wrote {} lines ({} malformed, {} long) in {secs:.1} s ({:.0} MB/s)",
            stats.lines,
            stats.malformed,
            stats.long_lines,
            stats.bytes as f64 / secs / 1e6
        );
    }
    Ok(path)
}

/// The executor the map tasks are submitted to: the supervisor loaded from `policy`, with
/// `backend = "process"` available. It routes each task by its meta (the map tasks are
/// tagged `cpu`, a file's are the named task `logs.map`); the demo names no backend.
pub fn cpu_executor(policy: &Path) -> Result<Arc<dyn Executor>> {
    let sup = supervisor::PolicyConfig::from_file(policy)
        .and_then(|config| supervisor::Supervisor::with_registry(config, crate::registry()))
        .with_context(|| format!("loading policy {}", policy.display()))?;
    Ok(sup)
}

fn default_inflight() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).max(4)
}

/// Runs the map-reduce over `files` with `engine` and returns the report.
///
/// `exec` is required for [`Engine::Executor`]; `threads` sizes [`Engine::Scoped`].
pub fn analyze(
    files: &[PathBuf],
    opts: &Options,
    engine: Engine,
    exec: Option<&Arc<dyn Executor>>,
    threads: usize,
    top: usize,
) -> Result<Report> {
    let started = Instant::now();
    let acc = match engine {
        Engine::Executor => {
            let exec = exec.context("the executor engine needs an executor")?;
            engine::run_executor(files, opts, exec)?
        }
        Engine::Scoped => engine::run_scoped(files, opts, threads)?,
        Engine::Reference => engine::run_reference(files)?,
    };
    let summary = acc.summary(top);
    let elapsed_s = started.elapsed().as_secs_f64();
    Ok(Report {
        gb_per_s: summary.input_bytes as f64 / elapsed_s.max(1e-9) / 1e9,
        summary,
        engine: format!("{engine:?}").to_lowercase(),
        chunk_size: opts.chunk_size as u64,
        remote_chunks: acc.remote_chunks,
        elapsed_s,
        peak_rss_mb: report::peak_rss_kib().map(|k| k as f64 / 1024.0),
    })
}

fn run(args: RunArgs) -> Result<()> {
    let files = if args.files.is_empty() {
        vec![cached_log(DEFAULT_SIZE, DEFAULT_SEED)?]
    } else {
        args.files.clone()
    };
    let opts = Options {
        chunk_size: usize::try_from(args.chunk_size).context("chunk size too large")?,
        inflight: args.inflight.unwrap_or_else(default_inflight),
        progress: !args.no_progress && !args.json,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let exec = match args.engine {
        Engine::Executor => {
            let policy = args.policy.clone().unwrap_or_else(default_policy);
            Some(cpu_executor(&policy)?)
        }
        _ => None,
    };
    let report = analyze(&files, &opts, args.engine, exec.as_ref(), threads, args.top);
    if let Some(exec) = &exec {
        exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(5)));
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Parses `args` (`args[0]` is the demo name) and runs the demo; a usage error is
/// returned as the error.
pub fn main(args: Vec<String>) -> Result<()> {
    Cli::try_parse_from(args)?.run()
}

impl Cli {
    /// Runs the demo (or `gen`, or its benchmark).
    pub fn run(self) -> Result<()> {
        run_cli(self)
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    match cli.cmd {
        Some(Cmd::Gen(g)) => {
            let t = Instant::now();
            let stats = generate::generate_file(&g.out, g.size, g.seed)?;
            let secs = t.elapsed().as_secs_f64();
            eprintln!(
                "wrote {} ({} bytes, {} lines, {} malformed, {} long) in {secs:.1} s ({:.0} MB/s)",
                g.out.display(),
                stats.bytes,
                stats.lines,
                stats.malformed,
                stats.long_lines,
                stats.bytes as f64 / secs / 1e6
            );
            Ok(())
        }
        Some(Cmd::Bench(b)) => bench::run(b),
        None => run(cli.run),
    }
}

/// Writes a generated log of about `size` bytes from `seed` to `out` (used by tests).
pub fn generate_log(out: &Path, size: u64, seed: u64) -> Result<()> {
    generate::generate_file(out, size, seed).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5kb"), Ok(1500));
        assert_eq!(parse_size("17"), Ok(17));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
