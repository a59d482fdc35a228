//! The scripted scenario and the accounting that checks it.
//!
//! The scenario process is the coordinator. It starts the SMTP and webhook receivers,
//! a `nats-server` of its own when the policy has a nats executor and no url, the
//! policy's worker processes (`--workers N`, this binary in worker mode) and a submitter
//! process (this binary again) that calls thousands of mixed jobs with injected failures
//! through a supervisor built from the same policy file and prints each job's end as one
//! JSON line. Part-way it kills a worker with SIGKILL and starts a replacement; on a
//! server of its own it then stops and restarts `nats-server` (file storage). At the end
//! the accounting reads the submitter's lines, the mail spool, the webhook receiver's
//! record and the cleanup directories and checks that every job ended succeeded or
//! dead-lettered, that no effect is missing and that none happened twice.
//!
//! Nothing here names a backend for the jobs: the policy file alone decides whether they
//! run on threads, in a process pool, on SQLite or on NATS.

use super::kinds::{self, CLEANUP, Cleanup, EMAIL, EffectsConfig, Email, WEBHOOK, Webhook};
use super::smtp::{self, BOUNCE_DOMAIN, SmtpReceiver};
use super::webhook::{self, WebhookReceiver};
use super::worker;
use anyhow::{Context, Result, bail};
use executor_core::{Executor, TaskError, TaskHandle, TaskSet};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Size of a file a cleanup job must remove (old) and must keep (new).
const OLD_FILE: u64 = 16 * 1024;
const NEW_FILE: u64 = 4 * 1024;

/// Paths of one state directory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    /// The SQLite queue (for a policy with a sqlite executor).
    pub fn db(&self) -> PathBuf {
        self.dir.join("queue.sqlite3")
    }
    /// The store of the scenario's own nats-server.
    pub fn nats(&self) -> PathBuf {
        self.dir.join("nats")
    }
    /// The SMTP receiver's spool.
    pub fn mail(&self) -> PathBuf {
        self.dir.join("mail")
    }
    /// The webhook receiver's directory.
    pub fn webhook(&self) -> PathBuf {
        self.dir.join("webhook")
    }
    /// Where cleanup jobs' directories live.
    pub fn temp(&self) -> PathBuf {
        self.dir.join("temp")
    }
}

/// One job's arguments, by kind.
#[derive(Clone, Debug)]
pub enum JobArgs {
    /// `jobs.email`.
    Email(Email),
    /// `jobs.webhook`.
    Webhook(Webhook),
    /// `jobs.cleanup`.
    Cleanup(Cleanup),
}

impl JobArgs {
    /// The kind: `email`, `webhook` or `cleanup`.
    pub fn kind(&self) -> &'static str {
        match self {
            JobArgs::Email(_) => "email",
            JobArgs::Webhook(_) => "webhook",
            JobArgs::Cleanup(_) => "cleanup",
        }
    }

    /// Calls the job's named task on `exec` with `key` (its idempotency key, which a
    /// durable backend may use as the task's id).
    pub fn call(&self, exec: &dyn Executor, key: &str) -> TaskHandle<String> {
        match self {
            JobArgs::Email(e) => EMAIL.call_keyed(exec, key, e.clone()),
            JobArgs::Webhook(w) => WEBHOOK.call_keyed(exec, key, w.clone()),
            JobArgs::Cleanup(c) => CLEANUP.call_keyed(exec, key, c.clone()),
        }
    }
}

/// One job of the scenario.
#[derive(Clone, Debug)]
pub struct ScenarioJob {
    /// Its index.
    pub i: usize,
    /// Its idempotency key (unique per run, so a shared server's memory of earlier runs
    /// does not count).
    pub key: String,
    /// What it does.
    pub args: JobArgs,
}

/// The mixed workload: job `i` of a run, with its share of bad jobs.
///
/// 45 % email (1 in 100 to a refused recipient), 45 % webhook (1 in 100 to a URL nothing
/// listens on), 10 % cleanup (1 in 200 of a directory that does not exist).
pub fn mixed_job(layout: &Layout, run: &str, i: usize) -> Result<ScenarioJob> {
    let key = format!("scenario-{run}-{i:06}");
    let args = match i % 20 {
        0..=8 => {
            let to = if i.is_multiple_of(100) {
                format!("user{i}@{BOUNCE_DOMAIN}")
            } else {
                format!("user{i}@example.test")
            };
            JobArgs::Email(Email {
                to,
                subject: format!("report #{i}"),
                body: format!(
                    "Hello,\n\nyour report #{i} is ready.\n.\nA line with a dot above.\n"
                ),
                key: key.clone(),
            })
        }
        9..=17 => JobArgs::Webhook(Webhook {
            event: "order.paid".into(),
            data: serde_json::json!({ "order": i, "amount_cents": (i * 37) % 10_000 }),
            url: (i % 100 == 9).then(|| "http://127.0.0.1:1/hook".to_string()),
            key: key.clone(),
        }),
        _ => {
            let dir = cleanup_dir(layout, i);
            if i % 200 != 18 {
                make_cleanup_dir(&dir)?;
            }
            JobArgs::Cleanup(Cleanup {
                dir,
                ttl: "1h".into(),
            })
        }
    };
    Ok(ScenarioJob { i, key, args })
}

fn cleanup_dir(layout: &Layout, i: usize) -> PathBuf {
    layout.temp().join(format!("c{i:06}"))
}

/// A directory with two old files (to remove) and two new ones (to keep).
fn make_cleanup_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let old = SystemTime::now() - Duration::from_secs(3 * 3600);
    for (name, len, t) in [
        ("old-1.tmp", OLD_FILE, Some(old)),
        ("old-2.tmp", OLD_FILE, Some(old)),
        ("new-1.tmp", NEW_FILE, None),
        ("new-2.tmp", NEW_FILE, None),
    ] {
        let f = std::fs::File::create(dir.join(name))?;
        f.set_len(len)?;
        if let Some(t) = t {
            f.set_modified(t)?;
        }
    }
    Ok(())
}

/// How one job ended, as the submitter saw it through its handle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ended {
    /// The job's index.
    pub i: usize,
    /// `succeeded`, `dead` (its attempts failed: the task's last error) or `lost` (no
    /// answer: the task never ended, or its end was not found).
    pub outcome: String,
    /// The task's result, or the error.
    pub detail: String,
}

/// Sorts a handle's result into [`Ended`].
fn ended(i: usize, r: Result<String, TaskError>) -> Ended {
    let (outcome, detail) = match r {
        Ok(v) => ("succeeded", v),
        Err(e) => {
            let text = e.to_string();
            let lost = e.is_cancelled()
                || e.is_timeout()
                || e.is_rejected()
                || e.is_shutdown()
                || e.into_failure().is_some_and(|f| {
                    f.downcast_ref::<named_tasks::CallError>()
                        .is_some_and(|c| c.is_lost())
                });
            (if lost { "lost" } else { "dead" }, text)
        }
    };
    Ended {
        i,
        outcome: outcome.into(),
        detail,
    }
}

/// The submitter: calls `jobs` mixed jobs through a supervisor built from `policy` and
/// writes one JSON [`Ended`] line per job to `out` as each ends.
pub fn submit(dir: &Path, policy: &Path, run: &str, jobs: usize, out: impl Write) -> Result<()> {
    let layout = Layout::new(dir);
    let config = supervisor::PolicyConfig::from_file(policy)
        .with_context(|| format!("cannot load policy {}", policy.display()))?;
    let sup = supervisor::Supervisor::with_registry(config, crate::registry())
        .with_context(|| format!("cannot start the executors of {}", policy.display()))?;
    let all: Vec<ScenarioJob> = (0..jobs)
        .map(|i| mixed_job(&layout, run, i))
        .collect::<Result<_>>()?;
    // Started by a scenario that is gone: nobody reads the answers any more.
    std::thread::spawn(|| {
        loop {
            if worker::orphaned() {
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut set = TaskSet::new();
    let mut index = HashMap::new();
    for j in &all {
        let h = j.args.call(&*sup, &j.key);
        index.insert(h.id(), j.i);
        set.push(h);
    }
    let mut out = std::io::LineWriter::new(out);
    while let Some((id, r)) = set.join_next() {
        let i = index.get(&id).copied().context("a handle of no job")?;
        serde_json::to_writer(&mut out, &ended(i, r))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let report = sup.shutdown(executor_core::ShutdownMode::Graceful(Duration::from_secs(
        5,
    )));
    tracing::info!(?report, "submitter done");
    super::print_executor_table(&sup);
    Ok(())
}

/// The final accounting of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Accounting {
    /// The policy file.
    pub policy: String,
    /// The durable backends the policy uses (empty: in-process or a process pool).
    pub backends: Vec<String>,
    /// Worker processes running at a time.
    pub workers: usize,
    /// Jobs called.
    pub enqueued: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs dead-lettered (their attempts used up; the last error kept).
    pub dead_lettered: u64,
    /// Jobs that never ended, ended without an answer, or succeeded with their effect
    /// missing at the receiver (must be 0).
    pub lost: u64,
    /// Effects recorded more than once for one job (must be 0).
    pub duplicate_effects: u64,
    /// Mail messages stored by the SMTP receiver.
    pub mails_stored: u64,
    /// Webhook calls recorded by the receiver.
    pub webhooks_recorded: u64,
    /// Bytes freed by cleanup jobs.
    pub bytes_freed: u64,
    /// Repeated deliveries the receivers recognised by key and did not apply again.
    pub repeats_absorbed: u64,
    /// Worker processes killed with SIGKILL mid-run.
    pub workers_killed: u64,
    /// Jobs ended when the worker was killed.
    pub finished_at_kill: u64,
    /// Times the scenario's own nats-server was stopped and started again mid-run.
    pub server_restarts: u64,
    /// Jobs ended when the server was stopped.
    pub finished_at_restart: u64,
    /// Wall time from the first call to the last end, in seconds.
    pub elapsed_s: f64,
    /// `enqueued / elapsed_s`.
    pub jobs_per_s: f64,
}

/// Checks the submitter's record against the receivers' records and the cleanup
/// directories.
pub fn account(
    layout: &Layout,
    run: &str,
    jobs: usize,
    ends: &HashMap<usize, Ended>,
) -> Result<Accounting> {
    let mut mail_count: HashMap<String, u64> = HashMap::new();
    let mails = smtp::list(&layout.mail())?;
    for m in &mails {
        if let Some(k) = &m.key {
            *mail_count.entry(k.clone()).or_insert(0) += 1;
        }
    }
    let hooks = webhook::read_log(&webhook::log_path(&layout.webhook()))?;
    let mut a = Accounting {
        enqueued: jobs as u64,
        mails_stored: mails.len() as u64,
        webhooks_recorded: hooks.values().sum(),
        ..Accounting::default()
    };
    a.duplicate_effects = mail_count
        .values()
        .chain(hooks.values())
        .map(|&n| n.saturating_sub(1))
        .sum();
    for i in 0..jobs {
        let Some(e) = ends.get(&i) else {
            tracing::error!(job = i, "no end reported");
            a.lost += 1;
            continue;
        };
        match e.outcome.as_str() {
            "succeeded" => {
                a.succeeded += 1;
                let key = format!("scenario-{run}-{i:06}");
                let effect_present = match i % 20 {
                    0..=8 => mail_count.contains_key(&key),
                    9..=17 => hooks.contains_key(&key),
                    _ => {
                        let dir = cleanup_dir(layout, i);
                        a.bytes_freed += parse_freed(&e.detail);
                        !dir.join("old-1.tmp").exists()
                            && !dir.join("old-2.tmp").exists()
                            && dir.join("new-1.tmp").exists()
                            && dir.join("new-2.tmp").exists()
                    }
                };
                if !effect_present {
                    tracing::error!(job = i, "succeeded but its effect is missing");
                    a.lost += 1;
                }
            }
            "dead" => a.dead_lettered += 1,
            _ => {
                tracing::error!(job = i, detail = %e.detail, "lost");
                a.lost += 1;
            }
        }
    }
    Ok(a)
}

fn parse_freed(result: &str) -> u64 {
    result
        .split("freed ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Scenario settings.
#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    /// A fresh state directory (wiped first).
    pub dir: PathBuf,
    /// Jobs to call.
    pub jobs: usize,
    /// Worker processes (for a policy with a durable executor).
    pub workers: usize,
    /// Kill a worker once this share of jobs has ended.
    pub kill_at: f64,
    /// Restart the scenario's own nats-server once this share of jobs has ended.
    pub restart_at: f64,
    /// The `demos` binary to run the submitter and the workers with.
    pub exe: PathBuf,
    /// The policy file.
    pub policy: PathBuf,
    /// Share of SMTP DATA commands the receiver refuses with 451.
    pub smtp_fail_rate: f64,
    /// Share of webhook calls the receiver fails with 503.
    pub webhook_fail_rate: f64,
    /// Bound on the whole run.
    pub timeout: Duration,
}

/// Sends `sig` to a child process.
#[allow(unsafe_code)] // one libc call: kill(2) on a pid we spawned and have not reaped
pub fn signal(child: &Child, sig: libc::c_int) -> Result<()> {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
    // which cannot be reused before we wait on it.
    let r = unsafe { libc::kill(pid, sig) };
    if r != 0 {
        bail!(
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Waits for a child up to `timeout`; kills it and fails past that.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("a child process did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Children killed (and reaped) when dropped, so a failed run leaves none behind.
struct Children(Vec<(Child, PathBuf)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (c, _) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the whole scenario and returns the accounting.
pub fn run(o: &ScenarioOptions) -> Result<Accounting> {
    if o.dir.exists() {
        std::fs::remove_dir_all(&o.dir)
            .with_context(|| format!("cannot clear {}", o.dir.display()))?;
    }
    let layout = Layout::new(&o.dir);
    std::fs::create_dir_all(&o.dir)?;
    let durable = worker::durable_executors(&o.policy)?;
    let smtp = SmtpReceiver::start(&layout.mail(), 0, o.smtp_fail_rate)?;
    let hooks = WebhookReceiver::start(
        &layout.webhook(),
        0,
        webhook::DEMO_SECRET.as_bytes(),
        o.webhook_fail_rate,
    )?;
    let effects = EffectsConfig {
        smtp: smtp.addr().to_string(),
        webhook_url: Some(hooks.url()),
        secret: webhook::DEMO_SECRET.into(),
        timeout_ms: 10_000,
    };
    let mut env: Vec<(&str, String)> = vec![
        (kinds::EFFECTS_ENV, effects.to_env()),
        (
            executor_sqlite::PATH_ENV,
            layout.db().to_string_lossy().into_owned(),
        ),
    ];
    // A nats executor without a url runs on a server of the scenario's own.
    let mut server = None;
    if durable.iter().any(|d| d.backend == "nats" && !d.has_url) {
        let s = executor_nats::LocalServer::start(layout.nats())
            .context("the policy's nats executor has no url, so the demo starts nats-server")?;
        eprintln!(
            "nats-server {} (pid {}), store {}",
            s.url(),
            s.pid().unwrap_or(0),
            s.store().display()
        );
        env.push((executor_nats::URL_ENV, s.url()));
        server = Some(s);
    }
    let workers = if durable.is_empty() {
        0
    } else {
        o.workers.max(1)
    };
    eprintln!(
        "jobs scenario: {} jobs, policy {}, {} worker process(es); SMTP receiver {}, webhook receiver {}",
        o.jobs,
        o.policy.display(),
        workers,
        smtp.addr(),
        hooks.url()
    );
    let run_id = format!("{:08x}", rand::random::<u32>());
    // The submitter's answers come on its stdout; a worker's stdout is not read.
    let command = |args: &[&str], log: &Path, answers: bool| -> Result<Child> {
        let log = std::fs::File::create(log)?;
        let mut c = Command::new(&o.exe);
        c.arg("jobs").arg("--dir").arg(&o.dir).args(args);
        c.arg("--policy").arg(&o.policy);
        for (k, v) in &env {
            c.env(k, v);
        }
        c.env(worker::PARENT_ENV, std::process::id().to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stderr(log)
            .stdout(if answers {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("cannot run {}", o.exe.display()))
    };
    let mut children = Children(Vec::new());
    let mut spawned = 0;
    let mut spawn_worker = |children: &mut Children| -> Result<()> {
        spawned += 1;
        let log = o.dir.join(format!("worker-{spawned}.log"));
        let child = command(&["worker"], &log, false)?;
        children.0.push((child, log));
        Ok(())
    };
    for _ in 0..workers {
        spawn_worker(&mut children)?;
    }

    let t0 = Instant::now();
    let sub_log = o.dir.join("submitter.log");
    let jobs = o.jobs.to_string();
    let mut submitter = command(
        &["submit", "--jobs", &jobs, "--run", &run_id],
        &sub_log,
        true,
    )?;
    let stdout = submitter.stdout.take().context("the submitter's output")?;
    let mut submitter = Children(vec![(submitter, sub_log.clone())]);
    let (tx, rx) = crossbeam_channel::unbounded::<Result<Ended>>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let e = line
                .map_err(anyhow::Error::from)
                .and_then(|l| serde_json::from_str::<Ended>(&l).map_err(Into::into));
            if tx.send(e).is_err() {
                break;
            }
        }
    });

    let kill_after = ((o.jobs as f64) * o.kill_at).ceil() as u64;
    let restart_after = ((o.jobs as f64) * o.restart_at).ceil() as u64;
    let mut a = Accounting {
        policy: o.policy.display().to_string(),
        backends: durable.iter().map(|d| d.backend.clone()).collect(),
        workers,
        ..Accounting::default()
    };
    let mut ends: HashMap<usize, Ended> = HashMap::new();
    loop {
        let left = o.timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            bail!(
                "the run did not end within {:?} ({} of {} jobs ended); logs in {}",
                o.timeout,
                ends.len(),
                o.jobs,
                o.dir.display()
            );
        }
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(e) => {
                let e = e.context("a bad line from the submitter")?;
                ends.insert(e.i, e);
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        for (c, log) in &mut children.0 {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "a worker exited on its own ({status}); see {}",
                    log.display()
                );
            }
        }
        let done = ends.len() as u64;
        if workers > 0 && a.workers_killed == 0 && done >= kill_after {
            let (mut victim, log) = children.0.remove(0);
            signal(&victim, libc::SIGKILL)?;
            let _ = victim.wait();
            a.workers_killed += 1;
            a.finished_at_kill = done;
            eprintln!(
                "killed worker {} (SIGKILL) with {done} jobs ended; its log: {}",
                victim.id(),
                log.display()
            );
            spawn_worker(&mut children)?;
        }
        if let Some(s) = &mut server
            && a.workers_killed > 0
            && a.server_restarts == 0
            && done >= restart_after
        {
            s.stop();
            eprintln!("stopped nats-server with {done} jobs ended");
            std::thread::sleep(Duration::from_millis(500));
            s.restart().context("cannot restart nats-server")?;
            a.server_restarts += 1;
            a.finished_at_restart = done;
            eprintln!("restarted nats-server on {} (same store)", s.url());
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (mut sub, _) = submitter.0.remove(0);
    let status = wait_child(&mut sub, Duration::from_secs(30))?;
    if !status.success() {
        bail!("the submitter failed ({status}); see {}", sub_log.display());
    }
    // Drain the workers (SIGTERM), as an operator stopping them would.
    for (c, _) in &children.0 {
        let _ = signal(c, libc::SIGTERM);
    }
    for (c, log) in &mut children.0 {
        let s = wait_child(c, Duration::from_secs(30))?;
        if !s.success() {
            bail!("a worker failed ({s}); see {}", log.display());
        }
    }
    children.0.clear();
    a.repeats_absorbed = smtp.duplicates() + hooks.counters().duplicates;
    drop(smtp);
    drop(hooks);
    drop(server);
    let counted = account(&layout, &run_id, o.jobs, &ends)?;
    a = Accounting {
        policy: a.policy,
        backends: a.backends,
        workers: a.workers,
        repeats_absorbed: a.repeats_absorbed,
        workers_killed: a.workers_killed,
        finished_at_kill: a.finished_at_kill,
        server_restarts: a.server_restarts,
        finished_at_restart: a.finished_at_restart,
        elapsed_s: elapsed,
        jobs_per_s: o.jobs as f64 / elapsed,
        ..counted
    };
    Ok(a)
}

/// Prints the accounting as a table.
pub fn print_table(a: &Accounting) {
    println!("jobs scenario accounting ({})", a.policy);
    let backends = if a.backends.is_empty() {
        "none (in-process / process pool)".to_string()
    } else {
        a.backends.join(", ")
    };
    let rows: [(&str, String); 17] = [
        ("durable backends", backends),
        ("workers", a.workers.to_string()),
        ("enqueued", a.enqueued.to_string()),
        ("succeeded", a.succeeded.to_string()),
        ("dead_lettered", a.dead_lettered.to_string()),
        ("lost", a.lost.to_string()),
        ("duplicate_effects", a.duplicate_effects.to_string()),
        ("mails_stored", a.mails_stored.to_string()),
        ("webhooks_recorded", a.webhooks_recorded.to_string()),
        ("bytes_freed", a.bytes_freed.to_string()),
        ("repeats_absorbed", a.repeats_absorbed.to_string()),
        ("workers_killed", a.workers_killed.to_string()),
        ("finished_at_kill", a.finished_at_kill.to_string()),
        ("server_restarts", a.server_restarts.to_string()),
        ("finished_at_restart", a.finished_at_restart.to_string()),
        ("elapsed_s", format!("{:.2}", a.elapsed_s)),
        ("jobs_per_s", format!("{:.0}", a.jobs_per_s)),
    ];
    for (k, v) in rows {
        println!("  {k:<20} {v:>12}");
    }
}
