//! `cargo xtask bench jobs`: durable no-op jobs per second end to end (enqueue, run,
//! result) on the sqlite and nats backends, each beside its raw baseline measured in the
//! same run (a bare SQLite commit loop with the store's settings; a raw async-nats
//! JetStream publish, pull and ack loop), with p50/p99 enqueue-to-start latency and the
//! ratios the targets are stated in.
//!
//! `bench-jobs [--jobs N] [--window W] [--only sqlite|nats]`: W calls are kept in flight
//! (a sliding window), so enqueue-to-start is a queue's latency, not the burst's length.

use anyhow::{Context, Result, bail};
use executor_core::{Executor, ShutdownMode, TaskHandle};
use executor_nats::{LocalServer, NatsExecutor, Worker};
use executor_sqlite::{SqliteExecutor, WorkerControl};
use futures::StreamExt;
use named_tasks::{Task, Tasks};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Enqueue-to-start of each run of [`NOOP`], in nanoseconds.
static STARTS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The benchmark's job: records how long after its call it started, does nothing else.
static NOOP: Task<u64, ()> = Task::new("bench.noop", |_ctx, sent| {
    let started = now_ns().saturating_sub(sent);
    STARTS.lock().unwrap().push(started);
    Ok(())
});

struct Args {
    jobs: usize,
    window: usize,
    only: Option<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        jobs: 20_000,
        window: 1000,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--jobs" => a.jobs = value()?.parse()?,
            "--window" => a.window = value()?.parse::<usize>()?.max(1),
            "--only" => a.only = Some(value()?),
            other => bail!("unknown argument {other}; use --jobs N --window W --only sqlite|nats"),
        }
    }
    Ok(a)
}

/// One backend's end-to-end figures.
struct Run {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Calls `NOOP` `jobs` times on `exec` with `window` calls in flight; every handle must
/// succeed.
fn drive(exec: &dyn Executor, jobs: usize, window: usize) -> Result<Run> {
    STARTS.lock().unwrap().clear();
    let t0 = Instant::now();
    let mut flying: VecDeque<TaskHandle<()>> = VecDeque::with_capacity(window);
    for _ in 0..jobs {
        if flying.len() >= window {
            flying.pop_front().unwrap().wait()?;
        }
        flying.push_back(NOOP.call(exec, now_ns()));
    }
    for h in flying {
        h.wait()?;
    }
    let per_sec = jobs as f64 / t0.elapsed().as_secs_f64();
    let mut starts = std::mem::take(&mut *STARTS.lock().unwrap());
    starts.sort_unstable();
    let pct = |p: f64| match starts.len() {
        0 => f64::NAN,
        n => starts[((n - 1) as f64 * p) as usize] as f64 / 1e6,
    };
    Ok(Run {
        per_sec,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// A bare commit loop with the store's settings (WAL, `synchronous = NORMAL`): one row
/// per transaction.
fn bare_sqlite(path: &Path, jobs: usize) -> Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload BLOB);",
    )?;
    let mut insert = conn.prepare("INSERT INTO jobs (name, payload) VALUES (?1, ?2)")?;
    let t0 = Instant::now();
    for i in 0..jobs {
        insert.execute(rusqlite::params!["bench.noop", i.to_string().as_bytes()])?;
    }
    Ok(jobs as f64 / t0.elapsed().as_secs_f64())
}

fn sqlite_backend(path: &Path, jobs: usize, window: usize) -> Result<Run> {
    let exec = SqliteExecutor::builder("sqlite")
        .path(path)
        .slots(256)
        .build()?;
    let control = WorkerControl::new();
    std::thread::scope(|s| {
        let worker = s.spawn(|| exec.run_worker(Tasks::new().with(&NOOP), &control));
        let run = drive(&exec, jobs, window);
        control.drain();
        let worked = worker.join().expect("the sqlite worker");
        exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(10)));
        worked.map_err(|e| anyhow::anyhow!("sqlite worker: {e}"))?;
        run
    })
}

/// Raw JetStream: publish every job (acks awaited in a window), then pull and ack each.
fn raw_nats(url: &str, jobs: usize, window: usize) -> Result<f64> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await?);
        let stream = js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: "raw".into(),
                subjects: vec!["raw.>".into()],
                retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await?;
        let consumer = stream
            .get_or_create_consumer(
                "raw",
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("raw".into()),
                    ..Default::default()
                },
            )
            .await?;
        let t0 = Instant::now();
        let mut acks = futures::stream::FuturesUnordered::new();
        for i in 0..jobs {
            acks.push(
                js.publish("raw.job", i.to_string().into())
                    .await?
                    .into_future(),
            );
            if acks.len() >= window {
                acks.next().await.expect("a pending ack")?;
            }
        }
        while let Some(a) = acks.next().await {
            a?;
        }
        let mut msgs = consumer.messages().await?;
        for _ in 0..jobs {
            let m = msgs
                .next()
                .await
                .context("the raw consumer ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(jobs as f64 / t0.elapsed().as_secs_f64())
    })
}

fn nats_backend(url: &str, jobs: usize, window: usize) -> Result<Run> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let wurl = url.to_owned();
    let worker = std::thread::spawn(move || {
        Worker::builder(Tasks::new().with(&NOOP))
            .url(wurl)
            .prefix("bench")
            .parallel(256)
            .build()
            .run(async move {
                let _ = rx.await;
            })
    });
    let exec = NatsExecutor::builder("nats")
        .url(url)
        .prefix("bench")
        .build()?;
    let run = drive(&exec, jobs, window);
    exec.shutdown(ShutdownMode::Graceful(Duration::from_secs(10)));
    let _ = tx.send(());
    worker.join().expect("the nats worker")?;
    run
}

/// CPU time used so far by this process and by the server (`/proc`, in clock ticks): a
/// figure the machine's load moves less than throughput.
struct Cpu {
    client: u64,
    server: u64,
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks (0 if unreadable).
fn ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

impl Cpu {
    fn now(server: u32) -> Self {
        Self {
            client: ticks("self"),
            server: ticks(&server.to_string()),
        }
    }

    /// Microseconds of CPU per job since `self`: (this process, the server).
    fn per_job(&self, server: u32, jobs: usize) -> (f64, f64) {
        let later = Self::now(server);
        // Linux reports these in USER_HZ, 100 per second on every architecture.
        let us = |t: u64| t as f64 * 10_000.0 / jobs as f64;
        (
            us(later.client - self.client),
            us(later.server - self.server),
        )
    }
}

/// A directory of our own under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<()> {
    let a = args()?;
    EPOCH.get_or_init(Instant::now);
    let dir = Scratch(std::env::temp_dir().join(format!("bench-jobs-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "durable no-op jobs, end to end (enqueue, run, result): {} jobs, {} in flight \
         (one worker: sqlite 256 slots, nats 256); load average {}",
        a.jobs,
        a.window,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let want = |b: &str| a.only.as_deref().is_none_or(|o| o == b);
    let row = |name: &str, per_sec: f64, run: Option<&Run>| match run {
        Some(r) => println!(
            "  {name:<34} {per_sec:>9.0} jobs/s   enqueue-to-start p50 {:>8.2} ms  p99 {:>8.2} ms",
            r.p50_ms, r.p99_ms
        ),
        None => println!("  {name:<34} {per_sec:>9.0} jobs/s"),
    };
    if want("sqlite") {
        let bare = bare_sqlite(&dir.0.join("bare.sqlite3"), a.jobs)?;
        let run = sqlite_backend(&dir.0.join("queue.sqlite3"), a.jobs, a.window)?;
        row("sqlite: bare commit loop", bare, None);
        row("sqlite: backend", run.per_sec, Some(&run));
        println!(
            "ratio sqlite/bare: {:.2} (target >= 0.8)",
            run.per_sec / bare
        );
    }
    if want("nats") {
        if !LocalServer::installed() {
            println!("skipping nats: {}", executor_nats::INSTALL_HINT);
        } else {
            let server = LocalServer::start(dir.0.join("nats"))?;
            let pid = server.pid().context("the nats server's pid")?;
            let cpu = Cpu::now(pid);
            let raw = raw_nats(&server.url(), a.jobs, a.window)?;
            let raw_cpu = cpu.per_job(pid, a.jobs);
            let cpu = Cpu::now(pid);
            let run = nats_backend(&server.url(), a.jobs, a.window)?;
            let run_cpu = cpu.per_job(pid, a.jobs);
            row("nats: raw JetStream publish/pull/ack", raw, None);
            row("nats: backend", run.per_sec, Some(&run));
            for (what, (client, server)) in [("raw", raw_cpu), ("backend", run_cpu)] {
                println!(
                    "  cpu per job, {what:<7}: this process {client:>6.1} µs, nats-server {server:>6.1} µs"
                );
            }
            println!("ratio nats/raw: {:.2} (target >= 0.5)", run.per_sec / raw);
            println!(
                "nats jobs/s: {:.0} (target >= 10000 on 2 cores)",
                run.per_sec
            );
        }
    }
    Ok(())
}
