//! The job kinds, their payloads, and the real effects they perform.
//!
//! | kind | payload | effect |
//! |---|---|---|
//! | `email` | `{"to", "subject", "body"}` | an SMTP exchange (lettre) with the configured server |
//! | `cleanup` | `{"dir", "ttl"}` | removes files older than `ttl` under `dir`, reports bytes freed |
//! | `webhook` | `{"event", "data", "url"?}` | a signed HTTP POST (ureq) to `url` or the configured receiver |
//! | `noop` | `{"sleep_ms"?}` | nothing, or a sleep (benchmarks, shutdown tests) |
//!
//! Every effect carries the job's idempotency key (a mail header, an HTTP header) so the
//! receivers can drop repeats. Errors say whether retrying can help: a malformed payload,
//! a refused recipient or a 4xx answer is permanent; a refused connection or a 5xx is not.

use super::smtp::IDEMPOTENCY_HEADER;
use super::store::Outcome;
use super::webhook;
use anyhow::{Context, Result, bail};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::{Message, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The kinds a job may have.
pub const KINDS: &[&str] = &["email", "cleanup", "webhook", "noop"];

/// The task name a kind is submitted under (what the policy file routes on).
pub fn task_name(kind: &str) -> &'static str {
    match kind {
        "email" => "jobs.email",
        "cleanup" => "jobs.cleanup",
        "webhook" => "jobs.webhook",
        "noop" => "jobs.noop",
        _ => "jobs.unknown",
    }
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
}

/// `noop` payload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noop {
    /// Sleep this long, standing in for a slow job.
    #[serde(default)]
    pub sleep_ms: u64,
}

fn noop(payload: &str) -> Result<String, JobError> {
    let n: Noop = serde_json::from_str(payload)
        .map_err(|err| JobError::permanent(format!("bad noop payload: {err}")))?;
    if n.sleep_ms > 0 {
        std::thread::sleep(Duration::from_millis(n.sleep_ms));
    }
    Ok(String::new())
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

    /// Runs one attempt of a job; never panics on bad input, returns the outcome.
    pub fn run(&self, kind: &str, payload: &str, key: &str) -> Outcome {
        let r = match kind {
            "email" => self.email(payload, key),
            "cleanup" => cleanup(payload),
            "webhook" => self.webhook(payload, key),
            "noop" => noop(payload),
            other => Err(JobError::permanent(format!(
                "unknown job kind '{other}' (known: {})",
                KINDS.join(", ")
            ))),
        };
        match r {
            Ok(s) => Outcome::Succeeded(s),
            Err(e) => Outcome::Failed {
                error: e.message,
                permanent: e.permanent,
            },
        }
    }

    fn email(&self, payload: &str, key: &str) -> Result<String, JobError> {
        let e: Email = serde_json::from_str(payload)
            .map_err(|err| JobError::permanent(format!("bad email payload: {err}")))?;
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
            .subject(e.subject)
            .message_id(Some(format!("<{key}@switchyard.invalid>")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER),
                key.to_string(),
            ))
            .body(e.body)
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

    fn webhook(&self, payload: &str, key: &str) -> Result<String, JobError> {
        let w: Webhook = serde_json::from_str(payload)
            .map_err(|err| JobError::permanent(format!("bad webhook payload: {err}")))?;
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

/// An effect's error and whether retrying can help.
#[derive(Debug)]
struct JobError {
    message: String,
    permanent: bool,
}

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

fn cleanup(payload: &str) -> Result<String, JobError> {
    let c: Cleanup = serde_json::from_str(payload)
        .map_err(|err| JobError::permanent(format!("bad cleanup payload: {err}")))?;
    let ttl = cleanup_checks(&c).map_err(|e| JobError::permanent(format!("{e:#}")))?;
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

    #[test]
    fn bad_payload_at_run_time_is_a_permanent_failure() {
        let fx = Effects::new("127.0.0.1:1", None, b"s", Duration::from_secs(1)).unwrap();
        match fx.run("email", "{}", "k") {
            Outcome::Failed { permanent, error } => {
                assert!(permanent);
                assert!(error.contains("bad email payload"), "{error}");
            }
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn unreachable_smtp_is_a_transient_failure() {
        // Port 1 on loopback: nothing listens there.
        let fx = Effects::new("127.0.0.1:1", None, b"s", Duration::from_secs(2)).unwrap();
        let p = r#"{"to":"a@example.test","subject":"s","body":"b"}"#;
        match fx.run("email", p, "k") {
            Outcome::Failed { permanent, error } => {
                assert!(!permanent, "{error}");
                assert!(
                    error.contains("cannot deliver via SMTP server 127.0.0.1:1"),
                    "{error}"
                );
            }
            o => panic!("unexpected {o:?}"),
        }
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
        let p = serde_json::json!({"dir": dir, "ttl": "1h"}).to_string();
        match cleanup(&p) {
            Ok(s) => assert_eq!(s, "removed 2 files, freed 150 bytes"),
            Err(e) => panic!("{e:?}"),
        }
        assert!(dir.join("c").exists());
        assert_eq!(cleanup(&p).unwrap(), "removed 0 files, freed 0 bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
