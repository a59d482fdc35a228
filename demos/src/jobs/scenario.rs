//! The scripted scenario and the accounting that checks it.
//!
//! Thousands of mixed jobs with injected failures go into a fresh queue; a worker runs as
//! a child process and is killed with SIGKILL part-way; a second worker finishes the
//! work (after the dead one's leases expire); then the accounting reads the queue, the
//! mail spool, the webhook receiver's record and the cleanup directories and checks that
//! every job ended succeeded or dead-lettered, that no effect is missing and that none
//! happened twice.

use super::kinds::{self, Cleanup, Email, Webhook};
use super::smtp::{self, BOUNCE_DOMAIN, SmtpReceiver};
use super::store::{NewJob, Store, StoreOptions};
use super::webhook::{self, WebhookReceiver};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::HashMap;
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
    /// The queue database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("jobs.db")
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

/// The mixed workload: job `i` of `n`, with its share of bad jobs.
///
/// 45 % email (1 in 100 to a refused recipient), 45 % webhook (1 in 100 to a URL nothing
/// listens on), 10 % cleanup (1 in 200 of a directory that does not exist).
pub fn mixed_job(layout: &Layout, i: usize, max_attempts: u32) -> Result<NewJob> {
    let key = format!("scenario-{i:06}");
    let (kind, payload) = match i % 20 {
        0..=8 => {
            let to = if i.is_multiple_of(100) {
                format!("user{i}@{BOUNCE_DOMAIN}")
            } else {
                format!("user{i}@example.test")
            };
            let e = Email {
                to,
                subject: format!("report #{i}"),
                body: format!(
                    "Hello,\n\nyour report #{i} is ready.\n.\nA line with a dot above.\n"
                ),
            };
            ("email", serde_json::to_string(&e)?)
        }
        9..=17 => {
            let w = Webhook {
                event: "order.paid".into(),
                data: serde_json::json!({ "order": i, "amount_cents": (i * 37) % 10_000 }),
                url: (i % 100 == 9).then(|| "http://127.0.0.1:1/hook".to_string()),
            };
            ("webhook", serde_json::to_string(&w)?)
        }
        _ => {
            let dir = layout.temp().join(format!("c{i:06}"));
            if i % 200 != 18 {
                make_cleanup_dir(&dir)?;
            }
            let c = Cleanup {
                dir,
                ttl: "1h".into(),
            };
            ("cleanup", serde_json::to_string(&c)?)
        }
    };
    Ok(NewJob {
        kind: kind.into(),
        payload: kinds::validate(kind, &payload)?,
        idem_key: key,
        max_attempts,
    })
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

/// The final accounting of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Accounting {
    /// Jobs in the queue.
    pub enqueued: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs dead-lettered.
    pub dead_lettered: u64,
    /// Jobs neither succeeded nor dead-lettered, plus succeeded jobs whose effect is
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
    /// Failed attempts logged in the queue's failure log.
    pub failures_logged: u64,
    /// Jobs whose attempts were interrupted by the kill and redone.
    pub requeued_after_kill: u64,
    /// Repeated deliveries the receivers recognised by key and did not apply again.
    pub repeats_absorbed: u64,
    /// Jobs finished when the worker was killed.
    pub finished_at_kill: u64,
    /// Wall time from the first enqueue to the end of the second worker, in seconds.
    pub elapsed_s: f64,
    /// `enqueued / elapsed_s`.
    pub jobs_per_s: f64,
}

/// Reads the queue and the receivers' records and counts losses and duplicates.
pub fn account(layout: &Layout) -> Result<Accounting> {
    let store = Store::open(&layout.db(), &StoreOptions::default())?;
    let jobs = store.all_jobs()?;
    let mut mail_count: HashMap<String, u64> = HashMap::new();
    let mails = smtp::list(&layout.mail())?;
    for m in &mails {
        if let Some(k) = &m.key {
            *mail_count.entry(k.clone()).or_insert(0) += 1;
        }
    }
    let hooks = webhook::read_log(&webhook::log_path(&layout.webhook()))?;
    let mut a = Accounting {
        enqueued: jobs.len() as u64,
        mails_stored: mails.len() as u64,
        webhooks_recorded: hooks.values().sum(),
        failures_logged: store.failure_count()?,
        ..Accounting::default()
    };
    a.duplicate_effects = mail_count
        .values()
        .chain(hooks.values())
        .map(|&n| n.saturating_sub(1))
        .sum();
    for j in &jobs {
        match j.state.as_str() {
            "succeeded" => {
                a.succeeded += 1;
                let effect_present = match j.kind.as_str() {
                    "email" => mail_count.contains_key(&j.idem_key),
                    "webhook" => hooks.contains_key(&j.idem_key),
                    "cleanup" => {
                        let c: Cleanup = serde_json::from_str(&j.payload)?;
                        a.bytes_freed += parse_freed(j.result.as_deref().unwrap_or(""));
                        !c.dir.join("old-1.tmp").exists()
                            && !c.dir.join("old-2.tmp").exists()
                            && c.dir.join("new-1.tmp").exists()
                            && c.dir.join("new-2.tmp").exists()
                    }
                    _ => true,
                };
                if !effect_present {
                    tracing::error!(job = j.id, key = %j.idem_key, "succeeded but its effect is missing");
                    a.lost += 1;
                }
            }
            "dead" => a.dead_lettered += 1,
            _ => a.lost += 1,
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
    /// Jobs to enqueue.
    pub jobs: usize,
    /// Kill the first worker once this share of jobs has finished.
    pub kill_at: f64,
    /// Attempts per job.
    pub max_attempts: u32,
    /// The `demos` binary to run workers with.
    pub exe: PathBuf,
    /// The policy file for the workers.
    pub policy: PathBuf,
    /// Lease of the workers (the restart waits for the killed worker's leases).
    pub lease: Duration,
    /// Share of SMTP DATA commands the receiver refuses with 451.
    pub smtp_fail_rate: f64,
    /// Share of webhook calls the receiver fails with 503.
    pub webhook_fail_rate: f64,
    /// Bound on the whole run.
    pub timeout: Duration,
}

/// Worker command line shared by both runs.
fn spawn_worker(
    o: &ScenarioOptions,
    smtp: &SmtpReceiver,
    hooks: &WebhookReceiver,
    log: &Path,
) -> Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(&o.exe)
        .arg("jobs")
        .arg("--dir")
        .arg(&o.dir)
        .arg("run")
        .arg("--policy")
        .arg(&o.policy)
        .args(["--smtp", &smtp.addr().to_string()])
        .args(["--webhook-url", &hooks.url()])
        .args(["--lease", &humantime::format_duration(o.lease).to_string()])
        .args([
            "--backoff",
            "20ms",
            "--max-backoff",
            "400ms",
            "--until-idle",
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start worker {}", o.exe.display()))
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
            bail!("worker did not finish within {timeout:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
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
    let start_receivers = || -> Result<(SmtpReceiver, WebhookReceiver)> {
        let smtp = SmtpReceiver::start(&layout.mail(), 0, o.smtp_fail_rate)?;
        let hooks = WebhookReceiver::start(
            &layout.webhook(),
            0,
            webhook::DEMO_SECRET.as_bytes(),
            o.webhook_fail_rate,
        )?;
        Ok((smtp, hooks))
    };
    let (smtp, hooks) = start_receivers()?;
    eprintln!(
        "jobs scenario: {} jobs in {}; SMTP receiver {}, webhook receiver {}",
        o.jobs,
        o.dir.display(),
        smtp.addr(),
        hooks.url()
    );

    let t0 = Instant::now();
    let mut store = Store::open(&layout.db(), &StoreOptions::default())?;
    let all: Vec<NewJob> = (0..o.jobs)
        .map(|i| mixed_job(&layout, i, o.max_attempts))
        .collect::<Result<_>>()?;
    for chunk in all.chunks(500) {
        store.enqueue_many(chunk)?;
    }

    // First worker: kill it abruptly once part of the work is done.
    let log1 = o.dir.join("worker-1.log");
    let mut child = spawn_worker(o, &smtp, &hooks, &log1)?;
    let kill_after = ((o.jobs as f64) * o.kill_at).ceil() as u64;
    let finished_at_kill = loop {
        let c = store.counts()?;
        let finished = c.succeeded + c.dead;
        if finished >= kill_after {
            signal(&child, libc::SIGKILL)?;
            let _ = child.wait();
            break finished;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "worker exited ({status}) before the kill; see {}",
                log1.display()
            );
        }
        if t0.elapsed() > o.timeout {
            let _ = child.kill();
            bail!("worker made too little progress within {:?}", o.timeout);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let running_at_kill = store.counts()?.running;
    eprintln!(
        "killed worker 1 (SIGKILL) with {finished_at_kill} jobs finished and {running_at_kill} running"
    );

    // Restart the receivers too (on new ports): what they saw before must still count,
    // or a repeat of an effect from before the kill would be stored twice.
    let absorbed = smtp.duplicates() + hooks.counters().duplicates;
    drop(smtp);
    drop(hooks);
    let (smtp, hooks) = start_receivers()?;

    // Second worker: re-queues the dead worker's jobs once their leases expire.
    let log2 = o.dir.join("worker-2.log");
    let mut child = spawn_worker(o, &smtp, &hooks, &log2)?;
    let left = o.timeout.saturating_sub(t0.elapsed());
    let status = wait_child(&mut child, left)?;
    if !status.success() {
        bail!("worker 2 failed ({status}); see {}", log2.display());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let absorbed = absorbed + smtp.duplicates() + hooks.counters().duplicates;
    eprintln!("worker 2 finished; the receivers absorbed {absorbed} repeated effect(s)");
    drop(smtp);
    drop(hooks);

    let mut a = account(&layout)?;
    a.finished_at_kill = finished_at_kill;
    a.requeued_after_kill = running_at_kill;
    a.repeats_absorbed = absorbed;
    a.elapsed_s = elapsed;
    a.jobs_per_s = a.enqueued as f64 / elapsed;
    Ok(a)
}

/// Prints the accounting as a table.
pub fn print_table(a: &Accounting) {
    println!("jobs scenario accounting");
    let rows: [(&str, String); 14] = [
        ("enqueued", a.enqueued.to_string()),
        ("succeeded", a.succeeded.to_string()),
        ("dead_lettered", a.dead_lettered.to_string()),
        ("lost", a.lost.to_string()),
        ("duplicate_effects", a.duplicate_effects.to_string()),
        ("mails_stored", a.mails_stored.to_string()),
        ("webhooks_recorded", a.webhooks_recorded.to_string()),
        ("bytes_freed", a.bytes_freed.to_string()),
        ("failures_logged", a.failures_logged.to_string()),
        ("repeats_absorbed", a.repeats_absorbed.to_string()),
        ("finished_at_kill", a.finished_at_kill.to_string()),
        ("requeued_after_kill", a.requeued_after_kill.to_string()),
        ("elapsed_s", format!("{:.2}", a.elapsed_s)),
        ("jobs_per_s", format!("{:.0}", a.jobs_per_s)),
    ];
    for (k, v) in rows {
        println!("  {k:<20} {v:>10}");
    }
}
