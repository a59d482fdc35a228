//! The command line on good and bad input, and the same job tasks on several backends
//! chosen by the policy file alone: a call waits for its result, a worker drains on
//! SIGTERM, a failing job is dead-lettered with its last error.

use demos::jobs::scenario::{Layout, signal, wait_child};
use demos::jobs::smtp::SmtpReceiver;
use demos::jobs::webhook::{self, WebhookReceiver};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_demos"));
    c.args(["jobs", "--dir"])
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        // Every sqlite policy of this test points at the test's own queue.
        .env(
            executor_sqlite::PATH_ENV,
            dir.join("queue.sqlite3").as_os_str(),
        );
    c
}

fn jobs(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().unwrap()
}

fn policy(name: &str) -> String {
    demos::jobs::policy_file(name).display().to_string()
}

fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A worker process on `policy`, its effects going to `smtp` and `hook`.
fn worker(dir: &Path, policy: &str, smtp: &str, hook: &str, secret: &str) -> Child {
    command(
        dir,
        &[
            "--policy",
            policy,
            "worker",
            "--smtp",
            smtp,
            "--webhook-url",
            hook,
            "--secret",
            secret,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

/// Drains `child` with SIGTERM and checks it exits cleanly.
fn drain(mut child: Child) {
    signal(&child, libc::SIGTERM).unwrap();
    let status = wait_child(&mut child, Duration::from_secs(20)).unwrap();
    assert!(status.success(), "the worker's drain failed: {status}");
}

#[test]
fn enqueue_rejects_bad_kinds_and_payloads() {
    let dir = fresh_dir("jobs-cli-bad");
    fails_with(
        &jobs(&dir, &["enqueue", "fax", "{}"]),
        "unknown job kind 'fax'",
    );
    fails_with(
        &jobs(&dir, &["enqueue", "email", "{nope"]),
        "not valid JSON",
    );
    fails_with(
        &jobs(&dir, &["enqueue", "email", r#"{"to":"x","subject":"s"}"#]),
        "bad email recipient",
    );
    fails_with(
        &jobs(
            &dir,
            &["enqueue", "cleanup", r#"{"dir":"/tmp/x","ttl":"later"}"#],
        ),
        "bad cleanup ttl",
    );
    // A durable policy without a worker: the call is stored and waits; past --wait the
    // demo says so instead of hanging.
    fails_with(
        &jobs(&dir, &["enqueue", "noop", "--wait", "300ms"]),
        "start a worker",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_worker_on_sqlite_runs_calls_and_drains_on_sigterm() {
    let dir = fresh_dir("jobs-cli-sqlite");
    let layout = Layout::new(&dir);
    let smtp = SmtpReceiver::start(&layout.mail(), 0, 0.0).unwrap();
    let hooks =
        WebhookReceiver::start(&layout.webhook(), 0, webhook::DEMO_SECRET.as_bytes(), 0.0).unwrap();
    let w = worker(
        &dir,
        &policy("jobs.toml"),
        &smtp.addr().to_string(),
        &hooks.url(),
        webhook::DEMO_SECRET,
    );
    let p = r#"{"to":"ops@example.test","subject":"disk report","body":".leading dot\nline 2"}"#;
    let out = stdout(&jobs(&dir, &["enqueue", "email", p, "--key", "mail-1"]));
    assert!(out.contains("succeeded: smtp 250"), "{out}");
    let hook = r#"{"event":"ping","data":{"n":1}}"#;
    let out = stdout(&jobs(
        &dir,
        &["enqueue", "webhook", hook, "--key", "hook-1"],
    ));
    assert!(out.contains("succeeded: http 200"), "{out}");
    drain(w);

    let listing = stdout(&jobs(&dir, &["mail"]));
    assert!(listing.contains("1 message(s)"), "{listing}");
    assert!(
        listing.contains("key=mail-1") && listing.contains("disk report"),
        "{listing}"
    );
    let msgs = demos::jobs::smtp::list(&layout.mail()).unwrap();
    let text = std::fs::read_to_string(&msgs[0].file).unwrap();
    assert!(
        text.contains("\r\n.leading dot\r\n"),
        "dot-unstuffed body: {text:?}"
    );
    let recorded = webhook::read_log(&webhook::log_path(&layout.webhook())).unwrap();
    assert_eq!(recorded.get("hook-1"), Some(&1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_refused_webhook_is_dead_lettered_with_its_last_error() {
    let dir = fresh_dir("jobs-cli-badsig");
    let hooks = WebhookReceiver::start(&dir.join("hooks"), 0, b"the-right-secret", 0.0).unwrap();
    let w = worker(
        &dir,
        &policy("jobs.toml"),
        "127.0.0.1:1",
        &hooks.url(),
        "a-wrong-secret",
    );
    let out = jobs(
        &dir,
        &[
            "enqueue",
            "webhook",
            r#"{"event":"e"}"#,
            "--key",
            "signed-wrong",
        ],
    );
    drain(w);
    fails_with(&out, "answered 401");
    // jobs.toml gives a job four attempts; each one reached the receiver and was refused.
    let c = hooks.counters();
    assert_eq!((c.accepted, c.rejected), (0, 4), "{c:?}");
    assert!(
        webhook::read_log(&webhook::log_path(&dir.join("hooks")))
            .unwrap()
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same cleanup task on threads and in worker processes: only the policy differs.
#[test]
fn the_same_task_runs_on_threads_and_in_worker_processes() {
    for name in ["jobs-threads.toml", "jobs-process.toml"] {
        let dir = fresh_dir(&format!("jobs-cli-{name}"));
        let target = dir.join("tmp");
        std::fs::create_dir_all(&target).unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(7200);
        let f = std::fs::File::create(target.join("old.tmp")).unwrap();
        f.set_len(100).unwrap();
        f.set_modified(old).unwrap();
        std::fs::write(target.join("new.tmp"), b"keep").unwrap();
        let payload = serde_json::json!({"dir": target, "ttl": "1h"}).to_string();
        let out = stdout(&jobs(
            &dir,
            &["--policy", &policy(name), "enqueue", "cleanup", &payload],
        ));
        assert!(
            out.contains("succeeded: removed 1 files, freed 100 bytes"),
            "{name}: {out}"
        );
        assert!(!target.join("old.tmp").exists() && target.join("new.tmp").exists());
        // A policy with no durable executor has nothing for a worker to do.
        fails_with(
            &jobs(&dir, &["--policy", &policy(name), "worker"]),
            "has no durable executor",
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
