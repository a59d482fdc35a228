//! `cargo xtask bench auto`: what `executor = "auto"` placement is worth.
//!
//! The workload mixes CPU tasks of about 1 ms (a fixed amount of arithmetic, calibrated
//! at start) with blocking I/O tasks of about 20 ms (sleeps), and the names are
//! deliberately mis-tagged: the CPU work says `io`, the I/O work says `cpu`. It is
//! submitted in waves (each wave waits for the previous one, like a batch job run over
//! and over), and the same workload runs under three policies on the same two executors
//! (`io`: a 32-thread pool, `cpu`: a rayon pool with one thread per core):
//! - best: a hand-written policy that knows each name's true nature;
//! - tags: a plausible bad one that believes the tags;
//! - all-cpu: another plausible bad one, everything on the CPU pool (the 20 ms blocking
//!   tasks then hold its few threads while the CPU work waits behind them);
//! - auto: `executor = "auto"` on every name, starting blind.
//!
//! It prints the median makespan of each over several runs, the ratios the targets are
//! about (auto within 10% of best, at least 3x faster than a bad policy; both bad ones
//! are shown), and what auto learned. Under tags the CPU work still overlaps the blocked
//! I/O (it sits on the I/O pool), so on a machine busy with other work, which slows the
//! CPU part of every policy alike, tags/auto shrinks; all-cpu has no such overlap.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskHandle, TaskMeta};
use supervisor::Supervisor;

const EXECUTORS: &str = r#"
[executors.io]
backend = "threads"
workers = 32

[executors.cpu]
backend = "rayon"
threads = 0

[defaults]
executor = "io"
"#;

const BEST: &str = r#"
[[route]]
match = { name = "report.*" }
executor = "cpu"

[[route]]
match = { name = "thumb.*" }
executor = "cpu"
"#;

const TAGS: &str = r#"
[[route]]
match = { tags = ["cpu"] }
executor = "cpu"
"#;

const ALL_CPU: &str = r#"
[[route]]
match = {}
executor = "cpu"
"#;

const AUTO: &str = r#"
[[route]]
match = {}
executor = "auto"
auto = { io = "io", cpu = "cpu" }
"#;

/// The task names: (name, its tag, true when it computes).
const NAMES: [(&str, &str, bool); 4] = [
    ("report.build", "io", true),
    ("thumb.render", "io", true),
    ("feed.fetch", "cpu", false),
    ("mail.send", "cpu", false),
];

struct Args {
    waves: usize,
    cpu_per_wave: usize,
    io_per_wave: usize,
    runs: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        waves: 10,
        cpu_per_wave: 32,
        io_per_wave: 16,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> Result<usize> {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            v.parse()
                .with_context(|| format!("{flag}: '{v}' is not a whole number"))
        };
        match flag.as_str() {
            "--waves" => args.waves = value()?.max(1),
            "--cpu" => args.cpu_per_wave = value()?,
            "--io" => args.io_per_wave = value()?,
            "--runs" => args.runs = value()?.max(1),
            "-h" | "--help" => {
                println!("usage: bench-auto [--waves N] [--cpu N] [--io N] [--runs N]");
                std::process::exit(0);
            }
            other => bail!("unknown flag '{other}' (try --help)"),
        }
    }
    Ok(args)
}

/// `n` rounds of arithmetic the optimiser cannot remove.
#[inline(never)]
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// The rounds of [`work`] that take about 1 ms on one idle core (the best of a few tries).
fn calibrate() -> u64 {
    let n = 100_000;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            black_box(work(n));
            t.elapsed()
        })
        .min()
        .expect("five tries");
    (n as f64 / best.as_secs_f64() / 1000.0).max(1.0) as u64
}

/// Runs the workload once on `sup`; returns the makespan.
fn run_workload(sup: &Arc<Supervisor>, args: &Args, per_ms: u64) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..args.waves {
        let mut handles: Vec<TaskHandle<u64>> = Vec::new();
        let total = args.cpu_per_wave + args.io_per_wave;
        for i in 0..total {
            // Spread the I/O tasks through the wave, so both kinds arrive mixed.
            let io = i * args.io_per_wave / total != (i + 1) * args.io_per_wave / total;
            let pick = if io { 2 + i % 2 } else { i % 2 };
            let (name, tag, _) = NAMES[pick];
            let meta = TaskMeta::new(name).with_tag(tag);
            handles.push(if io {
                sup.run(meta, |_| {
                    std::thread::sleep(Duration::from_millis(20));
                    Ok::<_, String>(0)
                })
            } else {
                sup.run(meta, move |_| Ok::<_, String>(work(per_ms)))
            });
        }
        for h in handles {
            h.wait()
                .map_err(|e| anyhow::anyhow!("a task failed: {e}"))?;
        }
    }
    Ok(start.elapsed())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let per_ms = calibrate();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "workload: {} waves of {} CPU tasks (~1 ms, {per_ms} rounds) and {} I/O tasks (20 ms sleeps), mis-tagged; {cores} cores; median of {} runs",
        args.waves, args.cpu_per_wave, args.io_per_wave, args.runs
    );
    let mut results = Vec::new();
    let mut learned = Vec::new();
    for (label, routes) in [
        ("best", BEST),
        ("tags", TAGS),
        ("all-cpu", ALL_CPU),
        ("auto", AUTO),
    ] {
        let mut times = Vec::new();
        for _ in 0..args.runs {
            // A fresh supervisor each run: auto starts blind every time.
            let sup = Supervisor::from_toml(&format!("{EXECUTORS}{routes}"))
                .with_context(|| format!("the {label} policy"))?;
            times.push(run_workload(&sup, &args, per_ms)?);
            if label == "auto" {
                learned = sup.learned();
            }
            sup.shutdown(ShutdownMode::Graceful(Duration::from_secs(30)));
        }
        let m = median(times);
        println!("{label:>7}: makespan {:>8.1} ms", m.as_secs_f64() * 1e3);
        results.push((label, m));
    }
    let get = |l: &str| results.iter().find(|(x, _)| *x == l).expect("ran").1;
    let (best, tags, all_cpu, auto) = (get("best"), get("tags"), get("all-cpu"), get("auto"));
    println!(
        "auto / best = {:.2} (target <= 1.10); bad / auto (target >= 3.00): tags / auto = {:.2}, all-cpu / auto = {:.2}",
        auto.as_secs_f64() / best.as_secs_f64(),
        tags.as_secs_f64() / auto.as_secs_f64(),
        all_cpu.as_secs_f64() / auto.as_secs_f64()
    );
    println!("what auto learned (last run):");
    for l in &learned {
        let truth = NAMES
            .iter()
            .find(|(n, _, _)| *n == l.name)
            .map_or("?", |(_, _, cpu)| if *cpu { "cpu" } else { "io" });
        println!("  {l}  (truly {truth})");
    }
    Ok(())
}
