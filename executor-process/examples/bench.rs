//! `cargo xtask bench process`: round-trip throughput of the worker-process pool (no-op
//! and 1 ms CPU named tasks, 2 workers, both codecs) against Python's
//! `ProcessPoolExecutor` measured in the same run when `python3` is present.

use executor_core::{Executor, ShutdownMode};
use executor_process::ProcessExecutor;
use named_tasks::{Codec, NamedExt, Task, Tasks};
use std::process::Command;
use std::time::{Duration, Instant};

const WORKERS: usize = 2;
const NOOP_TASKS: usize = 20_000;
const CPU_TASKS: usize = 2_000;
const CPU_TASK: Duration = Duration::from_millis(1);
const RUNS: usize = 3;

static NOOP: Task<u64, u64> = Task::new("bench.noop", |_ctx, x: u64| Ok(x));
/// Busy for 1 ms of wall time: the ideal pool of 2 finishes 2000 of these per second.
static CPU: Task<u64, u64> = Task::new("bench.cpu1ms", |ctx, x: u64| Ok(cpu_body(ctx, x)));

const PYTHON: &str = r#"
import sys, time
from concurrent.futures import ProcessPoolExecutor

def noop(x):
    return x

def cpu(x):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.001:
        x = (x * 6364136223846793005 + 1) & 0xFFFFFFFFFFFFFFFF
    return x

def rate(ex, f, n):
    t0 = time.perf_counter()
    futs = [ex.submit(f, i) for i in range(n)]
    for fu in futs:
        fu.result()
    return n / (time.perf_counter() - t0)

if __name__ == "__main__":
    workers, noop_n, cpu_n, runs = map(int, sys.argv[1:5])
    with ProcessPoolExecutor(max_workers=workers) as ex:
        rate(ex, noop, 1000)
        noops = sorted(rate(ex, noop, noop_n) for _ in range(runs))
        cpus = sorted(rate(ex, cpu, cpu_n) for _ in range(runs))
    print(noops[len(noops) // 2], cpus[len(cpus) // 2])
"#;

fn rate(exec: &ProcessExecutor, task: &Task<u64, u64>, n: usize) -> f64 {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n as u64).map(|i| exec.call(task, i)).collect();
    for h in handles {
        h.wait().expect("bench task");
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn cpu_body(_ctx: &executor_core::TaskContext, x: u64) -> u64 {
    let t0 = Instant::now();
    let mut n = x;
    while t0.elapsed() < CPU_TASK {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn python() -> Option<(f64, f64)> {
    let out = Command::new("python3")
        .args(["-c", PYTHON])
        .args([WORKERS, NOOP_TASKS / 4, CPU_TASKS, RUNS].map(|n| n.to_string()))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some((it.next()??, it.next()??))
}

fn main() {
    executor_process::worker_hook(|| Tasks::new().with(&NOOP).with(&CPU));
    println!(
        "process pool: {WORKERS} workers; round trips, median of {RUNS} runs \
         ({NOOP_TASKS} no-op tasks, {CPU_TASKS} tasks of {CPU_TASK:?})"
    );
    let ideal = WORKERS as f64 / CPU_TASK.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average now: {} (on {} cores; 1 ms tasks reach their ideal only on an idle machine)",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut noop_json = 0.0;
    for codec in Codec::ALL {
        let exec = ProcessExecutor::builder("bench")
            .workers(WORKERS)
            .codec(codec)
            .build()
            .expect("the pool starts");
        rate(&exec, &NOOP, 1_000);
        let noop = median((0..RUNS).map(|_| rate(&exec, &NOOP, NOOP_TASKS)).collect());
        let cpu = median((0..RUNS).map(|_| rate(&exec, &CPU, CPU_TASKS)).collect());
        exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(10)));
        if codec == Codec::Json {
            noop_json = noop;
        }
        println!(
            "  switchyard {:<8} no-op {:>9.0} tasks/s  ({:>5.1} µs per task per worker)   \
             1 ms tasks {:>6.0} tasks/s = {:.3} of ideal {ideal:.0}/s",
            codec.name(),
            noop,
            WORKERS as f64 * 1e6 / noop,
            cpu,
            cpu / ideal,
        );
    }
    match python() {
        Some((noop, cpu)) => {
            println!(
                "  python3  ProcessPoolExecutor no-op {:>9.0} tasks/s  ({:>5.1} µs per task per worker)   \
                 1 ms tasks {:>6.0} tasks/s = {:.3} of ideal",
                noop,
                WORKERS as f64 * 1e6 / noop,
                cpu,
                cpu / ideal
            );
            println!(
                "  no-op throughput: switchyard (json) / python = {:.1}x (target >= 10x)",
                noop_json / noop
            );
        }
        None => println!("  python3 not found: no Python baseline"),
    }
}
