//! The job kinds as named tasks, their arguments, and the real effects they perform.
//!
//! | task | arguments | effect |
//! |---|---|---|
//! | `jobs.email` | `{"to", "subject", "body", "key"}` | an SMTP exchange (lettre) with the configured server |
//! | `jobs.cleanup` | `{"dir", "ttl"}` | removes files older than `ttl` under `dir`, reports bytes freed |
//! | `jobs.webhook` | `{"event", "data", "url"?, "key"}` | a signed HTTP POST (ureq) to `url` or the configured receiver |
//! | `jobs.noop` | `{"sleep_ms"?}` | nothing, or a sleep (tests) |
//!
//! Each kind is a [`named_tasks::Task`]: the same `static` runs on threads, in worker
//! processes, or on a durable queue (SQLite, NATS), as the policy file says. Every effect
//! carries the job's idempotency key (a mail header, an HTTP header) so the receivers can
//! drop repeats: delivery is at least once on every backend.
//!
//! Where mail and webhooks go is the process's [`EffectsConfig`]: set in the process
//! ([`configure`]) or, in a process the demo starts (a worker, the scenario's submitter,
//! a `backend = "process"` worker), read once from `SWITCHYARD_JOBS_EFFECTS` (JSON).

use super::smtp::IDEMPOTENCY_HEADER;
use super::webhook;
use anyhow::{Context, Result, bail};
use executor_core::BoxError;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::{Message, SmtpTransport, Transport};
use named_tasks::{Task, Tasks};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The kinds a job may have.
pub const KINDS: &[&str] = &["email", "cleanup", "webhook", "noop"];

/// The environment variable a process started by the demo reads its effects from.
pub const EFFECTS_ENV: &str = "SWITCHYARD_JOBS_EFFECTS";

/// `jobs.email`: sends one mail.
pub static EMAIL: Task<Email, String> =
    Task::new("jobs.email", |_ctx, e| Ok(effects()?.email(&e)?));
/// `jobs.webhook`: fires one signed webhook.
pub static WEBHOOK: Task<Webhook, String> =
    Task::new("jobs.webhook", |_ctx, w| Ok(effects()?.webhook(&w)?));
/// `jobs.cleanup`: removes old files under a directory.
pub static CLEANUP: Task<Cleanup, String> = Task::new("jobs.cleanup", |_ctx, c| Ok(cleanup(&c)?));
/// `jobs.noop`: nothing, or a sleep.
pub static NOOP: Task<Noop, String> = Task::new("jobs.noop", |_ctx, n| {
    if n.sleep_ms > 0 {
        std::thread::sleep(Duration::from_millis(n.sleep_ms));
    }
    Ok(String::new())
});

/// Every job task, for a worker's registry.
pub fn tasks() -> Tasks {
    Tasks::new()
        .with(&EMAIL)
        .with(&WEBHOOK)
        .with(&CLEANUP)
        .with(&NOOP)
}

/// Where a process's effects go.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EffectsConfig {
    /// SMTP server, `HOST:PORT`.
    pub smtp: String,
    /// Webhook URL for jobs without one.
    pub webhook_url: Option<String>,
    /// HMAC secret for webhook signatures.
    pub secret: String,
    /// Timeout of one SMTP or HTTP exchange, in milliseconds.
    pub timeout_ms: u64,
}

impl EffectsConfig {
    /// The demo's receivers as `demos jobs serve` starts them by default.
    pub fn local_default() -> EffectsConfig {
        EffectsConfig {
            smtp: "127.0.0.1:2525".into(),
            webhook_url: Some("http://127.0.0.1:8025/hook".into()),
            secret: webhook::DEMO_SECRET.into(),
            timeout_ms: 10_000,
        }
    }

    /// As the value of [`EFFECTS_ENV`].
    pub fn to_env(&self) -> String {
        serde_json::to_string(self).expect("plain fields serialise")
    }
}

static EFFECTS: OnceLock<Result<Effects, String>> = OnceLock::new();

/// Sets this process's effects; false when they were set (or read) already.
pub fn configure(cfg: &EffectsConfig) -> Result<bool> {
    let fx = Effects::new(
        &cfg.smtp,
        cfg.webhook_url.clone(),
        cfg.secret.as_bytes(),
        Duration::from_millis(cfg.timeout_ms),
    )?;
    Ok(EFFECTS.set(Ok(fx)).is_ok())
}

/// This process's effects: configured, or read once from [`EFFECTS_ENV`].
fn effects() -> Result<&'static Effects, BoxError> {
    let fx = EFFECTS.get_or_init(|| {
        let raw = std::env::var(EFFECTS_ENV).map_err(|_| {
            format!("this process has no mail or webhook settings ({EFFECTS_ENV} is not set)")
        })?;
        let cfg: EffectsConfig =
            serde_json::from_str(&raw).map_err(|e| format!("bad {EFFECTS_ENV}: {e}"))?;
        Effects::new(
            &cfg.smtp,
            cfg.webhook_url,
            cfg.secret.as_bytes(),
            Duration::from_millis(cfg.timeout_ms),
        )
        .map_err(|e| format!("bad {EFFECTS_ENV}: {e:#}"))
    });
    fx.as_ref().map_err(|e| e.clone().into())
}

/// `email` payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    #[serde(default)]
    pub body: String,
    /// Idempotency key: the receiver stores one message per key.
    #[serde(default)]
    pub key: String,
}

/// `cleanup` payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Directory to clean (absolute).
    pub dir: PathBuf,
    /// Files last modified longer ago than this are removed (e.g. `"1h"`).
    pub ttl: String,
}

/// `webhook` payload.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Event name.
    pub event: String,
    /// Event data, any JSON.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Target URL; the worker's configured receiver when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Idempotency key: the receiver records one call per key.
    #[serde(default)]
    pub key: String,
}

/// `noop` payload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noop {
    /// Sleep this long, standing in for a slow job.
    #[serde(default)]
    pub sleep_ms: u64,
}

/// Checks a payload for `kind` and returns it normalised (compact JSON).
pub fn validate(kind: &str, payload: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(payload)
        .with_context(|| format!("payload for '{kind}' is not valid JSON"))?;
    match kind {
        "email" => {
            let e: Email = serde_json::from_value(v.clone())
                .context("bad email payload (expected {\"to\", \"subject\", \"body\"})")?;
            e.to.parse::<lettre::Address>()
                .with_context(|| format!("bad email recipient '{}'", e.to))?;
            if e.subject.trim().is_empty() {
                bail!("bad email payload: empty subject");
            }
        }
        "cleanup" => {
            let c: Cleanup = serde_json::from_value(v.clone())
                .context("bad cleanup payload (expected {\"dir\", \"ttl\"})")?;
            cleanup_checks(&c)?;
        }
        "webhook" => {
            let w: Webhook = serde_json::from_value(v.clone())
                .context("bad webhook payload (expected {\"event\", \"data\", \"url\"?})")?;
            if let Some(url) = &w.url
                && !url.starts_with("http://")
                && !url.starts_with("https://")
            {
                bail!("bad webhook url '{url}': must start with http:// or https://");
            }
        }
        "noop" => {
            serde_json::from_value::<Noop>(v.clone())
                .context("bad noop payload (expected {} or {\"sleep_ms\": N})")?;
        }
        other => bail!("unknown job kind '{other}' (known: {})", KINDS.join(", ")),
    }
    Ok(v.to_string())
}

fn cleanup_checks(c: &Cleanup) -> Result<Duration> {
    if !c.dir.is_absolute() {
        bail!("cleanup dir '{}' must be an absolute path", c.dir.display());
    }
    if c.dir.parent().is_none() {
        bail!("refusing to clean the root directory");
    }
    humantime::parse_duration(&c.ttl).with_context(|| format!("bad cleanup ttl '{}'", c.ttl))
}

/// What the effects need: where the mail server and the default webhook are.
#[derive(Clone)]
pub struct Effects {
    smtp: SmtpTransport,
    smtp_addr: String,
    webhook_url: Option<String>,
    secret: Vec<u8>,
    http: ureq::Agent,
}

impl Effects {
    /// Effects sending mail to `smtp` (`host:port`) and webhooks to `webhook_url` unless
    /// a job names its own URL.
    pub fn new(
        smtp: &str,
        webhook_url: Option<String>,
        secret: &[u8],
        timeout: Duration,
    ) -> Result<Effects> {
        let (host, port) = smtp
            .rsplit_once(':')
            .with_context(|| format!("bad SMTP address '{smtp}' (expected HOST:PORT)"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("bad SMTP port in '{smtp}'"))?;
        // Plain SMTP without TLS: the server is our own, on loopback.
        let transport = SmtpTransport::builder_dangerous(host)
            .port(port)
            .timeout(Some(timeout))
            .build();
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Effects {
            smtp: transport,
            smtp_addr: smtp.to_string(),
            webhook_url,
            secret: secret.to_vec(),
            http,
        })
    }

    fn email(&self, e: &Email) -> Result<String, JobError> {
        let key = need_key(&e.key)?;
        let to =
            e.to.parse()
                .map_err(|err| JobError::permanent(format!("bad recipient '{}': {err}", e.to)))?;
        let msg = Message::builder()
            .from(
                "switchyard jobs <jobs@switchyard.invalid>"
                    .parse()
                    .expect("static sender parses"),
            )
            .to(to)
            .subject(e.subject.clone())
            .message_id(Some(format!("<{key}@switchyard.invalid>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER),
                key.to_string(),
            ))
            .body(e.body.clone())
            .map_err(|err| JobError::permanent(format!("cannot build the message: {err}")))?;
        match self.smtp.send(&msg) {
            Ok(resp) => Ok(format!(
                "smtp {}: {}",
                resp.code(),
                resp.message().collect::<Vec<_>>().join(" ")
            )),
            Err(err) => {
                let permanent = err.is_permanent();
                let what = if err.is_permanent() || err.is_transient() {
                    format!("SMTP server {} refused the message: {err}", self.smtp_addr)
                } else {
                    format!("cannot deliver via SMTP server {}: {err}", self.smtp_addr)
                };
                Err(JobError {
                    message: what,
                    permanent,
                })
            }
        }
    }

    fn webhook(&self, w: &Webhook) -> Result<String, JobError> {
        let key = need_key(&w.key)?;
        let url = w
            .url
            .clone()
            .or_else(|| self.webhook_url.clone())
            .ok_or_else(|| JobError::permanent("no webhook url in the job or the worker"))?;
        let body = serde_json::json!({ "event": w.event, "data": w.data, "key": key }).to_string();
        let sig = webhook::sign(&self.secret, key, body.as_bytes());
        let resp = self
            .http
            .post(&url)
            .header("Content-Type", "application/json")
            .header(webhook::KEY_HEADER, key)
            .header(webhook::SIGNATURE_HEADER, &sig)
            .send(body.as_bytes())
            .map_err(|err| JobError::transient(format!("cannot reach webhook {url}: {err}")))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(format!("http {status}")),
            408 | 429 | 500..=599 => Err(JobError::transient(format!(
                "webhook {url} answered {status}"
            ))),
            _ => Err(JobError::permanent(format!(
                "webhook {url} answered {status}"
            ))),
        }
    }
}

fn need_key(key: &str) -> Result<&str, JobError> {
    if key.is_empty() {
        Err(JobError::permanent(
            "no idempotency key: the receiver could not drop a repeat",
        ))
    } else {
        Ok(key)
    }
}

/// An effect's error and whether retrying can help (the durable queues retry every
/// failure up to the route's attempts; the flag only labels the message).
#[derive(Debug)]
struct JobError {
    message: String,
    permanent: bool,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.permanent {
            write!(f, "{} (permanent)", self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for JobError {}

impl JobError {
    fn permanent(m: impl Into<String>) -> Self {
        JobError {
            message: m.into(),
            permanent: true,
        }
    }
    fn transient(m: impl Into<String>) -> Self {
        JobError {
            message: m.into(),
            permanent: false,
        }
    }
}

fn cleanup(c: &Cleanup) -> Result<String, JobError> {
    let ttl = cleanup_checks(c).map_err(|e| JobError::permanent(format!("{e:#}")))?;
    if !c.dir.is_dir() {
        return Err(JobError::permanent(format!(
            "cleanup dir {} does not exist",
            c.dir.display()
        )));
    }
    let cutoff = SystemTime::now() - ttl;
    let (files, bytes) = remove_older(&c.dir, cutoff).map_err(|e| {
        JobError::transient(format!("cleanup of {} failed: {e:#}", c.dir.display()))
    })?;
    Ok(format!("removed {files} files, freed {bytes} bytes"))
}

/// Removes regular files under `dir` (recursively, not following symlinks) last modified
/// before `cutoff`; returns (files, bytes) removed. A file that vanished meanwhile (another
/// attempt of the same job) is not an error.
pub fn remove_older(dir: &Path, cutoff: SystemTime) -> Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", d.display())),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.modified()? < cutoff {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        files += 1;
                        bytes += meta.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot remove {}", entry.path().display()));
                    }
                }
            }
        }
    }
    Ok((files, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_clear_errors() {
        let e = validate("fax", "{}").unwrap_err().to_string();
        assert!(e.contains("unknown job kind 'fax'"), "{e}");
        let e = format!("{:#}", validate("email", "{not json").unwrap_err());
        assert!(e.contains("not valid JSON"), "{e}");
        let e = format!(
            "{:#}",
            validate("email", r#"{"to":"nobody","subject":"x"}"#).unwrap_err()
        );
        assert!(e.contains("bad email recipient"), "{e}");
        let e = format!(
            "{:#}",
            validate("cleanup", r#"{"dir":"rel","ttl":"1h"}"#).unwrap_err()
        );
        assert!(e.contains("absolute"), "{e}");
        let e = format!(
            "{:#}",
            validate("cleanup", r#"{"dir":"/tmp/x","ttl":"soon"}"#).unwrap_err()
        );
        assert!(e.contains("bad cleanup ttl"), "{e}");
        assert!(validate("webhook", r#"{"event":"e","url":"ftp://x"}"#).is_err());
        assert!(validate("webhook", r#"{"event":"e","data":{"a":1}}"#).is_ok());
    }

    fn email(to: &str, key: &str) -> Email {
        Email {
            to: to.into(),
            subject: "s".into(),
            body: "b".into(),
            key: key.into(),
        }
    }

    #[test]
    fn a_mail_without_a_key_is_a_permanent_failure() {
        let fx = Effects::new("127.0.0.1:1", None, b"s", Duration::from_secs(1)).unwrap();
        let e = fx.email(&email("a@example.test", "")).unwrap_err();
        assert!(e.permanent);
        assert!(e.to_string().contains("no idempotency key"), "{e}");
    }

    #[test]
    fn unreachable_smtp_is_a_transient_failure() {
        // Port 1 on loopback: nothing listens there.
        let fx = Effects::new("127.0.0.1:1", None, b"s", Duration::from_secs(2)).unwrap();
        let e = fx.email(&email("a@example.test", "k")).unwrap_err();
        assert!(!e.permanent, "{e}");
        assert!(
            e.message
                .contains("cannot deliver via SMTP server 127.0.0.1:1"),
            "{e}"
        );
    }

    #[test]
    fn the_same_task_runs_in_process_with_its_effects_configured() {
        // The named task through an in-process executor: a missing directory is the
        // task's own error, as on every other backend.
        let exec = executor_core::InlineExecutor::new("here");
        let c = Cleanup {
            dir: std::env::temp_dir().join("jobs-no-such-dir-for-sure"),
            ttl: "1h".into(),
        };
        let err = CLEANUP.call(&exec, c).wait().unwrap_err();
        assert!(err.is_failed(), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn cleanup_removes_only_old_files_and_counts_bytes() {
        let dir = std::env::temp_dir().join(format!("jobs-cleanup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        for (name, len, t) in [
            ("a", 100, old),
            ("sub/b", 50, old),
            ("c", 7, SystemTime::now()),
        ] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            f.set_len(len).unwrap();
            f.set_modified(t).unwrap();
        }
        let p = Cleanup {
            dir: dir.clone(),
            ttl: "1h".into(),
        };
        match cleanup(&p) {
            Ok(s) => assert_eq!(s, "removed 2 files, freed 150 bytes"),
            Err(e) => panic!("{e:?}"),
        }
        assert!(dir.join("c").exists());
        assert_eq!(cleanup(&p).unwrap(), "removed 0 files, freed 0 bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
