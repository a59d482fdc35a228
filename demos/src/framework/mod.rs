//! Demo `framework`: the mini framework, ported. Producers put tasks on a queue; the
//! supervisor routes each one by the policy file — downloads to an I/O pool, CPU work to a
//! CPU pool — and records failures; every output line names the executor that ran it.
//!
//! `cargo xtask demo framework` runs it on `demos/policies/framework.toml` (built in);
//! `cargo xtask demo framework -- --policy FILE` runs the same tasks under another policy
//! with no rebuild. The CPU sums are a named task ([`SQUARES`]), so a policy can also send
//! them to worker processes (`demos/policies/framework-process.toml`); their lines then
//! show the worker's pid next to the parent's.

use anyhow::{Context, Result};
use clap::Parser;
use executor_core::{ShutdownMode, TaskContext, TaskError, TaskMeta};
use named_tasks::Task;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use supervisor::{Finished, PolicyConfig, Supervisor, TaskQueue};

/// The CPU step as a named task, so it can leave the process: the sum of `i * i` for `i`
/// in `0..n`, with where it ran (executor, process id). Tagged `cpu` for routing.
pub static SQUARES: Task<u64, (String, u32, String)> =
    Task::new("compute.squares", |ctx, n: u64| {
        let sum = sum_of_squares(n, ctx)?;
        Ok((
            executor_of_current_thread(),
            std::process::id(),
            sum.to_string(),
        ))
    })
    .with_tags(&["cpu"]);

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
    /// The process that ran it (the demo's own, unless a worker process did).
    pub pid: u32,
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
/// executor (`io-3`, `cpu-0`, `net-worker`); a worker process knows its pool's name.
pub fn executor_of_current_thread() -> String {
    if let Some(pool) = executor_process::worker_pool_name() {
        return pool;
    }
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

    // A producer thread feeds the queue: five downloads and one that fails. The two CPU
    // sums are named tasks, called on the supervisor directly (the queue takes closures,
    // which cannot leave the process); a thread per sum reports it as it ends.
    let me = std::process::id();
    let sums: Vec<_> = [5_000_000u64, 6_000_000]
        .into_iter()
        .map(|n| {
            let label = format!("compute.squares{n}");
            let routed = sup.explain(&SQUARES.meta()).executor().to_owned();
            let handle = SQUARES.call(&*sup, n);
            std::thread::spawn(move || {
                let line = match handle.wait() {
                    Ok((executor, pid, sum)) => TaskLine {
                        task: label,
                        executor,
                        outcome: Ok(sum),
                        pid,
                    },
                    Err(e) => TaskLine {
                        task: label,
                        executor: routed,
                        outcome: Err(e.to_string()),
                        pid: me,
                    },
                };
                if print {
                    let pid = if line.pid == me {
                        String::new()
                    } else {
                        format!("  (worker pid {}, parent {me})", line.pid)
                    };
                    match &line.outcome {
                        Ok(v) => {
                            println!("  [{:<5}] {:<24} ok: {v}{pid}", line.executor, line.task)
                        }
                        Err(e) => {
                            println!("  [{:<5}] {:<24} FAILED: {e}", line.executor, line.task)
                        }
                    }
                }
                line
            })
        })
        .collect();
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
        producer.push(TaskMeta::new("validate.report"), |_ctx| {
            Err::<(String, String), _>(std::io::Error::other("checksum mismatch in item 3"))
        });
    });
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;

    let finished = queue.close().finished;
    let mut lines: Vec<TaskLine> = finished
        .into_iter()
        .map(|f| match f.result {
            Ok((executor, value)) => TaskLine {
                task: f.name,
                executor,
                outcome: Ok(value),
                pid: me,
            },
            Err(e) => TaskLine {
                task: f.name,
                executor: f.executor,
                outcome: Err(e.to_string()),
                pid: me,
            },
        })
        .collect();
    for sum in sums {
        lines.push(
            sum.join()
                .map_err(|_| anyhow::anyhow!("a reporting thread panicked"))?,
        );
    }
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
    // The registry adds `backend = "process"` to the built-in backends.
    let (sup, origin) = match &args.policy {
        Some(path) => (
            PolicyConfig::from_file(path)
                .and_then(|config| Supervisor::with_registry(config, crate::registry()))
                .with_context(|| "the policy file was rejected")?,
            path.display().to_string(),
        ),
        None => (
            PolicyConfig::parse(DEFAULT_POLICY, "demos/policies/framework.toml")
                .and_then(|config| Supervisor::with_registry(config, crate::registry()))
                .context("the built-in policy was rejected")?,
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
