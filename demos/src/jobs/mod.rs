//! Demo `jobs`: durable background jobs that survive a kill, on the backend the policy
//! file names.
//!
//! Jobs (`jobs.email`, `jobs.webhook`, `jobs.cleanup`) are named tasks
//! ([`kinds`]), called through a supervisor built from a policy file. The file alone
//! decides where they run:
//!
//! | policy | backend | workers |
//! |---|---|---|
//! | `demos/policies/jobs.toml` (default) | `sqlite`: a durable queue in one file, no server | `demos jobs worker` processes on the same file |
//! | `demos/policies/jobs-nats.toml` | `nats`: JetStream; the demo starts `nats-server` when no url is given | `demos jobs worker` processes on any machine |
//! | `demos/policies/jobs-threads.toml` | `threads`, retries in the supervisor | none: in the calling process |
//! | `demos/policies/jobs-process.toml` | `process`: a pool of worker processes | the pool's own |
//!
//! On the durable backends the queue, the leases, the retries with backoff and the dead
//! letters are the backend's; a killed worker's jobs come back after its lease. Effects
//! are at least once and carry the job's idempotency key; the receivers drop repeats,
//! so no job is lost and no effect doubled.
//!
//! # Commands
//!
//! ```text
//! demos jobs [--json] [--policy P] [--workers N]   scenario: call, kill -9 a worker (and restart nats), account
//! demos jobs worker [--policy P]                   serve the policy's durable executors until Ctrl-C / SIGTERM (drain)
//! demos jobs enqueue KIND [PAYLOAD] [--policy P]   call one job and wait for its result
//! demos jobs mail                                  messages the demo's SMTP receiver stored
//! demos jobs serve                                 run the SMTP and webhook receivers alone
//! ```
//!
//! State lives in `.switchyard-cache/jobs/` at the workspace root, or `--dir DIR`.

pub mod dedup;
pub mod kinds;
pub mod scenario;
pub mod smtp;
pub mod webhook;
pub mod worker;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use kinds::{CLEANUP, EMAIL, EffectsConfig, NOOP, WEBHOOK};
use scenario::Layout;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The state directory used when `--dir` is not given.
pub fn default_dir() -> PathBuf {
    workspace_root().join(".switchyard-cache").join("jobs")
}

/// The policy file used when `--policy` is not given (SQLite, no server needed).
pub fn default_policy() -> PathBuf {
    policy_file("jobs.toml")
}

/// A policy file of the demos by name, e.g. `jobs-nats.toml`.
pub fn policy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name)
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Loads the supervisor the jobs are called through from the policy file.
///
/// This is the one place that knows where tasks go: the rest sees an `Executor`, and the
/// policy file decides which backend each `jobs.*` task uses.
pub fn load_executor(policy: &Path) -> Result<Arc<supervisor::Supervisor>> {
    let config = supervisor::PolicyConfig::from_file(policy)
        .with_context(|| format!("cannot load policy {}", policy.display()))?;
    supervisor::Supervisor::with_registry(config, crate::registry())
        .with_context(|| format!("cannot start the executors of {}", policy.display()))
}

/// Prints one line per executor of the policy: what ran there and how long it took.
pub(crate) fn print_executor_table(sup: &supervisor::Supervisor) {
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
    /// Policy file: where the jobs run (default demos/policies/jobs.toml, SQLite).
    #[arg(long, global = true)]
    policy: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    scenario: ScenarioArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the scripted scenario (the default).
    Scenario(ScenarioArgs),
    /// Serve the policy's durable executors until Ctrl-C / SIGTERM, then drain.
    Worker(EffectArgs),
    /// Call one job through the policy and wait for its result.
    Enqueue(EnqueueArgs),
    /// The scenario's submitter (started by the scenario).
    #[command(hide = true)]
    Submit(SubmitArgs),
    /// List the messages the demo's SMTP receiver stored.
    Mail,
    /// Run the SMTP and webhook receivers until Ctrl-C.
    Serve(ServeArgs),
    /// Gone: it measured the demo's own queue (see the durable backends' benchmark).
    #[command(hide = true)]
    Bench {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args, Debug, Clone)]
struct ScenarioArgs {
    /// Print the accounting as JSON.
    #[arg(long)]
    json: bool,
    /// Jobs to call.
    #[arg(long, default_value_t = 3000)]
    jobs: usize,
    /// Worker processes (for a policy with a sqlite or nats executor).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Kill a worker (SIGKILL) once this share of jobs has ended.
    #[arg(long, default_value_t = 0.4)]
    kill_at: f64,
    /// Stop and restart the demo's own nats-server once this share of jobs has ended.
    #[arg(long, default_value_t = 0.6)]
    restart_at: f64,
    /// Bound on the whole run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Where a worker's (or an in-process call's) mail and webhooks go, unless the process
/// was started with `SWITCHYARD_JOBS_EFFECTS`.
#[derive(Args, Debug)]
struct EffectArgs {
    /// SMTP server HOST:PORT (`demos jobs serve` listens on 127.0.0.1:2525).
    #[arg(long, default_value = "127.0.0.1:2525")]
    smtp: String,
    /// Webhook URL for jobs without one (`demos jobs serve` listens on 8025).
    #[arg(long, default_value = "http://127.0.0.1:8025/hook")]
    webhook_url: String,
    /// HMAC secret for webhook signatures.
    #[arg(long, default_value = webhook::DEMO_SECRET)]
    secret: String,
    /// Timeout of one SMTP or HTTP exchange.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    effect_timeout: Duration,
}

impl EffectArgs {
    /// Configures this process's effects from the arguments, unless the environment
    /// already says where they go.
    fn configure(&self) -> Result<()> {
        if std::env::var_os(kinds::EFFECTS_ENV).is_some() {
            return Ok(());
        }
        kinds::configure(&EffectsConfig {
            smtp: self.smtp.clone(),
            webhook_url: Some(self.webhook_url.clone()),
            secret: self.secret.clone(),
            timeout_ms: self.effect_timeout.as_millis() as u64,
        })?;
        Ok(())
    }
}

#[derive(Args, Debug)]
struct EnqueueArgs {
    /// Job kind: email, cleanup, webhook or noop.
    kind: String,
    /// JSON payload, e.g. '{"to":"a@example.test","subject":"hi","body":"..."}'.
    #[arg(default_value = "{}")]
    payload: String,
    /// Idempotency key (a random one when absent); the receivers apply a key once.
    #[arg(long)]
    key: Option<String>,
    /// How long to wait for the result (a durable job stays queued after it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    wait: Duration,
    #[command(flatten)]
    effects: EffectArgs,
}

#[derive(Args, Debug)]
struct SubmitArgs {
    /// Jobs to call.
    #[arg(long)]
    jobs: usize,
    /// The run's id (part of every idempotency key).
    #[arg(long)]
    run: String,
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

/// Parses `args` (`args[0]` is the demo name) and runs the demo; a usage error is
/// returned as the error.
pub fn main(args: Vec<String>) -> Result<()> {
    Cli::try_parse_from(args)?.run()
}

impl Cli {
    /// What the command logs when `RUST_LOG` is not set: a worker and the receivers
    /// (`serve`) log their progress at info; the other commands report through their own
    /// output and log only warnings.
    pub fn log_filter(&self) -> &'static str {
        match self.cmd {
            Some(Cmd::Worker(_) | Cmd::Serve(_)) => "info",
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
    let policy = cli.policy.clone().unwrap_or_else(default_policy);
    match cli.cmd {
        None => scenario_cmd(&dir, &policy, &cli.scenario),
        Some(Cmd::Scenario(a)) => scenario_cmd(&dir, &policy, &a),
        Some(Cmd::Worker(a)) => worker_cmd(&policy, &a),
        Some(Cmd::Enqueue(a)) => enqueue_cmd(&policy, &a),
        Some(Cmd::Submit(a)) => {
            scenario::submit(&dir, &policy, &a.run, a.jobs, std::io::stdout().lock())
        }
        Some(Cmd::Mail) => mail_cmd(&dir),
        Some(Cmd::Serve(a)) => serve_cmd(&dir, &a),
        Some(Cmd::Bench { .. }) => bail!(
            "`demos jobs bench` measured the demo's own SQLite queue, which is gone: the jobs \
             now run on executor-sqlite and executor-nats, whose end-to-end benchmark \
             replaces it"
        ),
    }
}

fn scenario_cmd(dir: &Path, policy: &Path, a: &ScenarioArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.kill_at) || !(0.0..1.0).contains(&a.restart_at) {
        bail!(
            "--kill-at and --restart-at must be in [0, 1), got {} and {}",
            a.kill_at,
            a.restart_at
        );
    }
    let o = scenario::ScenarioOptions {
        dir: dir.join("scenario"),
        jobs: a.jobs,
        workers: a.workers,
        kill_at: a.kill_at,
        restart_at: a.restart_at,
        exe: std::env::current_exe().context("cannot find the demos binary")?,
        policy: policy.to_path_buf(),
        smtp_fail_rate: 0.05,
        webhook_fail_rate: 0.15,
        timeout: a.timeout,
    };
    let acc = scenario::run(&o)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&acc)?);
    } else {
        scenario::print_table(&acc);
        println!("logs: {}/{{submitter,worker-N}}.log", o.dir.display());
    }
    if acc.lost != 0 || acc.duplicate_effects != 0 {
        bail!(
            "accounting failed: {} lost, {} duplicate effects",
            acc.lost,
            acc.duplicate_effects
        );
    }
    if acc.succeeded + acc.dead_lettered != acc.enqueued {
        bail!(
            "accounting failed: {} succeeded + {} dead-lettered != {} enqueued",
            acc.succeeded,
            acc.dead_lettered,
            acc.enqueued
        );
    }
    Ok(())
}

fn worker_cmd(policy: &Path, a: &EffectArgs) -> Result<()> {
    a.configure()?;
    let stop = Arc::new(AtomicBool::new(false));
    worker::install_signal_handlers(&stop)?;
    worker::run(policy, &stop)
}

fn enqueue_cmd(policy: &Path, a: &EnqueueArgs) -> Result<()> {
    let payload = kinds::validate(&a.kind, &a.payload)?;
    let key = a.key.clone().unwrap_or_else(|| {
        format!(
            "{}-{:016x}{:016x}",
            a.kind,
            rand::random::<u64>(),
            rand::random::<u64>()
        )
    });
    a.effects.configure()?;
    let sup = load_executor(policy)?;
    use executor_core::Executor;
    let exec: &dyn Executor = &*sup;
    let handle = match a.kind.as_str() {
        "email" => {
            let mut e: kinds::Email = serde_json::from_str(&payload)?;
            e.key = key.clone();
            EMAIL.call_keyed(exec, &key, e)
        }
        "webhook" => {
            let mut w: kinds::Webhook = serde_json::from_str(&payload)?;
            w.key = key.clone();
            WEBHOOK.call_keyed(exec, &key, w)
        }
        "cleanup" => CLEANUP.call_keyed(exec, &key, serde_json::from_str(&payload)?),
        _ => NOOP.call_keyed(exec, &key, serde_json::from_str(&payload)?),
    };
    println!(
        "called jobs.{} (key={key}) through {}",
        a.kind,
        policy.display()
    );
    let out = match handle.wait_timeout(a.wait) {
        Ok(r) => r,
        Err(_still_running) => {
            sup.shutdown(executor_core::ShutdownMode::Now);
            bail!(
                "no result within {:?}; on a durable policy the job stays queued: start a \
                 worker (demos jobs worker --policy {})",
                a.wait,
                policy.display()
            );
        }
    };
    sup.shutdown(executor_core::ShutdownMode::Graceful(Duration::from_secs(
        5,
    )));
    match out {
        Ok(v) => {
            println!("succeeded: {v}");
            Ok(())
        }
        Err(e) => bail!("job failed: {e}"),
    }
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
