//! `cargo xtask bench overhead`: what our executors add per task over the raw libraries.
//!
//! In one process, for no-op tasks and ~1 µs spin tasks, submitted one at a time and as a
//! batch, it times (a) raw rayon `spawn`, raw tokio `spawn` and a raw crossbeam-channel
//! pool of the same width, (b) each backend through `ExecutorExt`, (c) the supervisor
//! routing to each backend. It prints the median of several runs as tasks/s and the ratio
//! of our time to the raw library's (lower is better; 1.00 = no overhead).

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
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        noop: 1_000_000,
        spin: 100_000,
        runs: 5,
        width: 2,
        only: None,
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
            "-h" | "--help" => {
                println!(
                    "usage: bench-overhead [--noop N] [--spin N] [--runs N] [--width THREADS] [--only rayon|tokio|threads]"
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

#[derive(Clone, Copy, PartialEq)]
enum Work {
    Noop,
    Spin,
}

impl Work {
    fn run(self) {
        match self {
            Work::Noop => {
                black_box(());
            }
            Work::Spin => spin_1us(),
        }
    }
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

fn time_runs(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
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

fn ours_batch(exec: &dyn Executor, n: usize, work: Work) {
    exec.map(0..n, move |_| work.run())
        .expect("a benchmark task failed");
}

struct Row {
    label: String,
    tasks: usize,
    raw: Duration,
    ours: Duration,
    routed: Option<Duration>,
}

fn print_rows(rows: &[Row]) {
    println!(
        "\n{:<40} {:>9} {:>12} {:>12} {:>12} {:>9} {:>11}",
        "case", "tasks", "raw/s", "ours/s", "routed/s", "ours/raw", "routing ns"
    );
    for r in rows {
        let rate = |d: Duration| r.tasks as f64 / d.as_secs_f64();
        let routed = r
            .routed
            .map(|d| format!("{:.0}", rate(d)))
            .unwrap_or_else(|| "-".into());
        let extra = r
            .routed
            .map(|d| {
                let ns = (d.as_secs_f64() - r.ours.as_secs_f64()) * 1e9 / r.tasks as f64;
                format!("{ns:+.0}")
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<40} {:>9} {:>12.0} {:>12.0} {:>12} {:>9.2} {:>11}",
            r.label,
            r.tasks,
            rate(r.raw),
            rate(r.ours),
            routed,
            r.ours.as_secs_f64() / r.raw.as_secs_f64(),
            extra
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

fn main() -> Result<()> {
    let args = parse_args()?;
    let w = args.width;
    println!(
        "overhead benchmark: width {w}, {} no-op tasks, {} ~1us spin tasks, median of {} runs",
        args.noop, args.spin, args.runs
    );
    println!(
        "raw = the library itself; ours = our backend via ExecutorExt; routed = the supervisor"
    );
    println!(
        "routing to that backend; ratios are ours/raw; 'routing ns' is routed minus ours per task"
    );
    let pool = rayon::ThreadPoolBuilder::new().num_threads(w).build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(w)
        .enable_all()
        .build()?;
    let raw_pool = RawPool::new(w);

    let threads = ThreadsExecutor::builder("threads").workers(w).build()?;
    let rayon_exec = RayonExecutor::builder("rayon").threads(w).build()?;
    let tokio_exec = TokioExecutor::builder("tokio").worker_threads(w).build()?;
    let sup_threads = routed("threads", w)?;
    let sup_rayon = routed("rayon", w)?;
    let sup_tokio = routed("tokio", w)?;

    let wants = |backend: &str| args.only.as_deref().is_none_or(|o| o == backend);
    let mut rows = Vec::new();
    for (work, n, wname) in [
        (Work::Noop, args.noop, "no-op"),
        (Work::Spin, args.spin, "1us spin"),
    ] {
        let runs = args.runs;
        let mut row = |label: String,
                       raw: &mut dyn FnMut(),
                       ours: &mut dyn FnMut(),
                       routed: Option<&mut dyn FnMut()>| {
            let raw = time_runs(runs, raw);
            let ours = time_runs(runs, ours);
            let routed = routed.map(|f| time_runs(runs, f));
            rows.push(Row {
                label,
                tasks: n,
                raw,
                ours,
                routed,
            });
        };
        if wants("rayon") {
            row(
                format!("rayon {wname}, one at a time"),
                &mut || raw_rayon_each(&pool, n, work),
                &mut || ours_each(&rayon_exec, n, work),
                Some(&mut || ours_each(&*sup_rayon, n, work)),
            );
            row(
                format!("rayon {wname}, batch (scope vs map)"),
                &mut || raw_rayon_batch(&pool, n, work),
                &mut || ours_batch(&rayon_exec, n, work),
                Some(&mut || ours_batch(&*sup_rayon, n, work)),
            );
        }
        if wants("tokio") {
            row(
                format!("tokio {wname}, spawn vs submit_async"),
                &mut || raw_tokio_each(&rt, n, work),
                &mut || ours_each_async(&tokio_exec, n, work),
                Some(&mut || ours_each_async(&*sup_tokio, n, work)),
            );
            row(
                format!("tokio {wname}, JoinSet vs submit_async"),
                &mut || raw_tokio_batch(&rt, n, work),
                &mut || ours_each_async(&tokio_exec, n, work),
                None,
            );
        }
        if wants("threads") {
            row(
                format!("threads {wname}, one at a time"),
                &mut || raw_pool.each(n, work),
                &mut || ours_each(&threads, n, work),
                Some(&mut || ours_each(&*sup_threads, n, work)),
            );
            row(
                format!("threads {wname}, batch (loop vs map)"),
                &mut || raw_pool.each(n, work),
                &mut || ours_batch(&threads, n, work),
                Some(&mut || ours_batch(&*sup_threads, n, work)),
            );
        }
    }
    print_rows(&rows);

    for e in [
        &threads as &dyn Executor,
        &rayon_exec,
        &tokio_exec,
        &*sup_threads,
        &*sup_rayon,
        &*sup_tokio,
    ] {
        e.shutdown(ShutdownMode::Graceful(Duration::from_secs(10)));
    }
    Ok(())
}
