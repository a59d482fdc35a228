//! `demos jobs bench`: what durability and dispatch cost, against bare baselines.
//!
//! 1. Durable: N no-op jobs enqueued one commit each, then claimed, run (through the
//!    policy's executor) and recorded by the worker, vs a bare rusqlite loop inserting N
//!    rows one commit each into a table of the same schema, on the same disk with the
//!    same pragmas (WAL, `synchronous = NORMAL`). Run one after the other, not side by side: on a small
//!    machine two writers mostly measure their fight over the write lock.
//! 2. In-memory dispatch: N no-op tasks submitted to the policy's executor as `jobs.noop`
//!    with the worker's completion channel and a window of 1024 handles in flight, vs a
//!    raw pool of threads fed by a bounded (1024) crossbeam channel, with as many threads
//!    as the policy's pool.
//!
//! Each figure is the median of a few repetitions; the ratios are what to read.

use super::kinds::Effects;
use super::store::{self, Backoff, NewJob, Store, StoreOptions};
use super::worker::{self, WorkerConfig};
use anyhow::{Context, Result};
use executor_core::{Executor, ExecutorExt, TaskMeta};
use rusqlite::{Connection, params};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Durable jobs per repetition.
    pub durable_jobs: usize,
    /// In-memory no-op tasks per repetition.
    pub noop_jobs: usize,
    /// Repetitions (the median is reported).
    pub reps: usize,
    /// Threads of the raw crossbeam pool (match the policy's `jobs.noop` pool).
    pub pool_threads: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs both comparisons and prints a table; returns (durable ratio, dispatch ratio).
pub fn run(dir: &Path, exec: &Arc<dyn Executor>, o: &BenchOptions) -> Result<(f64, f64)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let mut bare = Vec::new();
    let (mut durable, mut enqueue, mut drain) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..o.reps {
        bare.push(bare_loop(
            &dir.join(format!("bare-{rep}.db")),
            o.durable_jobs,
        )?);
        let d = durable_jobs(&dir.join(format!("jobs-{rep}.db")), exec, o.durable_jobs)?;
        durable.push(d.total);
        enqueue.push(d.enqueue);
        drain.push(d.drain);
    }
    let (bare, durable) = (median(bare), median(durable));
    let (enqueue, drain) = (median(enqueue), median(drain));

    let mut raw = Vec::new();
    let mut disp = Vec::new();
    for _ in 0..o.reps {
        raw.push(crossbeam_pool(o.noop_jobs, o.pool_threads));
        disp.push(executor_dispatch(exec, o.noop_jobs)?);
    }
    let (raw, disp) = (median(raw), median(disp));

    let r1 = durable / bare;
    let r2 = disp / raw;
    println!("jobs bench (median of {} runs)", o.reps);
    println!(
        "  durable no-op jobs (enqueue + claim + record), {} jobs: {durable:>12.0} jobs/s",
        o.durable_jobs
    );
    println!("    of which: enqueue loop {enqueue:.0} jobs/s, worker drain {drain:.0} jobs/s");
    println!("  bare rusqlite insert+commit loop, same settings:  {bare:>12.0} rows/s");
    println!("  ratio durable / bare: {r1:.2} (target >= 0.5)");
    println!(
        "  in-memory no-op tasks through the executor, {} tasks: {disp:>12.0} jobs/s",
        o.noop_jobs
    );
    println!(
        "  raw crossbeam channel pool, {} threads:                {raw:>12.0} jobs/s",
        o.pool_threads
    );
    println!("  ratio executor / raw pool: {r2:.2} (target >= 0.2)");
    Ok((r1, r2))
}

/// The baseline: one row per commit into a table with the queue's schema (the same
/// columns and indexes), with plain SQL and nothing else: what writing each job down
/// once costs, before claiming, running and recording it.
fn bare_loop(path: &Path, n: usize) -> Result<f64> {
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    conn.execute_batch(store::SCHEMA)?;
    let t = Instant::now();
    let mut stmt = conn.prepare(
        "INSERT INTO jobs (kind, payload, idem_key, state, max_attempts, run_at, created_at)
         VALUES ('noop', '{}', ?1, 'queued', 1, ?2, ?2)",
    )?;
    for i in 0..n {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        stmt.execute(params![format!("bench-{i}"), i as i64])?;
        conn.execute_batch("COMMIT")?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Rates of one durable run, in jobs per second.
struct Durable {
    /// The whole life of N jobs: enqueued, claimed, run, recorded.
    total: f64,
    /// The enqueue loop alone.
    enqueue: f64,
    /// The worker draining the queue alone.
    drain: f64,
}

/// Our path: enqueue each job in its own commit (as `demos jobs enqueue` does), then a
/// worker claims, runs and records them all; every job costs three writes, two of them
/// shared by a batch.
fn durable_jobs(path: &Path, exec: &Arc<dyn Executor>, n: usize) -> Result<Durable> {
    let mut store = Store::open(path, &StoreOptions::default())?;
    let effects = Arc::new(Effects::new(
        "127.0.0.1:1",
        None,
        b"bench",
        Duration::from_secs(1),
    )?);
    let t = Instant::now();
    for i in 0..n {
        store.enqueue(&NewJob {
            kind: "noop".into(),
            payload: "{}".into(),
            idem_key: format!("bench-{i}"),
            max_attempts: 1,
        })?;
    }
    let enqueue_s = t.elapsed().as_secs_f64();
    let cfg = WorkerConfig {
        until_idle: true,
        inflight: 256,
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
        },
        ..WorkerConfig::new()
    };
    let rep = worker::run(&mut store, exec, &effects, &cfg, &AtomicBool::new(false))?;
    let total_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        rep.succeeded == n as u64,
        "bench worker finished {} of {n} jobs",
        rep.succeeded
    );
    let n = n as f64;
    Ok(Durable {
        total: n / total_s,
        enqueue: n / enqueue_s,
        drain: n / (total_s - enqueue_s),
    })
}

/// No-op tasks through the executor, each reporting back on a channel like a job does.
/// Like the worker, it keeps the handles of a bounded window of tasks in flight (the
/// raw pool's channel is bounded the same) and checks each one's result.
fn executor_dispatch(exec: &Arc<dyn Executor>, n: usize) -> Result<f64> {
    const WINDOW: usize = 1024;
    let (tx, rx) = crossbeam_channel::unbounded::<usize>();
    let t = Instant::now();
    let mut handles = std::collections::VecDeque::with_capacity(WINDOW + 1);
    for i in 0..n {
        let tx = tx.clone();
        handles.push_back(exec.run_once(TaskMeta::new("jobs.noop"), move |_ctx| {
            let _ = tx.send(i);
            Ok::<(), std::convert::Infallible>(())
        }));
        if handles.len() > WINDOW {
            let h = handles.pop_front().expect("window is not empty");
            h.wait().context("no-op task failed")?;
        }
    }
    for h in handles {
        h.wait().context("no-op task failed")?;
    }
    for _ in 0..n {
        rx.recv_timeout(Duration::from_secs(60))
            .context("a no-op task did not report back")?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The raw baseline: boxed closures over a crossbeam channel to a fixed set of threads.
fn crossbeam_pool(n: usize, threads: usize) -> f64 {
    type Work = Box<dyn FnOnce() + Send>;
    let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(1024);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let rx = work_rx.clone();
            std::thread::spawn(move || {
                for w in rx {
                    w();
                }
            })
        })
        .collect();
    let t = Instant::now();
    let feeder = std::thread::spawn(move || {
        for i in 0..n {
            let tx = done_tx.clone();
            let _ = work_tx.send(Box::new(move || {
                let _ = tx.send(i);
            }));
        }
    });
    for _ in 0..n {
        let _ = done_rx.recv();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = feeder.join();
    for w in workers {
        let _ = w.join();
    }
    rate
}
