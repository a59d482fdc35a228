//! Demo `jobs`: durable background jobs that survive a kill.
//!
//! Jobs (`email`, `cleanup`, `webhook`) wait in a durable queue, are claimed by a worker
//! under a time-limited lease, run on a persistent pool chosen by the policy file
//! (`demos/policies/jobs.toml` routes `jobs.email`, `jobs.webhook`, `jobs.cleanup`), and
//! are retried with exponential backoff and jitter until they succeed or are
//! dead-lettered with their last error. Effects are at-least-once and carry the job's
//! idempotency key; the receivers drop repeats, so no job is lost and no effect doubled.
//!
//! # Why SQLite (rusqlite, bundled, WAL) and not redb
//!
//! - Several processes use one queue at once: `demos jobs enqueue` and `status` while a
//!   worker runs, a new worker while the old one's leases run out. SQLite in WAL mode
//!   lets readers and one writer in different processes share the file, with a busy
//!   timeout for the writer; redb takes an exclusive lock on its file per process.
//! - A claim is one statement (`UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`)
//!   inside one transaction, and the states, leases and retry times are indexed columns
//!   queried in SQL; in a key-value store each of those is a hand-kept secondary index.
//! - `synchronous = NORMAL` in WAL mode makes a commit durable against a crash of the
//!   process (what `kill -9` tests) without an fsync per commit; `--sync full` adds
//!   one for power loss.
//!
//! # Commands
//!
//! ```text
//! demos jobs [--json]                 scripted scenario: enqueue, run, SIGKILL, restart, account
//! demos jobs enqueue KIND [PAYLOAD]   add a job (JSON payload; --key for the idempotency key)
//! demos jobs run                      run a worker until Ctrl-C / SIGTERM (--until-idle to exit when done)
//! demos jobs status [--json]          counts per state and the dead letters with their errors
//! demos jobs mail                     messages the demo's SMTP receiver stored
//! demos jobs serve                    run the SMTP and webhook receivers alone
//! demos jobs bench                    durable and in-memory throughput vs bare baselines
//! ```
//!
//! State lives in `.switchyard-cache/jobs/` at the workspace root, or `--dir DIR`.

pub mod bench;
pub mod dedup;
pub mod kinds;
pub mod scenario;
pub mod smtp;
pub mod store;
pub mod webhook;
pub mod worker;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use executor_core::Executor;
use scenario::Layout;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use store::{Backoff, Enqueued, NewJob, Store, StoreOptions};

/// The state directory used when `--dir` is not given.
pub fn default_dir() -> PathBuf {
    workspace_root().join(".switchyard-cache").join("jobs")
}

/// The policy file used when `--policy` is not given.
pub fn default_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/jobs.toml")
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Loads the supervisor the jobs run on from the policy file.
///
/// This is the one place that knows where tasks go: the worker only sees it as an
/// `Arc<dyn Executor>`, and the policy file decides which pool each `jobs.*` task uses.
pub fn load_executor(policy: &Path) -> Result<Arc<supervisor::Supervisor>> {
    supervisor::Supervisor::from_file(policy)
        .with_context(|| format!("cannot load policy {}", policy.display()))
}

/// Prints one line per executor of the policy: what ran there and how long it took.
fn print_executor_table(sup: &supervisor::Supervisor) {
    eprintln!(
        "{:<8} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "executor", "submitted", "completed", "failed", "p50", "p99"
    );
    for (name, s) in sup.executor_stats() {
        eprintln!(
            "{:<8} {:>9} {:>9} {:>7} {:>10.1?} {:>10.1?}",
            name,
            s.submitted,
            s.completed,
            s.failed + s.panicked + s.timed_out,
            s.latency.p50,
            s.latency.p99
        );
    }
}

/// Command line of `demos jobs`.
#[derive(Parser, Debug)]
#[command(
    name = "demos jobs",
    bin_name = "demos jobs",
    about = "Durable background jobs that survive a kill"
)]
pub struct Cli {
    /// State directory (queue, mail spool, webhook record, temp files).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    scenario: ScenarioArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the scripted scenario (the default).
    Scenario(ScenarioArgs),
    /// Add a job to the queue.
    Enqueue(EnqueueArgs),
    /// Run a worker.
    Run(RunArgs),
    /// Show counts per state and the dead letters.
    Status(StatusArgs),
    /// List the messages the demo's SMTP receiver stored.
    Mail,
    /// Run the SMTP and webhook receivers until Ctrl-C.
    Serve(ServeArgs),
    /// Benchmark durable and in-memory throughput against bare baselines.
    Bench(BenchArgs),
}

#[derive(Args, Debug, Clone)]
struct ScenarioArgs {
    /// Print the accounting as JSON.
    #[arg(long)]
    json: bool,
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 3000)]
    jobs: usize,
    /// Kill the first worker once this share of jobs has finished.
    #[arg(long, default_value_t = 0.4)]
    kill_at: f64,
    /// Policy file for the workers.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Worker lease (the restarted worker waits for the killed one's to expire).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    lease: Duration,
}

#[derive(Args, Debug)]
struct EnqueueArgs {
    /// Job kind: email, cleanup, webhook or noop.
    kind: String,
    /// JSON payload, e.g. '{"to":"a@example.test","subject":"hi","body":"..."}'.
    #[arg(default_value = "{}")]
    payload: String,
    /// Idempotency key (a random one when absent); the same key enqueues once.
    #[arg(long)]
    key: Option<String>,
    /// Attempts before the job is dead-lettered.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// How long to wait for a database locked by another process.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    busy_timeout: Duration,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Policy file routing jobs.email / jobs.webhook / jobs.cleanup to executors.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// SMTP server HOST:PORT; the demo starts its own receiver when absent.
    #[arg(long)]
    smtp: Option<String>,
    /// Webhook URL for jobs without one; the demo starts its own receiver when absent.
    #[arg(long)]
    webhook_url: Option<String>,
    /// HMAC secret for webhook signatures.
    #[arg(long, default_value = webhook::DEMO_SECRET)]
    secret: String,
    /// Lease of a claimed job; a dead worker's jobs come back after it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Attempts in flight at most.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// First retry delay (doubles per attempt, with jitter).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    backoff: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
    /// On Ctrl-C / SIGTERM, how long running jobs may take before they are released.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Exit when no job is queued, waiting for a retry or running.
    #[arg(long)]
    until_idle: bool,
    /// Timeout of one SMTP or HTTP exchange.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    effect_timeout: Duration,
    /// Fsync every commit (survives power loss), not just process crashes.
    #[arg(long)]
    sync_full: bool,
    /// Share of mails the embedded SMTP receiver refuses with 451.
    #[arg(long, default_value_t = 0.0)]
    smtp_fail_rate: f64,
    /// Share of calls the embedded webhook receiver fails with 503.
    #[arg(long, default_value_t = 0.0)]
    webhook_fail_rate: f64,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Dead letters to show.
    #[arg(long, default_value_t = 10)]
    dead: usize,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// SMTP port (0 = any free port).
    #[arg(long, default_value_t = 2525)]
    smtp_port: u16,
    /// Webhook port (0 = any free port).
    #[arg(long, default_value_t = 8025)]
    webhook_port: u16,
    /// HMAC secret the webhook receiver verifies.
    #[arg(long, default_value = webhook::DEMO_SECRET)]
    secret: String,
    /// Share of calls failed on purpose (451 for mail, 503 for webhooks).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Durable jobs per repetition.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// In-memory no-op tasks per repetition.
    #[arg(long, default_value_t = 200_000)]
    noop_jobs: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Threads of the raw crossbeam pool (match the policy's pool for jobs.noop).
    #[arg(long, default_value_t = 4)]
    pool_threads: usize,
    /// Policy file.
    #[arg(long)]
    policy: Option<PathBuf>,
}

/// Parses `args` (`args[0]` is the demo name) and runs the demo; a usage error is
/// returned as the error.
pub fn main(args: Vec<String>) -> Result<()> {
    Cli::try_parse_from(args)?.run()
}

impl Cli {
    /// What the command logs when `RUST_LOG` is not set: a worker (`run`) and the
    /// receivers (`serve`) log their progress at info; the other commands report through
    /// their own output and log only warnings.
    pub fn log_filter(&self) -> &'static str {
        match self.cmd {
            Some(Cmd::Run(_) | Cmd::Serve(_)) => "info",
            _ => "warn",
        }
    }

    /// Runs the command.
    pub fn run(self) -> Result<()> {
        run_cli(self)
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    let dir = cli.dir.clone().unwrap_or_else(default_dir);
    match cli.cmd {
        None => scenario_cmd(&dir, &cli.scenario),
        Some(Cmd::Scenario(a)) => scenario_cmd(&dir, &a),
        Some(Cmd::Enqueue(a)) => enqueue_cmd(&dir, &a),
        Some(Cmd::Run(a)) => run_cmd(&dir, &a),
        Some(Cmd::Status(a)) => status_cmd(&dir, &a),
        Some(Cmd::Mail) => mail_cmd(&dir),
        Some(Cmd::Serve(a)) => serve_cmd(&dir, &a),
        Some(Cmd::Bench(a)) => bench_cmd(&dir, &a),
    }
}

fn open_store(dir: &Path, busy: Duration) -> Result<Store> {
    Store::open(
        &Layout::new(dir).db(),
        &StoreOptions {
            busy_timeout: busy,
            ..StoreOptions::default()
        },
    )
}

fn scenario_cmd(dir: &Path, a: &ScenarioArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.kill_at) {
        bail!("--kill-at must be in [0, 1), got {}", a.kill_at);
    }
    let o = scenario::ScenarioOptions {
        dir: dir.join("scenario"),
        jobs: a.jobs,
        kill_at: a.kill_at,
        max_attempts: 4,
        exe: std::env::current_exe().context("cannot find the demos binary")?,
        policy: a.policy.clone().unwrap_or_else(default_policy),
        lease: a.lease,
        smtp_fail_rate: 0.05,
        webhook_fail_rate: 0.15,
        timeout: Duration::from_secs(600),
    };
    let acc = scenario::run(&o)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&acc)?);
    } else {
        scenario::print_table(&acc);
        let store = open_store(&o.dir, Duration::from_secs(5))?;
        println!("a few dead letters, with the error kept:");
        for d in store.dead_letters(4)? {
            println!(
                "  #{} {} after {} attempt(s): {}",
                d.id, d.kind, d.attempts, d.last_error
            );
        }
        println!("worker logs: {}/worker-{{1,2}}.log", o.dir.display());
    }
    if acc.lost != 0 || acc.duplicate_effects != 0 {
        bail!(
            "accounting failed: {} lost, {} duplicate effects",
            acc.lost,
            acc.duplicate_effects
        );
    }
    Ok(())
}

fn enqueue_cmd(dir: &Path, a: &EnqueueArgs) -> Result<()> {
    let payload = kinds::validate(&a.kind, &a.payload)?;
    if a.max_attempts == 0 {
        bail!("--max-attempts must be at least 1");
    }
    let key = a.key.clone().unwrap_or_else(|| {
        format!(
            "{}-{:016x}{:016x}",
            a.kind,
            rand::random::<u64>(),
            rand::random::<u64>()
        )
    });
    let mut store = open_store(dir, a.busy_timeout)?;
    match store.enqueue(&NewJob {
        kind: a.kind.clone(),
        payload,
        idem_key: key.clone(),
        max_attempts: a.max_attempts,
    })? {
        Enqueued::New(id) => println!("enqueued job {id} ({} key={key})", a.kind),
        Enqueued::Existing(id) => println!("already enqueued as job {id} (key={key})"),
    }
    Ok(())
}

fn run_cmd(dir: &Path, a: &RunArgs) -> Result<()> {
    let layout = Layout::new(dir);
    let stop = Arc::new(AtomicBool::new(false));
    worker::install_signal_handlers(&stop)?;
    let mut store = Store::open(
        &layout.db(),
        &StoreOptions {
            sync: if a.sync_full {
                store::Sync::Full
            } else {
                store::Sync::Normal
            },
            ..StoreOptions::default()
        },
    )?;
    // Receivers the demo starts itself when none is configured.
    let mut _smtp = None;
    let smtp_addr = match &a.smtp {
        Some(s) => s.clone(),
        None => {
            let r = smtp::SmtpReceiver::start(&layout.mail(), 0, a.smtp_fail_rate)?;
            let addr = r.addr().to_string();
            eprintln!("SMTP receiver on {addr}, spool {}", layout.mail().display());
            _smtp = Some(r);
            addr
        }
    };
    let mut _hooks = None;
    let webhook_url = match &a.webhook_url {
        Some(u) => u.clone(),
        None => {
            let r = webhook::WebhookReceiver::start(
                &layout.webhook(),
                0,
                a.secret.as_bytes(),
                a.webhook_fail_rate,
            )?;
            let url = r.url();
            eprintln!(
                "webhook receiver on {url}, record {}",
                layout.webhook().display()
            );
            _hooks = Some(r);
            url
        }
    };
    let effects = Arc::new(kinds::Effects::new(
        &smtp_addr,
        Some(webhook_url),
        a.secret.as_bytes(),
        a.effect_timeout,
    )?);
    let sup = load_executor(&a.policy.clone().unwrap_or_else(default_policy))?;
    let exec: Arc<dyn Executor> = sup.clone();
    let cfg = worker::WorkerConfig {
        lease: a.lease,
        inflight: a.inflight.max(1),
        backoff: Backoff {
            base: a.backoff,
            max: a.max_backoff.max(a.backoff),
        },
        grace: a.grace,
        until_idle: a.until_idle,
        ..worker::WorkerConfig::new()
    };
    let rep = worker::run(&mut store, &exec, &effects, &cfg, &stop);
    // Whatever still runs now was released to the queue already: do not wait for it.
    let mode = match &rep {
        Ok(r) if r.released == 0 => executor_core::ShutdownMode::Graceful(Duration::from_secs(2)),
        _ => executor_core::ShutdownMode::Now,
    };
    let ledger = exec.shutdown(mode);
    tracing::info!(?ledger, "executor shut down");
    print_executor_table(&sup);
    let rep = rep?;
    eprintln!(
        "worker done: {} started, {} succeeded, {} retried, {} dead-lettered, {} released, {} re-queued from expired leases",
        rep.started,
        rep.succeeded,
        rep.retried,
        rep.dead_lettered,
        rep.released,
        rep.requeued_expired
    );
    Ok(())
}

fn status_cmd(dir: &Path, a: &StatusArgs) -> Result<()> {
    let store = open_store(dir, Duration::from_secs(5))?;
    let c = store.counts()?;
    let dead = store.dead_letters(a.dead)?;
    if a.json {
        let dl: Vec<_> = dead
            .iter()
            .map(|d| {
                serde_json::json!({"id": d.id, "kind": d.kind, "key": d.idem_key,
                                   "attempts": d.attempts, "error": d.last_error})
            })
            .collect();
        let v = serde_json::json!({
            "queued": c.queued, "running": c.running, "failed_waiting_retry": c.failed,
            "succeeded": c.succeeded, "dead_lettered": c.dead,
            "failures_logged": store.failure_count()?, "dead_letters": dl,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("jobs in {}", Layout::new(dir).db().display());
    println!("  queued          {:>8}", c.queued);
    println!("  running         {:>8}", c.running);
    println!("  failed (retry)  {:>8}", c.failed);
    println!("  succeeded       {:>8}", c.succeeded);
    println!("  dead-lettered   {:>8}", c.dead);
    println!("  failures logged {:>8}", store.failure_count()?);
    if !dead.is_empty() {
        println!("dead letters (newest first):");
        for d in dead {
            println!(
                "  #{} {} key={} after {} attempt(s): {}",
                d.id, d.kind, d.idem_key, d.attempts, d.last_error
            );
        }
    }
    Ok(())
}

fn mail_cmd(dir: &Path) -> Result<()> {
    let spool = Layout::new(dir).mail();
    let msgs = smtp::list(&spool)?;
    println!("{} message(s) in {}", msgs.len(), spool.display());
    for m in msgs {
        println!(
            "  {}  to={}  subject={:?}  key={}  {} bytes",
            m.file.file_name().and_then(|f| f.to_str()).unwrap_or("?"),
            m.to,
            m.subject,
            m.key.as_deref().unwrap_or("-"),
            m.size
        );
    }
    Ok(())
}

fn serve_cmd(dir: &Path, a: &ServeArgs) -> Result<()> {
    let layout = Layout::new(dir);
    let stop = Arc::new(AtomicBool::new(false));
    worker::install_signal_handlers(&stop)?;
    let smtp = smtp::SmtpReceiver::start(&layout.mail(), a.smtp_port, a.fail_rate)?;
    let hooks = webhook::WebhookReceiver::start(
        &layout.webhook(),
        a.webhook_port,
        a.secret.as_bytes(),
        a.fail_rate,
    )?;
    println!(
        "SMTP receiver:    {} (spool {})",
        smtp.addr(),
        layout.mail().display()
    );
    println!("webhook receiver: {}", hooks.url());
    println!("Ctrl-C to stop");
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = hooks.counters();
    println!(
        "stopped: {} mail repeats absorbed; webhooks {} accepted, {} repeats, {} rejected, {} failed on purpose",
        smtp.duplicates(),
        c.accepted,
        c.duplicates,
        c.rejected,
        c.injected_failures
    );
    Ok(())
}

fn bench_cmd(dir: &Path, a: &BenchArgs) -> Result<()> {
    let sup = load_executor(&a.policy.clone().unwrap_or_else(default_policy))?;
    let exec: Arc<dyn Executor> = sup;
    let r = bench::run(
        &dir.join("bench"),
        &exec,
        &bench::BenchOptions {
            durable_jobs: a.jobs,
            noop_jobs: a.noop_jobs,
            reps: a.reps.max(1),
            pool_threads: a.pool_threads.max(1),
        },
    );
    exec.shutdown(executor_core::ShutdownMode::Graceful(Duration::from_secs(
        5,
    )));
    r.map(|_| ())
}
