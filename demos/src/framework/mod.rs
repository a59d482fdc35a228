//! Demo `framework`: the mini framework, ported. Producers put tasks on a queue; the
//! supervisor routes each one by the policy file — downloads to an I/O pool, CPU work to a
//! CPU pool — and records failures; every output line names the executor that ran it.
//!
//! `cargo xtask demo framework` runs it on `demos/policies/framework.toml` (built in);
//! `cargo xtask demo framework -- --policy FILE` runs the same tasks under another policy
//! with no rebuild.

use anyhow::{Context, Result};
use clap::Parser;
use executor_core::{ShutdownMode, TaskContext, TaskError, TaskMeta};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::{Finished, Supervisor, TaskQueue};

/// The default policy, built in so the demo needs no files.
pub const DEFAULT_POLICY: &str = include_str!("../../policies/framework.toml");

/// What the demo logs when `RUST_LOG` is not set: the demo prints its own failures and
/// the supervisor repeats each final failure at warn, so the supervisor speaks up only for
/// errors. `RUST_LOG=info` shows routing, retries and every failure.
pub const LOG_FILTER: &str = "warn,supervisor=error";

/// Command line of `demos framework`.
#[derive(Parser, Debug)]
#[command(
    name = "demos framework",
    bin_name = "demos framework",
    about = "The mini framework: a routed task queue"
)]
pub struct Cli {
    /// Policy file to route by (default: demos/policies/framework.toml, built in).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// How long each simulated download blocks, in milliseconds.
    #[arg(long, default_value_t = 200)]
    download_ms: u64,
}

/// How one task ended, as the demo reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskLine {
    /// The task's name.
    pub task: String,
    /// The executor (its policy name) whose thread ran the task; for a failed task, the
    /// executor the policy routed it to.
    pub executor: String,
    /// The task's value, or the error it ended with.
    pub outcome: Result<String, String>,
}

/// What a run of the demo produced.
#[derive(Debug)]
pub struct Report {
    /// One line per task, in the order they ended.
    pub lines: Vec<TaskLine>,
    /// The supervisor's ledger at shutdown.
    pub ledger: supervisor::ShutdownLedger,
}

impl Report {
    /// The line of the task called `name`.
    pub fn line(&self, name: &str) -> Option<&TaskLine> {
        self.lines.iter().find(|l| l.task == name)
    }
}

/// The executor a worker thread belongs to: backends name their threads after the
/// executor (`io-3`, `cpu-0`, `net-worker`).
pub fn executor_of_current_thread() -> String {
    let name = std::thread::current().name().unwrap_or("").to_owned();
    let base = name.strip_suffix("-worker").unwrap_or(&name);
    match base.rsplit_once('-') {
        Some((prefix, n)) if n.chars().all(|c| c.is_ascii_digit()) => prefix.to_owned(),
        _ => base.to_owned(),
    }
}

/// Sum of `i * i` for `i` in `0..n`, exactly (a `u128` never overflows here).
pub fn sum_of_squares(n: u64, ctx: &TaskContext) -> Result<u128, executor_core::Cancelled> {
    let mut sum: u128 = 0;
    for i in 0..n {
        if i % (1 << 20) == 0 {
            ctx.checkpoint()?;
        }
        sum += u128::from(i) * u128::from(i);
    }
    Ok(sum)
}

/// Runs the demo's tasks through a [`TaskQueue`] on `sup` and shuts it down; prints each
/// line as it completes when `print` is set.
pub fn run(sup: Arc<Supervisor>, download: Duration, print: bool) -> Result<Report> {
    let queue = TaskQueue::with_observer(sup.clone(), move |f: &Finished<(String, String)>| {
        if print {
            match &f.result {
                Ok((ran_on, value)) => println!("  [{ran_on:<5}] {:<24} ok: {value}", f.name),
                Err(e) => println!("  [{:<5}] {:<24} FAILED: {e}", f.executor, f.name),
            }
        }
    });

    // A producer thread feeds the queue: five downloads, two CPU jobs and one that fails.
    let producer = queue.producer();
    let feeder = std::thread::spawn(move || {
        for i in 1..=5u32 {
            let url = format!("https://api.example.com/item/{i}");
            let meta = TaskMeta::new(format!("download.item{i}")).with_key("api.example.com");
            producer.push(meta, move |_ctx| {
                // A stand-in for a blocking HTTP call: no network, just the wait.
                std::thread::sleep(download);
                Ok::<_, TaskError>((executor_of_current_thread(), format!("{url} -> 200 OK")))
            });
        }
        for n in [5_000_000u64, 6_000_000] {
            let meta = TaskMeta::new(format!("compute.squares{n}")).with_tag("cpu");
            producer.push(meta, move |ctx| {
                let sum = sum_of_squares(n, ctx)?;
                Ok::<_, executor_core::Cancelled>((executor_of_current_thread(), sum.to_string()))
            });
        }
        producer.push(TaskMeta::new("validate.report"), |_ctx| {
            Err::<(String, String), _>(std::io::Error::other("checksum mismatch in item 3"))
        });
    });
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;

    let finished = queue.close().finished;
    let lines = finished
        .into_iter()
        .map(|f| match f.result {
            Ok((executor, value)) => TaskLine {
                task: f.name,
                executor,
                outcome: Ok(value),
            },
            Err(e) => TaskLine {
                task: f.name,
                executor: f.executor,
                outcome: Err(e.to_string()),
            },
        })
        .collect();
    let ledger = sup.shutdown_ledger(ShutdownMode::Graceful(Duration::from_secs(10)));
    Ok(Report { lines, ledger })
}

/// Parses `args` (`args[0]` is the demo name) and runs the demo; a usage error is
/// returned as the error.
pub fn main(args: Vec<String>) -> Result<()> {
    Cli::try_parse_from(args)?.run()
}

impl Cli {
    /// Runs the demo.
    pub fn run(self) -> Result<()> {
        run_demo(self)
    }
}

fn run_demo(args: Cli) -> Result<()> {
    let (sup, origin) = match &args.policy {
        Some(path) => (
            Supervisor::from_file(path).with_context(|| "the policy file was rejected")?,
            path.display().to_string(),
        ),
        None => (
            Supervisor::from_toml(DEFAULT_POLICY).context("the built-in policy was rejected")?,
            "demos/policies/framework.toml (built in)".to_owned(),
        ),
    };
    println!("framework demo: policy {origin}");
    for name in [
        "download.item1",
        "compute.squares5000000",
        "validate.report",
    ] {
        let meta = TaskMeta::new(name).with_tag(if name.starts_with("compute") {
            "cpu"
        } else {
            "io"
        });
        println!("  route {name:<24} -> {}", sup.explain(&meta).executor());
    }
    let started = Instant::now();
    let report = run(sup.clone(), Duration::from_millis(args.download_ms), true)?;
    println!(
        "\n{:<8} {:>9} {:>9} {:>7} {:>8} {:>10} {:>10}",
        "executor", "submitted", "completed", "failed", "panicked", "p50", "max"
    );
    for r in &report.ledger.executors {
        let s = &r.stats;
        println!(
            "{:<8} {:>9} {:>9} {:>7} {:>8} {:>10} {:>10}",
            r.executor,
            s.submitted,
            s.completed,
            s.failed,
            s.panicked,
            format!("{:.1?}", s.latency.p50),
            format!("{:.1?}", s.latency.max)
        );
    }
    println!("\n{}", report.ledger);
    println!("elapsed {:.2?}", started.elapsed());
    let failed: Vec<_> = report.lines.iter().filter(|l| l.outcome.is_err()).collect();
    println!(
        "{} task(s) failed, reported above and counted in the ledger",
        failed.len()
    );
    Ok(())
}
