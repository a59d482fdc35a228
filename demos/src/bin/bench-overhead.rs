//! `cargo xtask bench overhead`: what our executors add per task over the raw libraries.
//!
//! In one process, for no-op tasks and ~1 µs spin tasks, submitted one at a time and as a
//! batch, it times (a) raw rayon `spawn`, raw tokio `spawn` and a raw crossbeam-channel
//! pool of the same width, (b) each backend through `ExecutorExt`, (c) the supervisor
//! routing to each backend. The sides run in turn, round after round, so each round's
//! figures share the machine's state of the moment; it prints the median of the rounds as
//! tasks/s, and the median of each round's own ratio of our time to the raw library's
//! (lower is better; 1.00 = no overhead) and routed-minus-ours time, each with the lowest
//! and highest round beside it: on a 2-core machine one round can stray far from the rest.
//!
//! The batch rows compare a task per item (rayon `scope`, a crossbeam loop) with `map`,
//! which on these backends and on the routed policy (a plain route) runs as one runner
//! task per worker sharing the items (`Executor::map_width`): they measure what a
//! data-parallel map costs, not what a task costs (ours is `map_range(0..n, ..)`, the
//! range never collected). The `par_iter` row compares the same `map_range` with what a
//! rayon user writes for one: `(0..n).into_par_iter().map().collect()` on the pool.
//! The no-op rows return `()`; the `u64 values` rows double a million numbers and keep
//! them, so writing the output is part of both sides: over a range (`map_range` against
//! `(0..n).into_par_iter()`), and over a `Vec` each side makes (`map` against
//! `vec.into_par_iter()`).
//!
//! With `--callgrind` it also runs itself under `valgrind --tool=callgrind` once per row
//! and side (`--one ROW SIDE`), with N and 2N tasks, and prints the instructions per task
//! (the difference over N, so start-up cancels out): a figure that does not move with the
//! machine's load. When `python3` is found it times Python's `ThreadPoolExecutor` on the
//! same no-op and ~1 µs tasks (`submit` each, and `map`) against the threads backend.

use anyhow::{Context, Result};
use executor_core::{Executor, ExecutorExt, ShutdownMode, TaskHandle};
use executor_rayon::RayonExecutor;
use executor_threads::ThreadsExecutor;
use executor_tokio::TokioExecutor;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Both the raw libraries and ours allocate per task; glibc's allocator serialises
/// cross-thread frees on arena locks, which would measure the allocator, not us.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Args {
    noop: usize,
    spin: usize,
    runs: usize,
    width: usize,
    only: Option<String>,
    /// `--one ROW SIDE`: run just that case once (under valgrind, for instruction counts).
    one: Option<(String, Side)>,
    callgrind: bool,
    /// Tasks per row under valgrind (the runs take N and 2N).
    ir_tasks: usize,
    python: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        noop: 1_000_000,
        spin: 100_000,
        runs: 5,
        width: 2,
        only: None,
        one: None,
        callgrind: false,
        ir_tasks: 2_000,
        python: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || -> Result<usize> {
            let v = it.next().with_context(|| format!("{flag} needs a value"))?;
            v.parse()
                .with_context(|| format!("{flag}: '{v}' is not a whole number"))
        };
        match flag.as_str() {
            "--noop" => args.noop = value()?,
            "--spin" => args.spin = value()?,
            "--runs" => args.runs = value()?.max(1),
            "--width" => args.width = value()?.max(1),
            "--only" => args.only = Some(it.next().context("--only needs a backend name")?),
            "--callgrind" => args.callgrind = true,
            "--ir-tasks" => args.ir_tasks = value()?.max(1),
            "--no-python" => args.python = false,
            "--one" => {
                let row = it.next().context("--one needs a row id")?;
                let side = match it.next().as_deref() {
                    Some("raw") => Side::Raw,
                    Some("ours") => Side::Ours,
                    Some("routed") => Side::Routed,
                    _ => anyhow::bail!("--one ROW needs a side: raw, ours or routed"),
                };
                args.one = Some((row, side));
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench-overhead [--noop N] [--spin N] [--runs N] [--width THREADS] [--only rayon|tokio|threads]\n\
                     \x20                     [--callgrind [--ir-tasks N]] [--no-python] [--one ROW raw|ours|routed]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown flag '{other}' (try --help)"),
        }
    }
    Ok(args)
}

/// About one microsecond of work that the optimiser cannot remove.
#[inline(never)]
fn spin_1us() {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < Duration::from_micros(1) {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    black_box(x);
}

/// A fixed amount of work in place of the ~1 µs spin when counting instructions: the spin
/// reads the clock until a microsecond passed, which under valgrind is many more turns.
#[inline(never)]
fn spin_fixed() {
    let mut x = 0u64;
    for _ in 0..300 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    black_box(x);
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    Noop,
    Spin,
    SpinFixed,
}

impl Work {
    fn run(self) {
        match self {
            Work::Noop => {
                black_box(());
            }
            Work::Spin => spin_1us(),
            Work::SpinFixed => spin_fixed(),
        }
    }
}

/// Which side of a row to run.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Raw,
    Ours,
    Routed,
}

/// A countdown the raw versions use to know every task ran.
struct Latch {
    left: AtomicUsize,
    waiter: std::thread::Thread,
}

impl Latch {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Latch {
            left: AtomicUsize::new(n),
            waiter: std::thread::current(),
        })
    }
    fn done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.waiter.unpark();
        }
    }
    fn wait(&self) {
        while self.left.load(Ordering::Acquire) > 0 {
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Seconds per round of `f` over `runs` rounds, after a warm-up round.
fn time_runs(runs: usize, mut f: impl FnMut()) -> Spread {
    f(); // warm-up
    Spread::of(
        (0..runs.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

// ---- raw libraries -------------------------------------------------------------------

fn raw_rayon_each(pool: &rayon::ThreadPool, n: usize, work: Work) {
    let latch = Latch::new(n);
    for _ in 0..n {
        let latch = latch.clone();
        pool.spawn(move || {
            work.run();
            latch.done();
        });
    }
    latch.wait();
}

fn raw_rayon_batch(pool: &rayon::ThreadPool, n: usize, work: Work) {
    pool.scope(|s| {
        for _ in 0..n {
            s.spawn(move |_| work.run());
        }
    });
}

/// What a rayon user writes for a data-parallel map: `par_iter` on the pool, collected.
fn raw_rayon_par_iter(pool: &rayon::ThreadPool, n: usize, work: Work) {
    use rayon::prelude::*;
    let out: Vec<()> = pool.install(|| (0..n).into_par_iter().map(|_| work.run()).collect());
    black_box(out);
}

/// A map whose values are kept: `n` numbers doubled and collected, with `par_iter` on the
/// pool (raw) or `map_range` (ours), so the output's writes are part of what is timed.
fn rayon_values(b: &Bench, side: Side, n: usize) {
    let out: Vec<u64> = match side {
        Side::Raw => {
            use rayon::prelude::*;
            let out: Vec<u64> = b
                .pool
                .install(|| (0..n as u64).into_par_iter().map(|x| x * 2).collect());
            Ok(out)
        }
        Side::Ours => b.rayon.map_range(0..n as u64, |x| x * 2),
        Side::Routed => b.sup_rayon.map_range(0..n as u64, |x| x * 2),
    }
    .expect("a benchmark map failed");
    assert_eq!(out.len(), n);
    black_box(out);
}

/// The same over numbers in a `Vec` that each side makes and consumes: `map` (ours) takes
/// its items in place, `into_par_iter` (raw) moves them out.
fn rayon_vec_values(b: &Bench, side: Side, n: usize) {
    let items: Vec<u64> = (0..n as u64).collect();
    let out: Vec<u64> = match side {
        Side::Raw => {
            use rayon::prelude::*;
            let out: Vec<u64> = b
                .pool
                .install(|| items.into_par_iter().map(|x| x * 2).collect());
            Ok(out)
        }
        Side::Ours => b.rayon.map(items, |x| x * 2),
        Side::Routed => b.sup_rayon.map(items, |x| x * 2),
    }
    .expect("a benchmark map failed");
    assert_eq!(out.len(), n);
    black_box(out);
}

fn raw_tokio_each(rt: &tokio::runtime::Runtime, n: usize, work: Work) {
    let latch = Latch::new(n);
    for _ in 0..n {
        let latch = latch.clone();
        drop(rt.spawn(async move {
            work.run();
            latch.done();
        }));
    }
    latch.wait();
}

fn raw_tokio_batch(rt: &tokio::runtime::Runtime, n: usize, work: Work) {
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            set.spawn(async move { work.run() });
        }
        while set.join_next().await.is_some() {}
    });
}

type RawJob = Box<dyn FnOnce() + Send>;

struct RawPool {
    tx: Option<crossbeam_channel::Sender<RawJob>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RawPool {
    fn new(width: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<RawJob>();
        let threads = (0..width)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        RawPool {
            tx: Some(tx),
            threads,
        }
    }

    fn each(&self, n: usize, work: Work) {
        let latch = Latch::new(n);
        let tx = self.tx.as_ref().expect("pool is open");
        for _ in 0..n {
            let latch = latch.clone();
            tx.send(Box::new(move || {
                work.run();
                latch.done();
            }))
            .expect("pool is open");
        }
        latch.wait();
    }
}

impl Drop for RawPool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---- ours ----------------------------------------------------------------------------

fn ours_each(exec: &dyn Executor, n: usize, work: Work) {
    let handles: Vec<TaskHandle<()>> = (0..n).map(|_| exec.submit(move || work.run())).collect();
    for h in handles {
        h.wait().expect("a benchmark task failed");
    }
}

fn ours_each_async(exec: &dyn Executor, n: usize, work: Work) {
    let handles: Vec<TaskHandle<()>> = (0..n)
        .map(|_| exec.submit_async(async move { work.run() }))
        .collect();
    for h in handles {
        h.wait().expect("a benchmark task failed");
    }
}

/// `n` tasks as one map over a range, as the README tells a user to write it.
fn ours_batch(exec: &dyn Executor, n: usize, work: Work) {
    exec.map_range(0..n, move |_| work.run())
        .expect("a benchmark task failed");
}

struct Row {
    label: String,
    tasks: usize,
    raw: Duration,
    ours: Duration,
    routed: Option<Duration>,
    /// The rounds' ours/raw.
    ratio: Spread,
    /// The rounds' routed-minus-ours, per task.
    routing_ns: Option<Spread>,
}

/// A figure over the rounds: its median, and its lowest and highest, which show how far
/// one round strays on a noisy machine.
struct Spread {
    median: f64,
    low: f64,
    high: f64,
}

impl Spread {
    fn of(mut xs: Vec<f64>) -> Self {
        xs.sort_by(f64::total_cmp);
        Spread {
            median: xs[xs.len() / 2],
            low: xs[0],
            high: xs[xs.len() - 1],
        }
    }
}

/// One row's sides, timed in turn `runs` times after a warm-up round: each round times
/// raw, ours and (with `routed`) routed back to back.
fn time_rounds(
    label: String,
    runs: usize,
    tasks: usize,
    routed: bool,
    mut run: impl FnMut(Side),
) -> Row {
    let mut sides = vec![Side::Raw, Side::Ours];
    if routed {
        sides.push(Side::Routed);
    }
    for &side in &sides {
        run(side); // warm-up
    }
    let rounds: Vec<Vec<Duration>> = (0..runs.max(1))
        .map(|_| {
            sides
                .iter()
                .map(|&side| {
                    let t = Instant::now();
                    run(side);
                    t.elapsed()
                })
                .collect()
        })
        .collect();
    let column = |i: usize| median(rounds.iter().map(|r| r[i]).collect());
    let per_round =
        |f: &dyn Fn(&[Duration]) -> f64| Spread::of(rounds.iter().map(|r| f(r)).collect());
    Row {
        label,
        tasks,
        raw: column(0),
        ours: column(1),
        routed: routed.then(|| column(2)),
        ratio: per_round(&|r| r[1].as_secs_f64() / r[0].as_secs_f64()),
        routing_ns: routed.then(|| {
            per_round(&|r| (r[2].as_secs_f64() - r[1].as_secs_f64()) * 1e9 / tasks as f64)
        }),
    }
}

fn print_rows(rows: &[Row]) {
    println!(
        "\n{:<40} {:>9} {:>12} {:>12} {:>12} {:>9} {:>11} {:>11} {:>12}",
        "case",
        "tasks",
        "raw/s",
        "ours/s",
        "routed/s",
        "ours/raw",
        "(range)",
        "routing ns",
        "(range)"
    );
    for r in rows {
        let rate = |d: Duration| r.tasks as f64 / d.as_secs_f64();
        let routed = r
            .routed
            .map(|d| format!("{:.0}", rate(d)))
            .unwrap_or_else(|| "-".into());
        let (extra, extra_range) = r.routing_ns.as_ref().map_or_else(
            || ("-".to_owned(), String::new()),
            |ns| {
                (
                    format!("{:+.0}", ns.median),
                    format!("{:+.0}..{:+.0}", ns.low, ns.high),
                )
            },
        );
        println!(
            "{:<40} {:>9} {:>12.0} {:>12.0} {:>12} {:>9.2} {:>11} {:>11} {:>12}",
            r.label,
            r.tasks,
            rate(r.raw),
            rate(r.ours),
            routed,
            r.ratio.median,
            format!("{:.2}..{:.2}", r.ratio.low, r.ratio.high),
            extra,
            extra_range
        );
    }
}

/// A supervisor whose policy sends every task to one executor of `backend`, after two
/// rules that do not match (so routing does real matching work).
fn routed(backend: &str, width: usize) -> Result<std::sync::Arc<supervisor::Supervisor>> {
    let size = match backend {
        "threads" => format!("workers = {width}"),
        "rayon" => format!("threads = {width}"),
        _ => format!("worker_threads = {width}"),
    };
    let policy = format!(
        "[executors.x]\nbackend = \"{backend}\"\n{size}\n\n[defaults]\nexecutor = \"x\"\n\n\
         [[route]]\nmatch = {{ name = \"scrape.*\" }}\nexecutor = \"x\"\n\n\
         [[route]]\nmatch = {{ tags = [\"gpu\"] }}\nexecutor = \"x\"\n"
    );
    Ok(supervisor::Supervisor::from_toml(&policy)?)
}

/// Everything the rows run on.
struct Bench {
    pool: rayon::ThreadPool,
    rt: tokio::runtime::Runtime,
    raw_pool: RawPool,
    threads: ThreadsExecutor,
    rayon: RayonExecutor,
    tokio: TokioExecutor,
    sup_threads: Arc<supervisor::Supervisor>,
    sup_rayon: Arc<supervisor::Supervisor>,
    sup_tokio: Arc<supervisor::Supervisor>,
}

impl Bench {
    fn new(w: usize) -> Result<Self> {
        Ok(Bench {
            pool: rayon::ThreadPoolBuilder::new().num_threads(w).build()?,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(w)
                .enable_all()
                .build()?,
            raw_pool: RawPool::new(w),
            threads: ThreadsExecutor::builder("threads").workers(w).build()?,
            rayon: RayonExecutor::builder("rayon").threads(w).build()?,
            tokio: TokioExecutor::builder("tokio").worker_threads(w).build()?,
            sup_threads: routed("threads", w)?,
            sup_rayon: routed("rayon", w)?,
            sup_tokio: routed("tokio", w)?,
        })
    }

    fn shutdown(&self) {
        for e in [
            &self.threads as &dyn Executor,
            &self.rayon,
            &self.tokio,
            &*self.sup_threads,
            &*self.sup_rayon,
            &*self.sup_tokio,
        ] {
            e.shutdown(ShutdownMode::Graceful(Duration::from_secs(10)));
        }
    }
}

/// The shapes of row, each for no-op and spin tasks: (id, backend, label).
const CASES: &[(&str, &str, &str)] = &[
    ("rayon-each", "rayon", "one at a time"),
    ("rayon-batch", "rayon", "batch (scope vs map)"),
    ("rayon-par-iter", "rayon", "map vs par_iter"),
    ("tokio-spawn", "tokio", "spawn vs submit_async"),
    ("tokio-joinset", "tokio", "JoinSet vs submit_async"),
    ("threads-each", "threads", "one at a time"),
    ("threads-batch", "threads", "batch (loop vs map)"),
];

/// The rows whose items are numbers doubled and kept, on rayon: (id, label).
const VALUE_ROWS: &[(&str, &str)] = &[
    ("rayon-values", "u64 values, map_range vs par_iter"),
    ("rayon-vec-values", "u64 values from a Vec, map vs par_iter"),
];

/// How many times N the values rows run under callgrind.
const VALUES_IR_SCALE: usize = 100;

/// Runs one side of case `id` once with `n` tasks of `work`; false when that side does
/// not exist (the JoinSet row has no routed side).
fn run_case(b: &Bench, id: &str, side: Side, n: usize, work: Work) -> bool {
    match (id, side) {
        ("rayon-each", Side::Raw) => raw_rayon_each(&b.pool, n, work),
        ("rayon-each", Side::Ours) => ours_each(&b.rayon, n, work),
        ("rayon-each", Side::Routed) => ours_each(&*b.sup_rayon, n, work),
        ("rayon-batch", Side::Raw) => raw_rayon_batch(&b.pool, n, work),
        ("rayon-par-iter", Side::Raw) => raw_rayon_par_iter(&b.pool, n, work),
        ("rayon-batch" | "rayon-par-iter", Side::Ours) => ours_batch(&b.rayon, n, work),
        ("rayon-batch" | "rayon-par-iter", Side::Routed) => ours_batch(&*b.sup_rayon, n, work),
        ("tokio-spawn", Side::Raw) => raw_tokio_each(&b.rt, n, work),
        ("tokio-spawn" | "tokio-joinset", Side::Ours) => ours_each_async(&b.tokio, n, work),
        ("tokio-spawn", Side::Routed) => ours_each_async(&*b.sup_tokio, n, work),
        ("tokio-joinset", Side::Raw) => raw_tokio_batch(&b.rt, n, work),
        ("threads-each" | "threads-batch", Side::Raw) => b.raw_pool.each(n, work),
        ("threads-each", Side::Ours) => ours_each(&b.threads, n, work),
        ("threads-each", Side::Routed) => ours_each(&*b.sup_threads, n, work),
        ("threads-batch", Side::Ours) => ours_batch(&b.threads, n, work),
        ("threads-batch", Side::Routed) => ours_batch(&*b.sup_threads, n, work),
        // The values rows: `work` does not apply (each item is doubled).
        ("rayon-values", side) => rayon_values(b, side, n),
        ("rayon-vec-values", side) => rayon_vec_values(b, side, n),
        _ => return false,
    }
    true
}

/// Instructions the whole process (every thread) executed under callgrind, from its
/// summary line `Collected : N`.
fn callgrind_ir(row: &str, work: &str, side: Side, n: usize) -> Result<u64> {
    let exe = std::env::current_exe()?;
    let side = format!("{side:?}").to_lowercase();
    let out = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(&exe)
        .args(["--one", &format!("{row}:{work}"), &side, "--ir-tasks"])
        .arg(n.to_string())
        .output()
        .context("could not run valgrind")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "valgrind on {row} {side} failed: {stderr}"
    );
    stderr
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_owned())
        })
        .with_context(|| format!("no 'Collected' line from callgrind: {stderr}"))?
        .parse()
        .context("callgrind's count is not a number")
}

/// Instructions per task: the count with 2N tasks less the count with N, over N.
fn ir_per_task(row: &str, work: &str, side: Side, n: usize) -> Result<f64> {
    let one = callgrind_ir(row, work, side, n)?;
    let two = callgrind_ir(row, work, side, 2 * n)?;
    Ok((two as f64 - one as f64) / n as f64)
}

fn print_callgrind(args: &Args) -> Result<()> {
    let n = args.ir_tasks;
    println!(
        "\ninstructions per task under callgrind (all threads; (Ir(2N) - Ir(N)) / N, N = {n}, \
         {} for the values rows; spin rows use a fixed 300-step loop in place of the 1us clock \
         spin)",
        n * VALUES_IR_SCALE
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "case", "raw Ir", "ours Ir", "routed Ir", "ours/raw", "routing Ir"
    );
    for (work, wname) in [("noop", "no-op"), ("spin", "fixed spin")] {
        for (id, backend, label) in CASES {
            if args.only.as_deref().is_some_and(|o| o != *backend) {
                continue;
            }
            let label = format!("{backend} {wname}, {label}");
            print_ir_row(&label, id, work, n, *id != "tokio-joinset")?;
        }
    }
    if args.only.as_deref().is_none_or(|o| o == "rayon") {
        // An item of these rows costs a few instructions, which the start-up's noise at N
        // would swamp.
        for (id, label) in VALUE_ROWS {
            print_ir_row(
                &format!("rayon {label}"),
                id,
                "values",
                n * VALUES_IR_SCALE,
                true,
            )?;
        }
    }
    Ok(())
}

/// Measures and prints one row of the callgrind table: row `id` with `work`, N = `n`,
/// with its routed side when `routed`.
fn print_ir_row(label: &str, id: &str, work: &str, n: usize, routed: bool) -> Result<()> {
    let raw = ir_per_task(id, work, Side::Raw, n)?;
    let ours = ir_per_task(id, work, Side::Ours, n)?;
    let routed = if routed {
        Some(ir_per_task(id, work, Side::Routed, n)?)
    } else {
        None
    };
    let show = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.0}"));
    println!(
        "{:<44} {:>10.0} {:>10.0} {:>10} {:>9.2} {:>10}",
        label,
        raw,
        ours,
        show(routed),
        ours / raw,
        routed.map_or_else(|| "-".to_owned(), |r| format!("{:+.0}", r - ours)),
    );
    Ok(())
}

/// Python's `ThreadPoolExecutor` on the same tasks: seconds for `n` tasks submitted one by
/// one (`submit` + `result`) and through `map`, over 3 rounds; `None` without `python3`.
fn python_pool(width: usize, n: usize, work: Work) -> Option<(Spread, Spread)> {
    let body = match work {
        Work::Noop => "pass",
        _ => "t = time.perf_counter_ns()\n    while time.perf_counter_ns() - t < 1000: pass",
    };
    let script = format!(
        "import time\nfrom concurrent.futures import ThreadPoolExecutor\n\
         def task(_=None):\n    {body}\n\
         with ThreadPoolExecutor(max_workers={width}) as ex:\n\
         \x20   list(ex.map(task, range(1000)))\n\
         \x20   each, batch = [], []\n\
         \x20   for _ in range(3):\n\
         \x20       t = time.perf_counter(); fs = [ex.submit(task) for _ in range({n})]\n\
         \x20       for f in fs: f.result()\n\
         \x20       each.append(time.perf_counter() - t)\n\
         \x20       t = time.perf_counter(); list(ex.map(task, range({n})))\n\
         \x20       batch.append(time.perf_counter() - t)\n\
         print(*each, ';', *batch)\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (each, batch) = text.split_once(';')?;
    let rounds = |s: &str| -> Option<Spread> {
        let xs: Vec<f64> = s
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (!xs.is_empty()).then(|| Spread::of(xs))
    };
    Some((rounds(each)?, rounds(batch)?))
}

fn print_python(b: &Bench, args: &Args) {
    // Python runs some tens of thousands of tasks a second: fewer tasks keep it short.
    println!(
        "\npython3 ThreadPoolExecutor(max_workers={}) vs the threads backend, median of 3 (python) and {} (ours)",
        args.width, args.runs
    );
    println!("(range) pairs python's fastest round with our slowest, and the other way round");
    println!(
        "{:<34} {:>9} {:>12} {:>12} {:>12} {:>15}",
        "case", "tasks", "python/s", "ours/s", "ours/python", "(range)"
    );
    for (work, n, wname) in [
        (Work::Noop, args.noop.min(50_000), "no-op"),
        (Work::Spin, args.spin.min(50_000), "1us spin"),
    ] {
        let Some((py_each, py_batch)) = python_pool(args.width, n, work) else {
            println!("(python3 not found or failed: no python rows)");
            return;
        };
        let each = time_runs(args.runs, || ours_each(&b.threads, n, work));
        let batch = time_runs(args.runs, || ours_batch(&b.threads, n, work));
        for (label, py, ours) in [("submit each", py_each, each), ("map", py_batch, batch)] {
            println!(
                "{:<34} {:>9} {:>12.0} {:>12.0} {:>11.1}x {:>15}",
                format!("{wname}, {label}"),
                n,
                n as f64 / py.median,
                n as f64 / ours.median,
                py.median / ours.median,
                format!("{:.1}x..{:.1}x", py.low / ours.high, py.high / ours.low)
            );
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let w = args.width;
    if let Some((row, side)) = &args.one {
        // One side of one row, once: what callgrind counts.
        let (id, work) = row
            .split_once(':')
            .context("--one ROW is CASE:noop|spin|values")?;
        // `spin` is the fixed spin; the values rows ignore the work.
        let work = if work == "spin" {
            Work::SpinFixed
        } else {
            Work::Noop
        };
        let b = Bench::new(w)?;
        anyhow::ensure!(
            run_case(&b, id, *side, args.ir_tasks, work),
            "no such row and side: {id} {side:?}"
        );
        b.shutdown();
        return Ok(());
    }
    println!(
        "overhead benchmark: width {w}, {} no-op tasks, {} ~1us spin tasks, median of {} runs",
        args.noop, args.spin, args.runs
    );
    println!(
        "raw = the library itself; ours = our backend via ExecutorExt; routed = the supervisor"
    );
    println!(
        "routing to that backend; ratios are ours/raw; 'routing ns' is routed minus ours per task;"
    );
    println!("(range) is the lowest..highest of the rounds");
    let b = Bench::new(w)?;
    let wants = |backend: &str| args.only.as_deref().is_none_or(|o| o == backend);
    let mut rows = Vec::new();
    for (work, n, wname) in [
        (Work::Noop, args.noop, "no-op"),
        (Work::Spin, args.spin, "1us spin"),
    ] {
        for (id, backend, label) in CASES {
            if !wants(backend) {
                continue;
            }
            let routed = *id != "tokio-joinset";
            let label = format!("{backend} {wname}, {label}");
            rows.push(time_rounds(label, args.runs, n, routed, |side| {
                run_case(&b, id, side, n, work);
            }));
        }
    }
    if wants("rayon") {
        for (id, label) in VALUE_ROWS {
            rows.push(time_rounds(
                format!("rayon {label}"),
                args.runs,
                args.noop,
                true,
                |side| {
                    run_case(&b, id, side, args.noop, Work::Noop);
                },
            ));
        }
    }
    print_rows(&rows);
    if args.python && wants("threads") {
        print_python(&b, &args);
    }
    b.shutdown();
    if args.callgrind {
        print_callgrind(&args)?;
    }
    Ok(())
}
